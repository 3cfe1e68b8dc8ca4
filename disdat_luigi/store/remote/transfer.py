"""Run many file transfers in one bounded thread pool; downloads become visible only once verified."""

from __future__ import annotations

import os
import threading
import uuid as uuidlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from disdat_luigi.errors import BundleCorrupt, DisdatError, TransferError
from disdat_luigi.store.remote.progress import NoProgress, Progress
from disdat_luigi.store.remote.s3 import S3

T = TypeVar("T")
R = TypeVar("R")
Moved = Callable[[int], None]  # told how many more bytes of one file moved (any thread)
METER_STEP = 1024 * 1024


@dataclass(frozen=True)
class FileTransfer:
    """One file: its local path, its key in `bucket`, and what the manifest says it is."""

    local: Path
    bucket: str
    key: str
    size: int
    sha256: str


def map_all(action: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """`action` on every item in a pool of `threads` (in this thread for one item); the results
    in item order. The first failure is raised once every started call has stopped."""
    if len(items) <= 1:
        return [action(item) for item in items]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        futures = [pool.submit(action, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def run_all(
    jobs: Sequence[FileTransfer],
    action: Callable[[FileTransfer, Moved], bool],
    threads: int,
    progress: Progress | None,
) -> int:
    """Run `action` on every job in a pool of `threads` and count the jobs that moved data;
    the first failure is raised once every started transfer has stopped."""
    moved, _ = run_groups([jobs], action, threads, progress)
    return moved


def run_groups(
    groups: Sequence[Sequence[FileTransfer]],
    action: Callable[[FileTransfer, Moved], bool],
    threads: int,
    progress: Progress | None,
    contained: tuple[type[DisdatError], ...] = (),
) -> tuple[int, dict[int, DisdatError]]:
    """Run the jobs of every group (a bundle's files) in one pool of `threads`; count the jobs
    that moved data. A failure of a `contained` type stops only its own group (no transfer of it
    starts after) and is returned by group index, its files counted as done so the progress
    totals still add up; any other failure stops every group and is raised once every started
    transfer has stopped."""
    progress = progress or NoProgress()
    jobs = [(index, job) for index, group in enumerate(groups) for job in group]
    progress.start(len(jobs), sum(j.size for _, j in jobs))

    stopped = threading.Event()  # set by the first failure not contained: no transfer starts after it
    failed: dict[int, DisdatError] = {}  # group -> its first contained failure
    lock = threading.Lock()

    def run(index: int, job: FileTransfer) -> bool:
        if stopped.is_set():
            return False
        with lock:
            skip = index in failed
        if skip:
            progress.file_done(job.size)
            return False
        meter = _Meter(progress)
        try:
            changed = action(job, meter)
        except contained as err:
            with lock:
                failed.setdefault(index, err)
            progress.file_done(job.size - meter.reported)
            return False
        except BaseException:
            stopped.set()
            raise
        progress.file_done(job.size - meter.reported)
        return changed

    errors: list[BaseException] = []
    moved = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            futures = [pool.submit(run, index, job) for index, job in jobs]
            for future in as_completed(futures):
                if future.cancelled():  # cancelled below, after the failure that is raised
                    continue
                error = future.exception()
                if error is not None:
                    errors.append(error)
                    for pending in futures:
                        pending.cancel()
                else:
                    moved += int(future.result())
    finally:
        progress.close()
    if errors:
        first = errors[0]
        if isinstance(first, DisdatError):
            raise first
        raise TransferError(f"transfer failed: {type(first).__name__}: {first}") from first
    return moved, failed


class _Meter:
    """One file's bytes as they move, passed on to `progress` in steps of at least METER_STEP
    (boto3 reports every few KiB, from several threads for a multipart file)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._pending = 0
        self.reported = 0

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self._pending += nbytes
            if abs(self._pending) < METER_STEP:
                return
            nbytes, self._pending = self._pending, 0
            self.reported += nbytes
        self._progress.advance(nbytes)


def uploader(s3: S3, absent: set[str]) -> Callable[[FileTransfer, Moved], bool]:
    """Upload a file; a key not in `absent` (just listed) is first asked for: when the checksum
    S3 keeps for it proves it holds this content it is skipped, so an interrupted push resumes.
    Anything else there (no checksum, another one, only a matching sha256 label) is replaced."""

    def upload(job: FileTransfer, moved: Moved) -> bool:
        if job.key not in absent:
            existing = s3.head(job.bucket, job.key, checksum=True)
            if (
                existing is not None
                and existing.get("ContentLength") == job.size
                and s3.proves(existing, job.local, job.sha256)
            ):
                return False
        s3.upload(job.local, job.bucket, job.key, job.sha256, job.size, moved)
        return True

    return upload


def downloader(s3: S3) -> Callable[[FileTransfer, Moved], bool]:
    """Download to a private temporary name, check size and sha256, then rename into place."""

    def download(job: FileTransfer, moved: Moved) -> bool:
        job.local.parent.mkdir(parents=True, exist_ok=True)
        part = job.local.with_name(f".{job.local.name}.{uuidlib.uuid4().hex}.part")
        try:
            digest = s3.download(job.bucket, job.key, part, moved)
            size = part.stat().st_size
            if size != job.size:
                raise BundleCorrupt(
                    f"s3://{job.bucket}/{job.key} has {size} bytes, its manifest says {job.size}; nothing kept",
                    hint="the remote copy is damaged: push the bundle again from a good copy",
                )
            if digest != job.sha256:
                raise BundleCorrupt(
                    f"s3://{job.bucket}/{job.key} does not match the sha256 in its manifest; nothing kept",
                    hint="the remote copy is damaged: push the bundle again from a good copy",
                )
            os.replace(part, job.local)
            return True
        finally:
            part.unlink(missing_ok=True)

    return download
