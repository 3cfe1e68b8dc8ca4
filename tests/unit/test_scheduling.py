"""The scheduler apply hands to luigi answers exactly as luigi's own does."""

from __future__ import annotations

import luigi.scheduler
from luigi.task_status import DISABLED, DONE, FAILED, PENDING, RUNNING

from disdat_luigi.apply.scheduling import LocalScheduler


def _graph(scheduler: LocalScheduler) -> None:
    """Two workers sharing a small graph in every status a worker can see."""
    for worker in ("w1", "w2"):
        scheduler.add_task(worker=worker, task_id="shared", status=PENDING, deps=["leaf_a"])
    scheduler.add_task(worker="w1", task_id="leaf_a", status=PENDING)
    scheduler.add_task(worker="w1", task_id="leaf_b", status=FAILED)
    scheduler.add_task(worker="w1", task_id="leaf_c", status=DONE)
    scheduler.add_task(worker="w1", task_id="top", status=PENDING, deps=["shared", "leaf_b", "leaf_c"])
    scheduler.add_task(worker="w2", task_id="running", status=RUNNING)
    scheduler.add_task(worker="w2", task_id="after_running", status=PENDING, deps=["running"])


def test_count_pending_matches_luigi() -> None:
    scheduler = LocalScheduler()
    _graph(scheduler)
    for worker in ("w1", "w2"):
        assert scheduler.count_pending(worker) == luigi.scheduler.Scheduler.count_pending(scheduler, worker)
    assert scheduler.count_pending("w1")["n_pending_tasks"] == 3  # shared, leaf_a, top (a failed task has no workers)


def test_count_pending_with_a_disabled_task_is_luigis() -> None:
    """With a disabled task luigi's own walk counts (here: nothing of w1 is pending any more)."""
    scheduler = LocalScheduler()
    _graph(scheduler)
    scheduler.add_task(worker="w1", task_id="leaf_a", status=DISABLED)
    ours = scheduler.count_pending("w1")
    assert ours == luigi.scheduler.Scheduler.count_pending(scheduler, "w1")
    assert ours["n_pending_tasks"] == 0


def test_prune_runs_at_most_once_per_interval(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    scheduler = LocalScheduler(prune_interval=3600)
    calls = []
    monkeypatch.setattr(scheduler, "prune", lambda: calls.append(1))
    for _ in range(5):
        scheduler.get_work(worker="w1")
    assert calls == [1]
