"""The bundle manifest: one JSON file per bundle, the source of truth the sqlite index derives from."""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from disdat_luigi.errors import ManifestRejected
from disdat_luigi.store.names import has_control
from disdat_luigi.store.valuetree import check_tree

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_FILES = 1_000_000
EARLIEST_DATE = datetime(1970, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)  # a creation date may run this far ahead of the reader's clock
GIT_TEXT_KEYS = frozenset({"version", "commit", "branch", "repo", "image", "source", "diff_sha256"})


@dataclass(frozen=True)
class FileEntry:
    """One data file of a bundle, relative to the bundle directory."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Dependency:
    """An upstream bundle this bundle was made from."""

    name: str
    uuid: str
    arg_name: str | None = None


@dataclass(frozen=True)
class BundleManifest:
    uuid: str
    name: str
    processing_name: str
    owner: str
    creation_date: datetime
    data: Any
    files: tuple[FileEntry, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Any = None
    dependencies: tuple[Dependency, ...] = ()
    code_ref: str | None = None
    git_info: Mapping[str, Any] | None = None
    timing: tuple[float, float] = (0.0, 0.0)
    root_task: bool = False
    typed_params: Any = None  # a task's parameters as Python values (params holds luigi's strings)

    @property
    def code_version(self) -> str | None:
        """The code identity of the task that made the bundle (what reuse compares), if recorded."""
        version = (self.git_info or {}).get("version")
        return str(version) if version else None

    def to_json(self) -> bytes:
        doc = {
            "schema": SCHEMA_VERSION,
            "uuid": self.uuid,
            "name": self.name,
            "processing_name": self.processing_name,
            "owner": self.owner,
            "creation_date": self.creation_date.isoformat(),
            "tags": dict(self.tags),
            "params": self.params,
            "dependencies": [{"name": d.name, "uuid": d.uuid, "arg_name": d.arg_name} for d in self.dependencies],
            "code_ref": self.code_ref,
            "git_info": dict(self.git_info) if self.git_info is not None else None,
            "timing": list(self.timing),
            "root_task": self.root_task,
            "data": self.data,
            **({"typed_params": self.typed_params} if self.typed_params is not None else {}),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        # compact: an indent would make json fall back from its C encoder to the Python one
        return json.dumps(doc, sort_keys=True, allow_nan=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, source: str) -> BundleManifest:
        """Parse and validate every field; anything malformed or hostile raises `ManifestRejected`
        (so a manifest that passes can be indexed, listed, decoded and written back)."""
        doc = _parse(raw, source)
        schema = doc.get("schema")
        if schema != SCHEMA_VERSION:
            raise ManifestRejected(
                f"manifest {source} has schema {schema!r}; this disdat_luigi reads schema {SCHEMA_VERSION}",
                hint="upgrade disdat_luigi" if isinstance(schema, int) and schema > SCHEMA_VERSION else None,
            )
        try:
            entries = _files(doc["files"], source)
            data = doc.get("data")
            check_tree(data, {e.path for e in entries}, source)
            return cls(
                uuid=_uuid(doc["uuid"], source),
                name=_text(doc["name"], "name", source),
                processing_name=_text(doc["processing_name"], "processing name", source),
                owner=_text(doc.get("owner", ""), "owner", source),
                creation_date=_creation_date(doc.get("creation_date"), source),
                data=data,
                files=entries,
                tags=_tags(doc.get("tags"), source),
                params=_params(doc.get("params"), "params", source),
                dependencies=_dependencies(doc.get("dependencies"), source),
                code_ref=_optional_str(doc.get("code_ref"), "code_ref", source),
                git_info=_git_info(doc.get("git_info"), source),
                timing=_timing(doc.get("timing", [0.0, 0.0]), source),
                root_task=_flag(doc.get("root_task", False), "root_task", source),
                typed_params=_params(doc.get("typed_params"), "typed_params", source),
            )
        except KeyError as err:
            raise ManifestRejected(f"manifest {source} lacks the field {err}") from err
        except (TypeError, ValueError) as err:  # a shape the checks above missed: still a rejection
            raise ManifestRejected(f"manifest {source} is malformed: {type(err).__name__}: {err}") from err


def same_bundle(remote: bytes, local: bytes, source: str) -> bool:
    """Whether a remote manifest describes this very bundle: the same bytes, or the same manifest
    in another layout (another writer, an older release; a pull writes it back in this one's).
    ManifestRejected when the remote one is damaged."""
    if remote == local:
        return True
    return BundleManifest.from_json(remote, source) == BundleManifest.from_json(local, source="the local manifest")


def safe_relpath(path: object, source: str) -> str:
    """A bundle-relative POSIX path that cannot leave the bundle directory."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path or has_control(path):
        raise ManifestRejected(f"manifest {source} names an invalid path {path!r}")
    norm = posixpath.normpath(path)
    if norm != path or path.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise ManifestRejected(f"manifest {source} names a path outside its bundle: {path!r}")
    if norm == MANIFEST_NAME:
        raise ManifestRejected(f"manifest {source} lists the manifest itself as data")
    return norm


def _parse(raw: bytes, source: str) -> dict[str, Any]:
    """The JSON object; NaN, Infinity and numbers too large for a float are refused (they could
    not be written back: `to_json` allows no NaN)."""
    try:
        doc = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestRejected(f"manifest {source} is not valid JSON: {err}") from err
    except RecursionError as err:
        raise ManifestRejected(f"manifest {source} nests JSON too deeply to be a bundle manifest") from err
    if not isinstance(doc, dict):
        raise ManifestRejected(f"manifest {source} is not a JSON object")
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _files(raw: Any, source: str) -> tuple[FileEntry, ...]:
    """The file entries; no path twice, and none both a file and a directory of another (the
    second could never be written)."""
    if not isinstance(raw, list) or len(raw) > MAX_FILES:
        raise ManifestRejected(f"manifest {source} has an invalid file list")
    entries = tuple(_file_entry(f, source) for f in raw)
    # sorted by components, a path that is a directory of others comes right before the first of them
    ordered = sorted(e.path.split("/") for e in entries)
    for this, following in zip(ordered, ordered[1:]):
        if following[: len(this)] == this:
            path, other = "/".join(this), "/".join(following)
            if path == other:
                raise ManifestRejected(f"manifest {source} lists the file {path[:80]!r} twice")
            raise ManifestRejected(
                f"manifest {source} lists {path[:80]!r} both as a file and as a directory of {other[:80]!r}"
            )
    return entries


def _file_entry(raw: Any, source: str) -> FileEntry:
    if not isinstance(raw, dict):
        raise ManifestRejected(f"manifest {source} has a file entry that is not an object")
    size, digest = raw.get("size"), raw.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestRejected(f"manifest {source} gives {_short(raw.get('path'))} an invalid size {_short(size)}")
    if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ManifestRejected(f"manifest {source} gives {_short(raw.get('path'))} an invalid sha256")
    return FileEntry(path=safe_relpath(raw.get("path"), source), size=size, sha256=digest)


def _tags(raw: Any, source: str) -> dict[str, str]:
    tags = {} if raw is None else raw
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise ManifestRejected(f"manifest {source} has tags that are not str -> str")
    for key, value in tags.items():
        _text(key, "tag key", source)
        _text(value, f"value of tag {key!r}", source)
    return tags


def _creation_date(value: Any, source: str) -> datetime:
    """An ISO date from 1970 to tomorrow (writers' clocks differ a little): later or earlier ones
    cannot be made by a writer and overflow when shifted to a local time zone."""
    if not isinstance(value, str):
        raise ManifestRejected(f"manifest {source} has a creation date that is not an ISO date string")
    try:
        created = datetime.fromisoformat(value)
    except ValueError as err:
        raise ManifestRejected(
            f"manifest {source} has a creation date that is not an ISO date: {value[:40]!r}"
        ) from err
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    if not EARLIEST_DATE <= created <= datetime.now(timezone.utc) + FUTURE_SLACK:
        raise ManifestRejected(
            f"manifest {source} has a creation date out of range: {value[:40]!r} (not between 1970 and tomorrow)"
        )
    return created


def _params(value: Any, what: str, source: str) -> Any:
    """None, or the value tree of a mapping whose keys are strings (parameter names)."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("t") != "dict" or not isinstance(value.get("items"), list):
        raise ManifestRejected(f"manifest {source} has {what} that are not a mapping")
    check_tree(value, (), source, allow_paths=False)
    if not all(pair[0].get("t") == "str" for pair in value["items"]):
        raise ManifestRejected(f"manifest {source} has {what} whose names are not all strings")
    return value


def _dependencies(raw: Any, source: str) -> tuple[Dependency, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ManifestRejected(f"manifest {source} has dependencies that are not a list")
    deps = []
    for dep in raw:
        if not isinstance(dep, dict):
            raise ManifestRejected(f"manifest {source} has a dependency that is not an object")
        arg_name = dep.get("arg_name")
        deps.append(
            Dependency(
                name=_text(dep.get("name"), "dependency name", source),
                uuid=_uuid(dep.get("uuid"), source),
                arg_name=None if arg_name is None else _text(arg_name, "dependency argument name", source),
            )
        )
    return tuple(deps)


def _git_info(raw: Any, source: str) -> dict[str, Any] | None:
    """None or an object: the keys the code reads have their types; other keys (provenance
    such as an executor or a Batch job id) hold scalars or a str -> str object (e.g. file -> hash)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ManifestRejected(f"manifest {source} has git_info that is not an object")
    for key, value in raw.items():
        if key in GIT_TEXT_KEYS:
            ok = value is None or isinstance(value, str)
        elif key == "dirty":
            ok = isinstance(value, bool)
        elif isinstance(value, dict):
            ok = all(isinstance(v, str) for v in value.values())
        else:
            ok = value is None or isinstance(value, (str, int, float))
        if not ok:
            raise ManifestRejected(f"manifest {source} has git_info {key[:40]!r} of the wrong type or shape")
    return raw


def _timing(raw: Any, source: str) -> tuple[float, float]:
    if not isinstance(raw, list) or len(raw) != 2 or not all(_is_number(t) for t in raw):
        raise ManifestRejected(f"manifest {source} has a timing that is not a list of two numbers")
    return float(raw[0]), float(raw[1])


def _is_number(value: Any) -> bool:
    """An int or float that converts to a finite float (json gives ints of any size)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _flag(value: Any, what: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestRejected(f"manifest {source} has a {what} that is not true or false")
    return value


def _optional_str(value: Any, what: str, source: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ManifestRejected(f"manifest {source} has a {what} that is not a string")
    return value


def _text(value: Any, what: str, source: str) -> str:
    """A name shown in listings: a string without control characters (they could forge lines)."""
    if not isinstance(value, str):
        raise ManifestRejected(f"manifest {source} has a {what} that is not a string")
    if has_control(value):
        raise ManifestRejected(f"manifest {source} has a {what} with control characters: {value[:80]!r}")
    return value


def _uuid(value: Any, source: str) -> str:
    if not isinstance(value, str) or not is_uuid(value):
        raise ManifestRejected(f"manifest {source} has an invalid uuid {_short(value)}")
    return value


def _short(value: Any) -> str:
    """A value quoted in an error message, cut short (it comes from a file anyone could write)."""
    return repr(value)[:80]


def is_uuid(text: str) -> bool:
    """Lower-case hex and dashes, as the store writes them (and as directory names compare)."""
    return bool(text) and len(text) <= 64 and all(c in "0123456789abcdef-" for c in text)
