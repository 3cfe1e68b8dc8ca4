"""Check a context's bundles against their manifests and rebuild the index from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from disdat_luigi.errors import IndexDamaged, ManifestRejected
from disdat_luigi.store import fsutil
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest, is_uuid


@dataclass(frozen=True)
class Problem:
    uuid: str
    detail: str


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    indexed: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    moved_index: Path | None = None  # a damaged index file, moved here before the rebuild
    remote_unnamed: list[str] = field(default_factory=list)  # remote objects no manifest names (s3:// URLs)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(context: LocalContext, rebuild: bool = False, check_hashes: bool = True) -> VerifyReport:
    """Compare every bundle's files with its manifest; repair the index (fully with `rebuild`).

    Bundles on disk but missing from the index are added; index rows without a directory are
    dropped; damaged bundles are reported, never deleted. Writers may publish meanwhile: a
    bundle whose manifest appears during the run is never taken for a stale row, and one whose
    writer still holds its lock is left to that writer (which indexes it, or takes it back)."""
    damaged_index = None
    if rebuild:
        try:
            context.index.uuids()
        except IndexDamaged:
            damaged_index = context.index.move_aside()
    report = VerifyReport(cleaned=context.clean_leftovers(), moved_index=damaged_index)
    # Read before the listing: a writer inserts its row after its manifest is in place, so each
    # row read here belongs to a bundle the listing sees, unless the row really is stale.
    indexed = set() if rebuild else context.index.uuids()
    manifests: list[tuple[BundleManifest, bool]] = []
    publishing: list[BundleManifest] = []  # a manifest in place, its writer's lock still held
    drafting: list[str] = []  # no manifest yet, its writer's lock held
    damaged: set[str] = set()
    listed = sorted(os.listdir(context.objects_dir))
    for entry in listed:
        if not is_uuid(entry):
            continue  # no bundle (lost+found, a user's copy, .DS_Store): left alone
        bundle_dir = context.objects_dir / entry
        try:
            manifest = BundleManifest.from_json((bundle_dir / MANIFEST_NAME).read_bytes(), str(bundle_dir))
        except NotADirectoryError:
            continue  # a stray file named like a bundle
        except FileNotFoundError:
            if context.clean_dead_draft(entry):  # a draft whose writer died without a trace in tmp/
                report.cleaned.append(entry)
            else:
                drafting.append(entry)
            continue
        except ManifestRejected as err:
            report.problems.append(Problem(entry, f"{err} (remove it with `dsdt rm -u {entry}`)"))
            damaged.add(entry)
            continue
        report.checked += 1
        if manifest.uuid != entry:
            report.problems.append(Problem(entry, f"directory holds the manifest of {manifest.uuid}"))
            damaged.add(entry)
            continue
        for problem in _check_files(context, manifest, check_hashes):
            report.problems.append(Problem(manifest.uuid, problem))
        if entry not in indexed and context.is_draft(entry):
            publishing.append(manifest)
        else:
            manifests.append((manifest, context.is_committed(manifest.uuid)))
    if rebuild:
        for manifest in publishing:  # wait for each writer; keep what it left published
            context.index_published(manifest.uuid)
            if (context.bundle_dir(manifest.uuid) / MANIFEST_NAME).exists():
                manifests.append((manifest, context.is_committed(manifest.uuid)))
        before = context.index.uuids()
        context.index.replace_all(manifests)
        # Bundles published since the listing lose their rows in the swap: index them again
        # (under their locks), drafts listed then too. A draft still without its manifest
        # indexes itself after the swap.
        new = (set(os.listdir(context.objects_dir)) - set(listed)) | set(drafting)
        arrived = sorted(u for u in new if (context.bundle_dir(u) / MANIFEST_NAME).exists())
        restored = {u for u in arrived if context.index_published(u)}
        swapped = {m.uuid for m, _ in manifests}
        report.indexed = sorted((swapped | restored) - before)
        report.unindexed = sorted(before - swapped - set(arrived))
        return report
    on_disk = {m.uuid for m, _ in manifests} | {m.uuid for m in publishing}
    for manifest, _committed in manifests:
        if manifest.uuid not in indexed and context.index_published(manifest.uuid, wait=False):
            report.indexed.append(manifest.uuid)
    # a row is stale when its bundle was not listed and has no manifest now (one removed and
    # published again under its forced uuid meanwhile keeps its row)
    stale = sorted(u for u in indexed - on_disk if u in damaged or not (context.bundle_dir(u) / MANIFEST_NAME).exists())
    context.index.delete(stale)
    report.unindexed = stale
    return report


def _check_files(context: LocalContext, manifest: BundleManifest, check_hashes: bool) -> list[str]:
    problems = []
    root = context.bundle_dir(manifest.uuid)
    for entry in manifest.files:
        path = root / entry.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if not context.is_remote_only(manifest.uuid):
                problems.append(f"missing file {entry.path}")
            continue
        if size != entry.size:
            problems.append(f"{entry.path} has {size} bytes, manifest says {entry.size}")
        elif check_hashes and _sha256(path) not in (entry.sha256, None):
            problems.append(f"{entry.path} does not match its sha256")
    return problems


def _sha256(path: Path) -> str | None:
    """The file's sha256; None when it was dropped (delocalized) since it was found."""
    try:
        return fsutil.sha256_file(path)
    except FileNotFoundError:
        return None
