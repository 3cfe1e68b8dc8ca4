"""The dispatch of an apply's tasks to executors, with the stub executor shipped in the package
and a stubbed AWS: how many are in flight, what a failure stops, how array jobs are formed, the
journal and the container's choice of its task."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import luigi
import pytest

from disdat_luigi.apply import dispatch as dispatch_module
from disdat_luigi.apply import taskspec
from disdat_luigi.apply.dispatch import Dispatcher, Progress
from disdat_luigi.apply.executors import Phase, RemoteTask
from disdat_luigi.apply.options import ApplyOptions
from disdat_luigi.apply.plan import Planner, post_order
from disdat_luigi.apply.taskspec import TaskSpec
from disdat_luigi.cli import container
from disdat_luigi.config import DockerSettings, ExecutorSettings, RunSettings, Settings
from disdat_luigi.errors import TaskSpecRejected
from disdat_luigi.pipe import PipeTask
from disdat_luigi.run import journal
from disdat_luigi.run.batch import capacity, client
from disdat_luigi.run.executors import batch as batch_executor
from disdat_luigi.run.executors import container as container_executor
from disdat_luigi.run.executors.stub import StubExecutor
from disdat_luigi.store.store import LocalStore


class Leaf(PipeTask):
    executor = "far"
    n = luigi.IntParameter()


class Root(PipeTask):
    count = luigi.IntParameter(default=5)

    def pipe_requires(self) -> None:
        for n in range(self.count):
            self.add_dependency(f"leaf_{n}", Leaf, {"n": n})


@pytest.fixture
def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "home")
    context = store.create_context("c")
    context.bind_remote("shared", "s3://bucket/team")
    monkeypatch.setattr(Dispatcher, "_publish", lambda self, uuids: None)
    monkeypatch.setattr(Dispatcher, "_record_remote", lambda self, task, uuid: None)

    def make(count: int, executor: StubExecutor) -> Dispatcher:
        options = ApplyOptions(home=str(tmp_path / "home"), context="c", journal=str(tmp_path / "j"))
        root = Root(count=count, disdat_apply=options.to_json())
        options = ApplyOptions(**{**json.loads(options.to_json()), "root_task_id": root.task_id})
        root = Root(count=count, disdat_apply=options.to_json())
        decisions = {d.task_id: d for d in Planner(options, context).plan(root)}
        return Dispatcher(
            context=context,
            options=options,
            order=post_order(root),
            decisions=decisions,
            make_executor=lambda name, context: executor,
            run_local=lambda task: None,
            log=lambda line: None,
            poll_seconds=0,
        )

    return make


def test_no_more_than_max_concurrent_in_flight(planned) -> None:  # type: ignore[no-untyped-def]
    stub = StubExecutor(name="far", max_concurrent=2)
    dispatcher = planned(7, stub)
    dispatcher.run()
    assert stub.batches[0] == 2 and stub.peak == 2 and sum(stub.batches) == 7
    assert not dispatcher.failures and len(dispatcher.made) == 8  # 7 leaves and the root
    assert [c.__name__ for c in stub.classes] == ["Leaf"]


def test_a_failure_stops_new_work_and_lets_the_rest_finish(planned) -> None:  # type: ignore[no-untyped-def]
    stub = StubExecutor(name="far", max_concurrent=3, fail={"Leaf(n=0)"})
    dispatcher = planned(6, stub)
    dispatcher.run()
    assert [f.label for f in dispatcher.failures] == ["Leaf(n=0)"]
    assert sum(stub.batches) == 3  # the first three were in flight; nothing was handed over after
    assert set(dispatcher.made) == {Leaf(n=1).task_id, Leaf(n=2).task_id}
    counts = dispatcher.progress.counts[("Leaf", "far")]
    assert (counts["done"], counts["failed"], counts["pending"]) == (2, 1, 3)


def test_a_retried_job_is_said_and_counted(planned) -> None:  # type: ignore[no-untyped-def]
    """An executor's retry of a job reaches the user: its note in the log, RETRIED in the table."""
    stub = StubExecutor(name="far", max_concurrent=4, retry={"Leaf(n=1)"})
    lines: list[str] = []
    dispatcher = planned(3, stub)
    dispatcher.log = lines.append
    dispatcher.run()
    assert "[Leaf(n=1)] job stub-2 attempt 2/2: the stub lost its host" in lines
    assert dispatcher.progress.counts[("Leaf", "far")]["retried"] == 1 and not dispatcher.failures


def test_ctrl_c_cancels_what_is_in_flight(planned, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    stub = StubExecutor(name="far", max_concurrent=4)
    lines: list[str] = []
    dispatcher = planned(4, stub)
    dispatcher.log = lines.append

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dispatch_module.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dispatcher.run()
    assert any(line.startswith("interrupted: terminated 4 far job(s): stub-1 (Leaf(n=0))") for line in lines)


def test_the_status_table() -> None:
    """Counts per class and executor; a task whose job is past its first attempt counts once as retried."""
    progress = Progress()
    progress.set(("Fit", "batch"), None, "pending")
    progress.set(("Fit", "batch"), "pending", "running")
    progress.retry(("Fit", "batch"), "Fit_1")
    progress.retry(("Fit", "batch"), "Fit_1")  # its third attempt: still one task retried
    progress.set(("Prep", "local"), None, "reused")
    header, fit, prep = progress.table().splitlines()
    assert header.split() == [
        "TASK", "EXECUTOR", "PENDING", "SUBMITTED", "RUNNING", "RETRIED", "DONE", "REUSED", "FAILED",
    ]  # fmt: skip
    assert fit.split() == ["Fit", "batch", "0", "0", "1", "1", "0", "0", "0"]
    assert prep.split() == ["Prep", "local", "0", "0", "0", "0", "0", "1", "0"]


def _task(n: int, cls: str = "m.Fit", memory: int | None = None) -> RemoteTask:
    return RemoteTask(
        task_id=f"t{n}", label=f"Fit(n={n})", pipe_cls=cls, params={"n": str(n)}, processing_name=f"Fit_{n}",
        output_bundle="Fit", output_uuid=f"u{n}", options={"memory": memory} if memory else {},
    )  # fmt: skip


def test_siblings_become_one_array_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """array_min_size or more tasks of one class and resources: one submit_job with arrayProperties,
    children addressed as JOB:INDEX, the task list stored on the remote; fewer: single jobs."""
    store = LocalStore(tmp_path / "home")
    context = store.create_context("c")
    context.bind_remote("shared", "s3://bucket/team")
    settings = Settings(
        config_path=tmp_path / "cfg", root=tmp_path / "home", docker=DockerSettings(registry="127.0.0.1:5999"),
        run=RunSettings(aws_batch_queue="q"),
    )  # fmt: skip
    submitted: list[dict[str, Any]] = []
    stored: dict[str, bytes] = {}
    monkeypatch.setattr(client, "submit_job", lambda **kw: submitted.append(kw) or f"job{len(submitted)}")
    monkeypatch.setattr(client, "endpoint_environment", lambda: {})
    monkeypatch.setattr(batch_executor.S3, "put_bytes", lambda self, bucket, key, body: stored.update({key: body}))
    batch = batch_executor.BatchExecutor(
        settings=settings, config=ExecutorSettings(name="b", type="aws_batch", array_min_size=3), context=context,
        build=True,
    )  # fmt: skip
    monkeypatch.setattr(batch, "check", lambda request: None)
    monkeypatch.setattr(batch, "job_definition", lambda request, job: {"jobDefinitionArn": "def"})
    batch.images = {"m.Fit": ("disdat-m", "reg/disdat-m:c1"), "m.Other": ("disdat-m", "reg/disdat-m:c1")}
    tasks = [_task(n) for n in range(4)] + [_task(9, "m.Other")] + [_task(7, memory=64)]
    started: list[tuple[RemoteTask, str]] = []
    batch.start(tasks, lambda task, job_id: started.append((task, job_id)))
    array = [s for s in submitted if "arrayProperties" in s]
    assert len(submitted) == 3 and len(array) == 1 and array[0]["arrayProperties"] == {"size": 4}
    assert [job for _t, job in started][:4] == ["job1:0", "job1:1", "job1:2", "job1:3"]
    recorded = {r.job_id: r for r in journal.records(context.path)}  # what dsdt jobs/logs/wait/cancel read
    assert sorted(recorded) == ["job1:0", "job1:1", "job1:2", "job1:3", "job2", "job3"]
    assert recorded["job1:2"].pipe_cls == "m.Fit" and recorded["job2"].output_bundle == "Fit"
    (key,) = stored
    assert key.startswith("team/context/shared/tasks/") and [s["output_uuid"] for s in json.loads(stored[key])] == [
        "u0", "u1", "u2", "u3",
    ]  # fmt: skip
    assert array[0]["containerOverrides"]["command"][-4:] == [
        "--task-spec-url", f"s3://bucket/{key}", "--task-spec-sha256", hashlib.sha256(stored[key]).hexdigest(),
    ]  # fmt: skip
    single = json.loads(submitted[1]["containerOverrides"]["command"][-1])
    assert single["pipe_cls"] == "m.Other" and submitted[1]["tags"]["disdat:identity"] == _task(9, "m.Other").identity
    assert {"type": "MEMORY", "value": "64"} in submitted[2]["containerOverrides"]["resourceRequirements"]
    # a task reading thousands of bundles: its spec goes through the remote, not the submission
    wide = RemoteTask(**{**_task(5).__dict__, "pins": {f"Up_{i}": f"uuid-{i}" for i in range(500)}})
    batch.start([wide], lambda task, job_id: None)
    command = submitted[-1]["containerOverrides"]["command"]
    assert command[-4] == "--task-spec-url" and len(json.dumps(submitted[-1])) < 8192
    stored_spec = json.loads(stored[command[-3].removeprefix("s3://bucket/")])
    assert isinstance(stored_spec, dict) and len(stored_spec["pins"]) == 500


def test_the_job_record_is_shared_and_survives_a_torn_line(tmp_path: Path) -> None:
    """Executor jobs are in the context's one job record, found by the work they do; a line a
    killed writer left half-written is skipped."""
    context = LocalStore(tmp_path / "home").create_context("c")
    record = journal.JobRecord(
        job_id="j", job_name="t", pipe_cls="m.Fit", output_bundle="Fit", queue="", definition="", memory=0,
        submitted=1.0, task="t", executor="b", platform="docker", identity="i", output_uuid="u",
    )  # fmt: skip
    with journal.locked(context.path) as known:
        assert known == []
        journal.remember(context.path, record)
    with open(context.path / journal.JOURNAL, "a") as handle:
        handle.write('{"identity": "i", "job_')  # a writer killed mid-line
    with journal.locked(context.path) as known:
        assert journal.by_identity(known, "b") == {"i": record} and journal.by_identity(known, "other") == {}


def _spec(n: int) -> TaskSpec:
    return TaskSpec(
        pipe_cls="m.Fit", params={"n": str(n)}, output_bundle="Fit", output_uuid=f"0000000{n}-0000-4000-8000-0"
    )


def test_an_array_child_finds_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """An array child picks its spec by its index; a single job's large spec is one object; the
    stored body must have the sha256 the job's command carries."""
    body = taskspec.stored_body([_spec(0), _spec(1), _spec(2)])
    monkeypatch.setattr(container, "_download", lambda url, env: body)
    args = argparse.Namespace(task_spec=None, task_spec_url="s3://b/k.json", task_spec_sha256=taskspec.sha256(body))
    assert container._task_spec(args, {"AWS_BATCH_JOB_ARRAY_INDEX": "2"}) == _spec(2)
    assert container._task_spec(args, {"AWS_BATCH_JOB_ID": "abc:1"}) == _spec(1)
    with pytest.raises(TaskSpecRejected, match="not an array child"):
        container._task_spec(args, {"AWS_BATCH_JOB_ID": "abc"})
    one = taskspec.stored_body([_spec(7)])
    monkeypatch.setattr(container, "_download", lambda url, env: one)
    single = argparse.Namespace(task_spec=None, task_spec_url="s3://b/one.json", task_spec_sha256=taskspec.sha256(one))
    assert container._task_spec(single, {}) == _spec(7)


def test_a_swapped_stored_spec_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer of the bucket replaces a queued job's spec (another class, another output uuid):
    its sha256 is not the one in the job's command, so the container refuses it."""
    submitted = taskspec.stored_body([_spec(1)])
    swapped = taskspec.stored_body([TaskSpec(**{**_spec(1).__dict__, "pipe_cls": "evil.Steal"})])
    monkeypatch.setattr(container, "_download", lambda url, env: swapped)
    args = argparse.Namespace(
        task_spec=None, task_spec_url="s3://b/k.json", task_spec_sha256=taskspec.sha256(submitted)
    )
    with pytest.raises(TaskSpecRejected, match="not the one this job was submitted with"):
        container._task_spec(args, {})
    with pytest.raises(TaskSpecRejected, match="needs --task-spec-sha256"):
        container._task_spec(
            argparse.Namespace(task_spec=None, task_spec_url="s3://b/k.json", task_spec_sha256=None), {}
        )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "is not valid JSON"),
        ("[]", "is a JSON list, not an object"),
        ('{"version": 2}', "has version 2"),
        ('{"version": 1}', "lacks output_bundle, output_uuid, params, pipe_cls"),
        (
            '{"version": 1, "pipe_cls": "m.Fit", "params": {}, "output_bundle": "F", "output_uuid": "../x"}',
            "invalid bundle uuid",
        ),
        (
            '{"version": 1, "pipe_cls": "m.Fit", "params": [], "output_bundle": "F", "output_uuid": "00-0"}',
            "params that are not",
        ),
        (
            '{"version": 1, "pipe_cls": "m.Fit", "params": {}, "output_bundle": "F", "output_uuid": "00-0", "x": 1}',
            "unknown fields: x",
        ),
    ],
)
def test_a_bad_inline_spec_is_one_clear_error(text: str, says: str) -> None:
    args = argparse.Namespace(task_spec=text, task_spec_url=None, task_spec_sha256=None)
    with pytest.raises(TaskSpecRejected, match=says) as raised:
        container._task_spec(args, {})
    assert "\n" not in raised.value.message


def test_a_spec_round_trips() -> None:
    spec = TaskSpec(
        **{**_spec(3).__dict__, "pins": {"Up_x": "0000000a-0000-4000-8000-0"}, "mark_root": True, "code": "c2:ab"}
    )
    assert TaskSpec.from_json(spec.to_json(), "here") == spec


def test_prepare_checks_images_and_placement_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each module's image is refreshed (pushed for Batch) once, and each class's resources are
    checked against the queue: an impossible one is refused before any task runs."""
    from disdat_luigi.errors import RunError

    context = LocalStore(tmp_path / "home").create_context("c")
    settings = Settings(config_path=tmp_path / "cfg", root=tmp_path / "home", run=RunSettings(aws_batch_queue="q"))
    refreshed: list[tuple[str, bool]] = []
    monkeypatch.setattr(container_executor, "find_pipe_root", lambda module, configured: tmp_path)
    monkeypatch.setattr(
        container_executor, "refresh_image", lambda cls, root, **kw: refreshed.append((cls, kw["push"]))
    )
    batch = batch_executor.BatchExecutor(
        settings=settings, config=ExecutorSettings(name="b", type="aws_batch"), context=context, build=True
    )
    monkeypatch.setattr(batch, "image_reference", lambda name: f"reg/{name}:c1")
    asked: list[int] = []

    def check(request: Any) -> None:
        asked.append(request.memory)
        if request.memory > 4096:
            raise RunError("no compute environment of queue q can give 8192 MiB")

    monkeypatch.setattr(batch, "check", check)

    class Big(Leaf):
        executor_options = {"memory": 8192}

    said: list[str] = []
    batch.prepare([Leaf, Root], said.append)
    assert refreshed == [(f"{Leaf.__module__}.Leaf", True)] and asked == [2048]
    assert batch.images[f"{Leaf.__module__}.Root"][1].startswith("reg/disdat-")
    assert said == [
        "warning: [executor.b] has neither job_role_arn nor use_aws_session_token: its jobs need AWS "
        "credentials from their instance to reach the remote"
    ]
    refreshed.clear()
    with pytest.raises(RunError, match="8192 MiB"):
        batch.prepare([Big], print)
    assert refreshed == []  # refused before any image is built or pushed


def test_a_missing_queue_is_named_by_the_setting_that_gave_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An executor's own queue that does not exist: the hint names [executor.NAME] queue, and
    nothing is built; no queue at all: said before anything is built."""
    from disdat_luigi.errors import QueueNotFound, RunError

    context = LocalStore(tmp_path / "home").create_context("c")
    settings = Settings(config_path=tmp_path / "cfg", root=tmp_path / "home")
    monkeypatch.setattr(container_executor, "refresh_image", lambda *a, **kw: pytest.fail("built before the checks"))

    def missing(queue: str) -> None:
        raise QueueNotFound(f"AWS Batch job queue {queue!r} does not exist")

    monkeypatch.setattr(capacity, "capacities", missing)
    noqueue = ExecutorSettings(name="noqueue", type="aws_batch", queue="nope", job_role_arn="arn:aws:iam::1:role/r")
    batch = batch_executor.BatchExecutor(settings=settings, config=noqueue, context=context, build=True)
    with pytest.raises(QueueNotFound, match="'nope' does not exist") as refused:
        batch.prepare([Leaf], print)
    assert refused.value.hint == "fix [executor.noqueue] queue: name an existing AWS Batch job queue"
    unset = ExecutorSettings(name="farm", type="aws_batch", job_role_arn="arn:aws:iam::1:role/r")
    batch = batch_executor.BatchExecutor(settings=settings, config=unset, context=context, build=True)
    with pytest.raises(RunError, match="executor 'farm' \\(aws_batch\\) has no job queue"):
        batch.prepare([Leaf], print)


def test_array_children_are_polled_through_their_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One describe per array per poll; children listed only for the statuses whose counts moved;
    each ended child described once."""
    context = LocalStore(tmp_path / "home").create_context("c")
    settings = Settings(config_path=tmp_path / "cfg", root=tmp_path / "home", run=RunSettings(aws_batch_queue="q"))
    batch = batch_executor.BatchExecutor(
        settings=settings, config=ExecutorSettings(name="b", type="aws_batch"), context=context, build=True
    )
    summary = {"RUNNING": 0, "SUCCEEDED": 0, "FAILED": 0, "RUNNABLE": 3}
    by_status: dict[str, list[str]] = {"RUNNING": [], "SUCCEEDED": [], "FAILED": []}
    described: list[list[str]] = []
    listed: list[str] = []

    def describe(ids: list[str]) -> list[dict[str, Any]]:
        described.append(ids)
        return [
            {"jobId": i, "status": "PENDING", "arrayProperties": {"statusSummary": dict(summary)}}
            if ":" not in i
            else {"jobId": i, "status": "SUCCEEDED" if i in by_status["SUCCEEDED"] else "FAILED"}
            for i in ids
        ]

    monkeypatch.setattr(client, "describe_jobs", describe)

    def list_jobs(arrayJobId: str, jobStatus: str) -> list[dict[str, str]]:
        listed.append(jobStatus)
        return [{"jobId": i} for i in by_status[jobStatus]]

    monkeypatch.setattr(client, "list_jobs", list_jobs)
    ids = ["p:0", "p:1", "p:2"]
    assert set(batch.phases(ids).values()) == {Phase.SUBMITTED} and described == [["p"]] and listed == []
    summary.update(RUNNING=2, RUNNABLE=1)
    by_status["RUNNING"] = ["p:0", "p:1"]
    assert batch.phases(ids) == {"p:0": Phase.RUNNING, "p:1": Phase.RUNNING, "p:2": Phase.SUBMITTED}
    assert listed == ["RUNNING"]
    summary.update(RUNNING=1, SUCCEEDED=1, FAILED=1, RUNNABLE=0)
    by_status.update(RUNNING=["p:1"], SUCCEEDED=["p:0"], FAILED=["p:2"])
    listed.clear()
    assert batch.phases(ids) == {"p:0": Phase.DONE, "p:1": Phase.RUNNING, "p:2": Phase.FAILED}
    assert sorted(listed) == ["FAILED", "RUNNING", "SUCCEEDED"] and described[-1] == ["p:0", "p:2"]
    assert set(batch.described) == {"p:0", "p:2"}  # kept for their diagnosis and log
