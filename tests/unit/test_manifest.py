"""Manifests round-trip and hostile or malformed manifests are rejected."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

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
        (_doc(creation_date="yesterday"), "not an ISO date"),
    ],
)
def test_hostile_manifests_are_rejected(raw: bytes, message: str) -> None:
    """Each malformed or path-escaping manifest raises ManifestRejected saying why."""
    with pytest.raises(ManifestRejected, match=message):
        BundleManifest.from_json(raw, "remote")


SOURCE = "s3://bucket/team/context/shared/objects/x/manifest.json"
ISO = "%Y-%m-%dT%H:%M:%S+00:00"


def _in(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).strftime(ISO)


def _params_tree(**items: Any) -> dict[str, Any]:
    return {"t": "dict", "items": [[{"t": "str", "v": k}, v] for k, v in items.items()]}


HOSTILE_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "params list": ({"params": [1, 2]}, "params that are not a mapping"),
    "params string": ({"params": "a=1"}, "params that are not a mapping"),
    "params tree of a list": ({"params": {"t": "list", "items": []}}, "params that are not a mapping"),
    "params int names": (
        {"params": {"t": "dict", "items": [[{"t": "int", "v": 1}, {"t": "str", "v": "x"}]]}},
        "names are not all strings",
    ),
    "params not a tree": ({"params": {"a": "1"}}, "not a mapping"),
    "typed_params string": ({"typed_params": "x"}, "typed_params that are not a mapping"),
    "git_info list": ({"git_info": ["abc"]}, "git_info that is not an object"),
    "git_info commit number": ({"git_info": {"commit": 5}}, "git_info 'commit'"),
    "git_info version object": ({"git_info": {"version": {"a": "b"}}}, "git_info 'version'"),
    "git_info dirty string": ({"git_info": {"dirty": "yes"}}, "git_info 'dirty'"),
    "git_info dirty null": ({"git_info": {"dirty": None}}, "git_info 'dirty'"),
    "git_info map of numbers": ({"git_info": {"code_files": {"a.py": 1}}}, "git_info 'code_files'"),
    "git_info list value": ({"git_info": {"extra": [1, 2]}}, "git_info 'extra'"),
    "dependencies object": ({"dependencies": {"name": "up"}}, "dependencies that are not a list"),
    "dependency number": ({"dependencies": [1]}, "dependency that is not an object"),
    "dependency name number": ({"dependencies": [{"name": 1, "uuid": UUID}]}, "dependency name that is not a string"),
    "dependency name newline": ({"dependencies": [{"name": "a\nb", "uuid": UUID}]}, "control characters"),
    "dependency uuid path": ({"dependencies": [{"name": "up", "uuid": "../../x"}]}, "invalid uuid"),
    "dependency uuid number": ({"dependencies": [{"name": "up", "uuid": 1234}]}, "invalid uuid"),
    "dependency no uuid": ({"dependencies": [{"name": "up"}]}, "invalid uuid"),
    "dependency arg_name number": (
        {"dependencies": [{"name": "up", "uuid": UUID, "arg_name": 3}]},
        "argument name that is not a string",
    ),
    "code_ref number": ({"code_ref": 7}, "code_ref that is not a string"),
    "timing one number": ({"timing": [1.0]}, "timing that is not a list of two numbers"),
    "timing string": ({"timing": "fast"}, "timing"),
    "timing null": ({"timing": None}, "timing"),
    "timing string member": ({"timing": [1.0, "2"]}, "timing"),
    "timing bools": ({"timing": [True, False]}, "timing"),
    "timing huge int": ({"timing": [10**400, 0]}, "timing"),
    "root_task string": ({"root_task": "yes"}, "root_task that is not true or false"),
    "root_task number": ({"root_task": 1}, "root_task"),
    "owner number": ({"owner": 5}, "owner that is not a string"),
    "owner null": ({"owner": None}, "owner that is not a string"),
    "file and its directory": (
        {"files": [{"path": "data/a", "size": 1, "sha256": SHA}, {"path": "data/a/b", "size": 1, "sha256": SHA}]},
        "'data/a' both as a file and as a directory of 'data/a/b'",
    ),
    "file below a file, listed first": (
        {"files": [{"path": "data/a/b/c", "size": 1, "sha256": SHA}, {"path": "data/a", "size": 1, "sha256": SHA}]},
        "'data/a' both as a file and as a directory",
    ),
    "date in year 9999": ({"creation_date": "9999-12-31T23:59:59+00:00"}, "creation date out of range"),
    "date in year 1": ({"creation_date": "0001-01-01T00:00:00"}, "creation date out of range"),
    "date before 1970": ({"creation_date": "1969-12-31T23:59:59+00:00"}, "creation date out of range"),
    "date next week": ({"creation_date": _in(7)}, "creation date out of range"),
    "date a number": ({"creation_date": 1767225600}, "creation date that is not an ISO date string"),
    "date missing": ({"creation_date": None}, "creation date that is not an ISO date string"),
}


@pytest.mark.parametrize(("changes", "message"), HOSTILE_FIELDS.values(), ids=HOSTILE_FIELDS.keys())
def test_every_field_is_checked(changes: dict[str, Any], message: str) -> None:
    """A field of the wrong type or shape raises ManifestRejected in one line naming the source."""
    with pytest.raises(ManifestRejected, match=message) as caught:
        BundleManifest.from_json(_doc(**changes), SOURCE)
    assert type(caught.value) is ManifestRejected
    assert caught.value.message.startswith(f"manifest {SOURCE} ") and "\n" not in caught.value.message


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_numbers_that_cannot_be_written_back_are_refused(raw: bytes) -> None:
    """NaN, infinities and floats past the float range (anywhere, here in git_info) are refused."""
    doc = _doc(git_info={"memory": 1.5}).replace(b"1.5", raw)
    with pytest.raises(ManifestRejected, match="not valid JSON"):
        BundleManifest.from_json(doc, SOURCE)


ACCEPTED: dict[str, dict[str, Any]] = {
    "git_info of a task": {
        "git_info": {
            "commit": "abc",
            "branch": None,
            "repo": "git@example:r.git",
            "dirty": True,
            "diff_sha256": SHA,
            "image": None,
            "source": "blob:123",
            "version": "blob:123",
            "executor": "farm",
            "memory": 2048,
            "cpus": 0.5,
            "spot": False,
            "note": None,
            "code_files": {"pipes/a.py": SHA, "pipes/b.py": SHA},
        }
    },
    "params of strings": {"params": _params_tree(alpha={"t": "str", "v": "0.5"})},
    "typed params of any values": {
        "typed_params": _params_tree(n={"t": "int", "v": 3}, xs={"t": "list", "items": [{"t": "none"}]})
    },
    "empty params": {"params": {"t": "dict", "items": []}, "typed_params": None},
    "no dependencies": {"dependencies": None},
    "dependency without arg_name": {"dependencies": [{"name": "up", "uuid": UUID, "arg_name": None}]},
    "integer timing": {"timing": [0, 1700000000]},
    "date at the epoch": {"creation_date": "1970-01-01T00:00:00+00:00"},
    "date without a zone": {"creation_date": "2026-01-02T03:04:05"},
    "date a little ahead": {"creation_date": _in(0.5)},
    "sibling paths": {
        "files": [
            {"path": "data/a", "size": 1, "sha256": SHA},
            {"path": "data/a-b/c", "size": 1, "sha256": SHA},
            {"path": "data/ab", "size": 1, "sha256": SHA},
        ],
        "data": {"t": "none"},
    },
}


@pytest.mark.parametrize("changes", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_well_formed_fields_are_accepted_and_written_back(changes: dict[str, Any]) -> None:
    """Every shape the writers produce (and provenance such as a file -> hash map) is read, and
    what is read can be written back and read again unchanged."""
    manifest = BundleManifest.from_json(_doc(**changes), SOURCE)
    assert BundleManifest.from_json(manifest.to_json(), SOURCE) == manifest
    assert manifest.creation_date.tzinfo is not None
    manifest.creation_date.astimezone()  # what `ls -v` does: never an OverflowError
