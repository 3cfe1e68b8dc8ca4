"""Attacks on the draft protocol (store/drafts.py): each test states what a user should see."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid as uuid_module
from typing import Any

import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleExists
from disdat_luigi.store import drafts
from disdat_luigi.store.context import LocalContext
from tests.drafting import context_of
from tests.interrupts import interrupt_once


class _HookedOs:
    """`os` for store/drafts.py, pausing one thread just before it opens the bundle directory."""

    def __init__(self, thread_name: str, path: str) -> None:
        self.thread_name, self.path = thread_name, path
        self.at_open = threading.Event()
        self.go = threading.Event()
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, *args: Any) -> int:
        if not self.fired and threading.current_thread().name == self.thread_name and str(path) == self.path:
            self.fired = True
            self.at_open.set()
            assert self.go.wait(30)
        return os.open(path, flags, *args)


def test_a_second_writer_of_a_forced_uuid_gets_bundle_exists_not_the_published_bundle(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer A makes objects/U/ and is preempted before locking it; writer B (same uuid) takes
    the unlocked directory for a dead draft, removes it, makes its own and publishes. A then opens
    B's directory, still believing it made it (`made` is from its first mkdir): A gets a draft on
    B's published bundle, and A's close replaces B's manifest and index row (INSERT OR REPLACE).
    A should get BundleExists, and U should stay B's bundle."""
    uuid = str(uuid_module.uuid4())
    context = context_of(ctx)
    hooked = _HookedOs("writer-a", str(context.bundle_dir(uuid)))
    monkeypatch.setattr(drafts, "os", hooked)
    outcome: list[str] = []

    def writer_a() -> None:
        try:
            bundle = api.Bundle(ctx, name="a").open(force_uuid=uuid)
        except BundleExists:
            outcome.append("exists")
            return
        bundle.add_data("from-a")
        bundle.close()
        outcome.append("published over it")

    thread = threading.Thread(target=writer_a, name="writer-a", daemon=True)
    thread.start()
    assert hooked.at_open.wait(30)  # A made objects/U/ and has not locked it yet
    b = api.Bundle(ctx, name="b").open(force_uuid=uuid)  # takes it for a dead draft, makes its own
    hooked.go.set()
    time.sleep(0.3)  # A now waits on B's lock
    b.add_data("from-b")
    b.close()
    thread.join(30)
    assert (api.get(ctx, None, uuid=uuid).name, api.get(ctx, None, uuid=uuid).data) == ("b", "from-b")
    assert outcome == ["exists"]


def test_two_writers_beginning_the_same_uuids_in_another_order_do_not_deadlock(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pulls of one remote into one context begin the same new bundles: begin_many waits
    (blocking flock) for a draft another writer holds while holding its own, and publishes only
    after every claim ended. A holds U1 and waits for U2, B holds U2 and waits for U1: both hang
    forever (with a pool the claims run in any order, so the same order does not prevent it)."""
    u1, u2 = str(uuid_module.uuid4()), str(uuid_module.uuid4())
    path = context_of(ctx).path
    both_hold_one = threading.Barrier(2, timeout=10)
    real_claim = drafts.claim
    seen: dict[str, int] = {}

    def claim(target: Any, wait: bool, record: dict[Any, int]) -> int:
        fd = real_claim(target, wait, record)
        name = threading.current_thread().name
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 1:
            both_hold_one.wait()
        return fd

    monkeypatch.setattr(drafts, "claim", claim)
    done: list[str] = []

    def writer(order: list[str]) -> None:
        context = LocalContext(path)
        begun, _published = context.begin_many(order)
        for draft in begun:
            context.abandon(draft)
        done.append(threading.current_thread().name)

    threads = [
        threading.Thread(target=writer, args=([u1, u2],), name="pull-a", daemon=True),
        threading.Thread(target=writer, args=([u2, u1],), name="pull-b", daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert sorted(done) == ["pull-a", "pull-b"], "begin_many deadlocked: each writer waits for the other's draft"


def test_a_fifo_named_like_a_draft_list_does_not_hang_the_next_write(ctx: str) -> None:
    """A FIFO (or a link to one) in tmp/ named *.drafts: the first write of a process cleans up
    leftovers, and try_lock's open(O_RDONLY) of a FIFO blocks until someone opens it for
    writing: every `dsdt`/api write of the context hangs forever. It should be skipped."""
    context = context_of(ctx)
    os.mkfifo(context.tmp_dir / "planted.drafts")
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from disdat_luigi import api; api.Bundle({ctx!r}, name='after', data=1)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("a write hung on a FIFO named *.drafts in tmp/")
    assert proc.returncode == 0, proc.stderr.read()
    assert api.get(ctx, "after").data == 1


@pytest.mark.parametrize(
    ("target", "name", "before"),
    [
        (drafts, "claim", False),  # claim returned its locked descriptor
        (drafts.DraftList, "hold", True),  # the claim has its lock, not yet handed to the list
        (drafts.DraftList, "begun", True),  # the end of begin_many: its drafts must still be abandoned
    ],
    ids=["after-claim", "before-opened", "before-settle"],
)
def test_ctrl_c_in_begin_leaves_no_locked_directory_behind(
    ctx: str, monkeypatch: pytest.MonkeyPatch, target: Any, name: str, before: bool
) -> None:
    """A KeyboardInterrupt landing in begin_many after drafts.claim returned its locked
    descriptor but before the draft is handed back: nobody closes that descriptor (nor the draft
    list's), so this process keeps objects/<uuid>/ locked. The same notebook re-running the write
    of that uuid then waits for its own leaked lock forever, and verify never removes the draft."""
    uuid = str(uuid_module.uuid4())
    context = context_of(ctx)
    api.Bundle(ctx, name="warm", data=0)
    with pytest.MonkeyPatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(target, name, interrupt_once(getattr(target, name), before))
        api.Bundle(ctx, name="first").open(force_uuid=uuid)
    where = str(context.bundle_dir(uuid))
    leaked = [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == where]
    result: list[str] = []

    def again() -> None:
        bundle = api.Bundle(ctx, name="again").open(force_uuid=uuid)
        bundle.add_data(2)
        bundle.close()
        result.append("closed")

    thread = threading.Thread(target=again, daemon=True)
    thread.start()
    thread.join(10)
    assert result == ["closed"], f"the retry waits on a lock leaked by the interrupted open (fds {leaked})"
    assert leaked == []


def test_ctrl_c_between_a_drafts_release_and_its_list_count_leaves_no_list_in_tmp(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_release closes the directory's descriptor, then tells the draft list: an interrupt
    between the two (here: as the descriptor's release returns) must still count the draft out,
    or the list stays in tmp/, locked by this process for as long as it lives (verify cannot
    remove it). The bundle itself is published."""
    context = context_of(ctx)
    api.Bundle(ctx, name="warm", data=0)
    bundle = api.Bundle(ctx, name="x").open()
    bundle.add_data(1)
    with pytest.MonkeyPatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(drafts, "_release", interrupt_once(drafts._release, False))
        bundle.close()
    assert api.get(ctx, "x").data == 1
    api.verify(ctx)
    assert sorted(p.name for p in context.tmp_dir.iterdir()) == []


def test_a_child_forked_while_a_bundle_was_open_does_not_block_its_readers(ctx: str) -> None:
    """The writer's lock is an flock on objects/<uuid>/ itself, which readers take shared. A
    child forked while the bundle was open (multiprocessing.Pool with fork, a luigi worker)
    shares the locked open file description: after the parent publishes and closes its fd, the
    child still holds the exclusive lock, so reading the published bundle (and `rm`, gc) waits
    until the child exits. (With tmp/<uuid>.lock, readers were not affected.)"""
    bundle = api.Bundle(ctx, name="forked").open()
    pid = os.fork()
    if pid == 0:  # a long-lived worker that never touches the bundle
        time.sleep(60)
        os._exit(0)
    try:
        bundle.add_data(7)
        bundle.close()
        read: list[Any] = []
        thread = threading.Thread(target=lambda: read.append(api.get(ctx, "forked").data), daemon=True)
        thread.start()
        thread.join(10)
        assert read == [7], "reading a published bundle waits for a forked child to exit"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_verify_leaves_a_draft_alone_whose_older_release_writer_holds_its_lock_file(ctx: str) -> None:
    """A writer of the previous release (another venv on the same DISDAT_HOME) holds
    tmp/<uuid>.lock and writes objects/<uuid>/ without locking the directory. clean_leftovers
    still treats a held .lock as a live writer, but verify's listing now calls clean_dead_draft,
    which only asks the directory's lock: the live draft is removed under its writer (before this
    change verify asked is_draft, which looked at the held tmp/<uuid>.lock)."""
    import fcntl

    uuid = str(uuid_module.uuid4())
    context = context_of(ctx)
    api.Bundle(ctx, name="first", data=1)  # the context exists and has been cleaned once
    lock_fd = os.open(context.tmp_dir / f"{uuid}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # the older writer, alive
    try:
        context.bundle_dir(uuid).mkdir()
        (context.bundle_dir(uuid) / "part-0.csv").write_text("a,b\n")  # half written
        report = api.verify(ctx)
        assert (context.bundle_dir(uuid) / "part-0.csv").exists(), f"verify removed a live draft: {report.cleaned}"
    finally:
        os.close(lock_fd)


def test_verify_rebuild_keeps_the_row_of_a_bundle_published_while_it_hashed(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify --rebuild lists objects/, reads and hashes every bundle (long on a big store), then
    swaps the index for what it read. A bundle whose draft was listed (no manifest yet, its lock
    held: left alone) and which is published and indexed before the swap loses its row in the
    swap, and is not restored (only entries absent from the listing are): `get` no longer finds
    a bundle whose close returned, and verify reports its row as stale."""
    context = context_of(ctx)
    api.Bundle(ctx, name="old", data=1)
    late = api.Bundle(ctx, name="late").open()
    late.add_data(5)
    real = LocalContext.clean_dead_draft

    def clean_dead_draft(self: LocalContext, uuid: str) -> bool:
        result = real(self, uuid)
        if uuid == late.uuid and late.closed is False:
            late.close()  # the writer finishes while verify goes on hashing other bundles
        return result

    monkeypatch.setattr(LocalContext, "clean_dead_draft", clean_dead_draft)
    report = api.verify(ctx, rebuild=True)
    assert late.closed
    assert context.index.rows([late.uuid]), f"the row was swapped away (report.unindexed={report.unindexed})"
    assert api.get(ctx, "late") is not None


class _CleanerAfterCreate:
    """`os` for store/drafts.py: right after a writer creates its private draft list (before it
    locks it), another process's first write cleans tmp/ (a fresh LocalContext)."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, *args: Any) -> int:
        fd = os.open(path, flags, *args)
        if not self.fired and flags & os.O_CREAT and str(path).endswith(f"{drafts.DRAFTS_SUFFIX}.new"):
            self.fired = True
            LocalContext(self.path).clean_leftovers()
        return fd


def test_a_writers_private_draft_list_is_not_removed_before_it_locks_it(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DraftList creates tmp/.<name>.drafts.new, then flocks it. A cleaner running in between
    (any other process's first write, or verify) takes the unlocked .new for one whose writer
    died and unlinks it; the writer's rename to the public name then fails and an ordinary write
    crashes with FileNotFoundError."""
    context = context_of(ctx)
    api.Bundle(ctx, name="warm", data=0)
    monkeypatch.setattr(drafts, "os", _CleanerAfterCreate(context.path))
    bundle = api.Bundle(ctx, name="x").open()
    bundle.add_data(1)
    bundle.close()
    assert api.get(ctx, "x").data == 1


@pytest.mark.parametrize("planted", ["..lock", "...lock"])
def test_a_lock_file_whose_stem_is_a_dot_name_does_not_remove_the_store(ctx: str, planted: str) -> None:
    """clean_leftovers takes any tmp/*.lock it can lock for a dead writer's and uses its stem as a
    uuid unchecked: tmp/..lock has stem '.', so clean_dead_draft('.') locks objects/. (no
    manifest there) and removes the whole objects/ tree; tmp/...lock has stem '..', and
    remove_tree(tmp/..) removes the whole context. Every bundle is gone after the next write or
    verify. A stem that is not a uuid should be left alone."""
    context = context_of(ctx)
    kept = api.Bundle(ctx, name="keep", data=[1, 2, 3])
    (context.tmp_dir / planted).touch()
    LocalContext(context.path).clean_leftovers()  # what the next process's first write (or verify) runs
    assert context.bundle_dir(kept.uuid).is_dir(), "the bundle's directory was removed"
    assert api.get(ctx, "keep").data == [1, 2, 3]


def test_a_dead_list_naming_a_damaged_unindexed_manifest_does_not_break_every_write(ctx: str) -> None:
    """A dead writer's draft list names a bundle whose manifest is in place but unreadable (a
    later release's schema, a damaged disk, the forced-uuid race above) and not indexed:
    clean_dead_draft indexes it with load_manifest, whose ManifestRejected escapes
    clean_leftovers before the list is unlinked. Every later write of the context, and verify
    (the repair tool the hint names), fails with it, for good. It should be reported, not raised."""
    context = context_of(ctx)
    api.Bundle(ctx, name="warm", data=0)
    uuid = str(uuid_module.uuid4())
    context.bundle_dir(uuid).mkdir()
    (context.bundle_dir(uuid) / "manifest.json").write_text('{"schema": 99}')
    (context.tmp_dir / "0123456789abcdef.drafts").write_text(f"{uuid}\n")  # its writer was killed
    api.Bundle(ctx, name="next", data=2)
    assert api.get(ctx, "next").data == 2
    report = api.verify(ctx)
    assert [p.uuid for p in report.problems] == [uuid]


@pytest.mark.parametrize("rebuild", [False, True])
def test_verify_reports_a_stray_file_in_objects_instead_of_crashing(ctx: str, rebuild: bool) -> None:
    """verify reads objects/<entry>/manifest.json for every entry and catches only
    FileNotFoundError: a stray regular file there (.DS_Store, an editor's backup) raises
    NotADirectoryError and verify, the repair command, crashes before repairing anything."""
    context = context_of(ctx)
    api.Bundle(ctx, name="keep", data=1)
    (context.objects_dir / ".DS_Store").write_bytes(b"\0")
    report = api.verify(ctx, rebuild=rebuild)
    assert report.checked == 1
