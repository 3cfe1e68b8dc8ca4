"""A task class's code identity: which files it covers, found by reading import statements."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from disdat_luigi.util.closure import PROJECT_ENV, CodeIdentity, SourceIndex, project_packages

_ids = itertools.count()


def _project(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _cls(module: str, name: str = "Fit", bases: tuple[type, ...] = (), **attrs: object) -> type:
    return type(name, bases, {"__module__": module, **attrs})


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A unique top-level package name and the work tree it lives in (on sys.path)."""
    name = f"proj{next(_ids)}"
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return name, root


def _files(identity: CodeIdentity | None) -> dict[str, str]:
    assert identity is not None
    return {path: identity.imported_by.get(path, "") for path in identity.files}


def test_imports_are_followed_transitively_within_the_project(pkg: tuple[str, Path]) -> None:
    """The class's file, what it imports (absolute and relative) and what those import; not the
    standard library, not a module defining other tasks, not an unrelated file."""
    name, root = pkg
    _project(
        root,
        {
            f"{name}/__init__.py": "",
            f"{name}/model.py": f"import json\nfrom {name}.helpers import FACTOR\nfrom . import upstream\n",
            f"{name}/helpers.py": "from .consts import BASE\nFACTOR = BASE * 2\n",
            f"{name}/consts.py": "BASE = 1\n",
            f"{name}/upstream.py": "from disdat_luigi.pipe import PipeTask\nclass Up(PipeTask):\n    pass\n",
            f"{name}/unrelated.py": "X = 1\n",
        },
    )
    identity = SourceIndex(lambda _m: False).identity(_cls(f"{name}.model"))
    assert _files(identity) == {
        f"{name}/model.py": "",
        f"{name}/helpers.py": f"{name}/model.py",
        f"{name}/consts.py": f"{name}/helpers.py",
    }
    before = identity.version  # type: ignore[union-attr]
    (root / name / "consts.py").write_text("BASE = 2\n")
    after = SourceIndex(lambda _m: False).identity(_cls(f"{name}.model"))
    assert after is not None and after.version != before
    assert after.changes_since(before, identity.files) == (  # type: ignore[union-attr]
        f"code changed: {name}/consts.py (imported by {name}/helpers.py)"
    )


def test_a_package_init_is_followed_only_when_imported_from(pkg: tuple[str, Path]) -> None:
    """`from lib.a import X` and `from lib import a` read lib/a.py only; `from lib import NAME`
    and `import lib` read lib/__init__.py (which here imports everything)."""
    name, root = pkg
    lib = f"{name}lib"
    _project(
        root,
        {
            f"{lib}/__init__.py": "from . import a, b\nNAME = 1\n",
            f"{lib}/a.py": "A = 1\n",
            f"{lib}/b.py": "B = 1\n",
            f"{name}.py": "",
            f"{name}_one.py": f"from {lib}.a import A\n",
            f"{name}_two.py": f"from {lib} import a\n",
            f"{name}_three.py": f"from {lib} import NAME\n",
            f"{name}_four.py": f"import {lib}\n",
        },
    )
    index = SourceIndex(lambda _m: False)
    assert set(_files(index.identity(_cls(f"{name}_one")))) == {f"{name}_one.py", f"{lib}/a.py"}
    assert set(_files(index.identity(_cls(f"{name}_two")))) == {f"{name}_two.py", f"{lib}/a.py"}
    everything = {f"{lib}/__init__.py", f"{lib}/a.py", f"{lib}/b.py"}
    assert set(_files(index.identity(_cls(f"{name}_three")))) == {f"{name}_three.py", *everything}
    assert set(_files(index.identity(_cls(f"{name}_four")))) == {f"{name}_four.py", *everything}


def test_base_classes_and_declared_versions(pkg: tuple[str, Path]) -> None:
    """A base class's file is covered; a base's declared code_version stands for the base (its
    file is not read); a class's own declaration stands for everything."""
    name, root = pkg
    _project(
        root,
        {
            f"{name}/__init__.py": "",
            f"{name}/base.py": "",
            f"{name}/versioned.py": "",
            f"{name}/sub.py": "",
        },
    )
    base = _cls(f"{name}.base", "Base")
    versioned = _cls(f"{name}.versioned", "Versioned", (base,), code_version="1")
    index = SourceIndex(lambda _m: False)
    assert set(_files(index.identity(_cls(f"{name}.sub", "Sub", (base,))))) == {f"{name}/sub.py", f"{name}/base.py"}
    sub = index.identity(_cls(f"{name}.sub", "Sub2", (versioned,)))
    assert set(_files(sub)) == {f"{name}/sub.py"} and dict(sub.declared) == {f"{name}.versioned.Versioned": "1"}  # type: ignore[union-attr]
    assert index.identity(versioned).version == "declared:1"  # type: ignore[union-attr]
    bumped = _cls(f"{name}.versioned", "Versioned", (base,), code_version="2")
    again = SourceIndex(lambda _m: False).identity(_cls(f"{name}.sub", "Sub2", (bumped,)))
    assert again is not None and again.version != sub.version  # type: ignore[union-attr]


def test_a_module_with_other_tasks_is_not_followed(pkg: tuple[str, Path]) -> None:
    """Found from its source (a class based on PipeTask) or from the loaded classes."""
    name, root = pkg
    _project(
        root,
        {
            f"{name}/__init__.py": "",
            f"{name}/model.py": f"from {name} import features, shared\n",
            f"{name}/features.py": "from disdat_luigi import pipe\nclass Features(pipe.PipeTask):\n    pass\n",
            f"{name}/shared.py": "X = 1\n",
        },
    )
    assert set(_files(SourceIndex(lambda _m: False).identity(_cls(f"{name}.model")))) == {
        f"{name}/model.py",
        f"{name}/shared.py",
    }
    loaded = SourceIndex(lambda module: module == f"{name}.shared").identity(_cls(f"{name}.model"))
    assert set(_files(loaded)) == {f"{name}/model.py"}


def test_the_same_identity_in_a_work_tree_and_installed_in_an_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed in site-packages beside third-party packages, the project's packages recorded at
    build time give the identity the work tree gives; a third-party package is never read."""
    name = f"proj{next(_ids)}"
    files = {
        f"{name}/__init__.py": "",
        f"{name}/model.py": f"import thirdparty{name}\nfrom {name}lib.helpers import F\n",
        f"{name}lib/__init__.py": "",
        f"{name}lib/helpers.py": "F = 1\n",
    }
    work = tmp_path / "work"
    _project(work, {**files, "setup.py": "", f"thirdparty{name}.py": ""})
    site = tmp_path / "venv" / "site-packages"
    _project(site, {**files, f"thirdparty{name}.py": "X = 1\n"})
    assert project_packages(work) == sorted([name, f"{name}lib", f"thirdparty{name}"])

    monkeypatch.syspath_prepend(str(site))
    installed = SourceIndex(lambda _m: False, env={PROJECT_ENV: f"{name},{name}lib"}).identity(_cls(f"{name}.model"))
    assert set(_files(installed)) == {f"{name}/model.py", f"{name}lib/helpers.py"}
    unrecorded = SourceIndex(lambda _m: False, env={}).identity(_cls(f"{name}.model"))
    assert set(_files(unrecorded)) == {f"{name}/model.py"}  # site-packages: only the class's own package

    (work / f"thirdparty{name}.py").unlink()  # in the work tree the third party is not the project's
    monkeypatch.syspath_prepend(str(work))
    import sys

    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]
    in_tree = SourceIndex(lambda _m: False, env={}).identity(_cls(f"{name}.model"))
    assert in_tree is not None and installed is not None and in_tree.version == installed.version


def test_the_reason_names_what_changed() -> None:
    """Files changed, added, dropped; a declared version; a bundle of the previous scheme."""
    now = CodeIdentity(files={"model.py": "b", "helpers.py": "c"}, imported_by={"helpers.py": "model.py"})
    assert now.changes_since(now.version, {"model.py": "a", "helpers.py": "c"}) == "code changed: model.py"
    assert now.changes_since(now.version, {"model.py": "b", "old.py": "d"}) == (
        "code changed: old.py (no longer imported), helpers.py (imported by model.py)"
    )
    assert now.changes_since("0123456789abcdef0123456789abcdef01234567", None) == "code identity scheme changed"
    assert CodeIdentity(own_declared="2").changes_since("declared:1", None) == "code changed: declared:1 -> declared:2"
    assert now.listing() == ["model.py", "helpers.py (imported by model.py)"]
