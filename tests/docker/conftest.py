"""The real Docker engine, a local image registry and moto's Batch for the docker tests.

In CI the engine must come up: these fixtures fail (never skip) when it does not. A developer
without root may set DISDAT_SKIP_DOCKER=1 to skip them explicitly."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.dockerize.images import ImageResult
from tests.conftest import REPO, free_port, wait_for_port

BASE_IMAGE = "disdat-test-base:bookworm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/docker" in str(item.fspath):
            item.add_marker(pytest.mark.docker)
            if os.environ.get("DISDAT_SKIP_DOCKER") == "1" and os.environ.get("CI") != "true":
                item.add_marker(pytest.mark.skip(reason="DISDAT_SKIP_DOCKER=1"))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The engine and the offline base image, set up by tests/infra/stack.sh if needed."""
    status = subprocess.run(["bash", str(REPO / "tests/infra/stack.sh"), "status"], check=False)
    if status.returncode != 0:
        setup = subprocess.run(["bash", str(REPO / "tests/infra/stack.sh"), "up"], capture_output=True, text=True)
        if setup.returncode != 0:
            pytest.fail(f"the Docker test stack did not come up:\n{setup.stderr[-3000:]}")


@pytest.fixture(scope="session")
def registry(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry on a free loopback port (the engine trusts 127.0.0.0/8 over HTTP) that
    takes deletes (as `dsdt dockerize --prune --registry` needs)."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def docker_env(disdat_env: Path, registry: str, pipes_copy: Path) -> Path:
    """Config for the docker tests: host networking, the offline base image, the local registry,
    and the copy of the example pipe root as the project `dsdt run` checks its images against."""
    cfg = disdat_env / "config" / "disdat.cfg"
    text = cfg.read_text()
    text = text.replace("pipe_root =\n", f"pipe_root = {pipes_copy}\n", 1)
    text = text.replace("network_mode =\n", "network_mode = host\n", 1)
    text = text.replace("base_image =\n", f"base_image = {BASE_IMAGE}\n", 1)
    text = text.replace("registry =\n", f"registry = {registry}\n", 1)
    cfg.write_text(text)
    return disdat_env


@pytest.fixture(scope="session")
def pipes_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example pipe root outside git (tests may edit it)."""
    target = tmp_path_factory.mktemp("pipes") / "pipes"
    shutil.copytree(REPO / "pipes", target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    return target


@pytest.fixture
def built_pipes(docker_env: Path, pipes_copy: Path) -> list[ImageResult]:
    """Every module image of the example pipe root, built (once; later calls find them up to date)."""
    return api.dockerize(pipes_copy)


def moto_batch_queue(monkeypatch: pytest.MonkeyPatch) -> str:
    """A new moto Batch queue on an unmanaged compute environment, whose jobs moto runs on the
    engine with host networking; its name."""
    import uuid

    import boto3

    monkeypatch.setenv("MOTO_DOCKER_NETWORK_MODE", "host")
    suffix = uuid.uuid4().hex[:8]
    role = boto3.client("iam").create_role(RoleName=f"batch-{suffix}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"ce-{suffix}", type="UNMANAGED", serviceRole=role
    )
    queue = f"queue-{suffix}"
    batch.create_job_queue(
        jobQueueName=queue, state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
    )  # fmt: skip
    return queue
