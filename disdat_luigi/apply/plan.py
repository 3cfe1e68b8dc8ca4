"""Decide, for every task of a pipeline, whether its newest bundle can be reused, and say why not.

Decisions are made bottom-up before luigi runs anything, so a task reruns exactly when its class,
parameters, upstream recipes, code identity, output name or tags changed, when it is forced, or
when an upstream it used is no longer the current one. A bundle whose recorded fields cannot be
read is never reused: it is named once in the log and planned around.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disdat_luigi.apply.executors import LOCAL, executor_name
from disdat_luigi.apply.identity import class_path, processing_name, typed_params
from disdat_luigi.apply.options import ApplyOptions
from disdat_luigi.apply.state import declaration_of, is_root, output_name, output_tags, set_decision, state_of
from disdat_luigi.errors import BundleCorrupt, BundleNotFound, DependencyNotFound, ManifestRejected, PipelineError
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.index import BundleQuery, IndexRow
from disdat_luigi.store.manifest import BundleManifest
from disdat_luigi.util.closure import CodeIdentity, SourceIndex
from disdat_luigi.util.codeversion import CodeVersion, capture

if TYPE_CHECKING:
    from disdat_luigi.apply.task import PipeTask

RUN = "run"
REUSE = "reuse"
EARLIER_BUNDLES = 50  # bundles of a name read to tell a changed value from one more value of a sweep
LOG = logging.getLogger("disdat_luigi.apply")


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What apply will do with one task, and why."""

    task_id: str
    label: str
    action: str
    reason: str
    processing_name: str
    bundle_name: str
    uuid: str | None = None
    git_info: dict[str, Any] | None = None
    executor: str = LOCAL
    forced: bool = False  # its run is this apply's own: never shared with or adopted from another
    code_files: tuple[str, ...] = ()  # what its code identity covers, for `--explain --code`
    pipe_cls: str = ""  # module.Class of the task

    @property
    def reuse(self) -> bool:
        return self.action == REUSE

    @property
    def code_version(self) -> str:
        return str((self.git_info or {}).get("version") or "")

    def __str__(self) -> str:
        where = f" [executor {self.executor}]" if self.executor != LOCAL else ""
        if self.reuse:
            return f"reuse {self.uuid}  {self.label}{where}"
        return f"run   {self.label}{where}: {self.reason}"


class Planner:
    """Plans one apply against one context."""

    def __init__(self, options: ApplyOptions, context: LocalContext) -> None:
        self.options = options
        self.context = context
        self.pid = os.getpid()  # its context's sqlite connection belongs to this process
        self._code: dict[Path, CodeVersion | None] = {}
        self._code_of_class: dict[type, CodeVersion | None] = {}
        self.sources = SourceIndex(_defines_tasks)
        self._unusable: set[str] = set()
        self._records: dict[type, tuple[dict[str, Any] | None, tuple[str, ...]]] = {}
        self._params_seen: dict[tuple[type, str], list[Mapping[str, Any]]] = {}

    def plan(self, root: PipeTask) -> list[Decision]:
        """Decisions for `root` and everything it statically requires, upstream first. Each task
        keeps this planner: its dynamic dependencies are planned with the same caches."""
        order = post_order(root)
        for task in order:
            state_of(task).planner = self
        names: dict[str, str] = {}
        for task in order:  # upstream first, so every upstream name is known
            names[task.task_id] = self.processing_name(task, names)
        if self.options.incremental_pull:
            self._pull_metadata({output_name(t) for t in order})
        rows = self.context.index.newest_by_recipe(set(names.values()))
        candidates = {t.task_id: rows.get((names[t.task_id], output_name(t))) for t in order}
        uuids = [r.uuid for r in candidates.values() if r is not None]
        recorded = self.context.index.dependencies_of_many(uuids)
        tags = self.context.index.tags_of_many(uuids)
        decisions: dict[str, Decision] = {}
        for task in order:
            decision = self._decide(
                task, names[task.task_id], candidates[task.task_id], rows, recorded, tags, decisions
            )
            decisions[task.task_id] = decision
            set_decision(task, decision)
        return [decisions[t.task_id] for t in order]

    def upstream_names(self, task: PipeTask) -> dict[str, str]:
        """The processing name of every task `task` statically requires, by task id."""
        names: dict[str, str] = {}
        for upstream in post_order(task)[:-1]:
            names[upstream.task_id] = self.processing_name(upstream, names)
        return names

    def processing_name(self, task: PipeTask, upstream_names: dict[str, str]) -> str:
        declaration = declaration_of(task)
        upstream = {arg: upstream_names[dep.task_id] for arg, dep in declaration.deps.items()}
        for arg, external in declaration.externals.items():
            if external.bundle is None:
                raise DependencyNotFound(
                    f"external dependency {arg!r} of {task} not found: {external.description}",
                    hint="make or pull that bundle first, or fix the name/uuid/parameters it is looked up by",
                )
            upstream[arg] = f"bundle:{external.bundle.uuid}"
        pipeline_input = self.options.input_bundle_uuid if is_root(task) else None
        return processing_name(task, upstream, pipeline_input)

    def code_version(self, task: PipeTask) -> CodeVersion | None:
        """The task's code identity (the project files its class runs, or its declared version)
        with the git provenance of its repository (or, planning for a container, of the image)."""
        cls = type(task)
        if cls not in self._code_of_class:
            self._code_of_class[cls] = self._code_of(cls)
        return self._code_of_class[cls]

    def _code_of(self, cls: type) -> CodeVersion | None:
        identity = self.sources.identity(cls)
        source = identity.version if identity is not None else None
        files = dict(identity.files) if identity is not None and identity.own_declared is None else None
        if self.options.image_code is not None:  # planning for a container: the image's provenance
            provenance: CodeVersion | None = CodeVersion(**self.options.image_code)
        else:
            try:
                directory = Path(inspect.getfile(cls)).resolve().parent
            except (TypeError, OSError):
                directory = None
            if directory is not None and directory not in self._code:
                self._code[directory] = capture(directory)
            provenance = self._code.get(directory) if directory is not None else None
        if source is None:
            return provenance
        if provenance is None:
            return CodeVersion(commit=None, source=source, code_files=files)
        return dataclasses.replace(provenance, source=source, code_files=files)

    def _decide(
        self,
        task: PipeTask,
        pname: str,
        row: IndexRow | None,
        rows: dict[tuple[str, str], IndexRow],
        recorded: dict[str, dict[str, str]],
        tags: dict[str, dict[str, str]],
        decisions: dict[str, Decision],
    ) -> Decision:
        declaration = declaration_of(task)
        name = output_name(task)
        code = self.code_version(task)
        git_info, listing = self._code_record(type(task), code)
        executor = executor_name(type(task), self.options.executors)
        identity = self.sources.identity(type(task))
        host_code = self.options.expected_code.get(class_path(type(task)))
        if host_code is not None and code is not None and code.version != host_code:
            raise PipelineError(
                f"the code of {task} here ({code.version}) is not the code the host planned ({host_code})",
                hint="the image is stale or holds another project: rebuild it (dsdt dockerize) and run again",
            )

        def decide(action: str, reason: str, uuid: str | None = None, forced: bool = False) -> Decision:
            return Decision(
                task_id=task.task_id,
                label=str(task),
                action=action,
                reason=reason,
                processing_name=pname,
                bundle_name=name,
                uuid=uuid,
                git_info=git_info,
                executor=executor,
                forced=forced,
                code_files=listing,
                pipe_cls=class_path(type(task)),
            )

        def run(reason: str, forced: bool = False) -> Decision:
            return decide(RUN, reason, forced=forced)

        pinned = self.options.pins.get(pname)
        if pinned is not None:  # the host chose this bundle for a task run alone in a container
            return decide(REUSE, "given by the host", pinned)
        if self.options.force_all:
            return run("forced (--force-all)", forced=True)
        if self.options.force and is_root(task):
            return run("forced (--force)", forced=True)
        if declaration.force:
            return run("forced (mark_force)", forced=True)
        for arg, dep in declaration.deps.items():
            if not decisions[dep.task_id].reuse:
                return run(f"upstream {arg} ({dep}) will run")
        if row is None:
            renamed = next((r for (p, _n), r in rows.items() if p == pname), None)
            if renamed is not None:
                return run(f"output renamed: {renamed.name} -> {name}")
            return run(self._why_new(task, name))
        if code is not None and not self.options.ignore_code_version and row.code_version != code.version:
            if not row.code_version:  # a bundle that does not say what code made it is not this task's
                return run("its bundle records no code identity")
            return run(self._why_code(row, code.version, identity))
        wanted_tags = output_tags(task)
        have_tags = tags.get(row.uuid, {})
        if any(have_tags.get(k) != v for k, v in wanted_tags.items()):
            return run("output tags changed")
        expected = {arg: decisions[dep.task_id].uuid for arg, dep in declaration.deps.items()}
        expected.update({arg: ext.bundle.uuid for arg, ext in declaration.externals.items() if ext.bundle})
        if is_root(task) and self.options.input_bundle_uuid:
            expected["pipeline_input"] = self.options.input_bundle_uuid
        used = recorded.get(row.uuid, {})
        for arg, uuid in expected.items():
            if used.get(arg) != uuid:
                return run(f"upstream {arg} changed: {_short(used.get(arg))} -> {_short(uuid)}")
        for arg, uuid in used.items():
            if arg not in expected and not self._is_current(uuid):
                return run(f"upstream {arg} changed (a newer bundle of its recipe exists)")
        return decide(REUSE, "up to date", row.uuid)

    def _code_record(self, cls: type, code: CodeVersion | None) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """What a class's bundles record of its code, and the listing of its files (once per class:
        every decision of the class shares them, read-only)."""
        if cls not in self._records:
            identity = self.sources.identity(cls)
            listing = tuple(identity.listing()) if identity is not None else ()
            self._records[cls] = (code.as_git_info() if code else None, listing)
        return self._records[cls]

    def _why_code(self, row: IndexRow, version: str, identity: CodeIdentity | None) -> str:
        """The files that changed since the bundle was made, when both identities list them."""
        if identity is None:
            return f"code changed: {_code(row.code_version or '')} -> {_code(version)}"
        manifest = self._manifest(row.uuid)
        files = (manifest.git_info or {}).get("code_files") if manifest is not None else None
        return identity.changes_since(row.code_version or "", files)

    def _manifest(self, uuid: str) -> BundleManifest | None:
        """A bundle's manifest, or None (named once in the log) when it cannot be read."""
        try:
            return self.context.load_manifest(uuid)
        except (BundleNotFound, BundleCorrupt, ManifestRejected) as err:
            self._unusable_bundle(uuid, str(err))
            return None

    def _unusable_bundle(self, uuid: str, why: str) -> None:
        if uuid not in self._unusable:
            self._unusable.add(uuid)
            LOG.warning("bundle %s is not used for reuse: %s", uuid, why)

    def _why_new(self, task: PipeTask, name: str) -> str:
        """Why a task with no bundle of its recipe runs. When its class has made this output with
        one parameter set only, that value changed: 'new parameters: alpha=1.0 -> 0.5'. When it
        has made it with several (a sweep), this is one more value: 'no bundle yet for c=666.0;
        newest other: c=100.0'. Otherwise (never run, or another class's bundle): 'no bundle yet'."""
        earlier = self._earlier_params(type(task), name)
        if not earlier:
            return "no bundle yet"
        before = earlier[0]
        now = typed_params(task)
        # equal values written differently ([1, 10] and [1.0, 10.0]) are different recipes too
        changed = [k for k in sorted(now) if before.get(k) != now[k] or repr(before.get(k)) != repr(now[k])]
        if not changed:
            return "upstream recipe changed"
        if len(earlier) == 1:
            said = f"new parameters: {', '.join(f'{k}={before.get(k)!r} -> {now[k]!r}' for k in changed)}"
            if all(before.get(k) == now[k] for k in changed):
                said += " (equal values written differently: a recipe keeps its parameters as written)"
            return said
        mine = ", ".join(f"{k}={now[k]!r}" for k in changed)
        other = ", ".join(f"{k}={before.get(k)!r}" for k in changed)
        return f"no bundle yet for {mine}; newest other: {other}"

    def _earlier_params(self, cls: type, name: str) -> list[Mapping[str, Any]]:
        """The distinct parameter sets `cls` made bundles called `name` with, newest first (the
        newest bundle of the name must be the class's own; a few recipes are read, once per apply)."""
        key = (cls, name)
        if key not in self._params_seen:
            self._params_seen[key] = self._read_earlier_params(cls, name)
        return self._params_seen[key]

    def _read_earlier_params(self, cls: type, name: str) -> list[Mapping[str, Any]]:
        rows = self.context.search(BundleQuery(name=name, limit=EARLIER_BUNDLES))
        found: list[Mapping[str, Any]] = []
        recipes: set[str] = set()
        for i, row in enumerate(rows):
            if row.processing_name in recipes or not row.processing_name.startswith(f"{cls.__name__}_"):
                if i == 0:
                    return []
                continue
            recipes.add(row.processing_name)
            params = self._recorded_params(row.uuid, cls)
            if params is None:
                if i == 0:
                    return []
                continue
            if params not in found:
                found.append(params)
            if len(found) > 1:  # enough to tell one value from several
                break
        return found

    def _recorded_params(self, uuid: str, cls: type) -> Mapping[str, Any] | None:
        """The typed parameters a bundle of `cls` records; None when it is another class's or unreadable."""
        manifest = self._manifest(uuid)
        if manifest is None or manifest.code_ref != class_path(cls):
            return None
        from disdat_luigi.store import codec

        recorded = manifest.typed_params if manifest.typed_params is not None else manifest.params
        try:
            before = codec.decode(recorded) if recorded is not None else {}
        except Exception as err:  # noqa: BLE001 - a planted value: whatever decoding raises
            self._unusable_bundle(manifest.uuid, f"its parameters cannot be read ({type(err).__name__}: {err})")
            return None
        if not isinstance(before, Mapping):
            self._unusable_bundle(manifest.uuid, f"its parameters are a {type(before).__name__}, not a mapping")
            return None
        return before

    def _is_current(self, uuid: str) -> bool:
        """True when `uuid` is still the newest bundle of its recipe and name."""
        row = self.context.index.rows([uuid]).get(uuid)
        if row is None:
            return False
        newest = self.context.index.newest_by_recipe([row.processing_name]).get((row.processing_name, row.name))
        return newest is not None and newest.uuid == uuid

    def _pull_metadata(self, names: set[str]) -> None:
        from disdat_luigi.store.remote.sync import RemoteSync

        sync = RemoteSync(self.context, self.context.remote_settings)
        for name in sorted(names):
            for uuid, why in sync.pull(name).skipped:  # a damaged or planted bundle: named, planned around
                self._unusable_bundle(uuid, f"not pulled: {why}")


def post_order(root: PipeTask) -> list[PipeTask]:
    """Every statically required task once, each after all of its upstream tasks."""
    order: list[PipeTask] = []
    seen: set[str] = set()
    stack: list[tuple[PipeTask, bool]] = [(root, False)]
    while stack:
        task, expanded = stack.pop()
        if expanded:
            order.append(task)
            continue
        if task.task_id in seen:
            continue
        seen.add(task.task_id)
        stack.append((task, True))
        for dep in reversed(list(declaration_of(task).deps.values())):
            if dep.task_id not in seen:
                stack.append((dep, False))
    return order


def _defines_tasks(module: str) -> bool:
    """True when `module` is loaded and defines a task class (PipeTask's own module included)."""
    from disdat_luigi.apply.task import PipeTask  # apply.task imports this module

    loaded = sys.modules.get(module)
    return loaded is not None and any(
        isinstance(value, type) and issubclass(value, PipeTask) and value.__module__ == module
        for value in list(vars(loaded).values())
    )


def _code(version: str) -> str:
    """A code version as explain shows it: blob hashes and commits shortened, never cut to equal."""
    if version.startswith(("declared:", "image:")):
        return version
    head, _plus, diff = version.partition("+")
    return f"{head[:12]}+{diff[:8]}" if diff else head[:12]


def _short(uuid: str | None) -> str:
    return uuid[:8] if uuid else "none"
