"""Argument helpers shared by the command groups."""

from __future__ import annotations

import argparse

from disdat_luigi.errors import InvalidName


def add_tag_option(parser: argparse.ArgumentParser, help_text: str = "only bundles with this tag") -> None:
    parser.add_argument(
        "-t", "--tag", action="append", default=[], metavar="KEY:VALUE", help=f"{help_text} (repeatable)"
    )


def parse_tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise InvalidName(f"tag {pair!r} is not KEY:VALUE", hint="write tags as -t key:value")
        tags[key] = value
    return tags


def pipeline_help(pipe_cls: str, pipe_args: list[str]) -> bool:
    """`dsdt apply CLASS --help`: print the pipeline's parameters; True when it was asked for."""
    if "--help" not in pipe_args and "-h" not in pipe_args:
        return False
    from disdat_luigi.apply.loader import describe_params, load_pipe_class

    cls = load_pipe_class(pipe_cls)
    lines = describe_params(cls)
    print(f"{cls.__module__}.{cls.__qualname__} parameters (--name value after the class):")
    print("\n".join(lines) if lines else "  (none)")
    return True


def current_context() -> str:
    """The current context's name, or NoCurrentContext with a hint."""
    from disdat_luigi import api

    name = api.current_context()
    if name is None:
        raise api.NoCurrentContext("no current context is selected")
    if name not in api.ls_contexts():
        raise api.ContextError(
            f"the current context {name!r} no longer exists", hint="select another one with `dsdt switch NAME`"
        )
    return name
