"""Run a PipeTask pipeline: plan it, hand the tasks that must run to luigi, report the result."""

from __future__ import annotations

import functools
import logging
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import luigi
from luigi.execution_summary import LuigiStatusCode

from disdat_luigi.apply.dispatch import Dispatcher, LogSink, first_failure
from disdat_luigi.apply.executors import LOCAL, ExecutorFactory, check_overrides
from disdat_luigi.apply.journal import Journal
from disdat_luigi.apply.loader import coerce_params, load_pipe_class
from disdat_luigi.apply.local import RetryPolicy, luigi_configured, run_with_retries
from disdat_luigi.apply.options import ApplyOptions
from disdat_luigi.apply.plan import Decision, Planner, post_order
from disdat_luigi.apply.scheduling import SchedulerFactory
from disdat_luigi.apply.task import PipeTask, forget_open_contexts
from disdat_luigi.config import Settings
from disdat_luigi.errors import (
    ApplyError,
    ConfigError,
    DependencyNotFound,
    InvalidName,
    ParameterError,
    RequiresFailed,
)
from disdat_luigi.store.manifest import is_uuid
from disdat_luigi.store.names import check_name, check_tags
from disdat_luigi.store.store import LocalStore


@dataclass(frozen=True, kw_only=True)
class ApplyRequest:
    """Everything `apply` was asked to do."""

    context: str
    transform: Any
    params: Mapping[str, Any] | None = None
    output_bundle: str = "-"
    output_tags: Mapping[str, str] | None = None
    force: bool = False
    force_all: bool = False
    output_bundle_uuid: str | None = None
    input_bundle_uuid: str | None = None
    workers: int = 1
    central_scheduler: bool = False
    incremental_push: bool = False
    incremental_pull: bool = False
    luigi_options: Mapping[str, Any] = field(default_factory=dict)
    image_code: Mapping[str, Any] | None = None  # plan with this code version (an image's), not git's
    provenance: Mapping[str, str] = field(default_factory=dict)  # e.g. the Batch job and its memory
    executors: Mapping[str, str] = field(default_factory=dict)  # class name (or '*') -> executor, this run only
    pins: Mapping[str, str] = field(default_factory=dict)  # processing name -> bundle uuid (a remote task's inputs)
    expected_code: Mapping[str, str] = field(default_factory=dict)  # task class -> the code identity the host planned
    mark_root: bool = True
    localize: bool = False  # bring the files of remotely made bundles here at once


@dataclass(frozen=True)
class Prepared:
    root: Any
    options: ApplyOptions
    planner: Planner


def prepare(request: ApplyRequest, settings: Settings) -> Prepared:
    context = LocalStore(settings.root, remote_settings=settings.remote).context(request.context)
    cls = load_pipe_class(request.transform)
    params = coerce_params(cls, request.params)
    output_bundle = None if request.output_bundle in (None, "-") else check_name(request.output_bundle)
    if request.output_bundle_uuid is not None and not is_uuid(request.output_bundle_uuid):
        raise InvalidName(
            f"output_bundle_uuid {request.output_bundle_uuid!r} is not a lower-case uuid",
            hint="use str(uuid.uuid4()), or leave it out",
        )
    try:
        root_id = cls(**params).task_id
    except luigi.parameter.MissingParameterException as err:
        raise ParameterError(str(err), hint="pass every required parameter as --name value") from err
    apply_id = uuidlib.uuid4().hex
    options = ApplyOptions(
        home=str(settings.root),
        context=context.name,
        journal=str(context.tmp_dir / f"apply-{apply_id}.journal"),
        apply_id=apply_id,
        root_task_id=root_id,
        output_bundle=output_bundle,
        output_tags=check_tags(dict(request.output_tags or {})),
        force=request.force,
        force_all=request.force_all,
        output_bundle_uuid=request.output_bundle_uuid,
        input_bundle_uuid=request.input_bundle_uuid,
        incremental_push=request.incremental_push,
        incremental_pull=request.incremental_pull,
        ignore_code_version=settings.ignore_code_version,
        remote=asdict(settings.remote),
        image_code=dict(request.image_code) if request.image_code is not None else None,
        provenance=dict(request.provenance),
        executors=dict(request.executors),
        pins=dict(request.pins),
        expected_code=dict(request.expected_code),
        mark_root=request.mark_root,
    )
    root = cls(**params, disdat_apply=options.to_json())
    return Prepared(root=root, options=options, planner=Planner(options, context))


def explain(request: ApplyRequest, settings: Settings) -> list[Decision]:
    """What apply would do with every task of the static DAG, upstream first; runs nothing."""
    prepared = prepare(request, settings)
    decisions = prepared.planner.plan(prepared.root)
    _check_overrides(prepared)
    return decisions


def _check_overrides(prepared: Prepared) -> None:
    classes = [type(task) for task in post_order(prepared.root)]
    check_overrides(prepared.options.executors, classes, PipeTask)


@dataclass(frozen=True, kw_only=True)
class ApplyOutcome:
    success: bool
    did_work: bool
    root_uuid: str
    root_name: str

    def as_result(self) -> dict[str, bool]:
        return {"success": self.success, "did_work": self.did_work}


def _log(line: str) -> None:
    logging.getLogger("disdat_luigi.apply").info(line)


def apply(
    request: ApplyRequest, settings: Settings, executors: ExecutorFactory | None = None, log: LogSink = _log
) -> dict[str, bool]:
    """Run the pipeline; {'success': True, 'did_work': ...}, or ApplyError carrying that result."""
    return apply_outcome(request, settings, executors, log).as_result()


def apply_outcome(
    request: ApplyRequest, settings: Settings, executors: ExecutorFactory | None = None, log: LogSink = _log
) -> ApplyOutcome:
    """`apply`, also naming the root's bundle (made now or reused). Tasks whose executor is not
    local are handed to the executors `executors` makes (by name)."""
    forget_open_contexts()
    prepared = prepare(request, settings)
    if request.incremental_push and not prepared.planner.context.meta.remote_url:
        # as in Disdat: the apply goes on, committing what it makes; there is nowhere to push
        logging.getLogger("disdat_luigi.apply").warning(
            "incremental push: context %r has no remote; new bundles are committed but not pushed "
            "(bind one with `dsdt remote`)",
            request.context,
        )
    try:
        decisions = prepared.planner.plan(prepared.root)
    except (DependencyNotFound, RequiresFailed) as err:
        raise ApplyError(str(err), {"success": False, "did_work": False}, hint=err.hint) from err
    _check_overrides(prepared)
    root = decisions[-1]
    if root.reuse:  # the root reuses, hence so does everything upstream: nothing to hand to luigi
        return ApplyOutcome(success=True, did_work=False, root_uuid=root.uuid or "", root_name=root.bundle_name)
    remote = any(not d.reuse and d.executor != LOCAL for d in decisions)
    if remote and executors is None:
        raise ConfigError(
            "this apply sends tasks to executors, but none were given to it",
            hint="use disdat_luigi.api.apply (or `dsdt apply`), which provides them",
        )
    # luigi's scheduler walks every pending task for each task it hands out (quadratic in the DAG);
    # the default apply runs its tasks here instead, unless it asks for what only luigi does
    own = request.workers == 1 and not request.central_scheduler and not request.luigi_options
    in_process = own and not luigi_configured()
    if remote or in_process:
        return _dispatch(request, prepared, decisions, executors or _no_executors, settings, log, in_process)
    journal = Journal(prepared.options.journal)
    try:
        outcome = luigi.build(
            [prepared.root],
            workers=request.workers,
            local_scheduler=not request.central_scheduler,
            worker_scheduler_factory=SchedulerFactory(),
            detailed_summary=True,
            log_level="WARNING",  # luigi installs its own handler; keep it to warnings and task failures
            **dict(request.luigi_options),
        )
        entries = journal.entries()
    finally:
        journal.remove()
    did_work = any(e.kind == "produced" for e in entries)
    # luigi's scheduling_succeeded is False after any failure, even one a retry made good
    succeeded = outcome.status is LuigiStatusCode.SUCCESS_WITH_RETRY or (
        outcome.status is LuigiStatusCode.SUCCESS and outcome.scheduling_succeeded
    )
    result = {"success": succeeded, "did_work": did_work}
    if not result["success"]:
        failures = [f"{e.task} failed: {e.error}" for e in entries if e.kind == "failed"]
        message = failures[0] if failures else f"pipeline did not finish: {outcome.one_line_summary}"
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ApplyError(
            message + more,
            result,
            hint="bundles of the tasks that finished are kept; fix the error and apply again to resume",
        )
    made = [e.uuid for e in entries if e.kind == "produced" and e.task_id == root.task_id]
    root_uuid = made[-1] if made else ""
    return ApplyOutcome(success=True, did_work=did_work, root_uuid=root_uuid, root_name=root.bundle_name)


def _dispatch(
    request: ApplyRequest,
    prepared: Prepared,
    decisions: list[Decision],
    executors: ExecutorFactory,
    settings: Settings,
    log: LogSink,
    in_process: bool,
) -> ApplyOutcome:
    """Run the tasks that must run, each on its executor; local ones here, in this process (or,
    when the apply asks for luigi's workers or settings, one luigi build each)."""
    by_id = {d.task_id: d for d in decisions}
    journal_path = prepared.options.journal
    dispatcher = Dispatcher(
        context=prepared.planner.context,
        options=prepared.options,
        order=post_order(prepared.root),
        decisions=by_id,
        make_executor=executors,
        run_local=(
            functools.partial(run_with_retries, policy=RetryPolicy.from_luigi(), log=log)
            if in_process
            else lambda task: _run_here(task, request, journal_path)
        ),
        log=log,
        poll_seconds=settings.run.poll_seconds,
        localize=request.localize,
        workers=request.workers,
    )
    journal = Journal(journal_path)
    try:
        dispatcher.run()
        did_work = bool(dispatcher.made) or any(e.kind == "produced" for e in journal.entries())
    finally:
        journal.remove()
    if dispatcher.failures:
        error = first_failure(dispatcher.failures)
        raise ApplyError(
            error.message,
            {"success": False, "did_work": did_work},
            hint=error.hint or "bundles of the tasks that finished are kept; fix the error and apply again to resume",
        ) from dispatcher.failures[0].cause
    root = decisions[-1]
    root_uuid = dispatcher.made.get(root.task_id) or root.uuid or ""
    return ApplyOutcome(success=True, did_work=did_work, root_uuid=root_uuid, root_name=root.bundle_name)


def _no_executors(name: str, context: Any) -> Any:
    raise ConfigError(f"executor {name!r} is not available to this apply")


def _run_here(task: Any, request: ApplyRequest, journal_path: str) -> str | None:
    """One local task of a dispatched apply, through luigi (its upstream is done): None, or what failed."""
    journal = Journal(journal_path)
    outcome = luigi.build(
        [task],
        workers=1,
        local_scheduler=True,
        worker_scheduler_factory=SchedulerFactory(),
        detailed_summary=True,
        log_level="WARNING",
        **dict(request.luigi_options),
    )
    if outcome.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        return None
    failures = [e.error for e in journal.entries() if e.kind == "failed" and e.task == str(task)]
    return failures[-1] if failures else outcome.one_line_summary
