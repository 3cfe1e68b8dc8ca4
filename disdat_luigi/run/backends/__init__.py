"""Run backends by name; each is imported only when used."""

from __future__ import annotations

import importlib

from disdat_luigi.errors import RunError
from disdat_luigi.run.backends.base import Backend
from disdat_luigi.run.request import BackendName

BACKENDS: dict[BackendName, str] = {
    BackendName.LOCAL: "disdat_luigi.run.backends.local:LocalBackend",
    BackendName.AWS_BATCH: "disdat_luigi.run.backends.batch:BatchBackend",
}


def backend_name(name: str | BackendName) -> BackendName:
    try:
        return BackendName(name)
    except ValueError as err:
        choices = ", ".join(b.value for b in BackendName)
        raise RunError(f"unknown backend {name!r}", hint=f"choose one of {choices}") from err


def load_backend(name: str | BackendName) -> type[Backend]:
    module_name, _, class_name = BACKENDS[backend_name(name)].partition(":")
    backend: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend
