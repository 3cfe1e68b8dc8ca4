"""The public home of `PipeTask` (as `disdatluigi.pipe` was in Disdat): subclass it, declare
luigi Parameters, implement `pipe_requires` and `pipe_run`. The class lives in `apply.task`."""

from __future__ import annotations

from disdat_luigi.apply.task import PipeTask

__all__ = ["PipeTask"]
