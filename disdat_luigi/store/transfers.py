"""The seam between a bundle and the remote that holds its copies: an interface the store calls,
and a registry of remote backends by URL scheme, imported only when a bundle first needs one.

The store never imports a backend by name; `store/remote/` implements the interface (S3) and
depends on the store, not the other way round.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from disdat_luigi.errors import RemoteNotConfigured

if TYPE_CHECKING:
    from disdat_luigi.config import RemoteSettings
    from disdat_luigi.store.bundle import Bundle
    from disdat_luigi.store.codec import RemoteLeaf
    from disdat_luigi.store.context import LocalContext
    from disdat_luigi.store.manifest import FileEntry

# scheme -> (module, class implementing Remote, function implementing CopyIn)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "s3": ("disdat_luigi.store.remote.sync", "RemoteSync", "download_into"),
}


@dataclass(frozen=True)
class RemoteRef:
    """A remote bundle to delete: its uuid, and its name (None when its manifest is unreadable)."""

    uuid: str
    name: str | None


class Remote(Protocol):
    """What a bundle asks of its context's remote."""

    def push(self, bundles: Iterable[Bundle], delocalize: bool = False) -> Any: ...

    def localize(self, bundle: Bundle, rels: Iterable[str] | None = None, progress: Any = None) -> int: ...

    def delocalize(self, bundle: Bundle, rels: Iterable[str] | None = None) -> bool: ...

    def remove(self, bundles: Iterable[RemoteRef]) -> None: ...

    def adopt(self, uuid: str, leaves: Iterable[RemoteLeaf]) -> list[FileEntry]: ...


class CopyIn(Protocol):
    """Downloads remote files named in a value into a bundle being written (no remote bound)."""

    def __call__(self, root: Path, leaves: Sequence[RemoteLeaf], settings: RemoteSettings) -> None: ...


def _backend(url: str) -> Any:
    scheme = url.partition("://")[0]
    if scheme not in BACKENDS:
        raise RemoteNotConfigured(f"no remote backend for {url!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[scheme][0]), BACKENDS[scheme]


def open_remote(context: LocalContext) -> Remote:
    """The remote the context is bound to (RemoteNotConfigured when it is not)."""
    url = context.meta.remote_url
    if not url:
        raise RemoteNotConfigured(f"context {context.name!r} is not bound to a remote")
    module, (_, cls_name, _) = _backend(url)
    remote: Remote = getattr(module, cls_name)(context, context.remote_settings)
    return remote


def copy_in(root: Path, leaves: Sequence[RemoteLeaf], settings: RemoteSettings) -> None:
    """Download each leaf's source (an s3:// file or directory) into `root` at its place."""
    for leaf in leaves:
        assert leaf.source is not None
        module, (_, _, function) = _backend(leaf.source)
        copier: CopyIn = getattr(module, function)
        copier(root, [leaf], settings)
