"""The one record of the jobs a context submitted (`dsdt run`'s, executor jobs on AWS Batch or
the local Docker engine, array children), in `<context>/jobs.jsonl`: found again by `dsdt jobs`,
`logs`, `wait` and `cancel` after the submitting process is gone, and by the next apply, which
attaches to a job already doing the work of a task (its identity)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from disdat_luigi.run.batch.state import JobState

JOURNAL = "jobs.jsonl"


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    job_id: str
    job_name: str
    pipe_cls: str
    output_bundle: str
    queue: str
    definition: str  # job definition name (names its log streams: state.log_stream_name)
    memory: int
    submitted: float  # epoch seconds
    task: str = ""  # an executor job's task (as luigi prints it); a run's: its pipeline class
    executor: str = ""  # the executor that submitted it (`dsdt run`: run-aws_batch)
    apply_id: str = ""  # the apply whose task it runs (executor jobs)
    vcpus: int = 0
    platform: str = "aws_batch"  # where it runs: aws_batch, or docker (a container on this machine)
    identity: str = ""  # an executor job's TaskIdentity digest: the exact work it does
    output_uuid: str = ""  # the bundle an executor job makes (the uuid its host fixed)
    is_driver: bool = False  # a `dsdt run` job whose apply sends tasks out as jobs of their own
    driver: str = ""  # the driver job that submitted this one (its record is on the remote)

    @property
    def on_docker(self) -> bool:
        return self.platform == "docker"


def remember(context_dir: Path, record: JobRecord) -> None:
    """Append one line (a crash loses at most that line; readers skip a torn one)."""
    with open(context_dir / JOURNAL, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")


@contextlib.contextmanager
def locked(context_dir: Path) -> Iterator[list[JobRecord]]:
    """Every remembered job, read under an exclusive lock held until the caller has remembered the
    jobs it starts: of two applies needing the same work, the second sees the first's job. The
    lock is on the record itself, which is never removed or replaced (`dsdt verify` leaves it be)."""
    context_dir.mkdir(parents=True, exist_ok=True)
    with open(context_dir / JOURNAL, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield records(context_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def by_identity(found: list[JobRecord], executor: str) -> dict[str, JobRecord]:
    """The newest job of `executor` for each piece of work (TaskIdentity digest)."""
    return {r.identity: r for r in found if r.identity and r.executor == executor}


def records(context_dir: Path) -> list[JobRecord]:
    """Every remembered job, oldest first."""
    try:
        text = (context_dir / JOURNAL).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            found.append(JobRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return found


def find(context_dir: Path, job_id: str) -> JobRecord | None:
    return next((r for r in reversed(records(context_dir)) if r.job_id == job_id), None)


def for_output(context_dir: Path, output_bundle: str) -> JobRecord | None:
    """The newest job that was to make `output_bundle`."""
    return next((r for r in reversed(records(context_dir)) if r.output_bundle == output_bundle), None)


def now() -> float:
    return time.time()


def for_apply(context_dir: Path, apply_id: str) -> list[JobRecord]:
    """The jobs one apply submitted (its executor jobs, array children included)."""
    return [r for r in records(context_dir) if apply_id and r.apply_id == apply_id]


def describe(record: JobRecord, job: JobState | None) -> dict[str, Any]:
    """A Batch job's row of `dsdt jobs`."""
    if job is None:
        return row(record, status="UNKNOWN")
    return row(
        record,
        status=job.phase.value,
        attempt=f"{job.attempt}/{job.max_attempts}",
        started=job.started,
        duration=job.duration,
        vcpus=job.vcpus,
    )


def row(
    record: JobRecord,
    *,
    status: str,
    attempt: str = "",
    started: float | None = None,
    duration: float | None = None,
    vcpus: int = 0,
) -> dict[str, Any]:
    """A row of `dsdt jobs`, whatever runs the job: id, task (or pipeline class), executor, output
    name, status, attempt, started, duration and vCPU-seconds."""
    vcpus = vcpus or record.vcpus
    return {
        "job_id": record.job_id,
        "pipe_cls": record.pipe_cls,
        "task": record.task or record.pipe_cls,
        "executor": record.executor or "run",
        "apply_id": record.apply_id,
        "output": record.output_bundle,
        "status": status,
        "attempt": attempt,
        "started": started,
        "duration": duration,
        "vcpu_seconds": duration * vcpus if duration is not None and vcpus else None,
    }
