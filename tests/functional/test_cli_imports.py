"""Commands that run no pipeline start light: no luigi, pandas, numpy, pyarrow or docker until
a value or a command needs them (each is a tenth of a second or more of every start)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from disdat_luigi import api

HEAVY = ("luigi", "pandas", "numpy", "pyarrow", "docker", "tqdm")
PROBE = (
    "import json, sys\n"
    "from disdat_luigi.cli.main import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exit:\n"
    "    code = exit.code\n"
    f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
    "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
)


def _run(*args: str) -> tuple[int, list[str], str]:
    """`dsdt ARGS` in a fresh interpreter: its exit code, the heavy modules it imported, its stdout."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return int(report["code"] or 0), report["heavy"], proc.stdout


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("--version",), "disdat_luigi "),
        (("ls",), "n"),
        (("ls", "-l"), "n"),
        (("ls", "-v"), "NAME"),
        (("cat", "n"), "3"),
    ],
)
def test_local_commands_import_nothing_heavy(ctx: str, args: tuple[str, ...], shown: str) -> None:
    """`--version`, `ls` (every form) and `cat` of a plain value run without the heavy modules."""
    api.Bundle(ctx, name="n", data=3)
    code, heavy, out = _run(*args)
    assert code == 0 and heavy == [] and out.startswith(shown)


def test_push_and_pull_import_nothing_heavy(remote_ctx: str, bucket: str) -> None:
    """`push` and `pull` of metadata bundles need S3 (boto3), nothing of the pipeline layers."""
    for i in range(3):
        api.Bundle(remote_ctx, name="n", data=i).commit()
    for args in (("push",), ("pull",), ("pull", "n")):
        code, heavy, _ = _run(*args)
        assert code == 0 and heavy == [], args


def test_cat_of_a_dataframe_still_imports_pandas(ctx: str) -> None:
    """The modules stay importable on demand: `cat` of a DataFrame brings pandas in and prints it."""
    import pandas as pd

    api.Bundle(ctx, name="frame", data=pd.DataFrame({"a": [1, 2]}))
    code, heavy, out = _run("cat", "frame")
    assert code == 0 and "pandas" in heavy and out.split() == ["a", "0", "1", "1", "2"]
