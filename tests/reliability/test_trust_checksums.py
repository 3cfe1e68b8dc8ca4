"""Trust in remote objects: a local copy is dropped, and an upload skipped, only on the SHA-256
checksum S3 keeps (or the object read back), never on a sha256 label any bucket writer can keep.

Each test is one row of the reliability ledger.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleCorrupt, CredentialsError
from disdat_luigi.store.remote.s3 import S3
from tests.reliability.test_trust import _expect, _record

MIB = 1024 * 1024
PREFIX = "team/context/shared/objects"


def _key(uuid: str) -> str:
    return f"{PREFIX}/{uuid}/values/0.bin"


def _value(bundle: Any) -> Path:
    return Path(bundle.local_dir) / "values" / "0.bin"


def _remote(bucket: str, key: str) -> bytes:
    data: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def _peer_reads(peer: str, bucket: str, name: str) -> bytes:
    if peer not in api.ls_contexts():
        api.context(peer)
        api.remote(peer, "shared", f"s3://{bucket}/team")
    (pulled,) = api.pull(peer, name, localize=True)
    return _value(pulled).read_bytes()


def test_a_failed_clean_up_never_costs_the_good_copy(
    ledger: Any, remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported sequence: a file edited in place (or cut, or grown) is pushed while every
    delete is denied, then the good bytes are restored and pushed with -d. The edited push is
    BundleCorrupt and leaves no object; the good push uploads, drops the local copy, and a peer
    pulls the good bytes."""
    failures: list[str] = []
    cases = 0
    for size in (5000, 9 * MIB, 16 * MIB):  # put_object, multipart, an exact number of parts
        for edit in ("same size", "shorter", "longer"):
            cases += 1
            label = f"{size} B, {edit}"
            good = bytes([cases]) * size
            name = f"b{cases}"
            bundle = api.Bundle(remote_ctx, name=name, data=good).commit()
            bad = {"same size": b"x" * size, "shorter": b"x" * (size - 1), "longer": b"x" * (size + 1)}[edit]
            _value(bundle).write_bytes(bad)
            with monkeypatch.context() as patched:

                def denied(self: S3, bucket: str, keys: list[str]) -> None:
                    raise CredentialsError(f"access to s3://{bucket} was denied (AccessDenied)")

                patched.setattr(S3, "delete", denied)
                _expect(
                    failures,
                    f"push of the edited file ({label})",
                    BundleCorrupt,
                    lambda n=name: api.push(remote_ctx, n),
                )
            listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{bundle.uuid}/")
            if listed.get("KeyCount"):
                failures.append(f"{label}: the edited push left {listed['KeyCount']} object(s)")
            _value(bundle).write_bytes(good)
            api.push(remote_ctx, name, delocalize=True)
            if _remote(bucket, _key(bundle.uuid)) != good:
                failures.append(f"{label}: the remote does not hold the good bytes")
            if _value(bundle).exists():
                failures.append(f"{label}: push -d kept the local copy")
            if _peer_reads("peer", bucket, name) != good:
                failures.append(f"{label}: the peer did not pull the good bytes")
    if boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads"):
        failures.append("multipart uploads left open")
    _record(
        ledger,
        "failed clean-up, then push -d of the good bytes",
        failures,
        cases,
        "edited push BundleCorrupt before any object exists (deletes denied); good push -d uploads, drops, peer pulls",
    )


def _plant(bucket: str, key: str, data: bytes, label: str, checksum: str | None) -> None:
    """`data` at `key` under the sha256 label `label`: with S3's checksum of `data` ("own"), a
    checksum naming other content ("forged": moto keeps it, S3 would refuse it), or none."""
    extra: dict[str, Any] = {"Metadata": {"sha256": label}}
    if checksum == "own":
        extra["ChecksumAlgorithm"] = "SHA256"
    client = boto3.client("s3")
    if checksum == "forged":
        forged = base64.b64encode(hashlib.sha256(b"forged").digest()).decode()
        client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=forged, **extra)
    else:
        client.upload_fileobj(io.BytesIO(data), bucket, key, ExtraArgs=extra)


def test_a_kept_label_never_drops_a_local_copy(ledger: Any, remote_ctx: str, bucket: str) -> None:
    """Other bytes at a key under the right sha256 label (no checksum, their own, or a forged
    one): before the bundle is published push -d uploads the good bytes again; after it is,
    push -d is BundleCorrupt and drops nothing. The right bytes without a checksum (an earlier
    release's push) are read back and then dropped; under a forged checksum they are kept."""
    failures: list[str] = []
    cases = 0
    peers = 0
    for size in (5000, 9 * MIB):
        for checksum in (None, "own", "forged"):
            if checksum == "forged" and size >= 8 * MIB:
                continue  # one request puts a whole object only
            for published in (False, True):
                cases += 1
                label = f"{size} B, checksum {checksum}, {'after' if published else 'before'} publishing"
                good = bytes([cases]) * size
                name = f"k{cases}"
                bundle = api.Bundle(remote_ctx, name=name, data=good).commit()
                if published:
                    api.push(remote_ctx, name)
                _plant(bucket, _key(bundle.uuid), b"x" * size, hashlib.sha256(good).hexdigest(), checksum)
                if published:
                    _expect(failures, label, BundleCorrupt, lambda n=name: api.push(remote_ctx, n, delocalize=True))
                    if not _value(bundle).exists() or _value(bundle).read_bytes() != good:
                        failures.append(f"{label}: the local copy was lost")
                    continue
                api.push(remote_ctx, name, delocalize=True)
                peers += 1
                if _value(bundle).exists() or _peer_reads(f"peer{peers}", bucket, name) != good:
                    failures.append(f"{label}: not re-uploaded and dropped, or the peer got other bytes")
        cases += 1
        good = b"r" * size
        bundle = api.Bundle(remote_ctx, name=f"old{size}", data=good).commit()
        api.push(remote_ctx, f"old{size}")
        _plant(bucket, _key(bundle.uuid), good, hashlib.sha256(good).hexdigest(), None)
        api.push(remote_ctx, f"old{size}", delocalize=True)
        read = api.get(remote_ctx, f"old{size}")
        if _value(bundle).exists() or read is None or read.data != good:
            failures.append(f"{size} B from an earlier release: not read back and dropped")
    cases += 1
    good = b"f" * 5000
    bundle = api.Bundle(remote_ctx, name="forged-good", data=good).commit()
    api.push(remote_ctx, "forged-good")
    _plant(bucket, _key(bundle.uuid), good, hashlib.sha256(good).hexdigest(), "forged")
    _expect(
        failures,
        "right bytes, forged checksum",
        BundleCorrupt,
        lambda: api.push(remote_ctx, "forged-good", delocalize=True),
    )
    if not _value(bundle).exists():
        failures.append("right bytes under a forged checksum: the local copy was dropped")
    _record(
        ledger,
        "push -d trusts S3's checksum, not the sha256 label",
        failures,
        cases,
        "label kept on other bytes: re-upload before publishing, BundleCorrupt after, local kept; "
        "no checksum read back; forged checksum refused",
    )
