"""The `docker` executor: the same containers on this machine's engine (each task alone in its
module's image, as AWS Batch would run it), and `dsdt run --backend Local`'s one container."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from disdat_luigi.apply import taskspec
from disdat_luigi.apply.executors import Phase, RemoteTask
from disdat_luigi.dockerize import engine
from disdat_luigi.errors import DisdatError, ImageNotFound, JobFailed, RunError
from disdat_luigi.run import journal
from disdat_luigi.run.batch import client
from disdat_luigi.run.executors.container import ContainerExecutor, Tracked
from disdat_luigi.run.output import output_of, without_output_line
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus


class DockerExecutor(ContainerExecutor):
    """The same containers on this machine's engine (to debug what Batch would run)."""

    platform = "docker"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Any = None
        self.exit_codes: dict[str, int] = {}
        self.resolved: dict[str, dict[str, str]] = {}  # class path -> its environment, secrets read here

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = engine.connect()
        return self._client

    def _resolved(self, pipe_cls: str) -> dict[str, str]:
        """The class's environment with its secrets read on this host (once per class)."""
        if pipe_cls not in self.resolved:
            self.resolved[pipe_cls] = self.environments.get(pipe_cls, self.environment).resolved()
        return self.resolved[pipe_cls]

    def start(self, tasks: Sequence[RemoteTask], started: Callable[[RemoteTask, str], None]) -> None:
        for task in tasks:
            request = replace(self.run_request(task), gpus=None)
            if task.options.get("gpus"):
                raise JobFailed(f"{task.label} asks for GPUs, which the docker executor does not pass to containers")
            container = engine.run_container(
                self.client,
                self.images[task.pipe_cls][1],
                command=list(self.command(taskspec.inline_arguments(task.spec(self.name)))),
                environment={
                    **self._resolved(task.pipe_cls),
                    **client.endpoint_environment(),
                    **self.secret_environment(),
                },
                network_mode=self.settings.docker.network_mode,
                labels={"disdat.identity": task.identity, "disdat.executor": self.name},
                **self.limits(request),
            )
            started(task, str(container.id))

    def phases(self, job_ids: Sequence[str]) -> dict[str, Phase | None]:
        import docker.errors

        found: dict[str, Phase | None] = {}
        for job_id in job_ids:
            try:
                state = self.client.containers.get(job_id).attrs.get("State", {})
            except docker.errors.NotFound:
                found[job_id] = None
                continue
            if state.get("Status") in ("exited", "dead"):
                self.exit_codes[job_id] = int(state.get("ExitCode", 1))
                found[job_id] = Phase.DONE if self.exit_codes[job_id] == 0 else Phase.FAILED
            else:
                found[job_id] = Phase.RUNNING if state.get("Status") == "running" else Phase.SUBMITTED
        return found

    def finish(self, tracked: Tracked) -> tuple[list[str], DisdatError | None]:
        container = self.client.containers.get(tracked.job_id)
        lines = without_output_line(container.logs().decode("utf-8", "replace").splitlines())
        container.remove(force=True)
        code = self.exit_codes.pop(tracked.job_id, 1)
        if tracked.phase is Phase.DONE:
            return lines, None
        reason = "it ran out of memory (exit code 137)" if code == 137 else f"exit code {code}"
        return lines, JobFailed(
            f"its container {tracked.job_id[:12]} failed: {reason}", hint="last log lines:\n" + "\n".join(lines[-20:])
        )

    def terminate(self, job_id: str) -> None:
        self.client.containers.get(job_id).remove(force=True)

    def secret_environment(self) -> dict[str, str]:
        """The host's resolved credentials (from any profile or chain): a container on this
        machine acts as the user who started it. Never given to AWS Batch jobs."""
        import boto3

        credentials = boto3.session.Session().get_credentials()
        if credentials is None:
            return {}
        frozen = credentials.get_frozen_credentials()
        env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
        return env

    def image_reference(self, name: str) -> str:
        reference = f"{name}:latest"
        if not engine.image_exists(self.client, reference):
            raise ImageNotFound(f"no local image {reference}")
        return reference

    @staticmethod
    def limits(request: RunRequest) -> dict[str, Any]:
        """--vcpus and --memory as docker's CPU and memory limits (never silently ignored)."""
        limits: dict[str, Any] = {}
        if request.vcpus is not None:
            if request.vcpus < 1:
                raise RunError(f"--vcpus {request.vcpus}: a container needs at least 1 CPU")
            limits["nano_cpus"] = int(request.vcpus * 1e9)
        if request.memory is not None:
            if request.memory < 6:
                raise RunError(f"--memory {request.memory}: docker needs at least 6 MiB")
            limits["mem_limit"] = f"{request.memory}m"
        if request.gpus:
            raise RunError("--gpus is for AWS Batch; the Local backend does not pass GPUs to the container")
        return limits

    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        """docker run with the configured network mode; the host store is never mounted."""
        container = engine.run_container(
            self.client,
            job.image,
            command=list(job.command),
            environment={**request.environment.resolved(), **job.environment, **self.secret_environment()},
            network_mode=self.settings.docker.network_mode,
            **self.limits(request),
        )
        lines: list[str] = []
        try:
            for raw in container.logs(stream=True, follow=True):
                for line in raw.decode("utf-8", "replace").splitlines():
                    lines.append(line)
                    self.log(line)
            status = container.wait()
        finally:
            container.remove(force=True)
        if status.get("StatusCode", 1) != 0:
            return RunResult(backend=BackendName.LOCAL, status=RunStatus.FAILED, log_tail=tuple(lines[-20:]))
        name, uuid = output_of(lines)
        return RunResult(
            backend=BackendName.LOCAL,
            status=RunStatus.SUCCEEDED,
            output_name=name,
            output_uuid=uuid,
            log_tail=tuple(lines[-20:]),
        )


# --- a docker job found again (`dsdt jobs`, `logs`, `wait`, `cancel`), by its container id ----------


@dataclass(frozen=True, kw_only=True)
class ContainerState:
    """Where a docker job's container is: RUNNING, SUCCEEDED, FAILED, or GONE (removed once its
    apply collected it: its log lines are in that apply's output)."""

    status: str
    exit_code: int | None = None
    started: float | None = None
    duration: float | None = None


def container_state(job_id: str) -> ContainerState:
    import docker.errors

    try:
        attrs = engine.connect().containers.get(job_id).attrs.get("State", {})
    except docker.errors.NotFound:
        return ContainerState(status="GONE")
    started, finished = _epoch(attrs.get("StartedAt")), _epoch(attrs.get("FinishedAt"))
    if attrs.get("Status") not in ("exited", "dead"):
        return ContainerState(status="RUNNING", started=started)
    code = int(attrs.get("ExitCode", 1))
    duration = finished - started if started and finished else None
    return ContainerState(
        status="SUCCEEDED" if code == 0 else "FAILED", exit_code=code, started=started, duration=duration
    )


def container_log(job_id: str, follow: bool, log: Callable[[str], None]) -> list[str]:
    """A docker job's log lines (with `follow`: until its container ends), each also given to `log`."""
    import docker.errors

    try:
        container = engine.connect().containers.get(job_id)
    except docker.errors.NotFound as err:
        raise RunError(
            f"the container of docker job {job_id[:12]} is gone",
            hint="the apply that ran it removed it when it ended; its log lines are in that apply's output",
        ) from err
    lines: list[str] = []
    chunks = container.logs(stream=True, follow=True) if follow else [container.logs()]
    for chunk in chunks:
        for line in chunk.decode("utf-8", "replace").splitlines():
            lines.append(line)
            log(line)
    return lines


def stop_container(job_id: str) -> bool:
    """SIGTERM, then SIGKILL after docker's grace period (the entry point abandons its bundle); False
    when the container is already gone."""
    import docker.errors

    try:
        engine.connect().containers.get(job_id).stop()
    except docker.errors.NotFound:
        return False
    return True


def _epoch(stamp: str | None) -> float | None:
    """Docker's RFC 3339 times (nanoseconds, `Z`) as epoch seconds; None for the zero time."""
    if not stamp or stamp.startswith("0001-"):
        return None
    from datetime import datetime

    trimmed = stamp.rstrip("Z").split(".")
    fraction = (trimmed[1] + "000000")[:6] if len(trimmed) > 1 else "000000"
    return datetime.fromisoformat(f"{trimmed[0]}.{fraction}+00:00").timestamp()


def describe(record: journal.JobRecord) -> dict[str, Any]:
    """A docker job's row of `dsdt jobs`."""
    found = container_state(record.job_id)
    return journal.row(record, status=found.status, started=found.started, duration=found.duration)
