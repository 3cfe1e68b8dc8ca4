"""The luigi scheduler and worker `apply` hands its tasks to.

luigi's local scheduler prunes its whole task graph on every `get_work` call, that is once per
task: O(N) each time, O(N²) per run, a quarter of the run time of a 1000-task DAG. Pruning only
acts on time scales of seconds (retry_delay, remove_delay, worker_disconnect_delay), so here it
runs at most once per `prune_interval` seconds; everything else is luigi's own scheduler.
"""

from __future__ import annotations

import time
from typing import Any

import luigi.rpc
import luigi.scheduler
import luigi.worker

PRUNE_INTERVAL = 1.0


class LocalScheduler(luigi.scheduler.Scheduler):
    """luigi's in-process scheduler, pruning at most once per `prune_interval` seconds."""

    def __init__(self, prune_interval: float = PRUNE_INTERVAL, **kwargs: Any) -> None:
        super().__init__(prune_on_get_work=False, record_task_history=False, **kwargs)
        self._prune_interval = prune_interval
        self._last_prune = float("-inf")

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._last_prune >= self._prune_interval:
            self._last_prune = now
            self.prune()
        return super().get_work(*args, **kwargs)


class SchedulerFactory:
    """What `luigi.build(worker_scheduler_factory=...)` asks for: the throttled local scheduler,
    luigi's own remote scheduler client and worker."""

    def create_local_scheduler(self) -> LocalScheduler:
        return LocalScheduler()

    def create_remote_scheduler(self, url: str) -> luigi.rpc.RemoteScheduler:
        return luigi.rpc.RemoteScheduler(url)

    def create_worker(self, scheduler: Any, worker_processes: int, assistant: bool = False) -> luigi.worker.Worker:
        return luigi.worker.Worker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant)
