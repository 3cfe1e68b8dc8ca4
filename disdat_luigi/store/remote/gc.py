"""Remote gc and du: the keep rules over a remote context's manifests and catalog, reclaimed with
batch deletes (manifests and catalog entries first, files after), holds, intents and claims
respected. A few listings (one request per 1,000 keys), one GET per manifest not already here,
then one delete request per 1,000 keys."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from disdat_luigi.errors import BundleNotFound, ManifestRejected, TransferError
from disdat_luigi.store.gc import UNREACHABLE_HINT, GcResult, NameUsage, RemoteCopies
from disdat_luigi.store.index import BundleQuery, to_us
from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest, is_uuid
from disdat_luigi.store.policy import Candidate, GcPlan, KeepPolicy, plan
from disdat_luigi.store.remote.holds import RemoteGuards, store_id
from disdat_luigi.store.remote.sync import RemoteSync

NO_NAME = "(no catalog entry)"
ORPHANS = "(objects without a manifest)"


@dataclass
class _Listed:
    """What one listing of objects/ says about a bundle directory."""

    keys: list[tuple[str, int]] = field(default_factory=list)  # (key, size)
    bytes: int = 0
    newest: float = 0.0
    has_manifest: bool = False
    manifest_bytes: int = 0


@dataclass(frozen=True)
class Orphan:
    key: str
    size: int


class RemoteCollector:
    """gc of the remote context a local context is bound to."""

    def __init__(self, sync: RemoteSync) -> None:
        self.sync = sync
        self.s3 = sync.s3
        self.location = sync.location
        self.guards = RemoteGuards(sync.s3, sync.location)

    def _list(self) -> tuple[dict[str, _Listed], dict[str, list[tuple[str, str]]]]:
        """objects/ by uuid; catalog entries (name, key) by uuid."""
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
        catalog: dict[str, list[tuple[str, str]]] = defaultdict(list)
        catalog_prefix = self.location.catalog_prefix()
        for obj in self.s3.list_objects(bucket, catalog_prefix):
            name, _, uuid = obj.key[len(catalog_prefix) :].rpartition("/")
            if is_uuid(uuid):
                catalog[uuid].append((name, obj.key))
        return dict(listed), dict(catalog)

    def _manifests(self, uuids: Sequence[str]) -> dict[str, BundleManifest]:
        """Each bundle's manifest: this context's copy when it has the bundle (manifests never
        change), else one GET; damaged ones are left out (and so left alone)."""
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

        def fetch(uuid: str) -> BundleManifest | None:
            try:
                remote = self.sync.fetch(uuid)
            except ManifestRejected:
                return None
            return remote.manifest if remote is not None else None

        for uuid, manifest in zip(wanted, self.sync._map(fetch, wanted)):
            if manifest is not None:
                found[uuid] = manifest
        return found

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
        manifest there has the bytes of the one here, or says the same in another layout: a pull
        writes manifests back as this release lays them out), and under which uuids it holds
        another. A catalog entry proves neither: anyone may write one, and a forced uuid may be
        another store's. One listing of objects/ (a request per 1,000 keys); a manifest's ETag
        vouches for its bytes when uploaded in one part without KMS, any other is read (a GET
        each, concurrently). TransferError with local gc's hint when it cannot be asked."""
        context = self.sync.context
        committed = {row.uuid for row in context.search(BundleQuery(committed=True))}
        prefix = self.location.objects
        same: set[str] = set()
        other: set[str] = set()
        unsure: list[str] = []

        def local(uuid: str) -> bytes | None:
            try:
                return (context.bundle_dir(uuid) / MANIFEST_NAME).read_bytes()
            except OSError:  # removed meanwhile: nothing here to keep
                return None

        def alike(uuid: str) -> bool | None:
            """Whether the remote manifest says what the local one says; None when either is gone."""
            try:
                remote = self.sync.fetch(uuid)
                here = local(uuid)
                if remote is None or here is None:
                    return None
                return remote.raw == here or remote.manifest == context.load_manifest(uuid)
            except (ManifestRejected, BundleNotFound):  # damaged, or claims another uuid: not this bundle
                return False

        try:
            for obj in self.s3.list_objects(self.location.bucket, prefix):
                uuid, _, rel = obj.key[len(prefix) :].partition("/")
                if rel != MANIFEST_NAME or uuid not in committed or (raw := local(uuid)) is None:
                    continue
                if obj.holds(raw):
                    same.add(uuid)
                else:  # KMS, multipart, another layout or another bundle: the manifest itself tells
                    unsure.append(uuid)
            for uuid, verdict in zip(unsure, self.sync._map(alike, unsure)):
                if verdict is not None:
                    (same if verdict else other).add(uuid)
        except TransferError as err:
            raise TransferError(err.message, hint=UNREACHABLE_HINT) from err
        return RemoteCopies(same=frozenset(same), other=frozenset(other))

    def collect(self, policy: KeepPolicy, grace_hours: float, dry_run: bool) -> GcResult:
        now = time.time()
        listed, catalog = self._list()
        bundles = sorted(u for u, entry in listed.items() if entry.has_manifest)
        manifests = self._manifests(bundles)
        holds = self._with_own_references(self.guards.holds())
        intents, dead = self.guards.intents(grace_hours * 3600, now)
        protected = self.guards.claimed_inputs(now) | {u for inputs in intents.values() for u in inputs}
        candidates = [_candidate(m, listed[u].bytes, holds.get(u, ()), u in protected) for u, m in manifests.items()]
        gc_plan = plan(candidates, policy, to_us_now(now), remote=True)
        orphans = self._orphans(listed, catalog, set(intents), grace_hours * 3600, now)
        orphans += [Orphan(key, size) for key, size in dead]  # intents of pushes that died
        if dry_run:
            return _result(gc_plan, dry_run=True, reclaimed=(), orphans=orphans)
        # a push that began (or resumed) since: its files stay, and the inputs it names; plan again with them
        began = self.guards.live_intents(grace_hours * 3600, time.time())
        late = {u for inputs in began.values() for u in inputs}
        fresh = {self.location.intent_key(u) for u in began}
        orphans = [
            o
            for o in orphans
            if o.key not in fresh and not any(o.key.startswith(self.location.bundle_prefix(u)) for u in began)
        ]
        if late & {c.uuid for c in gc_plan.reclaimed}:
            candidates = [
                _candidate(m, listed[u].bytes, holds.get(u, ()), u in protected | late) for u, m in manifests.items()
            ]
            gc_plan = plan(candidates, policy, to_us_now(now), remote=True)
        doomed = [c.uuid for c in gc_plan.reclaimed]
        first = [key for u in doomed for _, key in catalog.get(u, [])]
        first += [self.location.manifest_key(u) for u in doomed]
        first += [self.location.hold_key(u, store) for u in doomed for store in holds.get(u, ())]
        self.s3.delete(self.location.bucket, first)  # the bundles are gone: manifests and catalog first
        manifest_keys = set(first)
        rest = [k for u in doomed for k, _ in listed[u].keys if k not in manifest_keys]
        self.s3.delete(self.location.bucket, rest)
        self.s3.delete(self.location.bucket, [o.key for o in orphans])
        return _result(gc_plan, dry_run=False, reclaimed=tuple(doomed), orphans=orphans)

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
            found += [Orphan(key, size) for key, size in entry.keys]
        for uuid, entries in catalog.items():
            if uuid not in listed or not listed[uuid].has_manifest:
                found += [Orphan(key, 0) for _, key in entries]
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
            size[name] += entry.bytes - entry.manifest_bytes  # data files, as local du counts them
        return [NameUsage(name=n, bundles=count[n], bytes=size[n]) for n in sorted(count)]


def to_us_now(now: float) -> int:
    return int(now * 10**6)


def _candidate(manifest: BundleManifest, size: int, held_by: tuple[str, ...], claimed: bool) -> Candidate:
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
    )


def _result(gc_plan: GcPlan, dry_run: bool, reclaimed: tuple[str, ...], orphans: list[Orphan]) -> GcResult:
    return GcResult(
        plan=gc_plan,
        remote=True,
        dry_run=dry_run,
        reclaimed=reclaimed,
        bytes_reclaimed=0 if dry_run else gc_plan.bytes_reclaimed,
        orphans=len(orphans),
        orphan_bytes=sum(o.size for o in orphans),
    )
