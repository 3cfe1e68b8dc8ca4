"""One local context: bundle directories, atomic publishing, the index, and crash leftovers."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from disdat_luigi.errors import BundleCorrupt, BundleNotFound, ManifestRejected
from disdat_luigi.store import fsutil
from disdat_luigi.store.index import BundleIndex, BundleQuery, IndexRow
from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest

COMMITTED_MARKER = ".committed"
REMOTE_ONLY_MARKER = ".remote"  # some data files live only on the remote
CONTEXT_META = "context.json"


@dataclass(frozen=True)
class ContextMeta:
    """What a context knows about itself: its name and, once bound, its remote."""

    name: str
    remote_context: str | None = None
    remote_url: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "schema": 1,
                "name": self.name,
                "remote_context": self.remote_context,
                "remote_url": self.remote_url,
            },
            indent=1,
        ).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> ContextMeta:
        doc = json.loads(raw)
        return cls(name=doc["name"], remote_context=doc.get("remote_context"), remote_url=doc.get("remote_url"))


@dataclass
class BundleDraft:
    """A bundle being written: its private directory below tmp/, and the lock that marks it alive."""

    uuid: str
    path: Path
    lock_fd: int


class LocalContext:
    """A directory holding `objects/<uuid>/` bundle directories, `tmp/` drafts and `index.sqlite`."""

    def __init__(self, path: Path, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.objects_dir = path / "objects"
        self.tmp_dir = path / "tmp"
        self.index = BundleIndex(path / "index.sqlite")
        self._cleaned = False

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "durable": self.durable}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["path"], state["durable"])  # type: ignore[misc, arg-type]

    def __repr__(self) -> str:
        return f"LocalContext({self.name!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def meta(self) -> ContextMeta:
        return ContextMeta.from_json((self.path / CONTEXT_META).read_bytes())

    def write_meta(self, meta: ContextMeta) -> None:
        fsutil.write_atomic(self.path / CONTEXT_META, meta.to_json(), self.durable)

    def bind_remote(self, remote_context: str, remote_url: str) -> None:
        self.write_meta(replace(self.meta, remote_context=remote_context, remote_url=remote_url))

    # --- writing ---------------------------------------------------------------------------

    def begin_bundle(self, uuid: str) -> BundleDraft:
        """Reserve tmp/<uuid>/ for a new bundle; the held lock tells cleaners it is alive."""
        if not self._cleaned:
            self.clean_leftovers()
        # Lock under a private name, then rename: a lock file visible to cleaners is always held
        # by a live writer or by nobody, and a draft directory always has its lock beside it.
        staging = self.tmp_dir / f".{uuid}.lock.new"
        fd = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(staging, self.tmp_dir / f"{uuid}.lock")
        path = self.tmp_dir / uuid
        path.mkdir()
        return BundleDraft(uuid=uuid, path=path, lock_fd=fd)

    def publish(
        self,
        draft: BundleDraft,
        manifest: BundleManifest,
        committed: bool = False,
        remote_only: bool = False,
        files_synced: bool = False,
    ) -> None:
        """Make the draft a visible bundle: manifest last, fsync, one rename, then one index insert.
        `files_synced` says the writer already flushed every data file (only directories remain)."""
        if committed:
            (draft.path / COMMITTED_MARKER).touch()
        if remote_only:
            (draft.path / REMOTE_ONLY_MARKER).touch()
        if self.durable:  # data files and subdirectories first; the draft directory itself last
            fsutil.fsync_tree(draft.path, directories_only=files_synced, include_root=False)
        # the draft is private until the rename below, so the manifest needs no temporary name
        fsutil.write_file(draft.path / MANIFEST_NAME, manifest.to_json(), self.durable)
        if self.durable:
            fsutil.fsync_path(draft.path)
        target = self.bundle_dir(manifest.uuid)
        # No fsync of objects/ after the rename: after a power loss the rename (and the WAL index
        # row, synchronous=NORMAL) may be lost together, leaving an orphan draft that cleanup
        # removes; never a half bundle. Durability of the last bundles is traded for speed.
        os.rename(draft.path, target)
        self.index.insert(manifest, committed=committed)
        self._release(draft)

    def abandon(self, draft: BundleDraft) -> None:
        fsutil.remove_tree(draft.path)
        self._release(draft)

    def _release(self, draft: BundleDraft) -> None:
        (self.tmp_dir / f"{draft.uuid}.lock").unlink(missing_ok=True)
        os.close(draft.lock_fd)

    def commit(self, uuid: str) -> None:
        marker = self.bundle_dir(uuid) / COMMITTED_MARKER
        if not marker.exists():
            fsutil.write_atomic(marker, b"", self.durable)
        self.index.set_committed(uuid)

    def remove(self, uuids: list[str]) -> None:
        """Move each bundle out of objects/ (one rename), drop it from the index, then delete it."""
        trash: list[Path] = []
        for uuid in uuids:
            moved = self.tmp_dir / f"trash-{uuid}"
            try:
                os.rename(self.bundle_dir(uuid), moved)
                trash.append(moved)
            except FileNotFoundError:
                pass
        self.index.delete(uuids)
        for path in trash:
            fsutil.remove_tree(path)

    # --- reading ---------------------------------------------------------------------------

    def bundle_dir(self, uuid: str) -> Path:
        return self.objects_dir / uuid

    def load_manifest(self, uuid: str) -> BundleManifest:
        path = self.bundle_dir(uuid) / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError as err:
            raise BundleNotFound(
                f"bundle {uuid} is in the index of context {self.name!r} but its directory is gone",
                hint="run `dsdt verify` to repair the index",
            ) from err
        try:
            return BundleManifest.from_json(raw, source=str(path))
        except ManifestRejected as err:
            raise BundleCorrupt(str(err)) from err

    def is_committed(self, uuid: str) -> bool:
        return (self.bundle_dir(uuid) / COMMITTED_MARKER).exists()

    def is_remote_only(self, uuid: str) -> bool:
        return (self.bundle_dir(uuid) / REMOTE_ONLY_MARKER).exists()

    def set_remote_only(self, uuid: str, remote_only: bool) -> None:
        marker = self.bundle_dir(uuid) / REMOTE_ONLY_MARKER
        if remote_only:
            fsutil.write_atomic(marker, b"", self.durable)
        else:
            marker.unlink(missing_ok=True)

    def search(self, query: BundleQuery) -> list[IndexRow]:
        return self.index.search(query)

    # --- repair ----------------------------------------------------------------------------

    def clean_leftovers(self) -> list[str]:
        """Remove drafts of dead writers; index bundles a writer published but died before indexing."""
        self._cleaned = True
        cleaned: list[str] = []
        entries = sorted(self.tmp_dir.iterdir())
        locks = {e.name for e in entries if e.suffix == ".lock"}
        for entry in entries:
            if entry.name.startswith("trash-"):
                fsutil.remove_tree(entry)
                cleaned.append(entry.name)
            elif entry.name.endswith(".lock.new") and self._owner_is_dead(entry):
                entry.unlink(missing_ok=True)
            elif entry.is_dir() and not entry.name.startswith(".") and f"{entry.name}.lock" not in locks:
                if not (self.tmp_dir / f"{entry.name}.lock").exists():  # a listing may miss new entries
                    fsutil.remove_tree(entry)  # a draft whose lock is gone: its writer finished or died
                    cleaned.append(entry.name)
            elif entry.suffix == ".lock" and self._owner_is_dead(entry):
                uuid = entry.stem
                fsutil.remove_tree(self.tmp_dir / uuid)
                published = self.bundle_dir(uuid) / MANIFEST_NAME
                if published.exists() and uuid not in self.index.uuids():
                    self.index.insert(self.load_manifest(uuid), self.is_committed(uuid))
                entry.unlink(missing_ok=True)
                cleaned.append(uuid)
        return cleaned

    @staticmethod
    def _owner_is_dead(lock_path: Path) -> bool:
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
