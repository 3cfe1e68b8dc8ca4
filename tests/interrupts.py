"""A Ctrl-C landing at a chosen step: the step's function, wrapped to raise KeyboardInterrupt once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def interrupt_once(original: Callable[..., Any], before: bool) -> Callable[..., Any]:
    """`original` that raises KeyboardInterrupt once, before or after doing its work."""
    fired: list[bool] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        result = original(*args, **kwargs)
        if not before and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return result

    return wrapped
