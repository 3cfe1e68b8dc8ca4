"""Closing is atomic under SIGKILL, concurrent writers both succeed, and the index rebuilds from manifests."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from disdat_luigi import api

WRITER = """
import sys
from pathlib import Path
from disdat_luigi import api
ctx, prefix, count, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(count):
    with api.Bundle(ctx, name=prefix, tags={"i": str(i)}) as b:
        paths = []
        for j in range(files):
            p = b.get_file(f"part-{j}.txt")
            Path(p).write_text(f"{prefix} {i} {j}\\n" * 50)
            paths.append(p)
        b.add_data(paths)
    print("closed", flush=True)
"""


def _writer(ctx: str, prefix: str, count: int, files: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, ctx, prefix, str(count), str(files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_all_complete(ctx: str) -> int:
    """Every visible bundle has every file its manifest lists, with the right content."""
    bundles = api.search(ctx)
    for bundle in bundles:
        for path in bundle.data:
            assert Path(path).read_text().startswith(bundle.name)
    report = api.verify(ctx)
    assert report.ok, report.problems
    return len(bundles)


def test_sigkill_during_close_never_exposes_half_a_bundle(ctx: str, disdat_env: Path) -> None:
    """Killing a writer at random moments leaves only complete bundles; the next open cleans up."""
    rng = random.Random(1234)
    tmp_dir = disdat_env / "home/context" / ctx / "tmp"
    objects_dir = tmp_dir.parent / "objects"
    interrupted = 0
    for _trial in range(12):
        proc = _writer(ctx, "crash", 1000, 40)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one bundle closed: the process is in its write loop
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if any(tmp_dir.iterdir()):
            interrupted += 1
            with api.Bundle(ctx, name="after") as bundle:  # the next close works and cleans drafts
                bundle.add_data([])
            assert list(tmp_dir.iterdir()) == []
            # a writer killed after its rename but before its index insert is indexed now: no loss
            assert len(api.search(ctx)) == len(list(objects_dir.iterdir()))
            api.rm(ctx, "after")
        _assert_all_complete(ctx)
    assert interrupted >= 6, f"most kills should land inside an open bundle ({interrupted}/12 did)"


def test_published_but_unindexed_bundle_is_healed(ctx: str) -> None:
    """A writer killed between the rename and the index insert loses nothing: the next open indexes it."""
    bundle = api.Bundle(ctx, name="orphan", data=[1])
    context = bundle.context
    context.index.delete([bundle.uuid])
    Path(context.tmp_dir, f"{bundle.uuid}.lock").touch()  # the dead writer's lock, as a crash leaves it
    assert api.get(ctx, "orphan") is None
    api.Bundle(ctx, name="next", data=2)
    assert api.get(ctx, "orphan").data == [1]


def test_two_processes_write_into_one_context(ctx: str) -> None:
    """Two writers at once: both finish, every bundle is complete and indexed."""
    procs = [_writer(ctx, name, 25, 5) for name in ("left", "right")]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _assert_all_complete(ctx) == 50
    assert len(api.search(ctx, "left")) == len(api.search(ctx, "right")) == 25


def test_rebuild_index_from_manifests(ctx: str, disdat_env: Path) -> None:
    """Deleting the index loses nothing: verify --rebuild recreates it, commit flags included."""
    made = [api.Bundle(ctx, name=f"b{i}", data=i, tags={"i": str(i)}) for i in range(5)]
    api.commit(ctx, "b3")
    index = disdat_env / "home/context" / ctx / "index.sqlite"
    with sqlite3.connect(index) as conn:
        conn.execute("DELETE FROM bundles")
    assert api.search(ctx) == []
    report = api.verify(ctx, rebuild=True)
    assert report.ok and report.checked == 5 and len(report.indexed) == 5
    assert sorted(b.uuid for b in api.search(ctx)) == sorted(b.uuid for b in made)
    assert [b.name for b in api.search(ctx, is_committed=True)] == ["b3"]
    assert api.search(ctx, tags={"i": "4"})[0].data == 4


def test_verify_drops_rows_whose_bundle_directory_vanished(ctx: str) -> None:
    """An index row whose directory was deleted by hand is reported as stale and dropped."""
    bundle = api.Bundle(ctx, name="gone", data=1)
    os.rename(bundle.local_dir, Path(bundle.local_dir).parent.parent / "moved-away")
    report = api.verify(ctx)
    assert report.unindexed == [bundle.uuid] and api.get(ctx, "gone") is None


def test_verify_reports_missing_files(ctx: str) -> None:
    """A bundle with a deleted data file is reported, not silently dropped."""
    with api.Bundle(ctx, name="f") as bundle:
        path = bundle.get_file("x.txt")
        Path(path).write_text("x")
        bundle.add_data(path)
    Path(bundle.data).unlink()
    report = api.verify(ctx)
    assert [(p.uuid, p.detail) for p in report.problems] == [(bundle.uuid, "missing file data/x.txt")]
    assert api.get(ctx, "f") is not None


def test_draft_without_its_lock_is_removed(ctx: str, disdat_env: Path) -> None:
    """Drafts left without a lock (a lock unlink that outlived a lost manifest after a power cut;
    or a draft of an older release in tmp/) are removed; a live writer's draft survives."""
    root = disdat_env / "home/context" / ctx
    legacy = root / "tmp" / "0f0f0f0f-0000-0000-0000-000000000000"
    (legacy / "data").mkdir(parents=True)
    orphan = root / "objects" / "0e0e0e0e-0000-0000-0000-000000000000"
    (orphan / "data").mkdir(parents=True)
    live = api.Bundle(ctx, name="live").open()  # a live writer's draft keeps its lock and survives
    api.Bundle(ctx, name="next", data=1)
    assert not legacy.exists()
    report = api.verify(ctx)
    assert report.ok and orphan.name in report.cleaned and not orphan.exists()
    draft = Path(live.local_dir)
    listed = [p.read_text().split() for p in (root / "tmp").glob("*.drafts")]
    assert draft.exists() and listed == [[live.uuid]]  # its writer's draft list names it
    assert [b.name for b in api.search(ctx)] == ["next"]
    live.abandon()
    assert not draft.exists()
