"""Validate a manifest's value tree before anything decodes it.

A value tree comes from a file anyone with write access to a shared remote could have written.
Every node must be a known kind with fields of the right types, nesting is bounded, and every
path a node names must be a safe bundle-relative path listed in the manifest's `files` (for a
directory: the prefix of listed files, or an empty managed directory below `data/`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection
from typing import Any

from disdat_luigi.errors import ManifestRejected

MAX_DEPTH = 250  # decode() recurses about twice per level: far below Python's recursion limit
DTYPE = re.compile(r"^[<>|=]?[?bBiufcmMSUVa][0-9]{0,4}(\[[A-Za-z0-9]{1,8}\])?$")

_SCALAR_FIELDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "bool": ("v", (bool,)),
    "int": ("v", (int,)),
    "str": ("v", (str,)),
    "float": ("v", (str,)),
    "timestamp": ("v", (str,)),
    "datetime": ("v", (str,)),
    "date": ("v", (str,)),
    "time": ("v", (str,)),
    "timedelta": ("us", (int,)),
}
_PATH_KINDS = frozenset({"file", "dir", "ndarray", "dataframe", "series"})
_PATH_OR_INLINE = {"json": "v", "bytes": "b64"}


def check_tree(tree: Any, files: Collection[str], source: str, allow_paths: bool = True) -> None:
    """Raise ManifestRejected unless `tree` is a well-formed value tree whose paths are all
    listed in `files` (none at all when not `allow_paths`, as for parameters)."""
    listed = frozenset(files)
    dirs = frozenset(parent for path in listed for parent in _parents(path))
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ManifestRejected(f"manifest {source} nests its value deeper than {MAX_DEPTH} levels")
        for child in _check_node(node, listed, dirs, source, allow_paths):
            stack.append((child, depth + 1))


def _check_node(node: Any, listed: frozenset[str], dirs: frozenset[str], source: str, allow_paths: bool) -> list[Any]:
    """Check one node; return the nodes below it."""
    if not isinstance(node, dict) or not isinstance(node.get("t"), str):
        raise ManifestRejected(f"manifest {source} has a value node that is not a {{'t': kind}} object")
    kind = node["t"]
    if kind == "none":
        return []
    if kind in _SCALAR_FIELDS:
        key, types = _SCALAR_FIELDS[kind]
        _field(node, key, types, source)
        return []
    if kind in ("list", "tuple"):
        return list(_field(node, "items", (list,), source))
    if kind == "dict":
        children = []
        for pair in _field(node, "items", (list,), source):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ManifestRejected(f"manifest {source} has a dict entry that is not a [key, value] pair")
            children.extend(pair)
        return children
    if kind == "npscalar":
        if not DTYPE.match(_field(node, "dtype", (str,), source)):
            raise ManifestRejected(f"manifest {source} names an unsupported numpy dtype {node['dtype']!r}")
        _field(node, "hex", (str,), source)
        return []
    if kind in _PATH_OR_INLINE and "path" not in node:
        if kind == "bytes":
            _field(node, "b64", (str,), source)
        elif "v" not in node:
            raise ManifestRejected(f"manifest {source} has a json value without 'v' or 'path'")
        return []
    if kind in _PATH_KINDS or kind in _PATH_OR_INLINE:
        if not allow_paths:
            raise ManifestRejected(f"manifest {source} has a {kind} value where no files are allowed")
        _check_path(node.get("path"), kind, listed, dirs, source)
        return [node[k] for k in ("columns", "column_names", "name") if k in node]
    raise ManifestRejected(f"manifest {source} has a value of unknown kind {kind[:40]!r}", hint="upgrade disdat_luigi")


def _field(node: dict[str, Any], key: str, types: tuple[type, ...], source: str) -> Any:
    value = node.get(key)
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        raise ManifestRejected(f"manifest {source} has a {node['t']} value with an invalid {key!r}")
    return value


def _check_path(path: Any, kind: str, listed: frozenset[str], dirs: frozenset[str], source: str) -> None:
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise ManifestRejected(f"manifest {source} has a {kind} value with an invalid path {str(path)[:80]!r}")
    norm = posixpath.normpath(path)
    if norm != path or path.startswith("/") or norm in (".", "..") or norm.startswith("../"):
        raise ManifestRejected(f"manifest {source} has a {kind} value outside its bundle: {path[:80]!r}")
    if kind == "dir" and path in listed:
        raise ManifestRejected(f"manifest {source} names the file {path!r} as a directory")
    if path in listed:
        return
    if kind in ("file", "dir") and path in dirs:
        return  # a directory (an s3:// one is a "file" leaf): its listed files are below it
    if kind == "dir" and (path == "data" or path.startswith("data/")):
        return  # an empty managed directory
    raise ManifestRejected(
        f"manifest {source} has a {kind} value naming {path[:80]!r}, which is not one of its listed files"
    )


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
