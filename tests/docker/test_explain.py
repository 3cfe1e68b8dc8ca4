"""`dsdt apply --explain` says what will happen before remote tasks run: the image built or pushed
(and why) and the AWS Batch job definition registered or reused; it changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import docker
import pytest

from tests.docker.conftest import moto_batch_queue

PACKAGE = f"explained{uuid.uuid4().hex[:8]}"
TASKS = """
import luigi
from disdat_luigi.pipe import PipeTask


class Fit(PipeTask):
    executor = "batch"
    c = luigi.FloatParameter(default=1.0)

    def pipe_run(self):
        return self.c * 2
"""


@pytest.fixture
def project(docker_env: Path, bucket: str, tmp_path: Path, dsdt, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    root = tmp_path / "proj"
    (root / PACKAGE).mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "tasks.py").write_text(TASKS)
    (root / "setup.py").write_text(f"from setuptools import setup\nsetup(name='{PACKAGE}', packages=['{PACKAGE}'])\n")
    monkeypatch.syspath_prepend(str(root))
    queue = moto_batch_queue(monkeypatch)
    cfg = docker_env / "config" / "disdat.cfg"
    text = cfg.read_text().replace("poll_seconds = 5\n", "poll_seconds = 1\n")
    cfg.write_text(text + f"\n[executor.batch]\ntype = aws_batch\nqueue = {queue}\nuse_aws_session_token = 900\n")
    assert dsdt("context", "work").code == 0 and dsdt("switch", "work").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/explain").code == 0
    yield root
    client = docker.from_env(version="auto")
    for image in client.images.list():
        for ref in image.tags:
            if f"disdat-{PACKAGE}-" in ref:
                client.images.remove(ref, force=True)


def test_explain_names_the_image_and_job_definition_steps(project: Path, registry: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Before the first apply: build (no image yet), push, register; after it: ready and reused;
    after a code edit: build (code changed since the old tag). Nothing is built by explain."""
    name = f"disdat-{PACKAGE}-tasks"
    definition = f"{name}-job-definition (1 vCPU, 2048 MiB)"
    first = dsdt("apply", "--explain", f"{PACKAGE}.tasks.Fit")
    assert first.code == 0, first.err[-3000:]
    lines = first.out.splitlines()
    assert lines[0] == "run   Fit(c=1.0) [executor batch]: no bundle yet"
    tag = lines[1].split(":")[1].split()[0]
    assert lines[1:] == [
        f"prepare image {name}:{tag} will be built (no image of it yet), then will be pushed to {registry} "
        "(the registry does not have it)",
        f"prepare job definition {definition}: will be registered (for image {tag})",
    ]
    assert not docker.from_env(version="auto").images.list(name=name)
    assert not boto3.client("batch").describe_job_definitions(jobDefinitionName=f"{name}-job-definition")[
        "jobDefinitions"
    ]

    applied = dsdt("apply", f"{PACKAGE}.tasks.Fit")
    assert applied.code == 0, applied.err[-3000:]
    forced = dsdt("apply", "--explain", "-f", f"{PACKAGE}.tasks.Fit")
    assert forced.out.splitlines()[1:] == [
        f"prepare image {name}:{tag} is ready",
        f"prepare job definition {definition}: reuses revision 1",
    ]

    source = project / PACKAGE / "tasks.py"
    source.write_text(source.read_text() + "# edited\n")
    edited = dsdt("apply", "--explain", f"{PACKAGE}.tasks.Fit")
    assert f"will be built (code changed since {tag}), then will be pushed to {registry}" in edited.out
    assert f"prepare job definition {definition}: will be registered" in edited.out
