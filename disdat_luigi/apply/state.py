"""A PipeTask's state during one apply, in one typed object, and the functions through which the
task and the planner share it: the one seam between `PipeTask` and the rest of apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from disdat_luigi.apply.options import ApplyOptions
from disdat_luigi.errors import DisdatError, PipelineError, RequiresFailed

if TYPE_CHECKING:
    from disdat_luigi.apply.plan import Decision, Planner
    from disdat_luigi.apply.task import PipeTask
    from disdat_luigi.store.bundle import Bundle

STATE_SLOT = "_pipe_state"  # the one attribute PipeTask keeps in a task's __dict__


@dataclass
class External:
    """An input that is an existing bundle rather than a task to run."""

    bundle: Bundle | None
    description: str


@dataclass
class Declaration:
    """What `pipe_requires` declared."""

    deps: dict[str, PipeTask] = field(default_factory=dict)
    externals: dict[str, External] = field(default_factory=dict)
    bundle_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    force: bool = False
    transient: bool = False


@dataclass
class TaskState:
    """Everything apply knows about one task object: its options, its declaration, the planner's
    decision, and while it runs its open bundle and dynamic dependencies."""

    options: ApplyOptions | None = None
    declaration: Declaration | None = None
    declaring: bool = False
    decision: Decision | None = None
    bundle: Bundle | None = None
    dynamic_count: int = 0
    dynamic_args: dict[str, str] = field(default_factory=dict)  # yielded task id -> argument name
    produced: str | None = None  # uuid of the bundle this object made
    planner: Planner | None = None  # the apply's planner (its caches), for dynamic dependencies


def state_of(task: PipeTask) -> TaskState:
    state: TaskState | None = task.__dict__.get(STATE_SLOT)
    if state is None:
        state = task.__dict__[STATE_SLOT] = TaskState()
    return state


def options_of(task: PipeTask) -> ApplyOptions:
    """The apply this task belongs to (carried in its hidden `disdat_apply` parameter)."""
    state = state_of(task)
    if state.options is None:
        if not task.disdat_apply:
            raise PipelineError(
                f"{task} is a PipeTask; run it with disdat_luigi.api.apply or `dsdt apply`, not bare luigi"
            )
        state.options = ApplyOptions.from_json(str(task.disdat_apply))
    return state.options


def declaration_of(task: PipeTask) -> Declaration:
    """What the task's `pipe_requires` declares (run once per task object). An exception from
    user code there is RequiresFailed, naming the task."""
    state = state_of(task)
    if state.declaration is None:
        state.declaration = Declaration()
        state.declaring = True
        try:
            task.pipe_requires()
        except BaseException as err:
            state.declaration = None
            if isinstance(err, Exception) and not isinstance(err, DisdatError):
                raise RequiresFailed(f"{task}: pipe_requires raised {type(err).__name__}: {err}") from err
            raise
        finally:
            state.declaring = False
    return state.declaration


def is_root(task: PipeTask) -> bool:
    return options_of(task).root_task_id == task.task_id


def output_name(task: PipeTask) -> str:
    """The name of the task's output bundle: the apply's output name for the root, else the one
    `set_bundle_name` gave, else the class name."""
    options = options_of(task)
    if is_root(task) and options.output_bundle:
        return options.output_bundle
    return declaration_of(task).bundle_name or type(task).__name__


def output_tags(task: PipeTask) -> dict[str, str]:
    tags = dict(declaration_of(task).tags)
    if is_root(task):
        tags.update(options_of(task).output_tags)
    return tags


def set_decision(task: PipeTask, decision: Decision) -> None:
    state_of(task).decision = decision


def decision_of(task: PipeTask) -> Decision | None:
    return state_of(task).decision
