"""The one exception tree of disdat_luigi; every error carries a hint for the user.

DisdatError
├── ConfigError               the INI file is missing or malformed
├── InvalidName               a context, bundle or tag name that is empty or escapes a directory
├── InvalidPolicy             a gc keep rule that cannot be applied (a negative count, a bad tag)
├── ContextError
│   ├── ContextNotFound
│   ├── NoCurrentContext
│   └── IndexDamaged          the sqlite index is not a database (rebuilt by `dsdt verify --rebuild`)
├── BundleError
│   ├── BundleNotFound
│   ├── PathNotFound          a file or directory given to `add` that does not exist
│   ├── BundleStateError      an open bundle read, or a closed bundle written
│   │   └── BundleExists      a bundle of that uuid is already in the context
│   ├── UnsupportedValue      a value the codecs cannot store, named by type
│   ├── BundleCorrupt         files missing or not matching the manifest
│   └── NotCommitted
├── RemoteError
│   ├── RemoteNotConfigured
│   ├── BucketNotFound
│   ├── CredentialsError
│   ├── ManifestRejected      a manifest (remote or local) that is malformed or hostile
│   │   └── PartialPull       a pull that skipped damaged remote bundles (carries the result)
│   ├── UuidConflict          the remote holds a different bundle under the same uuid
│   ├── RemoteOnlyData        the action would leave bundles whose files only the remote has unreadable
│   ├── GcInProgress          a remote gc is deleting what a push or delocalize needs
│   └── TransferError
├── PipelineError
│   ├── PipeClassNotFound
│   ├── ParameterError
│   ├── DependencyNotFound
│   ├── RequiresFailed        user code raised while the DAG was planned (pipe_requires)
│   └── ApplyError            carries the apply result
├── DockerError
│   ├── DockerUnavailable
│   ├── ImageNotFound
│   └── BuildError
├── LocalDiskError            the local disk refused a read or write (full, read-only, permissions)
└── RunError
    ├── QueueNotFound
    ├── JobFailed
    ├── JobEnvironmentError   an --env/--secret (or env option) that cannot be given to a job
    └── TaskSpecRejected      a container's task spec that is malformed or not the one submitted
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, Protocol


class DisdatError(Exception):
    """Root of every error disdat_luigi raises on purpose."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class ConfigError(DisdatError):
    default_hint = "run `dsdt init` to create a fresh config, or fix the file by hand"


class InvalidName(DisdatError):
    default_hint = "use a non-empty name without '/', '..', NUL, '*' or '?'"


class InvalidPolicy(DisdatError):
    """A keep rule of `dsdt gc` that makes no sense; nothing was deleted."""

    default_hint = "use --keep-last N (N >= 1), --keep-days D (D >= 0), --keep-tag key:value; see `dsdt gc --help`"


class ContextError(DisdatError):
    pass


class ContextNotFound(ContextError):
    default_hint = "list contexts with `dsdt context`, create one with `dsdt context NAME`"


class NoCurrentContext(ContextError):
    default_hint = "create a context with `dsdt context NAME` and select it with `dsdt switch NAME`"


class IndexDamaged(ContextError):
    default_hint = "run `dsdt verify --rebuild` to rebuild the index from the bundles"


class BundleError(DisdatError):
    pass


class BundleNotFound(BundleError):
    default_hint = "list bundles with `dsdt ls`"


class PathNotFound(BundleError):
    default_hint = "check the path; relative paths are taken from the current directory"


class BundleStateError(BundleError):
    pass


class BundleExists(BundleStateError):
    default_hint = "leave the uuid out to get a fresh one"


class UnsupportedValue(BundleError):
    default_hint = (
        "store None, bool, int, float, str, bytes, numpy scalars and arrays, pandas objects, "
        "file paths, or lists/tuples/dicts of these"
    )


class BundleCorrupt(BundleError):
    default_hint = "run `dsdt verify` to list damaged bundles, then remove or re-pull them"


class NotCommitted(BundleError):
    default_hint = "commit it first with `dsdt commit NAME`"


class RemoteError(DisdatError):
    pass


class RemoteNotConfigured(RemoteError):
    default_hint = "bind the context with `dsdt remote REMOTE_CONTEXT s3://bucket/prefix`"


class BucketNotFound(RemoteError):
    default_hint = "create the bucket first, or check the name and AWS_ENDPOINT_URL"


class CredentialsError(RemoteError):
    default_hint = "configure AWS credentials (environment, profile, or instance role)"


class ManifestRejected(RemoteError):
    default_hint = "the remote copy is damaged or hostile; remove it with `dsdt rmr -u <its uuid>`"

    @classmethod
    def of_remote(cls, message: str, uuid: str) -> ManifestRejected:
        """A damaged remote manifest of bundle `uuid`: the hint names the command that removes it."""
        return cls(message, hint=f"the remote copy is damaged or hostile; remove it with `dsdt rmr -u {uuid}`")


class PartialPull(ManifestRejected):
    """A pull that brought every readable bundle but skipped some damaged ones; `result` is the
    pull's result (the bundles it did bring)."""

    def __init__(self, message: str, result: Any, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


class UuidConflict(RemoteError):
    pass


class RemoteOnlyData(RemoteError):
    pass


class GcInProgress(RemoteError):
    """A remote gc is deleting what a push (it waited, then published nothing) or a delocalize
    (it dropped nothing) needs."""


class TransferError(RemoteError):
    default_hint = "check the network and retry; completed files are skipped on the next attempt"


class PipelineError(DisdatError):
    pass


class PipeClassNotFound(PipelineError):
    default_hint = "give the class as module.submodule.ClassName, importable from the current directory"


class ParameterError(PipelineError):
    pass


class DependencyNotFound(PipelineError):
    pass


class RequiresFailed(PipelineError):
    default_hint = "fix the task's pipe_requires; nothing was run"


class ApplyError(PipelineError):
    """A pipeline run that did not succeed; `result` is what apply would have returned."""

    def __init__(self, message: str, result: dict[str, Any], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


class DockerError(DisdatError):
    pass


class DockerUnavailable(DockerError):
    default_hint = "start the Docker engine (dockerd) or set DOCKER_HOST"


class ImageNotFound(DockerError):
    pass


class BuildError(DockerError):
    pass


class RunError(DisdatError):
    pass


class QueueNotFound(RunError):
    default_hint = "set [run] aws_batch_queue in disdat.cfg to an existing AWS Batch job queue"


class FailedJob(Protocol):
    """What a diagnosis needs of a failed job (the Batch layer's `JobState` has it)."""

    @property
    def job_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status_reason(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def container_reason(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def out_of_memory(self) -> bool: ...


class JobFailed(RunError):
    TAIL = 15  # log lines quoted in the hint

    @classmethod
    def from_job(cls, job: FailedJob, lines: Sequence[str], memory: int) -> JobFailed:
        """The error for a failed job: its name and id, AWS's status reason, the container's exit
        code and reason, a likely out-of-memory kill said as such, and the last log lines (of its
        last attempt) as the hint."""
        parts = [f"AWS Batch job {job.name} ({job.job_id}) failed"]
        if job.attempts > 1:
            parts[0] += f" after {job.attempts} attempts"
        parts.append(f"status reason: {job.status_reason or 'none given'}")
        if job.exit_code is not None:
            parts.append(f"exit code {job.exit_code}")
        if job.container_reason:
            parts.append(f"container: {job.container_reason}")
        message = "; ".join(parts)
        if job.out_of_memory:
            message += (
                f". It was most likely killed for running out of memory: it asked for {memory} MiB; "
                f"ask for more with --memory {memory * 2} (or [run] memory, or [run] memory_retry_factor to retry)"
            )
        tail = "\n".join(lines[-cls.TAIL :]) if lines else "the job left no log"
        return cls(message, hint="last log lines:\n" + tail)


class JobEnvironmentError(RunError):
    default_hint = "write --env KEY=VALUE, --env KEY or --secret KEY=ARN"


class TaskSpecRejected(RunError):
    """The task spec a container was given is malformed, or not the one its job was submitted with."""


class LocalDiskError(DisdatError):
    """The local disk refused a read or write: full, read-only, permissions, a missing directory."""

    default_hint = "check the path, its permissions and free space (`df -h`)"


def describe_os_error(err: BaseException) -> str:
    """One line for a disk or index failure: what happened and to which path."""
    if isinstance(err, OSError):
        what = err.strerror or type(err).__name__
        if err.errno == errno.ENOSPC:
            what = "no space left on device"
        path = err.filename if err.filename is not None else ""
        return f"{what.lower()}: {path}" if path else what.lower()
    text = str(err)
    if "disk is full" in text or "disk I/O" in text:
        return f"the bundle index cannot be written ({text}); no space left on device?"
    return f"the bundle index failed: {text}"


def disk_error(err: OSError, where: str) -> LocalDiskError:
    """Wrap a local OSError met while doing `where` (e.g. 'writing bundle X')."""
    return LocalDiskError(f"{where}: {describe_os_error(err)}")
