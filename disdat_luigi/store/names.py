"""Validation of user-chosen names (contexts, bundles, tags) before they touch a path or a query."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from disdat_luigi.errors import InvalidName

MAX_NAME_LENGTH = 255
GLOB_CHARS = ("*", "?")
# shown as escapes by `printable`: control characters, invisible format characters (bidirectional
# overrides, zero-width spaces), line and paragraph separators, lone surrogates (not encodable)
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x7e]")
_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def check_name(name: object, what: str = "bundle name") -> str:
    """Return `name` if it is safe as a single directory entry and an exact-match key."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string, not {type(name).__name__}")
    if not name or not name.strip():
        raise InvalidName(f"{what} is empty")
    if "\x00" in name:
        raise InvalidName(f"{what} {name!r} contains a NUL character")
    if has_control(name):
        raise InvalidName(f"{what} {name!r} contains a control character (newline, escape, ...)")
    if "/" in name or "\\" in name:
        raise InvalidName(f"{what} {name!r} contains a path separator")
    if name in (".", "..") or ".." in name:
        raise InvalidName(f"{what} {name!r} contains '..'")
    if any(c in name for c in GLOB_CHARS):
        raise InvalidName(f"{what} {name!r} contains a wildcard ('*' or '?'), reserved for searches")
    if len(name.encode("utf-8")) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} {name[:40]!r}... is longer than {MAX_NAME_LENGTH} bytes")
    return name


def check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """Tags are str -> str; keys follow the name rules, values may be any text without NUL."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidName(f"tags must be a dict of str to str, not {type(tags).__name__}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        check_name(key, "tag key")
        if not isinstance(value, str):
            raise InvalidName(f"tag {key!r} must have a string value, not {type(value).__name__}")
        if "\x00" in value:
            raise InvalidName(f"tag {key!r} has a value containing a NUL character")
        if has_control(value):
            raise InvalidName(f"tag {key!r} has a value {value!r} containing a control character")
        checked[key] = value
    return checked


def has_control(text: str) -> bool:
    """Whether `text` holds a control character (newline, tab, ANSI escape, DEL, C1 codes), which
    could forge lines or colours in a terminal listing."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def printable(text: str, keep: str = "") -> str:
    """`text` safe to show in a terminal: every control character (escape, carriage return, tab and
    newline unless in `keep`), invisible format character and lone surrogate written as a visible
    escape such as \\x1b or \\u202e; everything else, non-ASCII letters included, unchanged."""
    if text.isprintable():
        return text

    def shown(match: re.Match[str]) -> str:
        char = match.group()
        if char in keep or unicodedata.category(char) not in HIDDEN_CATEGORIES:
            return char
        if char in _SHORT_ESCAPES:
            return _SHORT_ESCAPES[char]
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return _NOT_PLAIN_ASCII.sub(shown, text)


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARS)


def split_context_name(context_name: str) -> tuple[str | None, str]:
    """`remote/local` -> ('remote', 'local'); `local` -> (None, 'local')."""
    if not isinstance(context_name, str):
        raise InvalidName(f"context name must be a string, not {type(context_name).__name__}")
    remote, sep, local = context_name.rpartition("/")
    if not sep:
        return None, check_name(context_name, "context name")
    return check_name(remote, "remote context name"), check_name(local, "context name")
