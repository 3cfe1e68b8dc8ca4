"""The writer's reservation: a draft is its locked bundle directory, listed in one draft list per
writer call (store/drafts.py). Real processes, real flocks, real SIGKILLs."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import uuid as uuid_module
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleExists
from disdat_luigi.store import drafts, fsutil
from disdat_luigi.store.context import MANIFEST_NAME, STAGED_MANIFEST, LocalContext
from disdat_luigi.store.remote import sync
from tests.drafting import context_of, manifest_for

# A second process: begins the uuids given, then does what it is told on stdin, line by line:
# "publish U", "abandon U", "place U" (manifest in place, no index row: a writer about to insert
# it), "stage U" (manifest written under its private name only), "kill" (SIGKILL itself).
WRITER = """
import os, signal, sys
from disdat_luigi import api
from disdat_luigi.store.context import Publication
ctx = api.Bundle(sys.argv[1], name="probe").context
api.context("scratch")
begun, published = ctx.begin_many(sys.argv[2:])
drafts = {d.uuid: d for d in begun}
print("begun", len(begun), len(published), flush=True)
for line in sys.stdin:
    verb, _, uuid = line.strip().partition(" ")
    if verb == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    draft = drafts[uuid]
    made = api.Bundle("scratch", name="w-" + uuid[:4]).open(force_uuid=uuid)
    made.add_data(uuid)
    manifest = made.close().context.load_manifest(uuid)
    if verb == "abandon":
        ctx.abandon(draft)
    else:
        publication = Publication(draft=draft, manifest=manifest, committed=True)
        if verb == "publish":
            ctx.publish_many([publication])
        else:
            ctx._stage_manifest(publication)
            if verb == "place":
                ctx._place_manifest(publication)
    print("done", verb, flush=True)
"""


def _uuids(count: int) -> list[str]:
    return [str(uuid_module.uuid4()) for _ in range(count)]


def _writer(ctx: str, uuids: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, ctx, *uuids],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("begun"), proc.stderr.read() if proc.stderr else line
    return proc


def _tell(proc: subprocess.Popen[str], command: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def _kill(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("kill\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _listed(context: LocalContext) -> list[list[str]]:
    return sorted(p.read_text().split() for p in context.tmp_dir.glob(f"*{drafts.DRAFTS_SUFFIX}"))


def test_a_dead_writers_drafts_are_removed_and_what_it_placed_is_indexed(ctx: str) -> None:
    """SIGKILL a writer of four drafts: one published, one placed but not indexed, one staged
    (its manifest under the private name only), one empty. The next writer's open indexes the
    placed one, removes the staged and the empty drafts, and leaves nothing in tmp/."""
    published, placed, staged, empty = uuids = _uuids(4)
    context = context_of(ctx)
    proc = _writer(ctx, uuids)
    assert [sorted(names) for names in _listed(context)] == [sorted(uuids)]
    for verb, uuid in (("publish", published), ("place", placed), ("stage", staged)):
        assert _tell(proc, f"{verb} {uuid}") == f"done {verb}"
    assert (context.bundle_dir(staged) / STAGED_MANIFEST).exists()
    _kill(proc)
    assert context.bundle_dir(empty).exists() and not context.index.rows([placed])

    api.Bundle(ctx, name="next", data=1)  # a new writer's first open cleans up

    assert set(context.index.rows(uuids)) == {published, placed}
    assert api.get(ctx, f"w-{placed[:4]}").data == placed
    assert not context.bundle_dir(staged).exists() and not context.bundle_dir(empty).exists()
    assert list(context.tmp_dir.iterdir()) == []
    assert api.verify(ctx).ok


def test_a_live_writers_drafts_survive_cleaners_and_verify(ctx: str) -> None:
    """While a writer lives, neither a new writer's clean-up nor `verify` (--rebuild too) touches
    its drafts or its list; once it is killed, they go."""
    uuids = _uuids(3)
    context = context_of(ctx)
    proc = _writer(ctx, uuids)
    try:
        context.clean_leftovers()
        api.verify(ctx)
        api.verify(ctx, rebuild=True)
        assert all(context.bundle_dir(u).is_dir() for u in uuids)
        assert [sorted(names) for names in _listed(context)] == [sorted(uuids)]
        assert _tell(proc, f"publish {uuids[0]}") == "done publish"
        assert api.get(ctx, f"w-{uuids[0][:4]}").data == uuids[0]
    finally:
        _kill(proc)
    report = api.verify(ctx)
    assert sorted(report.cleaned) == sorted(uuids[1:])
    assert not any(context.bundle_dir(u).exists() for u in uuids[1:]) and _listed(context) == []


def test_a_second_writer_of_a_uuid_waits_for_the_first(ctx: str) -> None:
    """Two writers of one uuid: the second waits while the first holds the draft, then finds the
    bundle published (BundleExists) or, when the first abandoned it, takes the uuid over."""
    kept, dropped = _uuids(2)
    context = context_of(ctx)
    proc = _writer(ctx, [kept, dropped])
    try:
        fd = drafts.try_lock(context.bundle_dir(kept))
        assert fd == -1  # held by the other process
        _tell(proc, f"abandon {dropped}")
        draft = context.begin_bundle(dropped)  # the abandoned uuid is free: ours now
        assert draft.path.is_dir() and list(draft.path.iterdir()) == []
        context.abandon(draft)
        with ThreadPoolExecutor(max_workers=1) as waiting:
            second = waiting.submit(context.begin_bundle, kept)  # waits for the other process
            time.sleep(0.3)
            assert not second.done()
            _tell(proc, f"publish {kept}")
            with pytest.raises(BundleExists):
                second.result(timeout=30)
    finally:
        _kill(proc)


def test_a_draft_its_writer_left_is_taken_over(ctx: str) -> None:
    """A bundle directory without a manifest that nobody locks (its writer died, or an older
    release left it) is emptied and reused by the next writer of that uuid."""
    (uuid,) = _uuids(1)
    context = context_of(ctx)
    (context.bundle_dir(uuid) / "data").mkdir(parents=True)
    (context.bundle_dir(uuid) / "data" / "old.txt").write_text("left behind")
    draft = context.begin_bundle(uuid)
    assert list(draft.path.iterdir()) == []
    context.publish(draft, manifest_for(uuid, uuid), committed=True)
    assert api.get(ctx, f"w-{uuid[:4]}").data == uuid and list(context.tmp_dir.iterdir()) == []


def test_a_cleaner_between_a_writers_mkdir_and_its_lock_costs_a_retry_only(
    ctx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one window of the protocol: a writer has made objects/<uuid>/ and not locked it yet.
    A cleaner (here `verify`'s) taking it for dead removes it; the writer notices (the directory
    it locked is no longer the one at the path), makes it again and goes on."""
    (uuid,) = _uuids(1)
    context = context_of(ctx)
    original = fcntl.flock
    cleaned: list[bool] = []
    fired: list[bool] = []

    def flock(fd: int, operation: int) -> None:
        if not fired and operation & fcntl.LOCK_EX and context.bundle_dir(uuid).exists():
            fired.append(True)
            cleaned.append(context.clean_dead_draft(uuid))  # runs before the writer's lock
        original(fd, operation)

    monkeypatch.setattr(drafts.fcntl, "flock", flock)
    draft = context.begin_bundle(uuid)
    monkeypatch.setattr(drafts.fcntl, "flock", original)
    assert cleaned == [True]  # the cleaner did remove the directory it found unlocked
    assert drafts.try_lock(draft.path) == -1 and os.stat(draft.path).st_ino == os.fstat(draft.lock_fd).st_ino
    context.publish(draft, manifest_for(uuid, uuid), committed=True)
    assert api.get(ctx, f"w-{uuid[:4]}").data == uuid


def test_odd_lists_are_not_read_as_a_dead_writers(ctx: str) -> None:
    """A writer killed while making its list leaves a private `.…drafts.new` file, never read as a
    list (it may be half written) and removed by a clean-up once nobody holds it and it is a
    minute old (a younger one may be a live writer's, between making it and locking it). A dead
    list naming garbage or paths removes nothing outside objects/<uuid>/; a directory with a
    list's name is not read as one (it goes like any directory in tmp/, a draft of a release
    before 0.2); none of them stops a writer."""
    context = context_of(ctx)
    stale = context.tmp_dir / f".0123456789abcdef{drafts.MAKING_SUFFIX}"
    stale.write_text("not-a-uuid\n../../etc\n")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    fresh = context.tmp_dir / f".0123456789abcdee{drafts.MAKING_SUFFIX}"  # a writer about to lock it
    fresh.write_text("")
    garbage = context.tmp_dir / f"fedcba9876543210{drafts.DRAFTS_SUFFIX}"
    garbage.write_bytes(b"../objects\n\xff\xfe\n" + b"x" * 100_000)
    odd = context.tmp_dir / f"0000000000000000{drafts.DRAFTS_SUFFIX}"
    odd.mkdir()
    assert context.clean_leftovers() == [odd.name]
    assert not stale.exists() and not garbage.exists() and not odd.exists() and context.objects_dir.is_dir()
    assert fresh.exists()
    api.Bundle(ctx, name="after", data=1)
    assert api.get(ctx, "after").data == 1


def _count(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = getattr(target, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


def test_a_metadata_pull_flushes_once_per_batch(remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A metadata pull writes each batch's manifests unflushed and flushes the file system once
    before any takes its name (no fsync per manifest); one draft list per batch in tmp/."""
    for i in range(7):
        api.Bundle(remote_ctx, name=f"m{i}", data=i).commit()
    api.push(remote_ctx)
    api.context("puller")
    api.remote("puller", "shared", f"s3://{bucket}/team")
    monkeypatch.setattr(sync, "METADATA_BATCH", 3)
    flushes = _count(monkeypatch, fsutil, "sync_filesystem")
    fsyncs = _count(monkeypatch, os, "fsync")
    lists = _count(monkeypatch, drafts.DraftList, "__init__")
    assert len(api.pull("puller")) == 7
    assert (len(flushes), len(fsyncs), len(lists)) == (3, 0, 3)  # batches of 3, 3 and 1
    assert sorted(b.data for b in api.search("puller")) == list(range(7))
    assert api.verify("puller").ok
    context = context_of("puller")
    assert not list(context.objects_dir.glob(f"*/{STAGED_MANIFEST}"))
    assert all((context.objects_dir / b.uuid / MANIFEST_NAME).exists() for b in api.search("puller"))


def test_a_directory_made_a_moment_ago_is_not_taken_over(ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A has made objects/U/ and not locked it yet (paused here). Writer B of the same
    uuid, another process, finds it unlocked without a manifest; were it taken for a dead draft,
    B would remove it and make its own, and A (opening the path after B's mkdir) could end up
    owning B's directory with whatever B wrote before dying. B waits instead while the directory
    is younger than FRESH_SECONDS; A locks and publishes it, and B finds the bundle published."""
    (uuid,) = _uuids(1)
    context = context_of(ctx)
    where = str(context.bundle_dir(uuid))
    at_open, go = threading.Event(), threading.Event()
    real_open = os.open

    def paused_open(path: Any, flags: int, *args: Any) -> int:
        if str(path) == where and threading.current_thread().name == "writer-a" and not at_open.is_set():
            at_open.set()
            assert go.wait(30)
        return real_open(path, flags, *args)

    monkeypatch.setattr(drafts.os, "open", paused_open)
    outcome: list[str] = []

    def writer_a() -> None:
        bundle = api.Bundle(ctx, name="a").open(force_uuid=uuid)
        bundle.add_data("from-a")
        bundle.close()
        outcome.append("published")

    thread = threading.Thread(target=writer_a, name="writer-a", daemon=True)
    thread.start()
    assert at_open.wait(30)
    script = (
        "import sys, time\nfrom disdat_luigi.store.context import LocalContext\n"
        "d = LocalContext(__import__('pathlib').Path(sys.argv[1])).begin_bundle(sys.argv[2])\n"
        "(d.path / 'junk.txt').write_text('from b')\nprint('wrote', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(context.path), uuid],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # B is at the directory now
        go.set()
        thread.join(30)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert outcome == ["published"] and api.get(ctx, "a").data == "from-a"
    assert not (context.bundle_dir(uuid) / "junk.txt").exists()
    assert proc.returncode != 0 and "BundleExists" in err
