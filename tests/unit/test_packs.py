"""Manifest packs: how a push cuts them, and what a reader refuses to build from a planted one."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest

from disdat_luigi.store.remote import packs


def test_packs_are_cut_by_count_and_by_bytes_and_large_manifests_stay_out() -> None:
    small = [b"x" * 100] * (packs.PACK_MAX + 5)
    assert [len(part) for part in packs.chunks(small)] == [packs.PACK_MAX, 5]
    big = [b"y" * (packs.PACK_BYTES // 3)] * 7 + [b"z" * (packs.PACK_BYTES + 1)] * 20
    assert packs.chunks(big) == []  # 7 packable manifests: fewer than PACK_MIN
    mixed = [b"y" * (packs.PACK_BYTES // 3)] * 20 + [b"z" * (packs.PACK_BYTES + 1)]
    parts = packs.chunks(mixed)
    assert [len(part) for part in parts] == [3, 3, 3, 3, 3, 3, 2]
    assert all(sum(map(len, part)) <= packs.PACK_BYTES for part in parts)


def test_a_pack_round_trips_its_manifests_byte_for_byte() -> None:
    raws = [json.dumps({"uuid": str(i), "name": "n\u00e9"}, separators=(",", ":")).encode() for i in range(20)]
    assert packs.decode(packs.encode(raws)) == raws


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"schema": 1, "manifests": [{}] * 900_000}).encode(),  # objects, not strings
        b'{"schema": 1, "manifests": [' + b"[]," * packs.MAX_PACK_BYTES + b"[]]}",  # inflates past the cap
        b"[" * 100_000,  # nested too deep
    ],
    ids=["objects", "too-large", "too-deep"],
)
def test_a_planted_pack_is_refused_before_it_costs_memory(body: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises((ValueError, RecursionError)):
            packs.decode(gzip.compress(body))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * packs.MAX_PACK_BYTES, f"decoding a planted pack peaked at {peak / 2**20:.0f} MiB"
