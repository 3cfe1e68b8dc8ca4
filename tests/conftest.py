"""Shared fixtures: every test gets its own store and config through environment variables."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def disdat_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DISDAT_HOME and DISDAT_CONFIG, initialised."""
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISDAT_CONFIG", str(tmp_path / "config" / "disdat.cfg"))
    api.init()
    return tmp_path


@pytest.fixture
def ctx(disdat_env: Path) -> str:
    """A context named 'test', made current."""
    api.context("test")
    api.switch("test")
    return "test"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def dsdt(capsys: pytest.CaptureFixture[str]):
    """Run `dsdt ARGS...` in-process and return its exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_python(
    code: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a child process (for crash and concurrency tests)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
