"""`dsdt apply`: run a PipeTask pipeline in this process against the current context."""

from __future__ import annotations

import argparse
import logging
import sys

from disdat_luigi import api
from disdat_luigi.cli.common import current_context, parse_tags, pipeline_help
from disdat_luigi.errors import DisdatError


def register(subparsers: argparse._SubParsersAction) -> None:
    apply_p = subparsers.add_parser(
        "apply",
        help="run a pipeline here, reusing every bundle whose recipe is unchanged",
        description="Runs pipe_cls (module.submodule.ClassName) and its upstream tasks in this process. "
        "Parameters follow the class: --name value (parsed by each luigi Parameter).",
    )
    apply_p.add_argument("-o", "--output-bundle", default="-", help="name of the root's output bundle")
    apply_p.add_argument("-f", "--force", action="store_true", help="re-run the root task")
    apply_p.add_argument("--force-all", action="store_true", help="re-run every task (not external inputs)")
    apply_p.add_argument("-w", "--workers", type=int, default=1, help="luigi worker processes")
    apply_p.add_argument("--incremental-push", action="store_true", help="commit+push each bundle as it closes")
    apply_p.add_argument("--incremental-pull", action="store_true", help="fetch inputs from the remote on demand")
    apply_p.add_argument("--central-scheduler", action="store_true", help="use luigid instead of a local scheduler")
    apply_p.add_argument(
        "-ot", "--output-tag", action="append", default=[], metavar="KEY:VALUE", help="tag the root bundle"
    )
    apply_p.add_argument(
        "-i", "--input", metavar="NAME", help="the root's pipeline_input: the newest bundle of this name (as dsdt run)"
    )
    apply_p.add_argument(
        "-it", "--input-tag", action="append", default=[], metavar="KEY:VALUE", help="select the input by tags"
    )
    apply_p.add_argument("--explain", action="store_true", help="print reuse/run and why for every task; run nothing")
    apply_p.add_argument(
        "--code", action="store_true", help="with --explain: list the files in each task's code identity"
    )
    apply_p.add_argument(
        "--executor",
        action="append",
        default=[],
        metavar="CLASS=NAME",
        help="run the tasks of CLASS ('*': every task) on executor NAME (an [executor.NAME] section), this run only",
    )
    apply_p.add_argument(
        "--no-build", action="store_true", help="refuse a stale image of a remote task instead of building it"
    )
    apply_p.add_argument("--localize", action="store_true", help="bring the files of remotely made bundles here")
    apply_p.add_argument(
        "--env", action="append", default=[], metavar="KEY[=VALUE]", help="as dsdt run: for every containerized task"
    )
    apply_p.add_argument(
        "--secret", action="append", default=[], metavar="KEY=ARN", help="as dsdt run: for every containerized task"
    )
    apply_p.add_argument("pipe_cls", help="module.submodule.ClassName")
    apply_p.add_argument("pipe_args", nargs=argparse.REMAINDER, help="--param value ...")
    apply_p.set_defaults(func=_apply)


def _apply(args: argparse.Namespace) -> int:
    if pipeline_help(args.pipe_cls, args.pipe_args):
        return 0
    context = current_context()
    cls, params = api.parse_pipeline(args.pipe_cls, args.pipe_args)
    from disdat_luigi.apply.executors import parse_overrides  # luigi: only for the commands that run pipelines

    executors = parse_overrides(args.executor)
    if args.explain:
        decisions = api.explain(
            context,
            cls,
            output_bundle=args.output_bundle,
            output_tags=parse_tags(args.output_tag),
            force=args.force,
            force_all=args.force_all,
            params=params,
            executors=executors,
        )
        for decision in decisions:
            print(decision)
            if args.code:
                print("".join(f"      {line}\n" for line in decision.code_files), end="")
        for line in api.explain_preparation(context, decisions):
            print(f"prepare {line}")
        return 0
    if args.code:
        raise DisdatError("--code goes with --explain", hint="dsdt apply --explain --code CLASS ...")
    if not args.verbose:  # the error line says what failed; luigi's tracebacks only with --verbose
        logging.getLogger("luigi-interface").addFilter(_without_traceback)
    outcome = api.apply_outcome(
        context,
        cls,
        output_bundle=args.output_bundle,
        output_tags=parse_tags(args.output_tag),
        force=args.force,
        force_all=args.force_all,
        params=params,
        workers=args.workers,
        central_scheduler=args.central_scheduler,
        incremental_push=args.incremental_push,
        incremental_pull=args.incremental_pull,
        input_bundle=args.input,
        input_tags=parse_tags(args.input_tag),
        executors=executors,
        no_build=args.no_build,
        localize=args.localize,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        env=args.env,
        secrets=args.secret,
    )
    what = "new bundles made" if outcome.did_work else "everything was up to date, nothing ran"
    print(f"done: {what}; the output is {outcome.root_name} {outcome.root_uuid}")
    return 0


def _without_traceback(record: logging.LogRecord) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True
