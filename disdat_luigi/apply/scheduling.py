"""The luigi scheduler and worker `apply` hands its tasks to: luigi's own, minus three costs.

- luigi's local scheduler prunes its whole task graph on every `get_work` call, that is once per
  task: O(N) each time, O(N²) per run, a quarter of the run time of a 1000-task DAG. Pruning only
  acts on time scales of seconds (retry_delay, remove_delay, worker_disconnect_delay), so here it
  runs at most once per `prune_interval` seconds.
- Each `get_work` also counts the worker's pending tasks, walking every pending task's upstream
  graph for a disabled task. While no task is disabled that walk cannot find one, so then the
  count is taken directly (luigi's own count when any task is disabled).
- A worker that runs its tasks in its own process (one worker, no force_multiprocessing) still
  passes every result through a multiprocessing queue: a feeder thread, a pipe and a poll per
  task. Here such a worker uses a plain thread-safe queue instead.
"""

from __future__ import annotations

import functools
import multiprocessing.queues
import os
import queue
import threading
import time
from typing import Any

import luigi.rpc
import luigi.scheduler
import luigi.worker
from luigi.task_status import DISABLED, FAILED, PENDING, RUNNING

PRUNE_INTERVAL = 1.0


class LocalScheduler(luigi.scheduler.Scheduler):
    """luigi's in-process scheduler: prunes at most once per `prune_interval` seconds, counts
    pending tasks directly while none is disabled."""

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

    def count_pending(self, worker: str) -> dict[str, Any]:
        state = self._state
        if state.get_active_task_count_for_status(DISABLED):
            return super().count_pending(worker)  # type: ignore[no-any-return]
        worker_id, worker_state = worker, state.get_worker(worker)
        running_tasks = []
        for task in worker_state.get_tasks(state, RUNNING):
            other = state.get_worker(task.worker_running)
            if other is not None:
                running_tasks.append({"task_id": task.id, "worker": str(other), **other.info})
        pending = unique = last_scheduled = 0
        for task in worker_state.get_tasks(state, PENDING, FAILED):
            pending += 1
            unique += len(task.workers) == 1
            last_scheduled += task.workers.peek(last=True) == worker_id
        return {
            "n_pending_tasks": pending,
            "n_unique_pending": unique,
            "n_pending_last_scheduled": last_scheduled,
            "worker_state": worker_state.state,
            "running_tasks": running_tasks,
        }


class _ResultQueue(queue.Queue):  # type: ignore[type-arg]
    """The part of multiprocessing.Queue a luigi worker uses, for results from its own process."""

    def close(self) -> None:
        pass


@functools.cache
def _release_fork_lock_in_children() -> None:
    """luigi forks each task process while holding its module's `fork_lock`, so a child starts
    with that lock held by a thread it does not have: a nested apply with several workers inside
    such a task would wait on it forever. Give every forked child a fresh, free lock."""

    def fresh_lock() -> None:
        luigi.worker.fork_lock = threading.Lock()

    os.register_at_fork(after_in_child=fresh_lock)


class Worker(luigi.worker.Worker):
    """luigi's worker; when it runs tasks in its own process, results skip the process pipe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _release_fork_lock_in_children()
        super().__init__(*args, **kwargs)
        in_process = not (self._config.force_multiprocessing or self.worker_processes > 1)
        if in_process and isinstance(getattr(self, "_task_result_queue", None), multiprocessing.queues.Queue):
            self._task_result_queue.close()
            self._task_result_queue = _ResultQueue()


class SchedulerFactory:
    """What `luigi.build(worker_scheduler_factory=...)` asks for: the scheduler and worker above,
    and luigi's own remote scheduler client."""

    def create_local_scheduler(self) -> LocalScheduler:
        return LocalScheduler()

    def create_remote_scheduler(self, url: str) -> luigi.rpc.RemoteScheduler:
        return luigi.rpc.RemoteScheduler(url)

    def create_worker(self, scheduler: Any, worker_processes: int, assistant: bool = False) -> Worker:
        return Worker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant)
