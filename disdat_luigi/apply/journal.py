"""An append-only file where the tasks of one apply (in any worker process) report what they did."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JournalEntry:
    kind: str  # "produced" or "failed"
    task: str
    processing_name: str = ""
    uuid: str = ""
    error: str = ""
    task_id: str = ""  # luigi's id of the task: unique within one apply


class Journal:
    """One JSON line per event; O_APPEND writes of one line are atomic across processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _append(self, entry: JournalEntry) -> None:
        line = json.dumps(entry.__dict__) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def produced(self, task: str, task_id: str, processing_name: str, uuid: str) -> None:
        self._append(JournalEntry("produced", task, processing_name, uuid, task_id=task_id))

    def made(self, task_id: str) -> str | None:
        """The uuid of the bundle this apply made for the task, if it made one (in any process)."""
        found = [e.uuid for e in self.entries() if e.kind == "produced" and e.task_id == task_id]
        return found[-1] if found else None

    def failed(self, task: str, error: str) -> None:
        self._append(JournalEntry("failed", task, error=error))

    def entries(self) -> list[JournalEntry]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [JournalEntry(**json.loads(line)) for line in lines if line.strip()]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
