"""The host -> driver contract of a pipeline that needs no host: what the driver is given, and
how a bad one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from disdat_luigi.errors import TaskSpecRejected
from disdat_luigi.run.driver_job import DriverConfig, host_sections

HOST_CONFIG = """
[docker]
registry = 127.0.0.1:5000
repository_prefix = team
network_mode = host

[run]
aws_batch_queue = driver-queue
memory = 4096

[executor.batch]
type = aws_batch
queue = fits
use_aws_session_token = 900

[executor.debug]
type = docker

[executor.unused]
type = aws_batch
"""


def test_the_driver_gets_the_sections_its_pipeline_names(tmp_path: Path) -> None:
    """Only the executors the pipeline names, a docker one run in the driver's own container,
    the registry (not the host's network mode) and [run]."""
    path = tmp_path / "disdat.cfg"
    path.write_text(HOST_CONFIG)
    sections = host_sections(path, ("batch", "debug", "local"), job_role_arn=None)
    assert sections == {
        "executor.batch": {"type": "aws_batch", "queue": "fits", "use_aws_session_token": "900"},
        "executor.debug": {"type": "local"},
        "docker": {"registry": "127.0.0.1:5000", "repository_prefix": "team"},
        "run": {"aws_batch_queue": "driver-queue", "memory": "4096"},
    }


def test_a_driver_with_a_role_gives_its_children_roles(tmp_path: Path) -> None:
    """STS mints no session token from a role's credentials: children get the role instead."""
    path = tmp_path / "disdat.cfg"
    path.write_text(HOST_CONFIG)
    sections = host_sections(path, ("batch",), job_role_arn="arn:aws:iam::1:role/driver")
    assert sections["executor.batch"]["use_aws_session_token"] == "0"
    assert sections["run"]["job_role_arn"] == "arn:aws:iam::1:role/driver"


def test_the_config_round_trips_and_installs(tmp_path: Path) -> None:
    config = DriverConfig(sections={"executor.batch": {"type": "aws_batch"}}, images={"ml.sweep.Fit": "r/img:t"})
    assert DriverConfig.from_json(config.to_json()) == config
    target = tmp_path / "disdat.cfg"
    target.write_text("[remote]\nserver_side_encryption = none\n")
    config.install(target)
    text = target.read_text()
    assert "[remote]" in text and "[executor.batch]" in text and "type = aws_batch" in text


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{", "is not JSON"),
        ("[]", "has version 'list'"),
        ('{"version": 2, "sections": {}, "images": {}}', "has version 2, this image reads version 1"),
        ('{"version": 1, "sections": {"run": {"memory": 4}}, "images": {}}', "needs 'sections'"),
        ('{"version": 1, "sections": {}}', "needs 'sections'"),
    ],
)
def test_a_bad_driver_config_is_refused_in_one_line(text: str, said: str) -> None:
    with pytest.raises(TaskSpecRejected) as raised:
        DriverConfig.from_json(text)
    assert said in raised.value.message and "\n" not in raised.value.message


def test_the_runs_env_and_secrets_reach_the_children_by_name() -> None:
    """The driver config carries --env names and --secret ARNs, never values: the driver hands on
    the values Batch set in its own environment, masked as host values."""
    config = DriverConfig(
        sections={}, images={}, env_names=("API_USER", "MODE"), secrets={"API_KEY": "arn:aws:secretsmanager:x"}
    )
    text = config.to_json()
    assert DriverConfig.from_json(text) == config
    environment = DriverConfig.from_json(text).environment({"API_USER": "ana", "MODE": "fast", "OTHER": "no"})
    assert dict(environment.values) == {"API_USER": "ana", "MODE": "fast"}
    assert environment.from_host == {"API_USER", "MODE"} and dict(environment.secrets) == {
        "API_KEY": "arn:aws:secretsmanager:x"
    }


def test_no_submit_builds_and_pushes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dsdt run --no-submit` of a driver shows its config: no executor is made, no image built."""
    from disdat_luigi.config import Settings
    from disdat_luigi.run import driver_job
    from disdat_luigi.run.environment import JobEnvironment

    def no_factory(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an executor was made")

    monkeypatch.setattr("disdat_luigi.run.executors.executor_factory", no_factory)
    path = tmp_path / "disdat.cfg"
    path.write_text(HOST_CONFIG)
    monkeypatch.setenv("DISDAT_CONFIG", str(path))
    planned = driver_job.DriverPlan(remote={"batch": [object]}, executors=("batch",))
    settings = Settings(config_path=path, root=tmp_path / "home")
    config = driver_job.prepare(
        planned, settings, None, build=True, job_role_arn=None, environment=JobEnvironment(), log=print, submit=False
    )  # type: ignore[arg-type]
    assert config.images == {} and "executor.batch" in config.sections
