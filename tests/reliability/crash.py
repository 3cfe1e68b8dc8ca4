"""Kill a child process with SIGKILL at seeded random moments while it runs an operation."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def kill_trials(
    script: str,
    argv: Callable[[int], Sequence[str]],
    trials: int,
    max_delay: float,
    check: Callable[[int], list[str]],
    seed: int,
    prepare: Callable[[int], None] = lambda _trial: None,
) -> tuple[int, list[str]]:
    """For each trial: prepare, start `script`, wait for its READY line, sleep a random delay in
    [0, max_delay], SIGKILL it, then run `check` (which returns problems). Returns (kills that
    landed before the child finished, all problems)."""
    rng = random.Random(seed)
    landed = 0
    problems: list[str] = []
    for trial in range(trials):
        prepare(trial)
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *argv(trial)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if "READY" not in ready:
            proc.kill()
            raise RuntimeError(f"child failed before starting: {ready}{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(rng.uniform(0.0, max_delay))
        if proc.poll() is None:
            landed += 1
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        problems += [f"trial {trial}: {p}" for p in check(trial)]
    return landed, problems
