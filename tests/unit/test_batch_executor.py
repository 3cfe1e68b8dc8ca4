"""The aws_batch executor's retries against the Batch client double (moto never retries an
attempt nor kills a job for its memory): a lost host is retried by the job's retry strategy and
shown; the task's own error ends the job; an out-of-memory kill is run again with more memory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from disdat_luigi.apply.executors import JobUpdate, Phase, RemoteTask
from disdat_luigi.config import ExecutorSettings, RunSettings, Settings
from disdat_luigi.run import journal
from disdat_luigi.run.batch.double import Attempt, BatchDouble
from disdat_luigi.run.executors.batch import BatchExecutor
from disdat_luigi.store.remote.claims import MemoryClaimStore
from disdat_luigi.store.store import LocalStore

LOST_HOST = Attempt(exit_code=1, status_reason="Host EC2 (instance i-0abc) terminated.", log=("lost work",))
OOM = Attempt(exit_code=137, container_reason="OutOfMemoryError: Container killed due to memory usage", log=("big",))


def _task(n: int) -> RemoteTask:
    return RemoteTask(
        task_id=f"Fit_{n}", label=f"Fit(n={n})", pipe_cls="m.Fit", params={"n": str(n)}, processing_name=f"Fit_{n}",
        output_bundle="Fit", output_uuid=f"0000000{n}-0000-4000-8000-000000000000",
    )  # fmt: skip


def _executor(tmp_path: Path, retries: int = 2, factor: float = 1.0) -> BatchExecutor:
    context = LocalStore(tmp_path / "home").create_context("c")
    context.bind_remote("shared", "s3://bucket/team")
    settings = Settings(
        config_path=tmp_path / "cfg", root=tmp_path / "home",
        run=RunSettings(aws_batch_queue="q", memory_retry_factor=factor),
    )  # fmt: skip
    config = ExecutorSettings(name="farm", type="aws_batch", retries=retries, memory=2048, array_min_size=99)
    executor = BatchExecutor(settings=settings, config=config, context=context, build=False)
    executor.images = {"m.Fit": ("disdat-m", "reg/disdat-m:c1")}
    executor.claim_store = MemoryClaimStore()
    return executor


def _run(executor: BatchExecutor, tasks: list[RemoteTask]) -> list[JobUpdate]:
    updates = executor.submit(tasks)
    for _poll in range(50):
        if not executor.in_flight:
            break
        updates += executor.poll()
    return updates


def _memory(submission: Mapping[str, Any]) -> str:
    requirements = submission["containerOverrides"]["resourceRequirements"]
    return str(next(r["value"] for r in requirements if r["type"] == "MEMORY"))


def test_a_lost_host_is_retried_and_the_retry_is_shown(tmp_path: Path) -> None:
    """The job carries the retry strategy of `dsdt run`; its second attempt is said (attempt 2/3
    and why) and the log given with the result is the second attempt's."""
    double = BatchDouble(plan=lambda _s: [LOST_HOST, Attempt(log=("second try",))])
    with double.installed():
        updates = _run(_executor(tmp_path), [_task(1)])
    (strategy,) = {str(s["retryStrategy"]) for s in double.submitted}
    assert "'attempts': 3" in strategy and "Host EC2*" in strategy
    notes = [u.note for u in updates if u.note]
    assert notes == ["job job-1 attempt 2/3: Host EC2 (instance i-0abc) terminated."]
    assert [u.attempt for u in updates if u.note] == [2]
    done = updates[-1]
    assert done.phase is Phase.DONE and done.log == ("second try",)


def test_the_tasks_own_error_ends_the_job(tmp_path: Path) -> None:
    """A non-zero exit of the task is not retried: one attempt, the failure names the exit code
    and quotes the end of its log."""
    double = BatchDouble(plan=lambda _s: [Attempt(exit_code=3, log=("ValueError: bad",)), Attempt()])
    with double.installed():
        updates = _run(_executor(tmp_path), [_task(2)])
    failed = updates[-1]
    assert failed.phase is Phase.FAILED and failed.error is not None and not [u for u in updates if u.note]
    assert "exit code 3" in failed.error.message and "ValueError: bad" in (failed.error.hint or "")
    assert len(double.submitted) == 1


def test_an_out_of_memory_kill_is_run_again_with_more_memory(tmp_path: Path) -> None:
    """With [run] memory_retry_factor, the killed job is submitted again with factor times the
    memory (capped by the queue's largest instance), once; both jobs are recorded for `dsdt jobs`."""
    double = BatchDouble(
        plan=lambda s: [OOM] if _memory(s) == "2048" else [Attempt(log=("fits now",))],
        environments=[{"computeEnvironmentName": "ce", "state": "ENABLED", "status": "VALID",
                       "computeResources": {"maxvCpus": 16, "instanceTypes": ["m5.large"]}}],
        instance_types={"m5.large": (2, 8192, 0)},
    )  # fmt: skip
    executor = _executor(tmp_path, factor=4)
    with double.installed():
        updates = _run(executor, [_task(3)])
    assert [_memory(s) for s in double.submitted] == ["2048", "8192"]  # 4x asked, the largest instance gives 8192
    assert [u.note for u in updates if u.note] == [
        "job job-1 ran out of memory with 2048 MiB; retrying as job job-2 with 8192 MiB"
    ]
    assert updates[-1].phase is Phase.DONE and updates[-1].job_id == "job-2" and updates[-1].log == ("fits now",)
    assert [r.job_id for r in journal.records(executor.context.path)] == ["job-1", "job-2"]
    claim = executor.claims.store.read(_task(3).identity)
    assert claim is not None and claim.claim is not None
    assert claim.claim.job_id == "job-2"  # the next apply, on any machine, attaches to the retry


def test_out_of_memory_twice_fails(tmp_path: Path) -> None:
    """One escalation, as `dsdt run`: a job killed again is a failure saying it ran out of memory."""
    double = BatchDouble(plan=lambda _s: [OOM])
    with double.installed():
        updates = _run(_executor(tmp_path, factor=2), [_task(4)])
    assert [_memory(s) for s in double.submitted] == ["2048", "4096"]
    failed = updates[-1]
    assert failed.phase is Phase.FAILED and failed.error is not None
    assert "out of memory: it asked for 4096 MiB" in failed.error.message


@pytest.mark.parametrize("retries", [0])
def test_without_retries_a_lost_host_fails(tmp_path: Path, retries: int) -> None:
    double = BatchDouble(plan=lambda _s: [LOST_HOST, Attempt()])
    with double.installed():
        updates = _run(_executor(tmp_path, retries=retries), [_task(5)])
    assert updates[-1].phase is Phase.FAILED and "Host EC2" in (updates[-1].error.message if updates[-1].error else "")


def test_jobs_lists_executor_jobs_and_cancel_stops_one_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dsdt jobs` rows of executor jobs (array children too) name the task, executor, apply,
    attempt and vCPU-seconds; `cancel --apply` terminates that apply's unfinished jobs only
    (an array job through its parent)."""
    from dataclasses import replace

    from disdat_luigi.errors import RunError
    from disdat_luigi.run import runner
    from disdat_luigi.run.executors import batch as batch_executor

    monkeypatch.setattr(batch_executor.S3, "put_bytes", lambda self, bucket, key, body: None)  # the array's specs
    double = BatchDouble(plan=lambda _s: [Attempt(runnable_polls=1000)])  # they wait to be placed
    executor = _executor(tmp_path)
    executor.config = replace(executor.config, array_min_size=3)
    mine = [replace(_task(n), apply_id="a1") for n in range(4)]
    with double.installed():
        executor.submit(mine[:1])
        executor.submit(mine[1:])  # three siblings: one array job
        executor.submit([replace(_task(9), apply_id="other")])
        rows = runner.list_jobs(executor.context)
        stopped = runner.cancel_apply(executor.context, "a1")
        with pytest.raises(RunError, match="has no jobs of apply nope"):
            runner.cancel_apply(executor.context, "nope")
    assert stopped == ["job-1", "job-2"] and double.terminated == ["job-1", "job-2"]
    by_id = {r["job_id"]: r for r in rows}
    assert set(by_id) == {"job-1", "job-2:0", "job-2:1", "job-2:2", "job-3"}
    child = by_id["job-2:1"]
    assert (child["task"], child["executor"], child["apply_id"]) == ("Fit(n=2)", "farm", "a1")
    assert by_id["job-1"]["status"] == "RUNNABLE" and by_id["job-1"]["attempt"] == "1/3"
    assert by_id["job-1"]["vcpu_seconds"] is None  # not started


def test_cancel_names_one_job_or_one_apply(dsdt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """`dsdt cancel` with neither a job nor --apply (or with both) is a one-line error."""
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISDAT_CONFIG", str(tmp_path / "disdat.cfg"))
    for args in ((), ("job-1", "--apply", "a1")):
        result = dsdt("cancel", *args)
        assert result.code != 0 and "name one job, or one apply with --apply ID" in result.err
