"""Secrets: images hold no host credentials, job definitions none, logs never print them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import boto3
import pytest

from disdat_luigi import api
from tests.conftest import wait_for_batch_job

SECRET = "wJalrXUtnFEMI-disdat-test-secret-value"
KEY_ID = "AKIADISDATTESTKEY1234"
PIP_TOKEN = "pip-index-token-disdat-test"


@pytest.fixture
def secret_env(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any credentials
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    return SECRET


def test_images_hold_no_host_credentials(
    ledger, docker_env: Path, secret_env: str, pipes_copy: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """With AWS keys in the environment and a private index token in pip.conf, no layer and no
    history entry of the image contains either."""
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\n# {PIP_TOKEN}\n")
    cfg = docker_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace("dot_pip_file =\n", f"dot_pip_file = {conf}\n"))
    (result,) = api.dockerize(pipes_copy, "etl.summarize.Summarize")
    reference = f"{result.name}:{result.content_tag}"
    saved = subprocess.run(["docker", "save", reference], capture_output=True, check=True).stdout
    history = subprocess.run(["docker", "history", "--no-trunc", reference], capture_output=True, check=True).stdout
    inspect = subprocess.run(["docker", "image", "inspect", reference], capture_output=True, check=True).stdout
    leaks = [s for s in (SECRET, KEY_ID, PIP_TOKEN) if s.encode() in saved + history + inspect]
    ledger.record(
        "secrets in image layers/history",
        3,
        len(leaks),
        "docker save + history + inspect grepped for AWS key, pip token",
    )
    assert not leaks, leaks


def test_run_logs_and_job_definitions_hold_no_secrets(  # type: ignore[no-untyped-def]
    ledger,
    docker_env: Path,
    built_pipes: list,
    pipes_copy: Path,
    bucket: str,
    secret_env: str,
    dsdt,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """dsdt output (--verbose included) never prints the secret; Batch job definitions carry no
    credentials; session-token credentials differ from the host's and live only in overrides."""
    monkeypatch.setenv("MOTO_DOCKER_NETWORK_MODE", "host")
    assert dsdt("context", "s").code == 0 and dsdt("switch", "s").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/x").code == 0
    data = tmp_path / "in.csv"
    data.write_text("temp\n1\n2\n")
    outputs = [dsdt("--verbose", "add", "in", str(data)), dsdt("--verbose", "commit", "in")]
    outputs.append(dsdt("--verbose", "run", "in", "out", "etl.summarize.Summarize"))
    outputs.append(dsdt("--verbose", "push"))
    outputs.append(dsdt("--verbose", "pull", "-l"))
    role = boto3.client("iam").create_role(RoleName="r-secrets", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch")
    ce = batch.create_compute_environment(computeEnvironmentName="ce-secrets", type="UNMANAGED", serviceRole=role)
    order = [{"order": 1, "computeEnvironment": ce["computeEnvironmentArn"]}]
    batch.create_job_queue(jobQueueName="q-secrets", state="ENABLED", priority=1, computeEnvironmentOrder=order)
    cfg = docker_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace("aws_batch_queue =\n", "aws_batch_queue = q-secrets\n"))
    api.dockerize(pipes_copy, "etl.summarize.Summarize", push=True)
    submitted = dsdt(
        "--verbose",
        "run",
        "--backend",
        "AWSBatch",
        "--use-aws-session-token",
        "900",
        "in",
        "out2",
        "etl.summarize.Summarize",
    )
    outputs.append(submitted)
    printed = "".join(o.out + o.err for o in outputs)
    job = batch.describe_jobs(jobs=[submitted.out.strip()])["jobs"][0]
    definition = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
    env = {e["name"]: e["value"] for e in job["container"]["environment"]}
    problems = []
    if SECRET in printed or KEY_ID in printed:
        problems.append("a command printed the secret")
    if SECRET in json.dumps(definition) or "AWS_SECRET_ACCESS_KEY" in json.dumps(definition):
        problems.append("the job definition holds credentials")
    if env.get("AWS_ACCESS_KEY_ID") in (None, KEY_ID) or not env.get("AWS_SESSION_TOKEN"):
        problems.append("the job did not get temporary credentials")
    if wait_for_batch_job(job["jobId"]) != "SUCCEEDED":
        problems.append("the job failed with its temporary credentials")
    ledger.record(
        "secrets in logs and job definitions",
        3,
        len(problems),
        "CLI output, job definition, job overrides; the job runs",
    )
    assert not problems, problems
