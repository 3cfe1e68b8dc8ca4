"""A task class's code identity: the file defining it, the files of its base classes, and every
module of its pipeline project those files import, transitively, found by reading their import
statements (nothing is imported). Each file is read, hashed and parsed once per `SourceIndex`.

Files are named by their path below the project's import root (`model.py`, `etl/helpers.py`), so
the identity computed from a laptop's work tree equals the one computed inside an image, where
the project is installed in site-packages. The project's top-level packages are those found next
to the class's own top-level package, or, inside an image, those `dsdt dockerize` recorded in
`DISDAT_PROJECT_PACKAGES`. The standard library and third-party packages are not followed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from disdat_luigi.util.codeversion import blob_hash

PROJECT_ENV = "DISDAT_PROJECT_PACKAGES"
SCHEME = "c2"  # the prefix of an identity of this scheme (a bare blob hash was the previous one)
NEVER_FOLLOWED = frozenset({"disdat_luigi", "luigi"})
INSTALL_DIRS = frozenset({"site-packages", "dist-packages"})
TASK_BASE = "PipeTask"


@dataclass(frozen=True, kw_only=True)
class CodeIdentity:
    """The code of one task class, as reuse compares it."""

    files: Mapping[str, str] = field(default_factory=dict)  # path below the import root -> git blob hash
    imported_by: Mapping[str, str] = field(default_factory=dict)  # path -> the file that imports it
    declared: Mapping[str, str] = field(default_factory=dict)  # base class path -> its declared code_version
    own_declared: str | None = None  # the class's own code_version: it stands for all of the above

    @property
    def version(self) -> str:
        if self.own_declared is not None:
            return f"declared:{self.own_declared}"
        doc = json.dumps({"files": dict(self.files), "declared": dict(self.declared)}, sort_keys=True)
        return f"{SCHEME}:{hashlib.sha256(doc.encode('utf-8')).hexdigest()[:32]}"

    def listing(self) -> list[str]:
        """What is in the identity, one line each (for `dsdt apply --explain --code`)."""
        if self.own_declared is not None:
            return [f"code_version = {self.own_declared!r} (declared)"]
        lines = [f"{path}{self._why(path)}" for path in sorted(self.files, key=self._order)]
        return lines + [
            f"{cls}.code_version = {v!r} (declared by a base class)" for cls, v in sorted(self.declared.items())
        ]

    def changes_since(self, version: str, files: object) -> str:
        """Why the code differs from a bundle's recorded `version` and `files` (its code_files)."""
        if version.startswith("declared:") or self.own_declared is not None:
            return f"code changed: {_short(version)} -> {_short(self.version)}"
        if not version.startswith(f"{SCHEME}:") or not isinstance(files, Mapping):
            return "code identity scheme changed"
        changed = [
            p for p in sorted(set(files) | set(self.files), key=self._order) if files.get(p) != self.files.get(p)
        ]
        named = [f"{p} (no longer imported)" if p not in self.files else f"{p}{self._why(p)}" for p in changed]
        if not named:
            return "code changed: a base class's declared code_version"
        return "code changed: " + ", ".join(named)

    def _why(self, path: str) -> str:
        return f" (imported by {self.imported_by[path]})" if path in self.imported_by else ""

    def _order(self, path: str) -> tuple[bool, str]:
        return (path in self.imported_by, path)  # the class's own files first


@dataclass(frozen=True)
class _Source:
    blob: str
    imports: tuple[tuple[int, str, tuple[str, ...]], ...]  # (level, module, names); names () for `import m`
    defines_task: bool


class SourceIndex:
    """Code identities of task classes, reading each source file once.

    `is_task_module(name)` says whether a module defines task classes (they reach a downstream
    task's identity through its dependency's recipe, so their files are not followed)."""

    def __init__(self, is_task_module: Callable[[str], bool], env: Mapping[str, str] | None = None) -> None:
        self._is_task_module = is_task_module
        env = os.environ if env is None else env
        recorded = env.get(PROJECT_ENV, "")
        self._recorded = frozenset(p.strip() for p in recorded.split(",") if p.strip())
        self._sources: dict[Path, _Source | None] = {}
        self._roots: dict[str, Path | None] = {}
        self._files: dict[str, tuple[Path, str] | None] = {}
        self._projects: dict[str, frozenset[str]] = {}
        self._identities: dict[type, CodeIdentity | None] = {}
        self._task_modules: dict[str, bool] = {}

    def identity(self, cls: type) -> CodeIdentity | None:
        """None for a class whose source cannot be found (defined interactively)."""
        if cls not in self._identities:
            self._identities[cls] = self._identity(cls)
        return self._identities[cls]

    def _identity(self, cls: type) -> CodeIdentity | None:
        own = cls.__dict__.get("code_version")
        if own is not None:
            return CodeIdentity(own_declared=str(own))
        top = cls.__module__.partition(".")[0]
        project = self.project(top)
        roots: list[str] = []
        declared: dict[str, str] = {}
        covered: set[type] = set()
        for klass in cls.__mro__:
            if klass in covered or klass.__module__.partition(".")[0] not in project:
                continue
            version = klass.__dict__.get("code_version") if klass is not cls else None
            if version is not None:
                declared[f"{klass.__module__}.{klass.__qualname__}"] = str(version)
                covered.update(klass.__mro__)
            elif klass.__module__ not in roots:
                roots.append(klass.__module__)
        files: dict[str, str] = {}
        imported_by: dict[str, str] = {}
        queue: list[tuple[str, str | None]] = [(m, None) for m in roots]
        while queue:
            module, importer = queue.pop(0)
            found = self._file(module)
            if found is None:
                if importer is None:
                    return self._lone_file(cls, declared)
                continue
            path, rel = found
            if rel in files:
                continue
            source = self._source(path)
            if source is None:
                if importer is None:
                    return None
                continue
            files[rel] = source.blob
            if importer is not None:
                imported_by[rel] = importer
            for target in self._imported(module, path, source, project):
                if target in roots:
                    continue
                target_file = self._file(target)
                if target_file is None or target_file[1] in files:
                    continue
                target_source = self._source(target_file[0])
                if target_source is None or target_source.defines_task or self._defines_tasks(target):
                    continue
                queue.append((target, rel))
        return CodeIdentity(files=files, imported_by=imported_by, declared=declared)

    def _defines_tasks(self, module: str) -> bool:
        if module not in self._task_modules:
            self._task_modules[module] = self._is_task_module(module)
        return self._task_modules[module]

    def _lone_file(self, cls: type, declared: dict[str, str]) -> CodeIdentity | None:
        """A class whose module is not importable by name (`__main__`, a test's file): its file alone."""
        try:
            path = Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None
        source = self._source(path)
        return None if source is None else CodeIdentity(files={path.name: source.blob}, declared=declared)

    # --- the project ------------------------------------------------------------------------------

    def project(self, top: str) -> frozenset[str]:
        """The top-level packages of the project holding the package (or module) `top`."""
        if top not in self._projects:
            self._projects[top] = self._project(top)
        return self._projects[top]

    def _project(self, top: str) -> frozenset[str]:
        if top in self._recorded:
            return self._recorded - NEVER_FOLLOWED
        root = self._root(top)
        if root is None or root.name in INSTALL_DIRS:
            return frozenset({top}) - NEVER_FOLLOWED
        return frozenset({top, *project_packages(root)}) - NEVER_FOLLOWED

    def _root(self, top: str) -> Path | None:
        """The directory `top` is imported from."""
        if top not in self._roots:
            self._roots[top] = _import_root(top)
        return self._roots[top]

    def _file(self, module: str) -> tuple[Path, str] | None:
        """The source file of a project module and its path below the import root."""
        if module not in self._files:
            self._files[module] = None
            root = self._root(module.partition(".")[0])
            if root is not None:
                parts = module.split(".")
                for rel in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
                    if (root / rel).is_file():
                        self._files[module] = (root / rel, rel)
                        break
        return self._files[module]

    def _source(self, path: Path) -> _Source | None:
        if path not in self._sources:
            self._sources[path] = _read(path)
        return self._sources[path]

    def _imported(self, module: str, path: Path, source: _Source, project: frozenset[str]) -> Iterable[str]:
        """The modules an import statement of `module` reads: a package's __init__ only when it is
        imported from itself, not when one of its submodules is."""
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for level, name, names in source.imports:
            if level:
                base = package.split(".") if package else []
                base = base[: len(base) - (level - 1)] if level > 1 else base
                name = ".".join([*base, name] if name else base)
            if not name or name.partition(".")[0] not in project:
                continue
            if not names:
                yield name
                continue
            whole = False
            for item in names:
                sub = f"{name}.{item}"
                if item != "*" and self._file(sub) is not None:
                    yield sub
                else:
                    whole = True
            if whole:
                yield name


def project_packages(root: Path) -> list[str]:
    """The top-level packages and modules of a project directory (and of its src/ layout)."""
    found: set[str] = set()
    for directory in (root, root / "src"):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.isidentifier() and not entry.name.endswith(".py"):
                continue
            if entry.is_dir() and (Path(entry.path) / "__init__.py").is_file():
                found.add(entry.name)
            elif entry.name.endswith(".py") and entry.name != "setup.py" and entry.name[:-3].isidentifier():
                found.add(entry.name[:-3])
    return sorted(found)


def _import_root(top: str) -> Path | None:
    module = sys.modules.get(top)
    origin = getattr(module, "__file__", None) if module is not None else None
    locations: list[str] = list(getattr(module, "__path__", []) or []) if module is not None else []
    if origin is None and not locations:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        origin = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
    if origin:
        path = Path(origin)
        return path.parent.parent if path.name == "__init__.py" else path.parent
    return Path(locations[0]).parent if locations else None


def _read(path: Path) -> _Source | None:
    try:
        content = path.read_bytes()
    except OSError:
        return None
    try:
        tree = ast.parse(content, filename=str(path))
    except (SyntaxError, ValueError):
        return _Source(blob=blob_hash(content), imports=(), defines_task=False)
    imports: list[tuple[int, str, tuple[str, ...]]] = []
    defines_task = False
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            imports += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.ClassDef) and not defines_task:
            defines_task = any(_base_name(base) == TASK_BASE for base in node.bases)
    return _Source(blob=blob_hash(content), imports=tuple(imports), defines_task=defines_task)


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones too (imports inside functions, classes, ifs, trys), without
    visiting expressions: a file's import statements at a fraction of `ast.walk`'s cost."""
    pending = list(reversed(body))
    while pending:
        node = pending.pop()
        yield node
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            nested = getattr(node, name, None)
            if nested:
                pending.extend(reversed(nested))


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _short(version: str) -> str:
    if version.startswith(f"{SCHEME}:"):
        return version[: len(SCHEME) + 13]
    return version if version.startswith(("declared:", "image:")) else version[:12]
