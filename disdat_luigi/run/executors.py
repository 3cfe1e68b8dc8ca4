"""The executors `apply` hands remote tasks to: AWS Batch (one job per task, or one array job for
a batch of sibling tasks) and containers on the local Docker engine (`type = docker`).

Both run the task's module image with the entry point's `--task-spec`: exactly one task, its
inputs pinned to the bundles the host chose, its output under the uuid the host fixed. Before a
Batch job is submitted its task's identity is claimed on the remote (run/claims.py), so any apply,
on any machine, attaches to it instead of starting it again; a docker job is written to this
context's executor journal, which later applies on this machine read the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import time
import uuid as uuidlib
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from disdat_luigi.apply import taskspec
from disdat_luigi.apply.executors import (
    Executor,
    ExecutorFactory,
    JobUpdate,
    Phase,
    RemoteTask,
    executor_options,
)
from disdat_luigi.apply.identity import class_path, differs_from_plan
from disdat_luigi.config import ExecutorSettings, Settings
from disdat_luigi.dockerize.naming import find_pipe_root, image_name, module_of
from disdat_luigi.errors import DisdatError, JobFailed, QueueNotFound, RunError
from disdat_luigi.run import aws, jobs, journal
from disdat_luigi.run.backends.batch import BatchBackend
from disdat_luigi.run.backends.local import LocalBackend
from disdat_luigi.run.claims import Sorting, TaskClaims, claimant_id
from disdat_luigi.run.images import refresh_image
from disdat_luigi.run.output import without_output_line
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.claims import ClaimStore
from disdat_luigi.store.remote.s3 import S3
from disdat_luigi.store.remote.sync import RemoteSync

LogSink = Callable[[str], None]
JOURNAL = "executor-jobs.jsonl"
INLINE_SPEC_LIMIT = 6 * 1024  # larger task specs go through the remote (Batch caps a submission's size)
BATCH_PHASES = {
    "SUBMITTED": Phase.SUBMITTED,
    "PENDING": Phase.SUBMITTED,
    "RUNNABLE": Phase.SUBMITTED,
    "STARTING": Phase.SUBMITTED,
    "RUNNING": Phase.RUNNING,
    "SUCCEEDED": Phase.DONE,
    "FAILED": Phase.FAILED,
}


def executor_factory(settings: Settings, build: bool = True) -> ExecutorFactory:
    """Makes the executor an `[executor.NAME]` section describes, for an apply on `context`."""

    def make(name: str, context: LocalContext) -> Executor | None:
        config = settings.executor(name)
        if config.type == "aws_batch":
            return BatchExecutor(settings=settings, config=config, context=context, build=build)
        if config.type == "docker":
            return DockerExecutor(settings=settings, config=config, context=context, build=build)
        return None  # type = local: its tasks run in the apply process

    return make


# --- the journal: which job does which piece of work -------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExecutorJob:
    identity: str
    job_id: str
    output_uuid: str
    executor: str
    task: str
    submitted: float


class ExecutorJournal:
    """`<context>/executor-jobs.jsonl`: append-only; the newest line of an identity wins."""

    def __init__(self, context: LocalContext) -> None:
        self.path = context.path / JOURNAL

    @contextlib.contextmanager
    def claimed(self) -> Iterator[dict[str, ExecutorJob]]:
        """The journal, read under an exclusive lock held until the caller has written the jobs it
        starts: of two applies needing the same work, the second sees the first's job. The lock
        is on the journal file itself, which is never removed or replaced (a lock file in tmp/
        was taken by `dsdt verify` for a dead writer's and deleted under a holder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._read()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, ExecutorJob]:
        found: dict[str, ExecutorJob] = {}
        if not self.path.exists():
            return found
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                job = ExecutorJob(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a torn last line of a killed writer
            found[job.identity] = job
        return found

    def add(self, records: Sequence[ExecutorJob]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(asdict(r)) + "\n" for r in records))
            handle.flush()


# --- what both executors share ------------------------------------------------------------------------


@dataclass
class Tracked:
    task: RemoteTask
    job_id: str
    output_uuid: str
    phase: Phase
    memory: int = 0


class ContainerExecutor(Executor):
    """Images checked once, tasks attached to known jobs or started, jobs polled in bulk."""

    push_images = False

    def __init__(self, *, settings: Settings, config: ExecutorSettings, context: LocalContext, build: bool) -> None:
        self.settings = settings
        self.config = config
        self.context = context
        self.build = build
        self.name = config.name
        self.max_concurrent = config.max_concurrent_jobs
        self.journal = ExecutorJournal(context)
        self.images: dict[str, tuple[str, str]] = {}  # class path -> (image name, reference)
        self.tracked: dict[str, Tracked] = {}  # job id -> the task it runs
        self.log: LogSink = lambda _line: None

    @property
    def in_flight(self) -> int:
        return len(self.tracked)

    @functools.cached_property
    def location(self) -> RemoteLocation:
        """Read from the context's metadata once (it cannot change during an apply)."""
        return RemoteLocation.of(self.context)

    def prepare(self, classes: Sequence[type], log: LogSink) -> None:
        self.log = log
        done: dict[str, str] = {}
        for cls in classes:
            path = class_path(cls)
            module, _name = module_of(path)
            name = image_name(module, self.settings.docker.repository_prefix)
            if name not in done:
                root = find_pipe_root(module, self.settings.dockerize.pipe_root)
                refresh_image(path, root, push=self.push_images, build=self.build, settings=self.settings, log=log)
                done[name] = self.image_reference(name)
            self.images[path] = (name, done[name])

    def submit(self, tasks: Sequence[RemoteTask]) -> list[JobUpdate]:
        updates: list[JobUpdate] = []
        with self.journal.claimed() as journal:
            known = {t.identity: journal[t.identity] for t in tasks if journal.get(t.identity, None) is not None}
            mine = [k.job_id for k in known.values() if k.executor == self.name]
            phases = self.phases(mine) if mine else {}  # one bulk look at the jobs of earlier applies
            fresh = []
            for task in tasks:
                earlier = known.get(task.identity)
                attached = self._attach(task, earlier, phases.get(earlier.job_id) if earlier else None)
                if attached is None:
                    fresh.append(task)
                else:
                    updates.append(attached)
            started: list[tuple[RemoteTask, str]] = []

            def remember(task: RemoteTask, job_id: str) -> None:
                """Journaled and tracked the moment it is started: should a later submission of the
                batch fail, every job already running is still known (to Ctrl-C, to the next apply)."""
                self.journal.add(
                    [
                        ExecutorJob(
                            identity=task.identity,
                            job_id=job_id,
                            output_uuid=task.output_uuid,
                            executor=self.name,
                            task=task.label,
                            submitted=time.time(),
                        )
                    ]
                )
                self.tracked[job_id] = Tracked(task, job_id, task.output_uuid, Phase.SUBMITTED, self._memory(task))
                started.append((task, job_id))

            if fresh:
                self.start(fresh, remember)
        updates += [JobUpdate(task_id=t.task_id, phase=Phase.SUBMITTED, job_id=job_id) for t, job_id in started]
        return updates

    def _attach(self, task: RemoteTask, known: ExecutorJob | None, phase: Phase | None) -> JobUpdate | None:
        """A job of another apply (or of this one before the host died) doing this exact work:
        followed if it still runs, its bundle used if it made one; None: start a new one."""
        if known is None or known.executor != self.name:
            return None
        if phase in (Phase.SUBMITTED, Phase.RUNNING):
            self.tracked[known.job_id] = Tracked(task, known.job_id, known.output_uuid, phase, self._memory(task))
            self.log(f"{task.label}: attached to job {known.job_id}, already doing this work")
            return JobUpdate(task_id=task.task_id, phase=phase, job_id=known.job_id)
        if phase is Phase.DONE and self._made_as_planned(task, known.job_id, known.output_uuid):
            self.log(f"{task.label}: job {known.job_id} already made its bundle {known.output_uuid}")
            return JobUpdate(task_id=task.task_id, phase=Phase.DONE, job_id=known.job_id, output_uuid=known.output_uuid)
        return None

    def _made_as_planned(self, task: RemoteTask, job_id: str, output_uuid: str) -> bool:
        """The earlier job's bundle is on the remote, of the planned recipe and code identity."""
        try:
            found = RemoteSync(self.context, self.context.remote_settings).fetch(output_uuid)
        except DisdatError as err:
            self.log(f"{task.label}: the bundle of job {job_id} cannot be read ({err.message}); starting a new job")
            return False
        if found is None:
            return False
        mismatch = differs_from_plan(found.manifest, task.processing_name, task.code)
        if mismatch is not None:
            self.log(f"{task.label}: job {job_id} made {mismatch}; starting a new job")
        return mismatch is None

    def poll(self) -> list[JobUpdate]:
        if not self.tracked:
            return []
        updates: list[JobUpdate] = []
        for job_id, phase in self.phases(list(self.tracked)).items():
            tracked = self.tracked.get(job_id)
            if tracked is None or phase is None or phase is tracked.phase:
                continue
            tracked.phase = phase
            if phase is Phase.DONE or phase is Phase.FAILED:
                del self.tracked[job_id]
                lines, error = self.finish(tracked)
                updates.append(
                    JobUpdate(
                        task_id=tracked.task.task_id,
                        phase=phase,
                        job_id=job_id,
                        output_uuid=tracked.output_uuid,
                        error=error,
                        log=tuple(lines),
                    )
                )
            else:
                updates.append(JobUpdate(task_id=tracked.task.task_id, phase=phase, job_id=job_id))
        return updates

    def cancel(self) -> list[str]:
        stopped = []
        for job_id, tracked in list(self.tracked.items()):
            try:
                self.terminate(job_id)
            except DisdatError as err:
                self.log(f"could not stop job {job_id}: {err.message}")
                continue
            stopped.append(f"{job_id} ({tracked.task.label})")
            del self.tracked[job_id]
        return stopped

    def command(self, spec: Sequence[str]) -> tuple[str, ...]:
        """The image entry point's arguments: the remote, its encryption, then the task spec."""
        remote = self.settings.remote
        args = [
            "--remote-context", self.location.context,
            "--remote-url", f"s3://{self.location.bucket}/{self.location.prefix}".rstrip("/"),
            "--server-side-encryption", remote.server_side_encryption,
        ]  # fmt: skip
        if remote.sse_kms_key_id:
            args += ["--sse-kms-key-id", remote.sse_kms_key_id]
        return (*args, *spec)

    def run_request(self, task: RemoteTask) -> RunRequest:
        """The resources of the task's class over its executor's defaults, as `dsdt run` takes them."""
        config, options = self.config, task.options
        return RunRequest(
            context=self.context.name,
            input_bundle="-",
            output_bundle="-",
            pipe_cls=task.pipe_cls,
            backend=BackendName.AWS_BATCH if self.push_images else BackendName.LOCAL,
            vcpus=options.get("vcpus", config.vcpus),
            memory=options.get("memory", config.memory),
            gpus=options.get("gpus", config.gpus),
            timeout=options.get("timeout", config.timeout),
            retries=options.get("retries", config.retries),
            tags=dict(config.tags),
            queue=config.queue,
            job_role_arn=config.job_role_arn,
            use_aws_session_token=config.use_aws_session_token or None,
        )

    def _memory(self, task: RemoteTask) -> int:
        return int(task.options.get("memory", self.config.memory))

    # what each executor does its own way
    @abstractmethod
    def image_reference(self, name: str) -> str:
        """The exact image to run for the module image `name`."""

    @abstractmethod
    def start(self, tasks: Sequence[RemoteTask], started: Callable[[RemoteTask, str], None]) -> None:
        """Start jobs for `tasks`, telling `started` of each task's job id as soon as it has one."""

    @abstractmethod
    def phases(self, job_ids: Sequence[str]) -> dict[str, Phase | None]:
        """Where each job is (None: unknown to the executor)."""

    @abstractmethod
    def finish(self, tracked: Tracked) -> tuple[list[str], DisdatError | None]:
        """An ended job's log lines and, when it failed, its diagnosis."""

    @abstractmethod
    def terminate(self, job_id: str) -> None:
        """Stop a job."""


# --- AWS Batch -----------------------------------------------------------------------------------------


class BatchExecutor(ContainerExecutor):
    """Tasks as AWS Batch jobs: the image pushed under its content tag, one job definition per
    image and resources, `array_min_size` or more ready siblings of a class as one array job."""

    push_images = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = BatchBackend(self.settings, self._say_once)
        self._said: set[str] = set()
        self.definitions: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self.described: dict[str, Mapping[str, Any]] = {}
        self._summaries: dict[str, dict[str, int]] = {}  # array job -> its children's counts at the last poll
        self._child_phases: dict[str, dict[str, Phase]] = {}  # array job -> child -> phase last listed
        self._followed: set[str] = set()  # jobs of other applies this one follows

    # --- the hook: claims on the remote decide who submits (run/claims.py) ---------------------------

    @functools.cached_property
    def claims(self) -> TaskClaims:
        """Made when first needed: the context's remote is checked (with a clear error) first."""
        store = ClaimStore(S3(self.context.remote_settings), self.location)
        return TaskClaims(
            store=store,
            claimant=claimant_id(self.context.path),
            phases=self.phases,
            bundle_ready=self._made_as_planned,
            log=lambda line: self.log(line),
        )

    @property
    def in_flight(self) -> int:
        waiting = len(self.claims.waiting) if "claims" in self.__dict__ else 0
        return len(self.tracked) + waiting

    def submit(self, tasks: Sequence[RemoteTask]) -> list[JobUpdate]:
        """Claimed on the remote, then started; tasks another apply claimed follow its job."""
        return self._go(self.claims.sort(tasks))

    def poll(self) -> list[JobUpdate]:
        updates = self._go(self.claims.recheck())
        self.claims.renew({t.task.identity for job_id, t in self.tracked.items() if job_id not in self._followed})
        return updates + super().poll()

    def cancel(self) -> list[str]:
        """Only this apply's own jobs: a job followed from another apply goes on for it."""
        for job_id in self._followed:
            self.tracked.pop(job_id, None)
        return super().cancel()

    def _go(self, sorting: Sorting) -> list[JobUpdate]:
        updates = []
        for followed in sorting.follow:
            task, job_id = followed.task, followed.job_id
            if followed.phase is Phase.DONE:
                self.log(f"{task.label}: job {job_id} already made its bundle {followed.bundle}")
            else:
                self.log(f"{task.label}: attached to job {job_id}, already doing this work")
                self.tracked[job_id] = Tracked(task, job_id, followed.bundle, followed.phase, self._memory(task))
                self._followed.add(job_id)
            updates.append(
                JobUpdate(task_id=task.task_id, phase=followed.phase, job_id=job_id, output_uuid=followed.bundle)
            )
        started: list[JobUpdate] = []

        def remember(task: RemoteTask, job_id: str) -> None:
            self.claims.submitted(task, job_id)
            self.tracked[job_id] = Tracked(task, job_id, task.output_uuid, Phase.SUBMITTED, self._memory(task))
            started.append(JobUpdate(task_id=task.task_id, phase=Phase.SUBMITTED, job_id=job_id))

        if sorting.submit:
            try:
                self.start(sorting.submit, remember)
            except BaseException:
                self.claims.release_unsubmitted()
                raise
        return updates + started

    def _say_once(self, line: str) -> None:
        """The backend's per-job remarks (a credentials warning) once per apply, not once per job."""
        if line not in self._said:
            self._said.add(line)
            self.log(line)

    def image_reference(self, name: str) -> str:
        return self.backend.image_reference(name)

    def prepare(self, classes: Sequence[type], log: LogSink) -> None:
        """Before the expensive step (building and pushing images): the queue, each class's
        resources against it, and how the jobs get AWS credentials; then the images."""
        self.log = log
        checked: set[tuple[Any, ...]] = set()
        for cls in classes:
            request = self.run_request(_probe(cls))
            key = (request.queue, request.vcpus, request.memory, request.gpus)
            if key not in checked:
                self._check(request)
                checked.add(key)
        if not (self.config.job_role_arn or self.settings.run.job_role_arn or self.config.use_aws_session_token):
            log(
                f"warning: [executor.{self.name}] has neither job_role_arn nor use_aws_session_token: its jobs "
                "need AWS credentials from their instance to reach the remote"
            )
        super().prepare(classes, log)

    def _check(self, request: RunRequest) -> None:
        """The backend's check, its errors naming the setting that gave the queue."""
        setting = f"[executor.{self.name}] queue" if self.config.queue else "[run] aws_batch_queue"
        if not (request.queue or self.settings.run.aws_batch_queue):
            raise RunError(
                f"executor {self.name!r} (aws_batch) has no job queue",
                hint=f"set queue in [executor.{self.name}] (or [run] aws_batch_queue)",
            )
        try:
            self.backend.check(request)
        except QueueNotFound as err:
            raise QueueNotFound(err.message, hint=f"fix {setting}: name an existing AWS Batch job queue") from err

    def start(self, tasks: Sequence[RemoteTask], started: Callable[[RemoteTask, str], None]) -> None:
        groups: dict[tuple[Any, ...], list[RemoteTask]] = {}
        for task in tasks:
            request = self.run_request(task)
            key = (task.pipe_cls, request.vcpus, request.memory, request.gpus, request.timeout, request.retries)
            groups.setdefault(key, []).append(task)
        for group in groups.values():
            if len(group) >= self.config.array_min_size:
                for task, job_id in self._submit_array(group):
                    started(task, job_id)
            else:
                for task in group:
                    started(task, self._submit_one(task))

    def _spec(self, task: RemoteTask, spec_args: Sequence[str], name: str) -> jobs.JobSpec:
        request = self.run_request(task)
        image_name_, reference = self.images[task.pipe_cls]
        job = ContainerJob(
            image=reference,
            image_name=image_name_,
            command=self.command(spec_args),
            environment=aws.endpoint_environment(),
        )
        key = (reference, request.vcpus, request.memory, request.gpus)
        if key not in self.definitions:
            self.definitions[key] = self.backend.job_definition(request, job)
        spec = self.backend.spec(request, job, self.definitions[key])
        tags = {**dict(spec.tags), "disdat:identity": task.identity, "disdat:executor": self.name}
        return replace(spec, name=name[:128], tags=tags)

    def _submit_one(self, task: RemoteTask) -> str:
        """Its spec inline, or, when large (many inputs), stored next to the remote context: Batch
        limits the size of a submission."""
        spec_ = task.spec(self.name)
        inline = taskspec.inline_arguments(spec_)
        args = inline if len(inline[1]) <= INLINE_SPEC_LIMIT else self._store([task])
        spec = self._spec(task, args, _job_name(task))
        job_id = aws.submit_job(**spec.submission())
        self._record_jobs([(task, job_id)], spec)
        return job_id

    def _store(self, tasks: Sequence[RemoteTask]) -> list[str]:
        """The specs of `tasks` on the remote (a list for an array job, one spec for a single job);
        the entry point's arguments naming them and their sha256."""
        key = f"{self.location.root}tasks/{uuidlib.uuid4()}.json"
        body = taskspec.stored_body([task.spec(self.name) for task in tasks])
        S3(self.context.remote_settings).put_bytes(self.location.bucket, key, body)
        return taskspec.stored_arguments(f"s3://{self.location.bucket}/{key}", body)

    def _submit_array(self, group: Sequence[RemoteTask]) -> list[tuple[RemoteTask, str]]:
        """One array job; child i runs group[i] from a spec list stored next to the remote context."""
        first = group[0]
        spec = self._spec(first, self._store(group), f"{_job_name(first)}-x{len(group)}")
        submission = spec.submission()
        submission["arrayProperties"] = {"size": len(group)}
        submission["tags"] = {**submission.get("tags", {}), "disdat:identity": f"array-of-{len(group)}"}
        parent = aws.submit_job(**submission)
        self.log(f"submitted array job {parent} of {len(group)} {first.cls_name} tasks")
        children = [(task, f"{parent}:{index}") for index, task in enumerate(group)]
        self._record_jobs(children, spec)
        return children

    def _record_jobs(self, started: Sequence[tuple[RemoteTask, str]], spec: jobs.JobSpec) -> None:
        """Each job in the context's job record, as `dsdt run` records its own: `dsdt jobs`, `logs`,
        `wait` and `cancel` find executor jobs (array children too) the same way."""
        definition = next(
            (d for d in self.definitions.values() if d.get("jobDefinitionArn") == spec.definition_arn), {}
        )
        for task, job_id in started:
            journal.remember(
                self.context.path,
                journal.JobRecord(
                    job_id=job_id,
                    job_name=spec.name,
                    pipe_cls=task.pipe_cls,
                    output_bundle=task.output_bundle,
                    queue=spec.queue,
                    definition=str(definition.get("jobDefinitionName", "")),
                    memory=spec.resources.memory,
                    submitted=journal.now(),
                ),
            )

    def phases(self, job_ids: Sequence[str]) -> dict[str, Phase | None]:
        """Single jobs described (100 per request); array children through their parent: one
        describe per array and poll, its children listed by status only when its counts moved, and
        each child described once, when it ended (for its diagnosis and log)."""
        children: dict[str, list[str]] = {}
        single = []
        for job_id in job_ids:
            parent, colon, _index = job_id.partition(":")
            if colon:
                children.setdefault(parent, []).append(job_id)
            else:
                single.append(job_id)
        found: dict[str, Phase | None] = {}
        described = jobs.describe_many(single + list(children), aws.describe_jobs)
        for job_id in single:
            found[job_id] = BATCH_PHASES.get(described[job_id]["status"]) if job_id in described else None
            if job_id in described:
                self.described[job_id] = described[job_id]
        ended: list[str] = []
        for parent, ids in children.items():
            if parent not in described:
                found.update(dict.fromkeys(ids))
                continue
            found.update(self._children(parent, ids, described[parent]))
            ended += [i for i in ids if found[i] in (Phase.DONE, Phase.FAILED)]
        if ended:
            self.described.update(jobs.describe_many(ended, aws.describe_jobs))
        return found

    def _children(self, parent: str, ids: list[str], described: Mapping[str, Any]) -> dict[str, Phase | None]:
        summary = dict((described.get("arrayProperties") or {}).get("statusSummary") or {})
        before = self._summaries.get(parent, {})
        moved = sorted(s for s in ("RUNNING", "SUCCEEDED", "FAILED") if summary.get(s, 0) != before.get(s, 0))
        self._summaries[parent] = summary
        known = self._child_phases.setdefault(parent, {})
        for status in moved:
            for child in aws.array_children(parent, status):
                known[child] = BATCH_PHASES[status]
        return {i: known.get(i, Phase.SUBMITTED) for i in ids}

    def finish(self, tracked: Tracked) -> tuple[list[str], DisdatError | None]:
        job = self.described.pop(tracked.job_id, {})
        stream = (job.get("container") or {}).get("logStreamName")
        page = aws.log_page(stream, None, from_head=False) if stream else None  # its end: where a failure shows
        lines = without_output_line(str(e.get("message", "")) for e in page[0]) if page else []
        if tracked.phase is Phase.DONE:
            return lines, None
        return lines, jobs.failure(aws.with_exit_code(job), lines, tracked.memory)

    def terminate(self, job_id: str) -> None:
        aws.terminate_job(job_id, "interrupted (Ctrl-C) in the dsdt apply that submitted it")


def _job_name(task: RemoteTask) -> str:
    """Names the work, so jobs can be found again from the console or `list_jobs`."""
    return f"dsdt-{task.cls_name}-{task.identity}"


def _probe(cls: type) -> RemoteTask:
    """A stand-in task of `cls`, for what depends on the class alone (its resources)."""
    return RemoteTask(
        task_id="",
        label="",
        pipe_cls=class_path(cls),
        params={},
        processing_name="",
        output_bundle="",
        output_uuid="",
        options=executor_options(cls),
    )


# --- the local Docker engine -----------------------------------------------------------------------


class DockerExecutor(ContainerExecutor):
    """The same containers on this machine's engine (to debug what Batch would run)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = LocalBackend(self.settings, lambda line: self.log(line))
        self._client: Any = None
        self.exit_codes: dict[str, int] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from disdat_luigi.dockerize import engine

            self._client = engine.connect()
        return self._client

    def image_reference(self, name: str) -> str:
        return self.backend.image_reference(name)

    def start(self, tasks: Sequence[RemoteTask], started: Callable[[RemoteTask, str], None]) -> None:
        for task in tasks:
            request = replace(self.run_request(task), gpus=None)
            if task.options.get("gpus"):
                raise JobFailed(f"{task.label} asks for GPUs, which the docker executor does not pass to containers")
            container = self.client.containers.run(
                self.images[task.pipe_cls][1],
                command=list(self.command(taskspec.inline_arguments(task.spec(self.name)))),
                environment={**aws.endpoint_environment(), **self.backend.secret_environment()},
                network_mode=self.settings.docker.network_mode,
                detach=True,
                labels={"disdat.identity": task.identity, "disdat.executor": self.name},
                **self.backend.limits(request),
            )
            started(task, str(container.id))

    def phases(self, job_ids: Sequence[str]) -> dict[str, Phase | None]:
        import docker.errors

        found: dict[str, Phase | None] = {}
        for job_id in job_ids:
            try:
                state = self.client.containers.get(job_id).attrs.get("State", {})
            except docker.errors.NotFound:
                found[job_id] = None
                continue
            if state.get("Status") in ("exited", "dead"):
                self.exit_codes[job_id] = int(state.get("ExitCode", 1))
                found[job_id] = Phase.DONE if self.exit_codes[job_id] == 0 else Phase.FAILED
            else:
                found[job_id] = Phase.RUNNING if state.get("Status") == "running" else Phase.SUBMITTED
        return found

    def finish(self, tracked: Tracked) -> tuple[list[str], DisdatError | None]:
        container = self.client.containers.get(tracked.job_id)
        lines = without_output_line(container.logs().decode("utf-8", "replace").splitlines())
        container.remove(force=True)
        code = self.exit_codes.pop(tracked.job_id, 1)
        if tracked.phase is Phase.DONE:
            return lines, None
        reason = "it ran out of memory (exit code 137)" if code == 137 else f"exit code {code}"
        return lines, JobFailed(
            f"its container {tracked.job_id[:12]} failed: {reason}", hint="last log lines:\n" + "\n".join(lines[-20:])
        )

    def terminate(self, job_id: str) -> None:
        self.client.containers.get(job_id).remove(force=True)
