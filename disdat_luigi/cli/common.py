"""Argument helpers shared by the command groups."""

from __future__ import annotations

import argparse
from datetime import datetime

from disdat_luigi.errors import DisdatError, InvalidName

DATE_FORMATS = ("%m-%d-%Y", "%m-%d-%Y %H:%M:%S")


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


def parse_date(text: str) -> datetime:
    """ISO 8601, or Disdat's '12-31-2020' / '12-31-2020 13:40:30' (local time when no zone)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise DisdatError(f"cannot read the date {text!r}", hint="use 2020-12-31, '2020-12-31 13:40:30' or 12-31-2020")


def current_context() -> str:
    """The current context's name, or NoCurrentContext with a hint."""
    from disdat_luigi.store.resolve import open_store

    return open_store().current_context().name
