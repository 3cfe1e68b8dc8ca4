"""The public Python API: thin functions over the store, remote, pipeline and run layers.

Every function takes the name of a local context first (`local` or `remote/local`). None prints,
exits or silences warnings; failures raise `disdat_luigi.errors` exceptions.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disdat_luigi.config import init_config, load_settings, several_tags
from disdat_luigi.errors import *  # noqa: F403  (the error tree is part of this module's surface)
from disdat_luigi.errors import (
    BundleNotFound,
    BundleStateError,
    InvalidPolicy,
    JobFailed,
    PartialPull,
    PathNotFound,
    RemoteError,
    RemoteOnlyData,
    UnsupportedValue,
)
from disdat_luigi.run.request import BackendName, RunStatus
from disdat_luigi.store import queries
from disdat_luigi.store.bundle import Bundle as StoreBundle
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.fsutil import collect_files, special_kind
from disdat_luigi.store.index import BundleQuery, parse_date
from disdat_luigi.store.manifest import is_uuid
from disdat_luigi.store.names import check_name, check_tags
from disdat_luigi.store.queries import LineageRecord
from disdat_luigi.store.store import LocalStore
from disdat_luigi.store.verify import Problem, VerifyReport
from disdat_luigi.store.verify import verify as _verify

if TYPE_CHECKING:
    from disdat_luigi.apply.driver import ApplyOutcome
    from disdat_luigi.apply.plan import Decision
    from disdat_luigi.dockerize.images import ImageResult
    from disdat_luigi.dockerize.prune import PruneReport
    from disdat_luigi.run.batch.state import JobState
    from disdat_luigi.run.request import RunResult
    from disdat_luigi.store.gc import GcResult, NameUsage
    from disdat_luigi.store.remote.progress import Progress
    from disdat_luigi.store.remote.sync import PullResult, PushResult, RemoteSync
    from disdat_luigi.store.transfers import RemoteRef

log = logging.getLogger(__name__)
_LAZY = {"GcResult": "disdat_luigi.store.gc"}  # public names whose modules only gc needs: `ls` does not load them


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendName",
    "Bundle",
    "GcResult",
    "RunStatus",
    "LineageRecord",
    "VerifyReport",
    "add",
    "apply",
    "cancel",
    "cancel_apply",
    "apply_outcome",
    "cat",
    "commit",
    "context",
    "current_context",
    "context_remote",
    "delete_context",
    "dockerize",
    "prune_images",
    "du",
    "explain",
    "explain_preparation",
    "gc",
    "get",
    "init",
    "iter_search",
    "jobs",
    "logs",
    "lineage",
    "parse_pipeline",
    "ls_contexts",
    "pull",
    "push",
    "remote",
    "remote_usage",
    "rm",
    "rmr",
    "run",
    "search",
    "set_aws_profile",
    "switch",
    "uncommitted_count",
    "verify",
    "wait",
]


def _store() -> LocalStore:
    settings = load_settings()
    return LocalStore(settings.root, remote_settings=settings.remote)


class _AnyStoreBundle(type):
    """Makes every store bundle an instance of `api.Bundle` (they differ only in construction)."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, StoreBundle)


class Bundle(StoreBundle, metaclass=_AnyStoreBundle):
    """Disdat's `api.Bundle`: the store's bundle whose first argument may also be a context name
    (`Bundle("mydata", name="x", data=...)`). Bundles handed out by `search`, `get`, `pull` and
    the rest are instances of it as well."""

    def __init__(self, local_context: str | LocalContext, *args: Any, **kwargs: Any) -> None:
        context = _context(local_context) if isinstance(local_context, str) else local_context
        super().__init__(context, *args, **kwargs)


def _context(local_context: str) -> LocalContext:
    return _store().context(local_context)


def init() -> Path:
    """Create the config file (from the template) and the store root; harmless when they exist."""
    path = init_config()
    load_settings().root.mkdir(parents=True, exist_ok=True)
    return path


def context(context_name: str) -> None:
    """Create a local context (`local` or `remote/local`); an existing one is left alone."""
    _store().create_context(context_name)


def delete_context(context_name: str, remote: bool = False, force: bool = False) -> None:
    """Delete a local context, as Disdat does, even while it holds uncommitted bundles (which
    exist nowhere else): a warning counts them. With `remote=True` the remote objects go too.
    (`force` is accepted for compatibility; the CLI asks for `-f` instead of warning.)"""
    store = _store()
    ctx = store.context(context_name)
    uncommitted = len(ctx.search(BundleQuery(committed=False)))
    if uncommitted:
        log.warning(
            "deleting context %s with %d uncommitted bundle(s); they existed nowhere else", ctx.name, uncommitted
        )
    if remote:
        _sync(ctx).delete_everything()
    else:
        _release_holds(ctx, set(ctx.remote_only_uuids()))  # this store no longer relies on the remote
    store.delete_context(context_name)


def uncommitted_count(local_context: str) -> int:
    """How many bundles of the context are not committed (they exist nowhere else)."""
    return len(_context(local_context).search(BundleQuery(committed=False)))


def remote(local_context: str, remote_context: str, remote_url: str, force: bool = False) -> None:
    """Bind a context to `s3://bucket/prefix` (the bucket must exist; the prefix need not).
    Moving a context to another remote would strand the bundles whose files only the old remote
    holds: that is refused unless `force`."""
    from disdat_luigi.store.location import RemoteLocation
    from disdat_luigi.store.remote.s3 import S3

    ctx = _context(local_context)
    location = RemoteLocation.parse(remote_url, remote_context)
    S3(ctx.remote_settings).check_bucket(location.bucket)
    if ctx.meta.remote_url and not force and RemoteLocation.of(ctx) != location:
        stranded = ctx.remote_only_uuids()
        if stranded:
            raise RemoteOnlyData(
                f"{len(stranded)} bundle(s) of context {ctx.name!r} keep their files only on its current remote "
                f"{ctx.meta.remote_url}; binding it elsewhere would make them unreadable",
                hint="localize them first (`dsdt pull -l`), or pass --force (force=True) to rebind anyway",
            )
    ctx.bind_remote(location.context, remote_url)


@dataclass(frozen=True)
class RemoteUsage:
    """What deleting a remote context would destroy: its bundles, and per local context bound to
    it the bundles that would become unreadable (their files are only there)."""

    url: str
    bundles: int
    unreadable: dict[str, int]


def remote_usage(local_context: str) -> RemoteUsage:
    """Count the bundles of the context's remote and the local bundles that depend on it."""
    from disdat_luigi.store.location import RemoteLocation

    store = _store()
    ctx = store.context(local_context)
    location = RemoteLocation.of(ctx)
    unreadable = {}
    for name in store.list_contexts():
        other = store.context(name)
        if other.meta.remote_url and RemoteLocation.of(other) == location:
            stranded = other.remote_only_uuids()
            if stranded:
                unreadable[name] = len(stranded)
    return RemoteUsage(location.url(location.root), len(_sync(ctx).remote_uuids()), unreadable)


def _sync(ctx: LocalContext, progress: Progress | None = None) -> RemoteSync:
    from disdat_luigi.store.remote.sync import RemoteSync

    return RemoteSync(ctx, ctx.remote_settings, progress)  # settings came with the context


def push(
    local_context: str,
    bundle_name: str | None = None,
    tags: dict[str, str] | None = None,
    uuid: str | None = None,
    delocalize: bool = False,
    progress: Progress | None = None,
) -> PushResult:
    """Publish committed bundles to the remote. Without name or uuid: every committed bundle
    not yet on the remote. With `delocalize` the local copies go once the push is verified."""
    from disdat_luigi.store.remote.sync import bundles_to_push

    ctx = _context(local_context)
    sync = _sync(ctx, progress)
    return sync.push(bundles_to_push(ctx, bundle_name, uuid, check_tags(tags)), delocalize=delocalize)


def pull(
    local_context: str,
    bundle_name: str | None = None,
    uuid: str | None = None,
    localize: bool = False,
    progress: Progress | None = None,
) -> PullResult:
    """Fetch bundle metadata from the remote (and the files, verified, with `localize`): by uuid
    one bundle, by name every version of it, with neither every bundle. The list returned also
    says what was actually fetched (`.fetched`). Remote bundles with a rejected manifest do not
    stop the others: they are pulled around, then PartialPull (a ManifestRejected) names them."""
    result = _sync(_context(local_context), progress).pull(bundle_name, uuid, localize)
    if result.skipped:
        first_uuid, reason = result.skipped[0]
        raise PartialPull(
            f"{len(result.skipped)} remote bundle(s) were skipped as damaged, e.g. {first_uuid}: {reason}",
            result,
            hint=f"delete a damaged remote copy with `dsdt rmr -u {first_uuid}`",
        )
    return result


def rmr(
    local_context: str,
    bundle_name: str | None = None,
    uuid: str | None = None,
    tags: dict[str, str] | None = None,
    rm_all: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> list[RemoteRef]:
    """Delete bundles from the remote, with the rules of `rm`; `dry_run` only says which. Bundles
    whose files this context has only on the remote are kept unless `force`."""
    from disdat_luigi.store.remote.sync import bundles_to_remove

    if bundle_name is None and uuid is None and not rm_all:
        raise BundleStateError(
            "rmr without a bundle name or uuid would remove every bundle on the remote",
            hint="name a bundle or a uuid, or ask for everything explicitly (`dsdt rmr --all`, rm_all=True)",
        )
    ctx = _context(local_context)
    sync = _sync(ctx)
    doomed = bundles_to_remove(sync, bundle_name, uuid, check_tags(tags), rm_all)
    stranded = set(ctx.remote_only_uuids()) & {m.uuid for m in doomed}
    if stranded and not force:
        raise RemoteOnlyData(
            f"{len(stranded)} of the {len(doomed)} bundle(s) to delete keep their files only on the remote; "
            f"context {ctx.name!r} could no longer read them",
            hint="localize them first (`dsdt pull -l NAME`), or pass --force (force=True)",
        )
    if not dry_run:
        sync.remove(doomed)
    return doomed


def set_aws_profile(aws_profile: str) -> None:
    """Use this AWS profile from now on in this process (Disdat's call; `--profile` on the CLI)."""
    os.environ["AWS_PROFILE"] = aws_profile


def ls_contexts() -> list[str]:
    return _store().list_contexts()


def context_remote(context_name: str) -> tuple[str, str] | None:
    """The remote a context is bound to, as `dsdt remote` bound it: (s3 URL, remote context name)."""
    meta = _context(context_name).meta
    return (meta.remote_url, meta.remote_context) if meta.remote_url and meta.remote_context else None


def current_context() -> str | None:
    """The CLI's current context, or None when none is selected."""
    return _store().current_context_name()


def switch(context_name: str) -> None:
    _store().switch(context_name)


def search(
    local_context: str,
    human_name: str | None = None,
    processing_name: str | None = None,
    tags: dict[str, str] | None = None,
    is_committed: bool | None = None,
    find_intermediates: bool = False,
    find_roots: bool = False,
    before: datetime | str | None = None,
    after: datetime | str | None = None,
) -> list[StoreBundle]:
    """Closed bundles, newest first. Names match exactly; a name with '*' or '?' is a glob.
    `before`/`after` are datetimes or, as in Disdat, strings ('12-1-2009', '12-1-2009 12:13:42',
    or ISO 8601)."""
    return list(
        iter_search(
            local_context,
            human_name,
            processing_name,
            tags,
            is_committed,
            find_intermediates,
            find_roots,
            before,
            after,
        )
    )


def iter_search(
    local_context: str,
    human_name: str | None = None,
    processing_name: str | None = None,
    tags: dict[str, str] | None = None,
    is_committed: bool | None = None,
    find_intermediates: bool = False,
    find_roots: bool = False,
    before: datetime | str | None = None,
    after: datetime | str | None = None,
    newest_per_name: bool = False,
) -> Iterator[StoreBundle]:
    """`search`, one bundle at a time as the index yields them (`dsdt ls` prints the first row
    at once); with `newest_per_name` only the newest match of each name. Each bundle reads its
    manifest only when asked for something the index does not hold (its data, tags, files...)."""
    query = BundleQuery(
        name=human_name,
        processing_name=processing_name,
        tags=check_tags(tags),
        committed=is_committed,
        intermediates=find_intermediates,
        roots=find_roots,
        before=parse_date(before) if before is not None else None,
        after=parse_date(after) if after is not None else None,
        newest_per_name=newest_per_name,
    )
    return queries.stream(_context(local_context), query)


def get(
    local_context: str, bundle_name: str | None, uuid: str | None = None, tags: dict[str, str] | None = None
) -> StoreBundle | None:
    """The newest bundle called `bundle_name` (with `tags`), or the one `uuid` names; else None."""
    return queries.newest(_context(local_context), bundle_name, uuid, check_tags(tags))


def rm(
    local_context: str,
    bundle_name: str | None = None,
    uuid: str | None = None,
    tags: dict[str, str] | None = None,
    rm_all: bool = False,
    rm_old_only: bool = False,
) -> list[str]:
    """Delete local bundles and return their uuids: by uuid one bundle; by name the newest
    (`rm_all`: every version, `rm_old_only`: all but the newest). Without name or uuid it
    refuses unless `rm_all` (everything matching `tags`) or `rm_old_only`."""
    if bundle_name is None and uuid is None and not (rm_all or rm_old_only):
        raise BundleStateError(
            "rm without a bundle name or uuid would remove every bundle",
            hint="name a bundle or a uuid, or ask for everything explicitly (`dsdt rm --all`, rm_all=True)",
        )
    ctx = _context(local_context)
    rows = queries.removal_set(ctx, bundle_name, uuid, check_tags(tags), rm_all, rm_old_only)
    uuids = [row.uuid for row in rows]
    if uuid is not None and not uuids and is_uuid(uuid) and ctx.bundle_dir(uuid).is_dir():
        uuids = [uuid]  # a damaged bundle the index does not list: removable all the same
    held = set(ctx.remote_only_uuids()) & set(uuids)
    ctx.remove(uuids)
    _release_holds(ctx, held)
    return uuids


def _release_holds(ctx: LocalContext, uuids: set[str]) -> None:
    """This store deleted bundles whose files it had left on the remote: its holds go too."""
    if uuids and ctx.meta.remote_url:
        from disdat_luigi.store.remote.holds import RemoteGuards, store_id

        try:
            sync = _sync(ctx)
        except RemoteError as err:  # a hold left behind only keeps a bundle on the remote longer
            log.warning("could not release the remote holds of %d bundle(s): %s", len(uuids), err)
            return
        RemoteGuards(sync.s3, sync.location).release(sorted(uuids), store_id(ctx))


def gc(
    local_context: str,
    keep_last: int | None = None,
    keep_days: float | None = None,
    keep_tags: Mapping[str, str] | Iterable[str | tuple[str, str]] | None = None,
    remote: bool = False,
    dry_run: bool = True,
    force: bool = False,
) -> GcResult:
    """Reclaim what no keep rule keeps (see `KeepPolicy`), locally or with `remote=True` on the
    context's remote; unset rules come from the `[gc]` config section. With `dry_run` (the
    default) only the plan is made. `force` reclaims bundles not yet pushed (local) or held by
    other stores (remote). Returns the plan and what was done."""
    from disdat_luigi.store import gc as local_gc
    from disdat_luigi.store.policy import KeepPolicy, plan

    defaults = load_settings().gc
    policy = KeepPolicy(
        keep_last=defaults.keep_last if keep_last is None else keep_last,
        keep_days=defaults.keep_days if keep_days is None else keep_days,
        keep_tags=defaults.keep_tags if keep_tags is None else _keep_tags(keep_tags),
        force=force,
    )
    ctx = _context(local_context)
    if remote:
        from disdat_luigi.store.remote.gc import RemoteCollector

        return RemoteCollector(_sync(ctx)).collect(policy, defaults.grace_hours, dry_run)
    copies = None
    if ctx.meta.remote_url and not force:
        from disdat_luigi.store.remote.gc import RemoteCollector

        copies = RemoteCollector(_sync(ctx)).published()
    candidates = local_gc.local_candidates(ctx, copies)
    made = plan(candidates, policy, local_gc.now_us(), remote=False)
    if dry_run:
        return local_gc.GcResult(plan=made, remote=False, dry_run=True, without_remote=not ctx.meta.remote_url)
    removed = local_gc.reclaim(ctx, [c.uuid for c in made.reclaimed])
    _release_holds(ctx, {c.uuid for c in made.reclaimed if c.remote_only} & set(removed))
    freed = sum(c.bytes for c in made.reclaimed if c.uuid in set(removed))
    return local_gc.GcResult(
        plan=made,
        remote=False,
        dry_run=False,
        reclaimed=tuple(removed),
        bytes_reclaimed=freed,
        without_remote=not ctx.meta.remote_url,
    )


def _keep_tags(tags: Mapping[str, str] | Iterable[str | tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """{k: v}, ["k:v", ...] or [(k, v), ...] as pairs; InvalidPolicy for anything else."""
    if isinstance(tags, Mapping):
        return tuple((str(k), str(v)) for k, v in tags.items())
    if isinstance(tags, str):
        tags = [tags]
    pairs = []
    for item in tags:
        if isinstance(item, str):
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise InvalidPolicy(f"keep-tag {item!r} is not key:value")
            if several_tags(value):
                raise InvalidPolicy(
                    f"keep-tag {item!r} reads as the one tag {key} = {value!r}, not {len(item.split())} tags",
                    hint="repeat --keep-tag for each tag: "
                    + " ".join(f"--keep-tag {word}" for word in item.split())
                    + " (from Python: a list of 'key:value' strings)",
                )
            pairs.append((key, value))
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item) and item[0]:
            pairs.append((item[0], item[1]))
        else:
            raise InvalidPolicy(f"keep-tag {item!r} is not key:value")
    return tuple(pairs)


def du(local_context: str, remote: bool = False) -> list[NameUsage]:
    """Bundles and bytes per name, locally (files present here) or on the context's remote."""
    from disdat_luigi.store import gc as local_gc

    _ = load_settings().gc  # a mistake in [gc] is reported here too, as the docs of gc and du say
    ctx = _context(local_context)
    if remote:
        from disdat_luigi.store.remote.gc import RemoteCollector

        return RemoteCollector(_sync(ctx)).usage()
    return local_gc.usage(local_gc.local_candidates(ctx, remote=None))


def add(
    local_context: str,
    bundle_name: str,
    path: str | Path,
    tags: dict[str, str] | None = None,
    follow_links: bool = False,
) -> StoreBundle:
    """A new bundle from a file (data: its path) or a directory tree (data: the list of its file
    paths, relative layout kept). Symbolic links leading out of the tree are refused unless
    `follow_links`; FIFOs, sockets and devices are always refused."""
    source = Path(path).expanduser()
    if not source.exists():
        raise PathNotFound(f"no file or directory at {source}")
    if source.is_dir():
        files = collect_files(source, follow_links)
    elif source.is_file():
        files = [(source, source.name)]
    else:
        raise UnsupportedValue(
            f"{source} is {special_kind(source.stat().st_mode)}; `add` takes a regular file or a directory",
            hint="copy what you need into a regular file first",
        )
    ctx = _context(local_context)
    with Bundle(ctx, name=check_name(bundle_name), tags=tags) as bundle:
        copies = [_copy_into(bundle, file, rel) for file, rel in files]
        bundle.add_data(copies if source.is_dir() else copies[0])
    return bundle


def _copy_into(bundle: StoreBundle, source: Path, rel: str) -> str:
    target = bundle.get_file(rel)
    shutil.copyfile(source, target)
    return target


def cat(
    local_context: str, bundle_name: str | None, uuid: str | None = None, tags: dict[str, str] | None = None
) -> Any:
    """The data of the newest matching bundle (BundleNotFound when there is none)."""
    return queries.require(_context(local_context), bundle_name, uuid, check_tags(tags)).data


def commit(
    local_context: str, bundle_name: str | None, tags: dict[str, str] | None = None, uuid: str | None = None
) -> StoreBundle:
    """Mark the newest matching bundle committed (only committed bundles are pushed)."""
    return queries.require(_context(local_context), bundle_name, uuid, check_tags(tags)).commit()


def lineage(local_context: str, uuid: str, max_depth: int | None = None) -> list[LineageRecord]:
    """Upstream records of a bundle, breadth first, starting with the bundle itself."""
    return queries.lineage(_context(local_context), uuid, max_depth)


def apply(
    local_context: str,
    transform: Any,
    output_bundle: str = "-",
    input_tags: dict[str, str] | None = None,
    output_tags: dict[str, str] | None = None,
    force: bool = False,
    force_all: bool = False,
    params: dict[str, Any] | None = None,
    output_bundle_uuid: str | None = None,
    central_scheduler: bool = False,
    workers: int = 1,
    incremental_push: bool = False,
    incremental_pull: bool = False,
    input_bundle: str | None = None,
    executors: dict[str, str] | None = None,
    no_build: bool = False,
    localize: bool = False,
    env: Any = None,
    secrets: Any = None,
) -> dict[str, bool]:
    """Run the PipeTask `transform` (a class or 'module.Class') with `params`, reusing every
    bundle whose recipe is unchanged. Returns {'success', 'did_work'}; raises ApplyError (with
    `.result`) when a task fails. `input_tags` select the newest bundle carrying them as the
    root's `pipeline_input`. `executors` sends task classes elsewhere for this run
    ({"Fit": "batch"}, {"*": "debug"}: names of [executor.NAME] sections); `no_build` refuses a
    stale image instead of building it; `localize` brings remotely made bundles' files here.
    `env` and `secrets` (as for `run`) go to every task that runs in a container."""
    return apply_outcome(
        local_context,
        transform,
        output_bundle=output_bundle,
        input_tags=input_tags,
        output_tags=output_tags,
        force=force,
        force_all=force_all,
        params=params,
        output_bundle_uuid=output_bundle_uuid,
        central_scheduler=central_scheduler,
        workers=workers,
        incremental_push=incremental_push,
        incremental_pull=incremental_pull,
        input_bundle=input_bundle,
        executors=executors,
        no_build=no_build,
        localize=localize,
        env=env,
        secrets=secrets,
    ).as_result()


def apply_outcome(
    local_context: str,
    transform: Any,
    output_bundle: str = "-",
    input_tags: dict[str, str] | None = None,
    output_tags: dict[str, str] | None = None,
    force: bool = False,
    force_all: bool = False,
    params: dict[str, Any] | None = None,
    output_bundle_uuid: str | None = None,
    central_scheduler: bool = False,
    workers: int = 1,
    incremental_push: bool = False,
    incremental_pull: bool = False,
    input_bundle: str | None = None,
    executors: dict[str, str] | None = None,
    no_build: bool = False,
    localize: bool = False,
    log: Callable[[str], None] | None = None,
    env: Any = None,
    secrets: Any = None,
) -> ApplyOutcome:
    """`apply`, returning also the root's bundle name and uuid (made now or reused); `log`
    receives the status table and remote jobs' log lines (default: the `disdat_luigi.apply`
    logger, at INFO)."""
    from disdat_luigi.apply.driver import ApplyRequest
    from disdat_luigi.apply.driver import apply_outcome as run_apply
    from disdat_luigi.run.environment import JobEnvironment
    from disdat_luigi.run.executors import executor_factory

    environment = JobEnvironment.given(env, secrets)  # a bad --env fails before anything is planned
    request = ApplyRequest(
        context=local_context,
        transform=transform,
        params=params,
        output_bundle=output_bundle,
        output_tags=output_tags,
        force=force,
        force_all=force_all,
        output_bundle_uuid=output_bundle_uuid,
        input_bundle_uuid=_input_uuid(local_context, input_bundle, input_tags),
        workers=workers,
        central_scheduler=central_scheduler,
        incremental_push=incremental_push,
        incremental_pull=incremental_pull,
        executors=dict(executors or {}),
        localize=localize,
    )
    settings = load_settings()
    factory = executor_factory(settings, build=not no_build, environment=environment)
    return run_apply(request, settings, factory, log) if log else run_apply(request, settings, factory)


def parse_pipeline(pipe_cls: str | type, pipe_args: list[str]) -> tuple[type, dict[str, Any]]:
    """The PipeTask class `pipe_cls` names and its parameters from `['--name', 'value', ...]`,
    each parsed by its luigi Parameter (what `dsdt apply` and `dsdt run` take)."""
    from disdat_luigi.apply.loader import load_pipe_class, parse_cli_params

    cls = load_pipe_class(pipe_cls)
    return cls, parse_cli_params(cls, pipe_args)


def explain(
    local_context: str,
    transform: Any,
    output_bundle: str = "-",
    output_tags: dict[str, str] | None = None,
    force: bool = False,
    force_all: bool = False,
    params: dict[str, Any] | None = None,
    executors: dict[str, str] | None = None,
) -> list[Decision]:
    """What apply would do with each task (reuse which bundle, or run and why, and where); runs nothing."""
    from disdat_luigi.apply.driver import ApplyRequest
    from disdat_luigi.apply.driver import explain as run_explain

    request = ApplyRequest(
        context=local_context,
        transform=transform,
        params=params,
        output_bundle=output_bundle,
        output_tags=output_tags,
        force=force,
        force_all=force_all,
        executors=dict(executors or {}),
    )
    return run_explain(request, load_settings())


def explain_preparation(local_context: str, decisions: list[Decision]) -> list[str]:
    """What must happen before the remote tasks among `decisions` (from `explain`) run: each image
    that will be built or pushed and why, each AWS Batch job definition registered or reused; one
    line each. Changes nothing."""
    from disdat_luigi.run.preview import preparation

    return preparation(decisions, load_settings(), _context(local_context))


def _input_uuid(local_context: str, name: str | None, input_tags: dict[str, str] | None) -> str | None:
    """The root's pipeline input: the newest bundle called `name` (with `input_tags`), or the
    newest carrying `input_tags`; None without either (as `dsdt run`'s input_bundle and -it)."""
    if name in (None, "-", "") and not input_tags:
        return None
    name = None if name in ("-", "") else name
    found = queries.newest(_context(local_context), name, tags=check_tags(input_tags))
    if found is None:
        what = (
            f"named {name!r}" + (f" with tags {input_tags}" if input_tags else "")
            if name
            else f"with tags {input_tags}"
        )
        raise BundleNotFound(f"no bundle {what} in context {local_context!r} for the pipeline input")
    return found.uuid


def dockerize(
    pipe_root: str | Path,
    pipe_cls: str | None = None,
    config_dir: str | Path | None = None,
    os_type: str | None = None,
    os_version: str | None = None,
    base_image: str | None = None,
    push: bool = False,
    no_build: bool = False,
    log: Any = None,
) -> list[ImageResult]:
    """Build the image `disdat-module-submodule` of `pipe_cls`'s module (of every pipeline module
    without it) from the project at `pipe_root`; `log` receives build output lines."""
    from disdat_luigi.dockerize.images import DockerizeRequest
    from disdat_luigi.dockerize.images import dockerize as run_dockerize

    request = DockerizeRequest(
        pipe_root=Path(pipe_root),
        pipe_cls=pipe_cls,
        config_dir=Path(config_dir) if config_dir else None,
        os_type=os_type,
        os_version=os_version,
        base_image=base_image,
        push=push,
        no_build=no_build,
    )
    return run_dockerize(request, load_settings(), log or (lambda _line: None))


def prune_images(
    pipe_root: str | Path,
    pipe_cls: str | None = None,
    keep: int | None = None,
    registry: bool = False,
    delete_registry: bool = False,
) -> PruneReport:
    """Remove this machine's images of `pipe_cls`'s module (every pipeline module without it)
    beyond the newest `keep`; with `registry` list the registry's tags that would go too, and with
    `delete_registry` delete them. Kept always: `latest`, tags a bundle on any context's remote
    names as its image, tags an ACTIVE AWS Batch job definition uses."""
    from disdat_luigi.dockerize.prune import DEFAULT_KEEP, PruneRequest, prune

    request = PruneRequest(
        pipe_root=Path(pipe_root),
        pipe_cls=pipe_cls,
        keep=DEFAULT_KEEP if keep is None else keep,
        registry=registry,
        delete_registry=registry and delete_registry,
        bundle_tags=_bundle_image_tags() if registry else frozenset(),
    )
    return prune(request, load_settings())


def _bundle_image_tags() -> frozenset[str]:
    """The image content tag every bundle on every context's remote records (its git_info)."""
    store = _store()
    seen: set[str] = set()
    tags: set[str] = set()
    for name in store.list_contexts():
        ctx = store.context(name)
        where = f"{ctx.meta.remote_url}|{ctx.meta.remote_context}"
        if not ctx.meta.remote_url or where in seen:
            continue
        seen.add(where)
        for found in _sync(ctx).find():
            image = (found.manifest.git_info or {}).get("image")
            if image:
                tags.add(str(image))
    return frozenset(tags)


def run(
    local_context: str,
    input_bundle: str,
    output_bundle: str,
    pipe_cls: str,
    pipeline_params: dict[str, Any] | None = None,
    backend: str | BackendName = BackendName.LOCAL,
    input_tags: dict[str, str] | None = None,
    output_tags: dict[str, str] | None = None,
    force: bool = False,
    force_all: bool = False,
    no_push_input: bool = False,
    use_aws_session_token: int | None = None,
    vcpus: int | None = None,
    memory: int | None = None,
    job_role_arn: str | None = None,
    workers: int = 1,
    no_submit: bool = False,
    wait: bool = False,
    pipe_args: list[str] | None = None,
    log: Any = None,
    gpus: int | None = None,
    timeout: int | None = None,
    retries: int | None = None,
    job_tags: dict[str, str] | None = None,
    queue: str | None = None,
    detach: bool = False,
    build: bool = True,
    env: Any = None,
    secrets: Any = None,
) -> RunResult:
    """Run `pipe_cls` in the image of its module (`dsdt run`), on the local Docker engine or AWS
    Batch, against the context's remote. `input_bundle`/`output_bundle` may be '-'. Parameters
    come as `pipeline_params` (values) or `pipe_args` (['--name', 'value', ...]); `log` receives
    the container's output lines. `env` ({"KEY": "value"}; a None value takes this process's
    value, masked wherever the submission is shown) and `secrets` ({"KEY": "arn:aws:..."}: a
    Secrets Manager secret or SSM parameter, which Batch resolves as the job starts and the Local
    backend resolves here) go to the container's environment; `DISDAT_*` and the AWS settings
    disdat_luigi manages are refused (JobEnvironmentError)."""
    from disdat_luigi.run.environment import JobEnvironment
    from disdat_luigi.run.request import RunRequest, backend_name, params_to_args
    from disdat_luigi.run.runner import run as run_container

    request = RunRequest(
        context=local_context,
        input_bundle=input_bundle,
        output_bundle=output_bundle,
        pipe_cls=pipe_cls,
        pipe_args=params_to_args(pipeline_params) + tuple(pipe_args or ()),
        backend=backend_name(backend),
        force=force,
        force_all=force_all,
        no_push_input=no_push_input,
        use_aws_session_token=use_aws_session_token,
        input_tags=check_tags(input_tags),
        output_tags=check_tags(output_tags),
        vcpus=vcpus,
        memory=memory,
        gpus=gpus,
        timeout=timeout,
        retries=retries,
        tags=check_tags(job_tags),
        queue=queue,
        job_role_arn=job_role_arn,
        workers=workers,
        no_submit=no_submit,
        wait=wait,
        detach=detach,
        build=build,
        environment=JobEnvironment.given(env, secrets),
    )
    return run_container(request, load_settings(), log or (lambda _line: None))


def jobs(local_context: str) -> list[dict[str, Any]]:
    """The jobs this context submitted (`dsdt run`'s, executor jobs on AWS Batch or the local
    Docker engine), newest first: id,
    pipeline class, task, executor, apply, output name, status, attempt, started (epoch seconds),
    duration and vCPU-seconds."""
    from disdat_luigi.run.runner import list_jobs

    return list_jobs(_context(local_context))


def logs(local_context: str, job_id: str, follow: bool = False, log: Any = None) -> JobState | None:
    """Send a job's log lines to `log` (with `follow`, until the job ends); its last state (None
    for a docker job)."""
    from disdat_luigi.run.runner import job_log

    return job_log(_context(local_context), job_id, follow, load_settings(), log or (lambda _line: None))


def wait(local_context: str, job_id: str, log: Any = None) -> RunResult:
    """Follow a submitted job to its end and pull its output, files included (JobFailed if it failed)."""
    from disdat_luigi.run.runner import wait_job

    return wait_job(_context(local_context), job_id, load_settings(), log or (lambda _line: None))


def cancel(local_context: str, job_id: str) -> None:
    """Terminate a job this context submitted."""
    from disdat_luigi.run.runner import cancel_job

    cancel_job(_context(local_context), job_id)


def cancel_apply(local_context: str, apply_id: str) -> list[str]:
    """Terminate every job one apply submitted that is still queued or running; their ids."""
    from disdat_luigi.run.runner import cancel_apply as stop_apply

    return stop_apply(_context(local_context), apply_id)


def failed_job_for(local_context: str, bundle_name: str) -> JobFailed | None:
    """The error of the job that was to make `bundle_name`, when that job failed."""
    from disdat_luigi.run.runner import failed_job_for as find_failure

    return find_failure(_context(local_context), bundle_name)


def verify(local_context: str, rebuild: bool = False, check_hashes: bool = True) -> VerifyReport:
    """Check every bundle against its manifest and repair the index (rebuild it with `rebuild`)."""
    ctx = _context(local_context)
    report = _verify(ctx, rebuild=rebuild, check_hashes=check_hashes)
    stranded = ctx.remote_only_uuids()
    if stranded and ctx.meta.remote_url:
        for uuid in _sync(ctx).missing(stranded):
            report.problems.append(
                Problem(uuid, "its files are only on the remote, and the remote no longer has this bundle")
            )
    if ctx.meta.remote_url:
        from disdat_luigi.store.remote.gc import RemoteCollector

        sync = _sync(ctx)
        try:
            report.remote_unnamed = [sync.location.url(o.key) for o in RemoteCollector(sync).unnamed()]
        except RemoteError as err:
            log.warning("could not list the remote for objects no manifest names: %s", err)
    return report
