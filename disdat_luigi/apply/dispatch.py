"""Run a planned apply whose tasks go to different executors: local tasks in this process (one
luigi build each, in dependency order), remote ones handed to their executor as soon as their
inputs exist, many at once, polled from this one thread (no process per job).

The host fixes each remote bundle's uuid, pushes the bundles a remote task reads before handing
it over, and records the bundle once the job made it; a failure stops new work, lets the jobs in
flight finish (their bundles are kept) and is reported with the job's diagnosis.
"""

from __future__ import annotations

import collections
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from disdat_luigi.apply.executors import (
    LOCAL,
    Executor,
    ExecutorFactory,
    JobUpdate,
    Phase,
    RemoteTask,
    executor_options,
)
from disdat_luigi.apply.identity import class_path, differs_from_plan, luigi_params
from disdat_luigi.apply.journal import Journal
from disdat_luigi.apply.localpool import LocalPool, LocalResult
from disdat_luigi.apply.options import ApplyOptions
from disdat_luigi.apply.plan import Decision
from disdat_luigi.apply.state import declaration_of, is_root, output_tags, state_of
from disdat_luigi.errors import DisdatError, PipelineError, RemoteNotConfigured
from disdat_luigi.store import queries
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.sync import RemoteSync

if TYPE_CHECKING:
    from disdat_luigi.apply.task import PipeTask

LogSink = Callable[[str], None]
RunLocal = Callable[["PipeTask"], str | Exception | None]  # runs one task here; None, or what failed


@dataclass
class Failure:
    label: str
    message: str
    hint: str | None = None
    cause: BaseException | None = None  # the task's own exception, when it failed here


@dataclass
class Progress:
    """Counts per (task class, executor), for the status table."""

    counts: dict[tuple[str, str], collections.Counter[str]] = field(default_factory=dict)
    retried: set[str] = field(default_factory=set)  # tasks whose job is past its first attempt

    def retry(self, key: tuple[str, str], task_id: str) -> None:
        if task_id not in self.retried:
            self.retried.add(task_id)
            self.counts.setdefault(key, collections.Counter())["retried"] += 1

    def set(self, key: tuple[str, str], old: str | None, new: str) -> None:
        counter = self.counts.setdefault(key, collections.Counter())
        if old is not None:
            counter[old] -= 1
        counter[new] += 1

    def table(self) -> str:
        columns = ["pending", "submitted", "running", "retried", "done", "reused", "failed"]
        width = max([4, *(len(k[0]) for k in self.counts)])
        lines = [f"{'TASK':<{width}}  {'EXECUTOR':<10} " + " ".join(f"{c.upper():>9}" for c in columns)]
        for (cls, executor), counter in sorted(self.counts.items()):
            lines.append(f"{cls:<{width}}  {executor:<10} " + " ".join(f"{counter[c]:>9}" for c in columns))
        return "\n".join(lines)


class Dispatcher:
    """Runs the tasks `decisions` says must run, each on its executor."""

    def __init__(
        self,
        *,
        context: LocalContext,
        options: ApplyOptions,
        order: Sequence[PipeTask],
        decisions: dict[str, Decision],
        make_executor: ExecutorFactory,
        run_local: RunLocal,
        log: LogSink,
        poll_seconds: float,
        localize: bool = False,
        status_seconds: float = 30.0,
        workers: int = 1,
    ) -> None:
        self.context = context
        self.options = options
        self.tasks = {t.task_id: t for t in order}
        self.decisions = decisions
        self.run_local = run_local
        self.local = LocalPool(run_local, workers)
        self.log = log
        self.poll_seconds = poll_seconds
        self.localize = localize
        self.status_seconds = status_seconds
        self.journal = Journal(options.journal)
        self.failures: list[Failure] = []
        self.made: dict[str, str] = {}  # task id -> uuid of the bundle made in this apply
        self.progress = Progress()
        self.phase: dict[str, str] = {}
        self._make_executor = make_executor
        self._executors: dict[str, Executor] = {}
        self._sync: RemoteSync | None = None
        self._on_remote: set[str] = set()
        self._last_table = 0.0
        self._last_shown = ""  # the status table as last shown
        self._local_names = {LOCAL}
        self._local: collections.deque[str] = collections.deque()  # ready to run here
        self._queued: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)  # per executor
        todo = {t.task_id for t in order if not decisions[t.task_id].reuse}
        self._waiting = {  # in plan order: tasks are handed over in the order the DAG lists them
            t.task_id: {d.task_id for d in declaration_of(t).deps.values() if d.task_id in todo}
            for t in order
            if t.task_id in todo
        }
        self._downstream: dict[str, list[str]] = collections.defaultdict(list)
        for task_id, upstream in self._waiting.items():
            for up in upstream:
                self._downstream[up].append(task_id)
        for task in order:
            self._set(task.task_id, "reused" if decisions[task.task_id].reuse else "pending")

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        remote = [t for t in self.tasks.values() if not self._is_local(t) and t.task_id in self._waiting]
        if remote:
            self._prepare(remote)
        ready = collections.deque(t for t, up in self._waiting.items() if not up)
        last_poll = time.monotonic()
        try:
            while True:
                self._sort(ready)
                if not self.failures:  # remote work first, so it runs while local tasks do
                    for executor in self._executors.values():
                        self._hand_over(executor, ready)
                if self._local and not self.failures and self.local.has_room():
                    self._run_here(self.tasks[self._local.popleft()], ready)
                    if self._busy() and time.monotonic() - last_poll >= self.poll_seconds:
                        last_poll = self._poll(ready)
                    continue
                if ready:
                    continue
                if not self._busy() and not self.local.in_flight:
                    break
                # until a local task ends, or it is time to poll the executors
                wait = max(0.0, self.poll_seconds - (time.monotonic() - last_poll)) if self._busy() else None
                if self.local.in_flight:
                    self._local_ended(self.local.wait(wait), ready)
                else:
                    time.sleep(wait or 0.0)
                if self._busy() and time.monotonic() - last_poll >= self.poll_seconds:
                    last_poll = self._poll(ready)
        except KeyboardInterrupt:
            stopped_here = self.local.cancel()
            if stopped_here:
                self.log(f"interrupted: stopped {len(stopped_here)} local task(s): {', '.join(stopped_here)}")
            for executor in self._executors.values():
                stopped = executor.cancel()
                if stopped:
                    self.log(f"interrupted: terminated {len(stopped)} {executor.name} job(s): {', '.join(stopped)}")
            raise
        finally:
            self._show(force=True)

    def _sort(self, ready: collections.deque[str]) -> None:
        """Ready tasks to the local queue or their executor's queue, in the order they became ready."""
        while ready:
            task_id = ready.popleft()
            task = self.tasks[task_id]
            if self._is_local(task):
                self._local.append(task_id)
            else:
                self._queued[self._executor_name(task)].append(task_id)

    def _poll(self, ready: collections.deque[str]) -> float:
        for executor in self._executors.values():
            self._apply_updates(executor.poll(), ready)
        self._show(force=False)
        return time.monotonic()

    def _busy(self) -> bool:
        return any(e.in_flight for e in self._executors.values())

    def _run_here(self, task: PipeTask, ready: collections.deque[str]) -> None:
        self._set(task.task_id, "running")
        ended = self.local.start(task)  # with one worker it ran to its end; else it runs on
        if ended is not None:
            self._local_ended([ended], ready)

    def _local_ended(self, results: Iterable[LocalResult], ready: collections.deque[str]) -> None:
        for result in results:
            if result.error is not None:
                task = self.tasks[result.task_id]
                self._fail(result.task_id, Failure(str(task), str(result.error), cause=_root_cause(result.error)))
            else:
                state_of(self.tasks[result.task_id]).produced = result.uuid or None
                self._done(result.task_id, result.uuid, ready)

    def _hand_over(self, executor: Executor, ready: collections.deque[str]) -> None:
        """As many queued tasks as the executor takes now: what they read pushed, then handed over
        (the rest stay queued; their specs are made only when they go)."""
        queued = self._queued[executor.name]
        room = max(0, executor.max_concurrent - executor.in_flight)
        if not queued or not room:
            return
        now = [self._remote_task(self.tasks[queued.popleft()]) for _ in range(min(room, len(queued)))]
        self._publish({u for t in now for u in t.pins.values()} | {t.input_bundle for t in now if t.input_bundle})
        self._apply_updates(executor.submit(now), ready)

    def _apply_updates(self, updates: Iterable[JobUpdate], ready: collections.deque[str]) -> None:
        for update in updates:
            task = self.tasks[update.task_id]
            for line in update.log:
                self.log(f"[{task}] {line}")
            if update.note:
                self.log(f"[{task}] {update.note}")
            if update.attempt > 1:
                self.progress.retry((type(task).__name__, self._executor_name(task)), task.task_id)
            if update.phase is Phase.DONE:
                mismatch = self._record_remote(task, update.output_uuid)
                if mismatch:
                    self._fail(task.task_id, Failure(str(task), mismatch))
                else:
                    self._done(task.task_id, update.output_uuid, ready)
            elif update.phase is Phase.FAILED:
                error = update.error
                message = error.message if error is not None else "failed"
                self._fail(task.task_id, Failure(str(task), message, error.hint if error else None))
            else:
                self._set(task.task_id, update.phase.value)

    def _done(self, task_id: str, uuid: str, ready: collections.deque[str]) -> None:
        self.made[task_id] = uuid
        self._set(task_id, "done")
        for down in self._downstream.get(task_id, ()):
            waiting = self._waiting[down]
            waiting.discard(task_id)
            if not waiting:
                ready.append(down)

    def _fail(self, task_id: str, failure: Failure) -> None:
        self.failures.append(failure)
        self._set(task_id, "failed")
        if self._executors:  # while other jobs go on finishing; the apply's error says it at the end
            self.log(f"{failure.label} failed: {failure.message}")

    # --- remote tasks -----------------------------------------------------------------------------

    def _executor_name(self, task: PipeTask) -> str:
        return self.decisions[task.task_id].executor

    def _is_local(self, task: PipeTask) -> bool:
        return self._executor_name(task) in self._local_names

    def _prepare(self, remote: list[PipeTask]) -> None:
        """Each executor made and ready for its classes (images built/pushed); the context's remote.
        An executor that `runs_here` (`type = local`) has its tasks run in this process."""
        by_executor: dict[str, dict[str, type]] = collections.defaultdict(dict)
        for task in remote:
            executor_options(type(task))  # a bad option fails here, before anything is built
            by_executor[self._executor_name(task)][class_path(type(task))] = type(task)
        made = {name: self._make_executor(name, self.context) for name in by_executor}
        self._local_names.update(name for name, executor in made.items() if executor.runs_here)
        elsewhere = [t for t in remote if not self._is_local(t)]
        if not elsewhere:
            return
        _check_transient(elsewhere)  # before any image is built or job started
        try:
            RemoteLocation.of(self.context)
        except RemoteNotConfigured as err:
            first = elsewhere[0]
            raise RemoteNotConfigured(
                f"{first} runs on executor {self._executor_name(first)!r}, which exchanges bundles through the "
                f"context's remote, and context {self.context.name!r} has none",
                hint=f"bind one: dsdt remote {self.context.name} s3://bucket/prefix",
            ) from err
        for name, executor in made.items():
            if not executor.runs_here:
                executor.prepare(list(by_executor[name].values()), self.log)
                self._executors[name] = executor
        if self._executors and self.options.apply_id:
            self.log(f"apply {self.options.apply_id}: `dsdt cancel --apply {self.options.apply_id}` stops its jobs")

    def _remote_task(self, task: PipeTask) -> RemoteTask:
        decision = self.decisions[task.task_id]
        declaration = declaration_of(task)
        pins = {self.decisions[d.task_id].processing_name: self._uuid_of(d) for d in declaration.deps.values()}
        externals = {f"bundle:{e.bundle.uuid}": e.bundle.uuid for e in declaration.externals.values() if e.bundle}
        root = is_root(task)
        fixed = self.options.output_bundle_uuid if root and self.options.output_bundle_uuid else None
        return RemoteTask(
            task_id=task.task_id,
            label=str(task),
            pipe_cls=class_path(type(task)),
            params=luigi_params(task),
            processing_name=decision.processing_name,
            output_bundle=decision.bundle_name,
            output_uuid=fixed or str(uuidlib.uuid4()),
            output_tags=output_tags(task),
            pins={**pins, **externals},
            input_bundle=self.options.input_bundle_uuid if root else None,
            mark_root=root and self.options.mark_root,
            options=executor_options(type(task)),
            code=decision.code_version,
            forced_by=self.options.apply_id if decision.forced else "",
            apply_id=self.options.apply_id,
        )

    def _uuid_of(self, task: PipeTask) -> str:
        decision = self.decisions[task.task_id]
        return decision.uuid if decision.reuse and decision.uuid else self.made[task.task_id]

    def _remote(self) -> RemoteSync:
        if self._sync is None:
            self._sync = RemoteSync(self.context, self.context.remote_settings)
        return self._sync

    def _publish(self, uuids: set[str]) -> None:
        """Commit and push the bundles remote tasks read that the remote lacks (once per apply)."""
        wanted = sorted(u for u in uuids if u not in self._on_remote)
        if not wanted:
            return
        sync = self._remote()
        missing = sync.missing(wanted)
        bundles = [queries.require(self.context, None, u) for u in missing]
        for bundle in bundles:
            if not bundle.is_committed:
                bundle.commit()
        if bundles:
            sync.push(bundles)
        self._on_remote.update(wanted)

    def _record_remote(self, task: PipeTask, uuid: str) -> str | None:
        """The bundle a job made, in the local context (files too when a local task reads them),
        once its manifest shows it is what the plan asked for; else what differs."""
        decision = self.decisions[task.task_id]
        local_reader = any(self._is_local(self.tasks[d]) for d in self._downstream.get(task.task_id, ()))
        self._remote().pull(uuid=uuid, localize=self.localize or local_reader)
        mismatch = differs_from_plan(self.context.load_manifest(uuid), decision.processing_name, decision.code_version)
        if mismatch is not None:
            return f"its job made {mismatch}"
        self._on_remote.add(uuid)
        state_of(task).produced = uuid
        self.journal.produced(str(task), task.task_id, decision.processing_name, uuid)
        return None

    # --- the status table ---------------------------------------------------------------------------

    def _set(self, task_id: str, phase: str) -> None:
        task = self.tasks[task_id]
        self.progress.set((type(task).__name__, self._executor_name(task)), self.phase.get(task_id), phase)
        self.phase[task_id] = phase

    def _show(self, force: bool) -> None:
        now = time.monotonic()
        if not self._executors or (not force and now - self._last_table < self.status_seconds):
            return
        table = self.progress.table()
        if force and table == self._last_shown:  # the end of a run just shown by the last poll: not twice
            return
        self._last_table, self._last_shown = now, table
        self.log(f"JOB STATUS {time.strftime('%H:%M:%S')}\n{table}")


def _check_transient(remote: Sequence[PipeTask]) -> None:
    """A transient bundle never leaves this machine: no remote executor makes or reads one."""
    for task in remote:
        if declaration_of(task).transient:
            raise PipelineError(
                f"{task} is transient (mark_transient) but runs on an executor, whose bundles go through the remote",
                hint="run it here (--executor CLASS=local) or drop mark_transient",
            )
        for arg, dep in declaration_of(task).deps.items():
            if declaration_of(dep).transient:
                raise PipelineError(
                    f"{task} runs on an executor and reads {arg} from {dep}, which is transient (mark_transient): "
                    "its bundle would have to be pushed to the remote",
                    hint="run both here (--executor CLASS=local) or drop mark_transient",
                )


def _root_cause(error: str | Exception) -> BaseException | None:
    """The exception a task raised itself, at the end of the chain of what it caused."""
    if not isinstance(error, Exception):
        return None
    cause: BaseException = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return cause


def first_failure(failures: Sequence[Failure]) -> DisdatError:
    """One error for the apply: the first failure, counting the others."""
    first = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return DisdatError(f"{first.label} failed: {first.message}{more}", hint=first.hint)
