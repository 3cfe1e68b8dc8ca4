"""Assemble a build context: template, OS packages, requirements, disdat_luigi's own source
(the same the host runs, local changes included) and the pipe root; hash all of it."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import disdat_luigi
from disdat_luigi.errors import BuildError, DisdatError
from disdat_luigi.util.closure import PROJECT_ENV, project_packages
from disdat_luigi.util.codeversion import CodeVersion

SKIP = {"__pycache__", ".git", ".venv", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".demo"}
BUILD_TOOLS = ["setuptools>=61", "wheel"]
# the copy's setup.py reads the same layout file as the repository's (disdat_luigi/packaging.py)
SETUP_PY = """from pathlib import Path

from setuptools import find_namespace_packages, setup

layout = {{}}
exec(Path("disdat_luigi/packaging.py").read_text(), layout)
setup(
    name="disdat_luigi",
    version="{version}",
    packages=find_namespace_packages(include=layout["PACKAGES_INCLUDE"], exclude=layout["PACKAGES_EXCLUDE"]),
    package_data=layout["PACKAGE_DATA"],
    entry_points=layout["ENTRY_POINTS"],
)
"""


@dataclass(frozen=True)
class BuildContext:
    path: Path
    content_tag: str
    base_image: str
    labels: dict[str, str]


def template_dir() -> Path:
    return Path(disdat_luigi.__file__).resolve().parent / "dockerizer"


def default_base_image() -> str:
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def assemble(
    target: Path,
    pipe_root: Path,
    base_image: str,
    config_dir: Path | None,
    dot_pip_file: Path | None,
    code: CodeVersion | None,
) -> BuildContext:
    """Write the build context into `target` (empty) and return it with its content tag."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_dir() / "Dockerfile", target / "Dockerfile")
    (target / "os-packages.txt").write_text(_os_packages(config_dir))
    (target / "requirements.txt").write_text("\n".join(_requirements(pipe_root)) + "\n")
    pip_conf = dot_pip_file or (config_dir / "pip.conf" if config_dir and (config_dir / "pip.conf").is_file() else None)
    if pip_conf is not None and not pip_conf.is_file():
        raise DisdatError(f"the pip configuration {pip_conf} does not exist", hint="fix [dockerize] dot_pip_file")
    (target / "pip.conf").write_bytes(pip_conf.read_bytes() if pip_conf else b"")
    source = target / "disdat_luigi-src"
    _copy_tree(Path(disdat_luigi.__file__).resolve().parent, source / "disdat_luigi")
    (source / "setup.py").write_text(SETUP_PY.format(version=disdat_luigi.__version__))
    _copy_tree(pipe_root, target / "pipe-src")
    git: dict[str, str | None] = {}
    if code is not None:
        git = {"COMMIT": code.commit, "BRANCH": code.branch, "REMOTE": code.repo, "DIRTY": str(code.dirty).lower(),
               "DIFF_SHA256": code.diff_sha256}  # fmt: skip
    # the git description is part of the content: committing an edit makes a new image whose
    # labels (and the bundles it makes) name the commit the code is now at
    described = ";".join(f"{k}={v}" for k, v in sorted(git.items()) if v)
    digest = _hash_tree(target, extra=f"{base_image}\n{described}")
    content_tag = f"c{digest[:20]}"
    labels = {"disdat.content-tag": content_tag, "disdat.base-image": base_image}
    # the project's top-level packages: inside the image (installed in site-packages, next to
    # third-party ones) they say which imports belong to a task's code identity
    env = {"DISDAT_IMAGE_TAG": content_tag, PROJECT_ENV: ",".join(project_packages(pipe_root))}
    env.update({f"DISDAT_GIT_{k}": v for k, v in git.items() if v})
    labels.update({f"disdat.git.{k.lower()}": v for k, v in git.items() if v})
    # metadata only, appended last so it never invalidates the cached layers above
    with open(target / "Dockerfile", "a", encoding="utf-8") as dockerfile:
        dockerfile.write("\n" + "\n".join(f"ENV {k}={_quote(v)}" for k, v in env.items()) + "\n")
        dockerfile.write("\n".join(f"LABEL {_quote(k)}={_quote(v)}" for k, v in labels.items()) + "\n")
    return BuildContext(target, content_tag, base_image, labels)


def _os_packages(config_dir: Path | None) -> str:
    if config_dir is None:
        return ""
    if not config_dir.is_dir():
        raise DisdatError(f"the config directory {config_dir} does not exist", hint="pass an existing --config-dir")
    apt = config_dir / "apt.txt"
    lines = apt.read_text().splitlines() if apt.is_file() else []
    return "\n".join(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()) + "\n"


def _requirements(pipe_root: Path) -> list[str]:
    """disdat_luigi's dependencies, the pipeline's declared ones and what builds it (not itself)."""
    declared, build = _declared(pipe_root)
    own = {"disdat-luigi"}
    pipeline = [r for r in declared if _requirement_name(r) not in own]
    return sorted(set(_own_requirements() + BUILD_TOOLS + build + pipeline))


def _own_requirements() -> list[str]:
    """disdat_luigi's install requirements, as its installed distribution declares them."""
    from importlib import metadata

    try:
        declared = metadata.requires("disdat_luigi") or []
    except metadata.PackageNotFoundError as err:
        raise BuildError(
            "disdat_luigi is not installed as a package", hint="pip install disdat_luigi (or -e .)"
        ) from err
    return [r.strip() for r in declared if "extra ==" not in r]


def _declared(pipe_root: Path) -> tuple[list[str], list[str]]:
    """(install requirements, build requirements) of the pipe root's setup.py or pyproject.toml."""
    pyproject = pipe_root / "pyproject.toml"
    build: list[str] = []
    declared: list[str] = []
    if pyproject.is_file():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]

        doc = tomllib.loads(pyproject.read_text())
        build = list(doc.get("build-system", {}).get("requires", []))
        declared = list(doc.get("project", {}).get("dependencies", []))
    setup_py = pipe_root / "setup.py"
    if setup_py.is_file():
        declared += _setup_py_requirements(setup_py)
    elif not pyproject.is_file():
        raise BuildError(
            f"{pipe_root} has neither setup.py nor pyproject.toml",
            hint="pipe_root must be a pip-installable project (the directory with the setup.py)",
        )
    return declared, build


def _setup_py_requirements(setup_py: Path) -> list[str]:
    """install_requires of a setup.py: read from its source when it is a literal, else by running
    setup.py up to setup()'s initialisation (restoring the logging setuptools reconfigures)."""
    literal = _literal_install_requires(setup_py)
    if literal is not None:
        return literal
    import importlib
    import logging

    import setuptools  # noqa: F401  (imported first: it routes distutils to its own copy)

    run_setup = importlib.import_module("distutils.core").run_setup
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    cwd = os.getcwd()
    try:
        os.chdir(setup_py.parent)
        distribution = run_setup(str(setup_py), stop_after="init")
    except (SystemExit, Exception) as err:
        raise BuildError(f"{setup_py} failed to run: {err}") from err
    finally:
        os.chdir(cwd)
        root.handlers[:], root.level = handlers, level
    return [str(r) for r in (getattr(distribution, "install_requires", None) or [])]


def _literal_install_requires(setup_py: Path) -> list[str] | None:
    import ast

    try:
        tree = ast.parse(setup_py.read_text(encoding="utf-8"))
    except SyntaxError as err:
        raise BuildError(f"{setup_py} does not parse: {err}") from err
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "install_requires":
                    try:
                        return [str(r) for r in ast.literal_eval(keyword.value)]
                    except ValueError:
                        return None
            return []
    return None


def _requirement_name(requirement: str) -> str:
    name = requirement.strip()
    for separator in "<>=!~;[ @":
        name = name.split(separator)[0]
    return name.lower().replace("_", "-")


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(
        source,
        target,
        symlinks=False,
        ignore=lambda _d, names: [n for n in names if n in SKIP or n.endswith((".pyc", ".egg-info"))],
    )


def _hash_tree(root: Path, extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
