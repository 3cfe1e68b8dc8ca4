"""`dsdt init`, `config check`, `context`, `switch`: the config file and local contexts."""

from __future__ import annotations

import argparse
import sys

from disdat_luigi import api


def register(subparsers: argparse._SubParsersAction) -> None:
    init_p = subparsers.add_parser("init", help="create the config file and the store (idempotent)")
    init_p.set_defaults(func=_init)

    config_p = subparsers.add_parser("config", help="check the config file")
    config_p.add_argument("action", choices=["check"], help="check: read every section as a command would")
    config_p.set_defaults(func=_config)

    ctx_p = subparsers.add_parser(
        "context",
        help="list contexts, create one, or delete one with -d",
        description="Without NAME: list contexts (* marks the current one). With NAME: create it.",
    )
    ctx_p.add_argument("context", nargs="?", help="<local context> or <remote context>/<local context>")
    ctx_p.add_argument("-d", "--delete", action="store_true", help="delete the local context")
    ctx_p.add_argument("-f", "--force", action="store_true", help="delete even with uncommitted bundles")
    ctx_p.add_argument(
        "-r", "--remote", action="store_true", help="with -d: delete its remote context too (asks for --yes)"
    )
    ctx_p.add_argument(
        "--yes", action="store_true", help="with -d -r: confirm deleting the remote context, shared or not"
    )
    ctx_p.set_defaults(func=_context)

    switch_p = subparsers.add_parser("switch", help="make a context the current one")
    switch_p.add_argument("context", help="name of an existing local context")
    switch_p.set_defaults(func=_switch)


def _config(args: argparse.Namespace) -> int:
    from disdat_luigi.config import load_settings

    settings = load_settings()  # the sections every command reads: their errors raise here
    problems = settings.check()
    for problem in problems:
        print(f"dsdt config: {problem.message}", file=sys.stderr)
        if problem.hint:
            print(f"hint: {problem.hint}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {settings.config_path}")
    return 0


def _init(args: argparse.Namespace) -> int:
    path = api.init()
    print(f"config: {path}")
    return 0


def _context(args: argparse.Namespace) -> int:
    if args.context is None:
        if args.delete:
            raise api.ContextError("dsdt context -d needs the name of the context to delete")
        current = api.current_context()
        for name in api.ls_contexts():
            bound = api.context_remote(name)
            shared = f"  (remote: {bound[0]}, context {bound[1]})" if bound else ""
            print(f"{'*' if name == current else ' '} {name}{shared}")
        return 0
    if args.delete:
        uncommitted = api.uncommitted_count(args.context)
        if uncommitted and not args.force:
            raise api.BundleStateError(
                f"context {args.context!r} holds {uncommitted} uncommitted bundle(s) that exist nowhere else",
                hint=f"commit and push them, or delete anyway with `dsdt context -d -f {args.context}`",
            )
        if args.remote:
            usage = api.remote_usage(args.context)
            others = {k: v for k, v in usage.unreadable.items() if k != args.context.rpartition("/")[2]}
            stranded = "".join(f"; {n} bundle(s) of context {k!r} would become unreadable" for k, n in others.items())
            print(
                f"deleting {usage.url} removes {usage.bundles} bundle(s) that every context sharing it uses{stranded}"
            )
            if not args.yes:
                raise api.RemoteOnlyData(
                    "not deleted: deleting a remote context needs confirmation",
                    hint=f"run `dsdt context -d -r --yes {args.context}` to delete it",
                )
        api.delete_context(args.context, remote=args.remote, force=args.force)
        print(f"deleted context {args.context}")
    else:
        api.context(args.context)
        print(f"context {args.context} is ready; select it with `dsdt switch {args.context.rpartition('/')[2]}`")
    return 0


def _switch(args: argparse.Namespace) -> int:
    api.switch(args.context)
    print(f"switched to context {args.context}")
    return 0
