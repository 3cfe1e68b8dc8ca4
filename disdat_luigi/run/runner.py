"""`dsdt run` on the host: find the image, publish the input, start the container through a
backend, and bring the output bundle (with its lineage) back into the local context."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from disdat_luigi.apply.driver import ApplyRequest
from disdat_luigi.apply.plan import Decision
from disdat_luigi.config import Settings
from disdat_luigi.dockerize.naming import find_pipe_root, image_name, module_of
from disdat_luigi.errors import BundleNotFound, ImageNotFound, JobFailed, NotCommitted, RunError
from disdat_luigi.run import aws, driver_job, jobs, journal
from disdat_luigi.run.backends import load_backend
from disdat_luigi.run.backends.base import LogSink
from disdat_luigi.run.images import refresh_image
from disdat_luigi.run.output import output_of
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus
from disdat_luigi.store import queries
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.sync import RemoteSync
from disdat_luigi.store.store import LocalStore
from disdat_luigi.util.codeversion import capture


def run(request: RunRequest, settings: Settings, log: LogSink) -> RunResult:
    context = LocalStore(settings.root, remote_settings=settings.remote).context(request.context)
    location = RemoteLocation.of(context)
    module, _cls = module_of(request.pipe_cls)
    name = image_name(module, settings.docker.repository_prefix)
    backend = load_backend(request.backend)(settings, log)
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
    reused = _planned_reuse(request, settings, location, input_uuid, pipeline, image_code)
    if reused is not None:  # the remote already has the output of exactly this run: submit nothing
        log(f"everything is up to date on the remote; reusing {reused.bundle_name} {reused.uuid}, nothing started")
        result = RunResult(
            backend=backend.name,
            status=RunStatus.SUCCEEDED,
            output_name=reused.bundle_name,
            output_uuid=reused.uuid,
            reused=True,
        )
        if not request.no_submit:
            _pull_output(context, sync, result, request)
        return result
    driver = _driver(request, pipeline, settings, context, log)  # the images its tasks run, built and pushed
    command = _command(request, location, input_uuid, settings, driver)
    job = ContainerJob(
        image=image,
        image_name=name,
        command=command,
        environment=aws.endpoint_environment(),
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


def _planned_reuse(
    request: RunRequest,
    settings: Settings,
    location: RemoteLocation,
    input_uuid: str | None,
    pipeline: tuple[type, dict[str, Any]] | None,
    image_code: dict[str, Any] | None,
) -> Decision | None:
    """The root's decision when planned against the remote exactly as the container would, if it
    reuses an existing bundle; None when something would run (or the class is not importable here)."""
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
        root = explain(dataclasses.replace(planned, image_code=image_code), planning)[-1]
    return root if root.reuse and root.uuid else None


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
    for requirement in submission.get("containerOverrides", {}).get("resourceRequirements", []):
        if requirement.get("type") == "MEMORY":
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
    pipeline: tuple[type, dict[str, Any]] | None,
    settings: Settings,
    context: LocalContext,
    log: LogSink,
) -> driver_job.DriverConfig | None:
    """For a Batch run of a pipeline whose tasks name aws_batch executors: their images built and
    pushed and their queues checked here, and what the driver job needs to send them out."""
    if request.backend is not BackendName.AWS_BATCH or pipeline is None:
        return None
    cls, params = pipeline
    planned = driver_job.plan(cls(**params), settings)
    if not planned.remote:
        return None
    role = request.job_role_arn or settings.run.job_role_arn
    if request.use_aws_session_token and not role and not request.no_submit:
        log(driver_job.session_token_warning(request.use_aws_session_token))
    return driver_job.prepare(planned, settings, context, build=request.build, job_role_arn=role, log=log)


def _command(
    request: RunRequest,
    location: RemoteLocation,
    input_uuid: str | None,
    settings: Settings,
    driver: driver_job.DriverConfig | None = None,
) -> tuple[str, ...]:
    args = [
        "--remote-context", location.context,
        "--remote-url", f"s3://{location.bucket}/{location.prefix}".rstrip("/"),
        "--input-bundle", input_uuid or "-",
        "--output-bundle", request.output_bundle or "-",
        "--workers", str(request.workers),
        "--server-side-encryption", settings.remote.server_side_encryption,
    ]  # fmt: skip
    if settings.remote.sse_kms_key_id:
        args += ["--sse-kms-key-id", settings.remote.sse_kms_key_id]
    if request.force:
        args.append("--force")
    if request.force_all:
        args.append("--force-all")
    for key, value in request.output_tags.items():
        args += ["--output-tag", f"{key}:{value}"]
    if driver is not None:
        args += ["--driver-config", driver.to_json()]
    return (*args, request.pipe_cls, *request.pipe_args)


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
    """The jobs this context submitted, newest first, with their status (one describe_jobs call
    per 100 jobs)."""
    records = journal.records(context.path)
    described = jobs.describe_many([r.job_id for r in records], aws.describe_jobs) if records else {}
    return [journal.describe(r, described.get(r.job_id)) for r in reversed(records)]


def _record(context: LocalContext, job_id: str) -> journal.JobRecord:
    record = journal.find(context.path, job_id)
    if record is None:
        raise RunError(
            f"context {context.name!r} submitted no job {job_id}", hint="`dsdt jobs` lists the jobs it submitted"
        )
    return record


def job_log(context: LocalContext, job_id: str, follow: bool, settings: Settings, log: LogSink) -> Mapping[str, Any]:
    """Print a job's log (with `follow`: until the job ends); its last description."""
    record = _record(context, job_id)
    stream = f"{record.definition}/default/{job_id}"
    if follow:
        return jobs.follow(job_id, stream, log, poll_seconds=settings.run.poll_seconds).job
    job = aws.describe_job(job_id)
    for line in jobs.LogFollower(job.get("container", {}).get("logStreamName") or stream).read():
        log(line)
    return job


def wait_job(context: LocalContext, job_id: str, settings: Settings, log: LogSink) -> RunResult:
    """Follow a submitted job to its end and pull its output (with its lineage), as `run --wait`."""
    record = _record(context, job_id)
    followed = jobs.follow(
        job_id,
        f"{record.definition}/default/{job_id}",
        log,
        poll_seconds=settings.run.poll_seconds,
        runnable_warning_seconds=settings.run.runnable_warning_seconds,
    )
    if followed.job["status"] == "FAILED":
        raise jobs.failure(aws.with_exit_code(followed.job), followed.lines, record.memory)
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
    _record(context, job_id)
    aws.terminate_job(job_id, "cancelled with dsdt cancel")


def failed_job_for(context: LocalContext, output_bundle: str) -> JobFailed | None:
    """Why there is no bundle `output_bundle`: the job that was to make it failed (None otherwise)."""
    record = journal.for_output(context.path, output_bundle)
    if record is None:
        return None
    job = jobs.describe_many([record.job_id], aws.describe_jobs).get(record.job_id)
    if job is None or job.get("status") != "FAILED":
        return None
    job = aws.with_exit_code(job)
    stream = job.get("container", {}).get("logStreamName") or f"{record.definition}/default/{record.job_id}"
    lines = jobs.LogFollower(stream).read()
    return jobs.failure(job, lines, record.memory)


def _request_for(record: journal.JobRecord) -> RunRequest:
    return RunRequest(context="", input_bundle="-", output_bundle=record.output_bundle, pipe_cls=record.pipe_cls)
