"""An in-memory stand-in for the boto3 clients the Batch layer calls (Batch, CloudWatch Logs,
STS, EC2), shipped beside `client` as httpx ships its mock transport: for tests of what moto
cannot show (it never retries an attempt, never keeps a job RUNNABLE, never kills one for its
memory).

Each submitted job plays a list of `Attempt`s, one step per `describe_jobs` call: SUBMITTED,
RUNNABLE, RUNNING, then the attempt's end. A failed attempt is retried as Batch does it: when the
submission's `retryStrategy` has attempts left and its first matching `evaluateOnExit` rule says
RETRY (no rule matching: retried). Each attempt writes its own log stream.

    double = BatchDouble(plan=lambda submission: [Attempt(status_reason="Host EC2 ... terminated"), Attempt()])
    with double.installed():
        ...  # the Batch layer's calls reach the double
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.exceptions import ClientError

ENDED = {"startedAt": 2_000, "stoppedAt": 12_000}  # an ended attempt, as AWS describes it (epoch ms)


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """How one attempt of a job ends: exit code 0 succeeds; anything else fails it."""

    exit_code: int = 0
    status_reason: str = ""  # e.g. "Host EC2 (instance i-1) terminated." for a spot reclaim
    container_reason: str = ""  # e.g. "OutOfMemoryError: Container killed due to memory usage"
    log: tuple[str, ...] = ("ok",)
    runnable_polls: int = 1  # describe calls it stays RUNNABLE for


def succeeds(_submission: Mapping[str, Any]) -> list[Attempt]:
    return [Attempt()]


@dataclass
class _Job:
    job_id: str
    submission: dict[str, Any]
    definition: str
    plan: list[Attempt]
    status: str = "SUBMITTED"
    attempt: int = 0  # index into plan of the current attempt
    waited: int = 0
    ended: list[dict[str, Any]] = field(default_factory=list)  # Batch's `attempts`
    stream: str | None = None
    parent: str | None = None
    size: int = 0

    def describe(self) -> dict[str, Any]:
        overrides = self.submission.get("containerOverrides", {})
        container: dict[str, Any] = {"resourceRequirements": overrides.get("resourceRequirements", [])}
        if self.stream:
            container["logStreamName"] = self.stream
        if self.status == "FAILED" and self.ended:
            container["exitCode"] = self.ended[-1]["container"]["exitCode"]
            container["reason"] = self.ended[-1]["container"].get("reason", "")
        found: dict[str, Any] = {
            "jobId": self.job_id,
            "jobName": self.submission.get("jobName", ""),
            "jobQueue": self.submission.get("jobQueue", ""),
            "status": self.status,
            "statusReason": self.ended[-1]["statusReason"] if self.ended else "",
            "container": container,
            "attempts": list(self.ended),
            "retryStrategy": self.submission.get("retryStrategy", {"attempts": 1}),
            "createdAt": 1_000,
        }
        if self.ended or self.status == "RUNNING":
            found["startedAt"] = 2_000
        if self.status in ("SUCCEEDED", "FAILED"):
            found["stoppedAt"] = 12_000
        return found


class BatchDouble:
    """The boto3 clients of the Batch layer, in memory. `submitted`, `terminated`, `calls` record
    what was asked; `plan` decides each job's attempts from its submission."""

    def __init__(
        self,
        plan: Callable[[Mapping[str, Any]], Sequence[Attempt]] = succeeds,
        environments: Sequence[Mapping[str, Any]] = (),
        instance_types: Mapping[str, tuple[int, int, int]] | None = None,
        queues: Sequence[str] = ("q",),
    ) -> None:
        self.plan = plan
        self.environments = [dict(e) for e in environments] or [
            {"computeEnvironmentName": "own", "state": "ENABLED", "status": "VALID"}  # unmanaged: no limits known
        ]
        self.instance_types = dict(instance_types or {})
        self.queues = list(queues)
        self.jobs: dict[str, _Job] = {}
        self.definitions: list[dict[str, Any]] = []
        self.streams: dict[str, list[str]] = {}
        self.submitted: list[dict[str, Any]] = []
        self.terminated: list[str] = []
        self.calls: list[str] = []

    # --- wiring -------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """What `client._client(service)` returns when the double is installed."""
        return _Service(self, service)

    @contextlib.contextmanager
    def installed(self) -> Iterator[BatchDouble]:
        """The Batch layer's boto3 clients replaced by this double while the block runs."""
        with mock.patch("disdat_luigi.run.batch.client._client", self.client):
            yield self

    # --- batch --------------------------------------------------------------------------------

    def describe_job_queues(self, jobQueues: list[str]) -> dict[str, Any]:
        order = [
            {"order": i, "computeEnvironment": e["computeEnvironmentName"]} for i, e in enumerate(self.environments)
        ]
        found = [{"jobQueueName": q, "computeEnvironmentOrder": order} for q in jobQueues if q in self.queues]
        return {"jobQueues": found}

    def describe_compute_environments(self, computeEnvironments: list[str]) -> dict[str, Any]:
        return {
            "computeEnvironments": [e for e in self.environments if e["computeEnvironmentName"] in computeEnvironments]
        }

    def describe_job_definitions(self, jobDefinitionName: str, status: str = "ACTIVE", **_: Any) -> dict[str, Any]:
        return {"jobDefinitions": [d for d in self.definitions if d["jobDefinitionName"] == jobDefinitionName]}

    def register_job_definition(self, jobDefinitionName: str, containerProperties: Any, **_: Any) -> dict[str, Any]:
        revision = 1 + sum(d["jobDefinitionName"] == jobDefinitionName for d in self.definitions)
        arn = f"arn:aws:batch:double:job-definition/{jobDefinitionName}:{revision}"
        self.definitions.append(
            {"jobDefinitionName": jobDefinitionName, "jobDefinitionArn": arn, "revision": revision,
             "status": "ACTIVE", "containerProperties": dict(containerProperties)}
        )  # fmt: skip
        return {"jobDefinitionName": jobDefinitionName, "jobDefinitionArn": arn, "revision": revision}

    def submit_job(self, **submission: Any) -> dict[str, Any]:
        self.submitted.append(submission)
        job_id = f"job-{len(self.submitted)}"
        definition = str(submission.get("jobDefinition", "")).rpartition("/")[2].partition(":")[0]
        size = int((submission.get("arrayProperties") or {}).get("size") or 0)
        self.jobs[job_id] = _Job(job_id, submission, definition, list(self.plan(submission)), size=size)
        for index in range(size):
            child = f"{job_id}:{index}"
            self.jobs[child] = _Job(child, submission, definition, list(self.plan(submission)), parent=job_id)
        return {"jobId": job_id, "jobName": submission.get("jobName", "")}

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        self._advance()
        return {"jobs": [self._describe(j) for j in jobs if j in self.jobs]}

    def list_jobs(self, **filters: Any) -> dict[str, Any]:
        status = filters.get("jobStatus")
        parent = filters.get("arrayJobId")
        found = [
            {"jobId": j.job_id, "status": j.status, "container": {"exitCode": j.ended[-1]["container"]["exitCode"]}}
            if j.ended
            else {"jobId": j.job_id, "status": j.status}
            for j in self.jobs.values()
            if (status is None or j.status == status)
            and (parent is None or j.parent == parent)
            and (filters.get("jobQueue") in (None, j.submission.get("jobQueue")))
        ]
        return {"jobSummaryList": found}

    def terminate_job(self, jobId: str, reason: str) -> dict[str, Any]:
        self.terminated.append(jobId)
        job = self.jobs[jobId]
        if job.status not in ("SUCCEEDED", "FAILED"):
            job.ended.append({"container": {"exitCode": 143, "reason": reason}, "statusReason": reason, **ENDED})
            job.status = "FAILED"
        return {}

    def _describe(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        found = job.describe()
        if job.size:
            children = [j for j in self.jobs.values() if j.parent == job_id]
            summary: dict[str, int] = {}
            for child in children:
                summary[child.status] = summary.get(child.status, 0) + 1
            found["arrayProperties"] = {"size": job.size, "statusSummary": summary}
            if all(c.status in ("SUCCEEDED", "FAILED") for c in children):
                found["status"] = "FAILED" if summary.get("FAILED") else "SUCCEEDED"
            elif any(c.status == "RUNNING" for c in children):
                found["status"] = "RUNNING"
        return found

    def _advance(self) -> None:
        """Every job that has not ended moves one step."""
        for job in self.jobs.values():
            if job.size or job.status in ("SUCCEEDED", "FAILED"):
                continue
            attempt = job.plan[job.attempt]
            if job.status == "SUBMITTED":
                job.status = "RUNNABLE"
            elif job.status == "RUNNABLE":
                job.waited += 1
                if job.waited >= attempt.runnable_polls:
                    job.status, job.waited = "RUNNING", 0
                    suffix = "" if job.attempt == 0 else f"-attempt{job.attempt + 1}"
                    job.stream = f"{job.definition}/default/{job.job_id}{suffix}"
                    self.streams[job.stream] = list(attempt.log)
            elif job.status == "RUNNING":
                self._end_attempt(job, attempt)

    def _end_attempt(self, job: _Job, attempt: Attempt) -> None:
        if attempt.exit_code == 0:
            job.status = "SUCCEEDED"
            job.ended.append({"container": {"exitCode": 0, "logStreamName": job.stream}, "statusReason": "", **ENDED})
            return
        reason = attempt.status_reason or "Essential container in task exited"
        job.ended.append(
            {"container": {"exitCode": attempt.exit_code, "reason": attempt.container_reason,
                           "logStreamName": job.stream}, "statusReason": reason, **ENDED}
        )  # fmt: skip
        strategy = job.submission.get("retryStrategy") or {}
        left = int(strategy.get("attempts", 1)) > len(job.ended) and job.attempt + 1 < len(job.plan)
        if left and _action(strategy.get("evaluateOnExit") or [], attempt, reason) == "RETRY":
            job.attempt += 1
            job.status = "RUNNABLE"
        else:
            job.status = "FAILED"

    # --- logs, sts, ec2 ---------------------------------------------------------------------------

    def get_log_events(
        self,
        logGroupName: str,
        logStreamName: str,
        startFromHead: bool = True,
        nextToken: str | None = None,
        limit: int = 10_000,
    ) -> dict[str, Any]:
        if logStreamName not in self.streams:
            raise ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "GetLogEvents")
        lines = self.streams[logStreamName]
        page = min(limit, 10_000)
        if startFromHead:
            start = int((nextToken or "f/0").partition("/")[2])
            chunk = lines[start : start + page]
            end = start + len(chunk)
            return {"events": [{"message": m} for m in chunk], "nextForwardToken": f"f/{end}"}
        end = int((nextToken or f"b/{len(lines)}").partition("/")[2])
        start = max(0, end - page)
        return {"events": [{"message": m} for m in lines[start:end]], "nextBackwardToken": f"b/{start}"}

    def get_session_token(self, DurationSeconds: int) -> dict[str, Any]:
        return {
            "Credentials": {
                "AccessKeyId": "ASIADOUBLE",
                "SecretAccessKey": "double",
                "SessionToken": f"tok{DurationSeconds}",
            }
        }

    def describe_instance_types(self, InstanceTypes: list[str]) -> dict[str, Any]:
        found = []
        for name in InstanceTypes:
            if name in self.instance_types:
                vcpus, memory, gpus = self.instance_types[name]
                found.append({"InstanceType": name, "VCpuInfo": {"DefaultVCpus": vcpus},
                              "MemoryInfo": {"SizeInMiB": memory}, "GpuInfo": {"Gpus": [{"Count": gpus}]}})  # fmt: skip
        return {"InstanceTypes": found}


def _action(rules: Sequence[Mapping[str, str]], attempt: Attempt, reason: str) -> str:
    """The first evaluateOnExit rule matching the attempt decides; none matching: RETRY (Batch's rule)."""
    for rule in rules:
        checks = [
            ("onStatusReason", reason),
            ("onReason", attempt.container_reason),
            ("onExitCode", str(attempt.exit_code)),
        ]
        if all(fnmatch.fnmatchcase(value, rule[key]) for key, value in checks if key in rule):
            return str(rule["action"]).upper()
    return "RETRY"


class _Service:
    """One boto3 client's face of the double (its calls recorded as `service:operation`)."""

    class exceptions:  # noqa: N801 - boto3 spells it so
        class ResourceNotFoundException(ClientError):
            pass

    def __init__(self, double: BatchDouble, service: str) -> None:
        self._double = double
        self._service = service

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._double, name)

        def call(**kwargs: Any) -> Any:
            self._double.calls.append(f"{self._service}:{name}")
            try:
                return method(**kwargs)
            except ClientError as err:
                if err.response["Error"]["Code"] == "ResourceNotFoundException":
                    raise _Service.exceptions.ResourceNotFoundException(err.response, err.operation_name) from None
                raise

        return call

    def get_paginator(self, name: str) -> Any:
        method = getattr(self, name)

        class Paginator:
            def paginate(self, **kwargs: Any) -> Iterator[Any]:
                yield method(**kwargs)

        return Paginator()
