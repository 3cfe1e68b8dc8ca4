"""The transfer pool: which error a failed transfer raises, and what progress it reports."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from disdat_luigi.errors import BundleCorrupt, TransferError
from disdat_luigi.store.remote import transfer
from disdat_luigi.store.remote.transfer import FileTransfer, Moved

KIB = 1024


def _jobs(count: int, size: int = 1) -> list[FileTransfer]:
    return [FileTransfer(Path(f"/nowhere/{i}"), "bucket", f"key{i}", size, "0" * 64) for i in range(count)]


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def start(self, files: int, nbytes: int) -> None:
        self.calls.append(("start", nbytes))

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.calls.append(("advance", nbytes))

    def file_done(self, nbytes: int) -> None:
        with self.lock:
            self.calls.append(("done", nbytes))

    def close(self) -> None:
        self.calls.append(("close", 0))


@pytest.mark.parametrize("threads", [1, 3])
def test_first_failure_is_raised_when_jobs_outnumber_threads(threads: int) -> None:
    """With more files than threads, the failure itself is raised (not the cancellation of the
    files still waiting), and waiting files are not started after it."""
    started: list[str] = []
    failed = threading.Event()

    def action(job: FileTransfer, moved: Moved) -> bool:
        started.append(job.key)
        if job.key == "key0":
            failed.set()
            raise BundleCorrupt("key0 does not match the sha256 in its manifest")
        failed.wait(5)
        return True

    with pytest.raises(BundleCorrupt, match="key0 does not match"):
        transfer.run_all(_jobs(20), action, threads, None)
    assert len(started) <= 2 * threads


def test_a_foreign_failure_becomes_a_transfer_error_naming_it() -> None:
    """An error from outside the disdat tree is wrapped in TransferError with its type and message."""

    def action(job: FileTransfer, moved: Moved) -> bool:
        raise ConnectionResetError("peer went away")

    with pytest.raises(TransferError, match="ConnectionResetError: peer went away"):
        transfer.run_all(_jobs(8), action, 2, None)


def test_progress_reports_bytes_in_steps_and_adds_up() -> None:
    """Bytes reported in small pieces reach the progress in steps of at least METER_STEP; the
    rest comes with file_done, so every file's numbers add up to its size."""
    size = 2 * 1024 * KIB

    def action(job: FileTransfer, moved: Moved) -> bool:
        for _ in range(5):
            moved(300 * KIB)
        return True

    progress = _Recorder()
    assert transfer.run_all(_jobs(3, size), action, 2, progress) == 3
    advanced = [n for op, n in progress.calls if op == "advance"]
    done = [n for op, n in progress.calls if op == "done"]
    assert progress.calls[0] == ("start", 3 * size) and progress.calls[-1] == ("close", 0)
    assert advanced == [1200 * KIB] * 3  # four pieces of 300 KiB make the first step; the fifth waits
    assert done == [size - 1200 * KIB] * 3


def test_a_resent_part_counts_back() -> None:
    """A part sent again (negative report) takes its bytes off before they are counted twice."""

    def action(job: FileTransfer, moved: Moved) -> bool:
        moved(2048 * KIB)
        moved(-2048 * KIB)  # the part failed and is sent again
        moved(2048 * KIB)
        return True

    progress = _Recorder()
    transfer.run_all(_jobs(1, 2048 * KIB), action, 1, progress)
    assert [n for op, n in progress.calls if op == "advance"] == [2048 * KIB, -2048 * KIB, 2048 * KIB]
    assert ("done", 0) in progress.calls
