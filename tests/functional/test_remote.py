"""The S3 remote against a real S3 protocol server (moto over HTTP): push, pull, rmr, localize."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest

from disdat_luigi import api
from disdat_luigi.config import load_settings
from disdat_luigi.errors import (
    BucketNotFound,
    BundleCorrupt,
    BundleNotFound,
    BundleStateError,
    CredentialsError,
    InvalidName,
    ManifestRejected,
    NotCommitted,
    PartialPull,
    RemoteNotConfigured,
)
from disdat_luigi.store.remote import sync, transfer
from disdat_luigi.store.remote.s3 import S3
from tests.functional.test_values import ARRAYS, CONTAINERS, FRAMES, SCALARS, _same


def _fresh_context(name: str, bucket: str) -> str:
    api.context(name)
    api.remote(name, "shared", f"s3://{bucket}/team")
    return name


def _keys(bucket: str, prefix: str = "") -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def _sent() -> Iterator[list[tuple[str, Any]]]:
    """(operation, prepared request) of every request the shared S3 client sends meanwhile."""
    sent: list[tuple[str, Any]] = []
    client = S3(load_settings().remote).client  # the one client push and pull use

    def record(request: Any, event_name: str, **_: Any) -> None:
        sent.append((event_name.rsplit(".", 1)[-1], request))

    client.meta.events.register("before-send.s3", record)
    try:
        yield sent
    finally:
        client.meta.events.unregister("before-send.s3", record)


VALUES = SCALARS[::3] + CONTAINERS[::2] + ARRAYS[:3] + FRAMES[:4]


@pytest.mark.parametrize("localize", [False, True], ids=["metadata", "localized"])
def test_every_value_type_round_trips_through_the_remote(remote_ctx: str, bucket: str, localize: bool) -> None:
    """push -> a fresh context -> pull gives back every value exactly, with or without localizing."""
    made = []
    for i, value in enumerate(VALUES):
        bundle = api.Bundle(remote_ctx, name=f"v{i}", data=value).commit()
        made.append((bundle.uuid, value))
    result = api.push(remote_ctx)
    assert sorted(result.pushed) == sorted(u for u, _ in made)
    other = _fresh_context("other", bucket)
    pulled = api.pull(other, localize=localize)
    assert len(pulled) == len(made)
    for uuid, value in made:
        got = api.get(other, None, uuid=uuid)
        assert got.is_committed
        _same(value, got.data)


def test_layout_keeps_disdat_shape(remote_ctx: str, bucket: str) -> None:
    """Objects live under <prefix>/context/<remote context>/objects/<uuid>/, manifest included."""
    bundle = api.Bundle(remote_ctx, name="shape", data=np.arange(3)).commit()
    api.push(remote_ctx, "shape")
    keys = _keys(bucket, f"team/context/shared/objects/{bundle.uuid}/")
    assert f"team/context/shared/objects/{bundle.uuid}/manifest.json" in keys
    assert any(k.endswith(".npy") for k in keys)
    assert bundle.remote_dir == f"s3://{bucket}/team/context/shared/objects/{bundle.uuid}"


def test_push_needs_a_commit(remote_ctx: str) -> None:
    """Pushing an uncommitted bundle by name or uuid is an error, not a silent no-op."""
    bundle = api.Bundle(remote_ctx, name="draft", data=1)
    with pytest.raises(NotCommitted, match="not committed"):
        api.push(remote_ctx, "draft")
    with pytest.raises(NotCommitted):
        api.push(remote_ctx, uuid=bundle.uuid)
    with pytest.raises(NotCommitted):
        bundle.push()
    assert api.push(remote_ctx).pushed == []


def test_push_without_name_sends_only_what_is_missing(remote_ctx: str) -> None:
    """A second push finds everything already on the remote and uploads nothing."""
    for i in range(3):
        api.Bundle(remote_ctx, name=f"b{i}", data=[i] * 10).commit()
    first = api.push(remote_ctx)
    assert len(first.pushed) == 3
    second = api.push(remote_ctx)
    assert second.pushed == [] and len(second.already_remote) == 3 and second.uploaded == 0


def test_repush_lists_the_catalog_once_per_name_and_heals_it(remote_ctx: str, bucket: str) -> None:
    """Pushing everything again costs one list per name, not requests per bundle; a bundle whose
    catalog entry went missing is found complete by its manifest and its entry written back."""
    made = [api.Bundle(remote_ctx, name=f"n{i % 2}", data=pd.DataFrame({"a": [i]})).commit() for i in range(6)]
    api.push(remote_ctx)
    with _sent() as sent:
        again = api.push(remote_ctx)
    assert sorted(again.already_remote) == sorted(b.uuid for b in made) and again.pushed == []
    assert [op for op, _ in sent] == ["ListObjectsV2", "ListObjectsV2"]
    entry = f"team/context/shared/catalog/n0/{made[0].uuid}"
    boto3.client("s3").delete_object(Bucket=bucket, Key=entry)
    with _sent() as sent:
        healed = api.push(remote_ctx)
    assert healed.pushed == [] and healed.uploaded == 0 and made[0].uuid in healed.already_remote
    assert entry in _keys(bucket, "team/context/shared/catalog/")
    assert not [op for op, _ in sent if op in ("UploadPart", "CreateMultipartUpload")]
    assert [r.url for op, r in sent if op == "PutObject"] == [
        f"{boto3.client('s3').meta.endpoint_url}/{bucket}/{entry}"
    ]


def test_pull_by_name_brings_every_version(remote_ctx: str, bucket: str) -> None:
    """pull NAME brings all versions of that name, newest first; pull -u one bundle."""
    versions = [api.Bundle(remote_ctx, name="model", data=i).commit() for i in range(3)]
    api.Bundle(remote_ctx, name="other", data=9).commit()
    api.push(remote_ctx)
    fresh = _fresh_context("fresh", bucket)
    pulled = api.pull(fresh, "model")
    assert [b.uuid for b in pulled] == [b.uuid for b in reversed(versions)]
    assert api.get(fresh, "other") is None
    only = api.pull(fresh, uuid=versions[0].uuid)
    assert [b.data for b in only] == [0]
    with pytest.raises(BundleNotFound, match="not on the remote"):
        api.pull(fresh, uuid="00000000-0000-0000-0000-000000000000")


class _Recorder:
    """A Progress that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, files: int, nbytes: int) -> None:
        self.calls.append(("start", files, nbytes))

    def advance(self, nbytes: int) -> None:
        self.calls.append(("advance", nbytes))

    def file_done(self, nbytes: int) -> None:
        self.calls.append(("done", nbytes))

    def close(self) -> None:
        self.calls.append(("close",))


def test_pull_in_batches_with_a_bundle_already_here(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles are pulled a batch at a time (here 2); one already pulled (metadata only) is
    localized in place; everything arrives, verified."""
    monkeypatch.setattr(sync, "PULL_BATCH", 2)
    frames = {api.Bundle(remote_ctx, name="f", data=pd.DataFrame({"a": [i] * 3})).commit().uuid: i for i in range(5)}
    api.push(remote_ctx)
    fresh = _fresh_context("fresh", bucket)
    early = next(iter(frames))
    api.pull(fresh, uuid=early)
    progress = _Recorder()
    with _sent() as sent:
        pulled = api.pull(fresh, localize=True, progress=progress)
    assert sorted(b.uuid for b in pulled) == sorted(frames)
    # the manifests of the 4 bundles not yet here (not of the one that is), then the 5 data files
    assert len([op for op, _ in sent if op == "GetObject"]) == 4 + 5
    sizes = [f.size for b in pulled for f in b.files]
    assert len(sizes) == 5 and progress.calls[0] == ("start", 5, sum(sizes)) and progress.calls[-1] == ("close",)
    assert sorted(progress.calls[1:-1]) == sorted(("done", n) for n in sizes)  # one bar for every batch
    for bundle in pulled:
        assert bundle.data["a"].tolist() == [frames[bundle.uuid]] * 3
        assert bundle.files and all((Path(bundle.local_dir) / f.path).exists() for f in bundle.files)
    assert api.verify(fresh).ok


def test_corrupt_file_skips_its_bundle_and_the_batch_goes_on(
    remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt file skips its own bundle, named with the reason, and keeps nothing of it (no
    file, no draft, no index row); the other bundles of its batch and of later batches arrive
    with their files, and the context verifies."""
    monkeypatch.setattr(sync, "PULL_BATCH", 2)
    made = [api.Bundle(remote_ctx, name="g", data=b"%d" % i * 20_000).commit() for i in range(4)]
    api.push(remote_ctx)
    bad = made[1]
    key = next(k for k in _keys(bucket, f"team/context/shared/objects/{bad.uuid}/") if k.endswith(".bin"))
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"x" * 20_000)
    fresh = _fresh_context("fresh", bucket)
    with pytest.raises(PartialPull) as caught:
        api.pull(fresh, localize=True)
    result = caught.value.result
    ((skipped, reason),) = result.skipped
    assert (
        skipped == bad.uuid and reason == f"s3://{bucket}/{key} does not match the sha256 in its manifest; nothing kept"
    )
    good = {b.uuid: b.data for b in made if b.uuid != bad.uuid}
    assert sorted(b.uuid for b in result) == sorted(result.fetched) == sorted(good)
    assert api.get(fresh, None, uuid=bad.uuid) is None
    for uuid, data in good.items():
        got = api.get(fresh, None, uuid=uuid)
        assert got is not None and got.data == data and not api._context(fresh).is_remote_only(uuid)
    assert api.verify(fresh).ok
    home = Path(api._store().root) / "context" / fresh
    assert list((home / "tmp").iterdir()) == [] and not (home / "objects" / bad.uuid).exists()


def test_files_stay_remote_until_localized(remote_ctx: str, bucket: str) -> None:
    """A metadata-only pull presents s3:// paths; localize downloads them, delocalize drops them."""
    with api.Bundle(remote_ctx, name="files") as bundle:
        path = bundle.get_file("sub/out.txt")
        Path(path).write_text("payload")
        bundle.add_data({"out": path})
    bundle.commit()
    api.push(remote_ctx, "files")
    fresh = _fresh_context("fresh", bucket)
    (pulled,) = api.pull(fresh, "files")
    url = pulled.data["out"]
    assert url == f"s3://{bucket}/team/context/shared/objects/{bundle.uuid}/data/sub/out.txt"
    local = pulled.localize(url)
    assert Path(local).read_text() == "payload" and pulled.data["out"] == local
    assert pulled.delocalize(local) == url
    assert not Path(local).exists() and pulled.data["out"] == url
    with pytest.raises(InvalidName, match="not a file of bundle"):
        pulled.localize("s3://elsewhere/x")
    assert api.verify(fresh).ok


def test_push_delocalize_drops_local_copies(remote_ctx: str) -> None:
    """push -d removes local data files after the push; the data is still readable."""
    frame = pd.DataFrame({"a": range(10)})
    bundle = api.Bundle(remote_ctx, name="big", data=frame).commit()
    api.push(remote_ctx, "big", delocalize=True)
    local_values = list(Path(bundle.local_dir, "values").glob("*"))
    assert local_values == []
    pd.testing.assert_frame_equal(api.get(remote_ctx, "big").data, frame)
    assert api.verify(remote_ctx).ok


def test_corrupted_remote_file_is_detected_and_nothing_kept(remote_ctx: str, bucket: str) -> None:
    """A remote file whose bytes changed fails the sha256 check: by uuid the pull is BundleCorrupt,
    by name the bundle is skipped and named; either leaves no bundle, no part file."""
    bundle = api.Bundle(remote_ctx, name="c", data=b"A" * 50_000).commit()
    api.push(remote_ctx, "c")
    key = next(k for k in _keys(bucket, f"team/context/shared/objects/{bundle.uuid}/") if k.endswith(".bin"))
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"B" * 50_000)
    fresh = _fresh_context("fresh", bucket)
    with pytest.raises(BundleCorrupt, match="does not match the sha256"):
        api.pull(fresh, uuid=bundle.uuid, localize=True)
    with pytest.raises(PartialPull, match="does not match the sha256") as caught:
        api.pull(fresh, "c", localize=True)
    assert list(caught.value.result) == [] and [u for u, _ in caught.value.result.skipped] == [bundle.uuid]
    assert api.get(fresh, "c") is None
    home = Path(api._store().root) / "context" / fresh
    assert list((home / "tmp").iterdir()) == [] and list((home / "objects").iterdir()) == []
    (meta_only,) = api.pull(fresh, "c")
    with pytest.raises(BundleCorrupt):
        _ = meta_only.data


def test_one_corrupt_file_among_many_names_the_damage(remote_ctx: str, bucket: str, dsdt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With more files than transfer threads, a corrupt one still fails the pull with its own
    error and hint (not the cancellation of the files left waiting), and nothing is kept; by
    name, the bundle is skipped and named with that same reason."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"part-{i:02d}.bin").write_bytes(bytes([i]) * 4096)
    bundle = api.add(remote_ctx, "many", tree)
    api.commit(remote_ctx, "many")
    api.push(remote_ctx, "many")
    key = f"team/context/shared/objects/{bundle.uuid}/data/part-00.bin"
    assert key in _keys(bucket, f"team/context/shared/objects/{bundle.uuid}/")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"\xff" * 4096)
    fresh = _fresh_context("fresh", bucket)
    assert dsdt("switch", fresh).code == 0
    pulled = dsdt("pull", "-u", bundle.uuid, "-l")
    assert pulled.code == 1
    assert (
        "does not match the sha256 in its manifest" in pulled.err and "hint: the remote copy is damaged" in pulled.err
    )
    assert api.get(fresh, "many") is None
    pulled = dsdt("pull", "many", "-l")
    assert pulled.code == 1
    assert f"skipped {bundle.uuid}: s3://{bucket}/{key} does not match the sha256 in its manifest" in pulled.err
    assert api.get(fresh, "many") is None
    home = Path(api._store().root) / "context" / fresh
    assert list((home / "tmp").iterdir()) == [] and list((home / "objects").iterdir()) == []


def test_large_file_multipart_round_trip_and_corruption(remote_ctx: str, bucket: str) -> None:
    """A file past the multipart threshold and the writeback step goes up in parts, comes back
    byte-exact; a flipped byte in the remote copy fails the pull and keeps nothing."""
    payload = np.random.default_rng(7).bytes(40 * 1024 * 1024 + 123)
    with api.Bundle(remote_ctx, name="large") as bundle:
        path = bundle.get_file("blob.bin")
        Path(path).write_bytes(payload)
        bundle.add_data(path)
    bundle.commit()
    with _sent() as sent:
        api.push(remote_ctx, "large")
    parts = [{k.lower(): _text(v) for k, v in r.headers.items()} for op, r in sent if op == "UploadPart"]
    # loopback endpoint: no SHA-256 pass for the signature, but every part carries its SHA-256
    # checksum, which S3 checks and keeps (what `push -d` later trusts)
    assert len(parts) == 6
    assert all(h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD" and "x-amz-checksum-sha256" in h for h in parts)
    key = f"team/context/shared/objects/{bundle.uuid}/data/blob.bin"
    client = boto3.client("s3")
    assert client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"').endswith("-6")  # 5 x 8 MiB + the rest
    fresh = _fresh_context("fresh", bucket)
    (pulled,) = api.pull(fresh, "large", localize=True)
    assert Path(pulled.data).read_bytes() == payload
    client.put_object(Bucket=bucket, Key=key, Body=payload[:-1] + b"\0")
    other = _fresh_context("other", bucket)
    with pytest.raises(BundleCorrupt, match="does not match the sha256"):
        api.pull(other, uuid=bundle.uuid, localize=True)
    home = Path(api._store().root) / "context" / other
    assert list((home / "tmp").iterdir()) == [] and list((home / "objects").iterdir()) == []


def test_progress_counts_a_large_file_while_it_moves(remote_ctx: str, bucket: str) -> None:
    """Push and pull of one 40 MiB file report its bytes as they move, not only once it is done;
    what is reported adds up to the file's size, and an unchanged file reports no movement."""
    size = 40 * 1024 * 1024
    with api.Bundle(remote_ctx, name="large") as bundle:
        path = bundle.get_file("blob.bin")
        Path(path).write_bytes(np.random.default_rng(3).bytes(size))
        bundle.add_data(path)
    bundle.commit()
    fresh = _fresh_context("fresh", bucket)
    moves = (
        lambda p: api.push(remote_ctx, "large", progress=p),
        lambda p: api.pull(fresh, "large", localize=True, progress=p),
    )
    for move in moves:
        progress = _Recorder()
        move(progress)
        advanced = [c[1] for c in progress.calls if c[0] == "advance"]
        (done,) = [c[1] for c in progress.calls if c[0] == "done"]
        assert progress.calls[0] == ("start", 1, size) and progress.calls[-1] == ("close",)
        assert len(advanced) >= 20 and all(n >= transfer.METER_STEP for n in advanced)
        assert sum(advanced) + done == size and done < transfer.METER_STEP
    # with its manifest gone the bundle is incomplete on the remote; the push resumes, skipping the file
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"team/context/shared/objects/{bundle.uuid}/manifest.json")
    progress = _Recorder()
    assert api.push(remote_ctx, "large", progress=progress).uploaded == 0
    assert progress.calls == [("start", 1, size), ("done", size), ("close",)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _plant_manifest(bucket: str, uuid: str, manifest: dict[str, Any], name: str = "evil") -> None:
    import json

    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key=f"team/context/shared/objects/{uuid}/manifest.json", Body=json.dumps(manifest))
    client.put_object(Bucket=bucket, Key=f"team/context/shared/catalog/{name}/{uuid}", Body=b"")


def _manifest_doc(uuid: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": 1,
        "uuid": uuid,
        "name": "evil",
        "processing_name": "evil",
        "owner": "x",
        "creation_date": "2026-01-01T00:00:00+00:00",
        "data": {"t": "none"},
        "files": files,
    }


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([{"path": "../../../../etc/passwd", "size": 1, "sha256": "a" * 64}], "outside its bundle"),
        ([{"path": "/tmp/x", "size": 1, "sha256": "a" * 64}], "outside its bundle"),
        ([{"path": "data/x", "size": -5, "sha256": "a" * 64}], "invalid size"),
    ],
    ids=["traversal", "absolute", "size"],
)
def test_hostile_remote_manifest_is_rejected(remote_ctx: str, bucket: str, files: Any, message: str) -> None:
    """A remote manifest naming paths outside its bundle (or nonsense) is refused; nothing is written."""
    uuid = "11111111-2222-3333-4444-555555555555"
    _plant_manifest(bucket, uuid, _manifest_doc(uuid, files))
    with pytest.raises(ManifestRejected, match=message):
        api.pull(remote_ctx, "evil", localize=True)
    assert api.search(remote_ctx) == []


def test_manifest_claiming_another_uuid_is_rejected(remote_ctx: str, bucket: str) -> None:
    """A manifest stored under one uuid but naming another is refused."""
    _plant_manifest(
        bucket, "11111111-2222-3333-4444-555555555555", _manifest_doc("99999999-0000-0000-0000-000000000000", [])
    )
    with pytest.raises(ManifestRejected, match="claims to be bundle"):
        api.pull(remote_ctx, "evil")


def test_pull_of_a_damaged_remote_manifest_names_its_uuid_in_the_hint(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """`dsdt pull -u UUID` of a damaged remote manifest fails, and its hint names the command
    that removes it, with that uuid."""
    uuid = "11111111-2222-3333-4444-555555555555"
    _plant_manifest(bucket, uuid, _manifest_doc(uuid, [{"path": "data/x", "size": -5, "sha256": "a" * 64}]))
    pulled = dsdt("pull", "-u", uuid)
    assert pulled.code != 0
    assert f"remove it with `dsdt rmr -u {uuid}`" in pulled.err
    assert "UUID`" not in pulled.err


def test_push_of_a_bundle_whose_remote_manifest_has_another_layout(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A bundle published by another writer (its manifest laid out otherwise) and pulled here
    is the same bundle: `dsdt push -u` says it is already there and `dsdt push -d -u` drops its
    local files, which then read back from the remote."""
    uuid = _pushed_relaid(remote_ctx, bucket)
    pushed = dsdt("push", "-u", uuid)
    assert pushed.code == 0, pushed.err
    dropped = dsdt("push", "-d", "-u", uuid)
    assert dropped.code == 0, dropped.err
    assert "dropped the local files of 1 bundle(s)" in dropped.out
    assert api.cat(remote_ctx, "relaid") == {"v": 1}


def _pushed_relaid(ctx: str, bucket: str) -> str:
    """A bundle pushed from another context whose remote manifest is then rewritten with other
    whitespace and key order, pulled (with its files) into `ctx`; its uuid."""
    api.context("writer")
    api.remote("writer", "shared", f"s3://{bucket}/team")
    bundle = api.Bundle("writer", name="relaid", data={"v": 1})
    api.commit("writer", None, uuid=bundle.uuid)
    api.push("writer", uuid=bundle.uuid)
    key = f"team/context/shared/objects/{bundle.uuid}/manifest.json"
    client = boto3.client("s3")
    doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    relaid = json.dumps(dict(reversed(list(doc.items()))), indent=3).encode()
    client.put_object(Bucket=bucket, Key=key, Body=relaid)
    api.pull(ctx, uuid=bundle.uuid, localize=True)
    return bundle.uuid


PUSHER = """
import sys
from pathlib import Path
from disdat_luigi import api
ctx = sys.argv[1]
with api.Bundle(ctx, name="many") as b:
    paths = []
    for j in range(300):
        p = b.get_file(f"f{j:03d}.bin")
        Path(p).write_bytes(bytes([j % 256]) * 20000)
        paths.append(p)
    b.add_data(paths)
b.commit()
print(b.uuid, flush=True)
api.push(ctx, "many")
"""


def test_interrupted_push_is_invisible_then_resumes(remote_ctx: str, bucket: str) -> None:
    """Killing a push mid-way publishes nothing; the next push uploads only what is missing."""
    proc = subprocess.Popen([sys.executable, "-c", PUSHER, remote_ctx], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    uuid = proc.stdout.readline().strip()
    prefix = f"team/context/shared/objects/{uuid}/"
    deadline = time.time() + 60
    while len(_keys(bucket, prefix)) < 20 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    uploaded_before = len(_keys(bucket, prefix))
    assert 0 < uploaded_before < 300, "the kill should land mid-push"
    fresh = _fresh_context("fresh", bucket)
    assert api.pull(fresh) == [] and api.search(fresh) == []
    result = api.push(remote_ctx, "many")
    assert result.pushed == [uuid]
    assert result.uploaded <= 300 - uploaded_before + 10  # files already there were skipped
    (pulled,) = api.pull(fresh, "many", localize=True)
    assert [Path(p).read_bytes()[:1] for p in pulled.data] == [bytes([j % 256]) for j in range(300)]


def test_rmr_rules_and_dry_run(remote_ctx: str, bucket: str) -> None:
    """rmr refuses 'everything' without rm_all, dry runs delete nothing, deletes leave no object."""
    versions = [api.Bundle(remote_ctx, name="r", data=i).commit() for i in range(2)]
    keep = api.Bundle(remote_ctx, name="keep", data=1).commit()
    api.push(remote_ctx)
    with pytest.raises(BundleStateError, match="every bundle on the remote"):
        api.rmr(remote_ctx)
    assert [m.uuid for m in api.rmr(remote_ctx, "r", dry_run=True)] == [versions[1].uuid]
    assert len(api.pull(_fresh_context("f1", bucket))) == 3
    api.rmr(remote_ctx, "r")
    assert {b.uuid for b in api.pull(_fresh_context("f2", bucket))} == {versions[0].uuid, keep.uuid}
    api.rmr(remote_ctx, rm_all=True)
    assert _keys(bucket, "team/") == []
    assert api.get(remote_ctx, "keep") is not None  # local copies stay


def test_delete_context_with_remote(remote_ctx: str, bucket: str) -> None:
    """delete_context(remote=True) removes the remote context's objects too."""
    api.Bundle(remote_ctx, name="x", data=1).commit()
    api.push(remote_ctx)
    assert _keys(bucket, "team/context/shared/")
    api.delete_context(remote_ctx, remote=True)
    assert _keys(bucket, "team/context/shared/") == []


def test_server_side_encryption_is_configurable(remote_ctx: str, bucket: str, disdat_env: Path) -> None:
    """With [remote] server_side_encryption = AES256 every object is written encrypted."""
    cfg = disdat_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace("server_side_encryption = none", "server_side_encryption = AES256"))
    bundle = api.Bundle(remote_ctx, name="enc", data=b"x" * 10_000).commit()
    api.push(remote_ctx, "enc")
    client = boto3.client("s3")
    for key in _keys(bucket, f"team/context/shared/objects/{bundle.uuid}/"):
        assert client.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "AES256"


def test_bad_remote_setups_give_clear_errors(
    ctx: str, aws_env: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unbound context, missing bucket, bad URL and missing credentials each raise a clear error."""
    with pytest.raises(RemoteNotConfigured, match="not bound to a remote") as info:
        api.push(ctx)
    assert "dsdt remote" in info.value.hint
    with pytest.raises(BucketNotFound, match="does not exist"):
        api.remote(ctx, "shared", "s3://no-such-bucket-here/x")
    with pytest.raises(InvalidName, match="not an s3:// URL"):
        api.remote(ctx, "shared", "http://bucket/x")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        api.remote(ctx, "shared", f"s3://{bucket}/x")


def test_cli_remote_push_pull_rmr(dsdt, ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """The documented flow from the command line, with progress on stderr and results on stdout."""
    assert dsdt("remote", "shared", f"s3://{bucket}/team").code == 0
    api.Bundle(ctx, name="cli", data=[1, 2]).commit()
    api.Bundle(ctx, name="blob", data=b"x" * 10_000).commit()
    pushed = dsdt("push", "blob")
    assert pushed.code == 0 and pushed.out.startswith("pushed 1 bundle(s) (1 files")
    assert "push:" in pushed.err and "9.77k" in pushed.err and "/1 files" in pushed.err  # the bar, on stderr
    pushed = dsdt("push", "cli")
    assert pushed.code == 0 and pushed.out.startswith("pushed 1 bundle(s)")

    assert dsdt("context", "other").code == 0 and dsdt("switch", "other").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/team").code == 0
    pulled = dsdt("pull", "cli", "-l")
    assert pulled.code == 0 and "0 already here, 1 pulled with their files" in pulled.out
    assert dsdt("cat", "cli").out.strip() == "[1, 2]"
    dry = dsdt("rmr", "cli", "--dryrun")
    assert dry.out.startswith("would delete cli ")
    refused = dsdt("rmr")
    assert refused.code == 1 and "--all" in refused.err
    assert dsdt("rmr", "cli").out.strip().endswith("deleted 1 bundle(s) from the remote")
    assert dsdt("push", "-u", "nope").code == 1


def test_remote_files_written_by_the_caller(remote_ctx: str, bucket: str) -> None:
    """get_remote_file/get_remote_directory paths written directly on S3 become part of the bundle."""
    client = boto3.client("s3")
    with api.Bundle(remote_ctx, name="direct") as bundle:
        target = bundle.get_remote_file("model.bin")
        folder = bundle.get_remote_directory("shards")
        for url, body in [(target, b"weights"), (f"{folder}/0.txt", b"zero"), (f"{folder}/sub/1.txt", b"one")]:
            key = url[len(f"s3://{bucket}/") :]
            client.put_object(Bucket=bucket, Key=key, Body=body)
        bundle.add_data({"model": target, "shards": folder})
    assert bundle.data == {"model": target, "shards": folder}
    assert {f.path for f in bundle.files} == {"data/model.bin", "data/shards/0.txt", "data/shards/sub/1.txt"}
    bundle.commit()
    api.push(remote_ctx, "direct")
    (pulled,) = api.pull(_fresh_context("fresh", bucket), "direct", localize=True)
    assert Path(pulled.data["model"]).read_bytes() == b"weights"
    assert Path(pulled.data["shards"], "sub", "1.txt").read_bytes() == b"one"


def test_outside_s3_files_are_copied_in(remote_ctx: str, bucket: str) -> None:
    """An existing s3:// file returned as data is copied into the bundle's remote directory."""
    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="raw/2026/a.csv", Body=b"a")
    client.put_object(Bucket=bucket, Key="raw/2026/deep/b.csv", Body=b"b")
    bundle = api.Bundle(
        remote_ctx, name="copied", data=[f"s3://{bucket}/raw/2026/a.csv", f"s3://{bucket}/raw/2026/deep/b.csv"]
    )
    assert bundle.data == [f"{bundle.remote_dir}/data/a.csv", f"{bundle.remote_dir}/data/deep/b.csv"]
    client.delete_object(Bucket=bucket, Key="raw/2026/a.csv")
    assert bundle.localize(bundle.data[0]).endswith("/data/a.csv")
    assert Path(bundle.data[0]).read_bytes() == b"a"


def test_s3_values_need_an_existing_object(ctx: str, remote_ctx: str, bucket: str) -> None:
    """An s3:// value that does not exist fails and leaves no bundle, with or without a remote;
    a managed remote path needs a remote."""
    api.context("lonely")
    from disdat_luigi.errors import PathNotFound

    with pytest.raises(PathNotFound, match="does not exist"):
        api.Bundle("lonely", name="x", data=f"s3://{bucket}/whatever")
    with pytest.raises(RemoteNotConfigured):
        api.Bundle("lonely", name="y").open().get_remote_file("f")
    with pytest.raises(PathNotFound, match="does not exist"):
        api.Bundle(remote_ctx, name="x", data=f"s3://{bucket}/missing/object")
    assert api.search(remote_ctx) == [] and api.search("lonely") == []


def test_unknown_profile_is_a_clear_error(dsdt, ctx: str, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--profile names an AWS profile; an unknown one is one clear line, and a known one is used."""
    config = tmp_path / "aws-config"
    config.write_text("[profile team]\nregion = us-east-1\naws_access_key_id = team\naws_secret_access_key = team\n")
    import os

    os.environ["AWS_CONFIG_FILE"] = str(config)
    missing = dsdt("--profile", "nope", "remote", "shared", f"s3://{bucket}/x")
    assert missing.code == 1 and "profile (nope) could not be found" in missing.err.splitlines()[0]
    assert dsdt("--profile", "team", "remote", "shared", f"s3://{bucket}/x").code == 0
    del os.environ["AWS_PROFILE"]


def test_push_says_what_it_left_and_what_it_dropped(dsdt, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A push names the uncommitted bundles it did not push, and `push -d` that the local files went."""
    kept = api.Bundle(remote_ctx, name="kept", data=__file__).commit()  # a file: -d has something to drop
    api.add(remote_ctx, "draft", __file__)  # added bundles start uncommitted
    pushed = dsdt("push")
    assert pushed.code == 0 and "1 uncommitted bundle(s) not pushed: `dsdt commit` them first" in pushed.err
    dropped = dsdt("push", "-d", "kept")
    assert dropped.code == 0 and "dropped the local files of 1 bundle(s)" in dropped.out, dropped.out
    assert not Path(str(api.get(remote_ctx, None, uuid=kept.uuid).data)).exists()  # its file is on the remote only
