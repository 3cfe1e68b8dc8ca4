"""How a writer reserves bundle directories, and how a cleaner tells live drafts from dead ones.

A draft is `objects/<uuid>/` without a manifest. Its writer holds an exclusive flock on that
directory itself from just after making it until the bundle is published or thrown away: a
second writer of the same uuid waits for it, and a cleaner (which takes the lock without waiting)
leaves it alone. Readers and `rm` take the same lock (shared and exclusive) once the bundle is
published. The drafts one writer opens together are listed in one file, `tmp/<random>.drafts`,
which the writer holds locked too: a cleaner finds a dead writer's drafts there without listing
`objects/` (100,000 entries in a big store), and a pull of 1,000 bundles makes one file in `tmp/`
instead of a lock file per bundle (whose making and unlinking in one shared directory cost a
first pull of 10,000 bundles about a quarter of its time).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from disdat_luigi.errors import LocalDiskError
from disdat_luigi.store import fsutil

DRAFTS_SUFFIX = ".drafts"
MAX_LIST_BYTES = 1 << 24  # a list names at most a batch of uuids (37 bytes each); more is not ours


class DraftList:
    """The file listing the drafts one writer has open, locked while any of them is."""

    def __init__(self, tmp_dir: Path, uuids: Iterable[str]) -> None:
        """Write the list under a private name, lock it, then give it its public name: a cleaner
        never sees it unlocked while its writer lives."""
        name = secrets.token_hex(8)
        private = tmp_dir / f".{name}{DRAFTS_SUFFIX}.new"
        self.path = tmp_dir / f"{name}{DRAFTS_SUFFIX}"
        self._fd = os.open(private, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.write(self._fd, "".join(f"{uuid}\n" for uuid in uuids).encode())
            os.rename(private, self.path)
        except BaseException:
            os.close(self._fd)
            private.unlink(missing_ok=True)
            raise
        self._open = 0
        self._guard = threading.Lock()

    def opened(self) -> None:
        with self._guard:
            self._open += 1

    def closed(self) -> None:
        """One draft of the list is published or thrown away: the list goes with the last one."""
        with self._guard:
            self._open -= 1
        self.settle()

    def settle(self) -> None:
        """Remove the list when none of its drafts is open (its writer has begun all it will)."""
        with self._guard:
            if self._open > 0 or self._fd < 0:
                return
            fd, self._fd = self._fd, -1
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no cleaner reads it half gone
        finally:
            os.close(fd)


def dead_lists(tmp_dir: Path, names: Iterable[str]) -> Iterable[tuple[Path, list[str]]]:
    """Each draft list among `names` (entries of `tmp_dir`) whose writer is gone, with the uuids it
    names; the list is removed once the caller has dealt with them (the next item is asked for)."""
    for name in names:
        if not name.endswith(DRAFTS_SUFFIX) or name.startswith("."):
            continue
        path = tmp_dir / name
        fd = try_lock(path)
        if fd < 0:
            continue  # its writer lives (or another cleaner is at it)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue  # not a list of ours: left alone
            with os.fdopen(os.dup(fd), "rb") as handle:
                uuids = handle.read(MAX_LIST_BYTES).decode(errors="replace").split()
            yield path, uuids
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def claim(path: Path, published: Callable[[], bool]) -> int:
    """Make the bundle directory `path` and hold its lock: the locked descriptor, or -1 when
    another writer has published the bundle there (`published`, asked under the lock, and once
    before waiting so that a published bundle's readers are not waited for). A draft left there by
    a writer that died is removed first; so is one whose writer made it a moment ago and has not
    locked it yet (that writer then finds its directory gone and claims again, after us)."""
    while True:
        try:
            path.mkdir()
            made = True
        except FileExistsError:
            if published():
                return -1
            made = False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # removed since: by a cleaner, or by a writer taking over
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _still_at(path, fd):
                os.close(fd)
                continue
            if made:
                return fd
            if published():
                os.close(fd)
                return -1
            fsutil.remove_tree(path)  # a dead draft: ours now (under its lock, nobody else's)
            if path.exists():
                raise LocalDiskError(
                    f"cannot remove {path}, a draft its writer left", hint="remove it by hand, then try again"
                )
            os.close(fd)
        except BaseException:
            os.close(fd)
            raise


def try_lock(path: Path) -> int:
    """flock `path` (a draft list or a bundle directory) without waiting: the descriptor, or -1
    when someone holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    if not _still_at(path, fd):
        os.close(fd)
        return -1
    return fd


def _still_at(path: Path, fd: int) -> bool:
    """Whether the file `fd` was opened on is still the one at `path` (not removed or replaced
    between the open and the lock)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
