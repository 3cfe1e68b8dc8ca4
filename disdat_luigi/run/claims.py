"""Each task submitted once, across machines: before an `aws_batch` executor submits a task's job
it claims the task's identity on the remote; whoever finds a live claim follows its job instead.

A claim goes `pending` (created only if absent, before the job is submitted; its claimant renews
its expiry while it works) -> `submitted` (the job id, written over the pending claim's ETag).
A reader that finds the job succeeded and its bundle on the remote records `done`. A claim is
taken over, always over the ETag it was read with, when it is `pending` past its expiry (its
claimant died before submitting), `submitted` with a job that failed or that Batch does not know,
`done` with its bundle gone, or unreadable. On the normal path a task costs two claim writes.

A remote gc reads the claims after posting its gc notice; a claimant reads the notices after
writing its pending claims (one listing when no gc runs). Whichever writes second sees the other:
a gc keeps the inputs of a claim it sees, and a task whose input a notice reclaims is not submitted."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from disdat_luigi.apply.executors import Phase, RemoteTask
from disdat_luigi.errors import GcInProgress
from disdat_luigi.store.remote.claims import Claim, ClaimBook, ClaimState, Conflict, Versioned

TTL = 300.0  # seconds a claim stays live without renewal
RECHECK_SECONDS = 5.0  # how often a claim another apply holds pending is read again
ATTEMPTS = 3  # reads of one claim in one sort before its task waits for the next poll

PhaseLookup = Callable[[Sequence[str]], "dict[str, Phase | None]"]  # job ids -> phase (None: unknown)
BundleCheck = Callable[[RemoteTask, str, str], bool]  # (task, job id, bundle uuid) -> on the remote, as planned
LogSink = Callable[[str], None]
Reclaimers = Callable[[Sequence[str]], "dict[str, str]"]  # uuids -> those a live gc notice reclaims -> its URL


def _no_gc(uuids: Sequence[str]) -> dict[str, str]:
    return {}


def claimant_id(store: os.PathLike[str] | str) -> str:
    """Names this apply: the store (a hash of its path), the host and the process."""
    digest = hashlib.sha256(os.fspath(store).encode("utf-8")).hexdigest()[:12]
    return f"{digest}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class Followed:
    """A job of another apply (or of a host that died) doing a task's work."""

    task: RemoteTask
    job_id: str
    bundle: str  # the uuid its job makes
    phase: Phase  # SUBMITTED or RUNNING; DONE when its bundle is already on the remote


@dataclass(frozen=True, kw_only=True)
class Sorting:
    """What to do with each task: submit it (this apply holds its claim) or follow another's job.
    Tasks whose claim another apply holds pending wait; `TaskClaims.recheck` sorts them again."""

    submit: list[RemoteTask] = field(default_factory=list)
    follow: list[Followed] = field(default_factory=list)


@dataclass
class _Held:
    task: RemoteTask
    versioned: Versioned


class TaskClaims:
    """The claims of one executor in one apply."""

    def __init__(
        self,
        *,
        store: ClaimBook,
        claimant: str,
        phases: PhaseLookup,
        bundle_ready: BundleCheck,
        log: LogSink,
        reclaimers: Reclaimers = _no_gc,
        ttl: float = TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.claimant = claimant
        self.phases = phases
        self.bundle_ready = bundle_ready
        self.log = log
        self.reclaimers = reclaimers
        self.ttl = ttl
        self.clock = clock
        self.held: dict[str, _Held] = {}  # identity -> a claim this apply holds (pending or submitted)
        self.waiting: dict[str, RemoteTask] = {}  # identity -> a task whose claim another apply holds pending
        self._checked = 0.0
        self._announced: set[str] = set()  # identities whose wait was told once

    # --- before submitting ------------------------------------------------------------------------

    def sort(self, tasks: Sequence[RemoteTask]) -> Sorting:
        """Claim each task (one create-only write each when nobody has); the claims others hold
        read, their jobs looked up in one bulk call, and followed or taken over."""
        sorting = Sorting()
        found: list[tuple[RemoteTask, Versioned | None]] = []
        for task in tasks:
            if not self._create(task, sorting):
                found.append((task, None))
        for _attempt in range(ATTEMPTS):
            if not found:
                break
            found = [(task, self.store.read(task.identity)) for task, _ in found]
            found = self._decide(found, sorting)
        for task, _ in found:  # contended on every read: sorted again at the next poll
            self.waiting[task.identity] = task
        self._meet_gc(sorting.submit)
        return sorting

    def _meet_gc(self, tasks: Sequence[RemoteTask]) -> None:
        """With the pending claims written, read the gc notices once: a gc that posted its notice
        before them did not see them, so a task whose input it reclaims is not submitted. Every
        pending claim is released (the next apply takes it at once) and GcInProgress names the input."""
        inputs = sorted({u for task in tasks for u in _inputs(task).values()})
        doomed = self.reclaimers(inputs) if inputs else {}
        for task in tasks:
            for name, uuid in sorted(_inputs(task).items()):
                if uuid in doomed:
                    self.release_unsubmitted()
                    raise GcInProgress(
                        f"{task.label}: its input {name} {uuid} is being reclaimed by a remote gc ({doomed[uuid]})",
                        hint="run again after that gc has ended",
                    )

    def recheck(self) -> Sorting:
        """The tasks waiting on another apply's pending claim, sorted again (at most every few
        seconds): its job followed once it is submitted, the claim taken over once it expired."""
        now = self.clock()
        if not self.waiting or now - self._checked < RECHECK_SECONDS:
            return Sorting()
        self._checked = now
        tasks = list(self.waiting.values())
        self.waiting.clear()
        return self.sort(tasks)

    def _decide(
        self, found: list[tuple[RemoteTask, Versioned | None]], sorting: Sorting
    ) -> list[tuple[RemoteTask, Versioned | None]]:
        """Each read claim followed, waited on or taken over; what must be read again (a claim
        that vanished or changed under a take-over)."""
        jobs = [v.claim.job_id for _, v in found if v and v.claim and v.claim.state is ClaimState.SUBMITTED]
        phases = self.phases(jobs) if jobs else {}
        again: list[tuple[RemoteTask, Versioned | None]] = []
        now = self.clock()
        for task, versioned in found:
            if versioned is None:  # removed since the create failed: create it again
                if not self._create(task, sorting):
                    again.append((task, None))
                continue
            claim = versioned.claim
            reason = self._take_over_reason(task, claim, phases, now)
            if reason is None:
                assert claim is not None
                if claim.state is ClaimState.PENDING:
                    self.waiting[task.identity] = task
                    if task.identity not in self._announced:
                        self._announced.add(task.identity)
                        self.log(
                            f"{task.label}: claimed by {claim.claimant}, which is submitting it; waiting for its job"
                        )
                    continue
                phase = Phase.DONE if claim.state is ClaimState.DONE else phases.get(claim.job_id)
                assert phase is not None
                if phase is Phase.DONE and claim.state is ClaimState.SUBMITTED:
                    self.store.replace(task.identity, replace(claim, state=ClaimState.DONE), versioned.etag)
                sorting.follow.append(Followed(task=task, job_id=claim.job_id, bundle=claim.bundle, phase=phase))
                continue
            outcome = self.store.replace(task.identity, self._claim(task, ClaimState.PENDING), versioned.etag)
            if isinstance(outcome, Conflict):
                again.append((task, None))
                continue
            self.log(f"{task.label}: took over its claim ({reason})")
            self.held[task.identity] = _Held(task, outcome)
            sorting.submit.append(task)
        return again

    def _take_over_reason(
        self, task: RemoteTask, claim: Claim | None, phases: dict[str, Phase | None], now: float
    ) -> str | None:
        """Why the claim no longer protects its work, or None while it does."""
        if claim is None:
            return "it was unreadable"
        if claim.state is ClaimState.PENDING:
            return f"{claim.claimant} held it pending past its expiry" if claim.expires <= now else None
        if claim.state is ClaimState.DONE:
            if self.bundle_ready(task, claim.job_id, claim.bundle):
                return None
            return f"the bundle {claim.bundle} of job {claim.job_id} is gone"
        phase = phases.get(claim.job_id)
        if phase in (Phase.SUBMITTED, Phase.RUNNING):
            return None
        if phase is Phase.DONE or phase is None:  # an old job Batch forgot may still have made its bundle
            if self.bundle_ready(task, claim.job_id, claim.bundle):
                phases[claim.job_id] = Phase.DONE
                return None
            return f"job {claim.job_id} is unknown to Batch" if phase is None else f"job {claim.job_id} made no bundle"
        return f"job {claim.job_id} failed"

    # --- while the jobs run --------------------------------------------------------------------------

    def submitted(self, task: RemoteTask, job_id: str) -> None:
        """The job of a claimed task: written over the pending claim."""
        held = self.held.get(task.identity)
        if held is None or held.versioned.claim is None:
            return
        claim = replace(held.versioned.claim, state=ClaimState.SUBMITTED, job_id=job_id, expires=self._expiry())
        outcome = self.store.replace(task.identity, claim, held.versioned.etag)
        if isinstance(outcome, Conflict):
            del self.held[task.identity]
            self.log(f"{task.label}: its claim was taken over while job {job_id} was submitted; another job may run it")
            return
        held.versioned = outcome

    def renew(self, working: set[str]) -> None:
        """Push back the expiry of every claim held whose job is still `working` (identities),
        once half of its time is gone; the others are left as their jobs left them."""
        now = self.clock()
        for identity, held in list(self.held.items()):
            claim = held.versioned.claim
            if identity not in working:
                del self.held[identity]
                continue
            if claim is None or claim.expires - now > self.ttl / 2:
                continue
            outcome = self.store.replace(identity, replace(claim, expires=self._expiry()), held.versioned.etag)
            if isinstance(outcome, Conflict):
                del self.held[identity]
                self.log(f"{held.task.label}: its claim was taken over by another apply")
            else:
                held.versioned = outcome

    def release_unsubmitted(self) -> None:
        """Submitting failed: each claim still pending is marked expired (over its ETag), so the
        next apply takes it over at once instead of waiting out its expiry."""
        for identity, held in list(self.held.items()):
            claim = held.versioned.claim
            if claim is not None and claim.state is ClaimState.PENDING:
                self.store.replace(identity, replace(claim, expires=0.0), held.versioned.etag)
                del self.held[identity]

    # --- helpers ---------------------------------------------------------------------------------------

    def _create(self, task: RemoteTask, sorting: Sorting) -> bool:
        """A pending claim written create-only; True when this apply now holds it (and submits)."""
        outcome = self.store.create(task.identity, self._claim(task, ClaimState.PENDING))
        if not isinstance(outcome, Versioned):
            return False
        self.held[task.identity] = _Held(task, outcome)
        sorting.submit.append(task)
        return True

    def _expiry(self) -> float:
        return round(self.clock() + self.ttl, 3)

    def _claim(self, task: RemoteTask, state: ClaimState) -> Claim:
        inputs = sorted(set(_inputs(task).values()))
        return Claim(
            state=state,
            claimant=self.claimant,
            expires=self._expiry(),
            bundle=task.output_uuid,
            inputs=tuple(inputs),
            task=task.label,
        )


def _inputs(task: RemoteTask) -> dict[str, str]:
    """The bundles a task reads: processing name (or pipeline_input) -> uuid."""
    return {**task.pins, **({"pipeline_input": task.input_bundle} if task.input_bundle else {})}
