"""Per-task executors end to end: `dsdt apply` of pipes' hybrid ml.sweep.Sweep (Clean here, one Fit
per alpha as AWS Batch jobs on moto, which runs the pushed images on the real engine, Sweep here),
the docker executor, failures, stale images, Ctrl-C and a host killed mid-apply."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from disdat_luigi import api
from tests.docker.conftest import moto_batch_queue

SLOW = """
import time
import luigi
from disdat_luigi.pipe import PipeTask


class Nap(PipeTask):
    executor = "batch"
    n = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=20.0)

    def pipe_run(self):
        time.sleep(self.seconds)
        return self.n


class Naps(PipeTask):
    count = luigi.IntParameter(default=3)
    seconds = luigi.FloatParameter(default=20.0)

    def pipe_requires(self):
        for n in range(self.count):
            self.add_dependency(f"nap_{n}", Nap, {"n": n, "seconds": self.seconds})

    def pipe_run(self, **naps):
        return sorted(naps.values())
"""


@pytest.fixture
def farm(docker_env: Path, bucket: str, dsdt, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    """Context `work` on the bucket; [executor.batch] (arrays from 5 tasks), [executor.single]
    (never arrays) on a moto queue, [executor.debug] on the local engine; polls every second."""
    queue = moto_batch_queue(monkeypatch)
    cfg = docker_env / "config" / "disdat.cfg"
    text = cfg.read_text().replace("poll_seconds = 5\n", "poll_seconds = 1\n")
    sections = "".join(
        f"\n[executor.{name}]\ntype = aws_batch\nqueue = {queue}\n"
        f"use_aws_session_token = 900\narray_min_size = {size}\n"
        for name, size in (("batch", 5), ("single", 1000))
    )
    cfg.write_text(text + sections + "\n[executor.debug]\ntype = docker\n")
    assert dsdt("context", "work").code == 0 and dsdt("switch", "work").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/farm").code == 0
    return queue


def _jobs(queue: str) -> list[dict]:  # type: ignore[type-arg]
    batch = boto3.client("batch")
    listed = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["dsdt-*"]}])["jobSummaryList"]
    return [j for j in listed if ":" not in j["jobId"]]  # submissions (array parents, single jobs)


def test_a_fan_out_of_20_fits_runs_as_one_array_job(farm: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Clean here, 20 Fits in one Batch array job (each child its own task, made in a container
    from the image apply built and pushed), Sweep here; again: nothing submitted."""
    alphas = json.dumps([0.25 * i for i in range(20)])
    first = dsdt("apply", "ml.sweep.Sweep", "--alphas", alphas)
    assert first.code == 0, first.err[-3000:]
    assert "disdat-ml-sweep" in first.err  # built if needed, and pushed, by apply
    assert "submitted array job" in first.err and "JOB STATUS" in first.err
    table = first.err[first.err.rindex("JOB STATUS") :]
    assert any(
        line.split()[:2] == ["Fit", "batch"] and line.split()[-3:] == ["20", "0", "0"] for line in table.splitlines()
    )
    result = api.get("work", "Sweep").data
    assert len(result) == 20 and list(result.alpha) != sorted(result.alpha) or len(result) == 20
    fits = api.search("work", "Fit")
    assert len(fits) == 20
    for fit in fits:
        info = fit.git_info or {}
        assert info.get("executor") == "batch" and ":" in info.get("batch_job_id", "") and info.get("image")
    assert len({(f.git_info or {})["batch_job_id"].partition(":")[0] for f in fits}) == 1  # one array job
    assert "fitted alpha=" in first.err  # the jobs' log lines, prefixed with their task
    assert len(_jobs(farm)) == 1
    again = dsdt("apply", "ml.sweep.Sweep", "--alphas", alphas)
    assert again.code == 0 and "nothing ran" in again.out and len(_jobs(farm)) == 1, again.err[-3000:]


def test_failure_keeps_the_others_and_the_next_apply_resumes(farm: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Single jobs; one raises: the apply fails with the job's diagnosis and log, the other fits are
    kept; fixed, the next apply runs only what is missing."""
    failed = dsdt("apply", "--executor", "Fit=single", "ml.sweep.Sweep", "--alphas", "[1, -1, 2]")
    assert failed.code == 1
    assert "Fit(rows=200, alpha=-1.0) failed: AWS Batch job" in failed.err
    assert "alpha must not be negative" in failed.err
    assert sorted(f.params["alpha"] for f in api.search("work", "Fit")) == ["1.0", "2.0"]
    submitted = len(_jobs(farm))
    resumed = dsdt("apply", "--executor", "Fit=single", "ml.sweep.Sweep", "--alphas", "[1, 2]")
    assert resumed.code == 0, resumed.err[-2000:]
    assert len(_jobs(farm)) == submitted  # the fits were kept: nothing submitted
    assert len(api.get("work", "Sweep").data) == 2


def test_the_docker_executor_and_stale_images(farm: str, dsdt, pipes_copy: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--executor Fit=debug runs the same containers on the local engine; `dsdt run` still runs the
    whole pipeline in one container; an edited module makes the image stale: --no-build refuses
    with the command before any job, a plain apply rebuilds and pushes it and the job runs."""
    debug = dsdt("apply", "--executor", "Fit=debug", "ml.sweep.Sweep", "--alphas", "[3, 4]")
    assert debug.code == 0, debug.err[-2000:]
    assert {(f.git_info or {}).get("executor") for f in api.search("work", "Fit")} == {"debug"}
    assert len(_jobs(farm)) == 0
    # `dsdt run` still runs the whole pipeline in one container, whatever executor Fit names
    whole = dsdt("run", "-", "whole", "ml.sweep.Sweep", "--alphas", "[6]")
    assert whole.code == 0, whole.err[-2000:]
    fit6 = [f for f in api.search("work", "Fit") if f.params["alpha"] == "6.0"]
    assert len(fit6) == 1 and "executor" not in (fit6[0].git_info or {}) and len(_jobs(farm)) == 0
    # from here the host runs the copy's code, the code the images are built from (a job refuses
    # to run code other than the host's)
    monkeypatch.syspath_prepend(str(pipes_copy))
    for module in [m for m in sys.modules if m == "ml" or m.startswith("ml.")]:
        monkeypatch.delitem(sys.modules, module)
    sweep = pipes_copy / "ml" / "sweep.py"
    original = sweep.read_text()
    sweep.write_text(original + f"\n# edited {uuid.uuid4().hex}\n")  # an image no earlier run built
    try:
        stale = dsdt("apply", "--no-build", "--executor", "Fit=single", "ml.sweep.Sweep", "--alphas", "[5]")
        assert stale.code == 1 and "does not hold the current code" in stale.err
        assert "dsdt dockerize --push" in stale.err and len(_jobs(farm)) == 0  # refused before any job
        rebuilt = dsdt("apply", "--executor", "Fit=single", "ml.sweep.Sweep", "--alphas", "[5]")
        assert rebuilt.code == 0, rebuilt.err[-2000:]
        assert rebuilt.err.count("building ") == 1 and rebuilt.err.count("pushed ") == 1  # rebuilt and pushed
        assert "Step 1/" not in rebuilt.err and "Preparing" not in rebuilt.err  # their output is in the log file
        log_file = rebuilt.err.partition("(full log: ")[2].partition(")")[0]
        assert "Step 1/" in Path(log_file).read_text()
        assert len(_jobs(farm)) == 1
    finally:
        sweep.write_text(original)


@pytest.fixture
def naps(farm: str, docker_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "naps"
    (root / "slow").mkdir(parents=True)
    (root / "slow" / "__init__.py").write_text("")
    (root / "slow" / "tasks.py").write_text(SLOW + f"\n# {uuid.uuid4().hex}\n")
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='slow', packages=['slow'])\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", f"{root}:{os.environ.get('PYTHONPATH', '')}")
    return root


def _apply_in_background(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "disdat_luigi.cli.main", "apply", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip


def _wait_for_jobs(apply: subprocess.Popen[str], queue: str, count: int, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if len(_jobs(queue)) >= count:
            return
        if apply.poll() is not None:
            raise AssertionError(f"apply ended first: {apply.communicate()[1][-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {count} jobs submitted in {seconds} s")


def test_ctrl_c_terminates_the_jobs_in_flight(naps: Path, farm: str) -> None:
    apply = _apply_in_background("--executor", "Nap=single", "slow.tasks.Naps", "--seconds", "120")
    _wait_for_jobs(apply, farm, 3)
    time.sleep(1)
    apply.send_signal(signal.SIGINT)
    _out, err = apply.communicate(timeout=120)
    assert apply.returncode != 0 and "interrupted: terminated 3 single job(s)" in err
    ids = [j["jobId"] for j in _jobs(farm)]
    deadline = time.time() + 60
    while time.time() < deadline:
        states = {j["status"] for j in boto3.client("batch").describe_jobs(jobs=ids)["jobs"]}
        if states == {"FAILED"}:
            break
        time.sleep(1)
    assert states == {"FAILED"}


def test_a_killed_host_reattaches_without_duplicate_jobs(naps: Path, farm: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL after submitting: the next apply of the same pipeline waits for those jobs (or uses
    what they made) instead of submitting them again."""
    apply = _apply_in_background("--executor", "Nap=single", "slow.tasks.Naps", "--seconds", "15")
    _wait_for_jobs(apply, farm, 3)
    apply.kill()
    apply.wait(timeout=30)
    submitted = len(_jobs(farm))
    assert submitted == 3
    again = dsdt("apply", "--executor", "Nap=single", "slow.tasks.Naps", "--seconds", "15")
    assert again.code == 0, again.err[-2000:]
    assert again.err.count("attached to job") + again.err.count("already made its bundle") == 3
    assert len(_jobs(farm)) == 3 and api.get("work", "Naps").data == [0, 1, 2]


REUSE_BASE = """
from disdat_luigi.pipe import PipeTask


class Versioned(PipeTask):
    code_version = "1"
"""
REUSE_TASKS = """
from disdat_luigi.pipe import PipeTask
from reuse.base import Versioned
from reuse.helpers import FACTOR


class Up(PipeTask):
    executor = "single"

    def pipe_run(self):
        return 10 * FACTOR


class Sub(Versioned):
    executor = "single"

    def pipe_run(self):
        return FACTOR


class Root(PipeTask):
    def pipe_requires(self):
        self.add_dependency("up", Up, {})
        self.add_dependency("sub", Sub, {})

    def pipe_run(self, up, sub):
        return [up, sub]
"""


def test_exact_reuse_on_batch(farm: str, bucket: str, tmp_path: Path, monkeypatch, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Up and Sub (a subclass of a versioned base) run as Batch jobs from the image apply builds;
    an edit of the helper module both import makes new jobs (the identity computed inside the
    image equals the host's) whose results Root reads; --force-all makes new jobs again; bundles
    planted on the remote (dated ahead, unreadable parameters) are named and planned around."""
    root = tmp_path / "reuse"
    (root / "reuse").mkdir(parents=True)
    (root / "reuse" / "__init__.py").write_text("")
    (root / "reuse" / "base.py").write_text(REUSE_BASE)
    (root / "reuse" / "tasks.py").write_text(REUSE_TASKS)
    (root / "reuse" / "helpers.py").write_text(f"FACTOR = 2  # {uuid.uuid4().hex}\n")  # an image no run built
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='reuse', packages=['reuse'])\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", f"{root}:{os.environ.get('PYTHONPATH', '')}")

    first = dsdt("apply", "reuse.tasks.Root")
    assert first.code == 0, first.err[-3000:]
    assert api.get("work", "Root").data == [20, 2] and len(_jobs(farm)) == 2
    listed = dsdt("jobs")  # executor jobs are in the context's one job record
    assert listed.code == 0 and all(j["jobId"] in listed.out for j in _jobs(farm)), listed.out
    shown = dsdt("logs", _jobs(farm)[0]["jobId"])
    assert shown.code == 0, shown.err

    (root / "reuse" / "helpers.py").write_text(f"FACTOR = 3  # {uuid.uuid4().hex}\n")
    explained = dsdt("apply", "--explain", "reuse.tasks.Root")
    assert explained.out.count("code changed: reuse/helpers.py (imported by reuse/tasks.py)") == 2, explained.out
    edited = dsdt("apply", "reuse.tasks.Root")
    assert edited.code == 0, edited.err[-3000:]
    assert "already made its bundle" not in edited.err and len(_jobs(farm)) == 4
    assert api.get("work", "Root").data == [30, 3]

    forced = dsdt("apply", "--force-all", "reuse.tasks.Root")
    assert forced.code == 0, forced.err[-3000:]
    quiet = not any(w in forced.err for w in ("building", "pushed", "Layer", "Preparing"))
    assert quiet, forced.err[-3000:]  # nothing to build: no build or registry lines
    assert "DISDAT_OUTPUT_BUNDLE" not in forced.err
    assert "already made its bundle" not in forced.err and len(_jobs(farm)) == 6
    versions = {(b.git_info or {})["version"] for b in api.search("work", "Up")}
    assert len(versions) == 2  # two code identities over three runs, each made inside the image

    # bundles planted on the remote under Up's recipe (dated ahead, unreadable parameters): an
    # apply that pulls from the remote names each once and plans around them
    s3 = boto3.client("s3")
    up = api.get("work", "Up")
    assert up is not None
    location = s3.list_objects_v2(Bucket=bucket, Prefix="farm/context/shared/objects/" + up.uuid)
    key = next(o["Key"] for o in location["Contents"] if o["Key"].endswith("manifest.json"))
    real = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    planted = {
        "00000000-0000-4000-8000-00000000f001": {"creation_date": "9999-12-31T00:00:00+00:00"},
        "00000000-0000-4000-8000-00000000f002": {"typed_params": ["not", "a", "mapping"]},
    }
    for bad, changes in planted.items():
        doc = {**real, "uuid": bad, **changes}
        s3.put_object(Bucket=bucket, Key=f"farm/context/shared/objects/{bad}/manifest.json", Body=json.dumps(doc))
        s3.put_object(Bucket=bucket, Key=f"farm/context/shared/catalog/Up/{bad}", Body=b"")
    pulled = dsdt("apply", "--incremental-pull", "reuse.tasks.Root")
    assert pulled.code == 0, pulled.err[-3000:]
    assert "nothing ran" in pulled.out and len(_jobs(farm)) == 6
    for bad in planted:
        assert sum(bad in line for line in pulled.err.splitlines()) == 1, pulled.err[-3000:]  # one line each


def test_a_stopped_container_ends_at_once_and_keeps_nothing(naps: Path, farm: str, bucket: str) -> None:
    """`docker stop` of a running task's container (SIGTERM, as Batch's terminate and timeouts
    send): the entry point, PID 1, stops within seconds instead of waiting out the grace period,
    says so, and the task's bundle is abandoned (nothing of it on the remote)."""
    import docker

    apply = _apply_in_background("--executor", "Nap=debug", "slow.tasks.Naps", "--count", "1", "--seconds", "120")
    client = docker.from_env()
    deadline = time.time() + 240
    running: list = []  # type: ignore[type-arg]
    while time.time() < deadline and not running:
        running = client.containers.list(filters={"label": "disdat.executor=debug", "status": "running"})
        if apply.poll() is not None:
            raise AssertionError(f"apply ended first: {apply.communicate()[1][-3000:]}")
        time.sleep(0.5)
    assert running, "no container started"
    time.sleep(8)  # inside pipe_run: its inputs pulled, its bundle open
    apply.kill()  # the host goes away, so nothing else removes the container while it is examined
    apply.communicate(timeout=30)
    container = running[0]
    started = time.time()
    container.stop(timeout=60)
    assert time.time() - started < 15
    container.reload()
    logs = container.logs().decode()
    container.remove(force=True)
    assert container.attrs["State"]["ExitCode"] == 143, logs[-2000:]
    assert "stopped (SIGTERM)" in logs
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="farm/context/shared/catalog/Nap/")
    assert listed["KeyCount"] == 0  # no bundle of the stopped task was published


def test_a_detached_driver_sends_the_fits_out_as_their_own_jobs(farm: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`dsdt run --backend AWSBatch --detach` of the hybrid sweep returns once the driver is
    submitted (the host builds and pushes the images first); the driver job runs Clean and Sweep
    itself and sends each Fit out as its own Batch job; `dsdt wait` collects the output later."""
    started = dsdt(
        "run", "--backend", "AWSBatch", "--queue", farm, "--use-aws-session-token", "900", "--detach",
        "-", "swept", "ml.sweep.Sweep", "--alphas", "[0.5, 2.0]",
    )  # fmt: skip
    assert started.code == 0, started.err[-3000:]
    assert "child jobs inherit them" in started.err  # a driver on session credentials says what that means
    driver = started.out.strip()
    assert _jobs(farm) == []  # nothing but the driver was submitted by the host
    waited = dsdt("wait", driver)
    assert waited.code == 0, waited.err[-3000:]
    assert any(line.startswith("swept ") for line in waited.out.splitlines()), waited.out[-3000:]
    assert sorted(api.get("work", "swept").data.alpha) == [0.5, 2.0]
    fits = api.search("work", "Fit")
    assert len(fits) == 2
    children = {(fit.git_info or {}).get("batch_job_id") for fit in fits}
    assert driver not in children and children == {j["jobId"] for j in _jobs(farm)}  # one job per Fit
    assert (api.get("work", "swept").git_info or {}).get("batch_job_id") == driver  # made in the driver itself
    log = dsdt("logs", driver)
    assert "JOB STATUS" in log.out + log.err  # the driver's status table is in its log
    rows = api.jobs("work")  # the driver, then the jobs it submitted (their records on the remote)
    assert rows[0]["job_id"] == driver and {r["job_id"] for r in rows[1:3]} == children
    assert {r["task"] for r in rows[1:3]} == {"Fit(rows=200, alpha=0.5)", "Fit(rows=200, alpha=2.0)"}
    assert {r["status"] for r in rows[:3]} == {"SUCCEEDED"}
    child_log = dsdt("logs", rows[1]["job_id"])
    assert child_log.code == 0 and "fitted alpha=" in child_log.out


def test_docker_executor_jobs_are_in_the_one_job_record(naps: Path, farm: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Jobs on the docker executor are found again like Batch jobs: `dsdt jobs` lists them running,
    `dsdt logs` reads one, `dsdt cancel JOB` and `dsdt cancel --apply ID` stop them (the entry point
    abandons its bundle), and the apply fails for those tasks."""
    apply = _apply_in_background("--executor", "Nap=debug", "slow.tasks.Naps", "--count", "2", "--seconds", "120")
    deadline, rows = time.time() + 240, []
    while time.time() < deadline:
        rows = [r for r in api.jobs("work") if r["executor"] == "debug" and r["status"] == "RUNNING"]
        if len(rows) == 2:
            break
        assert apply.poll() is None, apply.communicate()[1][-3000:]
        time.sleep(0.5)
    assert len(rows) == 2 and {r["task"] for r in rows} == {"Nap(n=0, seconds=120.0)", "Nap(n=1, seconds=120.0)"}
    listed = dsdt("jobs")
    assert listed.code == 0 and all(r["job_id"] in listed.out for r in rows)
    assert dsdt("logs", rows[0]["job_id"]).code == 0
    assert dsdt("cancel", rows[0]["job_id"]).code == 0
    stopped = dsdt("cancel", "--apply", rows[1]["apply_id"])
    assert stopped.code == 0, stopped.err
    _out, err = apply.communicate(timeout=180)
    assert apply.returncode != 0 and "exit code 143" in err, err[-3000:]
    assert {r["status"] for r in api.jobs("work") if r["executor"] == "debug"} <= {"FAILED", "GONE"}
    gone = dsdt("logs", rows[0]["job_id"])
    assert gone.code == 1 and "is gone" in gone.err
    assert api.search("work", "Nap") == []  # nothing half-made was kept
