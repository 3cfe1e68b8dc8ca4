"""The Batch layer's logic with stubbed clients (moto neither retries nor keeps jobs
RUNNABLE): batched status polls, logs read on by token, retry rules, RUNNABLE and out-of-memory
diagnosis, memory escalation and its cap."""

from __future__ import annotations

from typing import Any

import pytest

from disdat_luigi.errors import JobFailed, RunError
from disdat_luigi.run.batch import capacity, client, spec, state
from disdat_luigi.run.batch.capacity import Capacity
from disdat_luigi.run.batch.double import Attempt, BatchDouble
from disdat_luigi.run.batch.spec import JobSpec, Resources
from disdat_luigi.run.batch.state import JobState


def _capacity(**fields: Any) -> Capacity:
    base = {"name": "ce", "state": "ENABLED", "status": "VALID", "status_reason": "", "max_vcpus": 16,
            "max_memory": 32768, "max_gpus": 0}  # fmt: skip
    return Capacity(**{**base, **fields})


def test_status_is_asked_for_100_jobs_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def describe(ids: list[str]) -> list[dict[str, Any]]:
        calls.append(ids)
        return [{"jobId": i, "status": "RUNNING"} for i in ids]

    monkeypatch.setattr(client, "describe_jobs", describe)
    found = state.describe([f"j{i}" for i in range(250)])
    assert [len(c) for c in calls] == [100, 100, 50] and len(found) == 250


def test_a_long_log_is_followed_to_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """12,000 lines in pages of at most 10,000 (as CloudWatch and moto give them): every line
    once, in order, each page asked for by the previous page's token, never from the top again."""
    lines = [f"line {i}" for i in range(12_000)]
    asked: list[str | None] = []

    def page(stream: str, token: str | None) -> tuple[list[dict[str, str]], str]:
        asked.append(token)
        start = int(token or 0)
        chunk = lines[start : start + 10_000]
        return [{"message": m} for m in chunk], str(start + len(chunk))

    monkeypatch.setattr(client, "log_page", page)
    follower = state.JobLog("s")
    assert follower.read() == lines
    lines.extend(["late 1", "late 2"])
    assert follower.read() == ["late 1", "late 2"]
    assert asked == [None, "10000", "12000", "12000", "12002"]


def test_follow_says_status_changes_and_explains_a_long_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    states = iter(["SUBMITTED", "RUNNABLE", "RUNNABLE", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"])
    monkeypatch.setattr(client, "describe_jobs", lambda ids: [{"jobId": ids[0], "status": next(states)}])
    monkeypatch.setattr(
        client, "log_page", lambda stream, token: ([{"message": "work"}], "t") if token is None else ([], "t")
    )
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += 400

    said: list[str] = []
    followed = state.follow(
        "j1", "s", said.append, poll_seconds=1, runnable_warning_seconds=600,
        diagnose_runnable=lambda job: f"why {job.job_id} waits", clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    statuses = [line.split(": ")[1].split(" (")[0] for line in said if line.startswith("job j1:")]
    assert statuses == ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
    assert said.count("why j1 waits") == 1 and "work" in followed.lines
    assert "job j1: RUNNING (2000 s)" in said


def test_retry_rules_retry_host_failures_only() -> None:
    assert spec.retry_strategy(2) == {
        "attempts": 3,
        "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}],
    }
    assert spec.retry_strategy(1, application_errors=True)["evaluateOnExit"] == [
        {"onStatusReason": "Host EC2*", "action": "RETRY"}
    ]


def test_job_spec_checks_what_aws_would_refuse() -> None:
    base: dict[str, Any] = {"name": "n", "queue": "q", "definition_arn": "a", "command": (), "environment": {},
                            "resources": Resources(vcpus=1, memory=512)}  # fmt: skip
    with pytest.raises(RunError, match="minimum of 60 seconds"):
        JobSpec(**base, timeout=30)
    with pytest.raises(RunError, match="between 0 and 9"):
        JobSpec(**base, retries=12)
    assert "timeout" not in JobSpec(**base).submission() and "retryStrategy" not in JobSpec(**base).submission()


def test_out_of_memory_is_recognised_by_exit_code_or_reason() -> None:
    def job(**fields: Any) -> JobState:
        return JobState.of({"jobId": "j", "status": "FAILED", **fields})

    assert job(container={"exitCode": 137}).out_of_memory
    assert job(container={"reason": "OutOfMemoryError: Container killed due to memory usage"}).out_of_memory
    assert not job(container={"exitCode": 1}).out_of_memory
    error = JobFailed.from_job(
        job(jobName="Fit-1", statusReason="Essential container exited",
            container={"exitCode": 1, "reason": "OutOfMemoryError"}), ["a", "b"], 2048,
    )  # fmt: skip
    assert "Fit-1 (j) failed" in error.message and "asked for 2048 MiB" in error.message
    assert "--memory 4096" in error.message and error.hint == "last log lines:\na\nb"


def test_placement_problems_name_the_limits() -> None:
    job = Resources(vcpus=64, memory=65536, gpus=1)
    problems = capacity.placement_problems(job, "q", [_capacity(), _capacity(name="ce2", max_vcpus=8)])
    assert problems == [
        "no compute environment of queue q can give 64 vCPUs; the largest allows 16",
        "no compute environment of queue q can give 65536 MiB of memory; the largest allows 32768",
        "no compute environment of queue q can give 1 GPUs; the largest allows 0",
    ]
    assert (
        capacity.placement_problems(Resources(vcpus=1, memory=1), "q", [_capacity(max_vcpus=None, max_memory=None)])
        == []
    )
    disabled = capacity.placement_problems(job, "q", [_capacity(state="DISABLED", status_reason="by admin")])
    assert disabled == ["no compute environment of queue q is enabled and valid (ce is DISABLED/VALID by admin)"]
    assert capacity.placement_problems(job, "q", []) == ["queue q has no compute environment"]


def test_runnable_diagnosis_describes_the_compute_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "computeEnvironmentName": "spot",
        "state": "ENABLED",
        "status": "INVALID",
        "statusReason": "CLIENT_ERROR - no subnets",
        "computeResources": {"maxvCpus": 16, "instanceTypes": ["c5.xlarge"]},
    }
    monkeypatch.setattr(client, "compute_environments", lambda queue: [environment])
    monkeypatch.setattr(client, "instance_sizes", lambda types: {"c5.xlarge": (4, 8192, 0)})
    stuck = JobState.of(
        {"jobId": "j", "status": "RUNNABLE", "statusReason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"}
    )
    text = capacity.runnable_diagnosis(stuck, Resources(vcpus=32, memory=1024), "q")
    assert text.splitlines()[0] == "job j is still RUNNABLE: MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"
    assert "no compute environment of queue q is enabled and valid" in text
    assert (
        "compute environment spot: ENABLED/INVALID CLIENT_ERROR - no subnets (maxvCpus 16, largest instance 8192 MiB)"
        in text
    )


def test_memory_escalation_is_capped_by_the_queue() -> None:
    assert capacity.escalated_memory(2048, 2, [_capacity(max_memory=16384)]) == 4096
    assert capacity.escalated_memory(8192, 4, [_capacity(max_memory=16384)]) == 16384
    assert capacity.escalated_memory(16384, 2, [_capacity(max_memory=16384)]) is None  # nothing more to be had
    assert capacity.escalated_memory(2048, 2, [_capacity(max_memory=None)]) == 4096


# --- with the client double shipped in the package -------------------------------------------------


def _submit(double: BatchDouble, retries: int = 0) -> str:
    job = JobSpec(name="Fit-1", queue="q", definition_arn="arn:aws:batch:double:job-definition/d:1", command=("x",),
                  environment={}, resources=Resources(vcpus=1, memory=512), retries=retries)  # fmt: skip
    return client.submit_job(**job.submission())


def test_a_host_failure_is_retried_and_followed_to_the_new_attempts_log() -> None:
    """A spot reclaim (status reason `Host EC2...`) is retried by the job's retry strategy; the
    follower says the attempt and streams the new attempt's log, not the lost one's."""
    reclaimed = Attempt(exit_code=1, status_reason="Host EC2 (instance i-1) terminated.", log=("lost work",))
    double = BatchDouble(plan=lambda _s: [reclaimed, Attempt(log=("second try", "done"))])
    said: list[str] = []
    with double.installed():
        job_id = _submit(double, retries=2)
        followed = state.follow(job_id, "unused", said.append, poll_seconds=0, sleep=lambda _s: None)
    assert followed.job.phase is state.JobPhase.SUCCEEDED and followed.job.attempt == 2
    assert followed.lines == ["second try", "done"]
    assert any(line.startswith(f"job {job_id}: RUNNABLE") and "attempt 2/3" in line for line in said)


def test_the_tasks_own_error_ends_the_job_and_its_diagnosis_quotes_the_end_of_its_log() -> None:
    """A non-zero exit of the task is not retried (`onReason *: EXIT`); the failure names the exit
    code and quotes the last lines of a 20,000-line log, read from its end in one request."""
    log = tuple(f"chatty {i}" for i in range(19_999)) + ("ValueError: the real failure",)
    double = BatchDouble(plan=lambda _s: [Attempt(exit_code=3, log=log), Attempt()])
    with double.installed():
        job_id = _submit(double, retries=2)
        while not (job := state.describe_one(job_id, exit_codes=True)).phase.ended:
            pass
        before = len(double.calls)
        lines = state.last_lines(job.stream("d"), 15)
    assert job.failed and job.attempts == 1 and job.exit_code == 3
    assert double.calls[before:] == ["logs:get_log_events"] and lines[-1] == "ValueError: the real failure"
    error = JobFailed.from_job(job, lines, 512)
    assert "exit code 3" in error.message and (error.hint or "").endswith("ValueError: the real failure")


def test_throttled_calls_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled Batch call is waited out and tried again; other errors are a RunError at once."""
    from botocore.exceptions import ClientError

    answers: list[Any] = [ClientError({"Error": {"Code": "TooManyRequestsException"}}, "DescribeJobs"), {"jobs": []}]

    def describe_jobs(**_kw: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(
        client, "_client", lambda service: type("C", (), {"describe_jobs": staticmethod(describe_jobs)})
    )
    monkeypatch.setattr(client.time, "sleep", lambda _s: None)
    assert client.describe_jobs(["j"]) == [] and not answers


def test_an_attempt_under_way_is_not_a_retry() -> None:
    """moto lists the running attempt among `attempts` (AWS lists ended ones): a job on its first
    attempt is on attempt 1 either way; a second attempt starts once the first has stopped."""
    from disdat_luigi.run.batch.state import JobState

    running = {"jobId": "j", "status": "RUNNING", "attempts": [{"startedAt": 1, "container": {"logStreamName": "s"}}]}
    assert JobState.of(running).attempt == 1 and JobState.of(running).log_stream == "s"
    again = {
        **running,
        "attempts": [{"startedAt": 1, "stoppedAt": 2, "statusReason": "Host EC2 lost"}, {"startedAt": 3}],
    }
    assert JobState.of(again).attempt == 2 and JobState.of(again).attempt_reason == "Host EC2 lost"


def test_a_short_log_is_read_in_one_request() -> None:
    """A log shorter than the lines asked for is read whole in one request, not a second to find
    there is nothing before it (executor jobs cost one Logs request each when they end)."""
    double = BatchDouble(plan=lambda _s: [Attempt(exit_code=0, log=("one", "two", "three"))])
    with double.installed():
        job_id = _submit(double, retries=1)
        while not (job := state.describe_one(job_id, exit_codes=True)).phase.ended:
            pass
        before = len(double.calls)
        lines = state.last_lines(job.stream("d"), 15)
    assert lines == ["one", "two", "three"] and double.calls[before:] == ["logs:get_log_events"]
