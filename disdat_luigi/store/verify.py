"""Check a context's bundles against their manifests and rebuild the index from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from disdat_luigi.errors import IndexDamaged, ManifestRejected
from disdat_luigi.store import fsutil
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest


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

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(context: LocalContext, rebuild: bool = False, check_hashes: bool = True) -> VerifyReport:
    """Compare every bundle's files with its manifest; repair the index (fully with `rebuild`).

    Bundles on disk but missing from the index are added; index rows without a directory are
    dropped; damaged bundles are reported, never deleted."""
    damaged_index = None
    if rebuild:
        try:
            context.index.uuids()
        except IndexDamaged:
            damaged_index = context.index.move_aside()
    report = VerifyReport(cleaned=context.clean_leftovers(), moved_index=damaged_index)
    manifests: list[tuple[BundleManifest, bool]] = []
    for entry in sorted(os.listdir(context.objects_dir)):
        bundle_dir = context.objects_dir / entry
        try:
            manifest = BundleManifest.from_json((bundle_dir / MANIFEST_NAME).read_bytes(), str(bundle_dir))
        except FileNotFoundError:
            if not context.is_draft(entry):  # a draft whose writer died without a trace of its lock
                fsutil.remove_tree(bundle_dir)
                report.cleaned.append(entry)
            continue
        except ManifestRejected as err:
            report.problems.append(Problem(entry, f"{err} (remove it with `dsdt rm -u {entry}`)"))
            continue
        report.checked += 1
        if manifest.uuid != entry:
            report.problems.append(Problem(entry, f"directory holds the manifest of {manifest.uuid}"))
            continue
        for problem in _check_files(context, manifest, check_hashes):
            report.problems.append(Problem(manifest.uuid, problem))
        manifests.append((manifest, context.is_committed(manifest.uuid)))
    on_disk = {m.uuid: c for m, c in manifests}
    indexed = context.index.uuids()
    if rebuild:
        context.index.replace_all(manifests)
        report.indexed = sorted(set(on_disk) - indexed)
        report.unindexed = sorted(indexed - set(on_disk))
        return report
    for manifest, committed in manifests:
        if manifest.uuid not in indexed:
            context.index.insert(manifest, committed)
            report.indexed.append(manifest.uuid)
    stale = sorted(indexed - set(on_disk))
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
        elif check_hashes and fsutil.sha256_file(path) != entry.sha256:
            problems.append(f"{entry.path} does not match its sha256")
    return problems
