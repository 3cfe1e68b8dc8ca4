"""The store root: its contexts and the CLI's current context."""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path

from disdat_luigi.config import RemoteSettings
from disdat_luigi.errors import ContextError, ContextNotFound, NoCurrentContext
from disdat_luigi.store import fsutil
from disdat_luigi.store.context import CONTEXT_META, ContextMeta, LocalContext
from disdat_luigi.store.names import check_name, split_context_name

CURRENT_CONTEXT_FILE = "current_context"


class LocalStore:
    """`<root>/context/<name>/` per context, plus `<root>/current_context`."""

    def __init__(self, root: Path, durable: bool = True, remote_settings: RemoteSettings | None = None) -> None:
        self.root = root
        self.durable = durable
        self.remote_settings = remote_settings
        self.contexts_dir = root / "context"

    def create_context(self, context_name: str) -> LocalContext:
        """Create `local` (or `remote/local`, remembering the remote context name); idempotent."""
        remote_context, local = split_context_name(context_name)
        path = self.contexts_dir / local
        if (path / CONTEXT_META).exists():
            return self._open(path)
        self.contexts_dir.mkdir(parents=True, exist_ok=True)
        staging = self.contexts_dir / f".new-{local}-{uuidlib.uuid4().hex}"
        (staging / "objects").mkdir(parents=True)
        (staging / "tmp").mkdir()
        context = LocalContext(staging, self.durable, self.remote_settings)
        context.write_meta(ContextMeta(name=local, remote_context=remote_context))
        _ = context.index.conn  # create the index (WAL, schema) before the context is visible
        context.index.close()
        try:
            os.rename(staging, path)
        except OSError:
            fsutil.remove_tree(staging)  # another process created it first
            if not (path / CONTEXT_META).exists():
                raise
        return self._open(path)

    def context(self, context_name: str) -> LocalContext:
        _, local = split_context_name(context_name)
        path = self.contexts_dir / local
        if not (path / CONTEXT_META).exists():
            raise ContextNotFound(f"no context named {local!r} in {self.root}")
        return self._open(path)

    def _open(self, path: Path) -> LocalContext:
        return LocalContext(path, self.durable, self.remote_settings)

    def list_contexts(self) -> list[str]:
        if not self.contexts_dir.is_dir():
            return []
        return sorted(p.name for p in self.contexts_dir.iterdir() if (p / CONTEXT_META).exists())

    def delete_context(self, context_name: str) -> None:
        """Remove the context directory (one rename first, so no half-deleted context stays visible)."""
        context = self.context(context_name)
        trash = self.contexts_dir / f".deleted-{context.name}-{uuidlib.uuid4().hex}"
        context.index.close()
        os.rename(context.path, trash)
        fsutil.remove_tree(trash)
        if self.current_context_name() == context.name:
            (self.root / CURRENT_CONTEXT_FILE).unlink(missing_ok=True)

    def current_context_name(self) -> str | None:
        try:
            name = (self.root / CURRENT_CONTEXT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def current_context(self) -> LocalContext:
        name = self.current_context_name()
        if name is None:
            raise NoCurrentContext("no current context is selected")
        try:
            return self.context(name)
        except ContextNotFound as err:
            raise ContextError(
                f"the current context {name!r} no longer exists",
                hint="select another one with `dsdt switch NAME`",
            ) from err

    def switch(self, context_name: str) -> LocalContext:
        context = self.context(context_name)
        check_name(context.name, "context name")
        self.root.mkdir(parents=True, exist_ok=True)
        fsutil.write_atomic(self.root / CURRENT_CONTEXT_FILE, context.name.encode("utf-8"), self.durable)
        return context
