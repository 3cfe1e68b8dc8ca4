"""A remote gc and another store's push racing, each race made deterministic by pausing gc at the
moment that matters (a patched method runs the other store's step there): a `push -d` whose hold
lands late, a push resumed past the grace period finishing while gc runs, a catalog entry written
between gc's listings. Also planted gc notices and deeply nested JSON, which gc and push survive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.apply.executors import RemoteTask
from disdat_luigi.config import RemoteSettings
from disdat_luigi.errors import GcInProgress
from disdat_luigi.run.claims import TaskClaims
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.manifest import MANIFEST_NAME
from disdat_luigi.store.remote import notices as notices_module
from disdat_luigi.store.remote.claims import Claim, ClaimStore
from disdat_luigi.store.remote.gc import RemoteCollector
from disdat_luigi.store.remote.holds import RemoteGuards
from disdat_luigi.store.remote.notices import GcNotices
from disdat_luigi.store.remote.s3 import S3
from disdat_luigi.store.remote.sync import RemoteSync

ROOT = "team/context/shared/"


@pytest.fixture
def laptop(remote_ctx: str, bucket: str) -> str:
    """A second store (context) sharing the remote."""
    api.context("laptop")
    api.remote("laptop", "shared", f"s3://{bucket}/team")
    return "laptop"


@pytest.fixture
def quick_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A push waiting for a gc polls every 0.05 s and gives up after 3 s."""
    monkeypatch.setattr(notices_module, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(notices_module, "MAX_WAIT", 3.0)


def _bundle(ctx: str, name: str, files: int = 1, size: int = 2000, seed: int = 0) -> str:
    """A committed bundle of `files` files; its uuid."""
    with api.Bundle(ctx, name=name) as bundle:
        paths = []
        for j in range(files):
            path = Path(bundle.get_file(f"f{j}.bin"))
            path.write_bytes(bytes([(seed + j) % 256]) * size)
            paths.append(str(path))
        bundle.add_data(paths)
    return bundle.commit().uuid


def _keys(bucket: str, under: str = "") -> list[str]:
    listed = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=ROOT + under)
    return [o["Key"][len(ROOT) :] for page in listed for o in page.get("Contents", [])]


def _once(step: Callable[[], None]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a method so that `step` runs right before its first call."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        ran: list[bool] = []

        def patched(*args: Any, **kwargs: Any) -> Any:
            if not ran:
                ran.append(True)
                step()
            return original(*args, **kwargs)

        return patched

    return wrap


@pytest.fixture
def grace_of_a_second(disdat_env: Path) -> Iterator[None]:
    """[gc] grace_hours of about a second, so files of a dead push are past it after a short sleep."""
    config = disdat_env / "config" / "disdat.cfg"
    head, _, tail = config.read_text().partition("[gc]\n")
    rest = tail[tail.find("\n[") :] if "\n[" in tail else ""
    config.write_text(f"{head}[gc]\ngrace_hours = 0.0003\n{rest}")
    yield


# --- push -d racing gc ---------------------------------------------------------------------------


def _old_version_elsewhere(remote_ctx: str, laptop: str) -> str:
    """The laptop pushes version 1 of `model` (keeping its files); this store pushes two newer
    versions, so gc --keep-last 1 plans to reclaim the laptop's. Its uuid."""
    old = _bundle(laptop, "model", seed=7)
    api.push(laptop, uuid=old)
    for i in range(2):
        _bundle(remote_ctx, "model", seed=i)
    api.push(remote_ctx)
    return old


def test_push_d_whose_hold_lands_after_gc_read_holds_keeps_its_files(
    dsdt, remote_ctx: str, laptop: str, bucket: str
) -> None:  # type: ignore[no-untyped-def]
    """The laptop runs `dsdt push -d` of a bundle gc is reclaiming, its hold written after gc
    looked at holds and at its notice: the push sees gc's notice, keeps the local files and says
    so; gc reclaims the remote copy; the laptop's bundle stays whole (verify clean)."""
    old = _old_version_elsewhere(remote_ctx, laptop)
    seen: list[Any] = []

    def push_d() -> None:
        dsdt("switch", laptop)
        seen.append(dsdt("push", "-d", "-u", old))

    # live_intents: after gc listed holds (and, with the fix, after it wrote its notice), before it deletes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RemoteGuards, "live_intents", _once(push_d)(RemoteGuards.live_intents))
        result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    (pushed,) = seen
    assert pushed.code == 0, pushed.err
    assert f"kept the local files of model {old}: a remote gc is reclaiming it (its notice: s3://" in pushed.out
    assert "/gc/" in pushed.out.split("its notice: ")[1]  # the notice's own key, to look at or wait for
    assert "dropped the local files" not in pushed.out
    assert old in result.reclaimed
    report = dsdt("verify")
    assert report.code == 0 and "DAMAGED" not in report.out, report.out
    assert api.verify(laptop).ok
    assert Path(api.get(laptop, "model").data[0]).read_bytes() == bytes([7]) * 2000
    assert not _keys(bucket, "holds/")  # its hold was released


def test_push_d_whose_hold_lands_before_the_notice_keeps_the_bundle(remote_ctx: str, laptop: str) -> None:
    """The laptop's hold lands after gc's first look at holds but before its notice: the laptop
    sees no notice and drops its files, and gc, looking at holds again after its notice, keeps
    the bundle, which the laptop then reads back from the remote."""
    old = _old_version_elsewhere(remote_ctx, laptop)
    pushed: list[Any] = []

    def push_d() -> None:
        pushed.append(api.push(laptop, uuid=old, delocalize=True))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GcNotices, "post", _once(push_d)(GcNotices.post))
        result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert pushed[0].delocalized == [old] and not pushed[0].kept_local
    assert old not in result.reclaimed
    reasons = {v.candidate.uuid: v.reason for v in result.plan.verdicts}
    assert "held by" in str(reasons[old])
    api.pull(laptop, uuid=old, localize=True)
    assert Path(api.get(laptop, "model").data[0]).read_bytes() == bytes([7]) * 2000
    assert api.verify(laptop).ok


def test_push_d_of_several_bundles_with_gc_done_before_a_hold_keeps_its_files(
    dsdt, remote_ctx: str, laptop: str, bucket: str
) -> None:  # type: ignore[no-untyped-def]
    """The laptop runs `dsdt push -d` of two bundles while gc reclaims one of them, gc done
    (remote copy deleted, notice withdrawn) just before the laptop's hold on it lands: push -d
    drops nothing of it and says it is not on the remote; the laptop's bundle stays whole."""
    old = _old_version_elsewhere(remote_ctx, laptop)
    _bundle(laptop, "other", seed=9)
    api.push(laptop)
    gc_results: list[Any] = []
    original = RemoteGuards.hold

    def hold(self: RemoteGuards, uuid: str, store: str) -> None:
        if uuid == old and not gc_results:
            gc_results.append(api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False))
        original(self, uuid, store)

    dsdt("switch", laptop)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RemoteGuards, "hold", hold)
        pushed = dsdt("push", "-d")
    assert old in gc_results[0].reclaimed
    assert pushed.code != 0
    assert f"bundle model {old} is not on the remote; push it first" in pushed.err
    assert api.verify(laptop).ok
    assert Path(api.get(laptop, "model").data[0]).read_bytes() == bytes([7]) * 2000
    assert not _keys(bucket, "holds/")  # nothing dropped: nothing held


def test_failed_push_d_keeps_the_hold_of_a_bundle_already_only_on_the_remote(remote_ctx: str, bucket: str) -> None:
    """A bundle whose files this store already dropped stays held when a later `push -d` of it
    with another bundle fails on the other one: a remote gc keeps its only copy."""
    from disdat_luigi.errors import TransferError

    gone = _bundle(remote_ctx, "gone", seed=3)
    api.push(remote_ctx, uuid=gone, delocalize=True)
    _bundle(remote_ctx, "gone", seed=5)  # a newer version: gc --keep-last 1 would reclaim `gone`
    broken = _bundle(remote_ctx, "broken", seed=4)
    api.push(remote_ctx)
    (damaged,) = [k for k in _keys(bucket, f"objects/{broken}/") if not k.endswith(MANIFEST_NAME)]
    boto3.client("s3").delete_object(Bucket=bucket, Key=ROOT + damaged)
    with pytest.raises(TransferError, match="missing or incomplete"):
        api.push(remote_ctx, delocalize=True)
    assert [k.split("/")[1] for k in _keys(bucket, "holds/")] == [gone]
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert gone not in result.reclaimed
    api.pull(remote_ctx, uuid=gone, localize=True)
    assert Path(api.get(remote_ctx, None, uuid=gone).data[0]).read_bytes() == bytes([3]) * 2000


# --- a job claiming its input racing gc ----------------------------------------------------------


def _job_claims(bucket: str, log: list[str]) -> tuple[TaskClaims, RemoteTask]:
    """A Batch apply's claims on the shared remote (wired as the Batch executor wires them)."""
    s3 = S3(RemoteSettings())
    location = RemoteLocation.parse(f"s3://{bucket}/team", "shared")
    notices = GcNotices(s3, location)
    claims = TaskClaims(
        store=ClaimStore(s3, location),
        claimant="apply-b",
        phases=lambda jobs: {},
        bundle_ready=lambda task, job, uuid: False,
        log=log.append,
        reclaimers=lambda uuids: notices.reclaimers(uuids, time.time()),
    )
    return claims, RemoteTask(
        task_id="Fit_1",
        label="Fit(n=1)",
        pipe_cls="ml.Fit",
        params={"n": "1"},
        processing_name="Fit_1",
        output_bundle="Fit",
        output_uuid="00000000-0000-4000-8000-000000000001",
    )


def _two_versions(ctx: str) -> str:
    """Two pushed versions of `data`; the older one's uuid (gc --keep-last 1 reclaims it)."""
    old = _bundle(ctx, "data", seed=1)
    _bundle(ctx, "data", seed=2)
    api.push(ctx)
    return old


def test_job_claiming_an_input_before_gc_notice_keeps_it(remote_ctx: str, bucket: str) -> None:
    """A job claims bundle V as its input after gc read claims but before gc posts its notice:
    the job sees no notice and is submitted, and gc, reading claims again after its notice,
    keeps V."""
    old = _two_versions(remote_ctx)
    claims, job = _job_claims(bucket, [])
    job = RemoteTask(**{**job.__dict__, "pins": {"data": old}})
    submitted: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GcNotices, "post", _once(lambda: submitted.append(claims.sort([job])))(GcNotices.post))
        result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert submitted[0].submit == [job]
    assert old not in result.reclaimed
    reasons = {v.candidate.uuid: v.reason for v in result.plan.verdicts}
    assert "live claim" in str(reasons[old])
    assert f"objects/{old}/{MANIFEST_NAME}" in _keys(bucket, "objects/")


def test_job_claiming_an_input_after_gc_notice_is_not_submitted(remote_ctx: str, bucket: str) -> None:
    """A job claims bundle V as its input after gc posted its notice reclaiming V: the job reads
    the notice, releases its claim and fails with an error naming V and the notice; gc reclaims V."""
    old = _two_versions(remote_ctx)
    claims, job = _job_claims(bucket, [])
    job = RemoteTask(**{**job.__dict__, "pins": {"data": old}})
    failed: list[GcInProgress] = []

    def claim() -> None:
        with pytest.raises(GcInProgress) as err:
            claims.sort([job])
        failed.append(err.value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RemoteGuards, "live_intents", _once(claim)(RemoteGuards.live_intents))
        result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    (err,) = failed
    assert f"Fit(n=1): its input data {old} is being reclaimed by a remote gc (s3://{bucket}/team/" in str(err)
    assert "run again after that gc has ended" in err.hint
    assert old in result.reclaimed
    assert not claims.held  # released: the next apply takes the claim at once
    (claim_key,) = _keys(bucket, "claims/")
    assert (
        '"expires": 0.0' in boto3.client("s3").get_object(Bucket=bucket, Key=ROOT + claim_key)["Body"].read().decode()
    )


# --- a resumed push racing gc --------------------------------------------------------------------


def _dead_push(ctx: str, bucket: str) -> str:
    """A bundle whose push died right before its manifest, its 3 files now past the grace period."""
    uuid = _bundle(ctx, "resumed", files=3, size=3000)
    with pytest.MonkeyPatch.context() as patch:

        def dies(self: RemoteSync, bundle: object) -> None:
            raise KeyboardInterrupt

        patch.setattr(RemoteSync, "_publish_manifest", dies)
        with pytest.raises(KeyboardInterrupt):
            api.push(ctx, uuid=uuid)
    assert sorted(_keys(bucket, f"objects/{uuid}/")) == [f"objects/{uuid}/data/f{j}.bin" for j in range(3)]
    assert not _keys(bucket, "intents/")  # the interrupted push removed its intent
    time.sleep(2.2)  # S3 times have whole seconds; grace is about one
    return uuid


def _whole_elsewhere(bucket: str, uuid: str) -> None:
    """A fresh store pulls the bundle with its files, each checked against its sha256."""
    api.context("reader")
    api.remote("reader", "shared", f"s3://{bucket}/team")
    (pulled,) = api.pull("reader", uuid=uuid, localize=True)
    assert [Path(p).read_bytes() for p in pulled.data] == [bytes([j]) * 3000 for j in range(3)]
    assert api.verify("reader").ok


def test_resumed_push_finishing_while_gc_lists_keeps_its_files(
    remote_ctx: str, bucket: str, grace_of_a_second: None
) -> None:
    """gc has listed objects/ (the dead push's files, no manifest) when the push, resumed, writes
    its manifest and removes its intent: gc finds the manifest after its notice and deletes
    nothing of the now published bundle."""
    uuid = _dead_push(remote_ctx, bucket)
    pushed: list[Any] = []
    resume = _once(lambda: pushed.append(api.push(remote_ctx, uuid=uuid)))
    with pytest.MonkeyPatch.context() as patch:  # _manifests: right after gc's listing of objects/
        patch.setattr(RemoteCollector, "_manifests", resume(RemoteCollector._manifests))
        result = api.gc(remote_ctx, remote=True, dry_run=False)
    assert pushed[0].pushed == [uuid]
    assert result.orphans == 0
    assert f"objects/{uuid}/{MANIFEST_NAME}" in _keys(bucket)
    _whole_elsewhere(bucket, uuid)


def test_resumed_push_meeting_a_gc_notice_waits_and_sends_again(
    remote_ctx: str, bucket: str, grace_of_a_second: None, quick_notices: None
) -> None:
    """The push resumes after gc wrote its notice and looked at intents again: it sees the notice
    naming its files, waits for gc to end, then sends again what gc deleted and publishes whole."""
    uuid = _dead_push(remote_ctx, bucket)
    waiting, errors, pushed = threading.Event(), [], []
    original_wait = GcNotices.wait_gone

    def wait_gone(self: GcNotices, *args: Any, **kwargs: Any) -> None:
        waiting.set()
        original_wait(self, *args, **kwargs)

    def resume() -> None:
        try:
            pushed.append(api.push(remote_ctx, uuid=uuid))
        except BaseException as err:  # noqa: BLE001 - checked below
            errors.append(err)

    pusher = threading.Thread(target=resume)

    def start_push() -> None:
        pusher.start()
        assert waiting.wait(30)  # the push is waiting for this gc

    with pytest.MonkeyPatch.context() as patch:  # _published_now: after the notice and the second look at intents
        patch.setattr(GcNotices, "wait_gone", wait_gone)
        patch.setattr(RemoteCollector, "_published_now", _once(start_push)(RemoteCollector._published_now))
        result = api.gc(remote_ctx, remote=True, dry_run=False)
        pusher.join(30)
    assert not errors, errors
    assert result.orphans == 3  # gc deleted the files it announced...
    assert pushed[0].pushed == [uuid]  # ...and the push, once gc ended, sent them again
    assert not _keys(bucket, "gc/") and not _keys(bucket, "intents/")
    _whole_elsewhere(bucket, uuid)


def test_push_gives_up_on_a_gc_that_does_not_end(remote_ctx: str, bucket: str, quick_notices: None) -> None:
    """A live notice naming a bundle's files that never goes away: the push waits its limit, then
    fails naming the notice and how to get past it; it publishes nothing and leaves no intent."""
    uuid = _bundle(remote_ctx, "stuck")
    notice = f"{ROOT}gc/20260101T000000Z-abc.json"
    body = f'{{"expires": {time.time() + 600}, "reclaim": [], "orphans": ["{uuid}"]}}'
    boto3.client("s3").put_object(Bucket=bucket, Key=notice, Body=body.encode())
    with pytest.raises(GcInProgress) as raised:
        api.push(remote_ctx, uuid=uuid)
    assert f"s3://{bucket}/{notice}" in str(raised.value) and "stuck" in str(raised.value)
    assert f"aws s3 rm s3://{bucket}/{notice}" in raised.value.hint
    assert not [k for k in _keys(bucket) if k.startswith(("intents/", "catalog/")) or k.endswith(MANIFEST_NAME)]


class _Clock:
    """notices' `time`: sleeping advances it at once, so a long wait takes no real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_chained_notices_stall_a_push_at_most_max_wait_in_all(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Planted notices naming a bundle's files, each expiring just before the next: the push
    waits MAX_WAIT in all (not per notice), says it waits naming the notices, says when one
    expires, then fails naming one still there."""
    monkeypatch.setattr(notices_module, "time", _Clock())
    monkeypatch.setattr(notices_module, "MAX_WAIT", 25.0)
    uuid = _bundle(remote_ctx, "stalled")
    keys = [f"{ROOT}gc/20260101T00000{i}Z-chain.json" for i in range(4)]
    for i, key in enumerate(keys):
        body = f'{{"expires": {time.time() + 10 * (i + 1)}, "reclaim": [], "orphans": ["{uuid}"]}}'
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode())
    with caplog.at_level("WARNING"), pytest.raises(GcInProgress) as raised:
        api.push(remote_ctx, uuid=uuid)
    assert f"s3://{bucket}/{keys[2]}" in str(raised.value) and "waited 25 s" in str(raised.value)
    assert notices_module.time.now - time.time() < 40  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("waiting (at most 25 s) for a remote gc") and f"s3://{bucket}/{keys[0]}" in line
        for line in lines
    )
    assert f"stopped waiting for s3://{bucket}/{keys[0]}: it expired without its gc ending" in lines
    assert f"stopped waiting for s3://{bucket}/{keys[1]}: it expired without its gc ending" in lines


def test_gc_deleting_past_half_the_notice_ttl_writes_its_notice_again(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gc whose deletes outlast half of NOTICE_TTL (here: at once) writes its notice again,
    under the same key, before each chunk of deletes: a store reading notices late in a long gc
    still finds it live, and one waiting on its key keeps waiting."""
    from disdat_luigi.store.remote import gc as gc_module

    old = _two_versions(remote_ctx)
    monkeypatch.setattr(gc_module, "DELETE_CHUNK", 1)
    monkeypatch.setattr(notices_module, "NOTICE_TTL", 0.0)  # every look finds the notice old
    seen: list[tuple[str, list[str]]] = []
    delete = S3.delete

    def watched(self: S3, bucket_name: str, keys: list[str]) -> None:
        if keys and "/gc/" not in keys[0]:
            notes = [k for k in _keys(bucket, "gc/")]
            seen.append((keys[0], notes))
        delete(self, bucket_name, keys)

    monkeypatch.setattr(S3, "delete", watched)
    writes: list[str] = []
    put = S3.put_bytes
    monkeypatch.setattr(
        S3,
        "put_bytes",
        lambda self, b, key, body: (writes.append(key) if "/gc/" in key else None, put(self, b, key, body))[1],
    )
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert old in result.reclaimed
    (notice,) = set(writes)
    assert len(writes) == 1 + len(seen) >= 3  # posted, then written again before each deleted key
    assert all(notes == [notice[len(ROOT) :]] for _, notes in seen)  # live under one key throughout


# --- a catalog entry racing gc -------------------------------------------------------------------


def test_catalog_entry_written_while_gc_lists_stays(remote_ctx: str, laptop: str, bucket: str) -> None:
    """A push publishes (manifest, then catalog entry) just as gc starts listing the catalog: gc
    deletes neither, and another store still finds the bundle by name."""
    uuid = _bundle(laptop, "fresh")
    original = S3.list_objects

    def list_objects(self: S3, bucket_name: str, prefix: str) -> Iterator[Any]:
        if prefix == f"{ROOT}catalog/" and not pushed:
            pushed.append(api.push(laptop, uuid=uuid))
        return original(self, bucket_name, prefix)

    pushed: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3, "list_objects", list_objects)
        result = api.gc(remote_ctx, remote=True, dry_run=False)
    assert pushed and result.orphans == 0
    assert f"catalog/fresh/{uuid}" in _keys(bucket)
    (found,) = api.pull(remote_ctx, "fresh")
    assert found.uuid == uuid


# --- planted input -------------------------------------------------------------------------------


DEEP = b"[" * 100000 + b"]" * 100000


@pytest.mark.parametrize(
    "body",
    [DEEP, b"[1, 2]", b"not json", b'{"expires": "soon", "reclaim": [], "orphans": []}', b'{"reclaim": 5}'],
    ids=["deep", "list", "text", "bad-expires", "bad-reclaim"],
)
def test_planted_gc_notices_are_ignored(
    remote_ctx: str, laptop: str, bucket: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Something under gc/ that is no notice is logged and ignored: push, push -d and gc run."""
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{ROOT}gc/planted.json", Body=body)
    uuid = _bundle(laptop, "p")
    pushed = api.push(laptop, uuid=uuid, delocalize=True)
    assert pushed.pushed == [uuid] and pushed.delocalized == [uuid]
    assert caplog.text.count("not a gc notice") == 1  # read twice (before the manifest, after the hold), logged once
    api.gc(remote_ctx, remote=True, dry_run=False)
    assert api.verify(laptop).ok


def test_planted_oversized_notice_is_not_read(remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notice past the size cap is ignored without being downloaded."""
    monkeypatch.setattr(notices_module, "MAX_NOTICE_BYTES", 100)
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{ROOT}gc/big.json", Body=b" " * 200 + b"{}")
    uuid = _bundle(remote_ctx, "b")
    assert api.push(remote_ctx, uuid=uuid).pushed == [uuid]


def test_planted_deep_json_under_intents_and_claims_leaves_gc_running(remote_ctx: str, bucket: str) -> None:
    """200 KB of `[` under intents/<uuid> and claims/x.json (json.loads: RecursionError) is not an
    intent or claim: gc runs and reclaims as planned."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"{ROOT}intents/11111111-1111-4111-8111-111111111111", Body=DEEP)
    s3.put_object(Bucket=bucket, Key=f"{ROOT}claims/deadbeef.json", Body=DEEP)
    made = [_bundle(remote_ctx, "deep", seed=i) for i in range(2)]
    api.push(remote_ctx)
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert result.reclaimed == (made[0],)
    assert Claim.from_json(DEEP) is None  # the run layer's reading of a claim survives it too


def test_gc_removes_its_notice_when_it_fails_and_sweeps_expired_ones(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gc that fails while deleting still removes its notice; a notice left by a gc that died
    is deleted by the next gc once it has expired (it no longer counts for pushes)."""
    from disdat_luigi.errors import TransferError

    made = [_bundle(remote_ctx, "n", seed=i) for i in range(3)]
    api.push(remote_ctx)
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{ROOT}gc/dead.json", Body=b"{}")

    def fails(self: RemoteCollector, *args: Any) -> None:
        raise TransferError("could not delete")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RemoteCollector, "_delete", fails)
        with pytest.raises(TransferError):
            api.gc(remote_ctx, keep_last=2, remote=True, dry_run=False)
    assert _keys(bucket, "gc/") == ["gc/dead.json"]  # its own went; the other is not expired yet
    monkeypatch.setattr(notices_module, "NOTICE_TTL", 1.0)
    time.sleep(2.1)  # S3 times have whole seconds
    assert api.gc(remote_ctx, keep_last=2, remote=True, dry_run=False).reclaimed == (made[0],)
    assert not _keys(bucket, "gc/")
