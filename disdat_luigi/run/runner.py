"""`dsdt run` on the host: find the image, publish the input, start the container through a
backend, and bring the output bundle (with its lineage) back into the local context."""

from __future__ import annotations

import os

from disdat_luigi.config import Settings
from disdat_luigi.dockerize.naming import image_name, module_of
from disdat_luigi.errors import BundleNotFound, ImageNotFound, JobFailed, NotCommitted
from disdat_luigi.run.backends import load_backend
from disdat_luigi.run.backends.base import LogSink
from disdat_luigi.run.request import ContainerJob, RunRequest, RunResult, RunStatus
from disdat_luigi.store import queries
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.sync import RemoteSync
from disdat_luigi.store.store import LocalStore


def run(request: RunRequest, settings: Settings, log: LogSink) -> RunResult:
    context = LocalStore(settings.root, remote_settings=settings.remote).context(request.context)
    location = RemoteLocation.of(context)
    module, _cls = module_of(request.pipe_cls)
    name = image_name(module, settings.docker.repository_prefix)
    backend = load_backend(request.backend)(settings, log)
    try:
        image = backend.image_reference(name)
    except ImageNotFound as err:
        raise ImageNotFound(
            f"{err.message} (the image of {request.pipe_cls})",
            hint=err.hint or f"build it with `dsdt dockerize PIPE_ROOT {request.pipe_cls}` (--push for AWS Batch)",
        ) from err
    sync = RemoteSync(context, settings.remote)
    input_uuid = _publish_input(context, sync, request)
    command = _command(request, location, input_uuid, settings)
    job = ContainerJob(
        image=image,
        image_name=name,
        command=command,
        environment=_aws_environment(),
    )
    result = backend.launch(request, job)
    if result.status is RunStatus.FAILED:
        raise JobFailed(
            f"{request.pipe_cls} failed in its container ({request.backend})",
            hint="last log lines:\n" + "\n".join(result.log_tail),
        )
    if result.status is RunStatus.SUCCEEDED:
        _pull_output(context, sync, result, request)
    return result


def _publish_input(context: LocalContext, sync: RemoteSync, request: RunRequest) -> str | None:
    if request.input_bundle in ("-", ""):
        return None
    bundle = queries.require(context, request.input_bundle, tags=dict(request.input_tags) or None)
    if not bundle.is_committed:
        raise NotCommitted(
            f"input bundle {bundle.name} {bundle.uuid} is not committed",
            hint=f"commit it first: `dsdt commit {bundle.name}`",
        )
    if not request.no_push_input:
        sync.push([bundle])
    return bundle.uuid


def _command(
    request: RunRequest, location: RemoteLocation, input_uuid: str | None, settings: Settings
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
    return (*args, request.pipe_cls, *request.pipe_args)


def _aws_environment() -> dict[str, str]:
    """Endpoint and region settings the container needs (no secrets)."""
    import boto3

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL") or k == "AWS_EC2_METADATA_DISABLED"}
    region = boto3.session.Session().region_name
    if region:
        env["AWS_DEFAULT_REGION"] = region
    return env


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
