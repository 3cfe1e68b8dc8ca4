"""Remote gc and du: the keep rules over a remote context's manifests and catalog, reclaimed with
batch deletes (manifests and catalog entries first, files after), holds, intents and claims
respected, and announced first by a gc notice (store/remote/notices.py). A few listings (one
request per 1,000 keys), one GET per manifest not already here, then one delete request per
1,000 keys."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from disdat_luigi.errors import BundleNotFound, InvalidName, ManifestRejected, TransferError
from disdat_luigi.store.gc import REMOTE_UNREACHABLE_HINT, UNREACHABLE_HINT, GcResult, NameUsage, RemoteCopies
from disdat_luigi.store.index import BundleQuery, to_us
from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest, is_uuid, same_bundle
from disdat_luigi.store.names import check_name
from disdat_luigi.store.policy import Candidate, GcPlan, KeepPolicy, plan
from disdat_luigi.store.remote.holds import RemoteGuards, store_id
from disdat_luigi.store.remote.notices import Posted
from disdat_luigi.store.remote.sync import MAX_MANIFEST_BYTES, RemoteSync

DELETE_CHUNK = 100_000  # keys deleted between two looks at the age of gc's notice
NO_NAME = "(no catalog entry)"
ORPHANS = "(objects without a manifest)"
# what may be a uuid in a manifest gc cannot read: a quoted store uuid (a forced one too), or a
# canonical uuid anywhere; keeping more than it names costs only space
_NAMED = re.compile(rb'"([0-9a-f-]{1,64})"|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})')


@dataclass
class _Listed:
    """What one listing of objects/ says about a bundle directory."""

    keys: list[tuple[str, int]] = field(default_factory=list)  # (key, size)
    bytes: int = 0
    newest: float = 0.0
    has_manifest: bool = False
    manifest_bytes: int = 0

    @property
    def data_bytes(self) -> int:
        """Bytes of the bundle's data files (what local gc and du count: not the manifest)."""
        return self.bytes - self.manifest_bytes


@dataclass(frozen=True, kw_only=True)
class Orphan:
    """An object of no bundle: a leftover file, the intent of a push that died, a stray catalog entry."""

    key: str
    size: int
    uuid: str  # the bundle it belongs to


class RemoteCollector:
    """gc of the remote context a local context is bound to."""

    def __init__(self, sync: RemoteSync) -> None:
        self.sync = sync
        self.s3 = sync.s3
        self.location = sync.location
        self.guards = RemoteGuards(sync.s3, sync.location)
        self.notices = sync.notices

    def _list(self) -> tuple[dict[str, _Listed], dict[str, list[tuple[str, str]]]]:
        """objects/ by uuid; catalog entries (name, key) by uuid (the catalog listed first)."""
        catalog = self._catalog()
        return self._objects(), catalog

    def _objects(self) -> dict[str, _Listed]:
        """objects/ by uuid (one request per 1,000 keys)."""
        bucket, objects_prefix = self.location.bucket, self.location.objects
        listed: dict[str, _Listed] = defaultdict(_Listed)
        for obj in self.s3.list_objects(bucket, objects_prefix):
            uuid, _, rel = obj.key[len(objects_prefix) :].partition("/")
            if not is_uuid(uuid) or not rel:
                continue
            entry = listed[uuid]
            entry.keys.append((obj.key, obj.size))
            entry.bytes += obj.size
            entry.newest = max(entry.newest, obj.modified)
            entry.has_manifest |= rel == MANIFEST_NAME
            entry.manifest_bytes += obj.size if rel == MANIFEST_NAME else 0
        return dict(listed)

    def _catalog(self) -> dict[str, list[tuple[str, str]]]:
        """Catalog entries (name, key) by uuid; a key whose name part is no bundle name (a
        planted `catalog/a/b/<uuid>`) is not an entry and is left alone."""
        catalog: dict[str, list[tuple[str, str]]] = defaultdict(list)
        prefix = self.location.catalog_prefix()
        for obj in self.s3.list_objects(self.location.bucket, prefix):
            name, _, uuid = obj.key[len(prefix) :].rpartition("/")
            if is_uuid(uuid) and _is_name(name):
                catalog[uuid].append((name, obj.key))
        return dict(catalog)

    def _manifests(self, uuids: Sequence[str]) -> tuple[dict[str, BundleManifest], dict[str, frozenset[str]]]:
        """Each bundle's manifest: this context's copy when it has the bundle (manifests never
        change), else one GET. Rejected ones (damaged, of a newer release, hostile) are left out,
        and so left alone; for each, the uuids its bytes seem to name, which gc keeps."""
        context = self.sync.context
        here = context.index.rows(uuids)
        found: dict[str, BundleManifest] = {}
        wanted = []
        for uuid in uuids:
            if uuid in here:
                try:
                    found[uuid] = context.load_manifest(uuid)
                    continue
                except (BundleNotFound, ManifestRejected):
                    pass
            wanted.append(uuid)

        def fetch(uuid: str) -> BundleManifest | frozenset[str] | None:
            try:
                remote = self.sync.fetch(uuid)
            except ManifestRejected:
                raw = self.s3.get_bytes(self.location.bucket, self.location.manifest_key(uuid), MAX_MANIFEST_BYTES)
                return _named(raw or b"") - {uuid}
            return remote.manifest if remote is not None else None

        rejected: dict[str, frozenset[str]] = {}
        for uuid, got in zip(wanted, self.sync._map(fetch, wanted)):
            if isinstance(got, BundleManifest):
                found[uuid] = got
            elif got is not None:
                rejected[uuid] = got
        return found, rejected

    def _with_own_references(self, holds: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """The remote's holds, and this context's own: a bundle it has whose files are only on the
        remote (pulled without them, or made by an executor) is kept as if it held it."""
        mine = store_id(self.sync.context)
        for uuid in self.sync.context.remote_only_uuids():
            if mine not in holds.get(uuid, ()):
                holds[uuid] = (*holds.get(uuid, ()), mine)
        return holds

    def published(self) -> RemoteCopies:
        """Which of this context's committed bundles the remote holds as this very bundle (its
        manifest there is this one, see `same_bundle`, and the listing shows every file it names
        at its size), which it holds incomplete, under which uuids it holds another bundle and
        whose manifest there is damaged. A catalog entry proves nothing: anyone may write one, and
        a forced uuid may be another store's. File contents are not read (push -d checks them).
        One listing of objects/ (a request per 1,000 keys); a manifest's ETag vouches for its
        bytes when uploaded in one part without KMS, any other is read (a GET each, concurrently).
        TransferError with local gc's hint when it cannot be asked."""
        context = self.sync.context
        committed = {row.uuid for row in context.search(BundleQuery(committed=True))}
        prefix = self.location.objects
        same: set[str] = set()
        other: set[str] = set()
        damaged: set[str] = set()
        unsure: list[str] = []
        sizes: dict[str, dict[str, int]] = defaultdict(dict)

        def local(uuid: str) -> bytes | None:
            try:
                return (context.bundle_dir(uuid) / MANIFEST_NAME).read_bytes()
            except OSError:  # removed meanwhile: nothing here to keep
                return None

        def alike(uuid: str) -> bool | None:
            """Whether the remote manifest is this bundle's; None when either is gone, ManifestRejected when damaged."""
            key = self.location.manifest_key(uuid)
            remote = self.s3.get_bytes(self.location.bucket, key, MAX_MANIFEST_BYTES)
            here = local(uuid)
            if remote is None or here is None:
                return None
            return same_bundle(remote, here, source=self.location.url(key))

        def sort(uuid: str) -> set[str] | None:
            """The set `uuid` belongs in; None when either manifest is gone."""
            try:
                found = alike(uuid)
            except ManifestRejected:
                return damaged
            return None if found is None else (same if found else other)

        try:
            for obj in self.s3.list_objects(self.location.bucket, prefix):
                uuid, _, rel = obj.key[len(prefix) :].partition("/")
                if uuid not in committed:
                    continue
                if rel != MANIFEST_NAME:
                    sizes[uuid][rel] = obj.size
                elif (raw := local(uuid)) is None:
                    continue
                elif obj.holds(raw):
                    same.add(uuid)
                else:  # KMS, multipart, another layout or another bundle: the manifest itself tells
                    unsure.append(uuid)
            for uuid, into in zip(unsure, self.sync._map(sort, unsure)):
                if into is not None:
                    into.add(uuid)
        except TransferError as err:
            raise TransferError(err.message, hint=UNREACHABLE_HINT) from err
        lacking = {u: n for u in same if (n := self._lacking(u, sizes.get(u, {})))}
        return RemoteCopies(
            same=frozenset(same - set(lacking)), other=frozenset(other), damaged=frozenset(damaged), lacking=lacking
        )

    def _lacking(self, uuid: str, listed: dict[str, int]) -> int:
        """How many files the local manifest of `uuid` names that the listing lacks or shows at another size."""
        try:
            files = self.sync.context.load_manifest(uuid).files
        except (BundleNotFound, ManifestRejected):  # removed meanwhile: nothing here to keep
            return 0
        return sum(1 for e in files if listed.get(e.path) != e.size)

    def collect(self, policy: KeepPolicy, grace_hours: float, dry_run: bool) -> GcResult:
        """Plan (and unless `dry_run` reclaim) by `policy`; TransferError with gc's own hint when
        the remote stops answering."""
        try:
            return self._collect(policy, grace_hours, dry_run)
        except TransferError as err:
            raise TransferError(err.message, hint=REMOTE_UNREACHABLE_HINT) from err

    def _collect(self, policy: KeepPolicy, grace_hours: float, dry_run: bool) -> GcResult:
        now = time.time()
        grace = grace_hours * 3600
        # the catalog and the intents before objects/: a catalog entry is written after its
        # manifest and an intent before its files, so what these listings show is in that one
        catalog = self._catalog()
        intents, dead = self.guards.intents(grace, now)
        listed = self._objects()
        manifests, rejected = self._manifests(sorted(u for u, entry in listed.items() if entry.has_manifest))
        named = {u: owner for owner in sorted(rejected, reverse=True) for u in rejected[owner]}
        holds = self._with_own_references(self.guards.holds())
        protected = self.guards.claimed_inputs(now) | _inputs(intents)
        gc_plan = self._plan(manifests, listed, holds, protected, named, policy, now)
        orphans = self._orphans(listed, catalog, set(intents), grace, now)
        orphans += [Orphan(key=key, size=size, uuid=key.rpartition("/")[2]) for key, size in dead]
        waiting = _waiting(listed, set(intents), grace, now)
        reclaimed: tuple[str, ...] = ()
        if not dry_run and (gc_plan.reclaimed or orphans):
            # announce what goes, then look again: a hold, an intent or a claim written before the
            # notice is seen now; one written after it meets the notice (push -d keeps its files, a
            # push waits, a job's submission fails)
            posted: Posted = self.notices.post(
                [c.uuid for c in gc_plan.reclaimed], sorted({o.uuid for o in orphans if is_uuid(o.uuid)}), time.time()
            )
            try:
                held = self._with_own_references(self.guards.holds())
                holds = {u: tuple(sorted({*holds.get(u, ()), *held.get(u, ())})) for u in {*holds, *held}}
                began = self.guards.live_intents(grace, time.time())
                late = _inputs(began) | self.guards.claimed_inputs(time.time())
                doomed = {c.uuid for c in gc_plan.reclaimed}
                if late & doomed or any(held.get(u) for u in doomed):  # plan again: it can only keep more
                    gc_plan = self._plan(manifests, listed, holds, protected | late, named, policy, now)
                orphans = [o for o in orphans if o.uuid not in began]
                published = self._published_now({o.uuid for o in orphans if is_uuid(o.uuid)}, listed)
                orphans = [o for o in orphans if o.uuid not in published]
                reclaimed = tuple(c.uuid for c in gc_plan.reclaimed)
                self._delete(
                    reclaimed, listed, catalog, holds, orphans, lambda: self.notices.fresh(posted, time.time())
                )
            finally:
                self.notices.withdraw(posted.keys, time.time())
        return GcResult(
            plan=gc_plan,
            remote=True,
            dry_run=dry_run,
            reclaimed=reclaimed,
            bytes_reclaimed=0 if dry_run else gc_plan.bytes_reclaimed,
            orphans=len(orphans),
            orphan_bytes=sum(o.size for o in orphans),
            waiting=len(waiting),
            waiting_bytes=sum(o.size for o in waiting),
            grace_hours=grace_hours,
            unreadable=len(rejected),
        )

    def _plan(
        self,
        manifests: dict[str, BundleManifest],
        listed: dict[str, _Listed],
        holds: dict[str, tuple[str, ...]],
        protected: set[str],
        named: dict[str, str],
        policy: KeepPolicy,
        now: float,
    ) -> GcPlan:
        candidates = [
            _candidate(m, listed[u].data_bytes, holds.get(u, ()), u in protected, named.get(u, ""))
            for u, m in manifests.items()
        ]
        return plan(candidates, policy, to_us_now(now), remote=True)

    def _published_now(self, uuids: set[str], listed: dict[str, _Listed]) -> set[str]:
        """Of `uuids` (no manifest when objects/ was listed), those a push has published since:
        a HEAD each, or one more listing of objects/ when that costs fewer requests."""
        if not uuids:
            return set()
        if len(uuids) > sum(len(e.keys) for e in listed.values()) // 1000 + 1:
            return {u for u, entry in self._objects().items() if entry.has_manifest} & uuids
        ordered = sorted(uuids)
        bucket = self.location.bucket
        found = self.sync._map(lambda u: self.s3.head(bucket, self.location.manifest_key(u)) is not None, ordered)
        return {u for u, present in zip(ordered, found) if present}

    def _delete(
        self,
        doomed: Sequence[str],
        listed: dict[str, _Listed],
        catalog: dict[str, list[tuple[str, str]]],
        holds: dict[str, tuple[str, ...]],
        orphans: list[Orphan],
        keep_notice: Callable[[], Posted],
    ) -> None:
        """Catalog entries, manifests and holds of the reclaimed bundles first (the bundles are
        gone), then their files, then the objects of no bundle; the notice written again when
        it gets old, before each DELETE_CHUNK keys."""
        first = [key for u in doomed for _, key in catalog.get(u, [])]
        first += [self.location.manifest_key(u) for u in doomed]
        first += [self.location.hold_key(u, store) for u in doomed for store in holds.get(u, ())]
        manifest_keys = set(first)
        rest = [k for u in doomed for k, _ in listed[u].keys if k not in manifest_keys]
        for keys in (first, rest, [o.key for o in orphans]):
            for start in range(0, len(keys), DELETE_CHUNK):
                keep_notice()
                self.s3.delete(self.location.bucket, keys[start : start + DELETE_CHUNK])

    def _orphans(
        self,
        listed: dict[str, _Listed],
        catalog: dict[str, list[tuple[str, str]]],
        intended: set[str],
        grace_seconds: float,
        now: float,
    ) -> list[Orphan]:
        """Objects no manifest names (files of a push in flight or abandoned, leftovers of a gc
        killed midway) whose bundle no live intent names, once older than the grace period."""
        found: list[Orphan] = []
        for uuid, entry in listed.items():
            if entry.has_manifest or uuid in intended or now - entry.newest <= grace_seconds:
                continue
            found += [Orphan(key=key, size=size, uuid=uuid) for key, size in entry.keys]
        for uuid, entries in catalog.items():
            if uuid not in listed or not listed[uuid].has_manifest:
                found += [Orphan(key=key, size=0, uuid=uuid) for _, key in entries]
        return found

    def unnamed(self) -> list[Orphan]:
        """What `dsdt verify` reports: every object no manifest names (in flight or left over)."""
        listed, catalog = self._list()
        return self._orphans(listed, catalog, set(), 0.0, float("inf"))

    def usage(self) -> list[NameUsage]:
        """Bytes and bundles per name on the remote (by its catalog); objects without a manifest apart."""
        listed, catalog = self._list()
        count: dict[str, int] = defaultdict(int)
        size: dict[str, int] = defaultdict(int)
        for uuid, entry in listed.items():
            names = [n for n, _ in catalog.get(uuid, [])]
            name = names[0] if names and entry.has_manifest else NO_NAME if entry.has_manifest else ORPHANS
            count[name] += 1
            size[name] += entry.data_bytes  # data files, as local du counts them
        return [NameUsage(name=n, bundles=count[n], bytes=size[n]) for n in sorted(count)]


def to_us_now(now: float) -> int:
    return int(now * 10**6)


def _candidate(
    manifest: BundleManifest, size: int, held_by: tuple[str, ...], claimed: bool, named_by: str
) -> Candidate:
    return Candidate(
        uuid=manifest.uuid,
        name=manifest.name,
        processing_name=manifest.processing_name,
        created_us=to_us(manifest.creation_date),
        tags=dict(manifest.tags),
        upstream=tuple(d.uuid for d in manifest.dependencies),
        bytes=size,
        held_by=held_by,
        claimed=claimed,
        named_by=named_by,
    )


def _named(raw: bytes) -> frozenset[str]:
    """The uuids a manifest gc cannot read seems to name (a lenient scan of its bytes)."""
    found = ((m.group(1) or m.group(2)).decode() for m in _NAMED.finditer(raw))
    return frozenset(u for u in found if is_uuid(u))


def _waiting(listed: dict[str, _Listed], intended: set[str], grace_seconds: float, now: float) -> list[Orphan]:
    """Objects of no bundle and no live intent still inside the grace period (left by a push
    that died or a gc that was killed): a later gc deletes them."""
    return [
        Orphan(key=key, size=size, uuid=uuid)
        for uuid, entry in listed.items()
        if not entry.has_manifest and uuid not in intended and now - entry.newest <= grace_seconds
        for key, size in entry.keys
    ]


def _inputs(intents: dict[str, set[str]]) -> set[str]:
    return {u for inputs in intents.values() for u in inputs}


def _is_name(name: str) -> bool:
    try:
        check_name(name)
    except InvalidName:
        return False
    return True
