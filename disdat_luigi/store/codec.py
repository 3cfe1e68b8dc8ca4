"""Encode a bundle's value into a JSON tree plus files, and decode it back to the same value.

Encoding is planned first (every type checked, DataFrames converted in memory) and written
second, so an unsupported value fails before anything touches the disk.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from disdat_luigi.errors import BundleCorrupt, BundleError, DisdatError, UnsupportedValue

DATA_DIR = "data"
VALUES_DIR = "values"
INLINE_BYTES_LIMIT = 4096
INLINE_JSON_LIMIT = 64 * 1024
MAX_DEPTH = 200  # nested containers; manifests refuse deeper trees (valuetree.MAX_DEPTH)
PSEUDO_FS = {("proc",), ("sys",), ("dev",)}  # paths there are never copied in as files


class ValueSource(Protocol):
    """Where a decoded value's files are: user paths for file leaves, local paths to read values."""

    def file_path(self, rel: str) -> str: ...

    def value_path(self, rel: str) -> Path: ...


@dataclass(frozen=True)
class RemoteLeaf:
    """An s3:// file or directory in a value: `rel` is its place in the bundle; `source` is the
    URL to copy it from when it lives outside the bundle's own remote directory. `local` leaves
    (the context has no remote) are downloaded into the bundle directory instead."""

    rel: str
    source: str | None
    local: bool = False


@dataclass(frozen=True)
class KeepStrings:
    """A value to store in which some strings must stay strings: `given(target)` is asked for
    each string that would become a file (`target`: the resolved absolute local path, or the
    s3:// URL) and is True when the writer received that string as data (a task's inputs), so
    it cannot make the bundle copy a file it was only told the name of."""

    value: Any
    given: Callable[[str], bool]


@dataclass
class EncodePlan:
    tree: Any
    writes: list[Callable[[], object]] = field(default_factory=list)
    remote: list[RemoteLeaf] = field(default_factory=list)

    def write(self) -> None:
        for action in self.writes:
            action()


def plan_value(value: Any, bundle_dir: Path, remote_dir: Callable[[], str | None] = lambda: None) -> EncodePlan:
    """Check and prepare `value` for a bundle being written in `bundle_dir`; writes nothing.
    `remote_dir()` gives the bundle's s3:// directory (None without a remote); it is asked only
    when the value holds an s3:// path. A `KeepStrings` value is stored with its strings kept."""
    given = None
    if isinstance(value, KeepStrings):
        value, given = value.value, value.given
    planner = _Planner(bundle_dir, remote_dir, given)
    tree = planner.encode(value, "data")
    planner.place_external_files()
    remote = planner.place_remote_files()
    return EncodePlan(tree=tree, writes=planner.writes, remote=remote)


def encode_inline(value: Any, what: str = "params") -> Any:
    """Encode a value that must live inside the manifest (parameters): no files allowed."""
    planner = _Planner(None)
    tree = planner.encode(value, what)
    if planner.writes or planner.externals:
        raise UnsupportedValue(f"{what} must not hold arrays, frames, large bytes or files")
    return tree


def decode(tree: Any, source: ValueSource | None = None, what: str = "a stored value") -> Any:
    """Rebuild the value a tree describes; `source` finds the files it refers to. A tree (or value
    file) that passed the manifest's checks but cannot be rebuilt (a planted float "abc", a garbage
    parquet file) is BundleCorrupt naming `what`, never an unexpected error."""
    try:
        return _decode(tree, source)
    except DisdatError:
        raise
    except Exception as err:  # noqa: BLE001 - untrusted input: whatever json, arrow, numpy or pandas raise
        raise BundleCorrupt(
            f"{what} cannot be read: {type(err).__name__}: {str(err)[:200]}",
            hint="the bundle is damaged or was planted; remove it (dsdt rm -u UUID)",
        ) from err


def _decode(tree: Any, source: ValueSource | None) -> Any:
    kind = tree["t"]
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        return tree["v"]
    if kind == "float":
        return float(tree["v"])
    if kind == "json":
        if "path" in tree:
            with open(_need(source).value_path(tree["path"]), "rb") as handle:
                return json.load(handle)
        return copy.deepcopy(tree["v"])  # the tree is shared; callers get their own copy
    if kind == "bytes":
        if "path" in tree:
            return _need(source).value_path(tree["path"]).read_bytes()
        return base64.b64decode(tree["b64"])
    if kind == "list":
        return [_decode(item, source) for item in tree["items"]]
    if kind == "tuple":
        return tuple(_decode(item, source) for item in tree["items"])
    if kind == "dict":
        return {_decode(k, source): _decode(v, source) for k, v in tree["items"]}
    if kind in ("file", "dir"):
        return _need(source).file_path(tree["path"])
    return _decode_special(kind, tree, source)


def _decode_special(kind: str, tree: Any, source: ValueSource | None) -> Any:
    if kind == "npscalar":
        import numpy as np

        return np.frombuffer(bytes.fromhex(tree["hex"]), dtype=np.dtype(tree["dtype"]))[0]
    if kind == "ndarray":
        import numpy as np

        return np.load(_need(source).value_path(tree["path"]), allow_pickle=False)
    if kind in ("dataframe", "series"):
        return _decode_pandas(kind, tree, _need(source))
    if kind == "timestamp":
        import pandas as pd

        return pd.Timestamp(tree["v"])
    if kind == "datetime":
        return dt.datetime.fromisoformat(tree["v"])
    if kind == "date":
        return dt.date.fromisoformat(tree["v"])
    if kind == "time":
        return dt.time.fromisoformat(tree["v"])
    if kind == "timedelta":
        return dt.timedelta(microseconds=int(tree["us"]))
    raise BundleError(f"unknown value kind {kind!r} in manifest", hint="upgrade disdat_luigi")


def _decode_pandas(kind: str, tree: Any, source: ValueSource) -> Any:
    import pandas as pd

    frame = pd.read_parquet(source.value_path(tree["path"]), engine="pyarrow")
    if "columns" in tree:
        labels = _decode(tree["columns"], source)
        names = _decode(tree["column_names"], source)
        if tree.get("multi_columns"):
            frame.columns = pd.MultiIndex.from_tuples(labels, names=names)
        else:
            frame.columns = pd.Index(labels, name=names[0])
    if kind == "series":
        series = frame.iloc[:, 0]
        series.name = _decode(tree["name"], source)
        return series
    return frame


def _need(source: ValueSource | None) -> ValueSource:
    if source is None:
        raise BundleError("this value refers to files but no bundle directory was given")
    return source


class _Planner:
    """Walks a value once, building its tree and the list of file writes it needs."""

    def __init__(
        self,
        bundle_dir: Path | None,
        remote_dir: Callable[[], str | None] = lambda: None,
        given: Callable[[str], bool] | None = None,
    ) -> None:
        self.bundle_dir = bundle_dir
        self._remote_dir = remote_dir
        self._given = given
        self._remote_resolved = False
        self.remote_leaves: list[tuple[dict[str, Any], str]] = []
        self.writes: list[Callable[[], object]] = []
        self.externals: list[tuple[dict[str, Any], Path]] = []
        self.count = 0
        self._depth = 0
        self._in_key = 0

    def encode(self, value: Any, where: str) -> Any:
        if value is None:
            return {"t": "none"}
        if isinstance(value, bool):
            return {"t": "bool", "v": value}
        if type(value) is int:
            return {"t": "int", "v": value}
        if type(value) is float:
            return {"t": "float", "v": repr(value)}
        if type(value).__module__ == "numpy":  # before str/bytes: np.str_ and np.bytes_ subclass them
            return self._encode_numpy(value, where)
        if type(value) is str:
            return {"t": "str", "v": value} if self._in_key else self._encode_str(value, where)
        if type(value) is bytes:
            return self._encode_bytes(value)
        if type(value) in (list, tuple, dict):
            return self._encode_container(value, where)
        if isinstance(value, (str, bytes, list, tuple, dict)):
            # Enum members, namedtuples, OrderedDict, defaultdict, Counter would come back as the
            # plain base type: refused rather than silently changed
            raise UnsupportedValue(
                f"cannot store {where}: {_type_name(value)} would come back as a plain "
                f"{_base_name(value)}, not the same type",
                hint=f"convert it first, e.g. {_base_name(value)}(value)",
            )
        encoded = self._encode_time(value)
        if encoded is not None:
            return encoded
        return self._encode_scientific(value, where)

    def _encode_container(self, value: list[Any] | tuple[Any, ...] | dict[Any, Any], where: str) -> Any:
        if not isinstance(value, tuple) and self.bundle_dir is not None and _is_plain_json(value):
            return self._encode_json(value)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise UnsupportedValue(f"cannot store {where}: containers nest deeper than {MAX_DEPTH} levels")
        try:
            if isinstance(value, dict):
                return {"t": "dict", "items": [[self._encode_key(k, where), self.encode(v, f"{where}[{k!r}]")]
                                               for k, v in value.items()]}  # fmt: skip
            kind = "list" if isinstance(value, list) else "tuple"
            return {"t": kind, "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        finally:
            self._depth -= 1

    def _encode_key(self, key: Any, where: str) -> Any:
        """Dict keys are never files: a key that names a path stays that string."""
        self._in_key += 1
        try:
            return self.encode(key, f"{where} key {key!r}")
        finally:
            self._in_key -= 1

    @functools.cached_property
    def data_dir(self) -> Path:
        assert self.bundle_dir is not None
        return self.bundle_dir.resolve() / DATA_DIR

    def _encode_str(self, text: str, where: str) -> Any:
        if self.bundle_dir is None:
            return {"t": "str", "v": text}
        if text.startswith("s3://"):
            return self._encode_s3(text, where)
        path = _local_path(text)
        if path is None:
            return {"t": "str", "v": text}
        try:
            # inside the bundle by its own name (a link there is frozen at close), else by its target
            absolute = Path(os.path.normpath(path))
            lexical = absolute.parent.resolve() / absolute.name
            resolved = lexical if lexical.is_relative_to(self.data_dir) else absolute.resolve()
            if resolved.is_relative_to(self.data_dir):
                if not resolved.exists():
                    raise BundleError(
                        f"{where} is the bundle file {text} but nothing was written there",
                        hint="write the file before returning its path",
                    )
                assert self.bundle_dir is not None
                rel = resolved.relative_to(self.bundle_dir.resolve()).as_posix()
                return {"t": "dir" if resolved.is_dir() else "file", "path": rel}
            if resolved.parts[1:2] in PSEUDO_FS or not resolved.is_file():
                return {"t": "str", "v": text}
        except OSError:  # too long, under an unreadable directory, ...: a string, not a file
            return {"t": "str", "v": text}
        if self._given is not None and self._given(str(resolved)):
            return {"t": "str", "v": text}
        leaf: dict[str, Any] = {"t": "file", "path": None}
        self.externals.append((leaf, resolved))
        return leaf

    @property
    def remote_dir(self) -> str | None:
        if not self._remote_resolved:
            self._resolved_remote_dir = self._remote_dir()
            self._remote_resolved = True
        return self._resolved_remote_dir

    def _encode_s3(self, url: str, where: str) -> Any:
        if self._given is not None and self._given(url.rstrip("/")):
            return {"t": "str", "v": url}
        leaf: dict[str, Any] = {"t": "file", "path": None}
        self.remote_leaves.append((leaf, url.rstrip("/")))
        return leaf

    def place_remote_files(self) -> list[RemoteLeaf]:
        """Give s3:// leaves their bundle paths: inside the bundle's remote directory they stay
        put; outside ones are copied to data/ below their common parent (into the bundle's
        remote directory, or, in a context without a remote, downloaded into the bundle)."""
        placed: dict[str, RemoteLeaf] = {}
        if not self.remote_leaves:
            return []
        outside = [(leaf, url) for leaf, url in self.remote_leaves if not self._is_own(url)]
        common = posixpath.dirname(posixpath.commonprefix([u for _, u in outside]) + "x") if outside else ""
        for leaf, url in self.remote_leaves:
            if self._is_own(url):
                assert self.remote_dir is not None
                rel, source = url[len(self.remote_dir) + 1 :], None
            else:
                rel, source = f"{DATA_DIR}/{url[len(common) :].lstrip('/')}", url
            if posixpath.normpath(rel) != rel or rel.startswith("../") or "/../" in rel:
                raise UnsupportedValue(f"the S3 path {url} has '.' or '..' segments", hint="give a plain s3:// path")
            leaf["path"] = rel
            placed.setdefault(rel, RemoteLeaf(rel, source, local=self.remote_dir is None))
        return list(placed.values())

    def _is_own(self, url: str) -> bool:
        remote = self.remote_dir
        return remote is not None and url.startswith(remote + "/")

    def _encode_bytes(self, value: bytes) -> Any:
        if len(value) <= INLINE_BYTES_LIMIT or self.bundle_dir is None:
            return {"t": "bytes", "b64": base64.b64encode(value).decode("ascii")}
        target, rel = self._value_file("bin")
        self.writes.append(lambda: target.write_bytes(value))
        return {"t": "bytes", "path": rel}

    def _encode_json(self, value: Any) -> Any:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        if len(text) <= INLINE_JSON_LIMIT:
            return {"t": "json", "v": value}
        target, rel = self._value_file("json")
        self.writes.append(lambda: target.write_text(text, encoding="utf-8"))
        return {"t": "json", "path": rel}

    def _encode_time(self, value: Any) -> Any:
        if type(value).__module__.startswith("pandas") and type(value).__name__ == "Timestamp":
            return {"t": "timestamp", "v": value.isoformat()}
        if isinstance(value, dt.datetime):
            return {"t": "datetime", "v": value.isoformat()}
        if isinstance(value, dt.date):
            return {"t": "date", "v": value.isoformat()}
        if isinstance(value, dt.time):
            return {"t": "time", "v": value.isoformat()}
        if type(value) is dt.timedelta:
            return {"t": "timedelta", "us": (value.days * 86400 + value.seconds) * 10**6 + value.microseconds}
        return None

    def _encode_scientific(self, value: Any, where: str) -> Any:
        module = type(value).__module__.split(".")[0]
        if module == "numpy":
            return self._encode_numpy(value, where)
        if module == "pandas":
            return self._encode_pandas(value, where)
        raise UnsupportedValue(f"cannot store {where}: values of type {_type_name(value)} are not supported")

    def _encode_numpy(self, value: Any, where: str) -> Any:
        import numpy as np

        if isinstance(value, np.generic) and value.dtype.kind != "O":
            return {"t": "npscalar", "dtype": value.dtype.str, "hex": value.tobytes().hex()}
        if isinstance(value, np.ndarray) and not value.dtype.hasobject and self.bundle_dir is not None:
            target, rel = self._value_file("npy")
            array = value
            self.writes.append(lambda: np.save(target, array, allow_pickle=False))
            return {"t": "ndarray", "path": rel}
        detail = f" with dtype {value.dtype}" if hasattr(value, "dtype") else ""
        raise UnsupportedValue(f"cannot store {where}: {_type_name(value)}{detail} is not supported")

    def _encode_pandas(self, value: Any, where: str) -> Any:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.bundle_dir is None or not isinstance(value, (pd.DataFrame, pd.Series)):
            raise UnsupportedValue(f"cannot store {where}: {_type_name(value)} is not supported here")
        tree: dict[str, Any] = {"t": "dataframe"}
        frame = value
        if isinstance(value, pd.Series):
            tree = {"t": "series", "name": encode_inline(value.name, f"{where} name")}
            frame = value.to_frame(name="value")
        columns = frame.columns
        if not (all(isinstance(c, str) for c in columns) and columns.is_unique):
            tree["columns"] = encode_inline(list(columns), f"{where} columns")
            tree["column_names"] = encode_inline(list(columns.names), f"{where} column names")
            tree["multi_columns"] = isinstance(columns, pd.MultiIndex)
            frame = frame.set_axis([f"c{i}" for i in range(len(columns))], axis=1)
        try:
            table = pa.Table.from_pandas(frame, preserve_index=True)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise UnsupportedValue(
                f"cannot store {where}: the {_type_name(value)} has a column Parquet cannot hold ({err})",
                hint="give each column a single type (e.g. convert mixed object columns to str)",
            ) from err
        target, rel = self._value_file("parquet")
        self.writes.append(lambda: pq.write_table(table, target))
        tree["path"] = rel
        return tree

    def _value_file(self, suffix: str) -> tuple[Path, str]:
        assert self.bundle_dir is not None
        if self.count == 0:
            values_dir = self.bundle_dir / VALUES_DIR
            self.writes.append(lambda: values_dir.mkdir(exist_ok=True))
        rel = f"{VALUES_DIR}/{self.count}.{suffix}"
        self.count += 1
        return self.bundle_dir / rel, rel

    def place_external_files(self) -> None:
        """Copy outside files into data/, keeping their layout below their common parent."""
        if not self.externals:
            return
        assert self.bundle_dir is not None
        common = Path(os.path.commonpath([src.parent for _, src in self.externals]))
        targets: dict[str, Path] = {}
        for leaf, src in self.externals:
            rel = f"{DATA_DIR}/{src.relative_to(common).as_posix()}"
            leaf["path"] = rel
            if rel in targets:
                continue
            if (self.bundle_dir / rel).exists():
                raise BundleError(
                    f"the file {src} would overwrite the bundle file {rel}",
                    hint="rename one of the two files",
                )
            targets[rel] = src
        for rel, src in targets.items():
            self.writes.append(_copier(src, self.bundle_dir / rel))


def _copier(src: Path, dst: Path) -> Callable[[], None]:
    from disdat_luigi.store.fsutil import copy_file

    return lambda: copy_file(src, dst)


def _local_path(text: str) -> Path | None:
    """The local path a string names when it should be treated as a file, else None."""
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if text.startswith("/") and "\x00" not in text and len(text) < 4096:
        return Path(text)
    return None


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    """True for nested lists/dicts of str keys and None/bool/int/finite float/non-path str."""
    if depth > 100:
        return False
    if isinstance(value, list) and type(value) is list:
        return all(_is_plain_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain_json(v, depth + 1) for k, v in value.items())
    if value is None or type(value) in (bool, int):
        return True
    if type(value) is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if type(value) is str:
        return _local_path(value) is None and not value.startswith("s3://")
    return False


def _base_name(value: Any) -> str:
    return next(t.__name__ for t in (str, bytes, list, tuple, dict) if isinstance(value, t))


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
