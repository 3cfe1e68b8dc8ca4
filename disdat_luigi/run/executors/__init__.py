"""Executor types by name, each imported only when an apply (or `dsdt run`) first needs it: the
one table of where a task can run (the registry style of the store's transfer schemes)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from disdat_luigi.errors import ConfigError

if TYPE_CHECKING:
    from disdat_luigi.apply.executors import Executor, ExecutorFactory
    from disdat_luigi.config import Settings
    from disdat_luigi.run.environment import JobEnvironment
    from disdat_luigi.store.context import LocalContext

# type (as `[executor.NAME] type` spells it) -> (module, class implementing apply.executors.Executor)
EXECUTORS: dict[str, tuple[str, str]] = {
    "local": ("disdat_luigi.run.executors.local", "LocalExecutor"),
    "docker": ("disdat_luigi.run.executors.docker", "DockerExecutor"),
    "aws_batch": ("disdat_luigi.run.executors.batch", "BatchExecutor"),
}


def executor_type(kind: str) -> Any:
    """The class of executor type `kind` (ConfigError naming the known types)."""
    if kind not in EXECUTORS:
        raise ConfigError(f"no executor type {kind!r}", hint=f"use one of: {', '.join(EXECUTORS)}")
    module, cls_name = EXECUTORS[kind]
    return getattr(importlib.import_module(module), cls_name)


def executor_factory(
    settings: Settings,
    build: bool = True,
    images: Mapping[str, str] | None = None,
    environment: JobEnvironment | None = None,
    driver: str = "",
) -> ExecutorFactory:
    """Makes the executor an `[executor.NAME]` section describes, for an apply on a context;
    `images` (class path -> image), given to a driver job by its host, are run as they are;
    `environment` (the apply's env and secrets) goes to every job, over the section's and class's;
    `driver` is the driver job an apply runs in (the jobs it submits are recorded for its host)."""

    def make(name: str, context: LocalContext) -> Executor:
        config = settings.executor(name)
        kind = executor_type(config.type)
        given: dict[str, Any] = {}
        if config.type != "local":
            given = {"images": dict(images or {}), "environment": environment, "driver": driver}
        executor: Executor = kind(settings=settings, config=config, context=context, build=build, **given)
        return executor

    return make
