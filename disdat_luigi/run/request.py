"""What `dsdt run` was asked to do, what the container is given, and what came of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunRequest:
    context: str
    input_bundle: str
    output_bundle: str
    pipe_cls: str
    pipe_args: tuple[str, ...] = ()
    backend: str = "Local"
    force: bool = False
    force_all: bool = False
    no_push_input: bool = False
    use_aws_session_token: int | None = None
    input_tags: Mapping[str, str] = field(default_factory=dict)
    output_tags: Mapping[str, str] = field(default_factory=dict)
    vcpus: int | None = None
    memory: int | None = None
    job_role_arn: str | None = None
    workers: int = 1
    no_submit: bool = False
    wait: bool = False


@dataclass(frozen=True)
class ContainerJob:
    """The image to start and exactly what to start it with (entry point arguments, environment)."""

    image: str
    image_name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    secret_environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """`status`: succeeded, failed, submitted (Batch, not waited for) or prepared (--no-submit)."""

    backend: str
    status: str
    output_name: str | None = None
    output_uuid: str | None = None
    job_id: str | None = None
    job_definition: Mapping[str, Any] | None = None
    log_tail: tuple[str, ...] = ()


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
