"""Read the output bundle the entry point announces on its last line."""

from __future__ import annotations

from collections.abc import Iterable

from disdat_luigi.run.entrypoint import OUTPUT_MARKER


def output_of(lines: Iterable[str]) -> tuple[str | None, str | None]:
    found: tuple[str | None, str | None] = (None, None)
    for line in lines:
        parts = line.strip().split()
        if len(parts) == 3 and parts[0] == OUTPUT_MARKER:
            found = (parts[1], parts[2])
    return found
