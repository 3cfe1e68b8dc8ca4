"""Image names and pipeline-module discovery (by reading source, never importing it)."""

from __future__ import annotations

import ast
from pathlib import Path

from disdat_luigi.errors import PipeClassNotFound

IMAGE_PREFIX = "disdat"


def image_name(module: str, repository_prefix: str | None = None) -> str:
    """`etl.ingest` -> `disdat-etl-ingest` (lower case, dots to dashes), with the prefix prepended."""
    name = f"{IMAGE_PREFIX}-{module.lower().replace('.', '-')}"
    return f"{repository_prefix.strip('/')}/{name}" if repository_prefix else name


def module_of(pipe_cls: str) -> tuple[str, str]:
    """`etl.ingest.Ingest` -> ('etl.ingest', 'Ingest')."""
    module, _, cls = pipe_cls.rpartition(".")
    if not module or not cls:
        raise PipeClassNotFound(f"{pipe_cls!r} is not a dotted path like module.submodule.ClassName")
    return module, cls


def module_file(pipe_root: Path, module: str) -> Path:
    base = pipe_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise PipeClassNotFound(
        f"no module {module} under {pipe_root} (looked for {base.relative_to(pipe_root)}.py)",
        hint="pipe_cls is module.submodule.ClassName with module/submodule.py below pipe_root",
    )


def check_pipe_class(pipe_root: Path, pipe_cls: str) -> str:
    """The module of `pipe_cls` after checking that its file defines the class."""
    module, cls = module_of(pipe_cls)
    path = module_file(pipe_root, module)
    if cls not in _class_bases(path):
        raise PipeClassNotFound(f"{path.relative_to(pipe_root)} defines no class {cls}")
    return module


def pipeline_modules(pipe_root: Path) -> list[str]:
    """Modules below `pipe_root` (inside packages) that define a PipeTask subclass."""
    found = []
    for path in sorted(pipe_root.rglob("*.py")):
        rel = path.relative_to(pipe_root)
        if any(part.startswith(".") or part in ("build", "dist") for part in rel.parts) or rel.name == "setup.py":
            continue
        if not all((pipe_root / Path(*rel.parts[:i]) / "__init__.py").is_file() for i in range(1, len(rel.parts))):
            continue
        if _defines_pipe_task(path):
            parts = rel.with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _class_bases(path: Path) -> dict[str, list[str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as err:
        raise PipeClassNotFound(f"{path} does not parse: {err}") from err
    return {
        node.name: [ast.unparse(base).rpartition(".")[2] for base in node.bases]
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def _defines_pipe_task(path: Path) -> bool:
    """A class based on PipeTask, or on another class of the same module that is."""
    bases = _class_bases(path)
    pipe = {name for name, b in bases.items() if "PipeTask" in b}
    changed = True
    while changed:
        grown = {name for name, b in bases.items() if set(b) & pipe}
        changed = not grown <= pipe
        pipe |= grown
    return bool(pipe)


def find_pipe_root(module: str, configured: str | None = None) -> Path | None:
    """The pipeline project holding `module`: `configured` ([dockerize] pipe_root) when the module
    is in it, else the nearest parent of the module's source file with a setup.py or
    pyproject.toml (the module is located, not imported); None when it cannot be found."""
    if configured:
        root = Path(configured).expanduser().resolve()
        try:
            module_file(root, module)
            return root
        except PipeClassNotFound:
            pass
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    for parent in Path(spec.origin).resolve().parents:
        if (parent / "setup.py").is_file() or (parent / "pyproject.toml").is_file():
            return parent
    return None
