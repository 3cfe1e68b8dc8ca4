"""`dsdt remote`, `push`, `pull`, `rmr`: sharing a context through its S3 remote."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING

from disdat_luigi import api
from disdat_luigi.cli.common import add_tag_option, current_context, parse_tags
from disdat_luigi.store.names import printable

if TYPE_CHECKING:  # imported when a bar is first shown: commands that show none stay quick
    from tqdm import tqdm


class BarProgress:
    """A tqdm bar on stderr counting bytes as they move, with the file count in its postfix."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.bar: tqdm | None = None
        self.files = 0
        self.done = 0
        self.lock = threading.Lock()  # transfer threads report concurrently

    def start(self, files: int, nbytes: int) -> None:
        from tqdm import tqdm

        self.files = files
        self.done = 0
        self.bar = tqdm(
            total=nbytes, unit="B", unit_scale=True, unit_divisor=1024, desc=self.verb, file=sys.stderr, leave=False
        )
        self.bar.set_postfix_str(f"0/{files} files")

    def advance(self, nbytes: int) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(nbytes)

    def file_done(self, nbytes: int) -> None:
        with self.lock:
            if self.bar is not None:
                self.done += 1
                self.bar.update(nbytes)
                self.bar.set_postfix_str(f"{self.done}/{self.files} files", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    remote_p = subparsers.add_parser("remote", help="bind the current context to an S3 remote")
    remote_p.add_argument("context", help="name of the remote context")
    remote_p.add_argument("s3_url", help="s3://bucket/prefix (the bucket must exist)")
    remote_p.add_argument(
        "--force", action="store_true", help="rebind even when bundles keep their files only on the old remote"
    )
    remote_p.set_defaults(func=_remote)

    push_p = subparsers.add_parser(
        "push",
        help="publish committed bundles to the remote",
        description="By name or uuid the newest match (it must be committed); without either, every "
        "committed bundle that is not yet on the remote. Interrupted pushes resume.",
    )
    push_p.add_argument("bundle", nargs="?", help="bundle name")
    push_p.add_argument("-u", "--uuid", help="bundle uuid")
    add_tag_option(push_p)
    push_p.add_argument("-d", "--delocalize", action="store_true", help="drop local copies after a verified push")
    push_p.set_defaults(func=_push)

    pull_p = subparsers.add_parser(
        "pull",
        help="fetch bundles from the remote",
        description="By name every version of it, by uuid one bundle, with neither every bundle. "
        "Metadata only unless -l; every downloaded file is checked against its sha256.",
    )
    pull_p.add_argument("bundle", nargs="?", help="bundle name")
    pull_p.add_argument("-u", "--uuid", help="bundle uuid")
    pull_p.add_argument("-l", "--localize", action="store_true", help="download the files too")
    pull_p.set_defaults(func=_pull)

    rmr_p = subparsers.add_parser(
        "rmr",
        help="delete bundles from the remote",
        description="By name the newest version (--all: every version); without a name it refuses "
        "unless --all is given. --dryrun only prints what would go.",
    )
    rmr_p.add_argument("bundle", nargs="?", help="bundle name")
    rmr_p.add_argument("-u", "--uuid", help="bundle uuid")
    add_tag_option(rmr_p)
    rmr_p.add_argument("--all", action="store_true", help="every matching version (required without a name)")
    rmr_p.add_argument("--dryrun", action="store_true", help="print what would be deleted, delete nothing")
    rmr_p.add_argument(
        "--force", action="store_true", help="delete even bundles whose files this context has only on the remote"
    )
    rmr_p.set_defaults(func=_rmr)


def _remote(args: argparse.Namespace) -> int:
    context = current_context()
    api.remote(context, args.context, args.s3_url, force=args.force)
    print(f"context {context} now shares remote context {args.context} at {args.s3_url}")
    return 0


def _push(args: argparse.Namespace) -> int:
    result = api.push(
        current_context(),
        args.bundle,
        tags=parse_tags(args.tag),
        uuid=args.uuid,
        delocalize=args.delocalize,
        progress=BarProgress("push"),
    )
    print(
        f"pushed {len(result.pushed)} bundle(s) ({result.files} files, {result.bytes} bytes); "
        f"{len(result.already_remote)} already on the remote"
    )
    if result.delocalized:
        print(f"dropped the local files of {len(result.delocalized)} bundle(s); the remote keeps them (dsdt pull -l)")
    for kept in result.kept_local:
        print(printable(str(kept)))
    if args.bundle is None and args.uuid is None and not args.tag:
        waiting = api.uncommitted_count(current_context())
        if waiting:
            print(f"{waiting} uncommitted bundle(s) not pushed: `dsdt commit` them first", file=sys.stderr)
    return 0


def _pull(args: argparse.Namespace) -> int:
    context = current_context()
    try:
        result = api.pull(context, args.bundle, uuid=args.uuid, localize=args.localize, progress=BarProgress("pull"))
        partial = None
    except api.PartialPull as err:
        result, partial = err.result, err
    fetched = set(result.fetched)
    for bundle in result:
        print(f"{printable(bundle.name)} {bundle.uuid}{'' if bundle.uuid in fetched else ' (already here)'}")
    for uuid, reason in result.skipped:
        print(f"skipped {printable(uuid)}: {printable(reason)}", file=sys.stderr)
    if not result and not result.skipped and args.bundle:
        failed = api.failed_job_for(context, args.bundle)
        if failed is not None:  # the job that was to make it failed: say so, and why
            raise failed
        raise api.BundleNotFound(f"no bundle named {args.bundle!r} on the remote of context {context!r}")
    files = " with their files" if args.localize else ""
    skipped = f", {len(result.skipped)} skipped (damaged on the remote)" if result.skipped else ""
    print(f"{len(result) - len(fetched)} already here, {len(fetched)} pulled{files}{skipped}")
    if partial is not None:
        raise partial
    return 0


def _rmr(args: argparse.Namespace) -> int:
    doomed = api.rmr(
        current_context(),
        args.bundle,
        uuid=args.uuid,
        tags=parse_tags(args.tag),
        rm_all=args.all,
        dry_run=args.dryrun,
        force=args.force,
    )
    if not doomed:
        what = f"uuid {args.uuid}" if args.uuid else f"name {args.bundle!r}" if args.bundle else "those tags"
        raise api.BundleNotFound(f"no bundle on the remote matches {what}; nothing deleted")
    verb = "would delete" if args.dryrun else "deleted"
    for ref in doomed:
        print(f"{verb} {printable(ref.name) if ref.name else '(damaged manifest)'} {printable(ref.uuid)}")
    print(f"{verb} {len(doomed)} bundle(s) from the remote")
    return 0
