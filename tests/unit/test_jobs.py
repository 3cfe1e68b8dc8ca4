"""The Batch job layer's logic with stubbed clients (moto neither retries nor keeps jobs
RUNNABLE): batched status polls, logs read on by token, retry rules, RUNNABLE and out-of-memory
diagnosis, memory escalation and its cap."""

from __future__ import annotations

from typing import Any

import pytest

from disdat_luigi.errors import RunError
from disdat_luigi.run import aws, jobs
from disdat_luigi.run.jobs import Capacity, JobSpec, Resources


def _capacity(**fields: Any) -> Capacity:
    base = {"name": "ce", "state": "ENABLED", "status": "VALID", "status_reason": "", "max_vcpus": 16,
            "max_memory": 32768, "max_gpus": 0}  # fmt: skip
    return Capacity(**{**base, **fields})


def test_status_is_asked_for_100_jobs_at_a_time() -> None:
    calls: list[list[str]] = []

    def describe(ids: list[str]) -> list[dict[str, Any]]:
        calls.append(ids)
        return [{"jobId": i, "status": "RUNNING"} for i in ids]

    found = jobs.describe_many([f"j{i}" for i in range(250)], describe)
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

    monkeypatch.setattr(aws, "log_page", page)
    follower = jobs.LogFollower("s")
    assert follower.read() == lines
    lines.extend(["late 1", "late 2"])
    assert follower.read() == ["late 1", "late 2"]
    assert asked == [None, "10000", "12000", "12000", "12002"]


def test_follow_says_status_changes_and_explains_a_long_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    states = iter(["SUBMITTED", "RUNNABLE", "RUNNABLE", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"])
    monkeypatch.setattr(aws, "describe_jobs", lambda ids: [{"jobId": ids[0], "status": next(states)}])
    monkeypatch.setattr(
        aws, "log_page", lambda stream, token: ([{"message": "work"}], "t") if token is None else ([], "t")
    )
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += 400

    said: list[str] = []
    followed = jobs.follow(
        "j1", "s", said.append, poll_seconds=1, runnable_warning_seconds=600,
        diagnose_runnable=lambda job: f"why {job['jobId']} waits", clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    statuses = [line.split(": ")[1].split(" (")[0] for line in said if line.startswith("job j1:")]
    assert statuses == ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
    assert said.count("why j1 waits") == 1 and "work" in followed.lines
    assert "job j1: RUNNING (2000 s)" in said


def test_retry_rules_retry_host_failures_only() -> None:
    assert jobs.retry_strategy(2) == {
        "attempts": 3,
        "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}],
    }
    assert jobs.retry_strategy(1, application_errors=True)["evaluateOnExit"] == [
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
    assert jobs.is_out_of_memory({"container": {"exitCode": 137}})
    assert jobs.is_out_of_memory({"container": {"reason": "OutOfMemoryError: Container killed due to memory usage"}})
    assert not jobs.is_out_of_memory({"container": {"exitCode": 1}})
    error = jobs.failure(
        {"jobId": "j", "jobName": "Fit-1", "statusReason": "Essential container exited",
         "container": {"exitCode": 1, "reason": "OutOfMemoryError"}}, ["a", "b"], 2048,
    )  # fmt: skip
    assert "Fit-1 (j) failed" in error.message and "asked for 2048 MiB" in error.message
    assert "--memory 4096" in error.message and error.hint == "last log lines:\na\nb"


def test_placement_problems_name_the_limits() -> None:
    job = Resources(vcpus=64, memory=65536, gpus=1)
    problems = jobs.placement_problems(job, "q", [_capacity(), _capacity(name="ce2", max_vcpus=8)])
    assert problems == [
        "no compute environment of queue q can give 64 vCPUs; the largest allows 16",
        "no compute environment of queue q can give 65536 MiB of memory; the largest allows 32768",
        "no compute environment of queue q can give 1 GPUs; the largest allows 0",
    ]
    assert (
        jobs.placement_problems(Resources(vcpus=1, memory=1), "q", [_capacity(max_vcpus=None, max_memory=None)]) == []
    )
    disabled = jobs.placement_problems(job, "q", [_capacity(state="DISABLED", status_reason="by admin")])
    assert disabled == ["no compute environment of queue q is enabled and valid (ce is DISABLED/VALID by admin)"]
    assert jobs.placement_problems(job, "q", []) == ["queue q has no compute environment"]


def test_runnable_diagnosis_describes_the_compute_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "computeEnvironmentName": "spot",
        "state": "ENABLED",
        "status": "INVALID",
        "statusReason": "CLIENT_ERROR - no subnets",
        "computeResources": {"maxvCpus": 16, "instanceTypes": ["c5.xlarge"]},
    }
    monkeypatch.setattr(aws, "compute_environments", lambda queue: [environment])
    monkeypatch.setattr(aws, "instance_sizes", lambda types: {"c5.xlarge": (4, 8192, 0)})
    text = jobs.runnable_diagnosis({"jobId": "j", "statusReason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"},
                                   Resources(vcpus=32, memory=1024), "q")  # fmt: skip
    assert text.splitlines()[0] == "job j is still RUNNABLE: MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"
    assert "no compute environment of queue q is enabled and valid" in text
    assert (
        "compute environment spot: ENABLED/INVALID CLIENT_ERROR - no subnets (maxvCpus 16, largest instance 8192 MiB)"
        in text
    )


def test_memory_escalation_is_capped_by_the_queue() -> None:
    assert jobs.escalated_memory(2048, 2, [_capacity(max_memory=16384)]) == 4096
    assert jobs.escalated_memory(8192, 4, [_capacity(max_memory=16384)]) == 16384
    assert jobs.escalated_memory(16384, 2, [_capacity(max_memory=16384)]) is None  # nothing more to be had
    assert jobs.escalated_memory(2048, 2, [_capacity(max_memory=None)]) == 4096
