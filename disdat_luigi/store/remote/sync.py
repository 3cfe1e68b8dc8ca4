"""Push, pull, remove and (de)localize bundles between a local context and its S3 remote.

Publishing is a transaction: data files first, the manifest last (create-only), then a catalog
entry by name. A bundle is on the remote exactly when its manifest is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from disdat_luigi.config import RemoteSettings
from disdat_luigi.errors import (
    BundleCorrupt,
    BundleNotFound,
    ManifestRejected,
    NotCommitted,
    PathNotFound,
    TransferError,
    UuidConflict,
)
from disdat_luigi.store.bundle import Bundle
from disdat_luigi.store.codec import RemoteLeaf
from disdat_luigi.store.context import FLUSH_THREADS, METADATA_THREADS, BundleDraft, LocalContext, Publication
from disdat_luigi.store.index import BundleQuery, IndexRow, to_us
from disdat_luigi.store.location import RemoteLocation, S3Url, parse_s3_url
from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest, FileEntry, is_uuid, same_bundle
from disdat_luigi.store.remote import packs, transfer
from disdat_luigi.store.remote.holds import RemoteGuards, store_id
from disdat_luigi.store.remote.notices import GcNotices
from disdat_luigi.store.remote.progress import NoProgress, Part, Progress
from disdat_luigi.store.remote.s3 import S3, RemoteObject
from disdat_luigi.store.remote.transfer import FileTransfer
from disdat_luigi.store.transfers import RemoteRef

MAX_MANIFEST_BYTES = 256 * 1024 * 1024
PULL_BATCH = 64  # bundles pulled together: one transfer pool for all their files, one draft each
METADATA_BATCH = 1000  # bundles pulled without their files, published together: one index transaction
CATALOG_NAMES_LISTED = 100  # a push of more names lists the whole catalog instead of each name
LIST_ALL_MIN = 100  # a push of this many bundles lists the bundle directories once, not each one
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class PushResult:
    pushed: list[str] = field(default_factory=list)
    already_remote: list[str] = field(default_factory=list)
    files: int = 0
    uploaded: int = 0
    bytes: int = 0
    delocalized: list[str] = field(default_factory=list)  # bundles whose local files went (push -d)
    kept_local: list[KeptLocal] = field(default_factory=list)  # push -d kept their files: a gc reclaims them


@dataclass(frozen=True, kw_only=True)
class KeptLocal:
    """A bundle `push -d` left local: a remote gc announced it reclaims it, so the remote copy goes."""

    name: str
    uuid: str
    notice: str  # the URL of the gc notice that names it

    def __str__(self) -> str:
        return (
            f"kept the local files of {self.name} {self.uuid}: a remote gc is reclaiming it (its notice: {self.notice})"
        )


class PullResult(list[Bundle]):
    """The bundles a pull matched (a list, as before), plus the uuids it actually brought here
    (metadata or files) and the (uuid, reason) of remote bundles it skipped as damaged."""

    def __init__(self, skipped: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.fetched: list[str] = []
        self.skipped: list[tuple[str, str]] = skipped or []


@dataclass(frozen=True)
class RemoteBundle:
    """A bundle as the remote has it."""

    manifest: BundleManifest
    raw: bytes


class RemoteSync:
    """The bridge between one local context and the remote it is bound to."""

    def __init__(self, context: LocalContext, settings: RemoteSettings, progress: Progress | None = None) -> None:
        self.context = context
        self.settings = settings
        self.location = RemoteLocation.of(context)
        self.s3 = S3(settings)
        self.progress = progress
        self.guards = RemoteGuards(self.s3, self.location)
        self.notices = GcNotices(self.s3, self.location)

    # --- push ------------------------------------------------------------------------------

    def push(self, bundles: Iterable[Bundle], delocalize: bool = False) -> PushResult:
        """Publish committed bundles; files already on the remote (same size and sha256) are skipped."""
        bundles = list(bundles)
        for bundle in bundles:
            if not bundle.is_committed:
                raise NotCommitted(f"bundle {bundle.name} {bundle.uuid} is not committed")
        result = PushResult()
        cataloged = self._cataloged({b.name for b in bundles}) if len(bundles) > 1 else set()
        unknown = [b.uuid for b in bundles if b.uuid not in cataloged]
        listings = self._listings(unknown)
        todo: list[Bundle] = []
        healed: list[Bundle] = []
        for bundle in bundles:
            listed = listings.get(bundle.uuid)
            if listed is None:
                result.already_remote.append(bundle.uuid)
            elif self.location.manifest_key(bundle.uuid) in listed:
                healed.append(bundle)  # complete, but its catalog entry may be missing
                result.already_remote.append(bundle.uuid)
            else:
                todo.append(bundle)
        # a manifest found by listing may be another bundle's under the same uuid (a forced uuid
        # reused elsewhere); one the catalog lists by this name was published by this protocol
        self._map(self._check_same, healed)
        self._map(lambda b: self._write_catalog(b.manifest), healed)
        # an intent first: gc leaves files of a push in flight (and the inputs it names) alone
        with_files = [b for b in todo if b.files]
        self._map(self._intend, with_files)
        try:  # the intents go whatever happens: a failed push leaves none behind
            self._publish(todo, with_files, listings, result)
        finally:
            self.guards.done(b.uuid for b in with_files)
        result.pushed.extend(b.uuid for b in todo)
        if delocalize:
            kept = self._delocalize_all(bundles)
            result.delocalized.extend(b.uuid for b in bundles if b.uuid not in kept)
            result.kept_local.extend(
                KeptLocal(name=b.name, uuid=b.uuid, notice=kept[b.uuid]) for b in bundles if b.uuid in kept
            )
        return result

    def _publish(
        self, todo: list[Bundle], with_files: list[Bundle], listings: dict[str, dict[str, int]], result: PushResult
    ) -> None:
        """Upload what the remote lacks, check it is all still there (and no gc is deleting it),
        then write the manifests and catalog entries."""
        jobs: list[FileTransfer] = []
        absent: set[str] = set()
        for bundle in todo:
            listed = listings[bundle.uuid]
            for job in self._jobs(bundle):
                if listed.get(job.key) != job.size:
                    absent.add(job.key)
                jobs.append(job)
        if jobs:
            result.uploaded = transfer.run_all(
                jobs, transfer.uploader(self.s3, absent), self.settings.transfer_threads, self.progress
            )
        result.files = len(jobs)
        result.bytes = sum(j.size for j in jobs)
        self._map(self._recheck, with_files)
        self._outwait_gc(with_files)
        published = self._map(self._publish_manifest, todo)
        packs.write(
            self.s3, self.location, [raw for raw in published if raw is not None], self.settings.transfer_threads
        )

    def _intend(self, bundle: Bundle) -> None:
        self.guards.intend(bundle.uuid, (d.uuid for d in bundle.dependencies))

    def _outwait_gc(self, bundles: Sequence[Bundle]) -> None:
        """Before the manifests: a remote gc whose notice names one of these bundles (its files,
        left by an earlier push, looked abandoned) may be deleting them. Wait for it to end, then
        write the intent again and send what it deleted. One listing when no gc runs."""
        if not bundles:
            return
        notices = [n for n in self.notices.live(time.time()) if any(b.uuid in n.orphans for b in bundles)]
        named = [b for b in bundles if any(b.uuid in n.orphans for n in notices)]
        if named:
            self.notices.wait_gone(notices, f"bundle {named[0].name} {named[0].uuid}")
            self._map(self._intend, named)
            self._map(self._recheck, named)

    def _map(self, action: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """One request per item, `transfer_threads` at a time."""
        return transfer.map_all(action, items, self.settings.transfer_threads)

    def _cataloged(self, names: set[str]) -> set[str]:
        """Uuids the remote catalog lists under `names`: complete bundles (a catalog entry is
        written after its manifest and removed before it), found with a list per name, or with
        many names one listing of the whole catalog."""
        if len(names) > CATALOG_NAMES_LISTED:
            prefix = self.location.catalog_prefix()
            keys = (o.key[len(prefix) :].rpartition("/") for o in self.s3.list_objects(self.location.bucket, prefix))
            return {uuid for name, _, uuid in keys if name in names}
        found = self._map(self.remote_uuids, sorted(names))
        return {uuid for uuids in found for uuid in uuids}

    def _listings(self, uuids: Sequence[str]) -> dict[str, dict[str, int]]:
        """What the remote holds below each bundle's directory (key -> size): a list per bundle,
        or for many bundles one listing of the bundle directories first, so that only those
        with something there are listed one by one."""
        if len(uuids) < LIST_ALL_MIN:
            return dict(zip(uuids, self._map(self._listed_sizes, uuids)))
        present = set(self.remote_uuids()) & set(uuids)
        listed = dict(zip(present, self._map(self._listed_sizes, sorted(present))))
        return {uuid: listed.get(uuid, {}) for uuid in uuids}

    def _jobs(self, bundle: Bundle) -> list[FileTransfer]:
        local_dir = Path(bundle.local_dir)
        jobs = []
        missing = []
        for entry in bundle.files:
            path = local_dir / entry.path
            if not path.exists():
                missing.append(entry.path)
                continue
            jobs.append(self._job(local_dir, bundle.uuid, entry))
        if missing and not self._all_on_remote(bundle, missing):
            raise BundleCorrupt(
                f"bundle {bundle.name} {bundle.uuid} lacks {missing[0]} locally and the remote does not have it"
            )
        return jobs

    def _job(self, root: Path, uuid: str, entry: FileEntry) -> FileTransfer:
        key = self.location.file_key(uuid, entry.path)
        return FileTransfer(root / entry.path, self.location.bucket, key, entry.size, entry.sha256)

    def _all_on_remote(self, bundle: Bundle, rels: list[str]) -> bool:
        sizes = {e.path: e.size for e in bundle.files}
        for rel in rels:
            head = self.s3.head(self.location.bucket, self.location.file_key(bundle.uuid, rel))
            if head is None or head.get("ContentLength") != sizes[rel]:
                return False
        return True

    def _recheck(self, bundle: Bundle) -> None:
        """Just before the manifest: every file is still on the remote (else it is sent again)."""
        listed = self._listed_sizes(bundle.uuid)
        gone = [job for job in self._jobs(bundle) if listed.get(job.key) != job.size]
        if gone:
            transfer.run_all(
                gone, transfer.uploader(self.s3, {j.key for j in gone}), self.settings.transfer_threads, self.progress
            )

    def _publish_manifest(self, bundle: Bundle) -> bytes | None:
        """Publish the manifest (create-only), then the catalog entry; the manifest when this
        push created it (a manifest pack may then copy it)."""
        raw = (Path(bundle.local_dir) / MANIFEST_NAME).read_bytes()
        created = self.s3.put_bytes(
            self.location.bucket, self.location.manifest_key(bundle.uuid), raw, create_only=True
        )
        self._write_catalog(bundle.manifest)
        return raw if created else None

    def _write_catalog(self, manifest: BundleManifest) -> None:
        key = self.location.catalog_key(manifest.name, manifest.uuid)
        self.s3.put_bytes(self.location.bucket, key, b"", create_only=True)

    def _check_same(self, bundle: Bundle) -> None:
        """The remote holds this very bundle under its uuid (see `same_bundle`), else UuidConflict."""
        key = self.location.manifest_key(bundle.uuid)
        raw = self.s3.get_bytes(self.location.bucket, key, MAX_MANIFEST_BYTES)
        local = (Path(bundle.local_dir) / MANIFEST_NAME).read_bytes()
        if raw is None:
            raise TransferError(f"bundle {bundle.name} {bundle.uuid} is not on the remote; push it first")
        try:
            same = same_bundle(raw, local, source=self.location.url(key))
        except ManifestRejected as err:
            raise ManifestRejected.of_remote(err.message, bundle.uuid) from err
        if not same:
            raise UuidConflict(
                f"the remote holds a different bundle under uuid {bundle.uuid} "
                f"(not this {bundle.name!r}); nothing was pushed or dropped for it",
                hint="bundles made with a forced uuid must not reuse it; make a new bundle with a fresh uuid",
            )

    def _listed_sizes(self, uuid: str) -> dict[str, int]:
        return {o.key: o.size for o in self.s3.list_objects(self.location.bucket, self.location.bundle_prefix(uuid))}

    def adopt(self, uuid: str, leaves: Iterable[RemoteLeaf]) -> list[FileEntry]:
        """Make s3:// files of a closing bundle part of it: copy outside ones into its remote
        directory, then describe every object (size, sha256) for the manifest."""
        bucket = self.location.bucket
        entries: list[FileEntry] = []
        for leaf in leaves:
            target = self.location.file_key(uuid, leaf.rel)
            if leaf.source is not None:
                self._copy_in(parse_s3_url(leaf.source), target)
            if self.s3.head(bucket, target) is not None:
                found = [(leaf.rel, target)]
            else:
                found = [
                    (f"{leaf.rel}/{o.key[len(target) + 1 :]}", o.key)
                    for o in self.s3.list_objects(bucket, target + "/")
                ]
            if not found:
                raise PathNotFound(f"nothing was written at {self.location.url(target)}")
            for rel, key in found:
                size, digest = self.s3.sha256_of(bucket, key)
                entries.append(FileEntry(path=rel, size=size, sha256=digest))
        return entries

    def _copy_in(self, source: S3Url, target: str) -> None:
        bucket = self.location.bucket
        if self.s3.head(source.bucket, source.key) is not None:
            self.s3.copy(source.bucket, source.key, bucket, target)
            return
        objects = list(self.s3.list_objects(source.bucket, source.key + "/"))
        if not objects:
            raise PathNotFound(f"{source} does not exist", hint="return an existing s3:// file or directory")
        for obj in objects:
            self.s3.copy(source.bucket, obj.key, bucket, f"{target}/{obj.key[len(source.key) + 1 :]}")

    # --- remote catalog ---------------------------------------------------------------------

    def remote_uuids(self, name: str | None = None) -> list[str]:
        """Uuids the remote lists by `name` (catalog), or every bundle directory when no name."""
        if name is not None:
            prefix = self.location.catalog_prefix(name)
            return [o.key[len(prefix) :] for o in self.s3.list_objects(self.location.bucket, prefix)]
        return list(self.s3.list_dirs(self.location.bucket, self.location.objects))

    def missing(self, uuids: Sequence[str]) -> list[str]:
        """Those of `uuids` the remote does not hold (no manifest)."""
        bucket = self.location.bucket
        found = self._map(lambda u: self.s3.head(bucket, self.location.manifest_key(u)) is not None, uuids)
        return [u for u, present in zip(uuids, found) if not present]

    def fetch(self, uuid: str) -> RemoteBundle | None:
        """The remote manifest of `uuid`, validated; None when the bundle is not (completely) there."""
        key = self.location.manifest_key(uuid)
        raw = self.s3.get_bytes(self.location.bucket, key, MAX_MANIFEST_BYTES)
        if raw is None:
            return None
        try:
            manifest = BundleManifest.from_json(raw, source=self.location.url(key))
        except ManifestRejected as err:
            raise ManifestRejected.of_remote(err.message, uuid) from err
        if manifest.uuid != uuid:
            raise ManifestRejected.of_remote(f"{self.location.url(key)} claims to be bundle {manifest.uuid}", uuid)
        return RemoteBundle(manifest, raw)

    def find(self, name: str | None = None, uuid: str | None = None) -> list[RemoteBundle]:
        """Complete remote bundles by uuid, by name (newest first) or all; hostile manifests raise."""
        uuids = [uuid] if uuid is not None else self.remote_uuids(name)
        found = [b for b in self._map(self.fetch, uuids) if b is not None]
        if name is not None:
            found = [b for b in found if b.manifest.name == name]
        return sorted(found, key=lambda b: b.manifest.creation_date, reverse=True)

    # --- pull ------------------------------------------------------------------------------

    def pull(self, name: str | None = None, uuid: str | None = None, localize: bool = False) -> PullResult:
        """Bring bundles' metadata (and with `localize` their files, verified) into the context.
        Pulling more than one uuid, a bundle whose remote manifest is rejected, or whose files
        fail verification (BundleCorrupt), is skipped (and named in the result's `skipped`) with
        nothing of it kept, rather than stopping everyone else's; by uuid it raises."""
        skipped: list[tuple[str, str]] = []
        remote: Sequence[RemoteBundle | IndexRow] = (
            self._find_all(name, skipped) if uuid is None else self.find(name, uuid)
        )
        if uuid is not None and not remote:
            raise BundleNotFound(f"bundle {uuid} is not on the remote {self.location.url(self.location.root)}")
        progress = self.progress or NoProgress()
        if localize:
            wanted = [e for item in remote for e in self._not_here(item)]
            progress.start(len(wanted), sum(e.size for e in wanted))
        pulled = PullResult(skipped=skipped)
        step = PULL_BATCH if localize else METADATA_BATCH
        try:
            threads = FLUSH_THREADS if localize else METADATA_THREADS
            with ThreadPoolExecutor(max_workers=threads) as pool:  # the local writes of every batch
                for start in range(0, len(remote), step):
                    batch = remote[start : start + step]
                    self._pull_batch(batch, localize, Part(progress), pulled, pool, keep_going=uuid is None)
        finally:
            if localize:
                progress.close()
        pulled.skipped.sort()  # found in parallel and batch by batch: name them in a stable order
        return pulled

    def _find_all(self, name: str | None, skipped: list[tuple[str, str]]) -> list[RemoteBundle | IndexRow]:
        """`find` by name or all, newest first, leaving out (into `skipped`) bundles whose
        manifest is rejected. A bundle this context already has is answered by its index row:
        no request for it (a pull with nothing new costs the listing of bundle directories only).
        A pull of everything into an empty context lists objects/ whole instead: the bundles and
        their manifests' ETags in one pass, which the manifest packs need anyway."""
        manifests: dict[str, RemoteObject] | None = None
        if name is None and self.context.index.is_empty():
            manifests = self._manifest_objects()
            listed = list(manifests)
        else:
            listed = list(dict.fromkeys(self.remote_uuids(name)))
        rows = self.context.index.rows(listed)
        here = [row for row in rows.values() if name is None or row.name == name]
        new = self._manifests([u for u in listed if u not in rows], name, skipped, manifests)
        found = [RemoteBundle(m, b"") for m in new if name is None or m.name == name]
        items: list[RemoteBundle | IndexRow] = [*found, *here]
        return sorted(items, key=_created_us, reverse=True)

    def _manifests(
        self,
        uuids: Sequence[str],
        name: str | None,
        skipped: list[tuple[str, str]],
        listed: Mapping[str, RemoteObject] | None = None,
    ) -> list[BundleManifest]:
        """The remote manifests of `uuids` (listed under `name`, or anywhere): for a pull of
        everything many of them from manifest packs (vouched for by `listed`, the manifest
        objects, when already known), the rest (and any a pack cannot vouch for) one request
        each, validated; rejected ones are named in `skipped`."""
        from_packs = self._from_packs(uuids, listed) if name is None and len(uuids) >= packs.PACK_MIN else {}

        def fetch(uuid: str) -> BundleManifest | None:
            try:
                fetched = self.fetch(uuid)
            except ManifestRejected as err:
                skipped.append((uuid, err.message))
                return None
            return fetched.manifest if fetched is not None else None

        rest = self._map(fetch, [u for u in uuids if u not in from_packs])
        return [*from_packs.values(), *(m for m in rest if m is not None)]

    def _from_packs(self, uuids: Sequence[str], listed: Mapping[str, RemoteObject] | None) -> dict[str, BundleManifest]:
        """Manifests of `uuids` from the remote's packs, each vouched for by a listing of objects/
        (the manifest's ETag is the MD5 of the pack entry): `listed`, or one made while the
        first packs are read. Empty when the remote has no packs."""
        refs = packs.listed(self.s3, self.location)
        if not refs:
            return {}
        wanted = set(uuids)
        with ThreadPoolExecutor(max_workers=1) as lister:
            listing = lister.submit(lambda: listed if listed is not None else self._manifest_objects(wanted))

            def vouch(uuid: str, raw: bytes) -> bool:
                found = listing.result().get(uuid)
                return found is not None and found.holds(raw)

            try:
                return packs.read(self.s3, self.location, refs, wanted, vouch, self.settings.transfer_threads)
            finally:
                listing.cancel()

    def _manifest_objects(self, uuids: set[str] | None = None) -> dict[str, RemoteObject]:
        """The listed manifest object of each bundle of objects/ (of `uuids` only, when given)
        that has one: a request per 1,000 keys of objects/."""
        prefix = self.location.objects
        found: dict[str, RemoteObject] = {}
        for obj in self.s3.list_objects(self.location.bucket, prefix):
            uuid, _, rel = obj.key[len(prefix) :].partition("/")
            if rel == MANIFEST_NAME and is_uuid(uuid) and (uuids is None or uuid in uuids):
                found[uuid] = obj
        return found

    def _not_here(self, item: RemoteBundle | IndexRow) -> list[FileEntry]:
        """Files of a remote bundle this context lacks (all of them when the bundle is new)."""
        if isinstance(item, RemoteBundle):
            return list(item.manifest.files)
        local_dir = self.context.bundle_dir(item.uuid)
        return [e for e in self.context.load_manifest(item.uuid).files if not (local_dir / e.path).exists()]

    def _pull_batch(
        self,
        items: Sequence[RemoteBundle | IndexRow],
        localize: bool,
        progress: Progress,
        pulled: PullResult,
        pool: Executor,
        keep_going: bool,
    ) -> None:
        """Pull a few bundles at once: the new ones get a draft each, all their files go through
        one transfer pool, and the drafts are published together only when every file of the
        batch is in. A bundle whose files fail verification loses its draft and, with
        `keep_going`, is named in `pulled.skipped` while the others are published; without, its
        BundleCorrupt is raised. Bundles already here (index rows) get their missing files."""
        fresh = [i.manifest for i in items if isinstance(i, RemoteBundle)]
        known = {i.uuid for i in items if isinstance(i, IndexRow)}
        known |= set(self.context.index.rows([m.uuid for m in fresh]))
        wanted = {m.uuid: m for m in fresh if m.uuid not in known}
        begun, brought = self.context.begin_many(list(wanted), pool)
        known |= brought  # another writer (a concurrent pull) brought them meanwhile
        drafts = {d.uuid: (d, wanted[d.uuid]) for d in begun}  # in pull order
        corrupt: dict[str, BundleCorrupt] = {}
        try:
            if localize:
                corrupt = self._download(drafts, progress)
            for uuid in corrupt:
                self.context.abandon(drafts[uuid][0])
                del drafts[uuid]
            if corrupt and not keep_going:
                raise next(iter(corrupt.values()))
            self.context.publish_many(
                [
                    Publication(
                        draft=draft,
                        manifest=manifest,
                        committed=True,
                        remote_only=not localize and bool(manifest.files),
                        files_synced=localize,
                        metadata_only=not localize,
                    )
                    for draft, manifest in drafts.values()
                ],
                pool,
            )
            drafts.clear()
        finally:
            for draft, _ in drafts.values():  # published after all (Ctrl-C in the last steps): kept
                self.context.abandon(draft)
        rows = self.context.index.rows(known)
        for item in items:
            uuid = item.manifest.uuid if isinstance(item, RemoteBundle) else item.uuid
            if uuid in corrupt:
                pulled.skipped.append((uuid, corrupt[uuid].message))
            elif uuid in known:
                if uuid not in rows:  # removed here while this pull ran
                    continue
                bundle = Bundle.from_row(self.context, rows[uuid])
                try:
                    if localize and self.localize(bundle, progress=progress):
                        pulled.fetched.append(uuid)
                except BundleCorrupt as err:
                    if not keep_going:
                        raise
                    pulled.skipped.append((uuid, err.message))  # kept as it was: metadata, files remote
                    continue
                pulled.append(bundle)
            else:
                assert isinstance(item, RemoteBundle)
                pulled.fetched.append(uuid)
                pulled.append(Bundle.from_manifest(self.context, item.manifest, True))

    def _download(
        self, drafts: dict[str, tuple[BundleDraft, BundleManifest]], progress: Progress
    ) -> dict[str, BundleCorrupt]:
        """Every file of the drafts through one transfer pool, each verified before it appears;
        the drafts whose files failed verification (a bad sha256 or size, a missing object), with
        their error. Any other failure stops every download and is raised."""
        uuids = list(drafts)
        groups = [self._file_jobs(draft.path, uuid, manifest.files) for uuid, (draft, manifest) in drafts.items()]
        if not any(groups):
            return {}
        downloader = transfer.downloader(self.s3)
        _, failed = transfer.run_groups(groups, downloader, self.settings.transfer_threads, progress, (BundleCorrupt,))
        return {uuids[index]: error for index, error in failed.items() if isinstance(error, BundleCorrupt)}

    def _file_jobs(self, root: Path, uuid: str, entries: Iterable[FileEntry]) -> list[FileTransfer]:
        bucket = self.location.bucket
        return [
            FileTransfer(root / e.path, bucket, self.location.file_key(uuid, e.path), e.size, e.sha256) for e in entries
        ]

    # --- local copies ----------------------------------------------------------------------

    def localize(self, bundle: Bundle, rels: Iterable[str] | None = None, progress: Progress | None = None) -> int:
        """Download the bundle's missing files (all, or `rels`), each verified before it appears;
        how many were downloaded. Done under the bundle's lock, as is delocalize's marking and
        dropping: files are never dropped between the check that all are here and the removal of
        the `.remote` marker."""
        wanted = set(rels) if rels is not None else None
        local_dir = Path(bundle.local_dir)

        def missing() -> list[FileEntry]:
            return [
                e for e in bundle.files if (wanted is None or e.path in wanted) and not (local_dir / e.path).exists()
            ]

        if not missing() and not self.context.is_remote_only(bundle.uuid):
            return 0  # nothing to do (and nothing written: a read-only store stays readable)
        with self.context.bundle_lock(bundle.uuid):
            jobs = self._file_jobs(local_dir, bundle.uuid, missing())
            if jobs:
                transfer.run_all(
                    jobs, transfer.downloader(self.s3), self.settings.transfer_threads, progress or self.progress
                )
            if all((local_dir / e.path).exists() for e in bundle.files):
                self.context.set_remote_only(bundle.uuid, False)
                self.guards.release([bundle.uuid], store_id(self.context))  # local again: no hold needed
        return len(jobs)

    def delocalize(self, bundle: Bundle, rels: Iterable[str] | None = None) -> bool:
        """Drop local copies of files the remote verifiably holds: the remote manifest is this
        bundle's, and each object has the size and the content of its manifest entry, proven by
        the checksum S3 keeps or by reading it back (every file is checked before any is dropped).
        False when nothing was dropped because a remote gc is reclaiming the bundle."""
        return not self._delocalize_all([bundle], rels)

    def _delocalize_all(self, bundles: Sequence[Bundle], rels: Iterable[str] | None = None) -> dict[str, str]:
        """Delocalize each bundle: write every hold, read the gc notices once, then check each
        remote copy and drop the local files. A gc whose notice came first is seen here (the
        bundle it reclaims keeps its files and loses its hold); one whose notice came later sees
        the hold and keeps the bundle; a gc done before the notices were read left no copy to
        check. The uuids so kept -> the URL of the notice that names each."""
        wanted = set(rels) if rels is not None else None
        mine = store_id(self.context)
        held: list[str] = []
        try:
            for bundle in bundles:
                self.guards.hold(bundle.uuid, mine)  # gc keeps what this store now relies on
                held.append(bundle.uuid)
            kept = self.notices.reclaimers(held, time.time())
            # checked only now: a gc that finished before the notices were read deleted the copy
            dropping = [(b, self._proven_copies(b, wanted)) for b in bundles if b.uuid not in kept]
        except BaseException:
            # nothing was dropped now, but a bundle already only on the remote still needs its hold
            self.guards.release([u for u in held if not self.context.is_remote_only(u)], mine)
            raise
        self.guards.release(sorted(kept), mine)
        for bundle, local in dropping:
            with self.context.bundle_lock(bundle.uuid):  # see localize
                self.context.set_remote_only(bundle.uuid, True)
                for entry in local:
                    (Path(bundle.local_dir) / entry.path).unlink(missing_ok=True)
        return kept

    def _proven_copies(self, bundle: Bundle, wanted: set[str] | None) -> list[FileEntry]:
        """The bundle's local files (of `wanted`, or all) after proving the remote holds each."""
        self._check_same(bundle)
        local_dir = Path(bundle.local_dir)
        local = [e for e in bundle.files if (wanted is None or e.path in wanted) and (local_dir / e.path).exists()]
        self._map(lambda e: self._check_remote_copy(bundle.uuid, e, local_dir / e.path), local)
        return local

    def _check_remote_copy(self, uuid: str, entry: FileEntry, path: Path) -> None:
        """The remote object has the entry's content: by the SHA-256 checksum S3 keeps (checked
        by S3 against the bytes it received), else by reading it back and hashing it. Its sha256
        metadata label proves nothing (any writer of the bucket can keep it on other bytes)."""
        bucket, key = self.location.bucket, self.location.file_key(uuid, entry.path)
        head = self.s3.head(bucket, key, checksum=True)
        if head is None or head.get("ContentLength") != entry.size:
            raise TransferError(f"the remote copy of {entry.path} of bundle {uuid} is missing or incomplete")
        proven = self.s3.proves(head, path, entry.sha256)
        if proven is None:  # no checksum to compare (replaced, or pushed by an earlier release)
            proven = self.s3.sha256_of(bucket, key) == (entry.size, entry.sha256)
        if not proven:
            raise BundleCorrupt(
                f"the remote copy of {entry.path} of bundle {uuid} does not match its manifest; "
                "no local copy was dropped",
                hint=f"the remote copy was replaced after the push: `dsdt rmr -u {uuid}`, then "
                f"`dsdt push -u {uuid}` publishes this good copy again",
            )

    # --- removal ---------------------------------------------------------------------------

    def remove(self, bundles: Iterable[RemoteRef]) -> None:
        """Catalog entry first, then the manifest (the bundle is gone), then its data objects.
        A bundle whose manifest is unreadable (no name) loses every catalog entry naming its uuid."""
        bucket = self.location.bucket
        for ref in bundles:
            if ref.name is not None:
                catalog = [self.location.catalog_key(ref.name, ref.uuid)]
            else:
                listed = self.s3.list_objects(bucket, self.location.catalog_prefix())
                catalog = [o.key for o in listed if o.key.endswith("/" + ref.uuid)]
            self.s3.delete(bucket, catalog)
            self.s3.delete(bucket, [self.location.manifest_key(ref.uuid)])
            rest = [o.key for o in self.s3.list_objects(bucket, self.location.bundle_prefix(ref.uuid))]
            self.s3.delete(bucket, rest)

    def delete_everything(self) -> int:
        keys = [o.key for o in self.s3.list_objects(self.location.bucket, self.location.root)]
        self.s3.delete(self.location.bucket, keys)
        return len(keys)


def download_into(root: Path, leaves: Iterable[RemoteLeaf], settings: RemoteSettings) -> None:
    """Copy s3:// files (or every object below an s3:// directory) into a bundle being written
    at `root`, at each leaf's place: Disdat's copy-in, for a context without a remote."""
    s3 = S3(settings)
    wanted: list[tuple[str, str, Path]] = []
    for leaf in leaves:
        assert leaf.source is not None
        source = parse_s3_url(leaf.source)
        if s3.head(source.bucket, source.key) is not None:
            wanted.append((source.bucket, source.key, root / leaf.rel))
            continue
        objects = list(s3.list_objects(source.bucket, source.key + "/"))
        if not objects:
            raise PathNotFound(f"{source} does not exist", hint="return an existing s3:// file or directory")
        wanted.extend((source.bucket, o.key, root / leaf.rel / o.key[len(source.key) + 1 :]) for o in objects)
    for bucket, key, target in wanted:
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download(bucket, key, target)


def bundles_to_push(context: LocalContext, name: str | None, uuid: str | None, tags: dict[str, str]) -> list[Bundle]:
    """By uuid or name the newest match (which must be committed); else every committed match."""
    from disdat_luigi.store import queries

    if uuid is None and name is None:
        return queries.find(context, BundleQuery(tags=tags, committed=True))
    bundle = queries.require(context, name, uuid, tags)
    if not bundle.is_committed:
        raise NotCommitted(
            f"bundle {bundle.name} {bundle.uuid} is not committed; only committed bundles are pushed",
            hint=f"commit it first: `dsdt commit {bundle.name}` (or -u {bundle.uuid})",
        )
    return [bundle]


def bundles_to_remove(
    sync: RemoteSync, name: str | None, uuid: str | None, tags: dict[str, str], rm_all: bool
) -> list[RemoteRef]:
    """Remote bundles `rmr` deletes, with the same rules as `rm`: by name the newest (all with
    rm_all); without name or uuid only with rm_all. By uuid even a bundle whose manifest is
    unreadable can go (that is how a damaged remote copy is cleaned up)."""
    try:
        found = [b.manifest for b in sync.find(name, uuid)]
    except ManifestRejected:
        if uuid is None or not is_uuid(uuid):
            raise
        return [RemoteRef(uuid, None)]
    found = [m for m in found if all(m.tags.get(k) == v for k, v in tags.items())]
    if uuid is None and not rm_all:
        found = found[:1]
    return [RemoteRef(m.uuid, m.name) for m in found]


def _created_us(item: RemoteBundle | IndexRow) -> int:
    return to_us(item.manifest.creation_date) if isinstance(item, RemoteBundle) else item.created_us
