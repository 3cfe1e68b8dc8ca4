"""The `local` executor: its tasks run in the apply's own process (the dispatcher hands them to
luigi there), so nothing is ever submitted to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from disdat_luigi.apply.executors import Executor, JobUpdate, RemoteTask
from disdat_luigi.errors import RunError


class LocalExecutor(Executor):
    runs_here = True

    def __init__(self, *, config: Any = None, **_unused: Any) -> None:
        self.name = getattr(config, "name", "local")

    def prepare(self, classes: Sequence[type], log: Callable[[str], None]) -> None:
        """Nothing to build or check: the classes are imported here already."""

    def submit(self, tasks: Sequence[RemoteTask]) -> list[JobUpdate]:
        raise RunError(f"executor {self.name!r} runs its tasks in the apply's process; nothing is submitted to it")

    def poll(self) -> list[JobUpdate]:
        return []

    def cancel(self) -> list[str]:
        return []

    @property
    def in_flight(self) -> int:
        return 0
