"""What a Batch job is doing, as a frozen value built from `describe_jobs` (phase, exit code,
status reason, log stream, memory, attempts), and its log: read whole from the head (following
it as it grows) or its last lines from the tail. The only module that knows Batch's status
strings and where a job's log stream is."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from disdat_luigi.errors import RunError
from disdat_luigi.run.batch import client

DESCRIBE_BATCH = 100  # describe_jobs takes at most 100 ids
OOM_EXIT_CODE = 137  # SIGKILL, which is what the kernel's OOM killer sends
HOST_FAILURE = "Host EC2*"  # statusReason of a job whose instance went away (spot reclaim, termination)


class JobPhase(enum.Enum):
    """Batch's job statuses, in the order a job goes through them."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def ended(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)

    @property
    def waiting(self) -> bool:
        """Queued or being placed: not yet running the container."""
        return self in (JobPhase.SUBMITTED, JobPhase.PENDING, JobPhase.RUNNABLE, JobPhase.STARTING)


def log_stream_name(definition: str, job_id: str) -> str:
    """Where a job's log goes before Batch says so (describe_jobs names it once the job runs)."""
    return f"{definition}/default/{job_id}"


@dataclass(frozen=True, kw_only=True)
class JobState:
    """One job as `describe_jobs` last saw it."""

    job_id: str
    name: str = ""
    phase: JobPhase
    status_reason: str = ""
    attempt_reason: str = ""  # why the last ended attempt ended (a retry's cause)
    exit_code: int | None = None
    container_reason: str = ""
    log_stream: str | None = None  # the current (or last) attempt's
    memory: int = 0  # MiB the job asked for
    vcpus: int = 0
    attempts: int = 0  # attempts that ended
    max_attempts: int = 1
    queue: str = ""
    started: float | None = None  # epoch seconds
    stopped: float | None = None
    array_size: int = 0  # an array job's size (0: not an array job)
    array_counts: Mapping[JobPhase, int] = field(default_factory=dict)  # its children per phase

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> JobState:
        container = job.get("container") or {}
        attempts = job.get("attempts") or []
        # moto lists the attempt under way too (AWS lists ended ones): an attempt ended once it stopped
        ended = [a for a in attempts if a.get("stoppedAt")]
        last = (attempts[-1].get("container") or {}) if attempts else {}
        exit_code = container.get("exitCode", last.get("exitCode"))
        requirements = {r.get("type"): r.get("value") for r in container.get("resourceRequirements") or []}
        array = job.get("arrayProperties") or {}
        return cls(
            job_id=str(job["jobId"]),
            name=str(job.get("jobName", "")),
            phase=JobPhase(job["status"]),
            status_reason=str(job.get("statusReason") or ""),
            attempt_reason=str((ended[-1].get("statusReason") or "") if ended else ""),
            exit_code=None if exit_code is None else int(exit_code),
            container_reason=str(container.get("reason") or last.get("reason") or ""),
            log_stream=container.get("logStreamName") or last.get("logStreamName"),
            memory=int(requirements.get("MEMORY") or container.get("memory") or 0),
            vcpus=int(requirements.get("VCPU") or container.get("vcpus") or 0),
            attempts=len(ended),
            max_attempts=int((job.get("retryStrategy") or {}).get("attempts") or 1),
            queue=str(job.get("jobQueue", "")),
            started=job["startedAt"] / 1000 if job.get("startedAt") else None,
            stopped=job["stoppedAt"] / 1000 if job.get("stoppedAt") else None,
            array_size=int(array.get("size") or 0),
            array_counts={JobPhase(k): int(v) for k, v in (array.get("statusSummary") or {}).items()},
        )

    @property
    def attempt(self) -> int:
        """Which attempt the job is on (or ended with), from 1."""
        return max(1, self.attempts if self.phase.ended else self.attempts + 1)

    @property
    def failed(self) -> bool:
        return self.phase is JobPhase.FAILED

    @property
    def out_of_memory(self) -> bool:
        reason = f"{self.container_reason} {self.status_reason}"
        return self.exit_code == OOM_EXIT_CODE or "OutOfMemoryError" in reason

    @property
    def duration(self) -> float | None:
        return self.stopped - self.started if self.started and self.stopped else None

    def stream(self, definition: str) -> str:
        return self.log_stream or log_stream_name(definition, self.job_id)


def describe(job_ids: Sequence[str], exit_codes: bool = False) -> dict[str, JobState]:
    """Jobs by id, asked for in batches of at most 100 ids (one request per batch). With
    `exit_codes`, a failed job whose exit code describe_jobs left out gets it from the queue's
    list of failed jobs (some Batch implementations, moto among them, report it only there)."""
    found: dict[str, JobState] = {}
    for start in range(0, len(job_ids), DESCRIBE_BATCH):
        for job in client.describe_jobs(list(job_ids[start : start + DESCRIBE_BATCH])):
            state = JobState.of(job)
            if exit_codes:
                state = with_exit_code(state)
            found[state.job_id] = state
    return found


def describe_one(job_id: str, exit_codes: bool = False) -> JobState:
    found = describe([job_id], exit_codes).get(job_id)
    if found is None:
        raise RunError(f"AWS Batch knows no job {job_id}")
    return found


def with_exit_code(state: JobState) -> JobState:
    """A failed job's exit code from the queue's list of failed jobs, when describe_jobs left it out."""
    from dataclasses import replace

    if state.phase is not JobPhase.FAILED or state.exit_code is not None or not state.queue:
        return state
    listed = client.list_jobs(jobQueue=state.queue, jobStatus=JobPhase.FAILED.value)
    code = next((j.get("container", {}).get("exitCode") for j in listed if j.get("jobId") == state.job_id), None)
    return state if code is None else replace(state, exit_code=int(code))


def children_in(array_job_id: str, phase: JobPhase) -> list[str]:
    """The ids of an array job's children in `phase`."""
    return [str(j["jobId"]) for j in client.list_jobs(arrayJobId=array_job_id, jobStatus=phase.value)]


# --- logs ----------------------------------------------------------------------------------------


class JobLog:
    """One job's log read from the head, on from where the last read stopped (`nextForwardToken`):
    every line exactly once, however long the log, without re-reading it from the top."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._token: str | None = None

    def read(self) -> list[str]:
        """Every line written since the last call (nothing while the stream does not exist)."""
        lines: list[str] = []
        while True:
            page = client.log_page(self.stream, self._token)
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


def last_lines(stream: str, count: int) -> list[str]:
    """The last `count` lines of a log, read backwards from its end: one request, however long
    the log (a page of `count` events holds at least `count` lines; a shorter page is the whole log)."""
    lines: list[str] = []
    token: str | None = None
    while len(lines) < count:
        page = client.log_page(stream, token, from_head=False, limit=count)
        if page is None:
            break
        events, earlier = page
        if not events:
            break
        lines = [line for e in events for line in str(e.get("message", "")).splitlines()] + lines
        if len(events) < count or earlier is None or earlier == token:
            break
        token = earlier
    return lines[-count:]


# --- following -------------------------------------------------------------------------------


@dataclass
class Followed:
    """What following a job learned: its last state and its log."""

    job: JobState
    lines: list[str] = field(default_factory=list)


def follow(
    job_id: str,
    stream: str,
    log: Callable[[str], None],
    poll_seconds: float = 5.0,
    runnable_warning_seconds: float = 600.0,
    diagnose_runnable: Callable[[JobState], str] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Followed:
    """Poll the job until it ends, saying each status change (and each new attempt) with the time
    elapsed, streaming its log as it grows (a retried attempt's own log once it starts), and
    explaining once why it stays RUNNABLE past `runnable_warning_seconds`."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    started = clock()
    seen: tuple[JobPhase, int] | None = None
    runnable_since: float | None = None
    warned = False
    reader: JobLog | None = None
    followed: Followed | None = None
    while True:
        job = describe([job_id], exit_codes=True).get(job_id)
        if job is None:
            raise RunError(f"AWS Batch knows no job {job_id}")
        followed = followed or Followed(job=job)
        followed.job = job
        if (job.phase, job.attempt) != seen:
            seen = (job.phase, job.attempt)
            retry = f", attempt {job.attempt}/{job.max_attempts}" if job.attempt > 1 else ""
            log(f"job {job_id}: {job.phase.value} ({clock() - started:.0f} s{retry})")
            runnable_since = clock() if job.phase is JobPhase.RUNNABLE else None
        if runnable_since is not None and not warned and clock() - runnable_since >= runnable_warning_seconds:
            warned = True
            if diagnose_runnable is not None:
                log(diagnose_runnable(job))
        current = job.log_stream or stream
        if job.phase is JobPhase.RUNNING or job.phase.ended:
            if reader is None or reader.stream != current:
                reader = JobLog(current)  # a new attempt writes a stream of its own
                followed.lines = []
            for line in reader.read():
                followed.lines.append(line)
                log(line)
        if job.phase.ended:
            break
        sleep(poll_seconds)
    for _attempt in range(10):  # the log may appear only after the container exits
        if followed.lines:
            break
        sleep(poll_seconds / 2)
        for line in (reader or JobLog(followed.job.log_stream or stream)).read():
            followed.lines.append(line)
            log(line)
    return followed
