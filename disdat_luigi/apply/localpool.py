"""The local tasks of a dispatched apply, up to `-w N` at once: with one worker each runs here, in
this process, as before; with more, each runs in a forked child process (as luigi's worker
processes do), which commits its bundle and reports back the bundle's uuid or what failed."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from disdat_luigi.apply.state import state_of

if TYPE_CHECKING:
    from disdat_luigi.apply.task import PipeTask

RunLocal = Callable[["PipeTask"], "str | Exception | None"]
STOP_SECONDS = 30.0  # how long interrupted children get to abandon their bundles


@dataclass(frozen=True, kw_only=True)
class LocalResult:
    """A local task that ended: the bundle it made, or what failed."""

    task_id: str
    uuid: str = ""
    error: str | Exception | None = None


class LocalPool:
    """Runs local tasks, `workers` at once."""

    def __init__(self, run_local: RunLocal, workers: int) -> None:
        self.run_local = run_local
        self.workers = max(1, workers)
        self._children: dict[Any, tuple[str, Any]] = {}  # result pipe -> (task id, process)

    @property
    def in_flight(self) -> int:
        return len(self._children)

    def has_room(self) -> bool:
        return self.in_flight < self.workers

    def start(self, task: PipeTask) -> LocalResult | None:
        """With one worker: run it now and return how it ended. With more: start it in a child
        process and return None (`wait` reports it)."""
        if self.workers == 1:
            return _outcome(task, self.run_local)
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(task, self.run_local, sender), daemon=False)
        process.start()
        sender.close()
        self._children[receiver] = (task.task_id, process)
        return None

    def wait(self, timeout: float | None) -> list[LocalResult]:
        """The children that ended within `timeout` seconds (None: until one does)."""
        if not self._children:
            return []
        ended: list[Any] = multiprocessing.connection.wait(list(self._children), timeout)
        results = []
        for receiver in ended:
            task_id, process = self._children.pop(receiver)
            try:
                uuid, error = receiver.recv()
            except (EOFError, OSError):  # died without a word: killed, or out of memory
                process.join()
                uuid, error = "", f"its worker process ended with exit code {process.exitcode}"
            receiver.close()
            process.join()
            results.append(LocalResult(task_id=task_id, uuid=uuid, error=error))
        return results

    def cancel(self) -> list[str]:
        """Ctrl-C: every child is interrupted (so its task abandons its bundle) and waited for."""
        stopped = []
        for receiver, (task_id, process) in list(self._children.items()):
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join()
            receiver.close()
            stopped.append(task_id)
        self._children.clear()
        return stopped


def _outcome(task: PipeTask, run_local: RunLocal) -> LocalResult:
    error = run_local(task)
    if error is not None:
        return LocalResult(task_id=task.task_id, error=error)
    return LocalResult(task_id=task.task_id, uuid=state_of(task).produced or "")


def _child(task: PipeTask, run_local: RunLocal, sender: Any) -> None:
    """In the forked child: run the task, send (uuid, error text) back, and leave at once (no
    atexit handlers or luigi cleanup of the parent's objects)."""
    code = 0
    try:
        result = _outcome(task, run_local)
        sender.send((result.uuid, None if result.error is None else str(result.error)))
    except KeyboardInterrupt:
        code = 130
    except BaseException as err:  # noqa: BLE001 - anything that escaped the task runner is its failure
        try:
            sender.send(("", f"{type(err).__name__}: {err}"))
        except OSError:
            code = 1
    finally:
        sender.close()
    os._exit(code)
