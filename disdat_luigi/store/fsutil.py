"""Small durable-filesystem helpers: fsync, atomic writes, hashing copies."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

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


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


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
