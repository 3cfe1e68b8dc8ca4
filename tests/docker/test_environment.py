"""Jobs get the environment their code needs: `--env KEY=VALUE`, `--env KEY` (the host's value,
masked wherever a submission is shown), `--secret KEY=ARN` by reference on AWS Batch (moto never
resolves `secrets`: the `valueFrom` entries are asserted) and resolved on the host for the Local
backend and the docker executor (the value reaches the container)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import docker
import pytest

from disdat_luigi import api
from tests.docker.conftest import moto_batch_queue

PACKAGE = f"envcheck{uuid.uuid4().hex[:8]}"  # one image for this module's tests, no one else's
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex[:8]
HOST_VALUE = "host-only-" + uuid.uuid4().hex[:8]
TASKS = """
import os
from disdat_luigi.pipe import PipeTask

NAMES = ("PLAIN", "FROMHOST", "TOKEN")


class Show(PipeTask):
    def pipe_run(self):
        return {name: os.environ.get(name) for name in NAMES}


class ShowInDocker(PipeTask):
    executor = "debug"
    executor_options = {"env": {"PLAIN": "from-class"}, "secrets": {"TOKEN": os.environ.get("ENV_TEST_ARN", "")}}

    def pipe_run(self):
        return {name: os.environ.get(name) for name in NAMES}


class ShowOnBatch(ShowInDocker):
    executor = "batch"
"""


@pytest.fixture(scope="module", autouse=True)
def _remove_images() -> Iterator[None]:
    yield
    client = docker.from_env(version="auto")
    for image in client.images.list():
        for ref in image.tags:
            if f"disdat-{PACKAGE}-" in ref:
                client.images.remove(ref, force=True)


@pytest.fixture
def envcheck(docker_env: Path, bucket: str, tmp_path: Path, dsdt, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    """The project (importable here), context `work` on the bucket, a moto queue, [executor.debug]
    (docker) with env from its section, a secret in moto's Secrets Manager (ENV_TEST_ARN), and
    FROMHOST set in this shell; the secret's ARN."""
    root = tmp_path / "envproj"
    (root / PACKAGE).mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "tasks.py").write_text(TASKS)
    (root / "setup.py").write_text(f"from setuptools import setup\nsetup(name='{PACKAGE}', packages=['{PACKAGE}'])\n")
    monkeypatch.syspath_prepend(str(root))
    secrets = boto3.client("secretsmanager")
    try:  # one secret for the module: the tasks module, imported once, keeps the ARN it read
        arn = secrets.create_secret(Name=f"token-{PACKAGE}", SecretString=SECRET_VALUE)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        arn = secrets.describe_secret(SecretId=f"token-{PACKAGE}")["ARN"]
    monkeypatch.setenv("ENV_TEST_ARN", arn)
    monkeypatch.setenv("FROMHOST", HOST_VALUE)
    queue = moto_batch_queue(monkeypatch)
    cfg = docker_env / "config" / "disdat.cfg"
    text = cfg.read_text().replace("aws_batch_queue =\n", f"aws_batch_queue = {queue}\n")
    text = text.replace("poll_seconds = 5\n", "poll_seconds = 1\n")
    cfg.write_text(
        text + "\n[executor.debug]\ntype = docker\nenv = PLAIN=from-section, OTHER=x\n"
        f"\n[executor.batch]\ntype = aws_batch\nqueue = {queue}\nuse_aws_session_token = 900\n"
    )
    assert dsdt("context", "work").code == 0 and dsdt("switch", "work").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/env").code == 0
    return arn


def _nowhere(value: str, *texts: str) -> None:
    for text in texts:
        assert value not in text


def test_local_backend_gets_values_and_resolved_secrets(envcheck: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`dsdt run --backend Local`: --env values, the host's value and the secret's value (read
    here from Secrets Manager) are in the container's environment; none is printed."""
    result = dsdt("run", "--env", "PLAIN=1", "--env", "FROMHOST", "--secret", f"TOKEN={envcheck}", "-", "shown",
                  f"{PACKAGE}.tasks.Show")  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    _nowhere(SECRET_VALUE, result.out, result.err)
    _nowhere(HOST_VALUE, result.out, result.err)
    assert api.get("work", "shown").data == {"PLAIN": "1", "FROMHOST": HOST_VALUE, "TOKEN": SECRET_VALUE}


def test_batch_secrets_are_references_and_host_values_masked(envcheck: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """AWS Batch: the secret is the job definition's `secrets` (valueFrom = its ARN), its value is in
    no job definition, override, output or log; the host's value reaches the job (moto does not
    resolve secrets, so TOKEN stays unset there) and is masked in --no-submit's JSON."""
    args = ["--backend", "AWSBatch", "--env", "PLAIN=1", "--env", "FROMHOST", "--secret", f"TOKEN={envcheck}"]
    ran = dsdt("run", "--wait", "--use-aws-session-token", "900", *args, "-", "batched", f"{PACKAGE}.tasks.Show")
    assert ran.code == 0, ran.err[-3000:]
    _nowhere(SECRET_VALUE, ran.out, ran.err)
    _nowhere(HOST_VALUE, ran.out, ran.err)
    assert api.get("work", "batched").data == {"PLAIN": "1", "FROMHOST": HOST_VALUE, "TOKEN": None}
    prepared = dsdt("run", "--no-submit", *args, "-", "-", f"{PACKAGE}.tasks.Show")
    assert prepared.code == 0, prepared.err[-3000:]
    shown = json.loads(prepared.out)
    assert shown["job_definition"]["containerProperties"]["secrets"] == [{"name": "TOKEN", "valueFrom": envcheck}]
    env = {e["name"]: e["value"] for e in shown["submission"]["containerOverrides"]["environment"]}
    assert env["PLAIN"] == "1" and env["FROMHOST"] == "***" and "TOKEN" not in env
    _nowhere(SECRET_VALUE, prepared.out, prepared.err)
    _nowhere(HOST_VALUE, prepared.out, prepared.err)

    batch = boto3.client("batch")
    job_id = api.jobs("work")[0]["job_id"]
    job = batch.describe_jobs(jobs=[job_id])["jobs"][0]
    definition = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
    assert definition["containerProperties"]["secrets"] == [{"name": "TOKEN", "valueFrom": envcheck}]
    _nowhere(SECRET_VALUE, json.dumps(definition), json.dumps(job, default=str))
    assert "[run] execution_role_arn is not set" in ran.err

    cfg = Path(os.environ["DISDAT_CONFIG"])
    role = "arn:aws:iam::123456789012:role/batch-secrets-reader"
    cfg.write_text(cfg.read_text().replace("execution_role_arn =\n", f"execution_role_arn = {role}\n", 1))
    with_role = dsdt("run", "--no-submit", *args, "-", "-", f"{PACKAGE}.tasks.Show")
    properties = json.loads(with_role.out)["job_definition"]["containerProperties"]
    assert properties["executionRoleArn"] == role and "revision" not in json.loads(with_role.out)["job_definition"]
    assert "execution_role_arn is not set" not in with_role.err


def test_docker_executor_gets_section_class_and_apply_environment(envcheck: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """An apply's docker executor: the section's env under the class's executor_options (its
    secret resolved here), under the apply's --env."""
    result = dsdt("apply", "--env", "FROMHOST", f"{PACKAGE}.tasks.ShowInDocker")
    assert result.code == 0, result.err[-3000:]
    _nowhere(SECRET_VALUE, result.out, result.err)
    _nowhere(HOST_VALUE, result.out, result.err)
    assert api.get("work", "ShowInDocker").data == {
        "PLAIN": "from-class",
        "FROMHOST": HOST_VALUE,
        "TOKEN": SECRET_VALUE,
    }


def test_batch_executor_secrets_are_references(envcheck: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """An apply's aws_batch executor: the class's secret is in its job definition as a reference,
    its value nowhere; the class's and the apply's values reach the job."""
    result = dsdt("apply", "--env", "FROMHOST", f"{PACKAGE}.tasks.ShowOnBatch")
    assert result.code == 0, result.err[-3000:]
    _nowhere(SECRET_VALUE, result.out, result.err)
    _nowhere(HOST_VALUE, result.out, result.err)
    assert api.get("work", "ShowOnBatch").data == {"PLAIN": "from-class", "FROMHOST": HOST_VALUE, "TOKEN": None}
    batch = boto3.client("batch")
    job = batch.describe_jobs(jobs=[api.jobs("work")[0]["job_id"]])["jobs"][0]
    definition = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
    assert definition["containerProperties"]["secrets"] == [{"name": "TOKEN", "valueFrom": envcheck}]
    _nowhere(SECRET_VALUE, json.dumps(definition), json.dumps(job, default=str))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "=x"], "--env '=x' has no variable name"),
        (["--env", "DISDAT_HOME=x"], "DISDAT_HOME cannot be set: DISDAT_* names are set by disdat_luigi itself"),
        (["--env", "AWS_ACCESS_KEY_ID=x"], "AWS_ACCESS_KEY_ID cannot be set"),
        (["--env", "NOT_SET_ANYWHERE_42"], "--env NOT_SET_ANYWHERE_42: NOT_SET_ANYWHERE_42 is not set in this shell"),
        (["--secret", "KEY=notanarn"], "the value of KEY must be a Secrets Manager secret or SSM parameter ARN"),
        (["--secret", "KEY"], "the value of KEY must be a Secrets Manager secret or SSM parameter ARN"),
    ],
)
def test_bad_environment_is_one_line_and_starts_nothing(envcheck: str, dsdt, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    """Bad --env/--secret: a one-line error (and its hint) before anything is built or started."""
    result = dsdt("run", "--backend", "AWSBatch", *args, "-", "-", f"{PACKAGE}.tasks.Show")
    assert result.code == 1 and message in result.err.splitlines()[0], result.err
    assert api.jobs("work") == []


def test_bad_env_option_of_a_class(envcheck: str, dsdt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """executor_options env that is not a dict of strings fails before any image is built, naming the fix."""
    root = tmp_path / "badenv"
    package = f"badenv{uuid.uuid4().hex[:6]}"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "tasks.py").write_text(
        "from disdat_luigi.pipe import PipeTask\n\nclass Bad(PipeTask):\n    executor = 'debug'\n"
        "    executor_options = {'env': ['PLAIN']}\n\n    def pipe_run(self):\n        return 1\n"
    )
    (root / "setup.py").write_text(f"from setuptools import setup\nsetup(name='{package}', packages=['{package}'])\n")
    monkeypatch.syspath_prepend(str(root))
    result = dsdt("apply", f"{package}.tasks.Bad")
    assert result.code == 1
    assert f"{package}.tasks.Bad.executor_options env must be a dict of str to str, not list" in result.err
    assert 'as a dict like {"NAME": "value"}' in result.err
    assert not any(f"disdat-{package}" in t for i in docker.from_env(version="auto").images.list() for t in i.tags)
