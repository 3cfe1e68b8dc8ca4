"""The image's entry point (`python -m disdat_luigi.cli.container`): run one pipeline against
the S3 remote, inside the container.

A fresh context bound to the remote; the input bundle's metadata pulled; apply with every new
bundle committed and pushed as soon as it closes (so a later failure loses nothing), upstream
bundles looked up on the remote. The last line names the output bundle for the host.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disdat-entrypoint",
        description="Run a disdat_luigi pipeline inside its image against an S3 remote "
        "(started by `dsdt run`; AWS settings come from the environment).",
    )
    parser.add_argument("--remote-context", required=True, help="remote context name")
    parser.add_argument("--remote-url", required=True, help="s3://bucket/prefix of the remote")
    parser.add_argument("--input-bundle", default="-", help="uuid of the input bundle, or - for none")
    parser.add_argument("--output-bundle", default="-", help="name of the output bundle (- for the default)")
    parser.add_argument("--output-bundle-uuid", default=None, help="uuid to give a newly made output bundle")
    parser.add_argument("--output-tag", action="append", default=[], metavar="KEY:VALUE")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--force-all", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server-side-encryption", default="none", choices=["none", "AES256", "aws:kms"])
    parser.add_argument("--sse-kms-key-id", default="")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--task-spec", help="run exactly one task of a host's apply (JSON from the host)")
    parser.add_argument(
        "--task-spec-url", help="s3:// task spec (or list of an array job's, the child's index picks one)"
    )
    parser.add_argument("--task-spec-sha256", help="the sha256 the stored task spec must have (set by the host)")
    parser.add_argument(
        "--driver-config", help="run as a driver: send tasks to the host's executors (JSON from the host)"
    )
    parser.add_argument("pipe_cls", nargs="?", help="module.submodule.ClassName")
    parser.add_argument("pipe_args", nargs=argparse.REMAINDER, help="--param value ...")
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGTERM (`docker stop`, Batch's terminate_job or timeout): unwinds like Ctrl-C, so the task
    abandons its open bundle; as PID 1 the container would otherwise ignore the signal until killed."""


def _stop(signum: int, _frame: Any) -> None:
    raise _Stopped(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the task (or pipeline) in a store of its own under a work directory: DISDAT_WORK_DIR,
    or a temporary one, removed when it is done (its bundles were pushed as they closed)."""
    named = os.environ.get("DISDAT_WORK_DIR")
    work = Path(named or tempfile.mkdtemp(prefix="disdat-run-"))
    try:
        return _run(work, argv)
    finally:
        if not named:
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    from disdat_luigi import api
    from disdat_luigi.apply.driver import apply_outcome
    from disdat_luigi.cli.common import parse_tags
    from disdat_luigi.config import load_settings
    from disdat_luigi.errors import DisdatError
    from disdat_luigi.run.output import output_line
    from disdat_luigi.run.runner import container_apply

    os.environ["DISDAT_HOME"] = str(work / "store")
    os.environ["DISDAT_CONFIG"] = str(work / "disdat.cfg")
    try:
        api.init()
        _write_remote_settings(Path(os.environ["DISDAT_CONFIG"]), args)
        api.context("run")
        api.remote("run", args.remote_context, args.remote_url)
        if args.task_spec or args.task_spec_url:
            spec = _task_spec(args, os.environ)
            request = _one_task(spec, os.environ)
            outcome = apply_outcome(request, load_settings())
            print(output_line(outcome.root_name, outcome.root_uuid), flush=True)
            return 0
        if not args.pipe_cls:
            raise DisdatError("name the pipeline class (or give --task-spec)")
        input_uuid = None if args.input_bundle in ("-", "") else args.input_bundle
        if input_uuid:
            api.pull("run", uuid=input_uuid)
        cls, params = api.parse_pipeline(args.pipe_cls, args.pipe_args)
        request = container_apply(
            context="run",
            transform=cls,
            params=params,
            output_bundle=args.output_bundle,
            output_tags=parse_tags(args.output_tag),
            force=args.force,
            force_all=args.force_all,
            input_uuid=input_uuid,
            output_bundle_uuid=args.output_bundle_uuid,
            workers=args.workers,
            provenance=_provenance(os.environ),
        )
        if args.driver_config:
            outcome = _drive(args.driver_config, request)
        else:  # a whole pipeline in this one container, whatever executors its classes name
            outcome = apply_outcome(dataclasses.replace(request, executors={"*": "local"}), load_settings())
    except DisdatError as err:
        if args.verbose:
            traceback.print_exc()
        print(f"disdat run failed: {err.message}", file=sys.stderr, flush=True)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr, flush=True)
        return 1
    except _Stopped:
        print("disdat run stopped (SIGTERM): the unfinished task's bundle was abandoned", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM
    # a reused root came from the remote (incremental pull); a new one was pushed as it closed
    print(output_line(outcome.root_name, outcome.root_uuid), flush=True)
    return 0


def _drive(driver_config: str, request: Any) -> Any:
    """The apply of a driver job: tasks whose executor is aws_batch go out as their own jobs, on
    the images the host pushed; the rest run here."""
    from disdat_luigi.apply.driver import apply_outcome
    from disdat_luigi.config import load_settings
    from disdat_luigi.run.driver_job import DriverConfig
    from disdat_luigi.run.executors import executor_factory

    driver = DriverConfig.from_json(driver_config)
    driver.install(Path(os.environ["DISDAT_CONFIG"]))
    settings = load_settings()
    factory = executor_factory(
        settings,
        build=False,
        images=driver.images,
        environment=driver.environment(os.environ),
        driver=os.environ.get("AWS_BATCH_JOB_ID", ""),
    )
    return apply_outcome(request, settings, factory, lambda line: print(line, flush=True))


def _task_spec(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """This container's TaskSpec: given inline, or stored on the remote under the sha256 the
    job's command carries (an array child picks its own by AWS_BATCH_JOB_ARRAY_INDEX, else the
    `:N` suffix of AWS_BATCH_JOB_ID)."""
    from disdat_luigi.apply.taskspec import TaskSpec, read_stored
    from disdat_luigi.errors import TaskSpecRejected

    if args.task_spec:
        return TaskSpec.from_json(args.task_spec, "given with --task-spec")
    if not args.task_spec_sha256:
        raise TaskSpecRejected("--task-spec-url needs --task-spec-sha256 (the host sets both)")
    index_text = env.get("AWS_BATCH_JOB_ARRAY_INDEX") or env.get("AWS_BATCH_JOB_ID", "").rpartition(":")[2]
    index = int(index_text) if index_text.isdigit() else None
    return read_stored(_download(args.task_spec_url, env), args.task_spec_sha256, args.task_spec_url, index)


def _download(url: str, env: Mapping[str, str]) -> bytes:
    from disdat_luigi.errors import DisdatError
    from disdat_luigi.store.location import parse_s3_url
    from disdat_luigi.store.remote.s3 import S3
    from disdat_luigi.store.store import LocalStore

    parsed = parse_s3_url(url)
    settings = LocalStore(Path(env["DISDAT_HOME"])).context("run").remote_settings
    body = S3(settings).get_bytes(parsed.bucket, parsed.key, limit=64 * 1024 * 1024)
    if body is None:
        raise DisdatError(f"the task list {url} is not on the remote")
    return body


def _one_task(spec: Any, env: Mapping[str, str]) -> Any:
    """The apply of exactly one task of a host's apply: its inputs pinned to the bundles the host
    pushed (brought here with their files), forced to run, its bundle made under the host's uuid
    and pushed; everything local here, whatever executor the class names."""
    from disdat_luigi import api
    from disdat_luigi.apply.loader import load_pipe_class
    from disdat_luigi.run.runner import container_apply

    for uuid in sorted({*spec.pins.values(), *([spec.input_bundle] if spec.input_bundle else [])}):
        api.pull("run", uuid=uuid, localize=True)
    cls: Any = load_pipe_class(spec.pipe_cls)
    params = {name: param.parse(spec.params[name]) for name, param in cls.get_params() if name in spec.params}
    request = container_apply(
        context="run",
        transform=cls,
        params=params,
        output_bundle=spec.output_bundle,
        output_tags=dict(spec.output_tags),
        force=True,
        force_all=False,
        input_uuid=spec.input_bundle,
        output_bundle_uuid=spec.output_uuid,
        provenance={**_provenance(env), "executor": spec.executor},
    )
    expected_code = {spec.pipe_cls: spec.code} if spec.code else {}
    return dataclasses.replace(
        request,
        incremental_pull=False,
        executors={"*": "local"},
        pins=dict(spec.pins),
        mark_root=spec.mark_root,
        expected_code=expected_code,
    )


def _provenance(env: Mapping[str, str]) -> dict[str, str]:
    """Where this run happened, for every bundle it makes: the AWS Batch job (and array index)
    and the memory it was given (after an out-of-memory retry: the memory it finally had)."""
    found = {"batch_job_id": env.get("AWS_BATCH_JOB_ID"), "batch_memory_mib": env.get("DISDAT_JOB_MEMORY")}
    return {k: v for k, v in found.items() if v}


def _write_remote_settings(config: Path, args: argparse.Namespace) -> None:
    """The host's encryption settings for the container's own config."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config)
    if not parser.has_section("remote"):
        parser.add_section("remote")
    parser.set("remote", "server_side_encryption", args.server_side_encryption)
    parser.set("remote", "sse_kms_key_id", args.sse_kms_key_id)
    with open(config, "w", encoding="utf-8") as handle:
        parser.write(handle)


if __name__ == "__main__":
    sys.exit(main())
