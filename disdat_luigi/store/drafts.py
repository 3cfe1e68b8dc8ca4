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

The locks this process holds are not a forked child's: the child closes its copies at once, so a
`multiprocessing` worker forked while a bundle was open does not keep readers of it waiting.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from disdat_luigi.errors import LocalDiskError
from disdat_luigi.store import fsutil
from disdat_luigi.store.manifest import MANIFEST_NAME

DRAFTS_SUFFIX = ".drafts"
MAKING_SUFFIX = f"{DRAFTS_SUFFIX}.new"  # a list being written, under a private (dot) name
MAKING_STALE_SECONDS = 60  # a private list older than this was left by a writer that died making it
MAX_LIST_BYTES = 1 << 24  # a list names at most a batch of uuids (37 bytes each); more is not ours
FRESH_SECONDS = 2.0  # an unlocked draft directory this young may be its maker's, not yet locked
PUBLISHED = -1  # claim: another writer has published the bundle
BUSY = -2  # claim without waiting: another writer holds the draft

_held: set[int] = set()  # descriptors of this process's draft locks (not a forked child's)
_held_guard = threading.Lock()


def _forget_in_child() -> None:
    global _held_guard  # noqa: PLW0603 - a forked child starts with its own, unheld
    _held_guard = threading.Lock()
    for fd in _held:
        os.close(fd)  # the parent keeps its lock: flock belongs to the file description
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _hold(fd: int) -> int:
    with _held_guard:
        _held.add(fd)
    return fd


def release(fd: int) -> None:
    """Close a lock's descriptor taken by claim or DraftList; nothing in a forked child, which
    closed its copies when it was forked (the number may name another file there by now)."""
    with _held_guard:
        if fd not in _held:
            return
        _held.discard(fd)
    os.close(fd)


class DraftList:
    """The file listing the drafts one writer call begins, locked while any of them is open."""

    def __init__(self, tmp_dir: Path, uuids: Iterable[str]) -> None:
        """Write the list under a private name, lock it, then give it its public name: a cleaner
        never sees the public name unlocked while its writer lives (and leaves private ones
        alone until they are a minute old)."""
        name = secrets.token_hex(8)
        private = tmp_dir / f".{name}{MAKING_SUFFIX}"
        self.path = tmp_dir / f"{name}{DRAFTS_SUFFIX}"
        fd = os.open(private, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, "".join(f"{uuid}\n" for uuid in uuids).encode())
            os.rename(private, self.path)
        except BaseException:
            os.close(fd)
            private.unlink(missing_ok=True)
            raise
        self._fd = _hold(fd)
        self._open = 0
        self._beginning = True
        self._guard = threading.Lock()

    def opened(self) -> None:
        """One more draft of the list is open."""
        with self._guard:
            self._open += 1

    def closed(self) -> None:
        """One draft of the list is published or thrown away: the list goes with the last one."""
        with self._guard:
            self._open -= 1
        self._remove_when_done()

    def begun(self) -> None:
        """Its writer has begun every draft it will: the list goes now if none is open."""
        with self._guard:
            self._beginning = False
        self._remove_when_done()

    def _remove_when_done(self) -> None:
        with self._guard:
            if self._open > 0 or self._beginning or self._fd < 0:
                return
            fd, self._fd = self._fd, -1
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no cleaner reads it half gone
        finally:
            release(fd)


def dead_lists(tmp_dir: Path, names: Iterable[str]) -> Iterable[tuple[Path, list[str]]]:
    """Each draft list among `names` (entries of `tmp_dir`) whose writer is gone, with the uuids it
    names; the list is removed once the caller has dealt with them (the next item is asked for).
    Private lists a writer died making are removed once they are stale."""
    for name in names:
        path = tmp_dir / name
        if name.startswith(".") and name.endswith(MAKING_SUFFIX):
            _remove_stale(path)
            continue
        if not name.endswith(DRAFTS_SUFFIX) or name.startswith("."):
            continue
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


def _remove_stale(path: Path) -> None:
    fd = try_lock(path)
    if fd < 0:
        return
    try:
        if time.time() - os.fstat(fd).st_mtime > MAKING_STALE_SECONDS:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def claim(path: Path, wait: bool, record: dict[Path, int]) -> int:
    """Make the bundle directory `path` and hold its lock: the locked descriptor; PUBLISHED when a
    bundle is published there (its manifest is there: asked under the lock and once before
    waiting, so that a published bundle's readers are not waited for); without `wait`, BUSY when another writer
    holds it. A directory found there without a manifest and unlocked is a dead writer's draft,
    removed (under its lock) before making a fresh one; unless it was made a moment ago, when its
    maker may not have locked it yet: then it is waited for like a held one. The descriptor is
    put in `record` before it is returned, so a caller interrupted as the call returns can still
    give the draft up."""
    while True:
        try:
            path.mkdir()
            made = True
        except FileExistsError:
            if os.access(path / MANIFEST_NAME, os.F_OK):
                return PUBLISHED
            made = False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # removed since: by a cleaner, or by a writer taking over
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return BUSY
            if not _still_at(path, fd):
                os.close(fd)
                continue
            if os.access(MANIFEST_NAME, os.F_OK, dir_fd=fd):  # another writer made it and published it
                os.close(fd)
                return PUBLISHED
            if made:
                record[path] = _hold(fd)
                return fd
            if time.time() - os.fstat(fd).st_ctime < FRESH_SECONDS:
                os.close(fd)  # its maker is between its mkdir and its lock (or died just now)
                if not wait:
                    return BUSY
                time.sleep(FRESH_SECONDS / 20)
                continue
            fsutil.remove_tree(path)  # a dead draft: ours now (under its lock, nobody else's)
            if path.exists():
                raise LocalDiskError(
                    f"cannot remove {path}, a draft its writer left", hint="remove it by hand, then try again"
                )
            os.close(fd)
        except BaseException:
            if record.get(path) != fd:
                os.close(fd)
            raise


def try_lock(path: Path) -> int:
    """flock `path` (a draft list or a bundle directory; never a link, a FIFO or a device)
    without waiting: the descriptor, or -1 when someone holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        kind = os.fstat(fd).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            os.close(fd)
            return -1
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
