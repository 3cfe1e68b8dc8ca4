"""Many bundles, few requests: a pull asks nothing for bundles already here, reads new manifests
from the packs a push writes, and never trusts a pack further than the manifests it copies."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from disdat_luigi import api
from disdat_luigi.config import load_settings
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote import packs
from disdat_luigi.store.remote.s3 import S3

COUNT = 40  # more than packs.PACK_MIN


@contextmanager
def _sent() -> Iterator[list[str]]:
    """The operation of every request the shared S3 client sends meanwhile."""
    sent: list[str] = []
    client = S3(load_settings().remote).client

    def record(event_name: str, **_: Any) -> None:
        sent.append(event_name.rsplit(".", 1)[-1])

    client.meta.events.register("before-send.s3", record)
    try:
        yield sent
    finally:
        client.meta.events.unregister("before-send.s3", record)


def _pushed(ctx: str) -> dict[str, int]:
    made = {api.Bundle(ctx, name=f"n{i % 4}", data=i).commit().uuid: i for i in range(COUNT)}
    with _sent() as sent:
        result = api.push(ctx)
    assert sorted(result.pushed) == sorted(made)
    assert sent.count("PutObject") == 2 * COUNT + 1  # each manifest and catalog entry, one pack
    return made


def _fresh(bucket: str, name: str = "fresh") -> str:
    api.context(name)
    api.remote(name, "shared", f"s3://{bucket}/team")
    return name


def _pack_keys(ctx: str) -> list[str]:
    location = RemoteLocation.of(api._context(ctx))
    return [ref.key for ref in packs.listed(S3(load_settings().remote), location)]


def test_first_pull_reads_packs_and_a_second_pull_only_lists(remote_ctx: str, bucket: str) -> None:
    """A fresh context pulls 40 bundles with a handful of requests (listings and one pack), each
    with its value; pulling again costs one listing and brings nothing."""
    made = _pushed(remote_ctx)
    fresh = _fresh(bucket)
    with _sent() as sent:
        pulled = api.pull(fresh)
    assert sorted(pulled.fetched) == sorted(made)
    assert sent.count("GetObject") == 1 and len(sent) <= 5, sent
    assert {b.uuid: b.data for b in api.search(fresh)} == made
    with _sent() as sent:
        again = api.pull(fresh)
    assert sent == ["ListObjectsV2"] and again.fetched == [] and sorted(b.uuid for b in again) == sorted(made)
    with _sent() as sent:
        by_name = api.pull(fresh, "n1")
    assert sent == ["ListObjectsV2"] and [b.name for b in by_name] == ["n1"] * (COUNT // 4)


def test_a_damaged_pack_costs_requests_not_bundles(remote_ctx: str, bucket: str) -> None:
    """A pack whose entries claim other names for real bundles, one whose entries keep the name
    but change the value (a bucket writer's forgery), one that is not a pack at all, and one
    nested too deep to parse, are passed over: every bundle arrives from its own manifest, as it
    really is (the listing of objects/ vouches only for the published manifests' bytes)."""
    made = _pushed(remote_ctx)
    [key] = _pack_keys(remote_ctx)
    s3 = boto3.client("s3")
    manifests = json.loads(gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))

    def forged(change: dict[str, object]) -> bytes:
        entries = [json.dumps({**json.loads(text), **change}) for text in manifests["manifests"]]
        return gzip.compress(json.dumps({**manifests, "manifests": entries}).encode())

    expected = {u: (f"n{i % 4}", i) for u, i in made.items()}
    damages = {
        "renamed": forged({"name": "forged"}),
        "revalued": forged({"data": {"t": "int", "v": -1}, "tags": {"forged": "yes"}}),
        "garbage": b"not a pack",
        "deep": gzip.compress(b"[" * 100_000),
        "objects": gzip.compress(json.dumps({"schema": 1, "manifests": [{}] * 200_000}).encode()),
        "huge": gzip.compress(b'{"schema": 1, "manifests": [' + b"[]," * (2 * packs.MAX_PACK_BYTES) + b"[]]}"),
    }
    for fresh, damage in damages.items():
        s3.put_object(Bucket=bucket, Key=key, Body=damage)
        with _sent() as sent:
            pulled = api.pull(_fresh(bucket, fresh))
        assert sorted(pulled.fetched) == sorted(made) and pulled.skipped == []
        assert sent.count("GetObject") == 1 + COUNT  # the pack, then every manifest on its own
        assert {b.uuid: (b.name, b.data) for b in api.search(fresh)} == expected
        assert all("forged" not in b.tags for b in api.search(fresh))


def test_a_pack_entry_of_a_deleted_bundle_is_not_pulled(remote_ctx: str, bucket: str) -> None:
    """A bundle removed from the remote after its pack was written stays gone for a new pull:
    the pack's copy of its manifest is not vouched for by any listed manifest."""
    made = _pushed(remote_ctx)
    gone = sorted(made)[:5]
    for uuid in gone:
        api.rmr(remote_ctx, uuid=uuid)
    pulled = api.pull(_fresh(bucket))
    assert sorted(pulled.fetched) == sorted(set(made) - set(gone))


def test_push_of_a_few_bundles_writes_no_pack(remote_ctx: str, bucket: str) -> None:
    """Below packs.PACK_MIN bundles a push writes manifests and catalog entries only."""
    for i in range(3):
        api.Bundle(remote_ctx, name="few", data=i).commit()
    api.push(remote_ctx)
    assert _pack_keys(remote_ctx) == []
    assert len(api.pull(_fresh(bucket)).fetched) == 3
