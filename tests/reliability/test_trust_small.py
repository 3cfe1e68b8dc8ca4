"""Reliability rows for small hardening: planted terminal control sequences, tasks that call
sys.exit, non-finite config numbers and byte-order marks, symbolic link loops given to `add`."""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any

import boto3
import luigi

from disdat_luigi import api
from disdat_luigi.config import load_settings
from disdat_luigi.errors import ApplyError, ConfigError
from disdat_luigi.pipe import PipeTask
from tests.functional.test_hostile_manifests import _doc

# what a planted manifest may try to send to a terminal
SEQUENCES = {
    "clear screen": "\x1b[2J",
    "window title (OSC)": "\x1b]0;pwned\x07",
    "one-byte CSI": "\x9b31m",
    "carriage return": "\rforged",
    "backspaces": "\x08\x08\x08",
    "DEL": "\x7f",
    "right-to-left override": "\u202e",
    "zero-width space": "\u200b",
    "line separator": "\u2028",
}


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _raw(text: str, allowed: str = "\n") -> list[str]:
    """The control and invisible characters in `text` other than `allowed`."""
    return [c for c in text if c not in allowed and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


def test_planted_control_sequences_never_reach_the_terminal(ledger, dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Each sequence planted in every text field of a manifest: a pull refuses the names that may
    not hold it and brings the rest; pull, ls -v -a -p, cat, lineage and lineage --dot print
    nothing raw (stderr's progress bar may rewrite its own line) and fail in no unexpected way."""
    client = boto3.client("s3")
    up = api.Bundle(remote_ctx, name="up", data=1).commit()
    api.push(remote_ctx)
    planted: list[str] = []
    for i, seq in enumerate(SEQUENCES.values()):
        text = {"t": "str", "v": f"text{seq}"}
        fields: list[dict[str, Any]] = [
            {"name": f"n{seq}"},
            {"processing_name": f"p{seq}"},
            {"owner": f"o{seq}"},
            {"tags": {f"k{seq}": "v", "k": f"v{seq}"}},
            {"dependencies": [{"name": f"up{seq}", "uuid": up.uuid, "arg_name": "a"}]},
            {"dependencies": [{"name": "up", "uuid": up.uuid, "arg_name": f"a{seq}"}]},
            {"params": {"t": "dict", "items": [[{"t": "str", "v": f"q{seq}"}, text]]}},
            {"data": text, "files": []},
        ]
        for j, changes in enumerate(fields):
            uuid = _uuid(100 * i + j)
            doc = {**_doc(uuid, "planted"), **changes}
            prefix = f"team/context/shared/objects/{uuid}/"
            client.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=json.dumps(doc).encode())
            client.put_object(Bucket=bucket, Key=prefix + "data/hello.txt", Body=b"hello")
            client.put_object(Bucket=bucket, Key=f"team/context/shared/catalog/planted/{uuid}", Body=b"")
            planted.append(uuid)
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    api.switch("fresh")
    failures: list[str] = []
    runs = [("pull", "-l"), ("ls", "-v", "-a", "-p"), ("ls", "-p", "planted")]
    pulled: set[str] = set()
    trials = 0
    for args in runs:
        result = dsdt(*args)
        trials += 1
        pulled |= {b.uuid for b in api.search("fresh")}
        if result.code not in (0, 1) or "unexpected" in result.err:
            failures.append(f"{args}: exit {result.code}: {result.err[-200:]!r}")
        raw = _raw(result.out) + _raw(result.err, allowed="\n\r")
        if raw:
            failures.append(f"{args} printed {sorted(set(raw))!r}")
    for uuid in sorted(pulled - {up.uuid}):
        for args in (("cat", "-u", uuid), ("lineage", uuid), ("lineage", "--dot", uuid)):
            result = dsdt(*args)
            trials += 1
            raw = _raw(result.out, allowed="\n\t")
            if result.code != 0 or raw or result.err:
                failures.append(f"{args}: exit {result.code}, raw {raw!r}, {result.err!r}")
    if not pulled - {up.uuid}:
        failures.append("nothing planted was pulled: the escaping went untested")
    ledger.record(
        "planted terminal control sequences",
        trials,
        len(failures),
        f"{len(SEQUENCES)} sequences x {len(planted) // len(SEQUENCES)} manifest fields; names refused on pull, "
        "everything printed (pull, ls, cat, lineage) escaped",
    )
    assert not failures, failures


class Exits(PipeTask):
    how = luigi.Parameter(default="0")

    def pipe_run(self):
        sys.exit(None if self.how == "none" else int(self.how) if self.how.isdigit() else self.how)


class Downstream(PipeTask):
    how = luigi.Parameter(default="0")

    def pipe_requires(self):
        self.add_dependency("first", Exits, {"how": self.how})

    def pipe_run(self, first):
        return first


def test_tasks_that_exit_fail_the_apply(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """sys.exit with 0, 1, 3, no code or a message, in the root or upstream, with 1 or 2 workers:
    always ApplyError naming the task and the code, no bundle, no leftover."""
    failures: list[str] = []
    trials = 0
    tmp = Path(api._store().root) / "context" / ctx / "tmp"
    for how, shown in (("0", "0"), ("1", "1"), ("3", "3"), ("none", ""), ("bye", "bye")):
        for cls in (Exits, Downstream):
            for workers in (1, 2):
                trials += 1
                wanted = f"Exits(how={how}) failed: SystemExit: the task called sys.exit({shown}) instead of returning"
                try:
                    api.apply(ctx, cls, params={"how": how}, workers=workers)
                    failures.append(f"{cls.__name__} how={how} w={workers}: apply succeeded")
                except ApplyError as err:
                    if str(err) != wanted:
                        failures.append(f"{cls.__name__} how={how} w={workers}: {err}")
                if api.search(ctx) or list(tmp.iterdir()):
                    failures.append(f"{cls.__name__} how={how} w={workers}: a bundle or a draft was left")
    ledger.record(
        "tasks that call sys.exit",
        trials,
        len(failures),
        "5 exit codes x root/upstream x 1/2 workers: ApplyError naming task and code, nothing left",
    )
    assert not failures, failures


NON_FINITE = ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "1e999", "-1e999"]


def test_config_numbers_and_byte_order_marks(ledger, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """Every float key refuses each non-finite spelling naming file, section and key; configs with a
    byte-order mark (LF or CRLF) are read as written."""
    path = Path(os.environ["DISDAT_CONFIG"])
    failures: list[str] = []
    trials = 0
    for key in ("poll_seconds", "memory_retry_factor"):
        for value in NON_FINITE:
            trials += 1
            path.write_text(f"[run]\n{key} = {value}\n")
            try:
                load_settings()
                failures.append(f"{key} = {value} accepted")
            except ConfigError as err:
                if str(err) != f"{path}: [run] {key} must be a finite number, not {value!r}":
                    failures.append(f"{key} = {value}: {err}")
    for newline in ("\n", "\r\n"):
        trials += 1
        text = newline.join(["[core]", "ignore_code_version = true", "[run]", "poll_seconds = 0.5", ""])
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        try:
            settings = load_settings()
            if not (settings.ignore_code_version and settings.run.poll_seconds == 0.5):
                failures.append(f"BOM with {newline!r}: values lost")
        except ConfigError as err:
            failures.append(f"BOM with {newline!r}: {err}")
    ledger.record(
        "config numbers and byte-order marks",
        trials,
        len(failures),
        "nan/inf spellings refused naming file, section and key; BOM configs read",
    )
    assert not failures, failures


def test_symlink_loops_given_to_add(ledger, dsdt, ctx: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Loops of one, two and three links, at the top or nested, with and without --follow-links:
    a one-line error naming a path, never an unexpected error, nothing added."""
    failures: list[str] = []
    trials = 0
    shapes = {
        "self": [("loop", "loop")],
        "pair": [("a", "b"), ("b", "a")],
        "triple": [("a", "b"), ("b", "c"), ("c", "a")],
        "nested": [("sub/x", "x")],
        "through a directory": [("sub/x", "../sub/x")],
    }
    for label, links in shapes.items():
        tree = tmp_path / label.replace(" ", "-")
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "data.txt").write_text("x")
        for link, target in links:
            (tree / link).symlink_to(target)
        for path in (tree, tree / links[0][0]):
            for follow in ([], ["--follow-links"]):
                trials += 1
                added = dsdt("add", *follow, "model", str(path))
                lines = added.err.splitlines()
                if added.code != 1 or len(lines) != 2 or "unexpected" in added.err or str(tree) not in lines[0]:
                    failures.append(f"{label} {path.name} {follow}: exit {added.code}: {added.err!r}")
    if api.search(ctx):
        failures.append("a bundle was added")
    ledger.record(
        "symbolic link loops given to add",
        trials,
        len(failures),
        "5 loop shapes, the directory or the loop itself, with/without --follow-links: one line naming the path",
    )
    assert not failures, failures
