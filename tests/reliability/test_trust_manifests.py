"""Hostile manifests among good ones on the shared remote (planted with boto3): every pull,
metadata or with files, and `ls -v` go on around them."""

from __future__ import annotations

import pytest

from disdat_luigi import api
from disdat_luigi.errors import PartialPull
from disdat_luigi.store.remote import sync
from tests.functional.test_hostile_manifests import HOSTILE, _fresh_context, _plant_hostile, _push_good


def test_hostile_manifests_never_block_a_pull(  # type: ignore[no-untyped-def]
    remote_ctx: str, bucket: str, ledger, monkeypatch: pytest.MonkeyPatch, dsdt
) -> None:
    """Each planted manifest (bad field shapes, dates out of range, a file that is also a
    directory, NaN) is skipped and named by a metadata pull and by a pull with files, in batches
    mixed with good bundles; every good bundle arrives; `ls -v` lists them."""
    monkeypatch.setattr(sync, "PULL_BATCH", 2)
    good = _push_good(remote_ctx)
    bad = _plant_hostile(bucket)
    failures = 0
    for localize in (False, True):
        fresh = _fresh_context(f"fresh{int(localize)}", bucket)
        with pytest.raises(PartialPull) as caught:
            api.pull(fresh, localize=localize)
        skipped = dict(caught.value.result.skipped)
        failures += sum(uuid not in skipped for uuid in bad.values())
        failures += int(sorted(b.uuid for b in api.search(fresh)) != sorted(good))
        assert dsdt("switch", fresh).code == 0
        listed = dsdt("ls", "-v")
        failures += int(listed.code != 0 or any(uuid[:8] not in listed.out for uuid in good))
    ledger.record(
        "hostile manifests among good ones",
        2 * len(HOSTILE),
        failures,
        "pull and pull -l in mixed batches: each bad one skipped and named, every good one pulled; ls -v lists them",
    )
    assert failures == 0
