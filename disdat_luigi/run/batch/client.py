"""The bottom of the Batch layer: thin wrappers around each boto3 call (Batch, CloudWatch Logs,
STS, EC2) that `dsdt run` and the executors make, with pagination, throttling retried, and
errors translated into disdat's. Nothing here interprets a job (see `state`)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from disdat_luigi.errors import CredentialsError, QueueNotFound, RunError
from disdat_luigi.store.remote.s3 import aws_environment

LOG_GROUP = "/aws/batch/job"


def _client(service: str) -> Any:
    """One client per service, AWS environment and process (boto3 clients are thread-safe)."""
    return _cached_client(service, aws_environment(), os.getpid())


@functools.lru_cache(maxsize=16)
def _cached_client(service: str, environment: tuple[tuple[str, str | None], ...], pid: int) -> Any:
    try:
        session = boto3.session.Session(profile_name=dict(environment).get("AWS_PROFILE"))
        return session.client(service)
    except BotoCoreError as err:  # ProfileNotFound, no region...
        raise CredentialsError(
            f"cannot use the AWS configuration: {err}", hint="check --profile / AWS_PROFILE"
        ) from err


THROTTLED = ("ThrottlingException", "TooManyRequestsException", "Throttling")
ATTEMPTS = 8


def _throttled(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in THROTTLED


def _backoff(attempt: int) -> None:
    time.sleep(min(2**attempt * 0.2, 5))


def _call(what: str, function: Any, missing: type[Exception] | None = None, **kwargs: Any) -> Any:
    """One API call; throttling is waited out (up to ATTEMPTS tries), anything else is a RunError;
    None when it raises `missing` (a resource that does not exist yet)."""
    for attempt in range(ATTEMPTS):
        try:
            return function(**kwargs)
        except NoCredentialsError as err:
            raise CredentialsError(f"no AWS credentials for {what}") from err
        except Exception as err:
            if missing is not None and isinstance(err, missing):
                return None
            if isinstance(err, ClientError) and _throttled(err) and attempt < ATTEMPTS - 1:
                _backoff(attempt)
                continue
            if isinstance(err, (ClientError, BotoCoreError)):
                raise RunError(f"{what} failed: {err}") from err
            raise
    raise AssertionError("unreachable")


def check_queue(queue: str) -> None:
    found = _call("describe_job_queues", _client("batch").describe_job_queues, jobQueues=[queue])
    if not found.get("jobQueues"):
        raise QueueNotFound(f"AWS Batch job queue {queue!r} does not exist")


def active_job_definitions(name: str) -> list[Mapping[str, Any]]:
    """Every ACTIVE revision of job definition `name`, newest first."""
    pages = _client("batch").get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE")
    definitions = [d for page in pages for d in page.get("jobDefinitions", [])]
    return sorted(definitions, key=lambda d: d["revision"], reverse=True)


def register_job_definition(name: str, container_properties: Mapping[str, Any]) -> Mapping[str, Any]:
    batch = _client("batch")
    answer = _call(
        "register_job_definition",
        batch.register_job_definition,
        jobDefinitionName=name,
        type="container",
        containerProperties=dict(container_properties),
    )
    for definition in active_job_definitions(name):
        if definition.get("revision") == answer.get("revision"):
            return definition
    return {**answer, "containerProperties": dict(container_properties)}


def submit_job(**submission: Any) -> str:
    """submit_job with the arguments a JobSpec gives; the job id."""
    response = _call("submit_job", _client("batch").submit_job, **submission)
    return str(response["jobId"])


def describe_jobs(job_ids: list[str]) -> list[Mapping[str, Any]]:
    """One describe_jobs call (at most 100 ids: see state.describe)."""
    return list(_call("describe_jobs", _client("batch").describe_jobs, jobs=job_ids).get("jobs", []))


def list_jobs(**filters: Any) -> list[Mapping[str, Any]]:
    """Job summaries of list_jobs (`arrayJobId=`, `jobQueue=`, `jobStatus=`...), every page."""
    found: list[Mapping[str, Any]] = []
    kwargs: dict[str, Any] = dict(filters)
    while True:
        answer = _call("list_jobs", _client("batch").list_jobs, **kwargs)
        found += list(answer.get("jobSummaryList", []))
        if not answer.get("nextToken"):
            return found
        kwargs["nextToken"] = answer["nextToken"]


def terminate_job(job_id: str, reason: str) -> None:
    _call("terminate_job", _client("batch").terminate_job, jobId=job_id, reason=reason)


def compute_environments(queue: str) -> list[Mapping[str, Any]]:
    """The compute environments a queue sends jobs to, described."""
    queues = _call("describe_job_queues", _client("batch").describe_job_queues, jobQueues=[queue]).get("jobQueues", [])
    if not queues:
        raise QueueNotFound(f"AWS Batch job queue {queue!r} does not exist")
    names = [c["computeEnvironment"] for c in queues[0].get("computeEnvironmentOrder", [])]
    if not names:
        return []
    found = _call(
        "describe_compute_environments",
        _client("batch").describe_compute_environments,
        computeEnvironments=names,
    )
    return list(found.get("computeEnvironments", []))


def instance_sizes(instance_types: list[str]) -> dict[str, tuple[int, int, int]]:
    """(vCPUs, MiB, GPUs) of each named EC2 instance type; families ('m5', 'optimal') are skipped."""
    exact = [t for t in instance_types if "." in t]
    if not exact:
        return {}
    try:
        answer = _client("ec2").describe_instance_types(InstanceTypes=exact)
    except (ClientError, BotoCoreError):
        return {}  # sizes only sharpen the diagnosis; without them it still names the environments
    sizes = {}
    for info in answer.get("InstanceTypes", []):
        gpus = sum(g.get("Count", 0) for g in info.get("GpuInfo", {}).get("Gpus", []))
        sizes[info["InstanceType"]] = (
            int(info["VCpuInfo"]["DefaultVCpus"]),
            int(info["MemoryInfo"]["SizeInMiB"]),
            int(gpus),
        )
    return sizes


def log_page(
    stream: str, token: str | None, from_head: bool = True, limit: int | None = None
) -> tuple[list[Mapping[str, Any]], str | None] | None:
    """One page of a job's CloudWatch log from `token` on (from the top without one):
    (events, nextForwardToken); with `from_head=False`, a page read backwards from the end (or
    from `token`): (events, nextBackwardToken). None while the stream does not exist. Throttling
    is waited out."""
    logs = _client("logs")
    kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": from_head}
    if token is not None:
        kwargs["nextToken"] = token
    if limit is not None:
        kwargs["limit"] = limit
    answer = _call(
        f"reading the job log {stream}",
        logs.get_log_events,
        missing=logs.exceptions.ResourceNotFoundException,
        **kwargs,
    )
    if answer is None:
        return None
    following = answer.get("nextForwardToken" if from_head else "nextBackwardToken")
    return list(answer.get("events", [])), following


SESSION_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def session_credentials(seconds: int) -> dict[str, str]:
    """Temporary credentials from STS for a job (never the caller's long-term keys). A caller on
    temporary credentials already (a driver job given them by its host) hands on its own: STS
    mints no session token from a session token."""
    import os

    inherited = {key: os.environ.get(key, "") for key in SESSION_KEYS}
    if all(inherited.values()):
        return inherited
    token = _call("sts get_session_token", _client("sts").get_session_token, DurationSeconds=seconds)["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": token["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": token["SecretAccessKey"],
        "AWS_SESSION_TOKEN": token["SessionToken"],
    }


def endpoint_environment() -> dict[str, str]:
    """Endpoint and region settings a container needs to reach the same AWS (no secrets)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL") or k == "AWS_EC2_METADATA_DISABLED"}
    region = boto3.session.Session().region_name
    if region:
        env["AWS_DEFAULT_REGION"] = region
    return env
