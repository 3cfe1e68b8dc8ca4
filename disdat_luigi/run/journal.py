"""The jobs a context submitted to AWS Batch, remembered in `<context>/jobs.jsonl` so they can be
found again (`dsdt jobs`, `logs`, `wait`, `cancel`) after the submitting process is gone."""

from __future__ import annotations

import json
import time
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


def remember(context_dir: Path, record: JobRecord) -> None:
    """Append one line (a crash loses at most that line; readers skip a torn one)."""
    with open(context_dir / JOURNAL, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")


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


def describe(record: JobRecord, job: JobState | None) -> dict[str, Any]:
    """A row of `dsdt jobs`: id, pipeline class, output name, status, started, duration."""
    return {
        "job_id": record.job_id,
        "pipe_cls": record.pipe_cls,
        "output": record.output_bundle,
        "status": job.phase.value if job else "UNKNOWN",
        "attempt": f"{job.attempt}/{job.max_attempts}" if job else "",
        "started": job.started if job else None,
        "duration": job.duration if job else None,
    }
