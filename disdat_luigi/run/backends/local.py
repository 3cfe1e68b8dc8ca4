"""Run the pipeline's container on the local Docker engine."""

from __future__ import annotations

from disdat_luigi.dockerize import engine
from disdat_luigi.errors import ImageNotFound
from disdat_luigi.run.backends.base import Backend
from disdat_luigi.run.output import output_of
from disdat_luigi.run.request import ContainerJob, RunRequest, RunResult


class LocalBackend(Backend):
    name = "Local"

    def image_reference(self, image_name: str) -> str:
        client = engine.connect()
        reference = f"{image_name}:latest"
        if not engine.image_exists(client, reference):
            raise ImageNotFound(f"no local image {reference}")
        return reference

    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        """docker run with the configured network mode; the host store is never mounted."""
        client = engine.connect()
        container = client.containers.run(
            job.image,
            command=list(job.command),
            environment={**job.environment, **job.secret_environment},
            network_mode=self.settings.docker.network_mode,
            detach=True,
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
            return RunResult(self.name, "failed", log_tail=tuple(lines[-20:]))
        name, uuid = output_of(lines)
        return RunResult(self.name, "succeeded", output_name=name, output_uuid=uuid, log_tail=tuple(lines[-20:]))
