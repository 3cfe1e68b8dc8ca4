"""Code version capture: commit, branch, remote, an exact dirty flag, and its effect on reuse."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.util.codeversion import capture

MODULE = """
import luigi
from disdat_luigi.pipe import PipeTask

class Versioned(PipeTask):
    def pipe_run(self):
        return "v"
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git work tree holding the module `vpipes`, importable."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    _git(repo, "remote", "add", "origin", "https://git.example.invalid/team/pipes.git")
    (repo / "vpipes.py").write_text(MODULE)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    monkeypatch.syspath_prepend(str(repo))
    sys.modules.pop("vpipes", None)
    return repo


def test_capture_reads_git(repo: Path) -> None:
    """Commit (decoded text), branch, remote URL and a clean/dirty flag with a diff hash."""
    clean = capture(repo)
    assert clean is not None
    assert clean.commit == _git(repo, "rev-parse", "HEAD") and clean.branch == "main"
    assert clean.repo == "https://git.example.invalid/team/pipes.git"
    assert clean.dirty is False and clean.version == clean.commit
    (repo / "vpipes.py").write_text(MODULE + "\n# edit\n")
    dirty = capture(repo)
    assert dirty is not None and dirty.dirty is True and dirty.version.startswith(clean.commit + "+")
    (repo / "vpipes.py").write_text(MODULE + "\n# another edit\n")
    assert capture(repo).version != dirty.version  # type: ignore[union-attr]


def test_capture_outside_git_and_from_the_environment(tmp_path: Path) -> None:
    """No repository gives None; DISDAT_GIT_* variables (set in images) stand in for git."""
    assert capture(tmp_path) is None
    env = {"DISDAT_GIT_COMMIT": "abc", "DISDAT_GIT_BRANCH": "b", "DISDAT_GIT_DIRTY": "true", "DISDAT_IMAGE_TAG": "t1"}
    version = capture(tmp_path, env)
    assert version is not None and (version.commit, version.branch, version.dirty, version.image) == (
        "abc",
        "b",
        True,
        "t1",
    )


def test_code_change_reruns_unless_ignored(ctx: str, repo: Path, disdat_env: Path) -> None:
    """A new commit (or uncommitted edit) re-runs the task; ignore_code_version keeps the old bundle."""
    module = importlib.import_module("vpipes")
    api.apply(ctx, module.Versioned)
    bundle = api.get(ctx, "Versioned")
    assert bundle.git_info["commit"] == _git(repo, "rev-parse", "HEAD")
    assert bundle.git_info["dirty"] is False and bundle.git_info["branch"] == "main"
    assert api.apply(ctx, module.Versioned)["did_work"] is False

    (repo / "vpipes.py").write_text(MODULE + "\n# tweak\n")
    (decision,) = api.explain(ctx, module.Versioned)
    assert decision.reason.startswith("code changed: ")
    _git(repo, "commit", "-qam", "two")
    api.apply(ctx, module.Versioned)
    assert api.get(ctx, "Versioned").git_info["commit"] == _git(repo, "rev-parse", "HEAD")

    cfg = disdat_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace("ignore_code_version = false", "ignore_code_version = true"))
    (repo / "vpipes.py").write_text(MODULE + "\n# three\n")
    _git(repo, "commit", "-qam", "three")
    assert api.apply(ctx, module.Versioned)["did_work"] is False
