"""A remote object is trusted by the SHA-256 checksum S3 keeps for it, never by its sha256 label:
what push and push -d do when the bytes under a matching label are not the bundle's, and what a
normal push costs in requests."""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.config import load_settings
from disdat_luigi.errors import BundleCorrupt
from disdat_luigi.store.remote.s3 import S3

MIB = 1024 * 1024
SIZES = [pytest.param(5000, id="put_object"), pytest.param(9 * MIB, id="multipart")]
PREFIX = "team/context/shared/objects"


def _key(uuid: str) -> str:
    return f"{PREFIX}/{uuid}/values/0.bin"


def _value(bundle: Any) -> Path:
    return Path(bundle.local_dir) / "values" / "0.bin"


def _plant(bucket: str, key: str, data: bytes, label: str, checksum: bool) -> None:
    """What another writer (or the upload of an earlier release) leaves at `key`: `data` under
    the sha256 label `label`, with S3's SHA-256 checksum of `data` or without one."""
    extra: dict[str, Any] = {"Metadata": {"sha256": label}}
    if checksum:
        extra["ChecksumAlgorithm"] = "SHA256"
    boto3.client("s3").upload_fileobj(io.BytesIO(data), bucket, key, ExtraArgs=extra)


def _remote_bytes(bucket: str, key: str) -> bytes:
    body: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def _peer_pulls(name: str, bucket: str, bundle_name: str) -> bytes:
    api.context(name)
    api.remote(name, "shared", f"s3://{bucket}/team")
    (pulled,) = api.pull(name, bundle_name, localize=True)
    return Path(pulled.local_dir, "values", "0.bin").read_bytes()


@contextlib.contextmanager
def _requests() -> Iterator[collections.Counter[str]]:
    """How many requests of each operation the shared S3 client sends meanwhile; GetObject of a
    data file (not a manifest) is also counted as "GetData"."""
    counts: collections.Counter[str] = collections.Counter()
    client = S3(load_settings().remote).client  # the one client push and pull use

    def record(request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        counts[operation] += 1
        if operation == "GetObject" and "/manifest.json" not in request.url:
            counts["GetData"] += 1

    client.meta.events.register("before-send.s3", record)
    try:
        yield counts
    finally:
        client.meta.events.unregister("before-send.s3", record)


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "checksum-of-those-bytes"])
@pytest.mark.parametrize("size", SIZES)
def test_push_d_uploads_again_over_other_bytes_under_the_right_label(
    remote_ctx: str, bucket: str, size: int, checksum: bool
) -> None:
    """The reported loss: a push of a file edited in place left its bytes at the key under the
    good sha256 label (its clean-up delete failed); with the good file back, push -d uploads it
    again instead of skipping it, only then drops the local copy, and a peer pulls good bytes."""
    good = b"g" * size
    bundle = api.Bundle(remote_ctx, name="b", data=good).commit()
    _plant(bucket, _key(bundle.uuid), b"e" * size, hashlib.sha256(good).hexdigest(), checksum)
    with _requests() as sent:
        result = api.push(remote_ctx, "b", delocalize=True)
    assert result.uploaded == 1 and result.pushed == [bundle.uuid]
    assert sent["PutObject"] + sent["UploadPart"] >= 2  # the data file again, then the manifest
    assert not _value(bundle).exists()
    assert _remote_bytes(bucket, _key(bundle.uuid)) == good
    assert _peer_pulls("peer", bucket, "b") == good


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "checksum-of-those-bytes"])
@pytest.mark.parametrize("size", SIZES)
def test_push_d_keeps_the_local_copy_when_a_writer_replaced_the_object_keeping_its_label(
    remote_ctx: str, bucket: str, dsdt: Any, size: int, checksum: bool
) -> None:
    """A bucket writer replaced a published object with other bytes of the same size and kept its
    sha256 label: push -d refuses with BundleCorrupt and drops nothing (the CLI says how to
    republish); following that hint, a peer pulls the good bytes."""
    good = b"g" * size
    bundle = api.Bundle(remote_ctx, name="b", data=good).commit()
    api.push(remote_ctx, "b")
    _plant(bucket, _key(bundle.uuid), b"r" * size, hashlib.sha256(good).hexdigest(), checksum)
    with pytest.raises(BundleCorrupt, match="does not match its manifest; no local copy was dropped"):
        api.push(remote_ctx, "b", delocalize=True)
    assert _value(bundle).read_bytes() == good
    kept = api.get(remote_ctx, "b")
    assert kept is not None and kept.data == good
    refused = dsdt("push", "-d", "b")
    assert refused.code == 1 and f"dsdt rmr -u {bundle.uuid}" in refused.err and "Traceback" not in refused.err
    assert _value(bundle).read_bytes() == good
    api.rmr(remote_ctx, uuid=bundle.uuid)
    api.push(remote_ctx, uuid=bundle.uuid, delocalize=True)
    assert not _value(bundle).exists()
    assert _peer_pulls("peer", bucket, "b") == good


def test_good_bytes_without_a_checksum_are_read_back_before_dropping(remote_ctx: str, bucket: str) -> None:
    """An object that holds the right bytes but no SHA-256 checksum (pushed by an earlier
    release) is read back and hashed once; then push -d drops the local copy."""
    good = b"o" * 5000
    bundle = api.Bundle(remote_ctx, name="b", data=good).commit()
    api.push(remote_ctx, "b")
    _plant(bucket, _key(bundle.uuid), good, hashlib.sha256(good).hexdigest(), checksum=False)
    with _requests() as sent:
        api.push(remote_ctx, "b", delocalize=True)
    assert sent["GetData"] == 1  # read back once (the manifest is compared byte for byte, as before)
    assert not _value(bundle).exists()
    read = api.get(remote_ctx, "b")
    assert read is not None and read.data == good


def test_a_checksum_naming_other_content_blocks_the_drop_without_a_download(remote_ctx: str, bucket: str) -> None:
    """When the checksum S3 keeps names other content (moto keeps whatever checksum a client
    sends; S3 itself would refuse that upload) the local copy is kept, even under the right label."""
    good = b"f" * 5000
    bundle = api.Bundle(remote_ctx, name="b", data=good).commit()
    api.push(remote_ctx, "b")
    other = hashlib.sha256(b"other").digest()
    boto3.client("s3").put_object(
        Bucket=bucket,
        Key=_key(bundle.uuid),
        Body=good,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(other).decode(),
        Metadata={"sha256": hashlib.sha256(good).hexdigest()},
    )
    with _requests() as sent, pytest.raises(BundleCorrupt):
        api.push(remote_ctx, "b", delocalize=True)
    assert sent["GetData"] == 0  # S3's own checksum already says no
    assert _value(bundle).read_bytes() == good


def test_an_edited_multipart_file_is_refused_before_the_upload_completes(remote_ctx: str, bucket: str) -> None:
    """A large file edited in place after commit fails the push with BundleCorrupt before S3 is
    asked to complete its upload: no object ever carries its bytes, nothing is left open."""
    bundle = api.Bundle(remote_ctx, name="b", data=b"a" * (9 * MIB)).commit()
    _value(bundle).write_bytes(b"b" * (9 * MIB))
    with _requests() as sent, pytest.raises(BundleCorrupt, match="no longer matches"):
        api.push(remote_ctx, "b")
    assert sent["CreateMultipartUpload"] == 1 and sent["CompleteMultipartUpload"] == 0
    client = boto3.client("s3")
    left = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [k for k in left if "/intents/" not in k] == []  # only the push's gc intent, which carries no data
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_normal_push_costs_no_extra_request(remote_ctx: str, bucket: str, tmp_path: Path) -> None:
    """Requests counted: a first push sends no HeadObject (the listing shows what is absent); a
    resumed push asks once per file and re-sends none; push -d asks once per file, reads no data."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(20):
        (tree / f"part-{i:02d}.bin").write_bytes(bytes([i]) * 4096)
    (tree / "large.bin").write_bytes(b"L" * (9 * MIB))
    bundle = api.add(remote_ctx, "many", tree)
    api.commit(remote_ctx, "many")
    with _requests() as first:
        api.push(remote_ctx, "many")
    assert first["HeadObject"] == 0 and first["PutObject"] == 20 + 3  # files, gc intent, manifest, catalog entry
    assert first["CompleteMultipartUpload"] == 1
    # an interrupted push: the data went up, the manifest did not
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"{PREFIX}/{bundle.uuid}/manifest.json")
    with _requests() as resumed:
        result = api.push(remote_ctx, "many")
    assert result.uploaded == 0 and resumed["HeadObject"] == 21
    assert resumed["PutObject"] == 3 and resumed["UploadPart"] == 0
    with _requests() as dropped:
        api.push(remote_ctx, "many", delocalize=True)
    assert dropped["HeadObject"] == 21 and dropped["GetData"] == 0
    assert sorted(p.name for p in Path(bundle.local_dir).rglob("*.bin")) == []
