"""Find a PipeTask class by its dotted name and turn parameter text into typed values."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import luigi

from disdat_luigi.apply.identity import HIDDEN_PARAMS
from disdat_luigi.errors import ParameterError, PipeClassNotFound

# options of `dsdt apply`/`dsdt run` a user may write after the class by mistake
DSDT_OPTIONS = frozenset(
    {"explain", "code", "force", "force-all", "workers", "executor", "no-build", "localize", "env", "secret",
     "incremental-push", "incremental-pull", "central-scheduler", "output-bundle", "output-tag", "input", "backend",
     "wait", "detach", "queue", "vcpus", "memory"}
)  # fmt: skip


def load_pipe_class(transform: Any) -> type:
    """`transform` may be the class itself or `package.module.ClassName` (importable from the
    current directory or the installed packages)."""
    from disdat_luigi.apply.task import PipeTask

    if isinstance(transform, type):
        cls = transform
    else:
        module_name, _, class_name = str(transform).rpartition(".")
        if not module_name:
            raise PipeClassNotFound(f"{transform!r} is not a dotted path like module.submodule.ClassName")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise PipeClassNotFound(f"cannot import module {module_name!r} for {transform}: {err}") from err
        found = getattr(module, class_name, None)
        if found is None:
            raise PipeClassNotFound(f"module {module_name!r} has no class {class_name!r}")
        cls = found
    if not (isinstance(cls, type) and issubclass(cls, PipeTask)):
        raise PipeClassNotFound(f"{transform} is not a PipeTask subclass", hint="subclass disdat_luigi.pipe.PipeTask")
    return cls


def _parameters(cls: type) -> dict[str, luigi.Parameter]:
    return {name: param for name, param in cls.get_params() if name not in HIDDEN_PARAMS}  # type: ignore[attr-defined]


def describe_params(cls: type) -> list[str]:
    """One line per parameter of the pipeline class: `--name TYPE`, its default, its description."""
    lines = []
    for name, param in sorted(_parameters(cls).items()):
        kind = type(param).__name__.removesuffix("Parameter").lower() or "text"
        default = param._default  # luigi keeps it there; _no_value when the parameter is required
        shown = "required" if default is luigi.parameter._no_value else f"default {param.serialize(default)}"
        described = f"  {param.description}" if param.description else ""
        lines.append(f"  --{name.replace('_', '-')} {kind.upper()}  ({shown}){described}")
    return lines


def coerce_params(cls: type, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check names against the class's parameters; text for non-text parameters is parsed
    with that parameter's own parser (lists, dicts, dates, bools...)."""
    known = _parameters(cls)
    typed: dict[str, Any] = {}
    for name, value in (params or {}).items():
        key = name.replace("-", "_")
        if key not in known:
            raise ParameterError(
                f"{cls.__name__} has no parameter {name!r}",
                hint=f"its parameters are: {', '.join(sorted(known)) or '(none)'}",
            )
        param = known[key]
        if isinstance(value, str) and type(param) is not luigi.Parameter:
            try:
                value = param.parse(value)
            except Exception as err:  # each luigi parser raises its own kind of error
                raise ParameterError(f"--{key.replace('_', '-')} {value!r}: {err}") from err
        typed[key] = value
    return typed


def parse_cli_params(cls: type, tokens: Sequence[str]) -> dict[str, Any]:
    """`--name value` / `--name=value` pairs (a bare `--flag` sets a BoolParameter) to typed values."""
    known = _parameters(cls)
    raw: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or token == "--":
            raise ParameterError(
                f"unexpected argument {token!r} after the pipe class",
                hint="pass pipeline parameters as --name value; dsdt's options (-o, -f, -ot...) go before the class",
            )
        name, has_value, value = token[2:].partition("=")
        key = name.replace("-", "_")
        param = known.get(key)
        if param is None:
            listed = ", ".join("--" + n.replace("_", "-") for n in sorted(known)) or "(none)"
            hint = f"its parameters are: {listed}"
            if name in DSDT_OPTIONS:
                hint += f"; dsdt's own --{name} goes before the class (dsdt apply --{name} {cls.__name__} ...)"
            raise ParameterError(f"{cls.__name__} has no parameter --{name}", hint=hint)
        if not has_value:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if isinstance(param, luigi.BoolParameter) and (following is None or following.startswith("--")):
                value = "true"
            elif following is None:
                raise ParameterError(f"--{name} needs a value")
            else:
                value = following
                index += 1
        raw[key] = value
        index += 1
    return coerce_params(cls, raw)
