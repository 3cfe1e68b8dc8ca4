"""Job assembly: what one submission holds (`JobSpec`: command, environment, resources,
timeout, retry strategy, tags) and the job definition it runs, found among the active revisions
or registered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from disdat_luigi.errors import RunError
from disdat_luigi.run.batch import client
from disdat_luigi.run.batch.state import HOST_FAILURE

MIN_TIMEOUT = 60  # AWS Batch refuses shorter attemptDurationSeconds


@dataclass(frozen=True, kw_only=True)
class Resources:
    vcpus: int
    memory: int  # MiB
    gpus: int = 0

    def requirements(self) -> list[dict[str, str]]:
        """Batch resourceRequirements (Fargate refuses the legacy vcpus/memory fields)."""
        found = [{"type": "VCPU", "value": str(self.vcpus)}, {"type": "MEMORY", "value": str(self.memory)}]
        if self.gpus:
            found.append({"type": "GPU", "value": str(self.gpus)})
        return found


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One submission: everything `submit_job` is given."""

    name: str
    queue: str
    definition_arn: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    resources: Resources
    timeout: int = 0  # seconds per attempt; 0: none
    retries: int = 0  # extra attempts after infrastructure failures
    retry_application_errors: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    secret_names: frozenset[str] = frozenset()  # environment names never shown

    def __post_init__(self) -> None:
        if self.timeout and self.timeout < MIN_TIMEOUT:
            raise RunError(f"--timeout {self.timeout} is below AWS Batch's minimum of {MIN_TIMEOUT} seconds")
        if self.retries < 0 or self.retries > 9:
            raise RunError(f"--retries {self.retries} must be between 0 and 9 (AWS Batch allows 10 attempts)")
        if self.resources.vcpus < 1 or self.resources.memory < 1 or self.resources.gpus < 0:
            raise RunError("a job needs at least 1 vCPU and 1 MiB of memory", hint="check --vcpus and --memory")

    def submission(self) -> dict[str, Any]:
        """The keyword arguments of `submit_job`."""
        kwargs: dict[str, Any] = {
            "jobName": self.name,
            "jobQueue": self.queue,
            "jobDefinition": self.definition_arn,
            "containerOverrides": {
                "command": list(self.command),
                "environment": [{"name": k, "value": v} for k, v in sorted(self.environment.items())],
                "resourceRequirements": self.resources.requirements(),
            },
        }
        if self.timeout:
            kwargs["timeout"] = {"attemptDurationSeconds": self.timeout}
        if self.retries:
            kwargs["retryStrategy"] = retry_strategy(self.retries, self.retry_application_errors)
        if self.tags:
            kwargs["tags"] = dict(self.tags)
            kwargs["propagateTags"] = True
        return kwargs

    def shown(self) -> dict[str, Any]:
        """The submission with secret values masked (what `--no-submit` prints)."""
        shown = self.submission()
        shown["containerOverrides"]["environment"] = [
            {"name": e["name"], "value": "***" if e["name"] in self.secret_names else e["value"]}
            for e in shown["containerOverrides"]["environment"]
        ]
        return shown


def retry_strategy(retries: int, application_errors: bool = False) -> dict[str, Any]:
    """Retry what the infrastructure broke (the instance went away); an application error (a
    non-zero exit of the pipeline) ends the job unless asked otherwise."""
    rules = [{"onStatusReason": HOST_FAILURE, "action": "RETRY"}]
    if not application_errors:
        rules.append({"onReason": "*", "action": "EXIT"})
    return {"attempts": retries + 1, "evaluateOnExit": rules}


# --- job definitions ---------------------------------------------------------------------------


def job_definition_name(image_name: str) -> str:
    return f"{image_name.replace('/', '-')}-job-definition"


def container_properties(
    image: str,
    resources: Resources,
    role: str | None,
    secrets: list[dict[str, str]] | None = None,
    execution_role: str | None = None,
) -> dict[str, Any]:
    """A job definition's container: image, resources, role, and secrets by reference (Batch
    resolves them with the execution role as the container starts)."""
    properties: dict[str, Any] = {"image": image, "resourceRequirements": resources.requirements()}
    if role:
        properties["jobRoleArn"] = role
    if secrets:
        properties["secrets"] = secrets
        if execution_role:
            properties["executionRoleArn"] = execution_role
    return properties


def job_definition(image_name: str, properties: Mapping[str, Any], register: bool = True) -> Mapping[str, Any]:
    """Any active revision whose image, resources and role match (not only the newest); a new
    revision only when none does (without `register`: the definition that would be registered)."""
    name = job_definition_name(image_name)
    for current in client.active_job_definitions(name):
        if _matches(current.get("containerProperties", {}), properties):
            return current
    if not register:
        return {"jobDefinitionName": name, "type": "container", "containerProperties": dict(properties)}
    return client.register_job_definition(name, properties)


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
