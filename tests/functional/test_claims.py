"""Claims on the remote (moto server S3, which enforces If-None-Match and If-Match): each state
change, each take-over case, renewal, and two claimants racing for the same work."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.apply.executors import Phase, RemoteTask
from disdat_luigi.config import RemoteSettings
from disdat_luigi.run import journal
from disdat_luigi.run.claims import RECHECK_SECONDS, TTL, TaskClaims
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.claims import Claim, ClaimState, ClaimStore, Conflict, Versioned
from disdat_luigi.store.remote.s3 import S3

UP = "11111111-1111-4111-8111-111111111111"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class World:
    """What the claims read about jobs and bundles: Batch's answers and the remote's bundles."""

    def __init__(self) -> None:
        self.jobs: dict[str, Phase] = {}
        self.bundles: set[str] = set()

    def phases(self, job_ids: list[str]) -> dict[str, Phase | None]:
        return {j: self.jobs.get(j) for j in job_ids}

    def bundle_ready(self, _task: RemoteTask, _job_id: str, uuid: str) -> bool:
        return uuid in self.bundles


@pytest.fixture
def store(bucket: str) -> ClaimStore:
    return ClaimStore(S3(RemoteSettings()), RemoteLocation.parse(f"s3://{bucket}/team", "shared"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world() -> World:
    return World()


def claims(store: ClaimStore, world: World, clock: Clock, name: str, log: list[str] | None = None) -> TaskClaims:
    return TaskClaims(
        store=store,
        claimant=name,
        phases=world.phases,  # type: ignore[arg-type]
        bundle_ready=world.bundle_ready,
        log=(log if log is not None else []).append,
        clock=clock,
    )


def task(n: int = 0, output: str = "") -> RemoteTask:
    return RemoteTask(
        task_id=f"Fit_{n}",
        label=f"Fit(n={n})",
        pipe_cls="ml.Fit",
        params={"n": str(n)},
        processing_name=f"Fit_{n:032d}",
        output_bundle="Fit",
        output_uuid=output or f"00000000-0000-4000-8000-{n:012d}",
        pins={"Clean_x": UP},
    )


def body(store: ClaimStore, t: RemoteTask) -> dict:  # type: ignore[type-arg]
    key = store.location.claim_key(t.identity)
    return json.loads(boto3.client("s3").get_object(Bucket=store.location.bucket, Key=key)["Body"].read())


@pytest.fixture
def requests(store: ClaimStore) -> Iterator[list[str]]:
    """The S3 requests this process sends (counted on the real client, before they go)."""
    seen: list[str] = []

    def count(model, **_kwargs):  # type: ignore[no-untyped-def]
        seen.append(model.name)

    events = store.s3.client.meta.events
    events.register("before-call.s3", count)
    yield seen
    events.unregister("before-call.s3", count)


def test_pending_then_submitted_in_two_writes(store: ClaimStore, world: World, clock: Clock, requests) -> None:  # type: ignore[no-untyped-def]
    """A new claim is written create-only as pending (with its expiry, bundle, inputs and task),
    then as submitted with its job id: two requests for the task, nothing read."""
    a = claims(store, world, clock, "A")
    t = task()
    sorting = a.sort([t])
    assert sorting.submit == [t] and not sorting.follow
    pending = body(store, t)
    assert pending == {
        "version": 1,
        "state": "pending",
        "claimant": "A",
        "expires": clock.now + TTL,
        "job_id": "",
        "bundle": t.output_uuid,
        "inputs": [UP],
        "task": "Fit(n=0)",
    }
    a.submitted(t, "job-1")
    assert body(store, t)["state"] == "submitted" and body(store, t)["job_id"] == "job-1"
    assert requests == ["PutObject", "PutObject"]
    assert store.location.claim_key(t.identity) == f"team/context/shared/claims/{t.identity}.json"


def test_conditional_writes_answer_conflict_not_an_error(store: ClaimStore) -> None:
    """S3's 412 on a create of an existing claim and on a stale ETag is a Conflict outcome."""
    claim = Claim(state=ClaimState.PENDING, claimant="A", expires=1.0)
    first = store.create("d" * 32, claim)
    assert isinstance(first, Versioned)
    assert isinstance(store.create("d" * 32, claim), Conflict)
    second = store.replace("d" * 32, replace(claim, state=ClaimState.SUBMITTED, job_id="j"), first.etag)
    assert isinstance(second, Versioned) and second.etag
    assert isinstance(store.replace("d" * 32, claim, first.etag), Conflict)  # the old ETag no longer matches


def test_a_submitted_claim_is_followed(store: ClaimStore, world: World, clock: Clock) -> None:
    """Another apply needing the same work follows the job, reading the claimant's bundle uuid."""
    t = task()
    a = claims(store, world, clock, "A")
    a.sort([t])
    a.submitted(t, "job-1")
    world.jobs["job-1"] = Phase.RUNNING
    log: list[str] = []
    b = claims(store, world, clock, "B", log)
    mine = task(output="99999999-9999-4999-8999-999999999999")  # B planned its own uuid
    sorting = b.sort([mine])
    assert not sorting.submit and len(sorting.follow) == 1
    followed = sorting.follow[0]
    assert (followed.job_id, followed.bundle, followed.phase) == ("job-1", t.output_uuid, Phase.RUNNING)
    assert body(store, t)["claimant"] == "A"


def test_a_live_pending_claim_is_waited_for_then_followed(store: ClaimStore, world: World, clock: Clock) -> None:
    """B finds A's claim pending (A is submitting): it waits, and follows A's job once submitted."""
    t = task()
    a = claims(store, world, clock, "A")
    a.sort([t])
    log: list[str] = []
    b = claims(store, world, clock, "B", log)
    sorting = b.sort([t])
    assert not sorting.submit and not sorting.follow and list(b.waiting) == [t.identity]
    assert log == ["Fit(n=0): claimed by A, which is submitting it; waiting for its job"]
    a.submitted(t, "job-1")
    world.jobs["job-1"] = Phase.SUBMITTED
    clock.now += RECHECK_SECONDS
    again = b.recheck()
    assert [f.job_id for f in again.follow] == ["job-1"] and not b.waiting


def test_an_expired_pending_claim_is_taken_over(store: ClaimStore, world: World, clock: Clock) -> None:
    """A died before submitting: once its claim expired, B takes it over; A's late write loses."""
    t = task()
    a_log: list[str] = []
    a = claims(store, world, clock, "A", a_log)
    a.sort([t])
    clock.now += TTL + 1
    log: list[str] = []
    b = claims(store, world, clock, "B", log)
    assert b.sort([t]).submit == [t]
    assert body(store, t)["claimant"] == "B" and body(store, t)["state"] == "pending"
    assert log == ["Fit(n=0): took over its claim (A held it pending past its expiry)"]
    a.submitted(t, "job-late")  # A was only slow: its write over its old ETag fails, B's claim stays
    assert body(store, t)["claimant"] == "B" and "taken over" in a_log[-1]


@pytest.mark.parametrize(
    ("phase", "reason"),
    [(Phase.FAILED, "job job-1 failed"), (None, "job job-1 is unknown to Batch")],
)
def test_a_submitted_claim_whose_job_failed_or_is_unknown_is_taken_over(  # type: ignore[no-untyped-def]
    store: ClaimStore, world: World, clock: Clock, phase, reason
) -> None:
    t = task()
    a = claims(store, world, clock, "A")
    a.sort([t])
    a.submitted(t, "job-1")
    if phase is not None:
        world.jobs["job-1"] = phase
    log: list[str] = []
    b = claims(store, world, clock, "B", log)
    assert b.sort([t]).submit == [t]
    b.submitted(t, "job-2")
    assert (body(store, t)["claimant"], body(store, t)["job_id"]) == ("B", "job-2")
    assert log == [f"Fit(n=0): took over its claim ({reason})"]


def test_a_succeeded_job_is_recorded_done_and_a_done_claim_whose_bundle_is_gone_is_taken_over(
    store: ClaimStore, world: World, clock: Clock
) -> None:
    """B finds A's job succeeded with its bundle on the remote: it uses that bundle and records
    the claim done; once the bundle is gone, C takes the done claim over."""
    t = task()
    a = claims(store, world, clock, "A")
    a.sort([t])
    a.submitted(t, "job-1")
    world.jobs["job-1"] = Phase.DONE
    world.bundles.add(t.output_uuid)
    sorting = claims(store, world, clock, "B").sort([t])
    assert [(f.phase, f.bundle) for f in sorting.follow] == [(Phase.DONE, t.output_uuid)] and not sorting.submit
    assert body(store, t)["state"] == "done" and body(store, t)["bundle"] == t.output_uuid
    # a done claim is used as long as its bundle is there, whatever Batch says of the job
    del world.jobs["job-1"]
    assert [f.phase for f in claims(store, world, clock, "B2").sort([t]).follow] == [Phase.DONE]
    world.bundles.clear()
    log: list[str] = []
    assert claims(store, world, clock, "C", log).sort([t]).submit == [t]
    assert log == [f"Fit(n=0): took over its claim (the bundle {t.output_uuid} of job job-1 is gone)"]


def test_an_unknown_job_whose_bundle_is_there_counts_as_done(store: ClaimStore, world: World, clock: Clock) -> None:
    """Batch forgets old jobs: a submitted claim whose job it no longer knows but whose bundle
    is on the remote is used, not run again."""
    t = task()
    a = claims(store, world, clock, "A")
    a.sort([t])
    a.submitted(t, "job-old")
    world.bundles.add(t.output_uuid)
    sorting = claims(store, world, clock, "B").sort([t])
    assert [f.phase for f in sorting.follow] == [Phase.DONE] and body(store, t)["state"] == "done"


def test_an_unreadable_claim_is_taken_over(store: ClaimStore, world: World, clock: Clock) -> None:
    """A damaged or planted claim body protects nothing: it is replaced (over its ETag)."""
    t = task()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=store.location.bucket, Key=store.location.claim_key(t.identity), Body=b"{not json")
    log: list[str] = []
    assert claims(store, world, clock, "B", log).sort([t]).submit == [t]
    assert body(store, t)["claimant"] == "B" and log == ["Fit(n=0): took over its claim (it was unreadable)"]


def test_renewal_pushes_back_the_expiry_of_working_claims_only(store: ClaimStore, world: World, clock: Clock) -> None:
    """Claims are renewed once half their time is gone, only while their job works; a claim
    taken over meanwhile is let go (and said so)."""
    t0, t1 = task(0), task(1)
    log: list[str] = []
    a = claims(store, world, clock, "A", log)
    a.sort([t0, t1])
    a.submitted(t0, "job-0")
    a.submitted(t1, "job-1")
    first = body(store, t0)["expires"]
    clock.now += TTL / 4
    a.renew({t0.identity, t1.identity})
    assert body(store, t0)["expires"] == first  # not yet due: nothing written
    clock.now += TTL / 2
    a.renew({t0.identity})  # t1's job ended: its claim stays as it was
    assert body(store, t0)["expires"] == clock.now + TTL and body(store, t1)["expires"] == first
    assert body(store, t0)["state"] == "submitted" and body(store, t0)["job_id"] == "job-0"
    # someone replaced the claim (past its expiry, say): the next renewal loses and lets it go
    key = store.location.claim_key(t0.identity)
    boto3.client("s3").put_object(Bucket=store.location.bucket, Key=key, Body=b"{}")
    clock.now += TTL
    a.renew({t0.identity})
    assert log == ["Fit(n=0): its claim was taken over by another apply"] and not a.held


def test_two_claimants_racing_exactly_one_wins(store: ClaimStore, world: World) -> None:
    """Two applies claim the same 20 tasks at the same moment: each task is submitted by exactly
    one of them, the other waits for it."""
    tasks = [task(n) for n in range(20)]
    clock = Clock()
    racers = [claims(store, world, clock, name) for name in ("A", "B")]
    results: dict[int, list[RemoteTask]] = {}
    barrier = threading.Barrier(2)

    def race(i: int) -> None:
        barrier.wait()
        results[i] = racers[i].sort(tasks).submit

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [t.identity for r in results.values() for t in r]
    assert sorted(won) == sorted(t.identity for t in tasks)  # every task once, none twice
    for i, racer in enumerate(racers):
        assert set(racer.waiting) == {t.identity for t in tasks} - {t.identity for t in results[i]}


def test_two_take_overs_racing_exactly_one_wins(store: ClaimStore, world: World, clock: Clock) -> None:
    """An expired claim found by two applies at once is taken over by one; the other waits."""
    tasks = [task(n) for n in range(10)]
    claims(store, world, clock, "dead").sort(tasks)
    clock.now += TTL + 1
    racers = [claims(store, world, clock, name) for name in ("A", "B")]
    results: dict[int, list[RemoteTask]] = {}
    barrier = threading.Barrier(2)

    def race(i: int) -> None:
        barrier.wait()
        results[i] = racers[i].sort(tasks).submit

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = sorted(t.identity for r in results.values() for t in r)
    assert won == sorted(t.identity for t in tasks)
    assert {body(store, t)["claimant"] for t in tasks} <= {"A", "B"}


def test_verify_leaves_the_job_record_lock_alone(ctx: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`dsdt verify` never takes the job record's lock for a crash leftover: while one apply
    holds it, verify removes nothing and a second apply is still kept out; after, verify still
    counts no leftover."""
    context = api._context(ctx)
    with journal.locked(context.path):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from pathlib import Path\n"
            "from disdat_luigi.run import journal\n"
            f"with journal.locked(Path({str(context.path)!r})):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        checked = dsdt("verify")
        assert checked.code == 0 and "0 crash leftover(s) removed" in checked.out, checked.out + checked.err
        with open(context.path / journal.JOURNAL, "a+") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held by the first apply
    finally:
        holder.kill()
        holder.wait()
    after = dsdt("verify")
    assert after.code == 0 and "0 crash leftover(s) removed" in after.out, after.out
    assert (context.path / journal.JOURNAL).exists()


def test_a_failed_submission_keeps_the_job_already_started_claimed(  # type: ignore[no-untyped-def]
    remote_ctx: str, bucket: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second submit_job of a batch fails: the first job is tracked (Ctrl-C knows it) and its
    claim on the remote names it (any later apply follows it); the error reaches the caller."""
    from disdat_luigi.config import ExecutorSettings, RunSettings, Settings
    from disdat_luigi.errors import RunError
    from disdat_luigi.run.batch import client
    from disdat_luigi.run.executors.batch import BatchExecutor

    context = api._context(remote_ctx)
    settings = Settings(config_path=tmp_path / "cfg", root=context.path.parent, run=RunSettings(aws_batch_queue="q"))
    calls: list[int] = []

    def submit(**kwargs: object) -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RunError("submit_job failed: throttled")
        return "job-1"

    monkeypatch.setattr(client, "submit_job", submit)
    batch = BatchExecutor(
        settings=settings, config=ExecutorSettings(name="b", type="aws_batch"), context=context, build=True
    )
    monkeypatch.setattr(batch, "job_definition", lambda request, job: {"jobDefinitionArn": "def"})
    batch.images = {"ml.Fit": ("disdat-ml", "reg/disdat-ml:c1")}
    with pytest.raises(RunError, match="throttled"):
        batch.submit([task(1), task(2)])
    assert list(batch.tracked) == ["job-1"]
    store = batch.claims.store
    assert (body(store, task(1))["state"], body(store, task(1))["job_id"]) == ("submitted", "job-1")
    left = body(store, task(2))
    assert left["state"] == "pending" and left["expires"] == 0  # let go: the next apply takes it over at once
    log: list[str] = []
    assert claims(store, World(), Clock(), "next", log).sort([task(2)]).submit == [task(2)]
    assert log == ["Fit(n=2): took over its claim (" + left["claimant"] + " held it pending past its expiry)"]


def test_ctrl_c_stops_only_the_jobs_this_apply_submitted(  # type: ignore[no-untyped-def]
    remote_ctx: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of the jobs an apply tracks, Ctrl-C terminates the ones it submitted; a job it follows for
    another apply goes on (that apply still needs it)."""
    from disdat_luigi.config import ExecutorSettings, RunSettings, Settings
    from disdat_luigi.run.batch import client
    from disdat_luigi.run.executors.batch import BatchExecutor

    context = api._context(remote_ctx)
    settings = Settings(config_path=tmp_path / "cfg", root=context.path.parent, run=RunSettings(aws_batch_queue="q"))
    monkeypatch.setattr(client, "submit_job", lambda **kwargs: "job-mine")
    terminated: list[str] = []
    monkeypatch.setattr(client, "terminate_job", lambda job_id, reason: terminated.append(job_id))
    other = claims(ClaimStore(S3(RemoteSettings()), RemoteLocation.of(context)), World(), Clock(), "other")
    theirs = task(1)
    other.sort([theirs])
    other.submitted(theirs, "job-theirs")
    batch = BatchExecutor(
        settings=settings, config=ExecutorSettings(name="b", type="aws_batch"), context=context, build=True
    )
    monkeypatch.setattr(batch, "phases", lambda ids: dict.fromkeys(ids, Phase.RUNNING))
    monkeypatch.setattr(batch, "job_definition", lambda request, job: {"jobDefinitionArn": "def"})
    batch.images = {"ml.Fit": ("disdat-ml", "reg/disdat-ml:c1")}
    said: list[str] = []
    batch.log = said.append
    updates = batch.submit([task(0), theirs])
    assert sorted((u.task_id, u.job_id) for u in updates) == [("Fit_0", "job-mine"), ("Fit_1", "job-theirs")]
    assert "Fit(n=1): attached to job job-theirs, already doing this work" in said
    assert batch.in_flight == 2
    assert batch.cancel() == ["job-mine (Fit(n=0))"] and terminated == ["job-mine"]
