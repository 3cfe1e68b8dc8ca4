"""disdat_luigi: data-versioned pipelines on luigi, the same on a laptop, in Docker and on AWS Batch."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # PipeTask pulls in luigi; import it only when asked so store-only use stays light.
    if name == "PipeTask":
        from disdat_luigi.pipe import PipeTask

        return PipeTask
    raise AttributeError(f"module 'disdat_luigi' has no attribute {name!r}")
