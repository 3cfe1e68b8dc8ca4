"""A stand-in executor shipped beside the real ones (as httpx ships its mock transport): it holds
what it is given and ends one task per poll, failing the tasks `fail` names, so the protocol and
the dispatcher can be shown without Docker or AWS. Registered as type `stub`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from disdat_luigi.apply.executors import Executor, JobUpdate, Phase, RemoteTask
from disdat_luigi.errors import JobFailed


class StubExecutor(Executor):
    """Ends the oldest task it holds at each poll: DONE with a made-up bundle uuid, or FAILED
    for a task whose label is in `fail`; a task whose label is in `retry` first goes to a second
    attempt (as a job on a lost host would). `batches`, `peak` and `cancelled` record what it saw."""

    def __init__(
        self,
        *,
        name: str = "stub",
        max_concurrent: int = 100,
        fail: Collection[str] = (),
        retry: Collection[str] = (),
        config: Any = None,
        **_unused: Any,
    ) -> None:
        self.name = getattr(config, "name", name)
        self.max_concurrent = getattr(config, "max_concurrent_jobs", max_concurrent)
        self.fail = set(fail)
        self.retry = set(retry)
        self.classes: list[type] = []
        self.held: list[tuple[RemoteTask, str]] = []
        self.batches: list[int] = []
        self.peak = 0
        self.cancelled: list[str] = []
        self._jobs = 0

    def prepare(self, classes: Sequence[type], log: Callable[[str], None]) -> None:
        self.classes = list(classes)

    def submit(self, tasks: Sequence[RemoteTask]) -> list[JobUpdate]:
        updates = []
        for task in tasks:
            self._jobs += 1
            job_id = f"stub-{self._jobs}"
            self.held.append((task, job_id))
            updates.append(JobUpdate(task_id=task.task_id, phase=Phase.SUBMITTED, job_id=job_id))
        self.batches.append(len(tasks))
        self.peak = max(self.peak, len(self.held))
        return updates

    def poll(self) -> list[JobUpdate]:
        if not self.held:
            return []
        task, job_id = self.held[0]
        if task.label in self.retry:
            self.retry.discard(task.label)
            note = f"job {job_id} attempt 2/2: the stub lost its host"
            return [
                JobUpdate(task_id=task.task_id, phase=Phase.RUNNING, job_id=job_id, attempt=2, attempts=2, note=note)
            ]
        self.held = self.held[1:]
        if task.label in self.fail:
            error = JobFailed(f"{task.label} failed in the stub executor")
            return [JobUpdate(task_id=task.task_id, phase=Phase.FAILED, job_id=job_id, error=error)]
        return [
            JobUpdate(
                task_id=task.task_id, phase=Phase.DONE, job_id=job_id, output_uuid=task.output_uuid, log=("stub ran",)
            )
        ]

    def cancel(self) -> list[str]:
        stopped = [f"{job_id} ({task.label})" for task, job_id in self.held]
        self.cancelled += stopped
        self.held = []
        return stopped

    @property
    def in_flight(self) -> int:
        return len(self.held)
