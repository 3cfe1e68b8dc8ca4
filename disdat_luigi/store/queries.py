"""Finding bundles in a context: search, newest match, removal sets and lineage."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from disdat_luigi.errors import BundleCorrupt, BundleNotFound, ManifestRejected
from disdat_luigi.store.bundle import Bundle
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.index import BundleQuery, IndexRow
from disdat_luigi.store.manifest import Dependency


def load(context: LocalContext, row: IndexRow) -> Bundle:
    """The bundle of an index row; its manifest is read when first needed."""
    return Bundle.from_row(context, row)


def find(context: LocalContext, query: BundleQuery) -> list[Bundle]:
    """Bundles matching `query`, newest first."""
    return list(stream(context, query))


def stream(context: LocalContext, query: BundleQuery) -> Iterator[Bundle]:
    """`find`, one bundle at a time as the index yields them (a listing starts at once)."""
    return (Bundle.from_row(context, row) for row in context.index.iter_search(query))


def newest(
    context: LocalContext, name: str | None, uuid: str | None = None, tags: dict[str, str] | None = None
) -> Bundle | None:
    """The bundle `uuid` names, else the newest one called `name` with `tags`; None if there is none."""
    if uuid is not None:
        rows = context.search(BundleQuery(uuid=uuid, limit=1))
    elif name is not None:
        rows = context.search(BundleQuery(name=name, tags=tags, limit=1))
    else:
        rows = context.search(BundleQuery(tags=tags, limit=1)) if tags else []
    return load(context, rows[0]) if rows else None


def require(
    context: LocalContext, name: str | None, uuid: str | None = None, tags: dict[str, str] | None = None
) -> Bundle:
    if name is None and uuid is None and not tags:
        raise BundleNotFound(
            "no bundle was named: pass a bundle name (its newest version), -u UUID or -t key:value",
            hint="list bundles with `dsdt ls` (from Python: bundle_name, uuid or tags)",
        )
    bundle = newest(context, name, uuid, tags)
    if bundle is None:
        what = f"uuid {uuid}" if uuid else f"name {name!r}" if name else "those tags"
        suffix = f" and tags {tags}" if tags and (uuid or name) else ""
        raise BundleNotFound(f"no bundle with {what}{suffix} in context {context.name!r}")
    return bundle


def removal_set(
    context: LocalContext,
    name: str | None,
    uuid: str | None,
    tags: dict[str, str] | None,
    rm_all: bool,
    rm_old_only: bool,
) -> list[IndexRow]:
    """Which bundles `rm` removes: one uuid; the newest of a name (all with rm_all, all but the
    newest with rm_old_only); nothing by default when neither name nor uuid is given."""
    if uuid is not None:
        return context.search(BundleQuery(uuid=uuid))
    rows = context.search(BundleQuery(name=name, tags=tags))
    if rm_old_only:
        seen: set[str] = set()
        old = []
        for row in rows:
            if row.name in seen:
                old.append(row)
            seen.add(row.name)
        return old
    if rm_all:
        return rows
    if name is None:
        return []
    return rows[:1]


@dataclass(frozen=True)
class LineageRecord:
    """One bundle in a lineage walk; `found` is False when it is not in this context."""

    uuid: str
    name: str
    depth: int
    found: bool
    processing_name: str | None = None
    creation_date: datetime | None = None
    dependencies: tuple[Dependency, ...] = ()
    code_ref: str | None = None
    git_info: dict[str, Any] | None = None


def lineage(context: LocalContext, uuid: str, max_depth: int | None = None) -> list[LineageRecord]:
    """Upstream records of bundle `uuid`, breadth first, the bundle itself first."""
    start = require(context, None, uuid)
    records: list[LineageRecord] = []
    queue: deque[tuple[str, str, int]] = deque([(start.uuid, start.name, 0)])
    seen: set[str] = set()
    while queue:
        current, name, depth = queue.popleft()
        if current in seen:
            continue
        seen.add(current)
        try:
            manifest = context.load_manifest(current) if context.search(BundleQuery(uuid=current)) else None
        except (BundleNotFound, BundleCorrupt, ManifestRejected):
            manifest = None
        if manifest is None:
            records.append(LineageRecord(uuid=current, name=name, depth=depth, found=False))
            continue
        records.append(
            LineageRecord(
                uuid=current,
                name=manifest.name,
                depth=depth,
                found=True,
                processing_name=manifest.processing_name,
                creation_date=manifest.creation_date,
                dependencies=manifest.dependencies,
                code_ref=manifest.code_ref,
                git_info=dict(manifest.git_info) if manifest.git_info else None,
            )
        )
        if max_depth is None or depth < max_depth:
            queue.extend((d.uuid, d.name, depth + 1) for d in manifest.dependencies)
    return records
