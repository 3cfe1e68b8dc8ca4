"""`Bundle`: the user-facing, immutable-once-closed unit of versioned data."""

from __future__ import annotations

import getpass
import os
import posixpath
import sqlite3
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from disdat_luigi.errors import (
    BundleCorrupt,
    BundleStateError,
    GcInProgress,
    InvalidName,
    LocalDiskError,
    UnsupportedValue,
    describe_os_error,
)
from disdat_luigi.store import codec, fsutil
from disdat_luigi.store.context import BundleDraft, LocalContext
from disdat_luigi.store.index import IndexRow
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.manifest import BundleManifest, Dependency, FileEntry
from disdat_luigi.store.names import check_name, check_tags, has_control
from disdat_luigi.store.taint import InputStrings, given_trees
from disdat_luigi.store.transfers import Remote, RemoteRef, copy_in, open_remote


class _NoData:
    def __repr__(self) -> str:
        return "<no data>"


_NO_DATA: Any = _NoData()
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Bundle:
    """Open it, fill it, close it; once closed every attribute is read-only.

    `Bundle(ctx, name=..., data=value)` does all three at once; `with Bundle(ctx, name=...) as b:`
    closes on exit and abandons the bundle (leaving nothing) when the block raises.
    """

    def __init__(
        self,
        local_context: LocalContext,
        name: str | None = None,
        data: Any = _NO_DATA,
        processing_name: str | None = None,
        owner: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        dependencies: Any = None,
        code_method: str | None = None,
        vc_info: Any = None,
        start_time: float = 0,
        stop_time: float = 0,
        typed_params: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(local_context, LocalContext):
            raise InvalidName(
                f"the store's Bundle takes an open LocalContext, not {local_context!r}",
                hint="use disdat_luigi.api.Bundle, which also takes a context name",
            )
        self._context = local_context
        self._manifest: BundleManifest | None = None
        self._row: IndexRow | None = None
        self._draft: BundleDraft | None = None
        self._committed = False
        self._name = None if name is None else check_name(name)
        self._processing_name = None if processing_name is None else check_name(processing_name, "processing name")
        self._owner = owner
        self._tags: dict[str, str] = check_tags(tags)
        self._params: dict[str, Any] = {}
        self._dependencies: list[Dependency] = []
        self._code_ref = code_method
        self._git_info: dict[str, Any] | None = None
        self._timing = (float(start_time), float(stop_time))
        self._data: Any = _NO_DATA
        self._root_task = False
        self._typed_params = dict(typed_params) if typed_params is not None else None
        if params:
            self._params.update(params)
        if dependencies:
            self._add_dependency_arg(dependencies)
        if vc_info:
            self._git_info = _git_info(vc_info)
        if data is not _NO_DATA:  # an explicit data=None stores None
            with self:
                self.add_data(data)

    @classmethod
    def from_manifest(cls, context: LocalContext, manifest: BundleManifest, committed: bool) -> Bundle:
        """A closed bundle from its manifest (how the store and the remote hand out bundles)."""
        bundle = cls.__new__(cls)
        bundle._context = context
        bundle._manifest = manifest
        bundle._row = None
        bundle._draft = None
        bundle._committed = committed
        return bundle

    @classmethod
    def from_row(cls, context: LocalContext, row: IndexRow) -> Bundle:
        """A closed bundle from its index row: what the row holds (uuid, names, creation date,
        state) is answered from it, the manifest is read (and validated) on first need of the rest."""
        bundle = cls.__new__(cls)
        bundle._context = context
        bundle._manifest = None
        bundle._row = row
        bundle._draft = None
        bundle._committed = row.committed
        return bundle

    # --- lifecycle -------------------------------------------------------------------------

    def open(self, force_uuid: str | None = None) -> Bundle:
        if self.closed:
            raise BundleStateError(f"bundle {self.uuid} is closed and cannot be reopened")
        if self._draft is None:
            uuid = force_uuid or str(uuidlib.uuid4())
            self._draft = self._context.begin_bundle(uuid)
        return self

    def __enter__(self) -> Bundle:
        return self.open()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        elif self._draft is not None:
            self.abandon()

    def close(self) -> Bundle:
        """Encode the data and publish the bundle atomically; on error nothing becomes visible."""
        draft = self._need_open("close")
        try:
            value = None if self._data is _NO_DATA else self._data
            plan = codec.plan_value(value, draft.path, self._remote_dir_if_bound)
            params = codec.encode_inline(self._params, "params")
            typed = None if self._typed_params is None else codec.encode_inline(self._typed_params, "typed params")
        except BaseException:
            self.abandon()
            raise
        try:
            plan.write()
            fsutil.freeze_links(draft.path)
            remote_files = self._copy_in(draft.uuid, draft.path, plan.remote) if plan.remote else []
            manifest = BundleManifest(
                uuid=draft.uuid,
                name=self._name or self._processing_name or draft.uuid,
                processing_name=self._processing_name or self._name or draft.uuid,
                owner=self._owner or _default_owner(),
                creation_date=datetime.now(timezone.utc),
                data=plan.tree,
                files=tuple(sorted(_file_entries(draft.path) + tuple(remote_files), key=lambda e: e.path)),
                tags=dict(self._tags),
                params=params,
                dependencies=tuple(self._dependencies),
                code_ref=self._code_ref,
                git_info=self._git_info,
                timing=self._timing,
                root_task=self._root_task,
                typed_params=typed,
            )
            self._context.publish(draft, manifest, remote_only=bool(remote_files))
        except BaseException as err:
            published = self._context.abandon(draft)
            self._draft = None
            if published:  # an interrupt (Ctrl-C) after its index row: the bundle stays, closed
                self._manifest = manifest
                raise
            if isinstance(err, (OSError, sqlite3.Error)):
                raise LocalDiskError(f"bundle {draft.uuid} was not made: {describe_os_error(err)}") from err
            raise
        self._draft = None
        self._manifest = manifest
        return self

    def abandon(self) -> None:
        """Throw an open bundle away; nothing of it stays on disk."""
        if self._draft is not None:
            self._context.abandon(self._draft)
            self._draft = None

    # --- filling an open bundle ------------------------------------------------------------

    def add_data(self, value: Any, inputs: Iterable[Bundle] = ()) -> Bundle:
        """The value to store. A string the writer received from `inputs` (closed bundles it
        read: their data, tags, params and other metadata) stays a string even when it names a
        file or an s3:// object; the files of `inputs` themselves, and paths the writer was not
        given, are copied in."""
        self._need_open("add_data")
        sources = [(tree, _LocalSource(bundle)) for bundle in inputs for tree in given_trees(bundle.manifest)]
        self._data = codec.KeepStrings(value, InputStrings(sources)) if sources else value
        return self

    def add_tags(self, tags: Mapping[str, str]) -> Bundle:
        self._need_open("add_tags")
        self._tags.update(check_tags(tags))
        return self

    def add_params(self, params: Mapping[str, Any]) -> Bundle:
        self._need_open("add_params")
        codec.encode_inline(dict(params), "params")
        self._params.update(params)
        return self

    def add_dependencies(self, bundles: Any, arg_names: Iterable[str] | None = None) -> Bundle:
        self._need_open("add_dependencies")
        items = [bundles] if isinstance(bundles, Bundle) else list(bundles)
        names = list(arg_names) if arg_names is not None else [f"_arg_{i}" for i in range(len(items))]
        if len(names) != len(items):
            raise BundleStateError(f"{len(items)} dependencies but {len(names)} arg_names")
        self._add_dependency_arg(dict(zip(names, items)))
        return self

    def _add_dependency_arg(self, dependencies: Any) -> None:
        if isinstance(dependencies, Bundle):
            dependencies = [dependencies]
        if not isinstance(dependencies, Mapping):
            dependencies = {f"_arg_{i}": b for i, b in enumerate(dependencies)}
        for arg_name, bundle in dependencies.items():
            if not isinstance(bundle, Bundle) or not bundle.closed:
                raise BundleStateError(f"dependency {arg_name!r} must be a closed Bundle, not {bundle!r}")
            self._dependencies.append(Dependency(name=bundle.name, uuid=bundle.uuid, arg_name=arg_name))

    def add_code_ref(self, code_ref: str) -> Bundle:
        self._need_open("add_code_ref")
        self._code_ref = code_ref
        return self

    def add_git_info(self, repo: str | None, commit: str | None, branch: str | None) -> Bundle:
        self._need_open("add_git_info")
        self._git_info = _git_info((repo, commit, branch))
        return self

    def add_timing(self, start: float, stop: float) -> Bundle:
        self._need_open("add_timing")
        self._timing = (float(start), float(stop))
        return self

    def get_file(self, name: str) -> str:
        """A path inside the bundle for a file the caller writes; return it as (part of) the data."""
        target = self._managed_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(target)

    def get_directory(self, name: str) -> str:
        target = self._managed_path(name)
        target.mkdir(parents=True, exist_ok=True)
        return str(target)

    def get_remote_file(self, name: str) -> str:
        """An s3:// path inside the bundle's remote directory for a file the caller writes there."""
        return f"{self._need_remote_dir('get_remote_file')}/{self._managed_rel(name)}"

    def get_remote_directory(self, name: str) -> str:
        """An s3:// directory inside the bundle's remote directory; return it as (part of) the data."""
        return f"{self._need_remote_dir('get_remote_directory')}/{self._managed_rel(name)}"

    def _need_remote_dir(self, action: str) -> str:
        self._need_open(action)
        remote = self._remote_dir_if_bound()
        if remote is None:
            from disdat_luigi.errors import RemoteNotConfigured

            raise RemoteNotConfigured(f"cannot {action}: context {self._context.name!r} has no remote")
        return remote

    def _remote_dir_if_bound(self) -> str | None:
        if not self._context.meta.remote_url:  # checked first: keeps the S3 stack unimported
            return None
        location = RemoteLocation.of(self._context)
        return location.url(location.file_key(self.uuid, "")).rstrip("/")

    def _managed_rel(self, name: str) -> str:
        return self._managed_path(name).relative_to(self._need_open("get_file").path).as_posix()

    def _managed_path(self, name: str) -> Path:
        draft = self._need_open("get_file")
        if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/"):
            raise InvalidName(f"bundle file name {name!r} must be a non-empty relative path")
        norm = posixpath.normpath(name)
        if norm in (".", "..") or norm.startswith("../"):
            raise InvalidName(f"bundle file name {name!r} leaves the bundle directory")
        return draft.path / codec.DATA_DIR / norm

    def mark_root(self) -> None:
        """Record (while open) that a pipeline's root task made this bundle (`dsdt ls -r`)."""
        self._need_open("mark_root")
        self._root_task = True

    def _need_open(self, action: str) -> BundleDraft:
        if self.closed:
            raise BundleStateError(f"cannot {action}: bundle {self.uuid} is closed (bundles are immutable)")
        if self._draft is None:
            raise BundleStateError(f"cannot {action}: the bundle is not open; call open() first")
        return self._draft

    # --- a closed bundle -------------------------------------------------------------------

    @property
    def manifest(self) -> BundleManifest:
        if self._manifest is None:
            if self._row is None:
                raise BundleStateError("the bundle is not closed yet; close() it before reading it")
            self._manifest = self._context.load_manifest(self._row.uuid)
        return self._manifest

    @property
    def closed(self) -> bool:
        return self._manifest is not None or self._row is not None

    @property
    def is_presentable(self) -> bool:
        """Disdat's flag for bundles with a Python value: every closed bundle here has one."""
        return self.closed

    @property
    def context(self) -> LocalContext:
        return self._context

    @property
    def uuid(self) -> str:
        if self._manifest is None and self._draft is not None:
            return self._draft.uuid
        if self._row is not None:
            return self._row.uuid
        return self.manifest.uuid

    @property
    def name(self) -> str:
        if self._manifest is None and self._draft is not None and self._name is not None:
            return self._name
        if self._row is not None:
            return self._row.name
        return self.manifest.name

    @name.setter
    def name(self, value: str) -> None:
        """Assignable while the bundle is open, as in Disdat."""
        self._need_open("set the name")
        self._name = check_name(value)

    @property
    def processing_name(self) -> str:
        if self._manifest is None and self._draft is not None and self._processing_name is not None:
            return self._processing_name
        if self._row is not None:
            return self._row.processing_name
        return self.manifest.processing_name

    @processing_name.setter
    def processing_name(self, value: str) -> None:
        self._need_open("set the processing name")
        self._processing_name = check_name(value, "processing name")

    @property
    def owner(self) -> str:
        if self._manifest is None and self._draft is not None and self._owner is not None:
            return self._owner
        return self.manifest.owner

    @owner.setter
    def owner(self, value: str) -> None:
        self._need_open("set the owner")
        if not isinstance(value, str) or has_control(value):
            raise InvalidName(f"owner {value!r} must be a string without control characters")
        self._owner = value

    @property
    def creation_date(self) -> datetime:
        if self._row is not None and self._manifest is None:
            return EPOCH + timedelta(microseconds=self._row.created_us)
        return self.manifest.creation_date

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.manifest.tags)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters as given; for a task's bundle each is luigi's serialized string, as in
        Disdat, so `Cls.param.parse(bundle.params[name])` returns the value."""
        if self.manifest.params is None:
            return {}
        return dict(codec.decode(self.manifest.params, what=f"the parameters of bundle {self.uuid}"))

    @property
    def typed_params(self) -> dict[str, Any]:
        """A task's parameters as Python values (ints, lists, dates, ...); `params` otherwise."""
        if self.manifest.typed_params is None:
            return self.params
        return dict(codec.decode(self.manifest.typed_params, what=f"the parameters of bundle {self.uuid}"))

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        return self.manifest.dependencies

    @property
    def code_ref(self) -> str | None:
        return self.manifest.code_ref

    @property
    def git_info(self) -> dict[str, Any] | None:
        info = self.manifest.git_info
        return dict(info) if info is not None else None

    @property
    def timing(self) -> tuple[float, float]:
        return self.manifest.timing

    @property
    def root_task(self) -> bool:
        if self._row is not None:
            return self._row.root_task
        return self.manifest.root_task

    @property
    def local_dir(self) -> str:
        if self._manifest is None and self._draft is not None:
            return str(self._draft.path)
        return str(self._context.bundle_dir(self.uuid))

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.manifest.files

    @property
    def is_committed(self) -> bool:
        return self._committed

    @property
    def data(self) -> Any:
        """The stored value, decoded anew on every access (mutating it never changes the bundle)."""
        manifest = self.manifest  # an open bundle is not read
        with self._context.reading(self.uuid):  # gc waits for us; we never read a bundle half removed
            return codec.decode(manifest.data, _LocalSource(self), what=f"the data of bundle {self.uuid}")

    def cat(self) -> Any:
        return self.data

    def commit(self) -> Bundle:
        self._context.commit(self.manifest.uuid)
        self._committed = True
        return self

    def rm(self) -> None:
        self._context.remove([self.manifest.uuid])

    # --- the remote ------------------------------------------------------------------------

    def _copy_in(self, uuid: str, root: Path, leaves: list[codec.RemoteLeaf]) -> list[FileEntry]:
        """s3:// files of the value: adopted into the bundle's remote directory (entries for the
        manifest), or downloaded into the bundle when the context has no remote."""
        local = [leaf for leaf in leaves if leaf.local]
        if local:
            copy_in(root, local, self._context.remote_settings)
        remote = [leaf for leaf in leaves if not leaf.local]
        return list(self._sync().adopt(uuid, remote)) if remote else []

    def _sync(self) -> Remote:
        return open_remote(self._context)

    @property
    def remote_dir(self) -> str | None:
        """The bundle's s3:// directory when its context is bound to a remote, else None."""
        return self._remote_dir_if_bound()

    def push(self, delocalize: bool = False) -> Bundle:
        """Publish this (committed) bundle to the remote."""
        from disdat_luigi.errors import NotCommitted

        if not self._committed:
            raise NotCommitted(f"bundle {self.name} {self.uuid} is not committed; only committed bundles are pushed")
        self._sync().push([self], delocalize=delocalize)
        return self

    def pull(self, localize: bool = False) -> Bundle:
        """Refresh from the remote; with `localize` download every file that is not local."""
        if localize:
            self._sync().localize(self)
        return self

    def rmr(self) -> None:
        """Delete this bundle from the remote (the local copy stays)."""
        self._sync().remove([RemoteRef(self.uuid, self.name)])

    def localize(self, path: str) -> str:
        """Download one file of the bundle (given as its s3:// URL or local path); return the local path."""
        rel = self._rel(path)
        self._sync().localize(self, [rel])
        return str(Path(self.local_dir) / rel)

    def delocalize(self, path: str) -> str:
        """Drop the local copy of one file the remote holds; return its s3:// URL."""
        rel = self._rel(path)
        if not self._sync().delocalize(self, [rel]):
            raise GcInProgress(
                f"kept the local copy of {rel} of {self.name} {self.uuid}: a remote gc is reclaiming the bundle",
                hint="keep the local copy; push the bundle again after that gc if the remote should have it",
            )
        url = self.remote_dir
        assert url is not None
        return f"{url}/{rel}"

    def _rel(self, path: str) -> str:
        local = str(Path(self.local_dir)) + "/"
        remote = (self.remote_dir or "\x00") + "/"
        for base in (local, remote):
            if path.startswith(base):
                rel = path[len(base) :]
                if any(e.path == rel for e in self.files):
                    return rel
        raise InvalidName(f"{path} is not a file of bundle {self.name} {self.uuid}")

    def __getstate__(self) -> dict[str, Any]:
        return {"context": self._context, "manifest": self.manifest.to_json(), "committed": self._committed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        manifest = BundleManifest.from_json(state["manifest"], source="pickle")
        self.__dict__.update(Bundle.from_manifest(state["context"], manifest, state["committed"]).__dict__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bundle) and other.closed and self.closed and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __repr__(self) -> str:
        if not self.closed:
            return f"<Bundle (open) in {self._context.name!r}>"
        return f"<Bundle {self.name!r} {self.uuid} in {self._context.name!r}>"


class _LocalSource:
    """Finds a closed bundle's files: local when present, else on the remote (values are
    downloaded, verified, on first use; user files are given as s3:// URLs)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.root = Path(bundle.local_dir)

    def file_path(self, rel: str) -> str:
        local = self._inside(rel)
        if local.exists() or not self.bundle.context.is_remote_only(self.bundle.uuid):
            return str(local)
        remote = self.bundle.remote_dir
        return f"{remote}/{rel}" if remote else str(local)

    def value_path(self, rel: str) -> Path:
        local = self._inside(rel)
        if not local.exists() and self.bundle.context.is_remote_only(self.bundle.uuid):
            self.bundle._sync().localize(self.bundle, [rel])
            local = self._inside(rel)
        return local

    def _inside(self, rel: str) -> Path:
        """`rel` below the bundle directory, refused when it (or a symlink on its way) leads out."""
        local = self.root / rel
        root = self.root.resolve()
        if not local.resolve().is_relative_to(root):
            raise BundleCorrupt(
                f"{rel} of bundle {self.bundle.uuid} leads outside its bundle directory; not read",
                hint=f"remove the damaged bundle with `dsdt rm -u {self.bundle.uuid}`",
            )
        return local


def _file_entries(bundle_dir: Path) -> tuple[FileEntry, ...]:
    entries = []
    for dirpath, _dirnames, filenames in os.walk(bundle_dir):
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(bundle_dir).as_posix()
            entries.append(FileEntry(path=rel, size=path.stat().st_size, sha256=fsutil.sha256_file(path)))
    return tuple(sorted(entries, key=lambda e: e.path))


def _git_info(vc_info: Any) -> dict[str, Any]:
    if isinstance(vc_info, Mapping):
        return dict(vc_info)
    try:
        repo, commit, branch = vc_info
    except (TypeError, ValueError) as err:
        raise UnsupportedValue("vc_info must be (repo, commit, branch) or a dict") from err
    return {"repo": repo, "commit": commit, "branch": branch}


def _default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")
