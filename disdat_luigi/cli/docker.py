"""`dsdt dockerize` and `dsdt run`: pipeline images and running pipelines in them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from disdat_luigi import api
from disdat_luigi.errors import DisdatError

if TYPE_CHECKING:  # imported when a bar is first shown: commands that show none stay quick
    from tqdm import tqdm


def register(subparsers: argparse._SubParsersAction) -> None:
    dock_p = subparsers.add_parser(
        "dockerize",
        help="build the image of each pipeline module (disdat-module-submodule)",
        description="Builds, for pipe_cls module.submodule.ClassName (module/submodule.py under pipe_root), "
        "the image disdat-module-submodule tagged latest and with an immutable content tag. Without "
        "pipe_cls: one image per module that defines a PipeTask. An image whose content tag exists is not "
        "rebuilt.",
    )
    dock_p.add_argument("--config-dir", type=Path, help="directory with apt.txt (OS packages) and pip.conf")
    dock_p.add_argument("--os-type", help="base image repository (default python)")
    dock_p.add_argument("--os-version", help="base image tag (default <host major.minor>-slim)")
    dock_p.add_argument("--base-image", help="base image (overrides --os-type/--os-version)")
    dock_p.add_argument("--push", action="store_true", help="push to [docker] registry (host:port or *ECR*)")
    dock_p.add_argument("--no-build", action="store_true", help="do not build; use (and push) the existing image")
    dock_p.add_argument(
        "--prune",
        action="store_true",
        help="instead of building: remove this machine's images of the module(s) beyond the newest --keep",
    )
    dock_p.add_argument(
        "--keep", type=int, metavar="N", help="--prune: the newest images kept (default 3; latest's always stays)"
    )
    dock_p.add_argument(
        "--registry",
        action="store_true",
        help="--prune: also the registry's tags (listed first; deleted with --yes or when confirmed); never "
        "latest, a tag a bundle on a remote names, or one an active job definition uses",
    )
    dock_p.add_argument("--yes", action="store_true", help="--prune --registry: delete without asking")
    dock_p.add_argument("pipe_root", type=Path, help="the pipeline project (directory with setup.py)")
    dock_p.add_argument("pipe_cls", nargs="?", help="module.submodule.ClassName")
    dock_p.set_defaults(func=_dockerize)

    run_p = subparsers.add_parser(
        "run",
        help="run a pipeline in its module's image, locally or on AWS Batch, against the S3 remote",
        description="Pushes input_bundle (a committed bundle, or - for none), runs pipe_cls in the image "
        "disdat-module-submodule, and (Local, or AWSBatch with --wait) pulls the output bundle back.",
    )
    run_p.add_argument("--backend", choices=["Local", "AWSBatch"], default="Local")
    run_p.add_argument("--force", action="store_true", help="re-run the root task")
    run_p.add_argument("--force-all", action="store_true", help="re-run every task")
    run_p.add_argument("--no-push-input", action="store_true", help="the input is already on the remote")
    run_p.add_argument(
        "--use-aws-session-token",
        type=int,
        metavar="SECONDS",
        help="give a job without a role temporary STS credentials; they sit in the job's overrides, "
        "readable by anyone who can describe jobs: prefer a job role ([run] job_role_arn)",
    )
    run_p.add_argument("-it", "--input-tag", action="append", default=[], metavar="KEY:VALUE", help="select the input")
    run_p.add_argument("-ot", "--output-tag", action="append", default=[], metavar="KEY:VALUE", help="tag the output")
    run_p.add_argument("--vcpus", type=int, help="vCPUs (Batch: default [run] vcpus; Local: docker's CPU limit)")
    run_p.add_argument(
        "--memory", type=int, metavar="MiB", help="memory (Batch: default [run] memory; Local: docker's limit)"
    )
    run_p.add_argument("--gpus", type=int, help="AWSBatch: GPUs (default [run] gpus)")
    run_p.add_argument("--timeout", type=int, metavar="SECONDS", help="AWSBatch: seconds per attempt (>= 60)")
    run_p.add_argument("--retries", type=int, help="AWSBatch: attempts after host failures (spot reclaims)")
    run_p.add_argument("--tag", action="append", default=[], metavar="KEY:VALUE", help="AWSBatch: tag the job")
    run_p.add_argument("--queue", help="AWSBatch: job queue (default [run] aws_batch_queue)")
    run_p.add_argument("--job-role-arn", help="IAM role of the AWS Batch job")
    run_p.add_argument("--workers", type=int, default=1, help="luigi workers inside the container")
    run_p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="set KEY in the container (KEY alone: this shell's value, masked wherever the job is shown)",
    )
    run_p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="KEY=ARN",
        help="set KEY from a Secrets Manager secret or SSM parameter ARN (AWSBatch resolves it as the job "
        "starts; Local resolves it here); the value is never written into the job",
    )
    run_p.add_argument(
        "--no-submit",
        action="store_true",
        help="AWSBatch: change nothing; print the job definition and the exact submission as JSON",
    )
    run_p.add_argument(
        "--wait", action="store_true", help="AWSBatch: follow the job (Ctrl-C terminates it) and pull its output"
    )
    run_p.add_argument("--detach", action="store_true", help="AWSBatch: submit and return (see `dsdt wait JOB`)")
    run_p.add_argument(
        "--build",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rebuild (and for AWSBatch push) the image when the code changed since it was built "
        "(default); --no-build refuses a stale image instead",
    )
    run_p.add_argument("input_bundle", help="committed input bundle name, or -")
    run_p.add_argument("output_bundle", help="output bundle name, or - for the default")
    run_p.add_argument("pipe_cls", help="module.submodule.ClassName")
    run_p.add_argument("pipe_args", nargs=argparse.REMAINDER, help="--param value ...")
    run_p.set_defaults(func=_run)

    jobs_p = subparsers.add_parser(
        "jobs", help="list the AWS Batch jobs this context submitted (dsdt run's and executor jobs, array children)"
    )
    jobs_p.set_defaults(func=_jobs)
    logs_p = subparsers.add_parser("logs", help="print a job's log (-f: follow it to the end)")
    logs_p.add_argument("job_id")
    logs_p.add_argument("-f", "--follow", action="store_true")
    logs_p.set_defaults(func=_logs)
    wait_p = subparsers.add_parser("wait", help="follow a submitted job to its end and pull its output")
    wait_p.add_argument("job_id")
    wait_p.set_defaults(func=_wait)
    cancel_p = subparsers.add_parser("cancel", help="terminate a job this context submitted (or every job of an apply)")
    cancel_p.add_argument("job_id", nargs="?")
    cancel_p.add_argument("--apply", dest="apply_id", metavar="ID", help="every job of apply ID (`dsdt jobs` shows it)")
    cancel_p.set_defaults(func=_cancel)


class PushBar:
    """A progress bar on stderr for image pushes: layers done out of layers seen, fed with the
    engine's push status lines ("Preparing <id>", "Pushed <id>", "Layer already exists <id>")."""

    DONE = ("Pushed", "Layer already exists", "Mounted from")

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.layers: set[str] = set()
        self.done: set[str] = set()

    def feed(self, line: str) -> bool:
        """Count a push status line; False for any other line."""
        status, _, layer = line.rpartition(" ")
        if status not in ("Preparing", "Waiting", "Pushing", *self.DONE) or not layer:
            return False
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="layer", desc="push", file=sys.stderr, leave=False)
        if layer not in self.layers:
            self.layers.add(layer)
            self.bar.total = len(self.layers)
        if status in self.DONE and layer not in self.done:
            self.done.add(layer)
            self.bar.update(1)
        self.bar.refresh()
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _dockerize(args: argparse.Namespace) -> int:
    if args.prune:
        return _prune(args)
    if args.keep is not None or args.registry or args.yes:
        raise DisdatError("--keep, --registry and --yes go with --prune", hint="add --prune")
    bar = PushBar()

    def log(line: str) -> None:
        if bar.feed(line) and not args.verbose:
            return
        if args.verbose or line.startswith(("Step ", "building ")):
            print(line, file=sys.stderr, flush=True)

    try:
        results = api.dockerize(
        args.pipe_root, args.pipe_cls, config_dir=args.config_dir, os_type=args.os_type,
            os_version=args.os_version, base_image=args.base_image, push=args.push, no_build=args.no_build, log=log,
        )  # fmt: skip
    finally:
        bar.close()
    for result in results:
        state = "built" if result.built else "up to date"
        print(f"{result.name}:{result.content_tag} ({state}; also tagged latest)")
        for reference in result.pushed:
            print(f"  pushed {reference}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    if args.yes and not args.registry:
        raise DisdatError("--yes only confirms registry deletes", hint="add --registry, or drop --yes")
    report = api.prune_images(args.pipe_root, args.pipe_cls, keep=args.keep, registry=args.registry)
    for local in report.local:
        freed = f"; freed {_size(local.freed_bytes)}" if local.deleted_images else ""
        print(f"{local.name}: removed {len(local.removed)} tag(s), kept {len(local.kept)}{freed}")
        for reference in local.removed:
            print(f"  removed {reference}")
        for reference in local.in_use:
            print(f"  kept {reference} (a container uses it: remove the container first)")
    doomed = sum(len(r.doomed) for r in report.registry)
    for remote in report.registry:
        print(f"registry {remote.repository}: {len(remote.doomed)} tag(s) to delete")
        for tag in remote.doomed:
            print(f"  delete {tag.tag} (built {tag.created[:19] or 'at an unknown time'})")
        for tag_name, reason in remote.kept:
            print(f"  keep {tag_name} ({reason})")
    if not doomed:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("nothing deleted from the registry: pass --yes to delete these tags", file=sys.stderr)
            return 0
        if input(f"delete {doomed} tag(s) from the registry? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted from the registry", file=sys.stderr)
            return 0
    report = api.prune_images(args.pipe_root, args.pipe_cls, keep=args.keep, registry=True, delete_registry=True)
    for remote in report.registry:
        for tag in remote.doomed:
            print(f"deleted {remote.repository}:{tag.tag}")
    return 0


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def _run(args: argparse.Namespace) -> int:
    import json

    from disdat_luigi.cli.common import current_context, parse_tags, pipeline_help

    if pipeline_help(args.pipe_cls, args.pipe_args):
        return 0
    result = api.run(
        current_context(), args.input_bundle, args.output_bundle, args.pipe_cls, backend=args.backend,
        input_tags=parse_tags(args.input_tag), output_tags=parse_tags(args.output_tag), force=args.force,
        force_all=args.force_all, no_push_input=args.no_push_input,
        use_aws_session_token=args.use_aws_session_token, vcpus=args.vcpus, memory=args.memory,
        job_role_arn=args.job_role_arn, workers=args.workers, no_submit=args.no_submit, wait=args.wait,
        pipe_args=args.pipe_args, log=_stderr, gpus=args.gpus, timeout=args.timeout, retries=args.retries,
        job_tags=parse_tags(args.tag), queue=args.queue, detach=args.detach, build=args.build, env=args.env,
        secrets=args.secret,
    )  # fmt: skip
    if result.reused:
        print(f"{result.output_name} {result.output_uuid}")
    elif result.status is api.RunStatus.PREPARED:
        shown = {"job_definition": result.job_definition, "submission": result.submission}
        print(json.dumps(shown, indent=2, sort_keys=True, default=str))
    elif result.status is api.RunStatus.SUBMITTED:
        print(result.job_id)
        print(
            f"submitted; collect the output with `dsdt wait {result.job_id}` (`dsdt logs -f` to watch)", file=sys.stderr
        )
    else:
        print(f"{result.output_name} {result.output_uuid}")
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _jobs(args: argparse.Namespace) -> int:
    import time

    from disdat_luigi.cli.common import current_context

    rows = api.jobs(current_context())
    print(f"{'JOB ID':<38} {'TASK':<32} {'EXECUTOR':<14} {'OUTPUT':<20} {'STATUS':<10} {'ATTEMPT':<7} "
          f"{'STARTED':<19} {'DURATION':>8} {'VCPU-S':>8} APPLY")  # fmt: skip
    for row in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["started"])) if row["started"] else "-"
        duration = f"{row['duration']:.0f} s" if row["duration"] is not None else "-"
        vcpu_seconds = f"{row['vcpu_seconds']:.0f}" if row["vcpu_seconds"] is not None else "-"
        print(f"{row['job_id']:<38} {row['task'][-32:]:<32} {row['executor'][:14]:<14} {row['output'][:20]:<20} "
              f"{row['status']:<10} {row['attempt']:<7} {started:<19} {duration:>8} {vcpu_seconds:>8} "
              f"{row['apply_id'] or '-'}")  # fmt: skip
    return 0


def _logs(args: argparse.Namespace) -> int:
    from disdat_luigi.cli.common import current_context

    job = api.logs(current_context(), args.job_id, follow=args.follow, log=print)
    return 1 if job is not None and job.failed else 0


def _wait(args: argparse.Namespace) -> int:
    from disdat_luigi.cli.common import current_context

    result = api.wait(current_context(), args.job_id, log=_stderr)
    print(f"{result.output_name} {result.output_uuid}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from disdat_luigi.cli.common import current_context
    from disdat_luigi.errors import RunError

    if (args.job_id is None) == (args.apply_id is None):
        raise RunError("name one job, or one apply with --apply ID", hint="dsdt cancel JOB | dsdt cancel --apply ID")
    if args.apply_id is not None:
        stopped = api.cancel_apply(current_context(), args.apply_id)
        print(f"terminated {len(stopped)} job(s) of apply {args.apply_id}: {' '.join(stopped) or 'none still running'}")
        return 0
    api.cancel(current_context(), args.job_id)
    print(f"terminated {args.job_id}")
    return 0
