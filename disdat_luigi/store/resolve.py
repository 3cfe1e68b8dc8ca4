"""Turn a context name into a `LocalContext`, reading the config when (and only when) asked."""

from __future__ import annotations

from disdat_luigi.config import Settings, load_settings
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.store import LocalStore


def open_store(settings: Settings | None = None) -> LocalStore:
    settings = load_settings() if settings is None else settings
    return LocalStore(settings.root)


def resolve_context(context: str | LocalContext, settings: Settings | None = None) -> LocalContext:
    if isinstance(context, LocalContext):
        return context
    return open_store(settings).context(context)
