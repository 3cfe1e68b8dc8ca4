"""A second attack on the draft protocol after its hardening (store/drafts.py, store/context.py):
each test states what a user should see, and fails on the code it was written against."""

from __future__ import annotations

import os
import threading
import time
import uuid as uuid_module
from typing import Any

import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleExists, DisdatError
from disdat_luigi.store import fsutil
from disdat_luigi.store.context import LocalContext
from tests.drafting import context_of, manifest_for


def _in_child(action: Any) -> int:
    """Run `action` in a forked child (os.fork, as a task that forks would): its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            action()
        except BaseException:  # noqa: BLE001 - the child reports by its status
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_abandoning_its_parents_draft_does_not_remove_it(ctx: str) -> None:
    """A task forks (os.fork); the child leaves through the task's `except`, which abandons the
    open bundle. The child does not hold the draft's lock (it closed its copy when forked), yet
    abandon removes objects/<uuid>/ with everything the parent wrote: the parent's close then
    fails. The child should leave the parent's draft alone."""
    bundle = api.Bundle(ctx, name="parent").open()
    draft = bundle._draft
    (draft.path / "part-0.txt").write_text("written before the fork")
    _in_child(bundle.abandon)
    assert (draft.path / "part-0.txt").exists(), "the child removed its parent's open bundle"
    bundle.add_data(str(draft.path / "part-0.txt"))
    bundle.close()
    assert api.get(ctx, "parent").uuid == draft.uuid


def test_a_forked_child_cannot_publish_its_parents_half_written_draft(ctx: str) -> None:
    """The child of a fork (a `with api.Bundle(...)` block left normally in the child) closes
    the bundle its parent is still writing: the parent's half-written draft becomes a visible
    bundle, then the parent's own close replaces its manifest (a published bundle changes).
    The child does not hold the draft's lock: its publish should fail, nothing visible."""
    context = context_of(ctx)
    uuid = str(uuid_module.uuid4())
    draft = context.begin_bundle(uuid)
    half = manifest_for(uuid, "half")
    status = _in_child(lambda: context.publish(draft, half))
    seen = context.index.rows([uuid])
    context.abandon(draft)
    assert status != 0, "a forked child published a draft whose lock it does not hold"
    assert not seen, "the parent's half-written draft became visible"


def test_reopening_a_forced_uuid_whose_draft_this_thread_left_open_does_not_hang(ctx: str) -> None:
    """In a notebook: a cell opens a bundle with a forced uuid and fails before closing it (no
    `with`); re-running the cell opens the same uuid again. The second open waits for the lock
    the first draft holds, in the same thread: it hangs forever. It should raise (the uuid is
    being written by this process) instead."""
    uuid = str(uuid_module.uuid4())
    outcome: list[str] = []

    def rerun() -> None:  # both runs of the cell in one thread, as a notebook's kernel runs them
        first = api.Bundle(ctx, name="cell").open(force_uuid=uuid)  # left open
        try:
            api.Bundle(ctx, name="cell").open(force_uuid=uuid)
            outcome.append("opened")
        except (BundleExists, DisdatError) as err:
            outcome.append(type(err).__name__)
        first.abandon()

    thread = threading.Thread(target=rerun, daemon=True)
    thread.start()
    thread.join(10)
    assert outcome == ["BundleStateError"], "re-opening a forced uuid this thread left open hangs forever"


def test_a_pull_of_a_few_hundred_bundles_leaves_tmp_empty(remote_ctx: str, bucket: str, dsdt: Any) -> None:
    """`dsdt pull` of 300 bundles into a fresh context, as a user runs it: every bundle arrives
    and tmp/ holds nothing afterwards (no draft list, no private list, no lock file)."""
    for i in range(300):
        api.Bundle(remote_ctx, name=f"m{i % 7}", data=i).commit()
    pushed = dsdt("push")
    assert pushed.code == 0, pushed.err
    assert dsdt("context", "puller").code == 0
    assert dsdt("switch", "puller").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/team").code == 0
    result = dsdt("pull")
    assert result.code == 0, result.err
    assert len(api.search("puller")) == 300
    assert sorted(os.listdir(context_of("puller").tmp_dir)) == []


def test_a_failed_file_system_flush_publishes_nothing_and_leaves_nothing(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush of a metadata pull's batch fails (EIO): the pull raises, no bundle of the batch
    is visible, and neither objects/ nor tmp/ keeps anything of it."""
    for i in range(5):
        api.Bundle(remote_ctx, name=f"m{i}", data=i).commit()
    api.push(remote_ctx)
    api.context("puller")
    api.remote("puller", "shared", f"s3://{bucket}/team")

    def failing(path: Any) -> None:
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(fsutil, "sync_filesystem", failing)
    with pytest.raises((OSError, DisdatError)):
        api.pull("puller")
    context = context_of("puller")
    assert api.search("puller") == []
    assert os.listdir(context.objects_dir) == [] and os.listdir(context.tmp_dir) == []


def test_a_batch_in_its_sorted_slow_path_and_a_writer_holding_a_draft_do_not_deadlock(ctx: str) -> None:
    """A writer holds draft HI (a bundle open with a forced uuid) and then opens LO (a second
    forced uuid, as a task writing two outputs). A batch (a pull) of [LO, HI] meanwhile found HI
    busy, gave up and claims again in uuid order, waiting: it holds LO and waits for HI, the
    writer waits for LO. Both hang forever; one of them should get an error (or wait for the
    other without holding anything)."""
    lo, hi = sorted(str(uuid_module.uuid4()) for _ in range(2))
    context = context_of(ctx)
    writer_path = context.path
    held = context.begin_bundle(hi)
    done: list[str] = []

    def pull() -> None:
        mine = LocalContext(writer_path)
        begun, _ = mine.begin_many([lo, hi])
        for draft in begun:
            mine.abandon(draft)
        done.append("pull")

    def writer_second() -> None:
        try:
            second = context.begin_bundle(lo)
            context.abandon(second)
        finally:
            context.abandon(held)
        done.append("writer")

    batch = threading.Thread(target=pull, daemon=True)
    batch.start()
    time.sleep(0.5)  # the batch found HI busy and now holds LO, waiting for HI
    second = threading.Thread(target=writer_second, daemon=True)
    second.start()
    batch.join(10)
    second.join(1)
    assert sorted(done) == ["pull", "writer"], "a batch and a writer holding a draft wait for each other forever"


def test_a_writer_whose_index_insert_fails_does_not_make_another_writer_get_bundle_exists(ctx: str) -> None:
    """Writer A of a forced uuid has renamed its manifest into place and its index insert is
    under way (it fails: "database is locked"); A takes the manifest back and abandons the draft.
    Writer B of the same uuid, arriving in that window, sees the manifest before taking the lock
    and gets BundleExists at once, for a bundle that never existed (a concurrent pull, told
    PUBLISHED, leaves it out of its result without a word). B should wait for A's lock and then
    make the bundle."""
    import sqlite3

    uuid = str(uuid_module.uuid4())
    path = context_of(ctx).path
    writer_a, writer_b = LocalContext(path), LocalContext(path)
    manifest = manifest_for(uuid, "from-a")
    inserting, fail = threading.Event(), threading.Event()

    def failing_insert(entries: Any) -> None:
        inserting.set()
        assert fail.wait(30)
        raise sqlite3.OperationalError("database is locked")

    draft = writer_a.begin_bundle(uuid)
    writer_a.index.insert_many = failing_insert  # type: ignore[method-assign]

    def publish_a() -> None:
        try:
            writer_a.publish(draft, manifest)
        except sqlite3.OperationalError:
            writer_a.abandon(draft)

    thread = threading.Thread(target=publish_a, daemon=True)
    thread.start()
    assert inserting.wait(30)  # A's manifest is in place, its row not yet written
    outcome: list[str] = []

    def open_b() -> None:
        try:
            writer_b.abandon(writer_b.begin_bundle(uuid))
            outcome.append("made")
        except BundleExists:
            outcome.append("BundleExists")

    second = threading.Thread(target=open_b, daemon=True)
    second.start()
    time.sleep(0.3)
    fail.set()
    thread.join(30)
    second.join(30)
    assert not writer_b.index.rows([uuid])  # A's bundle was never published
    assert outcome == ["made"], "told BundleExists for a bundle that does not exist"


def test_a_dead_draft_stamped_by_a_clock_ahead_of_ours_is_taken_over(ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer of a forced uuid died, leaving objects/<uuid>/ unlocked without a manifest, and
    the directory's ctime is ahead of this host's clock (an NFS server's clock, or ours stepped
    back by NTP after the crash: here ten minutes). Its age comes out negative, below
    FRESH_SECONDS, so the re-run takes it for a draft whose maker has not locked it yet and
    polls until the clocks agree: ten minutes of a silent hang. A negative age says nothing
    about freshness; the re-run should take the dead draft over."""
    from disdat_luigi.store import drafts

    uuid = str(uuid_module.uuid4())
    context = context_of(ctx)
    context.clean_leftovers()
    (context.bundle_dir(uuid) / "part").mkdir(parents=True)  # the dead writer's
    real_time = time.time
    monkeypatch.setattr(drafts.time, "time", lambda: real_time() - 600)
    outcome: list[str] = []

    def rerun() -> None:
        context.abandon(context.begin_bundle(uuid))
        outcome.append("made")

    thread = threading.Thread(target=rerun, daemon=True)
    thread.start()
    thread.join(10)
    assert outcome == ["made"], "re-running the write hangs while the dead draft's ctime is in our future"


def test_ctrl_c_while_a_pull_waits_for_its_claims_leaves_no_draft_locked(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands while begin_many waits for the first claim of its pool (a pull in a
    notebook, whose process lives on). That claim's result is never collected: its draft is not
    among those given up, its list count never comes back to zero, so objects/<uuid>/ (or at
    least tmp/<list>.drafts) stays locked by this process for its lifetime, and pulling again
    waits on its own lock. After the interrupt nothing of the call should remain."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from disdat_luigi.store import drafts

    context = context_of(ctx)
    uuids = [str(uuid_module.uuid4()) for _ in range(3)]
    real_result = Future.result
    interrupted: list[bool] = []

    def result(self: Future[Any], timeout: float | None = None) -> Any:
        if not interrupted and threading.current_thread() is threading.main_thread():
            interrupted.append(True)
            real_result(self, timeout)  # the claim is made; Ctrl-C arrives as it returns
            raise KeyboardInterrupt
        return real_result(self, timeout)

    monkeypatch.setattr(Future, "result", result)
    with ThreadPoolExecutor(max_workers=4) as pool, pytest.raises(KeyboardInterrupt):
        context.begin_many(uuids, pool)
    monkeypatch.setattr(Future, "result", real_result)
    assert os.listdir(context.objects_dir) == []
    assert os.listdir(context.tmp_dir) == [], "the call's draft list stays in tmp/, locked by this process"
    mine = [path for path, _thread in drafts._held.values() if path.is_relative_to(context.path)]
    assert not mine, "a lock of the interrupted call is still held by this process"


def test_verify_leaves_a_stray_directory_in_objects_alone(ctx: str) -> None:
    """objects/ holds a directory that is no bundle and whose name is no uuid (`lost+found` when
    objects/ is a mount point, a user's backup copy). `dsdt verify` takes it for a dead draft
    (no manifest, lock free) and deletes it with whatever it holds. It should leave it alone
    (and may report it), as it does a stray file."""
    api.Bundle(ctx, name="real", data=1)
    context = context_of(ctx)
    stray = context.objects_dir / "lost+found"
    stray.mkdir()
    (stray / "recovered-0001").write_text("someone's data")
    api.verify(ctx)
    assert (stray / "recovered-0001").exists(), "verify deleted a directory of objects/ that is no bundle"
