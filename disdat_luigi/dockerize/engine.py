"""Thin wrappers around the docker SDK calls dockerize and run make, with errors translated."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from typing import Any

from disdat_luigi.errors import BuildError, DockerError, DockerUnavailable, ImageNotFound

LogSink = Callable[[str], None]
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the engine colours a step's stderr


def connect() -> Any:
    """A docker client for the engine in DOCKER_HOST (or the local socket), checked to answer."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(version="auto", timeout=600)
        client.ping()
    except DockerException as err:
        raise DockerUnavailable(f"cannot reach the Docker engine: {_first_line(err)}") from err
    return client


def run_container(
    client: Any,
    image: str,
    command: list[str],
    environment: dict[str, str],
    network_mode: str | None,
    labels: dict[str, str] | None = None,
    **limits: Any,
) -> Any:
    """`docker run --detach` of a container the host never shares its store with (no mounts)."""
    return client.containers.run(
        image,
        command=command,
        environment=environment,
        network_mode=network_mode,
        detach=True,
        labels=labels or {},
        **limits,
    )


def image_exists(client: Any, reference: str) -> bool:
    from docker.errors import ImageNotFound as SdkImageNotFound

    try:
        client.images.get(reference)
    except SdkImageNotFound:
        return False
    return True


def get_image(client: Any, reference: str) -> Any:
    from docker.errors import ImageNotFound as SdkImageNotFound

    try:
        return client.images.get(reference)
    except SdkImageNotFound as err:
        raise ImageNotFound(f"no local image {reference}") from err


def build(
    client: Any, path: str, tag: str, base_image: str, network_mode: str | None, log: LogSink, no_cache: bool = False
) -> None:
    """Build `path` (a context with a Dockerfile) as `tag`; a failing step raises BuildError
    quoting the step's own error (e.g. pip's), with the log tail as hint."""
    lines: list[str] = []
    stream = client.api.build(
        path=path, tag=tag, buildargs={"BASE_IMAGE": base_image}, network_mode=network_mode,
        rm=True, forcerm=True, decode=True, pull=False, nocache=no_cache,
    )  # fmt: skip
    for chunk in stream:
        text = ANSI.sub("", chunk.get("stream") or chunk.get("status") or "")
        for line in text.splitlines():
            if line.strip():
                lines.append(line)
                log(line)
        if "error" in chunk:
            raise BuildError(
                f"building {tag} failed: {_cause(lines, chunk['error'])}",
                hint="last build output:\n" + "\n".join(lines[-15:]),
            )


def tag(client: Any, source: str, repository: str, tag_name: str) -> None:
    get_image(client, source).tag(repository, tag_name)


def push(client: Any, repository: str, tags: Iterable[str], auth: dict[str, str] | None, log: LogSink) -> None:
    for tag_name in tags:
        for chunk in client.api.push(repository, tag=tag_name, stream=True, decode=True, auth_config=auth):
            if "error" in chunk:
                raise DockerError(f"pushing {repository}:{tag_name} failed: {chunk['error']}")
            if chunk.get("status"):
                log(f"{chunk['status']} {chunk.get('id', '')}".strip())


def registry_has(client: Any, reference: str, auth: dict[str, str] | None) -> bool:
    """True when the registry already holds `reference` (repository:tag): asked of the registry,
    not of this machine."""
    from docker.errors import APIError, NotFound

    try:
        client.api.inspect_distribution(reference, auth_config=auth)
    except (APIError, NotFound):
        return False
    return True


def pull(client: Any, repository: str, tag_name: str, auth: dict[str, str] | None = None) -> None:
    from docker.errors import APIError, NotFound

    try:
        client.images.pull(repository, tag=tag_name, auth_config=auth)
    except (APIError, NotFound) as err:
        raise ImageNotFound(f"cannot pull {repository}:{tag_name}: {_first_line(err)}") from err


def ecr_login(repository: str, region: str | None = None) -> tuple[str, dict[str, str]]:
    """Create the ECR repository if missing; return (registry host, docker auth config)."""
    import boto3

    ecr = boto3.client("ecr", region_name=region)
    try:
        ecr.describe_repositories(repositoryNames=[repository])
    except ecr.exceptions.RepositoryNotFoundException:
        ecr.create_repository(repositoryName=repository)
    data = ecr.get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
    return registry, {"username": username, "password": password, "serveraddress": registry}


def _cause(lines: list[str], error: str) -> str:
    """The most telling line: pip's (or apt's) own ERROR line when there is one."""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("ERROR:", "E: ")):
            return stripped
    return error.strip().splitlines()[0] if error.strip() else "unknown error"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
