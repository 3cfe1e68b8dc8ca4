"""The keep rules of gc: which bundles of a context stay, and why; pure (no disk, no S3)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from disdat_luigi.errors import InvalidPolicy

US_PER_DAY = 86_400 * 10**6


@dataclass(frozen=True, kw_only=True)
class KeepPolicy:
    """What gc keeps: the newest `keep_last` of each recipe, bundles younger than `keep_days`
    (0: no age rule), bundles carrying a `keep_tags` tag, the newest of each name, bundles not
    yet pushed (local gc, unless `force`), held bundles (remote gc, unless `force`), bundles a
    live claim names, and everything upstream of a kept bundle."""

    keep_last: int = 3
    keep_days: float = 0.0
    keep_tags: tuple[tuple[str, str], ...] = ()
    force: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) or self.keep_last < 1:
            raise InvalidPolicy(
                f"keep-last must be a whole number of at least 1, not {self.keep_last!r} "
                "(the newest bundle of each recipe is what apply reuses)"
            )
        if (
            isinstance(self.keep_days, bool)
            or not isinstance(self.keep_days, (int, float))
            or not math.isfinite(self.keep_days)
            or self.keep_days < 0
        ):
            raise InvalidPolicy(f"keep-days must be a number of days of at least 0, not {self.keep_days!r}")
        for pair in self.keep_tags:
            if not isinstance(pair, tuple) or len(pair) != 2 or not pair[0]:
                raise InvalidPolicy(f"keep-tag {pair!r} is not key:value")


class NotPushed(Enum):
    """Why a bundle of a local context exists only there (local gc keeps it unless --force)."""

    ONLY_HERE = "exists only here"
    UNCOMMITTED = "uncommitted, exists only here"
    # a forced uuid another store published first, or a planted object: not this bundle's copy
    OTHER_BUNDLE = "the remote holds another bundle under its uuid"
    DAMAGED = "the remote's manifest of it is damaged"
    INCOMPLETE = "the remote lacks {missing} of its files"

    def describe(self, missing: int) -> str:
        """The reason in words (INCOMPLETE says how many files the remote lacks)."""
        return self.value.format(missing=missing)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One bundle as gc sees it, wherever it lives."""

    uuid: str
    name: str
    processing_name: str
    created_us: int
    tags: Mapping[str, str] = field(default_factory=dict)
    upstream: tuple[str, ...] = ()  # uuids of the bundles it was made from
    bytes: int = 0  # what reclaiming it frees
    remote_only: bool = False  # its files are elsewhere: reclaiming it frees no local bytes
    unpushed: NotPushed | None = None  # why it exists only here (local gc); None: the remote holds it
    missing_files: int = 0  # of its files, how many the remote lacks (NotPushed.INCOMPLETE)
    held_by: tuple[str, ...] = ()  # stores that dropped their local copies (remote gc)
    claimed: bool = False  # a live claim names it as an input (remote gc)
    named_by: str = ""  # uuid of a bundle whose manifest gc cannot read but whose bytes name it (remote gc)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    candidate: Candidate
    reason: str | None  # why it is kept; None: reclaimed

    @property
    def kept(self) -> bool:
        return self.reason is not None


@dataclass(frozen=True, kw_only=True)
class NameSummary:
    """One row of the plan: a bundle name's versions kept and reclaimed."""

    name: str
    kept: int
    reclaimed: int
    bytes_reclaimed: int
    oldest_kept_reason: str


@dataclass(frozen=True, kw_only=True)
class GcPlan:
    verdicts: tuple[Verdict, ...]

    @property
    def reclaimed(self) -> list[Candidate]:
        return [v.candidate for v in self.verdicts if not v.kept]

    @property
    def kept(self) -> list[Candidate]:
        return [v.candidate for v in self.verdicts if v.kept]

    @property
    def bytes_reclaimed(self) -> int:
        return sum(c.bytes for c in self.reclaimed)

    def by_name(self) -> list[NameSummary]:
        """Per name (sorted): versions kept / reclaimed, bytes, why the oldest kept one stays."""
        groups: dict[str, list[Verdict]] = defaultdict(list)
        for verdict in self.verdicts:
            groups[verdict.candidate.name].append(verdict)
        rows = []
        for name in sorted(groups):
            verdicts = groups[name]
            kept = [v for v in verdicts if v.kept]
            oldest = min(kept, key=lambda v: (v.candidate.created_us, v.candidate.uuid)) if kept else None
            rows.append(
                NameSummary(
                    name=name,
                    kept=len(kept),
                    reclaimed=len(verdicts) - len(kept),
                    bytes_reclaimed=sum(v.candidate.bytes for v in verdicts if not v.kept),
                    oldest_kept_reason=(oldest.reason or "") if oldest else "",
                )
            )
        return rows

    def holds(self) -> dict[str, list[Candidate]]:
        """Store id -> the bundles its holds keep (and nothing else would)."""
        found: dict[str, list[Candidate]] = defaultdict(list)
        for verdict in self.verdicts:
            if verdict.reason is not None and verdict.reason.startswith(HELD):
                for store in verdict.candidate.held_by:
                    found[store].append(verdict.candidate)
        return dict(found)


HELD = "held by "
NOT_PUSHED = "not pushed: "


def plan(candidates: Sequence[Candidate], policy: KeepPolicy, now_us: int, remote: bool) -> GcPlan:
    """Apply every keep rule; a bundle is kept when any rule keeps it (the first reason is kept)."""
    reasons: dict[str, str] = {}

    def keep(uuid: str, reason: str) -> None:
        reasons.setdefault(uuid, reason)

    newest_first = sorted(candidates, key=lambda c: (c.created_us, c.uuid), reverse=True)
    seen_names: set[str] = set()
    per_recipe: dict[tuple[str, str], int] = defaultdict(int)
    tags = set(policy.keep_tags)
    cutoff = now_us - int(policy.keep_days * US_PER_DAY) if policy.keep_days > 0 else None
    for c in newest_first:
        if c.name not in seen_names:
            seen_names.add(c.name)
            keep(c.uuid, "newest of its name")
        # a task's bundles count per recipe; `add`ed ones (processing name = name) per name
        recipe = (c.processing_name, c.name)
        per_recipe[recipe] += 1
        if per_recipe[recipe] <= policy.keep_last:
            keep(c.uuid, f"among the newest {policy.keep_last} of its recipe")
        if cutoff is not None and c.created_us >= cutoff:
            keep(c.uuid, f"younger than {policy.keep_days:g} days")
        for key, value in tags & set(c.tags.items()):
            keep(c.uuid, f"tagged {key}:{value}")
        if c.claimed:
            keep(c.uuid, "an input of a running apply or job (live claim)")
        if c.named_by:
            keep(c.uuid, f"named by the unreadable manifest of {c.named_by}")
        if c.held_by and not policy.force:
            keep(c.uuid, HELD + ", ".join(sorted(c.held_by)))
        if c.unpushed is not None and not remote and not policy.force:
            keep(c.uuid, f"{NOT_PUSHED}{c.unpushed.describe(c.missing_files)} (--force reclaims it)")
    _keep_upstream(newest_first, reasons)
    return GcPlan(verdicts=tuple(Verdict(candidate=c, reason=reasons.get(c.uuid)) for c in newest_first))


def _keep_upstream(candidates: Iterable[Candidate], reasons: dict[str, str]) -> None:
    """Everything a kept bundle was made from, transitively, stays (a kept model keeps the data it
    was trained on)."""
    by_uuid = {c.uuid: c for c in candidates}
    stack = list(reasons)
    while stack:
        child = by_uuid.get(stack.pop())
        if child is None:
            continue
        for parent in child.upstream:
            if parent in by_uuid and parent not in reasons:
                reasons[parent] = f"upstream of {child.name} {child.uuid[:8]}"
                stack.append(parent)
