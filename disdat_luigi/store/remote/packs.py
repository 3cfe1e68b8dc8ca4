"""Manifest packs: copies of many bundles' manifests in one object under `packs/`, written by a
push that publishes many bundles, so that a pull reads a thousand manifests with one request.

The manifests under objects/ stay the truth. A pack entry counts only when a listing of
objects/ shows that bundle's manifest with the entry's very bytes (its ETag is their MD5): a
planted or stale entry, or one of a bundle deleted since, is not used. Every entry used goes
through the validation of a manifest read on its own. Anything a pack cannot answer (no pack
holds the bundle, a damaged pack, an entry the listing does not vouch for, a manifest whose
ETag is no MD5: SSE-KMS, multipart) is read from the bundle's own manifest. Releases that know
no packs never see them: they lie outside objects/ and catalog/.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import uuid as uuidlib
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from disdat_luigi.errors import DisdatError, ManifestRejected
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.manifest import BundleManifest
from disdat_luigi.store.remote import transfer
from disdat_luigi.store.remote.s3 import S3

log = logging.getLogger(__name__)
PACK_MIN = 16  # fewer bundles are cheaper read one manifest at a time: no pack for them
PACK_MAX = 1000  # manifests in one pack (about 1 MB before compression)
PACK_BYTES = 2 * 1024 * 1024  # manifests' text in one pack; a larger manifest is read on its own
MAX_PACK_BYTES = 2 * PACK_BYTES  # a pack inflating past this is not read (a planted one costs memory)
SCHEMA = 1
_NAME = re.compile(r"^(\d{8}T\d{12}Z)-(\d{1,6})-([0-9a-f]{8})\.json\.gz$")


@dataclass(frozen=True, kw_only=True)
class PackRef:
    """A pack as a listing shows it: its key and how many manifests its name says it holds."""

    key: str
    count: int


def pack_name(count: int, now: datetime | None = None) -> str:
    """A new pack's file name: its UTC time first (a listing is then oldest first), its size."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{count}-{uuidlib.uuid4().hex[:8]}.json.gz"


def parse_key(location: RemoteLocation, key: str) -> PackRef | None:
    """The pack a listed key names, None for anything else below packs/."""
    match = _NAME.match(key[len(location.packs_prefix) :])
    return PackRef(key=key, count=int(match.group(2))) if match and key.startswith(location.packs_prefix) else None


def encode(raws: Sequence[bytes]) -> bytes:
    """A pack of these manifests, each kept byte for byte as it was published."""
    doc = {"schema": SCHEMA, "manifests": [raw.decode("utf-8") for raw in raws]}
    return gzip.compress(json.dumps(doc).encode("utf-8"), compresslevel=6, mtime=0)


def decode(data: bytes) -> list[bytes]:
    """The manifests a pack holds (unvalidated); ValueError when it is not a pack."""
    inflater = zlib.decompressobj(wbits=31)
    text = inflater.decompress(data, MAX_PACK_BYTES)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("larger than allowed, or cut short")
    objects = 0

    def one_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
        # A pack is one object whose manifests are strings: a second object to close means
        # objects inside it, and the parse stops before it builds more of them.
        nonlocal objects
        objects += 1
        if objects > 1:
            raise ValueError("objects inside the pack")
        return dict(pairs)

    doc = json.loads(text, object_pairs_hook=one_object)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("manifests"), list):
        raise ValueError(f"not a schema {SCHEMA} pack")
    return [m.encode("utf-8") for m in doc["manifests"] if isinstance(m, str)]


def chunks(raws: Sequence[bytes]) -> list[list[bytes]]:
    """`raws` cut into packs of at most PACK_MAX manifests and PACK_BYTES of text, in order; a
    manifest larger than PACK_BYTES is left out (read on its own). None when there are fewer
    than PACK_MIN to pack."""
    packable = [raw for raw in raws if len(raw) <= PACK_BYTES]
    if len(packable) < PACK_MIN:
        return []
    parts: list[list[bytes]] = [[]]
    size = 0
    for raw in packable:
        if len(parts[-1]) == PACK_MAX or size + len(raw) > PACK_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(raw)
        size += len(raw)
    return parts


def write(s3: S3, location: RemoteLocation, raws: Sequence[bytes], threads: int) -> int:
    """Write packs of these just-published manifests; how many were written. A pack only saves
    requests, so one that cannot be written is logged and left out (its bundles are read one
    by one), never an error of the push that published them."""

    def put(part: Sequence[bytes]) -> bool:
        key = location.pack_key(pack_name(len(part)))
        try:
            s3.put_bytes(location.bucket, key, encode(part), create_only=True)
        except DisdatError as err:
            log.warning("could not write the manifest pack %s (%s); pulls read its manifests one by one", key, err)
            return False
        return True

    return sum(transfer.map_all(put, chunks(raws), threads))


def listed(s3: S3, location: RemoteLocation) -> list[PackRef]:
    """The remote's packs, newest first (one request per thousand packs)."""
    found = (parse_key(location, o.key) for o in s3.list_objects(location.bucket, location.packs_prefix))
    return sorted((ref for ref in found if ref is not None), key=lambda ref: ref.key, reverse=True)


def read(
    s3: S3,
    location: RemoteLocation,
    refs: Sequence[PackRef],
    wanted: Collection[str],
    vouch: Callable[[str, bytes], bool],
    threads: int,
) -> dict[str, BundleManifest]:
    """Manifests of the `wanted` bundles (uuids) found in the packs `refs`, read in that order, a
    few at a time; an entry is used only when `vouch(uuid, entry bytes)` says it is that
    bundle's published manifest. Reading stops when every wanted bundle is found, or when the
    packs read so far found fewer bundles than their number (the rest are cheaper one by one)."""
    found: dict[str, BundleManifest] = {}
    todo = list(refs)
    done = 0
    while todo and len(found) < len(wanted) and (done == 0 or len(found) >= done):
        wave = max(1, min(threads, (len(wanted) - len(found)) // PACK_MIN))
        batch, todo = todo[:wave], todo[wave:]
        for ref, raws in zip(batch, transfer.map_all(lambda r: _load(s3, location, r), batch, threads)):
            for index, raw in enumerate(raws):
                manifest = _entry(raw, f"{location.url(ref.key)}#{index}")
                if manifest is not None and manifest.uuid in wanted and vouch(manifest.uuid, raw):
                    found.setdefault(manifest.uuid, manifest)
        done += len(batch)
    return found


def _load(s3: S3, location: RemoteLocation, ref: PackRef) -> list[bytes]:
    data = s3.get_bytes(location.bucket, ref.key, MAX_PACK_BYTES)
    if data is None:  # deleted since the listing
        return []
    try:
        return decode(data)
    except (ValueError, RecursionError, zlib.error, EOFError, UnicodeError) as err:
        log.debug("manifest pack %s is unreadable (%s); skipped", location.url(ref.key), err)
        return []


def _entry(raw: bytes, source: str) -> BundleManifest | None:
    try:
        return BundleManifest.from_json(raw, source=source)
    except ManifestRejected:  # read on its own again, where its rejection is reported
        return None
