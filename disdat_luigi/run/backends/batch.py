"""Run the pipeline's image as an AWS Batch job; optionally follow it to the end."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from disdat_luigi.config import ECR_REGISTRY
from disdat_luigi.dockerize import engine
from disdat_luigi.errors import ImageNotFound, JobFailed, RunError
from disdat_luigi.run import aws
from disdat_luigi.run.backends.base import Backend
from disdat_luigi.run.output import output_of
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus

POLL_SECONDS = 2.0
FINAL = ("SUCCEEDED", "FAILED")


def job_definition_name(image_name: str) -> str:
    return f"{image_name.replace('/', '-')}-job-definition"


class BatchBackend(Backend):
    name = BackendName.AWS_BATCH

    def image_reference(self, image_name: str) -> str:
        """The registry copy of the exact image built locally (its content tag, never 'latest')."""
        registry = self.settings.docker.registry
        if not registry:
            raise RunError(
                "AWS Batch runs images from a registry", hint="set [docker] registry and `dsdt dockerize --push`"
            )
        client = engine.connect()
        local = engine.get_image(client, f"{image_name}:latest")
        content_tag = (local.labels or {}).get("disdat.content-tag")
        if not content_tag:
            raise ImageNotFound(f"{image_name}:latest was not built by dsdt dockerize")
        if registry == ECR_REGISTRY:
            registry, _auth = engine.ecr_login(image_name)
        reference = f"{registry}/{image_name}:{content_tag}"
        if not engine.image_exists(client, reference):
            raise ImageNotFound(
                f"{reference} was never pushed", hint="push it with `dsdt dockerize --push PIPE_ROOT PIPE_CLS`"
            )
        return reference

    def container_properties(self, request: RunRequest, image: str) -> dict[str, Any]:
        vcpus = request.vcpus or self.settings.run.vcpus
        memory = request.memory or self.settings.run.memory
        properties: dict[str, Any] = {
            "image": image,
            "resourceRequirements": [{"type": "VCPU", "value": str(vcpus)}, {"type": "MEMORY", "value": str(memory)}],
        }
        role = request.job_role_arn or self.settings.run.job_role_arn
        if role:
            properties["jobRoleArn"] = role
        return properties

    def job_definition(self, request: RunRequest, job: ContainerJob) -> Mapping[str, Any]:
        """Reuse the newest active revision when image, resources and role match; else register one."""
        name = job_definition_name(job.image_name)
        wanted = self.container_properties(request, job.image)
        current = aws.active_job_definition(name)
        if current is not None and _matches(current.get("containerProperties", {}), wanted):
            return current
        return aws.register_job_definition(name, wanted)

    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        queue = self.settings.run.aws_batch_queue
        if request.no_submit:
            definition = self.job_definition(request, job)
            return RunResult(backend=self.name, status=RunStatus.PREPARED, job_definition=definition)
        if not queue:
            raise RunError("no AWS Batch queue is configured", hint="set [run] aws_batch_queue in disdat.cfg")
        aws.check_queue(queue)
        definition = self.job_definition(request, job)
        environment = dict(job.environment)
        role = request.job_role_arn or self.settings.run.job_role_arn
        if request.use_aws_session_token and not role:
            environment.update(aws.session_credentials(request.use_aws_session_token))
        overrides = {
            "command": list(job.command),
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        }
        job_name = f"{job_definition_name(job.image_name)[: -len('-job-definition')]}-{uuidlib.uuid4().hex[:8]}"
        job_id = aws.submit_job(job_name, queue, definition["jobDefinitionArn"], overrides)
        self.log(f"submitted AWS Batch job {job_id} ({job_name}) to queue {queue}")
        if not request.wait:
            return RunResult(backend=self.name, status=RunStatus.SUBMITTED, job_id=job_id, job_definition=definition)
        return self._follow(job_id, definition)

    def _follow(self, job_id: str, definition: Mapping[str, Any]) -> RunResult:
        stream = f"{definition['jobDefinitionName']}/default/{job_id}"
        seen = 0
        lines: list[str] = []
        while True:
            state = aws.describe_job(job_id)
            stream = state.get("container", {}).get("logStreamName") or stream
            for index, line in aws.log_lines(stream, seen):
                lines.append(line)
                self.log(line)
                seen = index + 1
            if state["status"] in FINAL:
                break
            time.sleep(POLL_SECONDS)
        for _attempt in range(10):  # the log may be written only after the container exits
            if lines:
                break
            time.sleep(POLL_SECONDS / 2)
            for index, line in aws.log_lines(stream, seen):
                lines.append(line)
                self.log(line)
                seen = index + 1
        if state["status"] == "FAILED":
            reason = state.get("statusReason") or "no reason given"
            raise JobFailed(
                f"AWS Batch job {job_id} failed: {reason}",
                hint="last log lines:\n" + "\n".join(lines[-15:]) if lines else "the job left no log",
            )
        name, uuid = output_of(lines)
        return RunResult(
            backend=self.name,
            status=RunStatus.SUCCEEDED,
            output_name=name,
            output_uuid=uuid,
            job_id=job_id,
            job_definition=definition,
            log_tail=tuple(lines[-20:]),
        )


def _matches(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    def resources(props: Mapping[str, Any]) -> dict[str, str]:
        return {r["type"]: str(r["value"]) for r in props.get("resourceRequirements", [])}

    return (
        current.get("image") == wanted.get("image")
        and resources(current) == resources(wanted)
        and (current.get("jobRoleArn") or None) == (wanted.get("jobRoleArn") or None)
    )
