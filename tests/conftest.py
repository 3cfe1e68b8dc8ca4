"""Shared fixtures: every test gets its own store and config through environment variables."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def disdat_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DISDAT_HOME and DISDAT_CONFIG, initialised."""
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISDAT_CONFIG", str(tmp_path / "config" / "disdat.cfg"))
    api.init()
    return tmp_path


@pytest.fixture
def ctx(disdat_env: Path) -> str:
    """A context named 'test', made current."""
    api.context("test")
    api.switch("test")
    return "test"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def dsdt(capsys: pytest.CaptureFixture[str]):
    """Run `dsdt ARGS...` in-process and return its exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a child process (for crash and concurrency tests)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def wait_for_port(port: int, seconds: float = 30) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    import socket
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wait_for_batch_job(job_id: str, seconds: float = 180) -> str:
    """Block until moto's Batch has finished the job (and so removed its container); its status."""
    import time

    import boto3

    batch = boto3.client("batch")
    deadline = time.time() + seconds
    while (status := batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"]) not in ("SUCCEEDED", "FAILED"):
        if time.time() > deadline:
            raise RuntimeError(f"Batch job {job_id} is still {status} after {seconds:.0f} s")
        time.sleep(1)
    return str(status)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server (S3, STS, ECR, IAM, Logs, Batch) over real HTTP on 127.0.0.1 for the session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never probe the instance metadata address
}


@pytest.fixture
def aws_env(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials and the moto endpoint in the standard AWS variables; no ~/.aws involved."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    return moto_endpoint


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A new, empty bucket on the moto server."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def remote_ctx(ctx: str, bucket: str) -> str:
    """The 'test' context bound to remote context 'shared' at s3://<bucket>/team."""
    api.remote(ctx, "shared", f"s3://{bucket}/team")
    return ctx
