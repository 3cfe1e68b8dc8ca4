"""What the compute environments behind a queue can give one job: refusing a job none can ever
place, explaining a job stuck in RUNNABLE, and capping the memory of an out-of-memory retry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from disdat_luigi.run.batch import client
from disdat_luigi.run.batch.spec import Resources
from disdat_luigi.run.batch.state import JobState


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """What one compute environment can give a single job."""

    name: str
    state: str
    status: str
    status_reason: str
    max_vcpus: int | None
    max_memory: int | None  # MiB of its largest instance type (None: unknown)
    max_gpus: int | None


def capacities(queue: str) -> list[Capacity]:
    """The compute environments behind `queue`, with what each can place."""
    environments = client.compute_environments(queue)
    types = sorted({t for env in environments for t in env.get("computeResources", {}).get("instanceTypes", [])})
    sizes = client.instance_sizes(types)
    found = []
    for env in environments:
        resources = env.get("computeResources", {})
        known = [sizes[t] for t in resources.get("instanceTypes", []) if t in sizes]
        found.append(
            Capacity(
                name=env.get("computeEnvironmentName", "?"),
                state=env.get("state", "?"),
                status=env.get("status", "?"),
                status_reason=env.get("statusReason", ""),
                max_vcpus=resources.get("maxvCpus"),
                max_memory=max((m for _v, m, _g in known), default=None),
                max_gpus=max((g for _v, _m, g in known), default=None),
            )
        )
    return found


def placement_problems(resources: Resources, queue: str, found: Sequence[Capacity]) -> list[str]:
    """Why no compute environment of `queue` can ever place a job of `resources` (empty: one can)."""
    if not found:
        return [f"queue {queue} has no compute environment"]
    usable = [c for c in found if c.state in ("ENABLED", "?") and c.status in ("VALID", "?")]  # ?: not reported
    if not usable:
        states = ", ".join(f"{c.name} is {c.state}/{c.status} {c.status_reason}".strip() for c in found)
        return [f"no compute environment of queue {queue} is enabled and valid ({states})"]
    problems = []
    for what, wanted, limit in (
        ("vCPUs", resources.vcpus, [c.max_vcpus for c in usable]),
        ("MiB of memory", resources.memory, [c.max_memory for c in usable]),
        ("GPUs", resources.gpus, [c.max_gpus for c in usable]),
    ):
        known = [v for v in limit if v is not None]
        if wanted and known and len(known) == len(limit) and wanted > max(known):
            problems.append(
                f"no compute environment of queue {queue} can give {wanted} {what}; the largest allows {max(known)}"
            )
    return problems


def runnable_diagnosis(job: JobState, resources: Resources, queue: str) -> str:
    """Why a job may sit in RUNNABLE: AWS's own reason, the compute environments' states and what
    they can give against what the job asks for."""
    lines = [f"job {job.job_id} is still RUNNABLE: {job.status_reason or 'AWS gives no reason'}"]
    found = capacities(queue)
    lines.extend(placement_problems(resources, queue, found))
    for c in found:
        limits = f"maxvCpus {c.max_vcpus}" + (f", largest instance {c.max_memory} MiB" if c.max_memory else "")
        lines.append(f"  compute environment {c.name}: {c.state}/{c.status} {c.status_reason} ({limits})".rstrip())
    return "\n".join(lines)


def escalated_memory(memory: int, factor: float, found: Iterable[Capacity]) -> int | None:
    """The memory of a retry after an out-of-memory kill: `memory * factor`, capped at the largest
    instance of the queue; None when no more can be had."""
    limits = [c.max_memory for c in found if c.max_memory is not None]
    wanted = int(memory * factor)
    if limits:
        wanted = min(wanted, max(limits))
    return wanted if wanted > memory else None
