"""gc notices: before it deletes anything, a remote gc writes `<root>gc/<time>-<random>.json`
naming the bundles it reclaims and the bundles whose leftover files it deletes, then reads holds
and intents again. A `push -d` writes its hold, then reads the notices (and keeps its local files
when one names its bundle); a push writes its intent, then reads them (and waits for a notice
naming its bundle's files to go). Whichever writes second sees the other's object.

A notice is remote input: any writer of the bucket can plant one, so each is read defensively
(a body that is not one is ignored and logged), and none lives past NOTICE_TTL after it was written."""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from disdat_luigi.errors import GcInProgress, RemoteError
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.manifest import is_uuid
from disdat_luigi.store.names import printable
from disdat_luigi.store.remote.holds import json_object
from disdat_luigi.store.remote.s3 import S3

log = logging.getLogger(__name__)
NOTICE_TTL = 3600.0  # a gc that dies leaves its notice behind; it counts for this long after it was written
MAX_NOTICE_BYTES = 4 * 1024 * 1024
NOTICE_UUIDS = 50_000  # uuids per notice object (about 2 MB); a larger plan writes several
POLL_SECONDS = 2.0  # how often a waiting push looks whether a notice is gone
MAX_WAIT = 300.0  # how long a push waits for a gc before it gives up


@dataclass(frozen=True, kw_only=True)
class GcNotice:
    """One live notice: what a running gc deletes, and until when it counts."""

    key: str
    expires: float
    reclaim: frozenset[str]  # bundles (with a manifest) it reclaims
    orphans: frozenset[str]  # bundles without a manifest whose files (or intent) it deletes


@dataclass(frozen=True, kw_only=True)
class Posted:
    """The notice objects one gc wrote: (key, reclaimed uuids, orphan uuids) each, and when."""

    parts: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    time: float

    @property
    def keys(self) -> list[str]:
        return [key for key, _, _ in self.parts]


@dataclass(frozen=True)
class GcNotices:
    """The notices of one remote context."""

    s3: S3
    location: RemoteLocation
    warned: set[str] = field(default_factory=set, compare=False, repr=False)  # keys logged as no notice

    def post(self, reclaim: Sequence[str], orphans: Sequence[str], now: float) -> Posted:
        """Write the notice (a few when the plan is very large) of a gc about to delete."""
        named = [("reclaim", u) for u in reclaim] + [("orphans", u) for u in orphans]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        parts = []
        for start in range(0, max(len(named), 1), NOTICE_UUIDS):
            part = named[start : start + NOTICE_UUIDS]
            key = self.location.gc_notice_key(f"{stamp}-{secrets.token_hex(6)}")
            parts.append(
                (
                    key,
                    tuple(u for kind, u in part if kind == "reclaim"),
                    tuple(u for kind, u in part if kind == "orphans"),
                )
            )
        return self._write(tuple(parts), now)

    def fresh(self, posted: Posted, now: float) -> Posted:
        """`posted`, written again under the same keys once half its NOTICE_TTL is gone: a gc
        deleting for longer than that keeps its notice (and whoever waits on it keeps waiting)."""
        return posted if now - posted.time < NOTICE_TTL / 2 else self._write(posted.parts, now)

    def _write(self, parts: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...], now: float) -> Posted:
        for key, reclaim, orphans in parts:
            doc = {"time": now, "expires": now + NOTICE_TTL, "reclaim": list(reclaim), "orphans": list(orphans)}
            self.s3.put_bytes(self.location.bucket, key, json.dumps(doc).encode())
        return Posted(parts=parts, time=now)

    def withdraw(self, keys: Sequence[str], now: float) -> None:
        """The gc ended (done or failed): its notices go, and any a gc that died left past
        NOTICE_TTL. Best effort: a notice left behind expires."""
        try:
            listed = self.s3.list_objects(self.location.bucket, self.location.gc_prefix)
            expired = [o.key for o in listed if now - o.modified > NOTICE_TTL]
            self.s3.delete(self.location.bucket, [*keys, *expired])
        except RemoteError as err:
            log.warning("could not remove the gc notice %s from the remote: %s", ", ".join(keys), err)

    def live(self, now: float) -> list[GcNotice]:
        """The notices that count now: one listing, then a GET of each young enough to."""
        found = []
        for obj in self.s3.list_objects(self.location.bucket, self.location.gc_prefix):
            if now - obj.modified > NOTICE_TTL:
                continue
            notice = None
            if obj.size <= MAX_NOTICE_BYTES:
                raw = self.s3.get_bytes(self.location.bucket, obj.key, MAX_NOTICE_BYTES)
                if raw is None:
                    continue  # the gc ended meanwhile
                notice = parse(obj.key, raw, obj.modified)
            if notice is None:
                if obj.key not in self.warned:
                    self.warned.add(obj.key)
                    log.warning("ignoring %s: not a gc notice", printable(self.location.url(obj.key)))
            elif notice.expires > now:
                found.append(notice)
        return found

    def reclaimers(self, uuids: Sequence[str], now: float) -> dict[str, str]:
        """Those of `uuids` a live notice names for reclaiming -> that notice's URL (one listing
        when no gc runs)."""
        wanted = set(uuids)
        found: dict[str, str] = {}
        for notice in self.live(now):
            for uuid in notice.reclaim & wanted:
                found.setdefault(uuid, self.location.url(notice.key))
        return found

    def wait_gone(self, notices: Sequence[GcNotice], what: str) -> None:
        """Wait (polling) until every notice is gone or has expired; GcInProgress once MAX_WAIT
        has passed in all (however many notices, planted or not, there are). Says when it starts
        waiting and when a notice expires instead of going (its gc died)."""
        pending = {n.key: n for n in notices}
        if not pending:
            return
        urls = ", ".join(self.location.url(k) for k in sorted(pending))
        log.warning(
            "waiting (at most %.0f s) for a remote gc to end: %s deletes the leftover files of %s", MAX_WAIT, urls, what
        )
        deadline = time.time() + MAX_WAIT
        while True:
            now = time.time()
            for key, notice in sorted(pending.items()):
                if self.s3.head(self.location.bucket, key) is None:
                    del pending[key]
                elif now >= notice.expires:
                    del pending[key]  # its gc died: what it deleted is sent again
                    log.warning("stopped waiting for %s: it expired without its gc ending", self.location.url(key))
            if not pending:
                return
            if now >= deadline:
                url = self.location.url(min(pending))
                raise GcInProgress(
                    f"a remote gc ({url}) is deleting the leftover files of {what}; "
                    f"waited {MAX_WAIT:.0f} s for it to end",
                    hint=f"push again once that gc has ended; if no gc runs, delete the notice (`aws s3 rm {url}`)",
                )
            time.sleep(POLL_SECONDS)


def parse(key: str, raw: bytes, modified: float) -> GcNotice | None:
    """The notice in `raw`, or None when it is not one (not a JSON object, too deep, wrong types)."""
    doc = json_object(raw)
    if doc is None:
        return None
    expires, reclaim, orphans = doc.get("expires"), _strings(doc.get("reclaim")), _strings(doc.get("orphans"))
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
        return None
    if reclaim is None or orphans is None:
        return None
    return GcNotice(
        key=key,
        expires=min(float(expires), modified + NOTICE_TTL),
        reclaim=frozenset(u for u in reclaim if is_uuid(u)),
        orphans=frozenset(u for u in orphans if is_uuid(u)),
    )


def _strings(value: object) -> list[str] | None:
    """`value` when it is a list of strings, else None."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None
