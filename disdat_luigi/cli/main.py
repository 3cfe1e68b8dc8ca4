"""`dsdt` entry point: global options, command dispatch, and errors turned into one line + exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from disdat_luigi import __version__
from disdat_luigi.errors import DisdatError, describe_os_error
from disdat_luigi.store.names import printable

COMMAND_GROUPS = ("contexts", "bundles", "remote", "lifecycle", "pipeline", "docker")


class _CommandParser(argparse.ArgumentParser):
    """A command's parser without abbreviations: a pipeline's `--n 10` after the class must never
    be taken for `--no-build`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsdt",
        description="Data-versioned pipelines: bundles, contexts, S3 remotes, containers.",
        allow_abbrev=False,
    )
    parser.add_argument("--profile", help="AWS profile for S3, ECR and Batch (default: AWS_PROFILE)")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--version", action="version", version=f"disdat_luigi {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    import importlib

    for group in COMMAND_GROUPS:
        importlib.import_module(f"disdat_luigi.cli.{group}").register(subparsers)
    return parser


class _StderrHandler(logging.Handler):
    """One line per record on the sys.stderr of the moment (a test or a caller may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging's own policy for a failing handler
            self.handleError(record)


def _warning_line(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    print(f"dsdt: warning: {message}", file=sys.stderr, flush=True)


def _show_warnings() -> None:
    """The library's warnings (a bundle skipped, nothing pushed, a config typo) as lines on
    stderr, once each."""
    warnings.showwarning = _warning_line
    logger = logging.getLogger("disdat_luigi")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("dsdt: %(message)s"))
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    _show_warnings()
    try:
        return int(args.func(args) or 0)
    except DisdatError as err:
        if args.verbose:
            traceback.print_exc()
        # an error may quote what a manifest or a job's log holds: shown, never sent raw to the terminal
        print(f"dsdt {args.command}: {printable(err.message)}", file=sys.stderr)
        if err.hint:
            print(f"hint: {printable(err.hint, keep=chr(10))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # the library may say what was done before it (gc)
        print(f"dsdt: interrupted: {err}" if str(err) else "dsdt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`dsdt ls | head -1`): what it wanted was written; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, sqlite3.Error) as err:  # the local disk or the index, outside any bundle operation
        if args.verbose:
            traceback.print_exc()
        print(f"dsdt {args.command}: {printable(describe_os_error(err))}", file=sys.stderr)
        print("hint: check the path, its permissions and free space; --verbose shows the traceback", file=sys.stderr)
        return 1
    except Exception as err:  # a bug or an unwrapped third-party failure: still one clear line
        if args.verbose:
            traceback.print_exc()
        print(f"dsdt {args.command}: unexpected {type(err).__name__}: {printable(str(err))}", file=sys.stderr)
        print("hint: rerun with `dsdt --verbose ...` for the traceback", file=sys.stderr)
        return 2


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
