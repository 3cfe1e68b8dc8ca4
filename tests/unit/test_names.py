"""Names that could escape a directory or act as wildcards are refused with a clear message."""

from __future__ import annotations

import pytest

from disdat_luigi.errors import InvalidName
from disdat_luigi.store.names import check_name, check_tags, split_context_name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("x..y", "'..'"),
        ("a\x00b", "NUL"),
        ("a*", "wildcard"),
        ("a?", "wildcard"),
        ("x" * 300, "longer than"),
        (5, "must be a string"),
    ],
)
def test_bad_names_are_refused(name: object, message: str) -> None:
    """Each unsafe name raises InvalidName naming the problem."""
    with pytest.raises(InvalidName, match=message):
        check_name(name)


def test_ordinary_and_unicode_names_pass() -> None:
    """Names with spaces, dots and non-ASCII text are fine."""
    for name in ["model v1.2", "données", "a.b-c_d", "数据"]:
        assert check_name(name) == name


def test_tags_must_be_text() -> None:
    """Tag values must be strings and keys must be valid names."""
    assert check_tags({"k": "v"}) == {"k": "v"}
    with pytest.raises(InvalidName, match="string value"):
        check_tags({"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidName, match="tag key"):
        check_tags({"a/b": "v"})
    with pytest.raises(InvalidName, match="NUL"):
        check_tags({"k": "v\x00"})


def test_remote_slash_local_context_names() -> None:
    """`remote/local` splits into its two parts; a plain name has no remote part."""
    assert split_context_name("shared/mine") == ("shared", "mine")
    assert split_context_name("mine") == (None, "mine")
    with pytest.raises(InvalidName):
        split_context_name("shared/")
