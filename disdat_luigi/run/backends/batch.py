"""Run the pipeline's image as an AWS Batch job; optionally follow it to the end."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from disdat_luigi.config import ECR_REGISTRY
from disdat_luigi.dockerize import engine
from disdat_luigi.errors import ImageNotFound, RunError
from disdat_luigi.run import aws, jobs
from disdat_luigi.run.backends.base import Backend
from disdat_luigi.run.jobs import JobSpec, Resources
from disdat_luigi.run.output import output_of
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult, RunStatus


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

    def resources(self, request: RunRequest, memory: int | None = None) -> Resources:
        run = self.settings.run
        vcpus = run.vcpus if request.vcpus is None else request.vcpus
        gpus = run.gpus if request.gpus is None else request.gpus
        chosen = Resources(vcpus=vcpus, memory=memory or request.memory or run.memory, gpus=gpus)
        if chosen.vcpus < 1 or chosen.memory < 1 or chosen.gpus < 0:
            raise RunError(
                f"a job needs at least 1 vCPU and 1 MiB of memory, not {chosen.vcpus} and {chosen.memory}",
                hint="check --vcpus, --memory and [run] vcpus/memory",
            )
        return chosen

    def container_properties(self, request: RunRequest, image: str) -> dict[str, Any]:
        properties: dict[str, Any] = {"image": image, "resourceRequirements": self.resources(request).requirements()}
        role = request.job_role_arn or self.settings.run.job_role_arn
        if role:
            properties["jobRoleArn"] = role
        if request.environment.secrets:  # by reference: Batch resolves them as the container starts
            properties["secrets"] = request.environment.batch_secrets()
            if self.settings.run.execution_role_arn:
                properties["executionRoleArn"] = self.settings.run.execution_role_arn
            else:
                self.log(
                    "warning: the job's secrets are read with its execution role, and [run] execution_role_arn "
                    "is not set: on AWS, set it to a role that may read them"
                )
        return properties

    def job_definition(self, request: RunRequest, job: ContainerJob, register: bool = True) -> Mapping[str, Any]:
        """Any active revision whose image, resources and role match (not only the newest); a new
        revision only when none does (without `register`: the definition that would be registered)."""
        name = job_definition_name(job.image_name)
        wanted = self.container_properties(request, job.image)
        for current in aws.active_job_definitions(name):
            if _matches(current.get("containerProperties", {}), wanted):
                return current
        if not register:
            return {"jobDefinitionName": name, "type": "container", "containerProperties": wanted}
        return aws.register_job_definition(name, wanted)

    def spec(
        self, request: RunRequest, job: ContainerJob, definition: Mapping[str, Any], memory: int | None = None
    ) -> JobSpec:
        run = self.settings.run
        environment = {**request.environment.values, **job.environment}
        secrets: frozenset[str] = request.environment.from_host  # masked wherever shown
        role = request.job_role_arn or run.job_role_arn
        if request.use_aws_session_token and not role and not request.no_submit:
            self.log(
                "warning: --use-aws-session-token puts temporary AWS keys in the job's overrides, readable by "
                "anyone who can describe jobs; give the job a role instead ([run] job_role_arn)"
            )
            credentials = aws.session_credentials(request.use_aws_session_token)
            environment.update(credentials)
            secrets |= frozenset(credentials)
        resources = self.resources(request, memory)
        environment["DISDAT_JOB_MEMORY"] = str(resources.memory)  # recorded in the bundles it makes
        cls_name = request.pipe_cls.rpartition(".")[2]
        return JobSpec(
            name=f"{cls_name}-{uuidlib.uuid4().hex[:8]}"[:128],
            queue=self.queue(request),
            definition_arn=str(definition.get("jobDefinitionArn", definition.get("jobDefinitionName"))),
            command=job.command,
            environment=environment,
            resources=resources,
            timeout=run.timeout if request.timeout is None else request.timeout,
            retries=run.retries if request.retries is None else request.retries,
            tags={**dict(run.tags), **dict(request.tags), "disdat:pipe": request.pipe_cls},
            secret_names=secrets,
        )

    def queue(self, request: RunRequest) -> str:
        queue = request.queue or self.settings.run.aws_batch_queue
        if not queue:
            raise RunError("no AWS Batch queue is configured", hint="set [run] aws_batch_queue or pass --queue")
        return queue

    def check(self, request: RunRequest) -> None:
        """Before anything is submitted: the queue exists and one of its compute environments can
        ever place a job of these resources."""
        queue = self.queue(request)
        problems = jobs.placement_problems(self.resources(request), queue, jobs.capacities(queue))
        if problems:
            raise RunError("; ".join(problems), hint="ask for fewer resources, or use a queue that can give them")

    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        if request.no_submit:  # nothing registered, nothing submitted: say what would be
            definition = self.job_definition(request, job, register=False)
            shown = self.spec(request, job, definition).shown()
            return RunResult(backend=self.name, status=RunStatus.PREPARED, job_definition=definition, submission=shown)
        self.check(request)
        definition = self.job_definition(request, job)
        spec = self.spec(request, job, definition)
        job_id = aws.submit_job(**spec.submission())
        self.on_submitted(job_id, spec.shown(), definition)
        self.log(f"submitted AWS Batch job {job_id} ({spec.name}) to queue {spec.queue}")
        if not request.wait or request.detach:
            return RunResult(
                backend=self.name,
                status=RunStatus.SUBMITTED,
                job_id=job_id,
                job_definition=definition,
                submission=spec.shown(),
            )
        return self.wait(job_id, spec, definition, request, job)

    def wait(
        self, job_id: str, spec: JobSpec, definition: Mapping[str, Any], request: RunRequest, job: ContainerJob
    ) -> RunResult:
        """Follow the job to its end (Ctrl-C terminates it); an out-of-memory kill is retried once
        with more memory when [run] memory_retry_factor asks for it."""
        followed = self.follow(job_id, spec, definition)
        followed.job = aws.with_exit_code(followed.job)
        factor = self.settings.run.memory_retry_factor
        if followed.job["status"] == "FAILED" and jobs.is_out_of_memory(followed.job) and factor > 1:
            more = jobs.escalated_memory(spec.resources.memory, factor, jobs.capacities(spec.queue))
            if more is not None:
                self.log(f"job {job_id} ran out of memory with {spec.resources.memory} MiB; retrying with {more} MiB")
                spec = self.spec(request, job, definition, memory=more)
                job_id = aws.submit_job(**spec.submission())
                self.on_submitted(job_id, spec.shown(), definition)
                followed = self.follow(job_id, spec, definition)
        if followed.job["status"] == "FAILED":
            raise jobs.failure(aws.with_exit_code(followed.job), followed.lines, spec.resources.memory)
        name, uuid = output_of(followed.lines)
        return RunResult(
            backend=self.name,
            status=RunStatus.SUCCEEDED,
            output_name=name,
            output_uuid=uuid,
            job_id=job_id,
            job_definition=definition,
            submission=spec.shown(),
            log_tail=tuple(followed.lines[-20:]),
        )

    def follow(self, job_id: str, spec: JobSpec, definition: Mapping[str, Any]) -> jobs.Followed:
        stream = f"{definition['jobDefinitionName']}/default/{job_id}"
        try:
            return jobs.follow(
                job_id,
                stream,
                self.log,
                poll_seconds=self.settings.run.poll_seconds,
                runnable_warning_seconds=self.settings.run.runnable_warning_seconds,
                diagnose_runnable=lambda described: jobs.runnable_diagnosis(described, spec.resources, spec.queue),
            )
        except KeyboardInterrupt:
            aws.terminate_job(job_id, "interrupted (Ctrl-C) by the user following it with dsdt")
            self.log(f"terminated AWS Batch job {job_id}")
            raise


def _matches(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    def resources(props: Mapping[str, Any]) -> dict[str, str]:
        return {r["type"]: str(r["value"]) for r in props.get("resourceRequirements", [])}

    return (
        current.get("image") == wanted.get("image")
        and resources(current) == resources(wanted)
        and (current.get("jobRoleArn") or None) == (wanted.get("jobRoleArn") or None)
        and _secrets(current) == _secrets(wanted)
        and (current.get("executionRoleArn") or None) == (wanted.get("executionRoleArn") or None)
    )


def _secrets(props: Mapping[str, Any]) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in props.get("secrets") or []}
