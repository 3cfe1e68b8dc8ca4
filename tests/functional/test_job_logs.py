"""A failed executor job's last log lines are the end of its log, however long (moto's CloudWatch)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import boto3

from disdat_luigi.apply.executors import Phase
from disdat_luigi.config import ExecutorSettings, Settings
from disdat_luigi.run.batch import client
from disdat_luigi.run.batch.state import JobState
from disdat_luigi.run.executors.batch import BatchExecutor
from disdat_luigi.run.executors.container import Tracked
from disdat_luigi.store.store import LocalStore


def test_a_failed_jobs_last_lines_are_the_end_of_a_20000_line_log(aws_env: str, tmp_path: Path) -> None:
    """The diagnosis of a failed job quotes the end of its log, not the end of its first page."""
    logs = boto3.client("logs")
    stream = f"job/default/{time.time_ns()}"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=client.LOG_GROUP)
    logs.create_log_stream(logGroupName=client.LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    lines = [f"chatty line {i}" for i in range(19_999)] + ["ValueError: the real failure"]
    for start in range(0, len(lines), 5_000):
        events = [{"timestamp": now + i, "message": m} for i, m in enumerate(lines[start : start + 5_000], start)]
        logs.put_log_events(logGroupName=client.LOG_GROUP, logStreamName=stream, logEvents=events)
    settings = Settings(config_path=tmp_path / "cfg", root=tmp_path / "home")
    context = LocalStore(tmp_path / "home").create_context("c")
    config = ExecutorSettings(name="batch", type="aws_batch")
    executor = BatchExecutor(settings=settings, config=config, context=context, build=False)
    executor.described = {
        "job-1": JobState.of({"jobId": "job-1", "status": "FAILED", "container": {"logStreamName": stream}})
    }
    tracked = Tracked(task=None, job_id="job-1", output_uuid="", phase=Phase.FAILED)  # type: ignore[arg-type]
    shown, error = executor.finish(tracked)
    assert shown[-1] == "ValueError: the real failure" and "chatty line 19998" in shown
    assert error is not None and "ValueError: the real failure" in (error.hint or "") + error.message
