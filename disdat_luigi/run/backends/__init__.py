"""Run backends by name; each is imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

from disdat_luigi.errors import RunError

BACKENDS = {
    "Local": "disdat_luigi.run.backends.local:LocalBackend",
    "AWSBatch": "disdat_luigi.run.backends.batch:BatchBackend",
}


def load_backend(name: str) -> Any:
    try:
        module_name, _, class_name = BACKENDS[name].partition(":")
    except KeyError as err:
        raise RunError(f"unknown backend {name!r}", hint=f"choose one of {', '.join(BACKENDS)}") from err
    return getattr(importlib.import_module(module_name), class_name)
