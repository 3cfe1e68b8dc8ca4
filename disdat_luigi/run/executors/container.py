"""What the container executors (AWS Batch, the local Docker engine) share: each job in the
context's one job record (run/journal.py) under the work it does, images checked once, tasks attached to known jobs or
started, jobs polled in bulk, and the container's command line.

Each runs the task's module image with the entry point's `--task-spec`: exactly one task, its
inputs pinned to the bundles the host chose, its output under the uuid the host fixed. Before a
Batch job is submitted its task's identity is claimed on the remote (run/claims.py), so any apply,
on any machine, attaches to it instead of starting it again; a docker job is found in this
context's job record, which later applies on this machine read the same way.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from disdat_luigi.apply.executors import Executor, JobUpdate, Phase, RemoteTask
from disdat_luigi.apply.identity import class_path, differs_from_plan
from disdat_luigi.config import ExecutorSettings, Settings
from disdat_luigi.dockerize.naming import find_pipe_root, image_name, module_of
from disdat_luigi.errors import DisdatError, RunError
from disdat_luigi.run import driver_job, journal
from disdat_luigi.run.command import container_command
from disdat_luigi.run.environment import JobEnvironment, class_environment
from disdat_luigi.run.images import refresh_image
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.s3 import S3
from disdat_luigi.store.remote.sync import RemoteSync

LogSink = Callable[[str], None]


# --- what both executors share ------------------------------------------------------------------------


@dataclass
class Tracked:
    task: RemoteTask
    job_id: str
    output_uuid: str
    phase: Phase
    memory: int = 0
    attempt: int = 1  # of the job (the executor's own retries, e.g. after a lost host)


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """Which attempt a job is on, of how many, and why the one before it ended."""

    number: int
    of: int
    reason: str = ""


class ContainerExecutor(Executor):
    """Images checked once, tasks attached to known jobs or started, jobs polled in bulk."""

    platform = ""  # where its jobs run, as the job record says it (aws_batch, docker)

    push_images = False

    def __init__(
        self,
        *,
        settings: Settings,
        config: ExecutorSettings,
        context: LocalContext,
        build: bool,
        log: LogSink | None = None,
        images: Mapping[str, str] | None = None,
        environment: JobEnvironment | None = None,
        driver: str = "",
    ) -> None:
        self.settings = settings
        self.driver = driver  # the driver job this apply runs in (its host lists the jobs it submits)
        self.environment = environment or JobEnvironment()  # the apply's own (env=, secrets=)
        self.environments: dict[str, JobEnvironment] = {}  # class path -> its jobs' environment
        self.given_images = dict(images or {})  # class path -> image, chosen by the host of a driver
        self.config = config
        self.context = context
        self.build = build
        self.name = config.name
        self.max_concurrent = config.max_concurrent_jobs
        self.images: dict[str, tuple[str, str]] = {}  # class path -> (image name, reference)
        self.tracked: dict[str, Tracked] = {}  # job id -> the task it runs
        self.more_memory: dict[str, int] = {}  # task identity -> MiB of its retry after an out-of-memory kill
        self.log: LogSink = log or (lambda _line: None)
        # told of each `dsdt run` job as soon as it is submitted (so it can be found again, even
        # when the process following it fails): (job id, submission, job definition)
        self.on_submitted: Callable[[str, Mapping[str, Any], Mapping[str, Any]], None] = lambda *_: None

    @property
    def in_flight(self) -> int:
        return len(self.tracked)

    @functools.cached_property
    def location(self) -> RemoteLocation:
        """Read from the context's metadata once (it cannot change during an apply)."""
        return RemoteLocation.of(self.context)

    def environments_of(self, classes: Sequence[type]) -> None:
        """Each class's job environment (section < class < apply), checked before anything is built."""
        section = JobEnvironment.from_pairs(self.config.env, self.config.secrets, f"[executor.{self.name}]")
        for cls in classes:
            self.environments[class_path(cls)] = section.merged(class_environment(cls)).merged(self.environment)

    def prepare(self, classes: Sequence[type], log: LogSink) -> None:
        self.log = log
        self.environments_of(classes)
        done: dict[str, str] = {}
        for cls in classes:
            path = class_path(cls)
            module, _name = module_of(path)
            name = image_name(module, self.settings.docker.repository_prefix)
            if path in self.given_images:
                self.images[path] = (name, self.given_images[path])
                continue
            if name not in done:
                root = find_pipe_root(module, self.settings.dockerize.pipe_root)
                refresh_image(path, root, push=self.push_images, build=self.build, settings=self.settings, log=log)
                done[name] = self.image_reference(name)
            self.images[path] = (name, done[name])

    def submit(self, tasks: Sequence[RemoteTask]) -> list[JobUpdate]:
        updates: list[JobUpdate] = []
        with journal.locked(self.context.path) as recorded:
            jobs = journal.by_identity(recorded, self.name)
            known = {t.identity: jobs[t.identity] for t in tasks if t.identity in jobs}
            mine = [k.job_id for k in known.values()]
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
                self.remember_job(task, job_id)
                self.tracked[job_id] = Tracked(task, job_id, task.output_uuid, Phase.SUBMITTED, self._memory(task))
                started.append((task, job_id))

            if fresh:
                self.start(fresh, remember)
        updates += [JobUpdate(task_id=t.task_id, phase=Phase.SUBMITTED, job_id=job_id) for t, job_id in started]
        return updates

    def _attach(self, task: RemoteTask, known: journal.JobRecord | None, phase: Phase | None) -> JobUpdate | None:
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
            if tracked is None or phase is None:
                continue
            attempt = self.attempt_of(job_id)
            retried = attempt is not None and attempt.number > tracked.attempt
            if phase is tracked.phase and not retried:
                continue
            tracked.phase = phase
            if retried and attempt is not None:
                tracked.attempt = attempt.number
                updates.append(self._retried(tracked, attempt))
                if phase is not Phase.DONE and phase is not Phase.FAILED:
                    continue
            if phase is Phase.FAILED:
                again = self.retry(tracked)
                if again is not None:
                    del self.tracked[job_id]
                    updates.append(again)
                    continue
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

    def remember_job(self, task: RemoteTask, job_id: str, **details: Any) -> None:
        """A job started for `task` in the context's job record: `dsdt jobs`, `logs`, `wait` and
        `cancel` find it, and the next apply attaches to it (by the task's identity). In a driver
        job, also on the remote, where the host that submitted the driver finds it."""
        record = journal.JobRecord(
            job_id=job_id,
            job_name=details.pop("job_name", task.label),
            pipe_cls=task.pipe_cls,
            output_bundle=task.output_bundle,
            queue=details.pop("queue", ""),
            definition=details.pop("definition", ""),
            memory=details.pop("memory", self._memory(task)),
            submitted=journal.now(),
            task=task.label,
            executor=self.name,
            platform=self.platform,
            apply_id=task.apply_id,
            identity=task.identity,
            output_uuid=task.output_uuid,
            driver=self.driver,
            **details,
        )
        journal.remember(self.context.path, record)
        if self.driver:
            driver_job.record_child(S3(self.context.remote_settings), self.location, record)

    def _retried(self, tracked: Tracked, attempt: Attempt) -> JobUpdate:
        why = f": {attempt.reason}" if attempt.reason else ""
        return JobUpdate(
            task_id=tracked.task.task_id,
            phase=tracked.phase,
            job_id=tracked.job_id,
            attempt=attempt.number,
            attempts=attempt.of,
            note=f"job {tracked.job_id} attempt {attempt.number}/{attempt.of}{why}",
        )

    def attempt_of(self, job_id: str) -> Attempt | None:
        """The attempt a job is on (None: the executor does not retry jobs itself)."""
        return None

    def retry(self, tracked: Tracked) -> JobUpdate | None:
        """A failed job started again in a new job (e.g. with more memory): the update saying so;
        None: the failure stands."""
        return None

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
        return container_command(self.location, self.settings.remote, spec)

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
            memory=self._memory(task),
            gpus=options.get("gpus", config.gpus),
            timeout=options.get("timeout", config.timeout),
            retries=options.get("retries", config.retries),
            tags=dict(config.tags),
            queue=config.queue,
            job_role_arn=config.job_role_arn,
            use_aws_session_token=config.use_aws_session_token or None,
            environment=self.environments.get(task.pipe_cls, self.environment),
        )

    def _memory(self, task: RemoteTask) -> int:
        return self.more_memory.get(task.identity) or int(task.options.get("memory", self.config.memory))

    # what each executor does its own way
    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        """`dsdt run`: one container whose work is a whole apply; returns once it ended (or, on
        AWS Batch without --wait, once submitted)."""
        raise RunError(f"executor {self.name!r} cannot run a whole pipeline", hint="use dsdt run --backend")

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
