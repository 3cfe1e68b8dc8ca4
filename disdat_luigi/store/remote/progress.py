"""How transfers report progress; the library never prints, the CLI plugs a progress bar in."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, files: int, nbytes: int) -> None: ...

    def file_done(self, nbytes: int) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def start(self, files: int, nbytes: int) -> None:
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

    def file_done(self, nbytes: int) -> None:
        self.whole.file_done(nbytes)

    def close(self) -> None:
        pass
