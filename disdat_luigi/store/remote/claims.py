"""Claims on pieces of work, kept on the remote: `<remote context>/claims/<digest>.json`, one per
TaskIdentity digest, read and written with S3's conditional writes so that of two writers exactly
one wins (create-only for a new claim, compare-and-swap on the ETag for every change after).

What the states mean and when one may be taken over is the run layer's business
(`disdat_luigi.run.claims`); this module only stores the record."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Protocol

from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.s3 import S3

VERSION = 1
MAX_CLAIM_BYTES = 1024 * 1024  # a claim names its inputs: thousands of uuids at most


class ClaimState(enum.Enum):
    PENDING = "pending"  # its claimant is about to submit the job
    SUBMITTED = "submitted"  # `job_id` does the work
    DONE = "done"  # `bundle` is on the remote


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The claim body, versioned JSON. Field names are read by others (remote gc keeps the
    `inputs` of claims whose `state` is live until `expires`): keep them."""

    state: ClaimState
    claimant: str  # store id, host and pid of the apply that holds it
    expires: float  # epoch seconds; the claimant renews it while it works
    job_id: str = ""
    bundle: str = ""  # the uuid of the bundle the job makes
    inputs: tuple[str, ...] = ()  # the uuids of the bundles the task reads
    task: str = ""  # the task as luigi prints it, for people reading the bucket

    def to_json(self) -> bytes:
        doc = {
            "version": VERSION,
            "state": self.state.value,
            "claimant": self.claimant,
            "expires": self.expires,
            "job_id": self.job_id,
            "bundle": self.bundle,
            "inputs": list(self.inputs),
            "task": self.task,
        }
        return json.dumps(doc, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Claim | None:
        """The claim, or None for a body that is not a claim of this version (damaged, planted
        or newer): such a claim protects nothing and is taken over."""
        try:
            doc: Any = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                return None
            inputs = doc.get("inputs", [])
            expires = doc["expires"]
            if (
                not isinstance(inputs, list)
                or isinstance(expires, bool)
                or not isinstance(expires, (int, float))
                or not all(isinstance(doc.get(k, ""), str) for k in ("claimant", "job_id", "bundle", "task"))
                or not all(isinstance(i, str) for i in inputs)
            ):
                return None
            return cls(
                state=ClaimState(doc["state"]),
                claimant=doc.get("claimant", ""),
                expires=float(expires),
                job_id=doc.get("job_id", ""),
                bundle=doc.get("bundle", ""),
                inputs=tuple(inputs),
                task=doc.get("task", ""),
            )
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            return None


@dataclass(frozen=True, kw_only=True)
class Versioned:
    """A claim as read or written, with the ETag a change of it must name."""

    claim: Claim | None  # None: an unreadable body (still replaceable with its ETag)
    etag: str


@dataclass(frozen=True)
class Conflict:
    """Another writer got there first (S3 answered 412 or 409): read the claim again."""


Outcome = Versioned | Conflict


class ClaimBook(Protocol):
    """Where claims are kept, with S3's conditional-write rules: `ClaimStore` on the remote,
    `MemoryClaimStore` for tests above it."""

    def read(self, digest: str) -> Versioned | None: ...

    def create(self, digest: str, claim: Claim) -> Outcome: ...

    def replace(self, digest: str, claim: Claim, etag: str) -> Outcome: ...


class ClaimStore:
    """The claims of one remote context."""

    def __init__(self, s3: S3, location: RemoteLocation) -> None:
        self.s3 = s3
        self.location = location

    def read(self, digest: str) -> Versioned | None:
        """The claim on `digest`, None when nobody claimed it."""
        found = self.s3.get_versioned(self.location.bucket, self.location.claim_key(digest), MAX_CLAIM_BYTES)
        if found is None:
            return None
        data, etag = found
        return Versioned(claim=Claim.from_json(data), etag=etag)

    def create(self, digest: str, claim: Claim) -> Outcome:
        """Write `claim` only if there is none yet (If-None-Match: *)."""
        etag = self.s3.put_conditional(
            self.location.bucket, self.location.claim_key(digest), claim.to_json(), create_only=True
        )
        return Conflict() if etag is None else Versioned(claim=claim, etag=etag)

    def replace(self, digest: str, claim: Claim, etag: str) -> Outcome:
        """Write `claim` only over the version `etag` names (If-Match)."""
        new = self.s3.put_conditional(
            self.location.bucket, self.location.claim_key(digest), claim.to_json(), if_match=etag
        )
        return Conflict() if new is None else Versioned(claim=claim, etag=new)


class MemoryClaimStore:
    """A ClaimStore in memory with S3's conditional-write rules, for tests of what sits above it
    (the Batch executor with the Batch client double): of two writers exactly one wins."""

    def __init__(self) -> None:
        self.claims: dict[str, tuple[bytes, str]] = {}  # digest -> (body, etag)
        self._versions = 0

    def read(self, digest: str) -> Versioned | None:
        found = self.claims.get(digest)
        return None if found is None else Versioned(claim=Claim.from_json(found[0]), etag=found[1])

    def create(self, digest: str, claim: Claim) -> Outcome:
        return Conflict() if digest in self.claims else self._write(digest, claim)

    def replace(self, digest: str, claim: Claim, etag: str) -> Outcome:
        found = self.claims.get(digest)
        return self._write(digest, claim) if found is not None and found[1] == etag else Conflict()

    def _write(self, digest: str, claim: Claim) -> Versioned:
        self._versions += 1
        etag = f'"{self._versions}"'
        self.claims[digest] = (claim.to_json(), etag)
        return Versioned(claim=claim, etag=etag)
