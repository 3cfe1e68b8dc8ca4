"""Each task submitted once, across machines: two stores (two DISDAT_HOME dirs, one remote, both
starting from the same upstream bundle) applying the same pipeline on moto's Batch share every
job; a host killed after submitting is re-attached from the other store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from disdat_luigi import api
from tests.docker.test_executors import _jobs, farm  # noqa: F401  (farm: the fixture)

SHARED = """
import time
import luigi
from disdat_luigi.pipe import PipeTask


class Seed(PipeTask):
    def pipe_run(self):
        return 7


class Nap(PipeTask):
    executor = "single"
    n = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=10.0)

    def pipe_requires(self):
        self.add_dependency("seed", Seed, {})

    def pipe_run(self, seed):
        time.sleep(self.seconds)
        return self.n + seed


class Naps(PipeTask):
    count = luigi.IntParameter(default=3)
    seconds = luigi.FloatParameter(default=10.0)

    def pipe_requires(self):
        for n in range(self.count):
            self.add_dependency(f"nap_{n}", Nap, {"n": n, "seconds": self.seconds})

    def pipe_run(self, **naps):
        return sorted(naps.values())
"""


@pytest.fixture
def two_stores(  # type: ignore[no-untyped-def]
    farm: str,  # noqa: F811
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dsdt,
) -> dict[str, dict[str, str]]:
    """Store A (this test's) and store B (another DISDAT_HOME, context `work` on the same remote),
    both holding the same Seed bundle (made in A, pushed, pulled into B); the image of the
    pipeline built and pushed once. The environment of a `dsdt` process of each."""
    root = tmp_path / "shared"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "__init__.py").write_text("")
    (root / "shared" / "tasks.py").write_text(SHARED + f"\n# {uuid.uuid4().hex}\n")  # an image no run built
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='shared', packages=['shared'])\n")
    monkeypatch.syspath_prepend(str(root))
    for module in [m for m in sys.modules if m == "shared" or m.startswith("shared.")]:
        monkeypatch.delitem(sys.modules, module)  # an earlier test's copy: this one's code differs
    monkeypatch.setenv("PYTHONPATH", f"{root}:{os.environ.get('PYTHONPATH', '')}")
    a = dict(os.environ)
    b = {**a, "DISDAT_HOME": str(tmp_path / "home-b")}
    seeded = dsdt("apply", "shared.tasks.Seed")
    assert seeded.code == 0, seeded.err[-2000:]
    seed = api.get("work", "Seed")
    assert seed is not None
    assert dsdt("commit", "Seed").code == 0 and dsdt("push", "Seed").code == 0
    built = dsdt("dockerize", "--push", str(root), "shared.tasks.Naps")
    assert built.code == 0, built.err[-2000:]
    remote = ("remote", "shared", f"s3://{bucket}/farm")
    for args in (("context", "work"), ("switch", "work"), remote, ("pull", "Seed")):
        done = _dsdt(b, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    listed = _dsdt(b, "ls", "-v", "Seed")
    assert seed.uuid in listed.stdout, listed.stdout + listed.stderr
    return {"a": a, "b": b}


def _dsdt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "disdat_luigi.cli.main", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _apply(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "disdat_luigi.cli.main", "apply", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _claims(bucket: str) -> list[dict]:  # type: ignore[type-arg]
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="farm/context/shared/claims/").get("Contents", [])
    return [json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listed]


def _naps_of(env: dict[str, str]) -> tuple[list[int], set[str]]:
    """The store's Naps result and the uuids of its Nap bundles (read in a child: its own store)."""
    code = (
        "import json; from disdat_luigi import api\n"
        "print(json.dumps([api.get('work', 'Naps').data, sorted(b.uuid for b in api.search('work', 'Nap'))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    data, naps = json.loads(out.strip().splitlines()[-1])
    return data, set(naps)


Stores = dict[str, dict[str, str]]


def test_two_applies_from_two_stores_share_every_job(two_stores: Stores, farm: str, bucket: str) -> None:  # noqa: F811
    """Both stores apply Naps at the same moment: 3 Batch jobs in all, each Nap submitted by
    exactly one of them and followed by the other; both get the same Nap bundles."""
    a = _apply(two_stores["a"], "shared.tasks.Naps")
    b = _apply(two_stores["b"], "shared.tasks.Naps")
    _out_a, err_a = a.communicate(timeout=600)
    _out_b, err_b = b.communicate(timeout=600)
    assert a.returncode == 0, err_a[-3000:]
    assert b.returncode == 0, err_b[-3000:]
    assert len(_jobs(farm)) == 3, (err_a[-2000:], err_b[-2000:])  # one job per task, whoever submitted it
    followed = sum(e.count("attached to job") + e.count("already made its bundle") for e in (err_a, err_b))
    assert followed == 3, (err_a[-2000:], err_b[-2000:])
    (data_a, naps_a), (data_b, naps_b) = _naps_of(two_stores["a"]), _naps_of(two_stores["b"])
    assert data_a == data_b == [7, 8, 9] and naps_a == naps_b and len(naps_a) == 3
    claims = _claims(bucket)
    assert len(claims) == 3 and {c["state"] for c in claims} <= {"submitted", "done"}
    assert {c["job_id"] for c in claims} == {j["jobId"] for j in _jobs(farm)}


def test_a_killed_host_is_reattached_from_the_other_store(two_stores: Stores, farm: str, bucket: str) -> None:  # noqa: F811
    """Store A's apply is killed (SIGKILL) once its 3 jobs are submitted: store B's apply of the
    same pipeline follows those jobs and uses their bundles; nothing is submitted again."""
    a = _apply(two_stores["a"], "shared.tasks.Naps", "--seconds", "15")
    deadline = time.time() + 300
    while time.time() < deadline and sum(c["state"] == "submitted" for c in _claims(bucket)) < 3:
        assert a.poll() is None, a.communicate()[1][-3000:]
        time.sleep(0.5)
    a.kill()
    a.wait(timeout=30)
    assert len(_jobs(farm)) == 3
    b = _dsdt(two_stores["b"], "apply", "shared.tasks.Naps", "--seconds", "15")
    assert b.returncode == 0, b.stderr[-3000:]
    assert b.stderr.count("attached to job") + b.stderr.count("already made its bundle") == 3, b.stderr[-3000:]
    assert len(_jobs(farm)) == 3
    data, naps = _naps_of(two_stores["b"])
    assert data == [7, 8, 9] and len(naps) == 3
