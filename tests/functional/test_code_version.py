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


FEATURES = """
from disdat_luigi.pipe import PipeTask

class Features(PipeTask):
    def pipe_run(self):
        return [1, 2, 3]
"""

MODEL = """
from disdat_luigi.pipe import PipeTask
from features import Features

class Fit(PipeTask):
    def pipe_requires(self):
        self.add_dependency("features", Features, {})

    def pipe_run(self, features):
        return sum(features)
"""

REPORT = """
from disdat_luigi.pipe import PipeTask
from model import Fit

class Report(PipeTask):
    code_version = "1"

    def pipe_requires(self):
        self.add_dependency("fit", Fit, {})

    def pipe_run(self, fit):
        return f"fit={fit}"
"""


@pytest.fixture
def two_modules(repo: Path) -> Path:
    (repo / "features.py").write_text(FEATURES)
    (repo / "model.py").write_text(MODEL)
    (repo / "report.py").write_text(REPORT)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "two modules")
    for name in ("features", "model", "report"):
        sys.modules.pop(name, None)
    return repo


def _actions(ctx: str) -> dict[str, str]:
    report = importlib.import_module("report")
    return {d.label.partition("(")[0]: ("reuse" if d.reuse else d.reason) for d in api.explain(ctx, report.Report)}


def test_a_task_reruns_only_when_its_own_file_changed(ctx: str, two_modules: Path) -> None:
    """An edit of model.py (committed or not) re-runs Fit (and Report downstream) but not
    Features, whose file model.py imports; a new unrelated file re-runs nothing; the reason names
    the file; the git commit is provenance."""
    repo = two_modules
    api.apply(ctx, importlib.import_module("report").Report)
    assert set(_actions(ctx).values()) == {"reuse"}
    (repo / "unrelated.py").write_text("X = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "an unrelated module")
    assert set(_actions(ctx).values()) == {"reuse"}  # a new commit alone changes nothing

    (repo / "model.py").write_text(MODEL.replace("sum(features)", "sum(features) * 2"))
    actions = _actions(ctx)
    assert actions["Features"] == "reuse" and actions["Report"].startswith("upstream fit")
    assert actions["Fit"] == "code changed: model.py"
    _git(repo, "commit", "-qam", "fit doubles")
    for name in ("model", "report"):
        sys.modules.pop(name, None)
    api.apply(ctx, importlib.import_module("report").Report)
    assert api.get(ctx, "Report").data == "fit=12"
    assert api.get(ctx, "Fit").git_info["commit"] == _git(repo, "rev-parse", "HEAD")  # provenance
    assert len(api.search(ctx, "Features")) == 1


def test_a_declared_code_version_replaces_the_file_hash(ctx: str, two_modules: Path) -> None:
    """`code_version = "1"` on Report: edits of its file do not re-run it; bumping the declared
    version does, and explain says from what to what."""
    repo = two_modules
    api.apply(ctx, importlib.import_module("report").Report)
    assert api.get(ctx, "Report").git_info["version"] == "declared:1"
    (repo / "report.py").write_text(REPORT.replace('return f"fit={fit}"', 'return f"fit={fit}"  # reformatted'))
    assert set(_actions(ctx).values()) == {"reuse"}
    (repo / "report.py").write_text(REPORT.replace('code_version = "1"', 'code_version = "2"'))
    sys.modules.pop("report", None)
    assert _actions(ctx)["Report"] == "code changed: declared:1 -> declared:2"


HELPERS = "FACTOR = 2\n"
SWEEP = """
from disdat_luigi.pipe import PipeTask
from helpers import FACTOR


class Scaled(PipeTask):
    def pipe_run(self):
        return 10 * FACTOR


class Plain(PipeTask):
    def pipe_run(self):
        return 1
"""
PLAIN = """
from disdat_luigi.pipe import PipeTask
from sweep import Scaled


class Other(PipeTask):
    def pipe_run(self):
        return 5


class Total(PipeTask):
    def pipe_requires(self):
        self.add_dependency("scaled", Scaled, {})
        self.add_dependency("other", Other, {})

    def pipe_run(self, scaled, other):
        return scaled + other
"""
VERSIONED = """
from disdat_luigi.pipe import PipeTask


class Base(PipeTask):
    code_version = "1"

    def pipe_run(self):
        return "base"
"""
SUB = """
from versioned import Base


class Sub(Base):
    def pipe_run(self):
        return "sub"
"""


@pytest.fixture
def helper_modules(repo: Path) -> Path:
    for name, text in {"helpers": HELPERS, "sweep": SWEEP, "total": PLAIN, "versioned": VERSIONED, "sub": SUB}.items():
        (repo / f"{name}.py").write_text(text)
        sys.modules.pop(name, None)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "helpers")
    return repo


def _reasons(ctx: str, module: str, cls: str) -> dict[str, str]:
    decisions = api.explain(ctx, getattr(importlib.import_module(module), cls))
    return {d.label.partition("(")[0]: ("reuse" if d.reuse else d.reason) for d in decisions}


def test_a_helper_edit_reruns_exactly_the_tasks_that_import_it(ctx: str, helper_modules: Path) -> None:
    """Editing helpers.py (committed) re-runs Scaled, whose file imports it, and Total downstream;
    not Other, whose file imports Scaled's module (a module of tasks is not followed); the new
    result is the one downstream reads."""
    repo = helper_modules
    api.apply(ctx, importlib.import_module("total").Total)
    assert api.get(ctx, "Total").data == 25
    (repo / "helpers.py").write_text("FACTOR = 3\n")
    _git(repo, "commit", "-qam", "factor 3")
    sys.modules.pop("helpers", None)
    reasons = _reasons(ctx, "total", "Total")
    assert reasons == {
        "Scaled": "code changed: helpers.py (imported by sweep.py)",
        "Other": "reuse",
        "Total": "upstream scaled (Scaled()) will run",
    }
    for name in ("helpers", "sweep", "total"):
        sys.modules.pop(name, None)
    api.apply(ctx, importlib.import_module("total").Total)
    assert api.get(ctx, "Total").data == 35
    assert "helpers.py" in api.get(ctx, "Scaled").git_info["code_files"]


def test_a_subclass_of_a_versioned_base_reruns_on_its_own_edits(ctx: str, helper_modules: Path) -> None:
    """Sub inherits Base's code_version: its own file is its code (with the base's version), so
    an edit of sub.py re-runs it; an edit of versioned.py does not; bumping the base's version does."""
    repo = helper_modules
    api.apply(ctx, importlib.import_module("sub").Sub)
    (repo / "versioned.py").write_text(VERSIONED + "\n# reformatted\n")
    assert _reasons(ctx, "sub", "Sub") == {"Sub": "reuse"}
    (repo / "sub.py").write_text(SUB.replace('"sub"', '"sub v2"'))
    assert _reasons(ctx, "sub", "Sub") == {"Sub": "code changed: sub.py"}
    sys.modules.pop("sub", None)
    api.apply(ctx, importlib.import_module("sub").Sub)
    assert api.get(ctx, "Sub").data == "sub v2"
    (repo / "versioned.py").write_text(VERSIONED.replace('code_version = "1"', 'code_version = "2"'))
    for name in ("versioned", "sub"):
        sys.modules.pop(name, None)
    assert _reasons(ctx, "sub", "Sub") == {"Sub": "code changed: a base class's declared code_version"}


def test_explain_code_lists_each_tasks_files(
    ctx: str, helper_modules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dsdt apply --explain --code` lists under each task the files of its code identity."""
    from disdat_luigi.cli.main import main

    assert main(["apply", "--explain", "--code", "total.Total"]) == 0
    out = capsys.readouterr().out.splitlines()
    scaled = next(i for i, line in enumerate(out) if "Scaled()" in line)
    assert out[scaled + 1 : scaled + 3] == ["      sweep.py", "      helpers.py (imported by sweep.py)"]
    assert main(["apply", "--code", "total.Total"]) == 1
    assert "--code goes with --explain" in capsys.readouterr().err


UPSTREAM = """
import os

from disdat_luigi.pipe import PipeTask


class Up(PipeTask):
    def pipe_run(self):
        return os.environ["UP_VALUE"]


class Root(PipeTask):
    def pipe_requires(self):
        self.add_dependency("up", Up, {})

    def pipe_run(self, up):
        return f"root:{up}"
"""


def test_downstream_reads_the_bundle_its_apply_made_not_the_newest(
    ctx: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle of Up's recipe dated twelve hours ahead (a peer's clock) is the newest of that
    recipe; after --force-all, Root reads the Up this apply just made, not the peer's."""
    from datetime import datetime, timedelta

    from disdat_luigi.store import bundle as bundle_module

    (repo / "updown.py").write_text(UPSTREAM)
    sys.modules.pop("updown", None)
    root = importlib.import_module("updown").Root

    class Ahead(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return datetime.now(tz) + timedelta(hours=12)

    monkeypatch.setenv("UP_VALUE", "peer")
    with monkeypatch.context() as ahead:
        ahead.setattr(bundle_module, "datetime", Ahead)
        api.apply(ctx, root)
    monkeypatch.setenv("UP_VALUE", "mine")
    outcome = api.apply_outcome(ctx, root, force_all=True)
    assert api.get(ctx, None, uuid=outcome.root_uuid).data == "root:mine"  # type: ignore[union-attr]
    newest_up = api.get(ctx, "Up")
    assert newest_up.data == "peer"  # still the newest of its recipe: what a lookup would have read
