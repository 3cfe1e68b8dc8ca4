"""What keeps a remote bundle safe from gc while others work: holds (a store dropped its local
copies and relies on the remote), push intents (files uploading, manifest still to come) and the
claims of running applies and jobs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from disdat_luigi.errors import RemoteError
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.manifest import is_uuid
from disdat_luigi.store.remote.s3 import S3

log = logging.getLogger(__name__)
MAX_SMALL = 1024 * 1024  # an intent or a claim larger than this is not ours


def store_id(context: LocalContext) -> str:
    """A stable, readable id of one local context on one machine: host-context-hash."""
    host = socket.gethostname() or "host"
    digest = hashlib.sha256(f"{host}\0{context.path.resolve()}".encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{host}-{context.name}")[:80] + f"-{digest}"


@dataclass(frozen=True)
class RemoteGuards:
    """Where a remote gc reads what it must not touch."""

    s3: S3
    location: RemoteLocation

    # --- holds -----------------------------------------------------------------------------

    def hold(self, uuid: str, store: str) -> None:
        body = json.dumps({"uuid": uuid, "store": store, "time": time.time()}).encode()
        self.s3.put_bytes(self.location.bucket, self.location.hold_key(uuid, store), body)

    def release(self, uuids: Iterable[str], store: str) -> None:
        """Drop this store's holds on `uuids` (it deleted or re-localized them). Best effort: a
        hold left behind only keeps a bundle longer."""
        keys = [self.location.hold_key(u, store) for u in uuids]
        if not keys:
            return
        try:
            self.s3.delete(self.location.bucket, keys)
        except RemoteError as err:
            log.warning("could not release %d hold(s) of %s on the remote: %s", len(keys), store, err)

    def holds(self) -> dict[str, tuple[str, ...]]:
        """uuid -> the stores holding it (one listing per 1,000 holds)."""
        prefix = self.location.holds_prefix
        found: dict[str, list[str]] = defaultdict(list)
        for obj in self.s3.list_objects(self.location.bucket, prefix):
            uuid, _, store = obj.key[len(prefix) :].partition("/")
            if is_uuid(uuid) and store:
                found[uuid].append(store)
        return {u: tuple(sorted(s)) for u, s in found.items()}

    # --- push intents ----------------------------------------------------------------------

    def intend(self, uuid: str, upstream: Iterable[str]) -> None:
        """Written before a push uploads a bundle's files: gc leaves them (and its inputs) alone."""
        body = json.dumps({"uuid": uuid, "time": time.time(), "inputs": sorted(upstream)}).encode()
        self.s3.put_bytes(self.location.bucket, self.location.intent_key(uuid), body)

    def done(self, uuids: Iterable[str]) -> None:
        """The push ended (published or failed). Best effort: a leftover intent expires with the grace period."""
        keys = [self.location.intent_key(u) for u in uuids]
        if not keys:
            return
        try:
            self.s3.delete(self.location.bucket, keys)
        except RemoteError as err:
            log.warning("could not remove %d push intent(s) from the remote: %s", len(keys), err)

    def intents(self, grace_seconds: float, now: float) -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
        """From one listing: uuid -> its inputs for every intent younger than the grace period
        (an older one is a push that died; a resumed push writes its intent again), and the
        (key, size) of the dead ones, which gc deletes."""
        prefix = self.location.intents_prefix
        live: dict[str, set[str]] = {}
        dead: list[tuple[str, int]] = []
        for obj in self.s3.list_objects(self.location.bucket, prefix):
            uuid = obj.key[len(prefix) :]
            if now - obj.modified > grace_seconds:
                dead.append((obj.key, obj.size))
            elif is_uuid(uuid):
                live[uuid] = set(_strings(self._json(obj.key).get("inputs")))
        return live, dead

    def live_intents(self, grace_seconds: float, now: float) -> dict[str, set[str]]:
        return self.intents(grace_seconds, now)[0]

    # --- claims ----------------------------------------------------------------------------

    def claimed_inputs(self, now: float) -> set[str]:
        """Uuids a live claim names as inputs: state not "done" and not expired."""
        inputs: set[str] = set()
        for obj in self.s3.list_objects(self.location.bucket, self.location.claims_prefix):
            if not obj.key.endswith(".json"):
                continue
            doc = self._json(obj.key)
            expires = doc.get("expires")
            if doc.get("state") == "done" or not isinstance(expires, (int, float)) or expires <= now:
                continue
            inputs.update(u for u in _strings(doc.get("inputs")) if is_uuid(u))
        return inputs

    def _json(self, key: str) -> dict[str, object]:
        try:
            raw = self.s3.get_bytes(self.location.bucket, key, MAX_SMALL)
        except RemoteError:
            return {}
        return (json_object(raw) if raw else None) or {}


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in `raw` (a small document any writer of the bucket could have planted),
    or None when it is not one: not JSON, not an object, or nested too deeply to parse."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
