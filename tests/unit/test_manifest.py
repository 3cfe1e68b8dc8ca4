"""Manifests round-trip and hostile or malformed manifests are rejected."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from disdat_luigi.errors import ManifestRejected
from disdat_luigi.store.manifest import BundleManifest, Dependency, FileEntry

UUID = "0b8f5a52-6a0e-4a8e-9d0c-3f7c1c2b4d10"
SHA = "a" * 64


def _manifest(**changes: object) -> BundleManifest:
    base = dict(
        uuid=UUID,
        name="n",
        processing_name="p",
        owner="me",
        creation_date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        data={"t": "int", "v": 1},
        files=(FileEntry("data/a.csv", 3, SHA),),
        tags={"k": "v"},
        dependencies=(Dependency("up", UUID, "x"),),
    )
    base.update(changes)
    return BundleManifest(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    """to_json then from_json gives back an equal manifest with a schema version."""
    manifest = _manifest()
    raw = manifest.to_json()
    assert json.loads(raw)["schema"] == 1
    assert BundleManifest.from_json(raw, "x") == manifest


def _doc(**changes: object) -> bytes:
    doc = json.loads(_manifest().to_json())
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (_doc(schema=99), "schema 99"),
        (_doc(files=[{"path": "../../etc/passwd", "size": 1, "sha256": SHA}]), "outside its bundle"),
        (_doc(files=[{"path": "/etc/passwd", "size": 1, "sha256": SHA}]), "outside its bundle"),
        (_doc(files=[{"path": "data/./x", "size": 1, "sha256": SHA}]), "outside its bundle"),
        (_doc(files=[{"path": "manifest.json", "size": 1, "sha256": SHA}]), "manifest itself"),
        (_doc(files=[{"path": "a", "size": -1, "sha256": SHA}]), "invalid size"),
        (_doc(files=[{"path": "a", "size": 1, "sha256": "zz"}]), "invalid sha256"),
        (_doc(files=[{"path": "a", "size": 1, "sha256": SHA}] * 2), "twice"),
        (_doc(uuid="../x"), "invalid uuid"),
        (_doc(tags={"k": 1}), "tags"),
        (_doc(creation_date="yesterday"), "malformed"),
    ],
)
def test_hostile_manifests_are_rejected(raw: bytes, message: str) -> None:
    """Each malformed or path-escaping manifest raises ManifestRejected saying why."""
    with pytest.raises(ManifestRejected, match=message):
        BundleManifest.from_json(raw, "remote")
