"""Run the pipeline's container on the local Docker engine."""

from __future__ import annotations

from typing import Any

from disdat_luigi.dockerize import engine
from disdat_luigi.errors import ImageNotFound, RunError
from disdat_luigi.run.backends.base import Backend
from disdat_luigi.run.output import output_of
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus


class LocalBackend(Backend):
    name = BackendName.LOCAL

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

    def image_reference(self, image_name: str) -> str:
        client = engine.connect()
        reference = f"{image_name}:latest"
        if not engine.image_exists(client, reference):
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
        client = engine.connect()
        container = client.containers.run(
            job.image,
            command=list(job.command),
            environment={**request.environment.resolved(), **job.environment, **self.secret_environment()},
            network_mode=self.settings.docker.network_mode,
            detach=True,
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
            return RunResult(backend=self.name, status=RunStatus.FAILED, log_tail=tuple(lines[-20:]))
        name, uuid = output_of(lines)
        return RunResult(
            backend=self.name,
            status=RunStatus.SUCCEEDED,
            output_name=name,
            output_uuid=uuid,
            log_tail=tuple(lines[-20:]),
        )
