"""Local gc and du: a context's bundles as gc candidates, and reclaiming them without a reader
ever seeing one half removed."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from disdat_luigi.errors import BundleNotFound, ManifestRejected
from disdat_luigi.store import fsutil
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.index import BundleQuery
from disdat_luigi.store.policy import NOT_PUSHED, Candidate, GcPlan, NotPushed

BATCH = 200  # bundles locked and dropped from the index together (bounded open directories)

UNREACHABLE_HINT = (
    "local gc asks the remote which bundles it holds before deleting any, and the remote did not "
    "answer: nothing was deleted; check the endpoint (AWS_ENDPOINT_URL) and the network and retry, "
    "or run with --force to reclaim without asking the remote (which may delete a bundle's only copy)"
)
REMOTE_UNREACHABLE_HINT = (
    "remote gc lost the remote: check the endpoint (AWS_ENDPOINT_URL) and the network and run it again; "
    "a bundle it had not finished reclaiming is either whole or left as files of no bundle, which a later gc deletes"
)


@dataclass(frozen=True, kw_only=True)
class RemoteCopies:
    """What the remote holds of a context's committed bundles, by uuid: `same`, this very bundle
    (its manifest and every file it names, at its size: pushed); `lacking`, this bundle's manifest
    but not all its files (uuid -> how many it lacks); `other`, another bundle under the same
    uuid; `damaged`, a manifest that cannot be read. A uuid in none is not on the remote."""

    same: frozenset[str] = frozenset()
    other: frozenset[str] = frozenset()
    damaged: frozenset[str] = frozenset()
    lacking: Mapping[str, int] = field(default_factory=dict)

    def not_pushed(self, uuid: str) -> NotPushed | None:
        if uuid in self.same:
            return None
        if uuid in self.lacking:
            return NotPushed.INCOMPLETE
        if uuid in self.damaged:
            return NotPushed.DAMAGED
        return NotPushed.OTHER_BUNDLE if uuid in self.other else NotPushed.ONLY_HERE


@dataclass(frozen=True, kw_only=True)
class GcResult:
    """What `gc` did (or, as a dry run, would do)."""

    plan: GcPlan
    remote: bool
    dry_run: bool
    reclaimed: tuple[str, ...] = ()  # uuids actually removed (empty for a dry run)
    bytes_reclaimed: int = 0
    orphans: int = 0  # remote objects no manifest names, past the grace period (deleted unless dry run)
    orphan_bytes: int = 0
    waiting: int = 0  # remote objects no manifest names, still inside the grace period (kept for now)
    waiting_bytes: int = 0
    grace_hours: float = 0.0  # the grace period this remote gc used
    unreadable: int = 0  # remote bundles whose manifest gc rejects: left alone, every uuid they name kept
    without_remote: bool = False  # local gc of a context bound to no remote: every bundle is only here

    @property
    def kept_as_unpushed(self) -> int:
        """Bundles kept only because they exist nowhere else (local gc; --force reclaims them)."""
        return sum(1 for v in self.plan.verdicts if v.reason is not None and v.reason.startswith(NOT_PUSHED))

    @property
    def uuid_taken_on_remote(self) -> list[Candidate]:
        """Bundles here whose uuid the remote gives to another bundle (a forced uuid used twice):
        they cannot be pushed, so local gc keeps them (local gc without --force)."""
        return [v.candidate for v in self.plan.verdicts if v.candidate.unpushed is NotPushed.OTHER_BUNDLE]

    @property
    def remote_only_reclaimed(self) -> int:
        """Reclaimed bundles whose files are only on the remote (they free no local bytes)."""
        return sum(1 for c in self.plan.reclaimed if c.remote_only)


@dataclass(frozen=True, kw_only=True)
class NameUsage:
    name: str
    bundles: int
    bytes: int


def now_us() -> int:
    return int(time.time() * 10**6)


def local_candidates(context: LocalContext, remote: RemoteCopies | None) -> list[Candidate]:
    """Every bundle of the context, each marked with why it exists only here unless the remote
    holds this very bundle (`remote` None: no remote, so nothing is pushed; an uncommitted
    bundle is never pushed)."""
    rows = context.search(BundleQuery())
    uuids = [r.uuid for r in rows]
    tags = context.index.tags_of_many(uuids)
    deps = context.index.dependencies_of_many(uuids)
    remote_only = set(context.remote_only_uuids())
    found = []
    for row in rows:
        size = _local_bytes(context, row.uuid, row.uuid in remote_only)
        found.append(
            Candidate(
                uuid=row.uuid,
                name=row.name,
                processing_name=row.processing_name,
                created_us=row.created_us,
                tags=tags.get(row.uuid, {}),
                upstream=tuple(deps.get(row.uuid, {}).values()),
                bytes=size,
                remote_only=row.uuid in remote_only,
                unpushed=_not_pushed(row.uuid, row.committed, remote),
                missing_files=remote.lacking.get(row.uuid, 0) if remote is not None else 0,
            )
        )
    return found


def _not_pushed(uuid: str, committed: bool, remote: RemoteCopies | None) -> NotPushed | None:
    if remote is None:
        return NotPushed.ONLY_HERE
    return remote.not_pushed(uuid) if committed else NotPushed.UNCOMMITTED


def _local_bytes(context: LocalContext, uuid: str, remote_only: bool) -> int:
    """Bytes of the bundle's data files present here (by its manifest; stat only when some may be gone)."""
    try:
        manifest = context.load_manifest(uuid)
    except (BundleNotFound, ManifestRejected):
        return 0
    if not remote_only:
        return sum(e.size for e in manifest.files)
    root = context.bundle_dir(uuid)
    return sum(e.size for e in manifest.files if (root / e.path).exists())


def reclaim(context: LocalContext, uuids: Sequence[str]) -> list[str]:
    """Remove bundles, a batch at a time: each under the exclusive side of its directory lock
    (readers finish first), the batch's index rows dropped, then each directory renamed into
    tmp/ (one rename: the bundle is whole or gone) and deleted. Killed at any moment, a bundle is
    whole (indexed again by `dsdt verify`) or gone; interrupted (Ctrl-C), the KeyboardInterrupt
    says how many went. The uuids removed."""
    removed: list[str] = []
    try:
        for start in range(0, len(uuids), BATCH):
            _reclaim_batch(context, uuids[start : start + BATCH], removed)
    except KeyboardInterrupt as err:
        raise KeyboardInterrupt(
            f"{len(removed)} bundle(s) reclaimed before it; every other bundle is whole "
            "(`dsdt verify` lists again any it left unlisted)"
        ) from err
    return removed


def _reclaim_batch(context: LocalContext, uuids: Sequence[str], removed: list[str]) -> None:
    """Reclaim `uuids`, adding each to `removed` once it is gone."""
    locked: dict[str, int] = {}
    trash: list[Path] = []
    with ExitStack() as held:
        for uuid in uuids:
            try:
                fd = context.lock_dir(uuid, shared=False)
            except BundleNotFound:
                continue  # removed by someone else meanwhile
            held.callback(os.close, fd)
            locked[uuid] = fd
            held.enter_context(context.bundle_lock(uuid))  # no localize or delocalize inside it either
        context.index.delete(list(locked))
        for uuid in locked:
            moved = context.tmp_dir / f"trash-{uuid}"
            os.rename(context.bundle_dir(uuid), moved)
            trash.append(moved)
            removed.append(uuid)
    for path in trash:
        fsutil.remove_tree(path)


def usage(candidates: Iterable[Candidate]) -> list[NameUsage]:
    """Bundles and bytes per name, sorted by name."""
    count: dict[str, int] = defaultdict(int)
    size: dict[str, int] = defaultdict(int)
    for c in candidates:
        count[c.name] += 1
        size[c.name] += c.bytes
    return [NameUsage(name=n, bundles=count[n], bytes=size[n]) for n in sorted(count)]
