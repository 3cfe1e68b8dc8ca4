"""`PipeTask`: a luigi Task whose output is a versioned bundle (public as `disdat_luigi.pipe.PipeTask`).

Users declare luigi Parameters and implement `pipe_requires` and `pipe_run`; `requires`,
`complete` and `run` are provided here and are not meant to be overridden.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import luigi
from luigi.parameter import ParameterVisibility
from luigi.task_register import Register

from disdat_luigi.apply.identity import class_path, luigi_params, typed_params
from disdat_luigi.apply.journal import Journal
from disdat_luigi.apply.local import exit_message
from disdat_luigi.apply.plan import Planner
from disdat_luigi.apply.state import (
    Declaration,
    External,
    decision_of,
    declaration_of,
    is_root,
    options_of,
    output_name,
    output_tags,
    state_of,
)
from disdat_luigi.config import RemoteSettings
from disdat_luigi.errors import BundleStateError, PipelineError, RequiresFailed
from disdat_luigi.store import queries
from disdat_luigi.store.bundle import Bundle
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.index import BundleQuery
from disdat_luigi.store.names import check_name, check_tags
from disdat_luigi.store.store import LocalStore


class _PipeRegister(Register):
    """luigi's task metaclass, also forgetting a class's remembered parameters (see
    `PipeTask.get_params`) when a parameter is set on or deleted from it or a base class."""

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if isinstance(value, luigi.Parameter):
            _forget_params(cls)

    def __delattr__(cls, name: str) -> None:
        super().__delattr__(name)
        _forget_params(cls)


def _forget_params(cls: type) -> None:
    for klass in (cls, *_all_subclasses(cls)):
        if "_pipe_params" in klass.__dict__:
            type.__delattr__(klass, "_pipe_params")


def _all_subclasses(cls: type) -> list[type]:
    found: list[type] = []
    subclasses: list[type] = type.__subclasses__(cls)
    for sub in subclasses:
        found += [sub, *_all_subclasses(sub)]
    return found


class PipeTask(luigi.Task, metaclass=_PipeRegister):
    """A luigi Task that reads its inputs from, and writes its output to, bundles."""

    # HIDDEN, not PRIVATE: luigi re-creates dynamic dependencies from their non-private parameters
    disdat_apply = luigi.Parameter(default="", significant=False, visibility=ParameterVisibility.HIDDEN)

    # where the task runs: an [executor.NAME] section ("local": in the apply process), and the
    # resources it asks of it (vcpus, memory MiB, gpus, timeout seconds, retries)
    executor: ClassVar[str] = "local"
    executor_options: ClassVar[Mapping[str, Any]] = {}

    # --- what users implement --------------------------------------------------------------

    def pipe_requires(self) -> None:
        """Declare inputs with add_dependency / add_external_dependency (default: none)."""

    def pipe_run(self, **inputs: Any) -> Any:
        """Compute the output from `inputs` (one keyword per dependency); return it."""
        return None

    # --- declaring (inside pipe_requires) --------------------------------------------------

    def add_dependency(self, param_name: str, pipe_class: type[PipeTask], params: Mapping[str, Any]) -> None:
        self._pipe_declaring("add_dependency").deps[check_name(param_name, "dependency name")] = self._pipe_make(
            pipe_class, params
        )

    def add_external_dependency(
        self,
        param_name: str,
        pipe_class: type[PipeTask] | None,
        params: Mapping[str, Any] | None,
        human_name: str | None = None,
        uuid: str | None = None,
    ) -> Bundle | None:
        """Use an existing bundle as input, found by uuid, by human name (newest), or as the newest
        bundle `pipe_class(**params)` made. Returns it, or None (apply then fails naming it)."""
        declaration = self._pipe_declaring("add_external_dependency")
        context = self._pipe_context()
        if options_of(self).incremental_pull and (uuid is not None or human_name is not None):
            _pull_metadata(context, human_name, uuid)  # the remote may hold it (inside `dsdt run`)
        if uuid is not None:
            bundle, how = queries.newest(context, None, uuid=uuid), f"no bundle with uuid {uuid}"
        elif human_name is not None:
            bundle, how = queries.newest(context, human_name), f"no bundle named {human_name!r}"
        elif pipe_class is not None:
            task = self._pipe_make(pipe_class, params or {})
            planner = self._pipe_planner()
            pname = planner.processing_name(task, planner.upstream_names(task))
            if options_of(self).incremental_pull:
                _pull_metadata(context, output_name(task), None)
            rows = context.search(BundleQuery(processing_name=pname, limit=1))
            bundle = queries.load(context, rows[0]) if rows else None
            how = f"no bundle made by {task}"
        else:
            raise PipelineError(f"add_external_dependency({param_name!r}) needs a uuid, a human_name or a class")
        declaration.externals[check_name(param_name, "dependency name")] = External(bundle, how)
        return bundle

    def set_bundle_name(self, name: str) -> None:
        self._pipe_declaring("set_bundle_name").bundle_name = check_name(name)

    def add_tags(self, tags: Mapping[str, str]) -> None:
        """Tag this task's output bundle (in pipe_requires, or in pipe_run)."""
        bundle = state_of(self).bundle
        if bundle is not None:
            bundle.add_tags(tags)
        else:
            self._pipe_declaring("add_tags").tags.update(check_tags(tags))

    def mark_force(self) -> None:
        self._pipe_declaring("mark_force").force = True

    def mark_transient(self, push_meta: bool = True) -> None:
        """Never push this task's output (it stays in the local context). Disdat's `push_meta`
        (push the metadata without the data) is accepted and ignored: a bundle on the remote is
        always a whole one here."""
        self._pipe_declaring("mark_transient").transient = True

    def processing_id(self) -> str:
        """This task's processing name (class, parameters and upstream recipes), as in Disdat."""
        return self._pipe_planner().plan(self)[-1].processing_name

    def human_id(self) -> str:
        """The name of this task's output bundle."""
        return output_name(self)

    def input_bundles(self) -> dict[str, Bundle]:
        """The bundles this task reads, by argument name (upstream outputs and external inputs)."""
        return self._pipe_inputs()

    # --- helpers inside pipe_run ---------------------------------------------------------

    def create_output_file(self, names: Any) -> Any:
        """luigi LocalTargets inside this task's bundle, for a name, a list or a dict of names."""
        bundle = self._pipe_open_bundle("create_output_file")
        return _map_names(names, lambda name: luigi.LocalTarget(bundle.get_file(name)))

    def create_remote_output_file(self, names: Any) -> Any:
        """luigi S3Targets under this task's bundle's remote directory."""
        from luigi.contrib.s3 import S3Target

        bundle = self._pipe_remote_bundle("create_remote_output_file")
        return _map_names(names, lambda name: S3Target(bundle.get_remote_file(name)))

    def create_output_dir(self, name: str) -> str:
        return self._pipe_open_bundle("create_output_dir").get_directory(name)

    def create_remote_output_dir(self, name: str) -> str:
        """An s3:// directory inside this task's bundle's remote directory (needs incremental push)."""
        return f"{self.get_remote_output_dir()}/{name}"

    def get_output_dir(self) -> str:
        return str(Path(self._pipe_open_bundle("get_output_dir").local_dir) / "data")

    def get_remote_output_dir(self) -> str:
        bundle = self._pipe_remote_bundle("get_remote_output_dir")
        return bundle.get_remote_directory(".").rstrip("/.")

    def get_tags(self, param_name: str) -> dict[str, str]:
        return self._pipe_input_bundle(param_name).tags

    def get_bundle_uuid(self, param_name: str) -> str:
        return self._pipe_input_bundle(param_name).uuid

    def yield_dependency(self, pipe_class: type[PipeTask], params: Mapping[str, Any]) -> PipeTask:
        """A dependency decided while running. As in Disdat it returns the task:
        `t = self.yield_dependency(Cls, params); yield t; t.pipe_output` (or yield a list of
        them); `data = yield self.yield_dependency(Cls, params)` works too."""
        state = state_of(self)
        state.dynamic_count += 1
        task = self._pipe_make(pipe_class, params)
        state_of(task).planner = state.planner  # planned with this apply's caches when yielded
        state.dynamic_args[task.task_id] = f"{pipe_class.__name__}_{state.dynamic_count}"
        return task

    @property
    def pipe_output(self) -> Any:
        """This task's output data, once its bundle exists (e.g. after yielding the task)."""
        return self._pipe_newest(self).data

    # --- luigi ---------------------------------------------------------------------------

    @classmethod
    def get_params(cls) -> list[tuple[str, luigi.Parameter]]:
        """luigi's list, remembered per class: luigi walks dir(cls) on each of the ~10 calls a
        task makes while it is created, scheduled, logged and run."""
        remembered = cls.__dict__.get("_pipe_params")
        if remembered is None:
            remembered = tuple(super().get_params())
            type.__setattr__(cls, "_pipe_params", remembered)  # not a Parameter: no hook needed
        return list(remembered)

    def requires(self) -> dict[str, PipeTask]:
        return dict(declaration_of(self).deps)

    def complete(self) -> bool:
        decision = decision_of(self)
        if decision is None:  # a dynamic dependency: plan it (and its upstream) now
            decision = self._pipe_planner().plan(self)[-1]
        if decision.reuse or state_of(self).produced:
            return True
        return Journal(options_of(self).journal).made(self.task_id) is not None

    def run(self) -> Generator[Any, Any, None]:
        options = options_of(self)
        state = state_of(self)
        decision = state.decision or self._pipe_planner().plan(self)[-1]
        inputs = self._pipe_inputs()
        if options.incremental_pull:
            _localize_all(self._pipe_context(), inputs.values())
        kwargs = {arg: bundle.data for arg, bundle in inputs.items() if arg != "pipeline_input"}
        if "pipeline_input" in inputs:
            if _accepts(self.pipe_run, "pipeline_input"):
                kwargs["pipeline_input"] = inputs["pipeline_input"].data
            else:  # lineage names the input only on the task that received it
                del inputs["pipeline_input"]
        elif _requires(self.pipe_run, "pipeline_input"):
            why = "this run was given no input bundle" if is_root(self) else "only the root task of a run receives it"
            error = PipelineError(
                f"{self}.pipe_run requires pipeline_input, but {why}",
                hint="give the input with `dsdt run INPUT ...` / `dsdt apply -i INPUT`, or default it: "
                "pipe_run(self, pipeline_input=None)",
            )
            Journal(options.journal).failed(str(self), f"{type(error).__name__}: {error}")
            raise error
        started = time.time()
        bundle = Bundle(
            self._pipe_context(),
            name=decision.bundle_name,
            processing_name=decision.processing_name,
            tags=output_tags(self),
            params=luigi_params(self),
            code_method=class_path(type(self)),
            vc_info={**(decision.git_info or {}), **options.provenance} or None,
            typed_params=typed_params(self),
        )
        bundle.open(force_uuid=options.output_bundle_uuid if is_root(self) else None)
        state.bundle, state.dynamic_count, state.dynamic_args = bundle, 0, {}
        journal = Journal(options.journal)
        try:
            result = self.pipe_run(**kwargs)
            if inspect.isgenerator(result):
                result = yield from self._pipe_drive(result, inputs)
            names = list(inputs)
            bundle.add_dependencies([inputs[n] for n in names], names)
            bundle.add_data(result, inputs=inputs.values())  # strings it was given stay strings
            bundle.add_timing(started, time.time())
            if is_root(self) and options.mark_root:
                bundle.mark_root()
            bundle.close()
        except Exception as err:
            bundle.abandon()
            journal.failed(str(self), f"{type(err).__name__}: {err}")
            raise
        except SystemExit as err:  # a task that exits has failed, whichever runner ran it
            bundle.abandon()
            journal.failed(str(self), exit_message(str(err)))
            raise
        except BaseException:  # luigi abandoned the generator to schedule dynamic dependencies
            bundle.abandon()
            raise
        finally:
            state.bundle = None
        state.produced = bundle.uuid
        journal.produced(str(self), self.task_id, decision.processing_name, bundle.uuid)
        if options.incremental_push and not declaration_of(self).transient:
            bundle.commit()
            if bundle.context.meta.remote_url:  # as in Disdat, no remote: committed only (apply warned)
                bundle.push()

    def _pipe_drive(self, generator: Generator[Any, Any, Any], inputs: dict[str, Bundle]) -> Generator[Any, Any, Any]:
        """Run a generator pipe_run: hand its yielded dependencies to luigi, send back their data."""
        value = None
        while True:
            try:
                request = generator.send(value)
            except StopIteration as stop:
                return stop.value
            wanted = request if isinstance(request, (list, tuple)) else [request]
            args = state_of(self).dynamic_args
            if not all(isinstance(w, PipeTask) and w.task_id in args for w in wanted):
                raise PipelineError(f"{self}.pipe_run yielded {request!r}; yield self.yield_dependency(...)")
            yield list(wanted)
            bundles = [self._pipe_newest(w) for w in wanted]
            if options_of(self).incremental_pull:
                _localize_all(self._pipe_context(), bundles)
            inputs.update({args[w.task_id]: b for w, b in zip(wanted, bundles)})
            data = [b.data for b in bundles]
            value = data if isinstance(request, (list, tuple)) else data[0]

    # --- internals (prefixed to stay out of users' way) ------------------------------------

    def _pipe_context(self) -> LocalContext:
        options = options_of(self)
        return _open_context(options.home, options.context, os.getpid(), options.remote_settings)

    def _pipe_make(self, pipe_class: type[PipeTask], params: Mapping[str, Any]) -> PipeTask:
        if not (isinstance(pipe_class, type) and issubclass(pipe_class, PipeTask)):
            raise PipelineError(f"{self}: dependency class {pipe_class!r} is not a PipeTask subclass")
        known = {name for name, _param in pipe_class.get_params() if name != "disdat_apply"}
        unknown = sorted(set(params) - known)
        if unknown:  # luigi's own message would print the apply's hidden options
            raise RequiresFailed(
                f"{self}: {pipe_class.__name__} has no parameter {', '.join(unknown)}",
                hint=f"its parameters are: {', '.join(sorted(known)) or 'none'}",
            )
        try:
            return pipe_class(**dict(params), disdat_apply=self.disdat_apply)
        except luigi.parameter.MissingParameterException as err:
            missing = str(err).rpartition(":")[2].strip()
            raise RequiresFailed(f"{self}: {pipe_class.__name__} {missing}", hint="pass it in the params") from err

    def _pipe_declaring(self, action: str) -> Declaration:
        state = state_of(self)
        if state.declaration is None or not state.declaring:
            raise PipelineError(f"{action} belongs in pipe_requires (of {self})")
        return state.declaration

    def _pipe_planner(self) -> Planner:
        """The planner of this task's apply (its caches), when it planned this task in this
        process; else a new one (a task luigi re-created in a worker process)."""
        planner = state_of(self).planner
        if planner is None or planner.pid != os.getpid():
            planner = Planner(options_of(self), self._pipe_context())
        return planner

    def _pipe_newest(self, task: PipeTask) -> Bundle:
        """The bundle of an upstream task this apply chose: the one it made in this apply (in any
        process), else the one its plan reuses. Never "the newest of its recipe", which a peer
        (or a writer of the remote) could have published in between."""
        context = self._pipe_context()
        decision = decision_of(task)
        if decision is not None and decision.reuse and decision.uuid:
            return queries.require(context, None, decision.uuid)
        made = state_of(task).produced or Journal(options_of(self).journal).made(task.task_id)
        if made is not None:
            return queries.require(context, None, made)
        decision = decision or self._pipe_planner().plan(task)[-1]  # a dynamic dependency made elsewhere
        if decision.reuse and decision.uuid:
            return queries.require(context, None, decision.uuid)
        raise PipelineError(f"{task} has not made its bundle in this apply (in context {context.name!r})")

    def _pipe_inputs(self) -> dict[str, Bundle]:
        declaration = declaration_of(self)
        inputs = {arg: self._pipe_newest(dep) for arg, dep in declaration.deps.items()}
        inputs.update({arg: ext.bundle for arg, ext in declaration.externals.items() if ext.bundle is not None})
        options = options_of(self)
        if is_root(self) and options.input_bundle_uuid:
            inputs["pipeline_input"] = queries.require(self._pipe_context(), None, options.input_bundle_uuid)
        return inputs

    def _pipe_input_bundle(self, param_name: str) -> Bundle:
        declaration = declaration_of(self)
        if param_name in declaration.deps:
            return self._pipe_newest(declaration.deps[param_name])
        if param_name in declaration.externals and declaration.externals[param_name].bundle is not None:
            return declaration.externals[param_name].bundle  # type: ignore[return-value]
        raise PipelineError(f"{self} has no input named {param_name!r}")

    def _pipe_remote_bundle(self, action: str) -> Bundle:
        """The open bundle, for files written straight to its remote directory: only an
        incremental-push apply publishes the bundle that accounts for them."""
        if not options_of(self).incremental_push:
            raise PipelineError(
                f"{action} writes into the bundle's remote directory, which only an incremental push publishes",
                hint="apply with incremental_push=True (`dsdt apply --incremental-push`) on a context with a remote",
            )
        return self._pipe_open_bundle(action)

    def _pipe_open_bundle(self, action: str) -> Bundle:
        bundle = state_of(self).bundle
        if bundle is None:
            raise BundleStateError(f"{action} works inside pipe_run, while the output bundle is open")
        return bundle


def forget_open_contexts() -> None:
    """At the start of an apply: a context deleted and made again since the last apply must not be
    written through the old one's (deleted) index."""
    _open_context.cache_clear()


@functools.lru_cache(maxsize=32)
def _open_context(home: str, name: str, pid: int, remote_settings: RemoteSettings) -> LocalContext:
    """One LocalContext (one sqlite connection) per store, context and process, shared by its tasks."""
    return LocalStore(Path(home), remote_settings=remote_settings).context(name)


def _map_names(names: Any, make: Any) -> Any:
    if isinstance(names, str):
        return make(names)
    if isinstance(names, Mapping):
        return {key: make(name) for key, name in names.items()}
    return [make(name) for name in names]


def _requires(function: Any, keyword: str) -> bool:
    parameter = inspect.signature(function).parameters.get(keyword)
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _accepts(function: Any, keyword: str) -> bool:
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _pull_metadata(context: LocalContext, name: str | None, uuid: str | None) -> None:
    """Bring the remote's bundles of that name (or that uuid) into the context, metadata only;
    nothing when the context has no remote or the remote lacks them."""
    from disdat_luigi.errors import BundleNotFound, ManifestRejected, RemoteNotConfigured
    from disdat_luigi.store.remote.sync import RemoteSync

    if not context.meta.remote_url:
        return
    try:
        result = RemoteSync(context, context.remote_settings).pull(name=name if uuid is None else None, uuid=uuid)
    except (BundleNotFound, RemoteNotConfigured):
        return
    except ManifestRejected as err:  # a damaged remote copy: the local one (if any) is what counts
        logging.getLogger("disdat_luigi.apply").warning("not pulled: %s", err.message)
        return
    for skipped, why in result.skipped:
        logging.getLogger("disdat_luigi.apply").warning("not pulled: bundle %s: %s", skipped, why)


def _localize_all(context: LocalContext, bundles: Any) -> None:
    from disdat_luigi.store.remote.sync import RemoteSync

    remote_only = [b for b in bundles if context.is_remote_only(b.uuid)]
    if remote_only:
        sync = RemoteSync(context, context.remote_settings)
        for bundle in remote_only:
            sync.localize(bundle)
