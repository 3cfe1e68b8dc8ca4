"""Manifests planted on the shared remote by someone with write access: every command keeps
working, pulls bring all the good bundles and name the bad ones, nothing bad is written locally."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleCorrupt, ManifestRejected, PartialPull
from disdat_luigi.store.remote import sync
from disdat_luigi.store.remote.sync import RemoteSync
from tests.functional import pipelines as p
from tests.planting import manifest_doc, plant

SHA_OF_HELLO = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
HELLO = {"path": "data/hello.txt", "size": 5, "sha256": SHA_OF_HELLO}

# each passed the checks before they covered every field, then broke a command (or the batch) later
HOSTILE: dict[str, tuple[str, dict[str, Any], str]] = {
    "year 9999": ("model", {"creation_date": "9999-12-31T23:59:59+00:00"}, "creation date out of range"),
    "year 1": ("report", {"creation_date": "0001-01-01T00:00:00+00:00"}, "creation date out of range"),
    "params a list": ("model", {"params": [1, 2]}, "params that are not a mapping"),
    "git_info commit a list": ("evil", {"git_info": {"commit": ["x"]}}, "git_info 'commit'"),
    "NaN timing": ("report", {"timing": [float("nan"), 0]}, "not valid JSON"),
    "dependency uuid a number": ("model", {"dependencies": [{"name": "x", "uuid": 7}]}, "invalid uuid"),
    "file and its directory": (
        "evil",
        {"files": [{**HELLO, "path": "data/a"}, {**HELLO, "path": "data/a/b"}]},
        "both as a file and as a directory",
    ),
}
BAD = {label: f"00000000-0000-4000-8000-{i:012d}" for i, label in enumerate(HOSTILE)}

# valid manifests whose data objects are not what they list: (objects planted, the reason named)
HELLO_TOO = {**HELLO, "path": "data/too.txt"}
CORRUPT: dict[str, tuple[dict[str, bytes], str]] = {
    "wrong sha256": ({"data/hello.txt": b"HELLO"}, "data/hello.txt does not match the sha256 in its manifest"),
    "missing object": ({}, "data/hello.txt is missing from the remote"),
    "wrong size": ({"data/hello.txt": b"hello!"}, "data/hello.txt has 6 bytes, its manifest says 5"),
    "second file wrong": (
        {"data/hello.txt": b"hello", "data/too.txt": b"jello"},
        "data/too.txt does not match the sha256 in its manifest",
    ),
}
ROTTEN = {label: f"00000000-0000-4000-9000-{i:012d}" for i, label in enumerate(CORRUPT)}


def _doc(uuid: str, name: str, **changes: Any) -> dict[str, Any]:
    defaults = {"creation_date": "2026-01-01T00:00:00+00:00", "data": {"t": "file", "path": "data/hello.txt"}}
    return manifest_doc(name, uuid, **{**defaults, "files": [HELLO], **changes})


def _plant_hostile(bucket: str) -> dict[str, str]:
    """Every HOSTILE manifest on the remote, cataloged under its name, with data objects for
    each file it lists (so a localizing pull would write them): label -> uuid."""
    for label, (name, changes, _) in HOSTILE.items():
        doc = _doc(BAD[label], name, **changes)
        plant(bucket, doc, {entry["path"]: b"hello" for entry in doc["files"]})
    return BAD


def _push_good(ctx: str) -> dict[str, bytes]:
    """Two versions of `model` and one `report`, each with a data file, pushed: uuid -> data."""
    made = [
        api.Bundle(ctx, name=name, data=b"%d" % i * 20_000).commit()
        for i, name in enumerate(["model", "model", "report"])
    ]
    api.push(ctx)
    return {b.uuid: b.data for b in made}


def _plant_corrupt_among_good(ctx: str, bucket: str) -> dict[str, bytes]:
    """Each CORRUPT bundle planted right after a good one is pushed (alternately named `model`
    and `report`), so pulls newest first meet them interleaved: the good bundles' uuid -> data."""
    good: dict[str, bytes] = {}
    for i, (label, (objects, _)) in enumerate(CORRUPT.items()):
        name = ("model", "report")[i % 2]
        made = api.Bundle(ctx, name=name, data=b"%d" % i * 20_000).commit()
        api.push(ctx, uuid=made.uuid)
        good[made.uuid] = made.data
        files = [HELLO, HELLO_TOO] if len(objects) == 2 else [HELLO]
        plant(
            bucket,
            manifest_doc(name, ROTTEN[label], data={"t": "file", "path": "data/hello.txt"}, files=files),
            objects,
        )
    return good


def _fresh_context(name: str, bucket: str) -> str:
    api.context(name)
    api.remote(name, "shared", f"s3://{bucket}/team")
    return name


def _assert_nothing_bad_written(ctx: str, bad: Iterable[str] = BAD.values()) -> None:
    home = Path(api._store().root) / "context" / ctx
    assert list((home / "tmp").iterdir()) == []
    assert not any((home / "objects" / uuid).exists() for uuid in bad)
    assert api.verify(ctx).ok


@pytest.fixture
def east_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone east of UTC, where a year-9999 date overflows when shown in local time."""
    monkeypatch.setenv("TZ", "XST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("localize", [False, True], ids=["metadata", "localize"])
def test_pull_skips_and_names_hostile_manifests(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch, localize: bool
) -> None:
    """Hostile manifests mixed into the batches (two bundles each) are skipped and named with
    their reason; every good bundle arrives (with -l its files too) and nothing bad is written."""
    monkeypatch.setattr(sync, "PULL_BATCH", 2)
    good = _push_good(remote_ctx)
    bad = _plant_hostile(bucket)
    fresh = _fresh_context("fresh", bucket)
    with pytest.raises(PartialPull) as caught:
        api.pull(fresh, localize=localize)
    assert isinstance(caught.value, ManifestRejected)
    result = caught.value.result
    assert sorted(b.uuid for b in result) == sorted(good) == sorted(result.fetched)
    reasons = dict(result.skipped)
    assert sorted(reasons) == sorted(bad.values())
    for label, (_, _, reason) in HOSTILE.items():
        assert reason in reasons[bad[label]]
        assert reasons[bad[label]].startswith(f"manifest s3://{bucket}/team/context/shared/objects/{bad[label]}/")
    assert sorted(b.uuid for b in api.search(fresh)) == sorted(good)
    for bundle in api.search(fresh):
        assert [(Path(bundle.local_dir) / f.path).exists() for f in bundle.files] == [localize]
        assert not localize or bundle.data == good[bundle.uuid]
    _assert_nothing_bad_written(fresh)


def test_cli_pull_and_ls_with_hostile_manifests(  # type: ignore[no-untyped-def]
    dsdt, remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch, east_of_utc: None
) -> None:
    """`dsdt pull` and `pull -l` list the good bundles, name each bad one on stderr and exit 1;
    `dsdt ls -v` then lists the good ones (a year-9999 date never reaches it to overflow)."""
    monkeypatch.setattr(sync, "PULL_BATCH", 2)
    good = _push_good(remote_ctx)
    bad = _plant_hostile(bucket)
    fresh = _fresh_context("fresh", bucket)
    assert dsdt("switch", fresh).code == 0
    for args in (["pull", "model"], ["pull", "-l"]):
        pulled = dsdt(*args)
        assert pulled.code == 1, pulled.err
        assert "unexpected" not in pulled.err and "Traceback" not in pulled.err
        wanted = [u for label, u in bad.items() if args == ["pull", "-l"] or HOSTILE[label][0] == "model"]
        for uuid in wanted:
            assert f"skipped {uuid}: manifest s3://{bucket}/team/context/shared/objects/{uuid}/" in pulled.err
        assert f"{len(wanted)} remote bundle(s) were skipped as damaged" in pulled.err
        assert f"hint: delete a damaged remote copy with `dsdt rmr -u {min(wanted)}`" in pulled.err
    assert sorted(line.split()[1] for line in pulled.out.splitlines()[:-1]) == sorted(good)
    listed = dsdt("ls", "-v")
    assert listed.code == 0, listed.err
    assert sorted(row.split()[-1] for row in listed.out.splitlines()[1:]) == sorted(good)
    _assert_nothing_bad_written(fresh)


def test_pull_of_one_hostile_uuid_is_a_clear_error(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Asked for by uuid, a hostile bundle is refused in one line naming its manifest; nothing is written."""
    bad = _plant_hostile(bucket)["year 9999"]
    pulled = dsdt("pull", "-u", bad, "-l")
    assert pulled.code == 1
    assert pulled.err.splitlines() == [
        f"dsdt pull: manifest s3://{bucket}/team/context/shared/objects/{bad}/manifest.json has a creation date "
        "out of range: '9999-12-31T23:59:59+00:00' (not between 1970 and tomorrow)",
        f"hint: the remote copy is damaged or hostile; remove it with `dsdt rmr -u {bad}`",
    ]
    assert api.search(remote_ctx) == []
    _assert_nothing_bad_written(remote_ctx)


def test_incremental_pull_is_not_blocked(remote_ctx: str, bucket: str) -> None:
    """RemoteSync.pull (what --incremental-pull calls) skips hostile manifests cataloged under a
    task's output name, and an apply in a fresh context still reuses the good bundles."""
    api.apply(remote_ctx, p.Double, incremental_push=True)
    for name, label in (("Double", "year 9999"), ("Source", "params a list")):
        plant(bucket, _doc(BAD[label], name, **HOSTILE[label][1]))
    probe = _fresh_context("probe", bucket)
    context = api._context(probe)
    result = RemoteSync(context, context.remote_settings).pull("Double")
    assert [b.name for b in result] == ["Double"] and [u for u, _ in result.skipped] == [BAD["year 9999"]]
    fresh = _fresh_context("fresh", bucket)
    assert api.apply(fresh, p.Double, incremental_pull=True)["did_work"] is False
    reused = api.get(fresh, "Double")
    assert reused is not None and reused.data["doubled"] == [0, 2, 4]
    _assert_nothing_bad_written(fresh)


def test_a_damaged_local_manifest_is_an_error_not_a_crash(  # type: ignore[no-untyped-def]
    dsdt, ctx: str, east_of_utc: None
) -> None:
    """A local bundle whose manifest says year 9999 (left by a pull before dates were checked)
    makes `ls -v` fail in one line with the way out, not an OverflowError; `rm -u` clears it."""
    bundle = api.Bundle(ctx, name="old", data=1)
    manifest = Path(bundle.local_dir) / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "creation_date": "9999-12-31T23:59:59+00:00"}))
    listed = dsdt("ls", "-v")
    assert listed.code == 1 and "creation date out of range" in listed.err and "unexpected" not in listed.err
    assert f"dsdt rm -u {bundle.uuid}" in listed.err
    assert dsdt("rm", "-u", bundle.uuid).code == 0
    assert dsdt("ls", "-v").code == 0


def _assert_pulled_around_corrupt(ctx: str, result: Any, good: dict[str, bytes], bucket: str) -> None:
    """`result` brought exactly the good bundles with their files and named each CORRUPT one
    with its reason; nothing of a corrupt one is in the context."""
    assert sorted(b.uuid for b in result) == sorted(good) == sorted(result.fetched)
    reasons = dict(result.skipped)
    assert sorted(reasons) == sorted(ROTTEN.values())
    for label, (_, reason) in CORRUPT.items():
        assert reasons[ROTTEN[label]].startswith(f"s3://{bucket}/team/context/shared/objects/{ROTTEN[label]}/")
        assert reason in reasons[ROTTEN[label]]
    assert sorted(b.uuid for b in api.search(ctx)) == sorted(good)
    for bundle in api.search(ctx):
        assert bundle.files and all((Path(bundle.local_dir) / f.path).exists() for f in bundle.files)
        assert bundle.data == good[bundle.uuid]
    _assert_nothing_bad_written(ctx, ROTTEN.values())


def test_pull_with_files_skips_and_names_bundles_whose_files_are_corrupt(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid manifests whose objects have another sha256, another size or are missing, in
    batches (three bundles each) with good ones: `pull -l` brings every good bundle with its
    files, names each corrupt one with its reason and keeps nothing of it (no file, no draft, no
    index row); by uuid a corrupt bundle is still a clear BundleCorrupt."""
    monkeypatch.setattr(sync, "PULL_BATCH", 3)
    good = _plant_corrupt_among_good(remote_ctx, bucket)
    fresh = _fresh_context("fresh", bucket)
    with pytest.raises(PartialPull) as caught:
        api.pull(fresh, localize=True)
    assert f"{len(CORRUPT)} remote bundle(s) were skipped as damaged" in caught.value.message
    _assert_pulled_around_corrupt(fresh, caught.value.result, good, bucket)
    for label, (_, reason) in CORRUPT.items():
        with pytest.raises(BundleCorrupt, match=reason):
            api.pull(fresh, uuid=ROTTEN[label], localize=True)
    _assert_nothing_bad_written(fresh, ROTTEN.values())
    by_name = _fresh_context("by_name", bucket)
    with pytest.raises(PartialPull) as caught:
        api.pull(by_name, "model", localize=True)
    names = {b.uuid: b.name for b in api.search(fresh)}
    models = sorted(u for u in good if names[u] == "model")
    assert sorted(b.uuid for b in caught.value.result) == models == sorted(b.uuid for b in api.search(by_name))
    assert sorted(u for u, _ in caught.value.result.skipped) == [ROTTEN["wrong sha256"], ROTTEN["wrong size"]]
    _assert_nothing_bad_written(by_name, ROTTEN.values())


def test_localizing_bundles_already_here_skips_the_corrupt_ones(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a metadata-only pull (the manifests are valid: everything arrives), `pull -l`
    localizes the good bundles and names the corrupt ones, which stay as they were: remote-only,
    the failing file not here, still refused when localized by uuid."""
    monkeypatch.setattr(sync, "PULL_BATCH", 3)
    good = _plant_corrupt_among_good(remote_ctx, bucket)
    fresh = _fresh_context("fresh", bucket)
    assert sorted(b.uuid for b in api.pull(fresh)) == sorted([*good, *ROTTEN.values()])
    with pytest.raises(PartialPull) as caught:
        api.pull(fresh, localize=True)
    result = caught.value.result
    assert sorted(b.uuid for b in result) == sorted(good) == sorted(result.fetched)
    assert sorted(u for u, _ in result.skipped) == sorted(ROTTEN.values())
    context = api._context(fresh)
    for bundle in api.search(fresh):
        if bundle.uuid in good:
            assert all((Path(bundle.local_dir) / f.path).exists() for f in bundle.files)
            assert bundle.data == good[bundle.uuid]
    for label, (_, reason) in CORRUPT.items():
        failing = reason.split()[0]  # the file it fails on (a good file of it may be here, verified)
        assert not (context.bundle_dir(ROTTEN[label]) / failing).exists()
        assert context.is_remote_only(ROTTEN[label])
    with pytest.raises(BundleCorrupt, match=CORRUPT["wrong sha256"][1]):
        api.pull(fresh, uuid=ROTTEN["wrong sha256"], localize=True)
    home = Path(api._store().root) / "context" / fresh
    assert list((home / "tmp").iterdir()) == []
    assert api.verify(fresh).ok


def test_cli_pull_with_files_around_corrupt_bundles(  # type: ignore[no-untyped-def]
    dsdt, remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dsdt pull -l` lists the good bundles, names each corrupt one on stderr with its reason
    and exits 1; `dsdt ls` then lists the good ones and `dsdt verify` is clean; `pull -u UUID -l`
    of a corrupt one is the one-line BundleCorrupt with its hint."""
    monkeypatch.setattr(sync, "PULL_BATCH", 2)
    good = _plant_corrupt_among_good(remote_ctx, bucket)
    fresh = _fresh_context("fresh", bucket)
    assert dsdt("switch", fresh).code == 0
    pulled = dsdt("pull", "-l")
    assert pulled.code == 1, pulled.err
    assert "unexpected" not in pulled.err and "Traceback" not in pulled.err
    for label, (_, reason) in CORRUPT.items():
        uuid = ROTTEN[label]
        assert f"skipped {uuid}: s3://{bucket}/team/context/shared/objects/{uuid}/{reason}" in pulled.err
    assert f"{len(CORRUPT)} remote bundle(s) were skipped as damaged" in pulled.err
    assert f"hint: delete a damaged remote copy with `dsdt rmr -u {min(ROTTEN.values())}`" in pulled.err
    lines = pulled.out.splitlines()
    assert sorted(line.split()[1] for line in lines[:-1]) == sorted(good)
    assert (
        lines[-1]
        == f"0 already here, {len(good)} pulled with their files, {len(CORRUPT)} skipped (damaged on the remote)"
    )
    listed = dsdt("ls", "-v")
    assert listed.code == 0, listed.err
    assert sorted(row.split()[-1] for row in listed.out.splitlines()[1:]) == sorted(good)
    assert sorted(dsdt("ls").out.splitlines()) == ["model", "model", "report", "report"]
    assert dsdt("verify").code == 0
    one = dsdt("pull", "-u", ROTTEN["wrong sha256"], "-l")
    assert one.code == 1
    assert one.err.splitlines()[-2:] == [  # after the progress bar
        f"dsdt pull: s3://{bucket}/team/context/shared/objects/{ROTTEN['wrong sha256']}/data/hello.txt "
        "does not match the sha256 in its manifest; nothing kept",
        "hint: the remote copy is damaged: push the bundle again from a good copy",
    ]
    _assert_nothing_bad_written(fresh, ROTTEN.values())
