"""Read the output bundle the entry point announces on its last line."""

from __future__ import annotations

from collections.abc import Callable, Iterable

OUTPUT_MARKER = "DISDAT_OUTPUT_BUNDLE"  # the container's last line: MARKER name uuid


def output_of(lines: Iterable[str]) -> tuple[str | None, str | None]:
    found: tuple[str | None, str | None] = (None, None)
    for line in lines:
        parts = line.strip().split()
        if len(parts) == 3 and parts[0] == OUTPUT_MARKER:
            found = (parts[1], parts[2])
    return found


def without_output_line(lines: Iterable[str]) -> list[str]:
    """A job's log lines as its task wrote them: the entry point's marker line left out."""
    return [line for line in lines if not line.strip().startswith(OUTPUT_MARKER + " ")]


def without_marker(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log`, never given the entry point's marker line (it is for the host, not the user)."""

    def shown(line: str) -> None:
        if not line.strip().startswith(OUTPUT_MARKER + " "):
            log(line)

    return shown


def output_line(name: str, uuid: str) -> str:
    return f"{OUTPUT_MARKER} {name} {uuid}"
