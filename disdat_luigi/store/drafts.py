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

from disdat_luigi.errors import BundleStateError, LocalDiskError
from disdat_luigi.store import fsutil
from disdat_luigi.store.manifest import MANIFEST_NAME

DRAFTS_SUFFIX = ".drafts"
MAKING_SUFFIX = f"{DRAFTS_SUFFIX}.new"  # a list being written, under a private (dot) name
MAKING_STALE_SECONDS = 60  # a private list older than this was left by a writer that died making it
MAX_LIST_BYTES = 1 << 24  # a list names at most a batch of uuids (37 bytes each); more is not ours
FRESH_SECONDS = 2.0  # an unlocked draft directory this young may be its maker's, not yet locked
PUBLISHED = -1  # claim: another writer has published the bundle
BUSY = -2  # claim without waiting: another writer holds the draft

_held: dict[int, tuple[Path, int]] = {}  # this process's lock descriptors -> (path, locking thread)
_held_guard = threading.Lock()


def _forget_in_child() -> None:
    global _held_guard  # noqa: PLW0603 - a forked child starts with its own, unheld
    _held_guard = threading.Lock()
    for fd in _held:
        os.close(fd)  # the parent keeps its lock: flock belongs to the file description
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _hold(fd: int, path: Path) -> int:
    with _held_guard:
        _held[fd] = (path, threading.get_ident())
    return fd


def held(fd: int, path: Path) -> bool:
    """Whether this process holds the lock on `path` that `fd` was taken with (a forked child
    does not hold its parent's, even when a descriptor of its own has the same number: it may
    neither publish nor throw away the parent's drafts)."""
    found = _held.get(fd)
    return found is not None and found[0] == path


def _release(fd: int) -> None:
    """Close a lock's descriptor; nothing in a forked child, which closed its copies when it was
    forked (the number may name another file there by now)."""
    with _held_guard:
        if _held.pop(fd, None) is None:
            return
    os.close(fd)


def _held_by_this_thread(path: Path) -> bool:
    me = threading.get_ident()
    with _held_guard:
        return any(at == path and thread == me for at, thread in _held.values())


class DraftList:
    """The file listing the drafts one writer call begins, locked while any of them is open; it
    holds the locks of its open drafts too."""

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
        self._fd = _hold(fd, self.path)
        self._open: dict[Path, int] = {}  # the drafts' directories -> their locked descriptors
        self._beginning = True
        self._guard = threading.Lock()

    def hold(self, path: Path, fd: int) -> int:
        """A draft of the list is claimed: its directory, locked by `fd`."""
        with self._guard:
            self._open[path] = _hold(fd, path)
        return fd

    def open_paths(self) -> list[Path]:
        with self._guard:
            return list(self._open)

    def release(self, path: Path) -> None:
        """A draft of the list is published or thrown away: its lock goes, and the list with the
        last one once its writer has begun them all."""
        with self._guard:
            fd = self._open.pop(path, None)
        try:
            if fd is not None:
                _release(fd)
        finally:
            self._remove_when_done()

    def begun(self) -> None:
        """Its writer has begun every draft it will: the list goes now if none is open."""
        with self._guard:
            self._beginning = False
        self._remove_when_done()

    def _remove_when_done(self) -> None:
        with self._guard:
            if self._open or self._beginning or not held(self._fd, self.path):
                return  # drafts open, more to come, or another process's list (a forked child)
            fd, self._fd = self._fd, -1
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no cleaner reads it half gone
        finally:
            _release(fd)


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


def claim(path: Path, wait: bool, listed: DraftList) -> int:
    """Make the bundle directory `path` and hold its lock (handed to `listed` before returning, so
    a caller interrupted as the call returns can still give the draft up): the locked descriptor;
    PUBLISHED when a bundle is published there; without `wait`, BUSY when another writer holds
    it. A manifest found before locking means published unless a writer holds the directory (it
    may yet take its manifest back): then it is waited for, while readers (shared lock) are not.
    A directory found without a manifest and unlocked is a dead writer's draft, removed (under
    its lock) before making a fresh one; unless it was made a moment ago, when its maker may not
    have locked it yet: then it is waited for like a held one. A draft this very thread left
    open (a forced uuid opened again) is BundleStateError instead of a wait for itself."""
    while True:
        try:
            path.mkdir()
            made = True
        except FileExistsError:
            made = False
            if _held_by_this_thread(path):
                raise BundleStateError(
                    f"bundle {path.name} is already open in this thread",
                    hint="close or abandon the bundle opened before, then open it again",
                ) from None
            if _settled(path):
                return PUBLISHED
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
                return listed.hold(path, fd)
            age = time.time() - os.fstat(fd).st_ctime
            if 0 <= age < FRESH_SECONDS:
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
            if not held(fd, path):
                os.close(fd)
            raise


def _settled(path: Path) -> bool:
    """Whether a manifest is at `path` and no writer holds the directory (its readers may)."""
    if not os.access(path / MANIFEST_NAME, os.F_OK):
        return False
    fd = try_lock(path, shared=True)
    if fd < 0:
        return False
    os.close(fd)
    return True


def try_lock(path: Path, shared: bool = False) -> int:
    """flock `path` (a draft list or a bundle directory; never a link, a FIFO or a device)
    without waiting, exclusively or `shared`: the descriptor, or -1 when someone holds it (the
    other side) or it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        kind = os.fstat(fd).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            os.close(fd)
            return -1
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
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
