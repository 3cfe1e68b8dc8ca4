"""Thin wrappers around the boto3 Batch, CloudWatch Logs and STS calls `dsdt run` makes."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
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


def _call(what: str, function: Any, **kwargs: Any) -> Any:
    try:
        return function(**kwargs)
    except NoCredentialsError as err:
        raise CredentialsError(f"no AWS credentials for {what}") from err
    except (ClientError, BotoCoreError) as err:
        raise RunError(f"{what} failed: {err}") from err


def check_queue(queue: str) -> None:
    found = _call("describe_job_queues", _client("batch").describe_job_queues, jobQueues=[queue])
    if not found.get("jobQueues"):
        raise QueueNotFound(f"AWS Batch job queue {queue!r} does not exist")


def active_job_definition(name: str) -> Mapping[str, Any] | None:
    """The newest ACTIVE revision of job definition `name`, or None."""
    pages = _client("batch").get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE")
    definitions = [d for page in pages for d in page.get("jobDefinitions", [])]
    return max(definitions, key=lambda d: d["revision"]) if definitions else None


def register_job_definition(name: str, container_properties: Mapping[str, Any]) -> Mapping[str, Any]:
    batch = _client("batch")
    _call("register_job_definition", batch.register_job_definition,
          jobDefinitionName=name, type="container", containerProperties=dict(container_properties))  # fmt: skip
    definition = active_job_definition(name)
    assert definition is not None
    return definition


def submit_job(name: str, queue: str, definition_arn: str, overrides: Mapping[str, Any]) -> str:
    batch = _client("batch")
    response = _call(
        "submit_job",
        batch.submit_job,
        jobName=name,
        jobQueue=queue,
        jobDefinition=definition_arn,
        containerOverrides=dict(overrides),
    )
    return str(response["jobId"])


def describe_job(job_id: str) -> Mapping[str, Any]:
    jobs = _call("describe_jobs", _client("batch").describe_jobs, jobs=[job_id]).get("jobs", [])
    if not jobs:
        raise RunError(f"AWS Batch knows no job {job_id}")
    return jobs[0]  # type: ignore[no-any-return]


def session_credentials(seconds: int) -> dict[str, str]:
    """Temporary credentials from STS for a job (never the caller's long-term keys)."""
    token = _call("sts get_session_token", _client("sts").get_session_token, DurationSeconds=seconds)["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": token["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": token["SecretAccessKey"],
        "AWS_SESSION_TOKEN": token["SessionToken"],
    }


def log_lines(stream: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, message) of a job's CloudWatch log from `start` on; nothing while the stream is absent."""
    logs = _client("logs")
    try:
        events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return
    except (ClientError, BotoCoreError) as err:
        raise RunError(f"reading the job log {stream} failed: {err}") from err
    for index, event in enumerate(events):
        if index >= start:
            for line in str(event["message"]).splitlines():
                yield index, line
