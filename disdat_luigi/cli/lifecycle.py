"""`dsdt gc` and `dsdt du`: what a store keeps, what it reclaims, and how big it is."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from disdat_luigi import api
from disdat_luigi.cli.common import current_context
from disdat_luigi.store.names import printable

if TYPE_CHECKING:
    from disdat_luigi.store.policy import Candidate

GC_HEADER = ("NAME", "KEPT", "RECLAIMED", "BYTES RECLAIMED", "OLDEST KEPT BECAUSE")


def register(subparsers: argparse._SubParsersAction) -> None:
    gc_p = subparsers.add_parser(
        "gc",
        help="reclaim old bundles that no keep rule keeps (prints the plan unless --yes)",
        description="Kept: the newest N of each recipe, bundles younger than D days, bundles with a kept "
        "tag, the newest of each name, bundles not yet pushed (local), held by another store's "
        "`push -d` (remote), named by a running job's claim, and everything upstream of a kept "
        "bundle. Defaults come from the [gc] section of disdat.cfg.",
    )
    gc_p.add_argument("--remote", action="store_true", help="collect the remote context instead of the local one")
    gc_p.add_argument("--keep-last", type=int, metavar="N", help="newest bundles kept per recipe (default 3)")
    gc_p.add_argument("--keep-days", type=float, metavar="D", help="keep bundles younger than D days")
    gc_p.add_argument(
        "--keep-tag", action="append", metavar="KEY:VALUE", help="keep bundles with this tag (repeatable)"
    )
    gc_p.add_argument("--yes", action="store_true", help="reclaim without asking (without it: the plan only)")
    gc_p.add_argument(
        "--force", action="store_true", help="also reclaim bundles not yet pushed (local) or held by other stores"
    )
    gc_p.set_defaults(func=_gc)

    du_p = subparsers.add_parser("du", help="bytes per bundle name, and the total")
    du_p.add_argument("--remote", action="store_true", help="of the remote context")
    du_p.set_defaults(func=_du)


def _gc(args: argparse.Namespace) -> int:
    context = current_context()
    options = {
        "keep_last": args.keep_last,
        "keep_days": args.keep_days,
        "keep_tags": args.keep_tag,
        "remote": args.remote,
        "force": args.force,
    }
    if args.yes:  # plan and reclaim in one pass (one listing of the remote)
        done = api.gc(context, dry_run=False, **options)
        _print_plan(done)
        _print_done(done)
        return 0
    planned = api.gc(context, dry_run=True, **options)
    _print_plan(planned)
    if not (planned.plan.reclaimed or planned.orphans):
        print("nothing to reclaim")
        return 0
    if not (sys.stdin.isatty() and _ask(len(planned.plan.reclaimed))):  # no terminal: never asks
        print("dry run: nothing was deleted; run with --yes to reclaim")
        return 0
    _print_done(api.gc(context, dry_run=False, **options))  # planned again: others may have worked meanwhile
    return 0


def _print_done(done: api.GcResult) -> None:
    where = "from the remote" if done.remote else "locally"
    print(f"reclaimed {len(done.reclaimed)} bundle(s) {where}, {done.bytes_reclaimed} bytes")
    if done.orphans:
        print(f"deleted {done.orphans} object(s) no manifest names ({done.orphan_bytes} bytes)")


def _ask(count: int) -> bool:
    try:
        answer = input(f"reclaim {count} bundle(s)? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _print_plan(result: api.GcResult) -> None:
    rows = [
        (printable(r.name), str(r.kept), str(r.reclaimed), str(r.bytes_reclaimed), printable(r.oldest_kept_reason))
        for r in result.plan.by_name()
    ]
    widths = [max(len(x) for x in column) for column in zip(GC_HEADER, *rows)]
    for row in (GC_HEADER, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    plan = result.plan
    where = "remote" if result.remote else "local"
    print(f"{where}: {len(plan.kept)} kept, {len(plan.reclaimed)} to reclaim, {plan.bytes_reclaimed} bytes")
    for store, bundles in sorted(plan.holds().items()):
        print(f"held by {printable(store)}: {len(bundles)} bundle(s) kept ({_some(bundles)}); --force reclaims them")
    if taken := result.uuid_taken_on_remote:
        print(
            f"the remote holds another bundle under the uuid of {len(taken)} bundle(s) here ({_some(taken)}): "
            "they cannot be pushed, so they are kept; --force would delete the only copy"
        )
    if result.without_remote and result.kept_as_unpushed:
        print(
            f"this context has no remote, so every bundle exists only here: {result.kept_as_unpushed} kept for "
            "that alone; --force reclaims them (or bind a remote with `dsdt remote` and push first)"
        )
    if result.remote_only_reclaimed and not result.remote:
        print(
            f"{result.remote_only_reclaimed} bundle(s) to reclaim have their files only on the remote: "
            "they free no local bytes"
        )
    if result.unreadable:
        print(f"{result.unreadable} bundle(s) with an unreadable manifest are left alone; what they name is kept")
    if result.orphans:
        print(
            f"{result.orphans} object(s) no manifest names, past the grace period "
            f"({result.orphan_bytes} bytes), to delete"
        )
    if result.waiting:
        print(
            f"{result.waiting} object(s) of no bundle ({result.waiting_bytes} bytes) wait out the grace period "
            f"([gc] grace_hours = {result.grace_hours:g}); gc deletes them after"
        )


def _some(bundles: list[Candidate]) -> str:
    """The first few bundles by name and short uuid, and how many more."""
    names = ", ".join(f"{printable(c.name)} {c.uuid[:8]}" for c in bundles[:5])
    return names + (f" and {len(bundles) - 5} more" if len(bundles) > 5 else "")


def _du(args: argparse.Namespace) -> int:
    usage = api.du(current_context(), remote=args.remote)
    header = ("NAME", "BUNDLES", "BYTES")
    rows = [(printable(u.name), str(u.bundles), str(u.bytes)) for u in usage]
    rows.append(("total", str(sum(u.bundles for u in usage)), str(sum(u.bytes for u in usage))))
    widths = [max(len(x) for x in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
