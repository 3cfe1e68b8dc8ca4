"""The bundle manifest: one JSON file per bundle, the source of truth the sqlite index derives from."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from disdat_luigi.errors import ManifestRejected
from disdat_luigi.store.names import has_control
from disdat_luigi.store.valuetree import check_tree

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_FILES = 1_000_000


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
        """Parse and validate; anything malformed or hostile raises `ManifestRejected`."""
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ManifestRejected(f"manifest {source} is not valid JSON: {err}") from err
        except RecursionError as err:
            raise ManifestRejected(f"manifest {source} nests JSON too deeply to be a bundle manifest") from err
        if not isinstance(doc, dict):
            raise ManifestRejected(f"manifest {source} is not a JSON object")
        schema = doc.get("schema")
        if schema != SCHEMA_VERSION:
            raise ManifestRejected(
                f"manifest {source} has schema {schema!r}; this disdat_luigi reads schema {SCHEMA_VERSION}",
                hint="upgrade disdat_luigi" if isinstance(schema, int) and schema > SCHEMA_VERSION else None,
            )
        try:
            files = doc["files"]
            if not isinstance(files, list) or len(files) > MAX_FILES:
                raise ManifestRejected(f"manifest {source} has an invalid file list")
            entries = tuple(_file_entry(f, source) for f in files)
            if len({e.path for e in entries}) != len(entries):
                raise ManifestRejected(f"manifest {source} lists a file twice")
            deps = tuple(
                Dependency(name=str(d["name"]), uuid=_uuid(d["uuid"], source), arg_name=d.get("arg_name"))
                for d in doc.get("dependencies") or []
            )
            tags = doc.get("tags") or {}
            if not isinstance(tags, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
            ):
                raise ManifestRejected(f"manifest {source} has tags that are not str -> str")
            for key, value in tags.items():
                _text(key, "tag key", source)
                _text(value, f"value of tag {key!r}", source)
            created = datetime.fromisoformat(doc["creation_date"])
            if created.tzinfo is None:
                created = created.replace(tzinfo=timezone.utc)
            timing = doc.get("timing") or [0.0, 0.0]
            check_tree(doc.get("data"), {e.path for e in entries}, source)
            for key in ("params", "typed_params"):
                if doc.get(key) is not None:
                    check_tree(doc[key], (), source, allow_paths=False)
            return cls(
                uuid=_uuid(doc["uuid"], source),
                name=_text(doc["name"], "name", source),
                processing_name=_text(doc["processing_name"], "processing name", source),
                owner=_text(doc.get("owner") or "", "owner", source),
                creation_date=created,
                data=doc.get("data"),
                files=entries,
                tags=tags,
                params=doc.get("params"),
                dependencies=deps,
                code_ref=doc.get("code_ref"),
                git_info=doc.get("git_info"),
                timing=(float(timing[0]), float(timing[1])),
                root_task=bool(doc.get("root_task", False)),
                typed_params=doc.get("typed_params"),
            )
        except ManifestRejected:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ManifestRejected(f"manifest {source} is malformed: {type(err).__name__}: {err}") from err


def safe_relpath(path: object, source: str) -> str:
    """A bundle-relative POSIX path that cannot leave the bundle directory."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise ManifestRejected(f"manifest {source} names an invalid path {path!r}")
    norm = posixpath.normpath(path)
    if norm != path or path.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise ManifestRejected(f"manifest {source} names a path outside its bundle: {path!r}")
    if norm == MANIFEST_NAME:
        raise ManifestRejected(f"manifest {source} lists the manifest itself as data")
    return norm


def _file_entry(raw: Any, source: str) -> FileEntry:
    if not isinstance(raw, dict):
        raise ManifestRejected(f"manifest {source} has a file entry that is not an object")
    size, digest = raw.get("size"), raw.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestRejected(f"manifest {source} gives {raw.get('path')!r} an invalid size {size!r}")
    if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ManifestRejected(f"manifest {source} gives {raw.get('path')!r} an invalid sha256")
    return FileEntry(path=safe_relpath(raw.get("path"), source), size=size, sha256=digest)


def _text(value: Any, what: str, source: str) -> str:
    """A name shown in listings: a string without control characters (they could forge lines)."""
    if not isinstance(value, str):
        raise ManifestRejected(f"manifest {source} has a {what} that is not a string")
    if has_control(value):
        raise ManifestRejected(f"manifest {source} has a {what} with control characters: {value[:80]!r}")
    return value


def _uuid(value: Any, source: str) -> str:
    text = str(value)
    if not is_uuid(text):
        raise ManifestRejected(f"manifest {source} has an invalid uuid {text[:80]!r}")
    return text


def is_uuid(text: str) -> bool:
    """Lower-case hex and dashes, as the store writes them (and as directory names compare)."""
    return bool(text) and len(text) <= 64 and all(c in "0123456789abcdef-" for c in text)
