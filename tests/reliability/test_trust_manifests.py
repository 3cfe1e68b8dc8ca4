"""Hostile manifests among good ones on the shared remote (planted with boto3): every pull,
metadata or with files, and `ls -v` go on around them; so does a pull with files around bundles
whose manifests are valid but whose files are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.errors import PartialPull
from disdat_luigi.store.remote import sync
from tests.functional.test_hostile_manifests import (
    CORRUPT,
    HOSTILE,
    ROTTEN,
    _fresh_context,
    _plant_corrupt_among_good,
    _plant_hostile,
    _push_good,
)


def test_hostile_manifests_never_block_a_pull(  # type: ignore[no-untyped-def]
    remote_ctx: str, bucket: str, ledger, monkeypatch: pytest.MonkeyPatch, dsdt
) -> None:
    """Each planted manifest (bad field shapes, dates out of range, a file that is also a
    directory, NaN) is skipped and named by a metadata pull and by a pull with files, in batches
    mixed with good bundles; every good bundle arrives; `ls -v` lists them. Then each bundle
    whose files are corrupt (another sha256 or size, a missing object) is skipped and named by a
    pull with files, new or already here by metadata, with nothing of it written; every good
    bundle arrives with its files; `ls -v` lists them and the context verifies."""
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
    good.update(_plant_corrupt_among_good(remote_ctx, bucket))
    for already_here in (False, True):
        fresh = _fresh_context(f"corrupt{int(already_here)}", bucket)
        if already_here:
            with pytest.raises(PartialPull):  # the hostile manifests; the corrupt files are not read
                api.pull(fresh)
        with pytest.raises(PartialPull) as caught:
            api.pull(fresh, localize=True)
        skipped = dict(caught.value.result.skipped)
        context = api._context(fresh)
        for label, (_, reason) in CORRUPT.items():
            uuid = ROTTEN[label]
            kept = context.bundle_dir(uuid) / reason.split()[0]  # the file it fails on
            left = kept.exists() if already_here else context.bundle_dir(uuid).exists()
            failures += int(uuid not in skipped or reason not in skipped[uuid] or left)
        here = {b.uuid: b for b in api.search(fresh)}
        failures += int(sorted(set(here) - set(ROTTEN.values())) != sorted(good))
        for uuid, data in good.items():
            bundle = here.get(uuid)
            complete = bundle is not None and all((Path(bundle.local_dir) / f.path).exists() for f in bundle.files)
            failures += int(not complete or bundle is None or bundle.data != data)
        failures += int(list(context.tmp_dir.iterdir()) != [] or not api.verify(fresh).ok)
        assert dsdt("switch", fresh).code == 0
        listed = dsdt("ls", "-v")
        failures += int(listed.code != 0 or any(uuid[:8] not in listed.out for uuid in good))
    ledger.record(
        "hostile manifests among good ones",
        2 * len(HOSTILE) + 2 * len(CORRUPT),
        failures,
        "pull and pull -l in mixed batches: each bad one skipped and named, every good one pulled; ls -v lists "
        "them; pull -l skips and names bundles whose files are corrupt (sha256, size, missing), keeps nothing of them",
    )
    assert failures == 0
