"""The local `dsdt` commands, as a user types them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from disdat_luigi import __version__, api


def test_help_lists_every_local_command(dsdt) -> None:  # type: ignore[no-untyped-def]
    """`dsdt --help` lists the commands with their help text."""
    proc = subprocess.run([sys.executable, "-m", "disdat_luigi.cli.main", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ["init", "context", "switch", "add", "ls", "cat", "commit", "rm", "lineage", "verify"]:
        assert f"    {command} " in proc.stdout


def test_version(dsdt) -> None:  # type: ignore[no-untyped-def]
    """`dsdt --version` prints the package version."""
    proc = subprocess.run([sys.executable, "-m", "disdat_luigi.cli.main", "--version"], capture_output=True, text=True)
    assert proc.stdout.strip() == f"disdat_luigi {__version__}"


def test_init_context_switch(dsdt, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """init is idempotent; context creates and lists; switch selects; -d deletes."""
    assert dsdt("init").code == 0
    assert dsdt("init").code == 0
    assert dsdt("context", "one").code == 0
    assert dsdt("context", "remote/two").code == 0
    assert dsdt("switch", "two").code == 0
    assert dsdt("context").out.splitlines() == ["  one", "* two"]
    assert dsdt("context", "-d", "one").code == 0
    assert dsdt("context").out.splitlines() == ["* two"]


def test_context_lists_the_remote_each_is_bound_to(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    assert dsdt("context", "local").code == 0
    listed = dsdt("context").out.splitlines()
    assert f"* {remote_ctx}  (remote: s3://{bucket}/team, context shared)" in listed and "  local" in listed


def test_add_ls_cat_commit_rm(dsdt, ctx: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The everyday loop: add a file, list it, print it, commit it, remove it."""
    src = tmp_path / "hello.txt"
    src.write_text("hello")
    added = dsdt("add", "greeting", str(src), "-t", "lang:en")
    assert added.code == 0
    uuid = added.out.strip()
    assert dsdt("ls").out.splitlines() == ["greeting"]
    verbose = dsdt("ls", "-v", "-p").out.splitlines()
    assert verbose[0].split() == ["NAME", "PROCESSING", "NAME", "OWNER", "CREATED", "STATE", "UUID"]
    assert len(verbose) == 2 and uuid in verbose[1] and '{"lang": "en"}' in verbose[1]
    assert dsdt("ls", "-t", "lang:fr").out == ""
    assert dsdt("ls", "--uncommitted").out.splitlines() == ["greeting"]
    printed = dsdt("cat", "greeting").out.strip()
    assert Path(printed).read_text() == "hello"
    assert dsdt("commit", "greeting").code == 0
    assert dsdt("ls", "-c").out.splitlines() == ["greeting"]
    assert dsdt("ls", "-v").out.splitlines()[1].split()[-2:] == ["committed", uuid]
    assert dsdt("ls", "--uncommitted").out == ""
    assert dsdt("ls", "-u", uuid).out.splitlines() == ["greeting"]
    assert dsdt("rm", "greeting").out.strip() == "removed 1 bundle(s)"
    assert dsdt("ls").out == ""


def test_commit_and_cat_without_a_bundle_say_what_to_pass(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """`dsdt commit` (or `cat`) naming no bundle says what to pass, not that no bundle has "those tags"."""
    api.Bundle(ctx, name="x", data=1)
    for command in ("commit", "cat"):
        result = dsdt(command)
        assert result.code == 1
        assert result.err.splitlines() == [
            f"dsdt {command}: no bundle was named: pass a bundle name (its newest version), -u UUID or -t key:value",
            "hint: list bundles with `dsdt ls` (from Python: bundle_name, uuid or tags)",
        ]
    assert dsdt("ls", "--uncommitted").out.splitlines() == ["x"]


def test_ls_flags(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """-l keeps the newest per name, -a prints parameters, -A/-B filter by date, globs match."""
    api.Bundle(ctx, name="x", data=1, params={"n": 1})
    api.Bundle(ctx, name="x", data=2, params={"n": 2})
    api.Bundle(ctx, name="y", data=3)
    assert dsdt("ls").out.splitlines() == ["y", "x", "x"]
    assert dsdt("ls", "-l").out.splitlines() == ["y", "x"]
    assert "params={'n': 2}" in dsdt("ls", "-a", "x").out.splitlines()[0]
    assert dsdt("ls", "-A", "2000-01-01").out.count("\n") == 3
    assert dsdt("ls", "-B", "01-01-2000").out == ""
    assert dsdt("ls", "x*").out.splitlines() == ["x", "x"]
    assert dsdt("ls", "-i").out == ""  # hand-made bundles are nobody's intermediates
    assert dsdt("ls", "-r").out == ""


def test_ls_latest_applies_the_filters_first(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """`ls -l` with a filter shows, per name, the newest bundle that matches it (not the newest
    bundle of the name when that one does not match); rows come newest first."""
    api.Bundle(ctx, name="x", data=1, tags={"keep": "yes"})
    api.Bundle(ctx, name="y", data=2, tags={"keep": "yes"})
    newest_x = api.Bundle(ctx, name="x", data=3)
    assert dsdt("ls", "-l").out.splitlines() == ["x", "y"]
    tagged = dsdt("ls", "-l", "-v", "-t", "keep:yes").out.splitlines()[1:]
    assert [row.split()[0] for row in tagged] == ["y", "x"] and newest_x.uuid not in "".join(tagged)
    assert dsdt("ls", "-l", "x").out.splitlines() == ["x"]
    assert dsdt("ls", "-l", "--uncommitted", "-t", "keep:no").out == ""


def test_cat_prints_whole_dataframes(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """cat prints every row and column of a DataFrame."""
    import pandas as pd

    api.Bundle(ctx, name="df", data=pd.DataFrame({"a": range(100), "b": ["x"] * 100}))
    out = dsdt("cat", "df").out
    assert len(out.splitlines()) == 101 and "99" in out


def test_rm_refuses_everything_without_all(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """`dsdt rm` with no name exits non-zero with a hint; `--all` removes everything."""
    api.Bundle(ctx, name="a", data=1)
    refused = dsdt("rm")
    assert refused.code == 1 and "--all" in refused.err
    assert len(api.search(ctx)) == 1
    assert dsdt("rm", "--all").code == 0 and api.search(ctx) == []


def test_lineage_text_and_dot(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """lineage prints an indented tree and a DOT graph with one edge per input."""
    a = api.Bundle(ctx, name="raw", data=1)
    b = api.Bundle(ctx, name="clean", data=2, dependencies={"source": a})
    text = dsdt("lineage", "clean").out.splitlines()
    assert text[0].startswith(f"clean {b.uuid}") and "source=raw" in text[0]
    assert text[1].startswith(f"  raw {a.uuid}")
    dot = dsdt("lineage", b.uuid, "--dot").out
    assert dot.startswith("digraph lineage {") and f'"{a.uuid}" -> "{b.uuid}" [label="source"]' in dot


def test_errors_are_one_line_with_hint(dsdt, disdat_env: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Bad input exits non-zero with one error line and a hint on stderr, no traceback."""
    no_context = dsdt("ls")
    assert no_context.code == 1
    assert no_context.err.splitlines() == [
        "dsdt ls: no current context is selected",
        "hint: create a context with `dsdt context NAME` and select it with `dsdt switch NAME`",
    ]
    dsdt("context", "c")
    dsdt("switch", "c")
    for args, message in [
        (("cat", "missing"), "no bundle with name 'missing'"),
        (("add", "x", str(tmp_path / "nope")), "no file or directory"),
        (("add", "a/b", __file__), "path separator"),
        (("ls", "-t", "novalue"), "is not KEY:VALUE"),
        (("ls", "-A", "last tuesday"), "cannot read the date"),
        (("switch", "ghost"), "no context named 'ghost'"),
        (("lineage", "ghost"), "no bundle with uuid or name"),
    ]:
        result = dsdt(*args)
        assert result.code == 1, args
        assert message in result.err.splitlines()[0], (args, result.err)
        assert "Traceback" not in result.err


def test_verbose_shows_traceback(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """--verbose adds the traceback to the one-line error."""
    result = dsdt("--verbose", "cat", "missing")
    assert result.code == 1 and "Traceback" in result.err


def test_missing_config_from_a_real_process(tmp_path: Path) -> None:
    """The installed entry point reports a missing config with the path and a hint."""
    env = {**os.environ, "DISDAT_CONFIG": str(tmp_path / "none.cfg"), "DISDAT_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "disdat_luigi.cli.main", "ls"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"dsdt ls: no disdat config at {tmp_path / 'none.cfg'}",
        "hint: run `dsdt init` (or set DISDAT_CONFIG to an existing disdat.cfg)",
    ]


def test_verify_reports_damage_and_exits_1(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """verify finds a changed file, says which bundle, and exits 1."""
    bundle = api.Bundle(ctx, name="v", data=b"y" * 10_000)
    assert dsdt("verify").code == 0
    damaged = next(Path(bundle.local_dir, "values").iterdir())
    damaged.write_bytes(b"z" * 10_000)
    result = dsdt("verify")
    assert result.code == 1 and f"DAMAGED {bundle.uuid}" in result.out and "sha256" in result.out
    assert "sha256" not in dsdt("verify", "--no-hash").out


def test_pipeline_parameters_are_never_taken_for_abbreviated_options(ctx: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`--n 2` after the class is the pipeline's parameter, although `--n` abbreviates `--no-build`."""
    result = dsdt("apply", "tests.functional.pipelines.Source", "--n", "2")
    assert result.code == 0, result.err
    assert api.get(ctx, "Source").data == [0, 1]


def test_a_pipelines_help_lists_its_parameters(ctx: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`dsdt apply CLASS --help` (and `dsdt run ... CLASS -h`) print the class's parameters with
    their type and default, and run nothing."""
    shown = dsdt("apply", "tests.functional.pipelines.HybridFit", "--help")
    assert shown.code == 0 and shown.out.splitlines() == [
        "tests.functional.pipelines.HybridFit parameters (--name value after the class):",
        "  --alpha INT  (required)",
        "  --rows INT  (default 20)",
    ]
    assert dsdt("run", "-", "-", "tests.functional.pipelines.HybridFit", "-h").out == shown.out
    assert dsdt("ls").out == ""
