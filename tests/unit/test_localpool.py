"""Local tasks in worker processes: results, a worker that dies, Ctrl-C."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from disdat_luigi.apply.localpool import LocalPool


@dataclass
class Task:
    task_id: str


def test_a_failure_and_a_dead_worker_are_reported_by_task() -> None:
    def run(task: Task) -> str | None:
        if task.task_id == "dies":
            os.kill(os.getpid(), signal.SIGKILL)
        return f"{task.task_id} broke"

    pool = LocalPool(run, workers=2)  # type: ignore[arg-type]
    assert pool.start(Task("fails")) is None and pool.start(Task("dies")) is None  # type: ignore[arg-type]
    assert not pool.has_room()
    ended: dict[str, object] = {}
    while pool.in_flight:
        ended.update({r.task_id: r.error for r in pool.wait(10)})
    assert ended == {"fails": "fails broke", "dies": "its worker process ended with exit code -9"}


def test_ctrl_c_interrupts_the_workers_at_once() -> None:
    pool = LocalPool(lambda task: time.sleep(60), workers=2)  # type: ignore[arg-type, return-value]
    pool.start(Task("a"))  # type: ignore[arg-type]
    pool.start(Task("b"))  # type: ignore[arg-type]
    time.sleep(0.3)
    started = time.monotonic()
    assert sorted(pool.cancel()) == ["a", "b"]
    assert time.monotonic() - started < 5 and pool.in_flight == 0
