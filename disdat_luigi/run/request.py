"""What `dsdt run` was asked to do, what the container is given, and what came of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from disdat_luigi.run.environment import JobEnvironment


class BackendName(str, Enum):
    """Where `dsdt run` starts the container (values as the CLI spells them)."""

    LOCAL = "Local"
    AWS_BATCH = "AWSBatch"


def backend_name(name: str | BackendName) -> BackendName:
    from disdat_luigi.errors import RunError

    try:
        return BackendName(name)
    except ValueError as err:
        choices = ", ".join(b.value for b in BackendName)
        raise RunError(f"unknown backend {name!r}", hint=f"choose one of {choices}") from err


class RunStatus(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUBMITTED = "submitted"  # AWS Batch, not waited for
    PREPARED = "prepared"  # --no-submit: the job definition only


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """Everything `dsdt run` was asked; built with keywords by `api.run` and the CLI."""

    context: str
    input_bundle: str
    output_bundle: str
    pipe_cls: str
    pipe_args: tuple[str, ...] = ()
    backend: BackendName = BackendName.LOCAL
    force: bool = False
    force_all: bool = False
    no_push_input: bool = False
    use_aws_session_token: int | None = None
    input_tags: Mapping[str, str] = field(default_factory=dict)
    output_tags: Mapping[str, str] = field(default_factory=dict)
    vcpus: int | None = None
    memory: int | None = None
    gpus: int | None = None
    timeout: int | None = None
    retries: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    queue: str | None = None
    job_role_arn: str | None = None
    workers: int = 1
    no_submit: bool = False
    wait: bool = False
    detach: bool = False
    build: bool = True  # rebuild (and for Batch push) a stale image; False: refuse it
    environment: JobEnvironment = field(default_factory=JobEnvironment)  # --env / --secret


@dataclass(frozen=True, kw_only=True)
class ContainerJob:
    """The image to start and exactly what to start it with (entry point arguments, environment)."""

    image: str
    image_name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]  # no secrets: the docker executor adds the host's own


@dataclass(frozen=True, kw_only=True)
class RunResult:
    backend: BackendName
    status: RunStatus
    output_name: str | None = None
    output_uuid: str | None = None
    job_id: str | None = None
    job_definition: Mapping[str, Any] | None = None
    submission: Mapping[str, Any] | None = None  # what was (or, with --no-submit, would be) submitted
    log_tail: tuple[str, ...] = ()
    reused: bool = False  # the remote had the output already: nothing was started


def params_to_args(params: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Python parameter values as the `--name value` text the entry point parses."""
    import datetime as dt
    import json

    args: list[str] = []
    for name, value in (params or {}).items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, (dt.date, dt.datetime)):
            text = value.isoformat()
        else:
            text = json.dumps(value)
        args += [f"--{name.replace('_', '-')}", text]
    return tuple(args)
