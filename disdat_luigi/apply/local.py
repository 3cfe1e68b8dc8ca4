"""Run planned tasks in this process without luigi's scheduler: for the default apply (one worker,
local scheduler) luigi's scheduler costs O(N) per task (every request for work walks and sorts every
pending task), which makes a 10,000-task DAG quadratic. Here a task runs once its upstream is done,
in plan order, with luigi's task events (START, SUCCESS, FAILURE, PROCESSING_TIME) fired as luigi's
worker would; dynamic dependencies (`yield self.yield_dependency(...)`) are planned and run when
they are yielded, and the generator resumes with them done (luigi would restart `pipe_run`).

luigi's retry settings are honoured here as luigi's worker would: with `[worker] keep_alive`, a
failed task runs again after `[scheduler] retry_delay` seconds until it has failed `retry_count`
times (the task's own `retry_count`, else `[scheduler] retry_count`). Applies that ask for the rest
of luigi's machinery (several workers, the central scheduler, luigi options, other `[worker]` or
`[scheduler]` settings) still go through `luigi.build`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import luigi
import luigi.configuration
from luigi.event import Event

from disdat_luigi.apply.plan import post_order

if TYPE_CHECKING:
    from disdat_luigi.apply.task import PipeTask

LUIGI_SECTIONS = ("worker", "scheduler")
# luigi settings this runner honours itself (the retry of failed tasks, and how often luigi's
# worker would look for work, which does not apply here)
OWN_SETTINGS = {
    "scheduler": {"retry_delay", "retry_count", "disable_window"},
    "worker": {"keep_alive", "wait_interval", "wait_jitter"},
}


def luigi_configured() -> bool:
    """True when luigi's own config has worker or scheduler settings this runner does not honour
    itself: those need luigi's scheduler."""
    config = luigi.configuration.get_config()
    return any(
        key not in OWN_SETTINGS[section]
        for section in LUIGI_SECTIONS
        if config.has_section(section)
        for key, _value in config.items(section)
    )


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """luigi's retry of failed tasks: only while the worker is kept alive, each task until it has
    failed `retry_count` times, `delay` seconds apart."""

    keep_alive: bool = False
    retry_count: int = 999999999  # luigi's default: retried for as long as the worker lives
    delay: float = 900.0

    @classmethod
    def from_luigi(cls) -> RetryPolicy:
        from luigi.scheduler import scheduler
        from luigi.worker import worker

        scheduling = scheduler()
        return cls(
            keep_alive=bool(worker().keep_alive),
            retry_count=int(scheduling.retry_count),
            delay=float(scheduling.retry_delay),
        )

    def attempts(self, task: Any) -> int:
        if not self.keep_alive:
            return 1
        own = task.retry_count  # a class may set its own (luigi's Task property is None)
        return max(1, int(own) if own is not None else self.retry_count)


def run_with_retries(
    task: PipeTask, policy: RetryPolicy, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep
) -> Exception | None:
    """`run_in_process`, again after a failure while the policy allows: None, or the last failure."""
    attempts = policy.attempts(task)
    for attempt in range(1, attempts + 1):
        failed = run_in_process(task)
        if failed is None or attempt == attempts:
            return failed
        log(f"{task} failed ({failed}); retrying in {policy.delay:g} s (attempt {attempt + 1} of {attempts})")
        sleep(policy.delay)
    return None


class _Failed(Exception):
    """A task failed here: the message says what, the cause is the task's own exception (for a
    failed dynamic dependency: the dependency's failure, thrown into the task that yielded it)."""


def run_in_process(task: PipeTask) -> Exception | None:
    """Run one task whose static upstream is done: None, or what failed (its message says what;
    its __cause__ is the task's own exception, with its traceback)."""
    try:
        _run(task)
    except _Failed as failed:
        return failed
    return None


def _run(task: PipeTask) -> None:
    for name in ("set_tracking_url", "set_status_message", "set_progress_percentage"):
        if getattr(task, name, None) is None:  # luigi's worker sets these callbacks; tasks may call them
            setattr(task, name, _ignore)
    task.trigger_event(Event.START, task)
    started = time.time()
    try:
        result = task.run()
        if inspect.isgenerator(result):
            _drive(result)
    except _Failed as failed:
        task.trigger_event(Event.FAILURE, task, failed)
        raise
    except Exception as err:
        task.trigger_event(Event.FAILURE, task, err)
        raise _Failed(f"{type(err).__name__}: {err}") from err
    except SystemExit as err:  # a task that exits failed (luigi's worker says so too); Ctrl-C still interrupts
        task.trigger_event(Event.FAILURE, task, err)
        raise _Failed(exit_message(str(err))) from err
    task.trigger_event(Event.PROCESSING_TIME, task, time.time() - started)
    task.trigger_event(Event.SUCCESS, task)


def exit_message(code: str) -> str:
    """The failure of a task that called sys.exit; `code` is str() of its SystemExit (the exit
    code or message, empty for none), all that is known of it when luigi ran the task."""
    return f"SystemExit: the task called sys.exit({code}) instead of returning"


def _drive(generator: Any) -> None:
    """Each yielded batch of dependencies is made complete (planned, upstream first) before the
    generator goes on; a failed one is thrown into it (so the task abandons its bundle)."""
    while True:
        try:
            requested = next(generator)
        except StopIteration:
            return
        for dependency in luigi.task.flatten(requested):
            for upstream in post_order(dependency):
                if upstream.complete():
                    continue
                try:
                    _run(upstream)
                except _Failed as failed:
                    thrown = _Failed(f"its dependency {upstream} failed: {failed}")
                    thrown.__cause__ = failed  # down to the dependency's own exception
                    generator.throw(thrown)
                    raise  # thrown back out of the task: it failed


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None
