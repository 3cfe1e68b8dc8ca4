"""Small durable-filesystem helpers: fsync, atomic writes, hashing copies."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import threading
from pathlib import Path

from disdat_luigi.errors import UnsupportedValue

CHUNK = 1024 * 1024


def fsync_path(path: Path) -> None:
    """Flush a file or a directory entry list to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path, directories_only: bool = False, include_root: bool = True) -> None:
    """fsync every file (unless `directories_only`) and directory below `root`, each directory
    after its contents (`root` itself only with `include_root`)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        if not directories_only:
            for name in filenames:
                fsync_path(Path(dirpath, name))
        if include_root or Path(dirpath) != root:
            fsync_path(Path(dirpath))


def write_file(path: Path, data: bytes, durable: bool = True) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())


def create_empty(path: Path) -> None:
    """An empty file at `path` (one left there already is kept as it is)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writing thread
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the file system holding `path`: one flush for many files
    instead of an fsync each (Linux's syncfs(2); elsewhere sync(2), every file system)."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except AttributeError:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def freeze_links(root: Path) -> None:
    """Replace every symlink to a regular file below `root` by a copy of its content, so what a
    bundle holds can no longer change through the link; links to directories, FIFOs, sockets and
    devices are refused by name."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                if not path.is_file():
                    raise UnsupportedValue(
                        f"{path.relative_to(root)} is a symbolic link to {os.readlink(path)}, not to a regular file",
                        hint="copy the directory's files into the bundle instead of linking it",
                    )
                copy = path.with_name(f".{name}.frozen")
                shutil.copyfile(path, copy)
                os.replace(copy, path)
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsupportedValue(
                    f"{path.relative_to(root)} is {special_kind(mode)}, not a regular file",
                    hint="bundles hold regular files and directories only",
                )


def special_kind(mode: int) -> str:
    """'a FIFO', 'a socket', 'a device', ... for a file mode that is not a regular file."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def collect_files(root: Path, follow_links: bool = False) -> list[tuple[Path, str]]:
    """Every regular file below `root` with its relative path, sorted. Without `follow_links` a
    symbolic link is refused unless it is a link to a file inside `root` (its content is taken);
    FIFOs, sockets and devices are always refused by name, never silently skipped."""
    real_root = root.resolve()
    found: list[tuple[Path, str]] = []
    seen_dirs = {real_root}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
        for name in list(dirnames):
            path = Path(dirpath, name)
            if path.is_symlink():
                _check_link(path, root, real_root, follow_links, directory=True)
                if path.resolve() in seen_dirs:  # a link back up the tree: walk it once
                    dirnames.remove(name)
            seen_dirs.add(path.resolve())
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                _check_link(path, root, real_root, follow_links, directory=False)
            mode = path.stat().st_mode if path.exists() else path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise UnsupportedValue(
                    f"{path} is {special_kind(mode)}; a bundle holds regular files only",
                    hint="copy what you need into a regular file, or leave it out of the directory",
                )
            found.append((path, path.relative_to(root).as_posix()))
    return sorted(found, key=lambda item: item[1])


def _check_link(path: Path, root: Path, real_root: Path, follow: bool, directory: bool) -> None:
    try:
        target = path.resolve()
    except RuntimeError as err:  # Python < 3.13 on a loop of links; later versions leave it unresolved (broken)
        raise UnsupportedValue(
            f"{path} is a symbolic link loop (to {os.readlink(path)})", hint="remove or fix it"
        ) from err
    if follow and target.exists():
        return
    if not target.exists():
        raise UnsupportedValue(f"{path} is a broken symbolic link (to {os.readlink(path)})", hint="remove or fix it")
    if directory or not target.is_relative_to(real_root):
        where = "a directory" if directory else "outside " + str(root)
        raise UnsupportedValue(
            f"{path} is a symbolic link to {target} ({where})",
            hint="pass --follow-links (follow_links=True) to copy what links point to",
        )
