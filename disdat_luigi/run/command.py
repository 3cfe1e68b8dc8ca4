"""The host -> container contract's command line, built once for every executor: the remote (and
its encryption) the container works against, then its work: one task (a `TaskSpec`, see
apply/taskspec.py) or, for `dsdt run`, a whole apply. The container side is cli/container.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from disdat_luigi.config import RemoteSettings
from disdat_luigi.store.location import RemoteLocation


def container_command(location: RemoteLocation, remote: RemoteSettings, work: Sequence[str]) -> tuple[str, ...]:
    """The image entry point's arguments: the remote, its encryption, then the work."""
    args = [
        "--remote-context", location.context,
        "--remote-url", f"s3://{location.bucket}/{location.prefix}".rstrip("/"),
        "--server-side-encryption", remote.server_side_encryption,
    ]  # fmt: skip
    if remote.sse_kms_key_id:
        args += ["--sse-kms-key-id", remote.sse_kms_key_id]
    return (*args, *work)


def apply_work(
    *,
    pipe_cls: str,
    pipe_args: Sequence[str],
    input_uuid: str | None,
    output_bundle: str,
    workers: int,
    force: bool,
    force_all: bool,
    output_tags: Mapping[str, str],
    driver: str | None = None,
) -> list[str]:
    """The work of `dsdt run`: a whole apply of `pipe_cls` in the container (with `driver`, the
    host's DriverConfig as JSON: an apply that sends tasks to executors, see run/driver_job.py)."""
    args = ["--input-bundle", input_uuid or "-", "--output-bundle", output_bundle or "-", "--workers", str(workers)]
    if force:
        args.append("--force")
    if force_all:
        args.append("--force-all")
    for key, value in output_tags.items():
        args += ["--output-tag", f"{key}:{value}"]
    if driver is not None:
        args += ["--driver-config", driver]
    return [*args, pipe_cls, *pipe_args]
