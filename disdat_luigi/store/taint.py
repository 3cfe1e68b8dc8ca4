"""The strings a task received from its input bundles, as the paths and s3:// URLs they name.

A string a task was given (a planted bundle's "/home/victim/.aws/credentials") and passes on must
stay a string in the bundle it makes: `InputStrings` is the codec's `given` test for that.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disdat_luigi.store.codec import ValueSource

if TYPE_CHECKING:
    from disdat_luigi.store.manifest import BundleManifest

# the longest bytes that can decode to a path the codec copies (4096 chars, 4 bytes each)
MAX_TEXT_BYTES = 4 * 4096


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


def given_trees(manifest: BundleManifest) -> list[Any]:
    """Everything a task can read of an input bundle, as value trees: its data, params and typed
    params, and (as JSON values) its tags, names, code and git info and dependency names. Its
    `files` are not: the input's own files are copied in when passed on."""
    meta = [manifest.name, manifest.processing_name, manifest.owner, manifest.code_ref,
            [[d.name, d.arg_name] for d in manifest.dependencies]]  # fmt: skip
    trees = [manifest.data, manifest.params, manifest.typed_params]
    trees += [{"t": "json", "v": dict(manifest.tags)}, {"t": "json", "v": meta}]
    if manifest.git_info is not None:
        trees.append({"t": "json", "v": dict(manifest.git_info)})
    return [tree for tree in trees if tree is not None]


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
    """Every string of a (checked) value tree a task can get back as a str: str leaves, dict
    keys, JSON values, bytes as text, cells, labels and schema metadata of frames, cells and
    field names of arrays, string and bytes scalars; never its own files' paths."""
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
        elif kind == "bytes":
            yield from _texts(_bytes(node, source))
        elif kind in ("dataframe", "series"):
            stack.extend(node[k] for k in ("columns", "column_names", "name") if k in node)
            yield from _parquet_strings(source.value_path(node["path"]))
        elif kind == "ndarray":
            yield from _array_strings(source.value_path(node["path"]))
        elif kind == "npscalar":
            yield from _scalar_strings(node)


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


def _bytes(node: dict[str, Any], source: ValueSource) -> bytes:
    import base64

    if "path" not in node:
        return base64.b64decode(node["b64"])
    path = source.value_path(node["path"])
    return path.read_bytes() if path.stat().st_size <= MAX_TEXT_BYTES else b""


def _texts(raw: bytes) -> Iterator[str]:
    """What `raw.decode()` could give that names a path: as UTF-8 (undecodable bytes escaped,
    as `os.fsdecode`) and as Latin-1, with and without trailing NULs."""
    if len(raw) > MAX_TEXT_BYTES:
        return
    for data in {raw, raw.rstrip(b"\0")}:
        for text in {data.decode("utf-8", "surrogateescape"), data.decode("latin-1")}:
            if _may_be_path(text):
                yield text


def _scalar_strings(node: dict[str, Any]) -> Iterator[str]:
    import numpy as np

    dtype = np.dtype(node["dtype"])
    if dtype.kind not in "USV":
        return
    try:
        scalar = np.frombuffer(bytes.fromhex(node["hex"]), dtype=dtype)[0]
    except ValueError:  # a malformed scalar decodes to nothing a task can hold
        return
    if dtype.kind == "U":
        yield str(scalar)
    else:
        yield from _texts(bytes(scalar) if dtype.kind == "S" else scalar.tobytes())


def _parquet_strings(path: Path) -> Iterator[str]:
    """Every string of a frame's parquet schema (field names, nested ones too, and the pandas
    metadata: index and column names, `attrs`) and the distinct strings and bytes of its
    string-holding columns (index levels, lists, structs and maps too); other columns unread."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    yield from _with_tuple_parts(_metadata_strings(schema.metadata))
    for column in schema:
        yield from _with_tuple_parts(_field_strings(column))
    names = [f.name for f in schema if _holds_text(f.type)]
    if names:
        table = parquet.read(columns=names)
        for column in table.columns:
            yield from _arrow_strings(column)


def _metadata_strings(metadata: dict[bytes, bytes] | None) -> Iterator[str]:
    """Keys and values of an Arrow key-value metadata; JSON values (pandas') walked."""
    for key, value in (metadata or {}).items():
        yield from _texts(key)
        try:
            decoded = json.loads(value)
        except ValueError:  # not JSON (or not UTF-8): a text
            yield from _texts(value)
        else:
            yield from _json_strings(decoded)


def _field_strings(field: Any) -> Iterator[str]:
    """A field's name and metadata, and those of the fields nested in its type."""
    import pyarrow as pa

    stack = [field]
    while stack:
        item = stack.pop()
        yield item.name
        yield from _metadata_strings(item.metadata)
        kind = _storage(item.type.value_type if pa.types.is_dictionary(item.type) else item.type)
        stack.extend(kind.field(i) for i in range(kind.num_fields))


def _with_tuple_parts(texts: Iterable[str]) -> Iterator[str]:
    """Each text, and for one that spells a tuple (how pandas names the columns of a MultiIndex,
    which pyarrow turns back into tuples with `ast.literal_eval`) the strings in it too."""
    import ast

    for text in texts:
        yield text
        if text.startswith("(") and text.endswith(")"):
            try:
                parts = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(parts, tuple):
                yield from (part for part in parts if isinstance(part, str))


def _storage(kind: Any) -> Any:
    """An extension type's storage type (what its cells are), else the type itself."""
    import pyarrow as pa

    return kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind


def _holds_text(kind: Any) -> bool:
    """Does an Arrow type hold strings or bytes, at any depth (lists, structs, maps, dictionaries)?"""
    import pyarrow as pa

    kind = _storage(kind)
    if _is_text(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _holds_text(kind.value_type)
    return any(_holds_text(kind.field(i).type) for i in range(kind.num_fields))


def _is_text(kind: Any) -> bool:
    import pyarrow as pa

    t = pa.types
    return bool(
        t.is_string(kind) or t.is_large_string(kind) or t.is_string_view(kind)
        or t.is_binary(kind) or t.is_large_binary(kind) or t.is_binary_view(kind)
        or t.is_fixed_size_binary(kind)
    )  # fmt: skip


def _arrow_strings(array: Any) -> Iterator[str]:
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        for chunk in array.chunks:
            yield from _arrow_strings(chunk)
        return
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    kind = array.type
    if pa.types.is_dictionary(kind):
        yield from _arrow_strings(array.dictionary)
    elif pa.types.is_map(kind):
        yield from _arrow_strings(array.keys)
        yield from _arrow_strings(array.items)
    elif pa.types.is_struct(kind):
        for child in array.flatten():
            yield from _arrow_strings(child)
    elif _is_text(kind):
        yield from _cell_texts(array)
    elif _is_list(kind):
        yield from _arrow_strings(array.flatten())


def _is_list(kind: Any) -> bool:
    import pyarrow as pa

    t = pa.types
    return bool(
        t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind)
        or t.is_list_view(kind) or t.is_large_list_view(kind)
    )  # fmt: skip


def _cell_texts(array: Any) -> Iterator[str]:
    """The distinct cells of a string or binary array that could name a path, as str."""
    import pyarrow as pa
    import pyarrow.compute as pc

    binary = not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type))
    if binary or pa.types.is_string_view(array.type):
        array = array.cast(pa.large_binary() if binary else pa.large_string())
    # only what could name a path is turned into Python values
    candidates = pc.or_(pc.match_substring(array, "/"), pc.starts_with(array, "~"))
    if os.sep != "/":
        candidates = pc.or_(candidates, pc.match_substring(array, os.sep))
    for cell in pc.unique(array.filter(candidates)).to_pylist():
        if isinstance(cell, str):
            yield cell
        elif isinstance(cell, bytes):
            yield from _texts(cell)


def _array_strings(path: Path) -> Iterator[str]:
    """Field names (and titles) of an array's dtype, and the distinct cells of its str, bytes
    and raw fields; arrays without them are read no further than their header."""
    import numpy as np

    array = np.load(path, mmap_mode="r", allow_pickle=False)
    yield from _dtype_names(array.dtype)
    if array.size and _dtype_holds_text(array.dtype):
        yield from _cells_strings(np.asarray(array).reshape(-1))


def _dtype_names(dtype: Any) -> Iterator[str]:
    stack = [dtype]
    while stack:
        item = stack.pop()
        if item.subdtype is not None:
            stack.append(item.subdtype[0])
        for name, spec in (item.fields or {}).items():
            yield name
            yield from (title for title in spec[2:] if isinstance(title, str))
            stack.append(spec[0])


def _dtype_holds_text(dtype: Any) -> bool:
    if dtype.subdtype is not None:
        return _dtype_holds_text(dtype.subdtype[0])
    if dtype.names:
        return any(_dtype_holds_text(dtype.fields[name][0]) for name in dtype.names)
    return bool(dtype.kind in "USV")


def _cells_strings(cells: Any) -> Iterator[str]:
    """`cells`: a flat array; structured ones field by field."""
    import numpy as np

    dtype = cells.dtype
    if dtype.names:
        for name in dtype.names:
            yield from _cells_strings(cells[name].reshape(-1))
    elif dtype.kind == "U":
        yield from (str(s) for s in np.unique(cells) if _may_be_path(str(s)))
    elif dtype.kind == "S":
        for raw in np.unique(cells):
            yield from _texts(bytes(raw))
    elif dtype.kind == "V":
        for raw in {cell.tobytes() for cell in cells}:
            yield from _texts(raw)
