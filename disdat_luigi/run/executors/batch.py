"""The `aws_batch` executor: each task (or a batch of sibling tasks, as one array job) an AWS
Batch job running its module's image, pushed under its content tag; and `dsdt run`'s one job
whose work is a whole apply, followed to its end when asked."""

from __future__ import annotations

import functools
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from disdat_luigi.apply import taskspec
from disdat_luigi.apply.executors import JobUpdate, Phase, RemoteTask, executor_options
from disdat_luigi.apply.identity import class_path
from disdat_luigi.config import ECR_REGISTRY
from disdat_luigi.dockerize import engine
from disdat_luigi.errors import DisdatError, ImageNotFound, JobFailed, QueueNotFound, RunError
from disdat_luigi.run.batch import capacity, client, state
from disdat_luigi.run.batch import spec as assembly
from disdat_luigi.run.batch.spec import JobSpec, Resources
from disdat_luigi.run.batch.state import JobPhase, JobState
from disdat_luigi.run.claims import Sorting, TaskClaims, claimant_id
from disdat_luigi.run.executors.container import Attempt, ContainerExecutor, LogSink, Tracked
from disdat_luigi.run.output import output_of, without_output_line
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus
from disdat_luigi.store.remote.claims import ClaimBook, ClaimStore
from disdat_luigi.store.remote.notices import GcNotices
from disdat_luigi.store.remote.s3 import S3

INLINE_SPEC_LIMIT = 6 * 1024  # larger task specs go through the remote (Batch caps a submission's size)
LAST_LINES = 10_000  # of an ended job's log, read from its end and shown with its result (a page of CloudWatch)


def task_phase(phase: JobPhase) -> Phase:
    """A Batch job's phase as the dispatcher sees a task's."""
    if phase.waiting:
        return Phase.SUBMITTED
    return {JobPhase.RUNNING: Phase.RUNNING, JobPhase.SUCCEEDED: Phase.DONE}.get(phase, Phase.FAILED)


class BatchExecutor(ContainerExecutor):
    """Tasks as AWS Batch jobs: the image pushed under its content tag, one job definition per
    image and resources, `array_min_size` or more ready siblings of a class as one array job."""

    platform = "aws_batch"

    push_images = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._said: set[str] = set()
        self.definitions: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self.described: dict[str, JobState] = {}
        self._summaries: dict[str, Mapping[JobPhase, int]] = {}  # array job -> its children's counts at the last poll
        self._child_phases: dict[str, dict[str, Phase]] = {}  # array job -> child -> phase last listed
        self._followed: set[str] = set()  # jobs of other applies this one follows
        self.claim_store: ClaimBook | None = None  # default: the context's remote

    # --- claims on the remote decide who submits (run/claims.py) -----------------------------------

    @functools.cached_property
    def claims(self) -> TaskClaims:
        """Made when first needed: the context's remote is checked (with a clear error) first."""
        store = self.claim_store or ClaimStore(S3(self.context.remote_settings), self.location)
        return TaskClaims(
            store=store,
            claimant=claimant_id(self.context.path),
            phases=self.phases,
            bundle_ready=self._made_as_planned,
            log=lambda line: self.log(line),
            reclaimers=self._reclaimers,
        )

    def _reclaimers(self, uuids: Sequence[str]) -> dict[str, str]:
        """Of a task's inputs, those a live remote gc notice reclaims -> the notice."""
        if self.claim_store is not None:  # claims kept in memory (tests): no remote to ask
            return {}
        return GcNotices(S3(self.context.remote_settings), self.location).reclaimers(uuids, time.time())

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

    def prepare(self, classes: Sequence[type], log: LogSink) -> None:
        """Before the expensive step (building and pushing images): the queue, each class's
        resources against it, and how the jobs get AWS credentials; then the images."""
        self.log = log
        self.environments_of(classes)
        checked: set[tuple[Any, ...]] = set()
        for cls in classes:
            request = self.run_request(probe(cls))
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
            self.check(request)
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

    def _spec(self, task: RemoteTask, spec_args: Sequence[str], name: str) -> assembly.JobSpec:
        request = self.run_request(task)
        image_name_, reference = self.images[task.pipe_cls]
        job = ContainerJob(
            image=reference,
            image_name=image_name_,
            command=self.command(spec_args),
            environment=client.endpoint_environment(),
        )
        key = (
            reference,
            request.vcpus,
            request.memory,
            request.gpus,
            tuple(sorted(request.environment.secrets.items())),
        )
        if key not in self.definitions:
            self.definitions[key] = self.job_definition(request, job)
        spec = self.spec(request, job, self.definitions[key])
        tags = {**dict(spec.tags), "disdat:identity": task.identity, "disdat:executor": self.name}
        return replace(spec, name=name[:128], tags=tags)

    def _submit_one(self, task: RemoteTask) -> str:
        """Its spec inline, or, when large (many inputs), stored next to the remote context: Batch
        limits the size of a submission."""
        spec_ = task.spec(self.name)
        inline = taskspec.inline_arguments(spec_)
        args = inline if len(inline[1]) <= INLINE_SPEC_LIMIT else self._store([task])
        spec = self._spec(task, args, _job_name(task))
        job_id = client.submit_job(**spec.submission())
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
        parent = client.submit_job(**submission)
        self.log(f"submitted array job {parent} of {len(group)} {first.cls_name} tasks")
        children = [(task, f"{parent}:{index}") for index, task in enumerate(group)]
        self._record_jobs(children, spec)
        return children

    def _record_jobs(self, started: Sequence[tuple[RemoteTask, str]], spec: assembly.JobSpec) -> None:
        """Each job in the context's job record, as `dsdt run` records its own: `dsdt jobs`, `logs`,
        `wait` and `cancel` find executor jobs (array children too) the same way."""
        definition = next(
            (d for d in self.definitions.values() if d.get("jobDefinitionArn") == spec.definition_arn), {}
        )
        for task, job_id in started:
            self.remember_job(
                task,
                job_id,
                job_name=spec.name,
                queue=spec.queue,
                definition=str(definition.get("jobDefinitionName", "")),
                memory=spec.resources.memory,
                vcpus=spec.resources.vcpus,
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
        described = state.describe(single + list(children))
        for job_id in single:
            found[job_id] = task_phase(described[job_id].phase) if job_id in described else None
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
            self.described.update(state.describe(ended))
        return found

    def _children(self, parent: str, ids: list[str], described: JobState) -> dict[str, Phase | None]:
        summary = described.array_counts
        before = self._summaries.get(parent, {})
        watched = (JobPhase.RUNNING, JobPhase.SUCCEEDED, JobPhase.FAILED)
        moved = [p for p in watched if summary.get(p, 0) != before.get(p, 0)]
        self._summaries[parent] = summary
        known = self._child_phases.setdefault(parent, {})
        for phase in moved:
            for child in state.children_in(parent, phase):
                known[child] = task_phase(phase)
        return {i: known.get(i, Phase.SUBMITTED) for i in ids}

    def attempt_of(self, job_id: str) -> Attempt | None:
        """Batch's own retries (a lost host: `Host EC2*`) as seen at the last describe."""
        job = self.described.get(job_id)
        if job is None:
            return None
        return Attempt(number=job.attempt, of=job.max_attempts, reason=job.attempt_reason)

    def retry(self, tracked: Tracked) -> JobUpdate | None:
        """A job killed for running out of memory, once more as a new job with `[run]
        memory_retry_factor` times the memory (capped at the queue's largest instance), as
        `dsdt run` does."""
        job = self.described.get(tracked.job_id)
        factor = self.settings.run.memory_retry_factor
        task = tracked.task
        if job is None or not job.out_of_memory or factor <= 1 or task.identity in self.more_memory:
            return None
        queue = self.queue(self.run_request(task))
        more = capacity.escalated_memory(tracked.memory, factor, capacity.capacities(queue))
        if more is None:
            return None
        self.more_memory[task.identity] = more
        self.described.pop(tracked.job_id, None)
        job_id = self._submit_one(task)
        self.claims.submitted(task, job_id)  # the claim names the job doing the work now
        attempt = tracked.attempt + 1
        self.tracked[job_id] = Tracked(task, job_id, tracked.output_uuid, Phase.SUBMITTED, more, attempt=attempt)
        return JobUpdate(
            task_id=task.task_id,
            phase=Phase.SUBMITTED,
            job_id=job_id,
            attempt=attempt,
            attempts=attempt,
            note=f"job {tracked.job_id} ran out of memory with {tracked.memory} MiB; "
            f"retrying as job {job_id} with {more} MiB",
        )

    def finish(self, tracked: Tracked) -> tuple[list[str], DisdatError | None]:
        job = self.described.pop(tracked.job_id, None)
        stream = job.log_stream if job is not None else None  # the last attempt's
        lines = without_output_line(state.last_lines(stream, LAST_LINES)) if stream else []  # its end
        if tracked.phase is Phase.DONE:
            return lines, None
        if job is None:
            return lines, JobFailed(f"AWS Batch job {tracked.job_id} failed", hint="`dsdt logs` shows its log")
        job = state.with_exit_code(job)
        return lines, JobFailed.from_job(job, lines, tracked.memory)

    def terminate(self, job_id: str) -> None:
        client.terminate_job(job_id, "interrupted (Ctrl-C) in the dsdt apply that submitted it")

    # --- dsdt run: one job whose work is a whole apply ------------------------------------------

    def image_reference(self, image_name: str) -> str:
        """The registry copy of the exact image built locally (its content tag, never 'latest')."""
        registry = self.settings.docker.registry
        if not registry:
            raise RunError(
                "AWS Batch runs images from a registry", hint="set [docker] registry and `dsdt dockerize --push`"
            )
        client = engine.connect()
        local = engine.get_image(client, f"{image_name}:latest")
        content_tag = (local.labels or {}).get("disdat.content-tag")
        if not content_tag:
            raise ImageNotFound(f"{image_name}:latest was not built by dsdt dockerize")
        if registry == ECR_REGISTRY:
            registry, _auth = engine.ecr_login(image_name)
        reference = f"{registry}/{image_name}:{content_tag}"
        if not engine.image_exists(client, reference):
            raise ImageNotFound(
                f"{reference} was never pushed", hint="push it with `dsdt dockerize --push PIPE_ROOT PIPE_CLS`"
            )
        return reference

    def resources(self, request: RunRequest, memory: int | None = None) -> Resources:
        run = self.settings.run
        vcpus = run.vcpus if request.vcpus is None else request.vcpus
        gpus = run.gpus if request.gpus is None else request.gpus
        chosen = Resources(vcpus=vcpus, memory=memory or request.memory or run.memory, gpus=gpus)
        if chosen.vcpus < 1 or chosen.memory < 1 or chosen.gpus < 0:
            raise RunError(
                f"a job needs at least 1 vCPU and 1 MiB of memory, not {chosen.vcpus} and {chosen.memory}",
                hint="check --vcpus, --memory and [run] vcpus/memory",
            )
        return chosen

    def job_definition(self, request: RunRequest, job: ContainerJob, register: bool = True) -> Mapping[str, Any]:
        role = request.job_role_arn or self.settings.run.job_role_arn
        execution_role = self.settings.run.execution_role_arn
        if request.environment.secrets and not execution_role:
            self._say_once(
                "warning: the job's secrets are read with its execution role, and [run] execution_role_arn "
                "is not set: on AWS, set it to a role that may read them"
            )
        properties = assembly.container_properties(
            job.image, self.resources(request), role, request.environment.batch_secrets(), execution_role
        )
        return assembly.job_definition(job.image_name, properties, register)

    def spec(
        self, request: RunRequest, job: ContainerJob, definition: Mapping[str, Any], memory: int | None = None
    ) -> JobSpec:
        run = self.settings.run
        environment = {**request.environment.values, **job.environment}
        secrets: frozenset[str] = request.environment.from_host  # masked wherever shown
        role = request.job_role_arn or run.job_role_arn
        if request.use_aws_session_token and not role and not request.no_submit:
            by_run = self.name.startswith("run-")  # `dsdt run`'s own job, or an executor's
            setting = "--use-aws-session-token" if by_run else f"[executor.{self.name}] use_aws_session_token"
            role_setting = (
                "[run] job_role_arn or --job-role-arn" if by_run else f"job_role_arn in [executor.{self.name}]"
            )
            self._say_once(
                f"warning: {setting} puts temporary AWS keys in the job's overrides, readable by "
                f"anyone who can describe jobs; give the job a role instead ({role_setting})"
            )
            credentials = client.session_credentials(request.use_aws_session_token)
            environment.update(credentials)
            secrets |= frozenset(credentials)
        resources = self.resources(request, memory)
        environment["DISDAT_JOB_MEMORY"] = str(resources.memory)  # recorded in the bundles it makes
        cls_name = request.pipe_cls.rpartition(".")[2]
        return JobSpec(
            name=f"{cls_name}-{uuidlib.uuid4().hex[:8]}"[:128],
            queue=self.queue(request),
            definition_arn=str(definition.get("jobDefinitionArn", definition.get("jobDefinitionName"))),
            command=job.command,
            environment=environment,
            resources=resources,
            timeout=run.timeout if request.timeout is None else request.timeout,
            retries=run.retries if request.retries is None else request.retries,
            tags={**dict(run.tags), **dict(request.tags), "disdat:pipe": request.pipe_cls},
            secret_names=secrets,
        )

    def queue(self, request: RunRequest) -> str:
        queue = request.queue or self.settings.run.aws_batch_queue
        if not queue:
            raise RunError("no AWS Batch queue is configured", hint="set [run] aws_batch_queue or pass --queue")
        return queue

    def check(self, request: RunRequest) -> None:
        """Before anything is submitted: the queue exists and one of its compute environments can
        ever place a job of these resources."""
        queue = self.queue(request)
        problems = capacity.placement_problems(self.resources(request), queue, capacity.capacities(queue))
        if problems:
            raise RunError("; ".join(problems), hint="ask for fewer resources, or use a queue that can give them")

    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        if request.no_submit:  # nothing registered, nothing submitted: say what would be
            definition = self.job_definition(request, job, register=False)
            shown = self.spec(request, job, definition).shown()
            return RunResult(
                backend=BackendName.AWS_BATCH, status=RunStatus.PREPARED, job_definition=definition, submission=shown
            )
        self.check(request)
        definition = self.job_definition(request, job)
        spec = self.spec(request, job, definition)
        job_id = client.submit_job(**spec.submission())
        self.on_submitted(job_id, spec.shown(), definition)
        self.log(f"submitted AWS Batch job {job_id} ({spec.name}) to queue {spec.queue}")
        if not request.wait or request.detach:
            return RunResult(
                backend=BackendName.AWS_BATCH,
                status=RunStatus.SUBMITTED,
                job_id=job_id,
                job_definition=definition,
                submission=spec.shown(),
            )
        return self.wait(job_id, spec, definition, request, job)

    def wait(
        self, job_id: str, spec: JobSpec, definition: Mapping[str, Any], request: RunRequest, job: ContainerJob
    ) -> RunResult:
        """Follow the job to its end (Ctrl-C terminates it); an out-of-memory kill is retried once
        with more memory when [run] memory_retry_factor asks for it."""
        followed = self.follow(job_id, spec, definition)
        factor = self.settings.run.memory_retry_factor
        if followed.job.phase is state.JobPhase.FAILED and followed.job.out_of_memory and factor > 1:
            more = capacity.escalated_memory(spec.resources.memory, factor, capacity.capacities(spec.queue))
            if more is not None:
                self.log(f"job {job_id} ran out of memory with {spec.resources.memory} MiB; retrying with {more} MiB")
                spec = self.spec(request, job, definition, memory=more)
                job_id = client.submit_job(**spec.submission())
                self.on_submitted(job_id, spec.shown(), definition)
                followed = self.follow(job_id, spec, definition)
        if followed.job.phase is state.JobPhase.FAILED:
            raise JobFailed.from_job(followed.job, followed.lines, spec.resources.memory)
        name, uuid = output_of(followed.lines)
        return RunResult(
            backend=BackendName.AWS_BATCH,
            status=RunStatus.SUCCEEDED,
            output_name=name,
            output_uuid=uuid,
            job_id=job_id,
            job_definition=definition,
            submission=spec.shown(),
            log_tail=tuple(followed.lines[-20:]),
        )

    def follow(self, job_id: str, spec: JobSpec, definition: Mapping[str, Any]) -> state.Followed:
        stream = state.log_stream_name(definition["jobDefinitionName"], job_id)
        try:
            return state.follow(
                job_id,
                stream,
                self.log,
                poll_seconds=self.settings.run.poll_seconds,
                runnable_warning_seconds=self.settings.run.runnable_warning_seconds,
                diagnose_runnable=lambda described: capacity.runnable_diagnosis(described, spec.resources, spec.queue),
            )
        except KeyboardInterrupt:
            client.terminate_job(job_id, "interrupted (Ctrl-C) by the user following it with dsdt")
            self.log(f"terminated AWS Batch job {job_id}")
            raise


def _job_name(task: RemoteTask) -> str:
    """Names the work, so jobs can be found again from the console or `list_jobs`."""
    return f"dsdt-{task.cls_name}-{task.identity}"


def probe(cls: type) -> RemoteTask:
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
