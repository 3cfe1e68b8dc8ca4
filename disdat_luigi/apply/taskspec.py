"""The host <-> container contract for one remote task: a frozen, versioned `TaskSpec`, its JSON,
and the entry point's arguments that carry it (inline, or stored on the remote with its sha256 in
the job's command, so a writer of the bucket cannot swap the task of a queued job)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from disdat_luigi.errors import TaskSpecRejected
from disdat_luigi.store.manifest import is_uuid

SPEC_VERSION = 1
INLINE = "--task-spec"
STORED = "--task-spec-url"
STORED_SHA256 = "--task-spec-sha256"


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """Exactly one task of a host's apply: what its container runs and makes."""

    pipe_cls: str  # module.Class
    params: Mapping[str, str]  # every parameter as luigi serializes it
    output_bundle: str
    output_uuid: str  # fixed by the host
    output_tags: Mapping[str, str] = field(default_factory=dict)
    pins: Mapping[str, str] = field(default_factory=dict)  # processing name (or bundle:uuid) -> input bundle uuid
    input_bundle: str | None = None  # the pipeline_input (only the root of an apply has one)
    mark_root: bool = False
    executor: str = ""
    code: str = ""  # the code identity the host planned with: the container must compute the same

    def to_dict(self) -> dict[str, Any]:
        return {"version": SPEC_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> TaskSpec:
        return cls.from_dict(_load(text, source), source)

    @classmethod
    def from_dict(cls, doc: Any, source: str) -> TaskSpec:
        """Checked field by field; anything else is TaskSpecRejected naming the field."""
        if not isinstance(doc, dict):
            raise TaskSpecRejected(f"the task spec {source} is a JSON {type(doc).__name__}, not an object")
        if doc.get("version") != SPEC_VERSION:
            raise TaskSpecRejected(
                f"the task spec {source} has version {doc.get('version')!r}; this image reads version {SPEC_VERSION}",
                hint="the host and the image run different disdat_luigi releases: rebuild the image",
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(doc) - known - {"version"})
        if unknown:
            raise TaskSpecRejected(f"the task spec {source} has unknown fields: {', '.join(unknown)}")
        missing = sorted(f for f in ("pipe_cls", "params", "output_bundle", "output_uuid") if f not in doc)
        if missing:
            raise TaskSpecRejected(f"the task spec {source} lacks {', '.join(missing)}")
        for name in ("pipe_cls", "output_bundle", "executor", "code"):
            if not isinstance(doc.get(name, ""), str):
                raise TaskSpecRejected(f"the task spec {source} has a {name} that is not a string")
        for name in ("params", "output_tags", "pins"):
            value = doc.get(name, {})
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise TaskSpecRejected(f"the task spec {source} has {name} that are not an object of strings")
        uuids = [doc["output_uuid"], *doc.get("pins", {}).values()]
        if doc.get("input_bundle") is not None:
            uuids.append(doc["input_bundle"])
        bad = [u for u in uuids if not isinstance(u, str) or not is_uuid(u)]
        if bad:
            raise TaskSpecRejected(f"the task spec {source} names an invalid bundle uuid {str(bad[0])[:80]!r}")
        if not isinstance(doc.get("mark_root", False), bool):
            raise TaskSpecRejected(f"the task spec {source} has a mark_root that is not true or false")
        return cls(**{k: v for k, v in doc.items() if k != "version"})


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def stored_body(specs: Sequence[TaskSpec]) -> bytes:
    """What is stored on the remote for a job: a list for an array job, one spec for a single job."""
    docs = [spec.to_dict() for spec in specs]
    return json.dumps(docs if len(docs) > 1 else docs[0], sort_keys=True).encode("utf-8")


def inline_arguments(spec: TaskSpec) -> list[str]:
    return [INLINE, spec.to_json()]


def stored_arguments(url: str, body: bytes) -> list[str]:
    return [STORED, url, STORED_SHA256, sha256(body)]


def read_stored(body: bytes, expected_sha256: str, url: str, index: int | None) -> TaskSpec:
    """The spec of this job from what is stored at `url`: refused unless its sha256 is the one the
    job's command carries; `index` picks an array child's spec from a list."""
    if sha256(body) != expected_sha256:
        raise TaskSpecRejected(
            f"the task spec at {url} is not the one this job was submitted with (sha256 differs): refused",
            hint="someone changed it on the remote after submission; submit the task again",
        )
    doc = _load(body, url)
    if isinstance(doc, list):
        if index is None:
            raise TaskSpecRejected(f"{url} lists the tasks of an array job, and this job is not an array child")
        if not 0 <= index < len(doc):
            raise TaskSpecRejected(f"{url} lists {len(doc)} tasks; this array child's index is {index}")
        return TaskSpec.from_dict(doc[index], f"{url}[{index}]")
    return TaskSpec.from_dict(doc, url)


def _load(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise TaskSpecRejected(f"the task spec {source} is not valid JSON: {err}") from err
