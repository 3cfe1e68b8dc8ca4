"""What names a task: its processing name (a Merkle hash over its class, parameters and upstream
recipes: the recipe bundles are grouped by) and its `TaskIdentity` (exactly one piece of work)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import luigi

from disdat_luigi.store.manifest import BundleManifest

HIDDEN_PARAMS = frozenset({"disdat_apply"})


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _params_of(cls: type) -> list[tuple[str, luigi.Parameter]]:
    return [(n, p) for n, p in cls.get_params() if n not in HIDDEN_PARAMS]  # type: ignore[attr-defined]


def typed_params(task: luigi.Task) -> dict[str, Any]:
    """Every parameter (inherited ones too) with its Python value, frozen luigi containers thawed."""
    return {name: _thaw(getattr(task, name)) for name, _param in _params_of(type(task))}


def luigi_params(task: luigi.Task) -> dict[str, str]:
    """Every parameter (inherited ones too) as luigi serializes it: what Disdat records in a
    bundle's params, so `Cls.param.parse(text)` gives the value back."""
    return {name: param.serialize(getattr(task, name)) for name, param in _params_of(type(task))}


def serialized_params(task: luigi.Task) -> dict[str, str]:
    """Significant parameters as luigi serializes them: stable text for hashing."""
    return {name: param.serialize(getattr(task, name)) for name, param in _params_of(type(task)) if param.significant}


def processing_name(task: luigi.Task, upstream: Mapping[str, str], pipeline_input: str | None = None) -> str:
    """`<Class>_<hash>`; `upstream` maps each input argument to its recipe (processing name) or
    to `bundle:<uuid>` for inputs that are fixed bundles."""
    doc = {
        "class": class_path(type(task)),
        "params": serialized_params(task),
        "upstream": dict(sorted(upstream.items())),
        "pipeline_input": pipeline_input,
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
    return f"{type(task).__name__}_{digest[:32]}"


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_thaw(v) for v in value)
    if isinstance(value, list):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class TaskIdentity:
    """Exactly one piece of work: what a task makes when it runs now. Two runs with equal
    identities make interchangeable bundles, so they may share one job (and its bundle); a forced
    run carries its apply's id and is never shared or adopted. The journal, job names and tags,
    and re-attach all key work by `digest`."""

    recipe: str  # the processing name
    code: str  # the code identity (CodeIdentity.version)
    params: Mapping[str, str]  # every parameter as luigi serializes it
    inputs: Mapping[str, str]  # the exact bundles it reads: argument (or upstream recipe) -> uuid
    output: str  # the output bundle's name
    tags: Mapping[str, str] = field(default_factory=dict)  # the output bundle's tags
    forced_by: str = ""  # the apply's id, for a forced run

    @property
    def digest(self) -> str:
        doc = {
            "recipe": self.recipe,
            "code": self.code,
            "params": dict(self.params),
            "inputs": dict(self.inputs),
            "output": self.output,
            "tags": dict(self.tags),
            "forced_by": self.forced_by,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def differs_from_plan(manifest: BundleManifest, recipe: str, code: str) -> str | None:
    """How a bundle a job made differs from what the plan asked for (its recipe and code
    identity), or None: checked before a job's bundle is used, so an adopted job cannot hand a
    task a result of other code."""
    if manifest.processing_name == recipe and (manifest.code_version or "") == code:
        return None
    return (
        f"bundle {manifest.uuid} is of recipe {manifest.processing_name} made with code "
        f"{manifest.code_version or 'unknown'}, not the planned {recipe} with code {code or 'unknown'}"
    )
