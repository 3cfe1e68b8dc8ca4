"""Where each task of an apply runs: the choice (class attribute, overridden per run) and the
one interface every executor implements. The executors themselves (local, AWS Batch, the local
Docker engine, a stub) live in the run layer and are handed to apply by the caller."""

from __future__ import annotations

import enum
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from disdat_luigi.apply.identity import TaskIdentity, class_path
from disdat_luigi.apply.taskspec import TaskSpec
from disdat_luigi.errors import DisdatError, PipelineError

if TYPE_CHECKING:
    from disdat_luigi.store.context import LocalContext

LOCAL = "local"
ALL_TASKS = "*"
OPTION_NAMES = ("vcpus", "memory", "gpus", "timeout", "retries")
ENVIRONMENT_OPTIONS = ("env", "secrets")


def executor_name(cls: type, overrides: Mapping[str, str]) -> str:
    """The executor of a task class: an override naming the class (`module.Class` or `Class`),
    else one for every task (`*`), else the class's own `executor` attribute, else local."""
    for key in (class_path(cls), cls.__name__, ALL_TASKS):
        if key in overrides:
            return overrides[key]
    return str(getattr(cls, "executor", None) or LOCAL)


def executor_options(cls: type) -> dict[str, int]:
    """The class's `executor_options`, checked: only vcpus, memory, gpus, timeout and retries,
    each a whole number."""
    raw = getattr(cls, "executor_options", None) or {}
    if not isinstance(raw, Mapping):
        raise PipelineError(f"{class_path(cls)}.executor_options must be a dict, not {type(raw).__name__}")
    options: dict[str, int] = {}
    for key, value in raw.items():
        if key in ENVIRONMENT_OPTIONS:
            continue  # the job's environment: read and checked by the executor (run.environment)
        if key not in OPTION_NAMES:
            raise PipelineError(
                f"{class_path(cls)}.executor_options has an unknown option {key!r}",
                hint=f"use only {', '.join(OPTION_NAMES + ENVIRONMENT_OPTIONS)}",
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PipelineError(
                f"{class_path(cls)}.executor_options[{key!r}] must be a whole number >= 0, not {value!r}"
            )
        options[key] = value
    return options


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`Fit=batch`, `*=debug` (the command line's --executor) as a mapping."""
    found: dict[str, str] = {}
    for item in items:
        target, sep, name = item.partition("=")
        if not sep or not target.strip() or not name.strip():
            raise PipelineError(
                f"--executor {item!r} is not CLASS=EXECUTOR", hint="e.g. --executor Fit=batch or '*=batch'"
            )
        found[target.strip()] = name.strip()
    return found


def check_overrides(overrides: Mapping[str, str], classes: Sequence[type], base: type) -> None:
    """Each per-run override names a task class of the pipeline (`*` aside): one defined in a
    module of its planned tasks (classes yielded at run time count). A typo would otherwise send
    every task to the default executor, which on AWS costs money."""
    modules = {sys.modules[cls.__module__] for cls in classes if cls.__module__ in sys.modules}
    known = {
        value
        for module in modules
        for value in list(vars(module).values())
        if isinstance(value, type) and issubclass(value, base) and value.__module__ == module.__name__
    }
    names = {name for cls in known for name in (cls.__name__, class_path(cls))}
    for key in overrides:
        if key != ALL_TASKS and key not in names:
            raise PipelineError(
                f"--executor {key}={overrides[key]} names no task class of this pipeline",
                hint=f"its classes: {', '.join(sorted(cls.__name__ for cls in known))}",
            )


@dataclass(frozen=True, kw_only=True)
class RemoteTask:
    """One task to run alone in its module's image: what the container needs to make exactly the
    bundle the host planned."""

    task_id: str
    label: str  # the task as luigi prints it
    pipe_cls: str  # module.Class
    params: dict[str, str]  # every parameter as luigi serializes it
    processing_name: str
    output_bundle: str
    output_uuid: str  # fixed by the host
    output_tags: dict[str, str] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)  # processing name -> uuid of each upstream bundle
    input_bundle: str | None = None  # the pipeline_input (only the root of the apply has one)
    mark_root: bool = False
    options: dict[str, int] = field(default_factory=dict)  # the class's executor_options
    code: str = ""  # the code identity the host planned with: the container must run the same
    forced_by: str = ""  # the apply's id when the run is forced (never shared with another apply)
    apply_id: str = ""  # the apply that submits it (`dsdt cancel --apply ID`); not part of its identity

    @property
    def task_identity(self) -> TaskIdentity:
        inputs = {**self.pins, **({"pipeline_input": self.input_bundle} if self.input_bundle else {})}
        return TaskIdentity(
            recipe=self.processing_name,
            code=self.code,
            params=self.params,
            inputs=inputs,
            output=self.output_bundle,
            tags=self.output_tags,
            forced_by=self.forced_by,
        )

    @property
    def identity(self) -> str:
        """Names this exact piece of work: two applies that need it share one job."""
        return self.task_identity.digest

    @property
    def cls_name(self) -> str:
        return self.pipe_cls.rpartition(".")[2]

    def spec(self, executor: str) -> TaskSpec:
        """What the image's entry point runs."""
        return TaskSpec(
            pipe_cls=self.pipe_cls,
            params=self.params,
            output_bundle=self.output_bundle,
            output_uuid=self.output_uuid,
            output_tags=self.output_tags,
            pins=self.pins,
            input_bundle=self.input_bundle,
            mark_root=self.mark_root,
            executor=executor,
            code=self.code,
        )


class Phase(enum.Enum):
    PENDING = "pending"  # ready, not yet handed to the executor
    SUBMITTED = "submitted"  # the executor has it (queued, starting)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class JobUpdate:
    """What became of one remote task since the last poll."""

    task_id: str
    phase: Phase
    job_id: str = ""
    output_uuid: str = ""  # when DONE: the bundle on the remote (another apply's, when shared)
    error: DisdatError | None = None  # when FAILED: the diagnosis
    log: tuple[str, ...] = ()  # the job's log lines, when it ended
    attempt: int = 1  # the job's attempt (a retry after a lost host, an out-of-memory kill)
    attempts: int = 1  # of how many it may have
    note: str = ""  # what the user should hear of it (a retry and why)


class Executor(ABC):
    """Runs tasks somewhere: in this process (`runs_here`: the dispatcher runs them itself), or
    elsewhere, many at once, without a local process per task. The types are registered by name
    in run/executors."""

    name: str
    max_concurrent: int = 100
    runs_here: bool = False

    @abstractmethod
    def prepare(self, classes: Sequence[type], log: Callable[[str], None]) -> None:
        """Before the first task: images hold the current code, resources can be placed."""

    @abstractmethod
    def submit(self, tasks: Sequence[RemoteTask]) -> list[JobUpdate]:
        """Hand tasks over (or attach each to a job already doing its work); SUBMITTED/DONE updates."""

    @abstractmethod
    def poll(self) -> list[JobUpdate]:
        """Changes of the tasks handed over, since the last poll."""

    @abstractmethod
    def cancel(self) -> list[str]:
        """Stop every job in flight; what was stopped, for the user."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Tasks handed over and not yet reported DONE or FAILED."""


# (executor name, the apply's context) -> the executor
ExecutorFactory = Callable[[str, "LocalContext"], "Executor"]
