"""The AWS Batch job layer `dsdt run` uses (and per-task executors will): what a submission holds,
following jobs (batched status polls, logs read on from where the last read stopped), and
explaining failures (out-of-memory kills) and jobs stuck in RUNNABLE."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from disdat_luigi.errors import JobFailed, RunError
from disdat_luigi.run import aws

FINAL = ("SUCCEEDED", "FAILED")
DESCRIBE_BATCH = 100  # describe_jobs takes at most 100 ids
OOM_EXIT_CODE = 137  # SIGKILL, which is what the kernel's OOM killer sends
HOST_FAILURE = "Host EC2*"  # statusReason of a job whose instance went away (spot reclaim, termination)
MIN_TIMEOUT = 60  # AWS Batch refuses shorter attemptDurationSeconds


@dataclass(frozen=True, kw_only=True)
class Resources:
    vcpus: int
    memory: int  # MiB
    gpus: int = 0

    def requirements(self) -> list[dict[str, str]]:
        """Batch resourceRequirements (Fargate refuses the legacy vcpus/memory fields)."""
        found = [{"type": "VCPU", "value": str(self.vcpus)}, {"type": "MEMORY", "value": str(self.memory)}]
        if self.gpus:
            found.append({"type": "GPU", "value": str(self.gpus)})
        return found


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One submission: everything `submit_job` is given."""

    name: str
    queue: str
    definition_arn: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    resources: Resources
    timeout: int = 0  # seconds per attempt; 0: none
    retries: int = 0  # extra attempts after infrastructure failures
    retry_application_errors: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    secret_names: frozenset[str] = frozenset()  # environment names never shown

    def __post_init__(self) -> None:
        if self.timeout and self.timeout < MIN_TIMEOUT:
            raise RunError(f"--timeout {self.timeout} is below AWS Batch's minimum of {MIN_TIMEOUT} seconds")
        if self.retries < 0 or self.retries > 9:
            raise RunError(f"--retries {self.retries} must be between 0 and 9 (AWS Batch allows 10 attempts)")
        if self.resources.vcpus < 1 or self.resources.memory < 1 or self.resources.gpus < 0:
            raise RunError("a job needs at least 1 vCPU and 1 MiB of memory", hint="check --vcpus and --memory")

    def submission(self) -> dict[str, Any]:
        """The keyword arguments of `submit_job`."""
        kwargs: dict[str, Any] = {
            "jobName": self.name,
            "jobQueue": self.queue,
            "jobDefinition": self.definition_arn,
            "containerOverrides": {
                "command": list(self.command),
                "environment": [{"name": k, "value": v} for k, v in sorted(self.environment.items())],
                "resourceRequirements": self.resources.requirements(),
            },
        }
        if self.timeout:
            kwargs["timeout"] = {"attemptDurationSeconds": self.timeout}
        if self.retries:
            kwargs["retryStrategy"] = retry_strategy(self.retries, self.retry_application_errors)
        if self.tags:
            kwargs["tags"] = dict(self.tags)
            kwargs["propagateTags"] = True
        return kwargs

    def shown(self) -> dict[str, Any]:
        """The submission with secret values masked (what `--no-submit` prints)."""
        shown = self.submission()
        shown["containerOverrides"]["environment"] = [
            {"name": e["name"], "value": "***" if e["name"] in self.secret_names else e["value"]}
            for e in shown["containerOverrides"]["environment"]
        ]
        return shown


def retry_strategy(retries: int, application_errors: bool = False) -> dict[str, Any]:
    """Retry what the infrastructure broke (the instance went away); an application error (a
    non-zero exit of the pipeline) ends the job unless asked otherwise."""
    rules = [{"onStatusReason": HOST_FAILURE, "action": "RETRY"}]
    if not application_errors:
        rules.append({"onReason": "*", "action": "EXIT"})
    return {"attempts": retries + 1, "evaluateOnExit": rules}


# --- following -------------------------------------------------------------------------------


def describe_many(job_ids: Sequence[str], describe: Callable[[list[str]], list[Mapping[str, Any]]]) -> dict[str, Any]:
    """Jobs by id, asked for in batches of at most 100 ids (one request per batch)."""
    found: dict[str, Any] = {}
    for start in range(0, len(job_ids), DESCRIBE_BATCH):
        for job in describe(list(job_ids[start : start + DESCRIBE_BATCH])):
            found[job["jobId"]] = job
    return found


class LogFollower:
    """One job's CloudWatch log, read on from where the last read stopped (`nextForwardToken`):
    every line exactly once, however long the log, without re-reading it from the top."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._token: str | None = None

    def read(self) -> list[str]:
        """Every line written since the last call (nothing while the stream does not exist)."""
        lines: list[str] = []
        while True:
            page = aws.log_page(self.stream, self._token)
            if page is None:
                return lines
            events, token = page
            for event in events:
                lines.extend(str(event["message"]).splitlines())
            if token is None or token == self._token:
                return lines  # the same token again: the end of what is written so far
            self._token = token
            if not events:
                return lines


@dataclass
class Followed:
    """What following a job learned: its last description and its log."""

    job: Mapping[str, Any]
    lines: list[str] = field(default_factory=list)


def follow(
    job_id: str,
    stream: str,
    log: Callable[[str], None],
    poll_seconds: float = 5.0,
    runnable_warning_seconds: float = 600.0,
    diagnose_runnable: Callable[[Mapping[str, Any]], str] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Followed:
    """Poll the job until it ends, saying each status change with the time elapsed, streaming its
    log as it grows, and explaining once why it stays RUNNABLE past `runnable_warning_seconds`."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    started = clock()
    status = None
    runnable_since: float | None = None
    warned = False
    follower: LogFollower | None = None
    followed = Followed(job={})
    while True:
        job = describe_many([job_id], aws.describe_jobs).get(job_id)
        if job is None:
            raise RunError(f"AWS Batch knows no job {job_id}")
        followed.job = job
        if job["status"] != status:
            status = job["status"]
            log(f"job {job_id}: {status} ({clock() - started:.0f} s)")
            runnable_since = clock() if status == "RUNNABLE" else None
        if runnable_since is not None and not warned and clock() - runnable_since >= runnable_warning_seconds:
            warned = True
            if diagnose_runnable is not None:
                log(diagnose_runnable(job))
        stream = job.get("container", {}).get("logStreamName") or stream
        if status in ("RUNNING", *FINAL):
            follower = follower or LogFollower(stream)
            for line in follower.read():
                followed.lines.append(line)
                log(line)
        if status in FINAL:
            break
        sleep(poll_seconds)
    for _attempt in range(10):  # the log may appear only after the container exits
        if followed.lines:
            break
        sleep(poll_seconds / 2)
        for line in (follower or LogFollower(stream)).read():
            followed.lines.append(line)
            log(line)
    return followed


# --- explaining ----------------------------------------------------------------------------------


def is_out_of_memory(job: Mapping[str, Any]) -> bool:
    container = job.get("container", {})
    reason = f"{container.get('reason', '')} {job.get('statusReason', '')}"
    return container.get("exitCode") == OOM_EXIT_CODE or "OutOfMemoryError" in reason


def failure(job: Mapping[str, Any], lines: Sequence[str], memory: int) -> JobFailed:
    """The error for a failed job: its name and id, AWS's statusReason, the container's exit code
    and reason, a likely out-of-memory kill said as such, and the last log lines as the hint."""
    container = job.get("container", {})
    parts = [f"AWS Batch job {job.get('jobName', '')} ({job['jobId']}) failed"]
    parts.append(f"status reason: {job.get('statusReason') or 'none given'}")
    if container.get("exitCode") is not None:
        parts.append(f"exit code {container['exitCode']}")
    if container.get("reason"):
        parts.append(f"container: {container['reason']}")
    message = "; ".join(parts)
    if is_out_of_memory(job):
        message += (
            f". It was most likely killed for running out of memory: it asked for {memory} MiB; "
            f"ask for more with --memory {memory * 2} (or [run] memory, or [run] memory_retry_factor to retry)"
        )
    tail = "\n".join(lines[-15:]) if lines else "the job left no log"
    return JobFailed(message, hint="last log lines:\n" + tail)


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """What one compute environment can give a single job."""

    name: str
    state: str
    status: str
    status_reason: str
    max_vcpus: int | None
    max_memory: int | None  # MiB of its largest instance type (None: unknown)
    max_gpus: int | None


def capacities(queue: str) -> list[Capacity]:
    """The compute environments behind `queue`, with what each can place."""
    environments = aws.compute_environments(queue)
    types = sorted({t for env in environments for t in env.get("computeResources", {}).get("instanceTypes", [])})
    sizes = aws.instance_sizes(types)
    found = []
    for env in environments:
        resources = env.get("computeResources", {})
        known = [sizes[t] for t in resources.get("instanceTypes", []) if t in sizes]
        found.append(
            Capacity(
                name=env.get("computeEnvironmentName", "?"),
                state=env.get("state", "?"),
                status=env.get("status", "?"),
                status_reason=env.get("statusReason", ""),
                max_vcpus=resources.get("maxvCpus"),
                max_memory=max((m for _v, m, _g in known), default=None),
                max_gpus=max((g for _v, _m, g in known), default=None),
            )
        )
    return found


def placement_problems(resources: Resources, queue: str, found: Sequence[Capacity]) -> list[str]:
    """Why no compute environment of `queue` can ever place a job of `resources` (empty: one can)."""
    if not found:
        return [f"queue {queue} has no compute environment"]
    usable = [c for c in found if c.state in ("ENABLED", "?") and c.status in ("VALID", "?")]  # ?: not reported
    if not usable:
        states = ", ".join(f"{c.name} is {c.state}/{c.status} {c.status_reason}".strip() for c in found)
        return [f"no compute environment of queue {queue} is enabled and valid ({states})"]
    problems = []
    for what, wanted, limit in (
        ("vCPUs", resources.vcpus, [c.max_vcpus for c in usable]),
        ("MiB of memory", resources.memory, [c.max_memory for c in usable]),
        ("GPUs", resources.gpus, [c.max_gpus for c in usable]),
    ):
        known = [v for v in limit if v is not None]
        if wanted and known and len(known) == len(limit) and wanted > max(known):
            problems.append(
                f"no compute environment of queue {queue} can give {wanted} {what}; the largest allows {max(known)}"
            )
    return problems


def runnable_diagnosis(job: Mapping[str, Any], resources: Resources, queue: str) -> str:
    """Why a job may sit in RUNNABLE: AWS's own reason, the compute environments' states and what
    they can give against what the job asks for."""
    lines = [f"job {job['jobId']} is still RUNNABLE: {job.get('statusReason') or 'AWS gives no reason'}"]
    found = capacities(queue)
    lines.extend(placement_problems(resources, queue, found))
    for c in found:
        limits = f"maxvCpus {c.max_vcpus}" + (f", largest instance {c.max_memory} MiB" if c.max_memory else "")
        lines.append(f"  compute environment {c.name}: {c.state}/{c.status} {c.status_reason} ({limits})".rstrip())
    return "\n".join(lines)


def escalated_memory(memory: int, factor: float, found: Iterable[Capacity]) -> int | None:
    """The memory of a retry after an out-of-memory kill: `memory * factor`, capped at the largest
    instance of the queue; None when no more can be had."""
    limits = [c.max_memory for c in found if c.max_memory is not None]
    wanted = int(memory * factor)
    if limits:
        wanted = min(wanted, max(limits))
    return wanted if wanted > memory else None
