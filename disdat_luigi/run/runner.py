"""`dsdt run` on the host: find the image, publish the input, hand one job whose work is a whole
apply to the `docker` or `aws_batch` executor (waiting for it, or not), and bring the output
bundle (with its lineage) back into the local context."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from disdat_luigi.apply.driver import ApplyRequest
from disdat_luigi.apply.plan import Decision
from disdat_luigi.config import ExecutorSettings, Settings
from disdat_luigi.dockerize.naming import find_pipe_root, image_name, module_of
from disdat_luigi.errors import BundleNotFound, ImageNotFound, JobFailed, NotCommitted, RunError
from disdat_luigi.run import driver_job, journal
from disdat_luigi.run.batch import client, state
from disdat_luigi.run.command import apply_work, container_command
from disdat_luigi.run.executors import docker as docker_jobs
from disdat_luigi.run.executors import executor_type
from disdat_luigi.run.executors.container import ContainerExecutor, LogSink
from disdat_luigi.run.images import refresh_image
from disdat_luigi.run.output import output_of, without_marker
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus
from disdat_luigi.store import queries
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.s3 import S3
from disdat_luigi.store.remote.sync import RemoteSync
from disdat_luigi.store.store import LocalStore
from disdat_luigi.util.codeversion import capture


def run(request: RunRequest, settings: Settings, log: LogSink) -> RunResult:
    log = without_marker(log)
    context = LocalStore(settings.root, remote_settings=settings.remote).context(request.context)
    location = RemoteLocation.of(context)
    module, _cls = module_of(request.pipe_cls)
    name = image_name(module, settings.docker.repository_prefix)
    backend = run_executor(request, settings, context, log)
    pipe_root = find_pipe_root(module, settings.dockerize.pipe_root)
    # the class and its parameters fail here, before anything is pushed or started
    pipeline = _load_pipeline(request, pipe_root) if pipe_root is not None else None
    _refresh_image(request, pipe_root, settings, log)
    try:
        image = backend.image_reference(name)
    except ImageNotFound as err:
        raise ImageNotFound(
            f"{err.message} (the image of {request.pipe_cls})",
            hint=err.hint or f"build it with `dsdt dockerize PIPE_ROOT {request.pipe_cls}` (--push for AWS Batch)",
        ) from err
    sync = RemoteSync(context, settings.remote)
    input_uuid = _publish_input(context, sync, request)
    image_code = _image_code(name) if pipeline is not None else None  # asks the engine: only when needed
    decisions = _plan_on_remote(request, settings, location, input_uuid, pipeline, image_code)
    reused = decisions[-1] if decisions and decisions[-1].reuse and decisions[-1].uuid else None
    if reused is not None:  # the remote already has the output of exactly this run: submit nothing
        log(f"everything is up to date on the remote; reusing {reused.bundle_name} {reused.uuid}, nothing started")
        result = RunResult(
            backend=request.backend,
            status=RunStatus.SUCCEEDED,
            output_name=reused.bundle_name,
            output_uuid=reused.uuid,
            reused=True,
        )
        if not request.no_submit:
            _pull_output(context, sync, result, request)
        return result
    driver = _driver(request, decisions, settings, context, log)  # the images its tasks run, built and pushed
    work = apply_work(
        pipe_cls=request.pipe_cls,
        pipe_args=request.pipe_args,
        input_uuid=input_uuid,
        output_bundle=request.output_bundle,
        workers=request.workers,
        force=request.force,
        force_all=request.force_all,
        output_tags=request.output_tags,
        driver=driver.to_json() if driver is not None else None,
    )
    command = container_command(location, settings.remote, work)
    job = ContainerJob(
        image=image,
        image_name=name,
        command=command,
        environment=client.endpoint_environment(),
    )

    def remember(job_id: str, submission: Mapping[str, Any], definition: Mapping[str, Any]) -> None:
        journal.remember(
            context.path,
            journal.JobRecord(
                job_id=job_id,
                job_name=str(submission.get("jobName", "")),
                pipe_cls=request.pipe_cls,
                output_bundle=request.output_bundle,
                queue=str(submission.get("jobQueue", "")),
                definition=str(definition.get("jobDefinitionName", "")),
                memory=_memory_of(submission),
                submitted=journal.now(),
                task=request.pipe_cls,
                executor=backend.name,
                vcpus=_requirement(submission, "VCPU"),
                is_driver=driver is not None,
            ),
        )

    backend.on_submitted = remember
    result = backend.launch(request, job)
    if result.status is RunStatus.FAILED:
        raise JobFailed(
            f"{request.pipe_cls} failed in its container ({request.backend})",
            hint="last log lines:\n" + "\n".join(result.log_tail),
        )
    if result.status is RunStatus.SUCCEEDED:
        _pull_output(context, sync, result, request)
    return result


# `dsdt run --backend` -> the executor type that runs its one job
RUN_EXECUTORS = {BackendName.LOCAL: "docker", BackendName.AWS_BATCH: "aws_batch"}


def run_executor(request: RunRequest, settings: Settings, context: LocalContext, log: LogSink) -> ContainerExecutor:
    """The executor of `dsdt run`'s job: `[run]`'s settings (request options override them in
    each job's resources), named after the backend."""
    kind = RUN_EXECUTORS[request.backend]
    config = ExecutorSettings(name=f"run-{kind}", type=kind, queue=settings.run.aws_batch_queue)
    executor: ContainerExecutor = executor_type(kind)(
        settings=settings, config=config, context=context, build=request.build, log=log
    )
    return executor


def container_apply(
    *,
    context: str,
    transform: Any,
    params: Mapping[str, Any],
    output_bundle: str,
    output_tags: Mapping[str, str],
    force: bool,
    force_all: bool,
    input_uuid: str | None,
    output_bundle_uuid: str | None = None,
    workers: int = 1,
    provenance: Mapping[str, str] | None = None,
) -> ApplyRequest:
    """The apply a container runs for `dsdt run`: every bundle pushed as it closes, upstream
    bundles looked up on the remote. The host plans with the same request before starting one."""
    return ApplyRequest(
        context=context,
        transform=transform,
        params=params,
        output_bundle=output_bundle,
        output_tags=output_tags,
        force=force,
        force_all=force_all,
        output_bundle_uuid=output_bundle_uuid,
        input_bundle_uuid=input_uuid,
        workers=workers,
        incremental_push=True,
        incremental_pull=True,
        provenance=dict(provenance or {}),
    )


def _image_code(image_name: str) -> dict[str, Any] | None:
    """The code version tasks report inside the image (from its labels), as CodeVersion fields."""
    from disdat_luigi.dockerize import engine

    try:
        labels = engine.get_image(engine.connect(), f"{image_name}:latest").labels or {}
    except ImageNotFound:
        return None
    env = {f"DISDAT_GIT_{k.upper()}": v for k, v in labels.items() if k.startswith("disdat.git.")}
    if labels.get("disdat.content-tag"):
        env["DISDAT_IMAGE_TAG"] = labels["disdat.content-tag"]
    code = capture(Path("/nonexistent"), env)
    return dataclasses.asdict(code) if code is not None else None


def _load_pipeline(request: RunRequest, pipe_root: Path) -> tuple[type, dict[str, Any]]:
    """The class (imported from `pipe_root`) and its parsed parameters, on the host
    (PipeClassNotFound, ParameterError)."""
    from disdat_luigi.apply.loader import load_pipe_class, parse_cli_params

    added = str(pipe_root) not in sys.path
    if added:
        sys.path.insert(0, str(pipe_root))
    try:
        cls = load_pipe_class(request.pipe_cls)
        return cls, parse_cli_params(cls, list(request.pipe_args))
    finally:
        if added:
            sys.path.remove(str(pipe_root))


def _plan_on_remote(
    request: RunRequest,
    settings: Settings,
    location: RemoteLocation,
    input_uuid: str | None,
    pipeline: tuple[type, dict[str, Any]] | None,
    image_code: dict[str, Any] | None,
) -> list[Decision] | None:
    """Every task's decision (the root last) when planned against the remote exactly as the
    container would; None when that cannot be known here (the class is not importable here, or
    the input is not on the remote yet)."""
    from disdat_luigi.apply.driver import explain

    if pipeline is None or image_code is None:
        return None
    cls, params = pipeline
    with tempfile.TemporaryDirectory(prefix="dsdt-plan-") as tmp:
        planning = dataclasses.replace(settings, root=Path(tmp))
        store = LocalStore(planning.root, remote_settings=settings.remote)
        store.create_context("plan").bind_remote(location.context, location.url(location.prefix).rstrip("/"))
        if input_uuid:
            try:
                RemoteSync(store.context("plan"), settings.remote).pull(uuid=input_uuid)
            except BundleNotFound:
                return None  # the input is not on the remote yet (--no-submit): nothing to reuse
        planned = container_apply(
            context="plan",
            transform=cls,
            params=params,
            output_bundle=request.output_bundle,
            output_tags=dict(request.output_tags),
            force=request.force,
            force_all=request.force_all,
            input_uuid=input_uuid,
        )
        return explain(dataclasses.replace(planned, image_code=image_code), planning)


def _refresh_image(request: RunRequest, pipe_root: Path | None, settings: Settings, log: LogSink) -> None:
    """The image holds the code as it is now (--no-submit changes nothing, images included)."""
    refresh_image(
        request.pipe_cls,
        pipe_root,
        push=request.backend is BackendName.AWS_BATCH,
        build=request.build and not request.no_submit,
        settings=settings,
        log=log,
    )


def _memory_of(submission: Mapping[str, Any]) -> int:
    return _requirement(submission, "MEMORY")


def _requirement(submission: Mapping[str, Any], kind: str) -> int:
    for requirement in submission.get("containerOverrides", {}).get("resourceRequirements", []):
        if requirement.get("type") == kind:
            return int(requirement["value"])
    return 0


def _publish_input(context: LocalContext, sync: RemoteSync, request: RunRequest) -> str | None:
    if request.input_bundle in ("-", ""):
        return None
    bundle = queries.require(context, request.input_bundle, tags=dict(request.input_tags) or None)
    if not bundle.is_committed:
        raise NotCommitted(
            f"input bundle {bundle.name} {bundle.uuid} is not committed",
            hint=f"commit it first: `dsdt commit {bundle.name}`",
        )
    if not request.no_push_input and not request.no_submit:  # --no-submit changes nothing
        sync.push([bundle])
    return bundle.uuid


def _driver(
    request: RunRequest,
    decisions: list[Decision] | None,
    settings: Settings,
    context: LocalContext,
    log: LogSink,
) -> driver_job.DriverConfig | None:
    """For a Batch run of a pipeline whose tasks that will run name aws_batch executors: their
    images built and pushed and their queues checked here, and what the driver job needs to send
    them out."""
    if request.backend is not BackendName.AWS_BATCH or decisions is None:
        return None
    planned = driver_job.plan(decisions, settings)
    if not planned.remote:
        return None
    role = request.job_role_arn or settings.run.job_role_arn
    if request.use_aws_session_token and not role and not request.no_submit:
        log(driver_job.session_token_warning(request.use_aws_session_token))
    return driver_job.prepare(
        planned,
        settings,
        context,
        build=request.build,
        job_role_arn=role,
        environment=request.environment,
        log=log,
        submit=not request.no_submit,
    )


def _pull_output(context: LocalContext, sync: RemoteSync, result: RunResult, request: RunRequest) -> None:
    """The output bundle with its files, and its lineage (metadata) as far as the remote has it."""
    if result.output_uuid:
        (output,) = sync.pull(uuid=result.output_uuid, localize=True)
    else:
        found = sync.pull(result.output_name or request.output_bundle, localize=True)
        if not found:
            raise BundleNotFound("the run finished but its output bundle is not on the remote")
        output = found[0]
    pending = [d.uuid for d in output.dependencies]
    seen = {output.uuid}
    while pending:
        uuid = pending.pop()
        if uuid in seen:
            continue
        seen.add(uuid)
        try:
            (upstream,) = sync.pull(uuid=uuid)
        except BundleNotFound:
            continue  # transient or external inputs that were never pushed
        pending.extend(d.uuid for d in upstream.dependencies)


# --- jobs submitted earlier: dsdt jobs / logs / wait / cancel -------------------------------------


def list_jobs(context: LocalContext) -> list[dict[str, Any]]:
    """The jobs this context submitted, newest first (a driver job followed by the jobs it
    submitted), with their status (one describe_jobs call per 100 jobs)."""
    records = _with_children(context, journal.records(context.path)[::-1])
    on_batch = [r.job_id for r in records if not r.on_docker]
    described = state.describe(on_batch) if on_batch else {}
    return [docker_jobs.describe(r) if r.on_docker else journal.describe(r, described.get(r.job_id)) for r in records]


def _with_children(context: LocalContext, records: list[journal.JobRecord]) -> list[journal.JobRecord]:
    """The records, each driver job followed by the jobs it submitted (read from the remote)."""
    drivers = [r for r in records if r.is_driver]
    if not drivers:
        return records
    s3, location = S3(context.remote_settings), RemoteLocation.of(context)
    found: list[journal.JobRecord] = []
    for record in records:
        found.append(record)
        if record.is_driver:
            found += driver_job.children(s3, location, record.job_id)
    return found


def _record(context: LocalContext, job_id: str) -> journal.JobRecord:
    record = journal.find(context.path, job_id)
    if record is None:
        record = next(
            (r for r in reversed(_with_children(context, journal.records(context.path))) if r.job_id == job_id), None
        )
    if record is None:
        raise RunError(
            f"context {context.name!r} submitted no job {job_id}", hint="`dsdt jobs` lists the jobs it submitted"
        )
    return record


def job_log(
    context: LocalContext, job_id: str, follow: bool, settings: Settings, log: LogSink
) -> state.JobState | None:
    """Print a job's log (with `follow`: until the job ends); its last state (None for a docker
    job: its container's state is not a Batch job's)."""
    log = without_marker(log)
    record = _record(context, job_id)
    if record.on_docker:
        docker_jobs.container_log(job_id, follow, log)
        return None
    stream = state.log_stream_name(record.definition, job_id)
    if follow:
        return state.follow(job_id, stream, log, poll_seconds=settings.run.poll_seconds).job
    job = state.describe_one(job_id)
    for line in state.JobLog(job.stream(record.definition)).read():
        log(line)
    return job


def wait_job(context: LocalContext, job_id: str, settings: Settings, log: LogSink) -> RunResult:
    """Follow a submitted job to its end and pull its output (with its lineage), as `run --wait`."""
    log = without_marker(log)
    record = _record(context, job_id)
    if record.on_docker:
        return _wait_container(context, record, settings, log)
    followed = state.follow(
        job_id,
        state.log_stream_name(record.definition, job_id),
        log,
        poll_seconds=settings.run.poll_seconds,
        runnable_warning_seconds=settings.run.runnable_warning_seconds,
    )
    if followed.job.failed:
        raise JobFailed.from_job(followed.job, followed.lines, record.memory)
    name, uuid = output_of(followed.lines)
    result = RunResult(
        backend=BackendName.AWS_BATCH,
        status=RunStatus.SUCCEEDED,
        output_name=name,
        output_uuid=uuid,
        job_id=job_id,
        log_tail=tuple(followed.lines[-20:]),
    )
    _pull_output(context, RemoteSync(context, settings.remote), result, _request_for(record))
    return result


def cancel_job(context: LocalContext, job_id: str) -> None:
    if _record(context, job_id).on_docker:
        docker_jobs.stop_container(job_id)
    else:
        client.terminate_job(job_id, "cancelled with dsdt cancel")


def _wait_container(context: LocalContext, record: journal.JobRecord, settings: Settings, log: LogSink) -> RunResult:
    """A docker job followed to its end; its bundle pulled (the apply that runs it commits it too)."""
    lines = docker_jobs.container_log(record.job_id, True, log)
    ended = docker_jobs.container_state(record.job_id)
    if ended.status == "FAILED":
        raise JobFailed(
            f"docker job {record.job_id[:12]} ({record.task}) failed: exit code {ended.exit_code}",
            hint="last log lines:\n" + "\n".join(lines[-20:]),
        )
    result = RunResult(
        backend=BackendName.LOCAL,
        status=RunStatus.SUCCEEDED,
        output_name=record.output_bundle,
        output_uuid=record.output_uuid or output_of(lines)[1],
        job_id=record.job_id,
        log_tail=tuple(lines[-20:]),
    )
    _pull_output(context, RemoteSync(context, settings.remote), result, _request_for(record))
    return result


def cancel_apply(context: LocalContext, apply_id: str) -> list[str]:
    """Terminate every job of one apply still queued or running (an array job through its parent,
    which stops its children); the ids terminated."""
    records = journal.for_apply(context.path, apply_id)
    if not records:
        raise RunError(
            f"context {context.name!r} has no jobs of apply {apply_id}",
            hint="`dsdt jobs` lists the jobs and the apply of each",
        )
    ids = sorted({r.job_id.partition(":")[0] for r in records if not r.on_docker})
    running = [job_id for job_id, job in state.describe(ids).items() if not job.phase.ended] if ids else []
    for job_id in running:
        client.terminate_job(job_id, f"cancelled with dsdt cancel --apply {apply_id}")
    stopped = [r.job_id for r in records if r.on_docker and docker_jobs.stop_container(r.job_id)]
    return running + stopped


def failed_job_for(context: LocalContext, output_bundle: str) -> JobFailed | None:
    """Why there is no bundle `output_bundle`: the job that was to make it failed (None otherwise)."""
    record = journal.for_output(context.path, output_bundle)
    if record is None or record.on_docker:
        return None
    job = state.describe([record.job_id], exit_codes=True).get(record.job_id)
    if job is None or not job.failed:
        return None
    lines = state.last_lines(job.stream(record.definition), JobFailed.TAIL)
    return JobFailed.from_job(job, lines, record.memory)


def _request_for(record: journal.JobRecord) -> RunRequest:
    return RunRequest(context="", input_bundle="-", output_bundle=record.output_bundle, pipe_cls=record.pipe_cls)
