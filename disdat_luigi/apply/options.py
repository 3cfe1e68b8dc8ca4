"""What one apply asked for; travels with every task of the run as a hidden luigi parameter."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from disdat_luigi.config import RemoteSettings


@dataclass(frozen=True, kw_only=True)
class ApplyOptions:
    home: str
    context: str
    journal: str
    apply_id: str = ""  # this apply's own id: what makes a forced run's identity its own
    root_task_id: str = ""
    output_bundle: str | None = None
    output_tags: dict[str, str] = field(default_factory=dict)
    force: bool = False
    force_all: bool = False
    output_bundle_uuid: str | None = None
    input_bundle_uuid: str | None = None
    incremental_push: bool = False
    incremental_pull: bool = False
    ignore_code_version: bool = False
    remote: dict[str, Any] = field(default_factory=dict)  # the host's RemoteSettings, as a dict
    image_code: dict[str, Any] | None = None  # plan as code in this image would (CodeVersion fields)
    provenance: dict[str, str] = field(default_factory=dict)  # recorded in every bundle's git_info
    executors: dict[str, str] = field(default_factory=dict)  # per-run overrides: class (or '*') -> executor
    pins: dict[str, str] = field(default_factory=dict)  # processing name -> the bundle to use (remote tasks)
    expected_code: dict[str, str] = field(default_factory=dict)  # task class -> the code identity the host planned
    mark_root: bool = True  # a remote task is the root of its container's apply, not of the host's

    @property
    def remote_settings(self) -> RemoteSettings:
        return RemoteSettings(**self.remote)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ApplyOptions:
        return cls(**json.loads(text))
