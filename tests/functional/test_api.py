"""The local Python API: contexts, bundle lifecycle, search, get, rm, add, cat, commit, lineage."""

from __future__ import annotations

import pickle
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.errors import (
    BundleNotFound,
    BundleStateError,
    ContextNotFound,
    InvalidName,
    PathNotFound,
)


def test_contexts_create_list_switch_delete(disdat_env: Path) -> None:
    """Contexts can be created (idempotently), listed, switched to and deleted."""
    assert api.ls_contexts() == [] and api.current_context() is None
    api.context("a")
    api.context("shared/b")
    api.context("a")
    assert api.ls_contexts() == ["a", "b"]
    api.switch("b")
    assert api.current_context() == "b"
    api.delete_context("b")
    assert api.ls_contexts() == ["a"] and api.current_context() is None
    with pytest.raises(ContextNotFound):
        api.switch("b")


def test_bundle_metadata_is_recorded(ctx: str) -> None:
    """Everything given to a bundle comes back once it is closed."""
    upstream = api.Bundle(ctx, name="up", data=1)
    start = time.time()
    bundle = api.Bundle(
        ctx,
        name="down",
        data=2,
        processing_name="Down_abc",
        owner="alice",
        tags={"stage": "test"},
        params={"n": 3, "when": datetime(2020, 1, 1), "ratio": 0.5, "names": ["a", "b"]},
        dependencies={"x": upstream},
        code_method="pkg.mod.Down",
        vc_info=("git@example:repo.git", "abc123", "main"),
        start_time=start,
        stop_time=start + 1,
    )
    got = api.get(ctx, "down")
    assert got == bundle and got.closed and not got.is_committed
    assert (got.name, got.processing_name, got.owner) == ("down", "Down_abc", "alice")
    assert got.tags == {"stage": "test"}
    assert got.params == {"n": 3, "when": datetime(2020, 1, 1), "ratio": 0.5, "names": ["a", "b"]}
    assert [(d.name, d.uuid, d.arg_name) for d in got.dependencies] == [("up", upstream.uuid, "x")]
    assert got.code_ref == "pkg.mod.Down"
    assert got.git_info == {"repo": "git@example:repo.git", "commit": "abc123", "branch": "main"}
    assert got.timing == (start, start + 1)
    assert got.creation_date.tzinfo is not None
    assert abs(got.creation_date - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_open_close_and_builder_methods(ctx: str) -> None:
    """open()/close() with add_* calls produces the same kind of bundle as the one-shot form."""
    upstream = api.Bundle(ctx, name="up", data=1)
    bundle = api.Bundle(ctx, name="built").open()
    bundle.add_data([1, 2]).add_tags({"a": "1"}).add_params({"p": 1})
    bundle.add_dependencies([upstream], ["src"]).add_code_ref("m.C").add_git_info("r", "c", "b")
    bundle.add_timing(1.0, 2.0)
    bundle.close()
    assert bundle.data == [1, 2] and bundle.tags == {"a": "1"} and bundle.params == {"p": 1}
    assert bundle.dependencies[0].arg_name == "src" and bundle.timing == (1.0, 2.0)
    with pytest.raises(BundleStateError, match="immutable"):
        bundle.add_tags({"b": "2"})


def test_failed_with_block_leaves_nothing(ctx: str, disdat_env: Path) -> None:
    """An exception inside `with Bundle(...)` abandons the bundle: no bundle, no draft."""
    with pytest.raises(RuntimeError), api.Bundle(ctx, name="doomed") as bundle:
        Path(bundle.get_file("half.txt")).write_text("half")
        raise RuntimeError("boom")
    assert api.search(ctx) == []
    assert list((disdat_env / "home/context" / ctx / "tmp").iterdir()) == []


def test_abandon(ctx: str) -> None:
    """abandon() throws an open bundle away."""
    bundle = api.Bundle(ctx, name="a").open()
    bundle.add_data(1)
    bundle.abandon()
    assert api.get(ctx, "a") is None


def test_reading_an_open_bundle_is_an_error(ctx: str) -> None:
    """Attributes of a bundle that is not closed raise a clear state error."""
    bundle = api.Bundle(ctx, name="a").open()
    with pytest.raises(BundleStateError, match="not closed"):
        _ = bundle.data
    bundle.abandon()


def test_get_file_refuses_escaping_names(ctx: str) -> None:
    """get_file names cannot leave the bundle directory."""
    with api.Bundle(ctx, name="a") as bundle:
        for bad in ["../x", "/etc/passwd", "", "a/../../x"]:
            with pytest.raises(InvalidName):
                bundle.get_file(bad)
        bundle.add_data(1)


def test_search_filters_and_order(ctx: str) -> None:
    """search returns newest first and filters by name, glob, tags, commit state and dates."""
    first = api.Bundle(ctx, name="alpha", data=1, tags={"v": "1"})
    second = api.Bundle(ctx, name="alpha", data=2, tags={"v": "2"})
    other = api.Bundle(ctx, name="alps", data=3, processing_name="P1")
    odd = api.Bundle(ctx, name="al%pha_", data=4)
    assert [b.uuid for b in api.search(ctx, "alpha")] == [second.uuid, first.uuid]
    assert [b.data for b in api.search(ctx, "al*")] == [4, 3, 2, 1]
    assert [b.uuid for b in api.search(ctx, "al%pha_")] == [odd.uuid]
    assert api.search(ctx, "al%") == []
    assert [b.data for b in api.search(ctx, tags={"v": "1"})] == [1]
    assert [b.uuid for b in api.search(ctx, processing_name="P1")] == [other.uuid]
    api.commit(ctx, "alpha", tags={"v": "1"})
    assert [b.uuid for b in api.search(ctx, is_committed=True)] == [first.uuid]
    assert len(api.search(ctx, is_committed=False)) == 3
    assert api.search(ctx, before=first.creation_date - timedelta(seconds=1)) == []
    assert len(api.search(ctx, after=first.creation_date)) == 4


def test_get_prefers_uuid_and_returns_none_when_missing(ctx: str) -> None:
    """get by uuid wins over the name; an unknown name gives None."""
    old = api.Bundle(ctx, name="n", data=1)
    api.Bundle(ctx, name="n", data=2)
    assert api.get(ctx, "n").data == 2
    assert api.get(ctx, "n", uuid=old.uuid).data == 1
    assert api.get(ctx, "missing") is None


def test_rm_rules(ctx: str) -> None:
    """rm removes the newest by name, all with rm_all, old ones with rm_old_only, and refuses 'everything'."""
    for i in range(3):
        api.Bundle(ctx, name="r", data=i)
    keep = api.Bundle(ctx, name="keep", data=0)
    with pytest.raises(BundleStateError, match="every bundle"):
        api.rm(ctx)
    assert len(api.rm(ctx, "r")) == 1 and api.get(ctx, "r").data == 1
    api.Bundle(ctx, name="r", data=9)
    assert len(api.rm(ctx, "r", rm_old_only=True)) == 2
    assert [b.data for b in api.search(ctx, "r")] == [9]
    assert len(api.rm(ctx, "r", rm_all=True)) == 1
    assert api.rm(ctx, uuid=keep.uuid) == [keep.uuid]
    assert api.search(ctx) == []
    api.Bundle(ctx, name="z", data=1)
    assert len(api.rm(ctx, rm_all=True)) == 1


def test_add_file_and_directory(ctx: str, tmp_path: Path) -> None:
    """add copies a file, or a whole directory tree with its relative layout, into a new bundle."""
    (tmp_path / "tree" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "tree" / "deep" / "er" / "x.txt").write_text("x")
    (tmp_path / "tree" / "top.txt").write_text("t")
    single = api.add(ctx, "one", tmp_path / "tree" / "top.txt", tags={"k": "v"})
    assert Path(single.data).read_text() == "t" and single.tags == {"k": "v"}
    tree = api.add(ctx, "tree", str(tmp_path / "tree"))
    rels = [str(Path(p).relative_to(Path(tree.local_dir) / "data")) for p in tree.data]
    assert rels == ["deep/er/x.txt", "top.txt"]
    with pytest.raises(PathNotFound, match="no file or directory"):
        api.add(ctx, "none", tmp_path / "missing")
    with pytest.raises(InvalidName):
        api.add(ctx, "../evil", tmp_path / "tree" / "top.txt")
    assert len(api.search(ctx)) == 2


def test_cat_and_commit(ctx: str) -> None:
    """cat returns the newest data; commit marks it; both fail clearly when nothing matches."""
    api.Bundle(ctx, name="c", data={"v": 1})
    assert api.cat(ctx, "c") == {"v": 1}
    committed = api.commit(ctx, "c")
    assert committed.is_committed and api.get(ctx, "c").is_committed
    with pytest.raises(BundleNotFound, match="no bundle with name 'nope'"):
        api.cat(ctx, "nope")
    with pytest.raises(BundleNotFound):
        api.commit(ctx, "nope")


def test_lineage_walks_upstream_breadth_first(ctx: str) -> None:
    """lineage lists the bundle, then its inputs level by level, and marks missing ones."""
    a = api.Bundle(ctx, name="a", data=1)
    b = api.Bundle(ctx, name="b", data=2)
    c = api.Bundle(ctx, name="c", data=3, dependencies={"x": a, "y": b})
    d = api.Bundle(ctx, name="d", data=4, dependencies={"in": c})
    records = api.lineage(ctx, d.uuid)
    assert [(r.name, r.depth) for r in records] == [("d", 0), ("c", 1), ("a", 2), ("b", 2)]
    assert [r.name for r in api.lineage(ctx, d.uuid, max_depth=1)] == ["d", "c"]
    api.rm(ctx, uuid=a.uuid)
    missing = [r for r in api.lineage(ctx, d.uuid) if not r.found]
    assert [(r.name, r.uuid) for r in missing] == [("a", a.uuid)]


def test_bundles_pickle(ctx: str) -> None:
    """A closed bundle survives pickling (luigi workers may be processes)."""
    bundle = api.Bundle(ctx, name="p", data=[1, 2])
    clone = pickle.loads(pickle.dumps(bundle))
    assert clone == bundle and clone.data == [1, 2] and clone.name == "p"


def test_config_is_read_per_call(ctx: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing DISDAT_HOME between calls points the next call at another store."""
    api.Bundle(ctx, name="here", data=1)
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "elsewhere"))
    assert api.ls_contexts() == []
