"""How transfers report progress; the library never prints, the CLI plugs a progress bar in."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Told about a transfer as it goes; `advance` and `file_done` come from transfer threads."""

    def start(self, files: int, nbytes: int) -> None: ...

    def advance(self, nbytes: int) -> None:
        """`nbytes` more have moved (negative when a part is sent again)."""

    def file_done(self, nbytes: int) -> None:
        """A file is complete; `nbytes` of it were not reported through `advance` (all of it
        when it did not have to move), so the totals always add up to what `start` announced."""

    def close(self) -> None: ...


class NoProgress:
    def start(self, files: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def file_done(self, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


class Part:
    """One stage of a larger transfer: its files count towards `whole`, whose owner starts and
    closes it once (a pull of many bundles shows one bar, not one per batch)."""

    def __init__(self, whole: Progress) -> None:
        self.whole = whole

    def start(self, files: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.whole.advance(nbytes)

    def file_done(self, nbytes: int) -> None:
        self.whole.file_done(nbytes)

    def close(self) -> None:
        pass
