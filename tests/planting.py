"""Manifests planted on a shared remote as a writer of the bucket would: with boto3, straight
into the remote's layout (`<prefix>/context/<remote context>/objects/<uuid>/...` and its catalog)."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import boto3


def manifest_doc(name: str, uuid: str | None = None, **changes: Any) -> dict[str, Any]:
    """A well-formed manifest of bundle `name` (no files, no data) with `changes` applied."""
    doc: dict[str, Any] = {
        "schema": 1,
        "uuid": uuid or str(uuidlib.uuid4()),
        "name": name,
        "processing_name": name,
        "owner": "mallory",
        "creation_date": datetime.now(timezone.utc).isoformat(),
        "data": None,
        "files": [],
        "timing": [0.0, 0.0],
        "root_task": False,
    }
    doc.update(changes)
    return doc


def plant(
    bucket: str,
    doc: Mapping[str, Any],
    files: Mapping[str, bytes] | None = None,
    prefix: str = "team",
    remote: str = "shared",
) -> str:
    """Put `doc` (and objects for `files`, path -> bytes) on the remote, cataloged under its
    name; its uuid."""
    client = boto3.client("s3")
    root = f"{prefix}/context/{remote}"
    uuid = str(doc["uuid"])
    client.put_object(Bucket=bucket, Key=f"{root}/objects/{uuid}/manifest.json", Body=json.dumps(doc).encode())
    for path, body in (files or {}).items():
        client.put_object(Bucket=bucket, Key=f"{root}/objects/{uuid}/{path}", Body=body)
    client.put_object(Bucket=bucket, Key=f"{root}/catalog/{doc['name']}/{uuid}", Body=b"")
    return uuid
