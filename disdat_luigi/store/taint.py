"""The strings a task received in its input bundles' data, as the paths and s3:// URLs they name.

A string a task was given (a planted bundle's "/home/victim/.aws/credentials") and passes on must
stay a string in the bundle it makes: `InputStrings` is the codec's `given` test for that.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from disdat_luigi.store.codec import ValueSource


class InputStrings:
    """`given(target)`: does a path or s3:// URL of the output name what one of the input strings
    names? Compared after normalising both (absolute, symlinks resolved; an S3 key without `.`,
    `..` or empty segments), so `os.path.normpath(s)` names the same target as `s`. The inputs
    are read only when the output first holds a string that would become a file."""

    def __init__(self, inputs: Iterable[tuple[Any, ValueSource]]) -> None:
        self._inputs = list(inputs)  # (value tree, where its value files are)
        self._targets: set[str] | None = None

    def __call__(self, target: str) -> bool:
        """`target`: a resolved absolute local path or an s3:// URL."""
        if self._targets is None:
            self._targets = {key for tree, source in self._inputs for text in _strings(tree, source)
                             for key in targets_of(text)}  # fmt: skip
        wanted = targets_of(target) if target.startswith("s3://") else {target}
        return not self._targets.isdisjoint(wanted)


def targets_of(text: str) -> set[str]:
    """What `text` could name as a file: its normalised s3:// URL, or its absolute local path
    with symlinks resolved (both orders of `..` and links); empty for a string naming no path."""
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://") :].partition("/")
        return {f"s3://{bucket.lower()}/{posixpath.normpath('/' + key).lstrip('/')}".rstrip("/")}
    if not _may_be_path(text):
        return set()
    path = text[len("file://") :] if text.startswith("file://") else text
    try:
        path = os.path.expanduser(path)
        return {str(Path(os.path.abspath(path)).resolve()), os.path.realpath(path)}
    except (OSError, ValueError):  # NUL bytes, too long, ...: names no file
        return set()


def _may_be_path(text: str) -> bool:
    """Cheap first look: only strings with a separator, `~` or a scheme can name a file."""
    return "/" in text or os.sep in text or text.startswith("~")


def _strings(tree: Any, source: ValueSource) -> Iterator[str]:
    """Every plain string of a (checked) value tree: str leaves, dict keys, JSON values, string
    cells and labels of frames, string arrays and scalars; never its own files' paths."""
    stack = [tree]
    while stack:
        node = stack.pop()
        kind = node["t"]
        if kind == "str":
            yield node["v"]
        elif kind in ("list", "tuple"):
            stack.extend(node["items"])
        elif kind == "dict":
            stack.extend(part for pair in node["items"] for part in pair)
        elif kind == "json":
            yield from _json_strings(_json(node, source))
        elif kind in ("dataframe", "series"):
            stack.extend(node[k] for k in ("columns", "column_names", "name") if k in node)
            yield from _parquet_strings(source.value_path(node["path"]))
        elif kind == "ndarray":
            yield from _array_strings(source.value_path(node["path"]))
        elif kind == "npscalar" and node["dtype"].lstrip("<>|=").startswith("U"):
            import numpy as np

            yield str(np.frombuffer(bytes.fromhex(node["hex"]), dtype=np.dtype(node["dtype"]))[0])


def _json(node: dict[str, Any], source: ValueSource) -> Any:
    if "path" not in node:
        return node["v"]
    with open(source.value_path(node["path"]), "rb") as handle:
        return json.load(handle)


def _json_strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())


def _parquet_strings(path: Path) -> Iterator[str]:
    """The distinct strings of a frame's string columns (index levels too); other columns unread."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = [f.name for f in parquet.schema_arrow if _holds_strings(f.type)]
    if names:
        table = parquet.read(columns=names)
        for column in table.columns:
            yield from _arrow_strings(column)


def _holds_strings(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _holds_strings(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _holds_strings(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_holds_strings(kind.field(i).type) for i in range(kind.num_fields))
    return False


def _arrow_strings(array: Any) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        for chunk in array.chunks:
            yield from _arrow_strings(chunk)
        return
    kind = array.type
    if pa.types.is_dictionary(kind):
        yield from _arrow_strings(array.dictionary)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        yield from _arrow_strings(pc.list_flatten(array))
    elif pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            yield from _arrow_strings(array.field(i))
    elif _holds_strings(kind):
        # only what could name a path is turned into Python strings
        candidates = pc.or_(pc.match_substring(array, "/"), pc.starts_with(array, "~"))
        if os.sep != "/":
            candidates = pc.or_(candidates, pc.match_substring(array, os.sep))
        yield from (s for s in pc.unique(array.filter(candidates)).to_pylist() if isinstance(s, str))


def _array_strings(path: Path) -> Iterator[str]:
    import numpy as np

    array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only, until it holds str
    if array.dtype.kind == "U" and array.size:
        yield from (str(s) for s in np.unique(np.asarray(array)) if _may_be_path(str(s)))
