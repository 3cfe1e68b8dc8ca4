"""Small hardening: manifest text never reaches the terminal raw, a task that calls sys.exit has
failed, non-finite config numbers are refused (a byte-order mark is not), symbolic link loops
given to `add` are one-line errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
import luigi
import pytest

from disdat_luigi import api
from disdat_luigi.config import load_settings
from disdat_luigi.errors import ApplyError, ConfigError, PathNotFound, UnsupportedValue
from disdat_luigi.pipe import PipeTask
from disdat_luigi.store.names import printable
from tests.functional.test_hostile_manifests import _doc

HERE = "tests.functional.test_small_hardening"
APPLY_HINT = "hint: bundles of the tasks that finished are kept; fix the error and apply again to resume"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")  # ESC, BEL, the one-byte CSI, a right-to-left override


# --- manifests -----------------------------------------------------------------------------


def _plant(bucket: str, uuid: str, doc: dict[str, Any], catalog_name: str = "evil") -> None:
    client = boto3.client("s3")
    prefix = f"team/context/shared/objects/{uuid}/"
    client.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=json.dumps(doc).encode())
    for entry in doc["files"]:
        client.put_object(Bucket=bucket, Key=prefix + entry["path"], Body=b"hello")
    client.put_object(Bucket=bucket, Key=f"team/context/shared/catalog/{catalog_name}/{uuid}", Body=b"")


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _fresh(bucket: str) -> str:
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    api.switch("fresh")
    return "fresh"


def _no_raw(*texts: str) -> bool:
    return not any(raw in text for text in texts for raw in RAW)


REFUSED = {
    "name": ({"name": "x\x1b[2J"}, "has a name with control characters: 'x\\x1b[2J'"),
    "forged line": ({"name": f"ok\nevil {_uuid(99)}"}, "has a name with control characters"),
    "owner": ({"owner": "\x1b]0;pwned\x07"}, "has a owner with control characters"),
    "tag value": ({"tags": {"k": "v\x9b2J"}}, "has a value of tag 'k' with control characters"),
    "dependency name": (
        {"dependencies": [{"name": "up\x1b[2J", "uuid": _uuid(0), "arg_name": "a"}]},
        "has a dependency name with control characters: 'up\\x1b[2J'",
    ),
    "argument name": (
        {"dependencies": [{"name": "up", "uuid": _uuid(0), "arg_name": "a\x1b]0;pwned\x07"}]},
        "has a dependency argument name with control characters: 'a\\x1b]0;pwned\\x07'",
    ),
}


def test_control_characters_in_names_are_refused_on_pull(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Names, owners, tags, dependency and argument names with control characters are skipped by a
    pull, each named with its reason (escaped), and nothing raw reaches stdout or stderr."""
    for i, (changes, _) in enumerate(REFUSED.values(), start=1):
        _plant(bucket, _uuid(i), {**_doc(_uuid(i), "evil"), **changes})
    _fresh(bucket)
    pulled = dsdt("pull", "-l")
    assert pulled.code == 1 and "unexpected" not in pulled.err
    for i, (_, reason) in enumerate(REFUSED.values(), start=1):
        assert f"skipped {_uuid(i)}: manifest s3://{bucket}/team/context/shared/objects/{_uuid(i)}/" in pulled.err
        assert reason in pulled.err
    assert _no_raw(pulled.out, pulled.err) and "\nevil " not in pulled.out
    assert api.search("fresh") == []


def test_manifest_text_is_printed_escaped(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """What a manifest may hold (SQL parameters, text data, an owner with a right-to-left override)
    is shown by ls, cat, lineage and pull with its control characters as visible escapes."""
    up = api.Bundle(remote_ctx, name="up", data=1).commit()
    api.push(remote_ctx)
    sql = {"t": "dict", "items": [[{"t": "str", "v": "query"}, {"t": "str", "v": "SELECT 1\n\x1b[2J"}]]}
    text = {"t": "str", "v": "line one\nline two\x1b]0;pwned\x07"}
    doc = _doc(
        _uuid(1),
        "evil\u202eexe.txt",
        owner="mal\u202elory",
        params=sql,
        data=text,
        files=[],
        dependencies=[{"name": "up", "uuid": up.uuid, "arg_name": "source"}],
    )
    _plant(bucket, _uuid(1), doc)
    _fresh(bucket)
    pulled = dsdt("pull")
    assert pulled.code == 0, pulled.err
    assert f"evil\\u202eexe.txt {_uuid(1)}" in pulled.out.splitlines()
    listed = dsdt("ls", "-v", "-a", "-p")
    assert listed.code == 0, listed.err
    row = next(line for line in listed.out.splitlines() if _uuid(1) in line)
    assert row.startswith("evil\\u202eexe.txt ") and " mal\\u202elory " in row
    assert "params={'query': 'SELECT 1\\n\\x1b[2J'}" in row
    shown = dsdt("cat", "-u", _uuid(1))
    assert (shown.code, shown.out) == (0, "line one\nline two\\x1b]0;pwned\\x07\n")
    lineage = dsdt("lineage", _uuid(1))
    assert lineage.code == 0 and lineage.out.splitlines()[0].startswith(f"evil\\u202eexe.txt {_uuid(1)} ")
    dot = dsdt("lineage", "--dot", _uuid(1))
    assert dot.code == 0 and '[label="evil\\\\u202eexe.txt\\n00000000"]' in dot.out
    everything = [r.out + r.err for r in (pulled, listed, shown, lineage, dot)]
    assert _no_raw(*everything)


def test_printable_keeps_text_readable() -> None:
    """Plain text, non-ASCII letters and (when kept) newlines and tabs pass; the rest is escaped."""
    assert printable("données 名前 ü") == "données 名前 ü"
    assert printable("a\x1b[2Jb\x07\x9b\x7f") == "a\\x1b[2Jb\\x07\\x9b\\x7f"
    assert printable("SELECT\n\t1\r") == "SELECT\\n\\t1\\r"
    assert printable("SELECT\n\t1\r", keep="\n\t") == "SELECT\n\t1\\r"
    assert printable("x\u202ey\u200b\u2028\ud800") == "x\\u202ey\\u200b\\u2028\\ud800"


# --- a task that calls sys.exit ------------------------------------------------------------


class Exits(PipeTask):
    code = luigi.IntParameter(default=0)

    def pipe_run(self):
        sys.exit(self.code)


class AfterExit(PipeTask):
    def pipe_requires(self):
        self.add_dependency("first", Exits, {"code": 3})

    def pipe_run(self, first):
        return first


class Interrupted(PipeTask):
    def pipe_run(self):
        raise KeyboardInterrupt


def _leftovers(ctx: str) -> list[Path]:
    return list((Path(api._store().root) / "context" / ctx / "tmp").iterdir())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_dsdt_apply_of_a_task_that_exits_fails(dsdt, ctx: str, workers: str) -> None:  # type: ignore[no-untyped-def]
    """`sys.exit(0)` in pipe_run is a failed task, in this process and in luigi's workers: exit 1,
    one line naming the task and its exit code, no bundle."""
    ran = dsdt("apply", "-w", workers, f"{HERE}.Exits")
    assert ran.code == 1
    assert ran.err.splitlines() == [
        "dsdt apply: Exits(code=0) failed: SystemExit: the task called sys.exit(0) instead of returning",
        APPLY_HINT,
    ]
    assert api.search(ctx) == [] and _leftovers(ctx) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_api_apply_upstream_exit_is_an_apply_error(ctx: str, workers: int) -> None:
    """An upstream task that exits with code 3 fails the apply with ApplyError; its downstream never runs."""
    with pytest.raises(ApplyError) as caught:
        api.apply(ctx, AfterExit, workers=workers)
    assert type(caught.value) is ApplyError
    assert str(caught.value) == "Exits(code=3) failed: SystemExit: the task called sys.exit(3) instead of returning"
    assert caught.value.result == {"success": False, "did_work": False}
    assert api.search(ctx) == [] and _leftovers(ctx) == []


def test_keyboard_interrupt_still_interrupts(ctx: str) -> None:
    """Ctrl-C in a task interrupts the apply (it is not turned into a failed task); no bundle is left."""
    with pytest.raises(KeyboardInterrupt):
        api.apply(ctx, Interrupted)
    assert api.search(ctx) == [] and _leftovers(ctx) == []


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("poll_seconds", "nan"), ("memory_retry_factor", "inf"), ("poll_seconds", "-inf"), ("poll_seconds", "1e999")],
)
def test_non_finite_config_numbers_are_refused(dsdt, ctx: str, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """nan and inf are one-line ConfigErrors naming the file, section and key."""
    path = Path(os.environ["DISDAT_CONFIG"])
    path.write_text(f"[core]\n[run]\n{key} = {value}\n")
    message = f"{path}: [run] {key} must be a finite number, not {value!r}"
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert type(caught.value) is ConfigError and str(caught.value) == message
    listed = dsdt("ls")
    assert (listed.code, listed.err.splitlines()) == (1, [f"dsdt ls: {message}", f"hint: fix line 3 of {path}"])


def test_config_with_a_byte_order_mark_is_read(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A config saved with a UTF-8 byte-order mark (Windows editors) is read as written."""
    path = Path(os.environ["DISDAT_CONFIG"])
    path.write_bytes(b"\xef\xbb\xbf[core]\r\nignore_code_version = true\r\n[run]\r\npoll_seconds = 2.5\r\n")
    settings = load_settings()
    assert settings.ignore_code_version is True and settings.run.poll_seconds == 2.5
    assert dsdt("ls").code == 0


# --- symbolic link loops given to add --------------------------------------------------------


@pytest.mark.parametrize("follow", [[], ["--follow-links"]], ids=["plain", "follow-links"])
def test_add_of_a_directory_with_a_link_loop(dsdt, ctx: str, tmp_path: Path, follow: list[str]) -> None:  # type: ignore[no-untyped-def]
    """A link loop inside the directory is one line naming it (UnsupportedValue from Python); nothing is added."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data.txt").write_text("x")
    (tree / "loop").symlink_to("loop")
    added = dsdt("add", *follow, "model", str(tree))
    assert (added.code, added.err.splitlines()) == (
        1,
        [f"dsdt add: {tree}/loop is a symbolic link loop (to loop)", "hint: remove or fix it"],
    )
    with pytest.raises(UnsupportedValue) as caught:
        api.add(ctx, "model", tree, follow_links=bool(follow))
    assert type(caught.value) is UnsupportedValue
    assert api.search(ctx) == [] and _leftovers(ctx) == []


def test_add_of_a_link_loop_itself(dsdt, ctx: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A path that is itself a link loop is a one-line PathNotFound naming it."""
    (tmp_path / "self").symlink_to("self")
    added = dsdt("add", "model", str(tmp_path / "self"))
    assert added.code == 1 and added.err.splitlines()[0] == f"dsdt add: no file or directory at {tmp_path / 'self'}"
    with pytest.raises(PathNotFound):
        api.add(ctx, "model", tmp_path / "self")
