"""`dsdt add`, `ls`, `cat`, `commit`, `rm`, `lineage`, `verify`: bundles of the current context."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from disdat_luigi import api
from disdat_luigi.cli.common import add_tag_option, current_context, parse_tags
from disdat_luigi.errors import BundleCorrupt
from disdat_luigi.store.names import printable  # what manifests hold is shown, never sent raw to the terminal

if TYPE_CHECKING:
    from disdat_luigi.store.bundle import Bundle as StoreBundle

# the columns of `ls -v`, as _ls_line fills them
LS_HEADER = f"{'NAME':<24} {'PROCESSING NAME':<32} {'OWNER':<10} {'CREATED':<19} {'STATE':<9} UUID"


def register(subparsers: argparse._SubParsersAction) -> None:
    add_p = subparsers.add_parser("add", help="make a bundle from a file or a directory tree")
    add_p.add_argument("bundle", help="name of the new bundle")
    add_p.add_argument("path", help="a file, or a directory (every file below it, layout kept)")
    add_tag_option(add_p, "tag the new bundle")
    add_p.add_argument(
        "--follow-links", action="store_true", help="copy what symbolic links point to, even outside the directory"
    )
    add_p.set_defaults(func=_add)

    ls_p = subparsers.add_parser("ls", help="list bundles, newest first")
    ls_p.add_argument("bundle", nargs="?", help="only bundles of this name ('*' and '?' glob)")
    ls_p.add_argument("-v", "--verbose", dest="long", action="store_true", help="one row per bundle with details")
    ls_p.add_argument("-p", "--print-tags", action="store_true", help="print each bundle's tags")
    ls_p.add_argument("-a", "--print-args", action="store_true", help="print the parameters that made it")
    ls_p.add_argument("-i", "--intermediates", action="store_true", help="only intermediate outputs")
    ls_p.add_argument("-r", "--roots", action="store_true", help="only outputs of root tasks")
    ls_p.add_argument("-c", "--committed", action="store_true", help="only committed bundles")
    ls_p.add_argument("--uncommitted", action="store_true", help="only uncommitted bundles")
    ls_p.add_argument("-u", "--uuid", help="only the bundle with this uuid")
    ls_p.add_argument("-l", "--latest-by-date", action="store_true", help="only the newest bundle of each name")
    ls_p.add_argument("-A", "--after", help="created on or after this date (2020-12-31 or 12-31-2020)")
    ls_p.add_argument("-B", "--before", help="created on or before this date")
    add_tag_option(ls_p)
    ls_p.set_defaults(func=_ls)

    cat_p = subparsers.add_parser("cat", help="print the data of the newest matching bundle")
    _select_options(cat_p)
    cat_p.set_defaults(func=_cat)

    commit_p = subparsers.add_parser("commit", help="mark the newest matching bundle committed")
    _select_options(commit_p)
    commit_p.set_defaults(func=_commit)

    rm_p = subparsers.add_parser(
        "rm",
        help="remove local bundles",
        description="By name: the newest version (--all: every version, --old: all but the newest). "
        "Without a name it refuses unless --all or --old is given.",
    )
    _select_options(rm_p)
    rm_p.add_argument("--all", action="store_true", help="every matching version (required without a name)")
    rm_p.add_argument("--old", action="store_true", help="every version but the newest")
    rm_p.set_defaults(func=_rm)

    lin_p = subparsers.add_parser("lineage", help="show where a bundle came from")
    lin_p.add_argument("bundle", help="a bundle uuid, or a name (its newest version)")
    lin_p.add_argument("-d", "--depth", type=int, default=None, help="stop after this many levels")
    lin_p.add_argument("--dot", action="store_true", help="print a Graphviz DOT graph (pipe to `dot -Tpng`)")
    lin_p.set_defaults(func=_lineage)

    verify_p = subparsers.add_parser(
        "verify",
        help="check bundles against their manifests and repair the index",
        description="Reports bundles whose files are missing or damaged (exit 1), removes crash "
        "leftovers, and adds/drops index rows to match the bundle directories.",
    )
    verify_p.add_argument("--rebuild", action="store_true", help="rebuild the whole index from the manifests")
    verify_p.add_argument("--no-hash", action="store_true", help="check sizes only (faster)")
    verify_p.set_defaults(func=_verify)


def _select_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", nargs="?", help="bundle name")
    parser.add_argument("-u", "--uuid", help="bundle uuid (wins over the name)")
    add_tag_option(parser)


def _add(args: argparse.Namespace) -> int:
    bundle = api.add(
        current_context(), args.bundle, args.path, tags=parse_tags(args.tag), follow_links=args.follow_links
    )
    print(bundle.uuid)
    return 0


def _ls(args: argparse.Namespace) -> int:
    context = current_context()
    committed = True if args.committed else False if args.uncommitted else None
    bundles: Iterable[StoreBundle]
    if args.uuid:
        bundle = api.get(context, None, uuid=args.uuid)
        bundles = [bundle] if bundle is not None else []
    else:
        bundles = api.iter_search(
            context,
            human_name=args.bundle,
            tags=parse_tags(args.tag),
            is_committed=committed,
            find_intermediates=args.intermediates,
            find_roots=args.roots,
            before=args.before,
            after=args.after,
            newest_per_name=args.latest_by_date,
        )
    for index, bundle in enumerate(bundles):  # each row as the index yields it
        if args.long and index == 0:
            print(LS_HEADER)
        line = _ls_line(bundle, args.long)
        if args.print_tags:
            line += f"  tags={json.dumps(bundle.tags, sort_keys=True)}"
        if args.print_args:
            line += f"  params={printable(_short(_params_or_why(bundle)))}"
        print(line)
    return 0


def _ls_line(bundle: StoreBundle, verbose: bool) -> str:
    name = printable(bundle.name)
    if not verbose:
        return name
    created = bundle.creation_date.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    state = "committed" if bundle.is_committed else "-"
    processing = printable(bundle.processing_name)[:32]
    return f"{name:<24} {processing:<32} {printable(bundle.owner):<10} {created} {state:<9} {bundle.uuid}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _cat(args: argparse.Namespace) -> int:
    data = api.cat(current_context(), args.bundle, uuid=args.uuid, tags=parse_tags(args.tag))
    text = data.to_string() if hasattr(data, "to_string") else str(data)
    print(printable(text, keep="\n\t"))  # data may be lines of text; other control characters are escaped
    return 0


def _commit(args: argparse.Namespace) -> int:
    bundle = api.commit(current_context(), args.bundle, tags=parse_tags(args.tag), uuid=args.uuid)
    print(f"committed {printable(bundle.name)} {bundle.uuid}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    removed = api.rm(
        current_context(),
        args.bundle,
        uuid=args.uuid,
        tags=parse_tags(args.tag),
        rm_all=args.all,
        rm_old_only=args.old,
    )
    if not removed and not args.old:
        what = f"uuid {args.uuid}" if args.uuid else f"name {args.bundle!r}" if args.bundle else "those tags"
        raise api.BundleNotFound(f"no bundle matches {what} in context {current_context()!r}; nothing removed")
    print(f"removed {len(removed)} bundle(s)")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    context = current_context()
    bundle = api.get(context, None, uuid=args.bundle) or api.get(context, args.bundle)
    if bundle is None:
        raise api.BundleNotFound(f"no bundle with uuid or name {args.bundle!r} in context {context!r}")
    records = api.lineage(context, bundle.uuid, max_depth=args.depth)
    print(_dot(records) if args.dot else _text(records))
    return 0


def _text(records: list[api.LineageRecord]) -> str:
    lines = []
    for record in records:
        pad, name = "  " * record.depth, printable(record.name)
        if not record.found:
            lines.append(f"{pad}{name} {record.uuid} (not in this context)")
            continue
        created = record.creation_date.astimezone().strftime("%Y-%m-%d %H:%M:%S") if record.creation_date else ""
        inputs = ", ".join(printable(f"{d.arg_name}={d.name}") for d in record.dependencies) or "no inputs"
        lines.append(f"{pad}{name} {record.uuid} {created} <- {inputs}")
    return "\n".join(lines)


def _dot(records: list[api.LineageRecord]) -> str:
    lines = ["digraph lineage {", "  rankdir=BT;", "  node [shape=box];"]
    for record in records:
        style = "" if record.found else ", style=dashed"
        label = f'"{_dot_escape(record.name)}\\n{record.uuid[:8]}"'
        lines.append(f'  "{record.uuid}" [label={label}{style}];')
    for record in records:
        for dep in record.dependencies:
            edge = _dot_escape(dep.arg_name or "")
            lines.append(f'  "{dep.uuid}" -> "{record.uuid}" [label="{edge}"];')
    lines.append("}")
    return "\n".join(lines)


def _dot_escape(text: str) -> str:
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def _verify(args: argparse.Namespace) -> int:
    report = api.verify(current_context(), rebuild=args.rebuild, check_hashes=not args.no_hash)
    if report.moved_index is not None:
        print(f"the index was damaged: moved it to {report.moved_index} and rebuilt it")
    for problem in report.problems:
        print(f"DAMAGED {problem.uuid}: {printable(problem.detail)}")
    if report.remote_unnamed:
        for url in report.remote_unnamed[:20]:
            print(f"UNNAMED {printable(url)}")
        more = " (the first 20 shown)" if len(report.remote_unnamed) > 20 else ""
        print(
            f"the remote holds {len(report.remote_unnamed)} object(s) no manifest names{more}: files of a push "
            "in flight or left by a gc that was stopped; `dsdt gc --remote --yes` deletes them once older "
            "than [gc] grace_hours"
        )
    print(
        f"checked {report.checked} bundle(s): {len(report.problems)} problem(s), "
        f"{len(report.indexed)} re-indexed, {len(report.unindexed)} stale index row(s) dropped, "
        f"{len(report.cleaned)} crash leftover(s) removed"
    )
    return 1 if report.problems else 0


def _params_or_why(bundle: Any) -> Any:
    """A row's parameters, or why they cannot be shown (one damaged bundle never stops a listing)."""
    try:
        return bundle.params
    except BundleCorrupt as err:
        return f"(unreadable: {err.message})"
