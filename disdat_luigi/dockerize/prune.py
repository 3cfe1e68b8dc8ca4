"""`dsdt dockerize --prune`: remove a module's old images, on this machine and (asked for) in the
registry, never one that something still names: `latest`, a bundle on a remote, an active job
definition."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from disdat_luigi.config import ECR_REGISTRY, Settings
from disdat_luigi.dockerize import engine
from disdat_luigi.dockerize.naming import check_pipe_class, image_name, pipeline_modules
from disdat_luigi.errors import DisdatError, DockerError, PipeClassNotFound

DEFAULT_KEEP = 3  # the newest images (content tags) of a module kept; the one `latest` points to always stays
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    )
)


@dataclass(frozen=True, kw_only=True)
class PruneRequest:
    pipe_root: Path
    pipe_cls: str | None = None
    keep: int = DEFAULT_KEEP
    registry: bool = False  # also the registry's tags (listed; deleted only with delete_registry)
    delete_registry: bool = False
    bundle_tags: frozenset[str] = frozenset()  # content tags that bundles on the remotes name


@dataclass(frozen=True, kw_only=True)
class LocalPrune:
    """This machine's images of one module: the references removed, what that freed."""

    name: str
    kept: tuple[str, ...]
    removed: tuple[str, ...]
    deleted_images: int = 0
    freed_bytes: int = 0
    in_use: tuple[str, ...] = ()  # references a container still uses: left alone


@dataclass(frozen=True, kw_only=True)
class RegistryTag:
    tag: str
    digest: str
    created: str  # ISO time the image was built ("" when the registry does not say)


@dataclass(frozen=True, kw_only=True)
class RegistryPrune:
    """One module's repository in the registry: the tags that go (or would go) and why the rest stay."""

    repository: str
    doomed: tuple[RegistryTag, ...]
    kept: tuple[tuple[str, str], ...]  # (tag, reason)
    deleted: bool = False


@dataclass(frozen=True, kw_only=True)
class PruneReport:
    local: tuple[LocalPrune, ...]
    registry: tuple[RegistryPrune, ...] = field(default_factory=tuple)


def prune(request: PruneRequest, settings: Settings) -> PruneReport:
    if request.keep < 0:
        raise DisdatError(f"--keep {request.keep} is negative", hint="pass --keep 0 or more")
    pipe_root = request.pipe_root.resolve()
    modules = [check_pipe_class(pipe_root, request.pipe_cls)] if request.pipe_cls else pipeline_modules(pipe_root)
    if not modules:
        raise PipeClassNotFound(f"no module under {pipe_root} defines a PipeTask subclass")
    names = [image_name(module, settings.docker.repository_prefix) for module in modules]
    client = engine.connect()
    local = tuple(_prune_local(client, name, request.keep) for name in names)
    if not request.registry:
        return PruneReport(local=local)
    registry = _registry(settings)
    job_images = active_job_definition_images()
    remote = tuple(
        _prune_registry(registry, name, request.keep, request.bundle_tags, job_images, request.delete_registry)
        for name in names
    )
    return PruneReport(local=local, registry=remote)


# --- this machine ---------------------------------------------------------------------------


def _prune_local(client: Any, name: str, keep: int) -> LocalPrune:
    """Group the module's local references (`name:tag`, `registry/name:tag`) by image, newest
    image first; keep the newest `keep` and the one `name:latest` is, untag the others."""
    latest: set[str] = set()  # what `name:latest` (or a registry's copy of it) is
    images: dict[str, tuple[str, list[str]]] = {}  # image id -> (created, references)
    for image in client.images.list():
        refs = [ref for ref in image.tags if _names(ref, name)]
        if any(ref.endswith(":latest") for ref in refs):
            latest.add(image.id)
        refs = [ref for ref in refs if not ref.endswith(":latest")]
        if refs:
            images[image.id] = (image.attrs.get("Created", ""), refs)
    order = sorted(images, key=lambda image_id: images[image_id][0], reverse=True)
    kept_ids = set(order[:keep]) | latest
    doomed = [image_id for image_id in order if image_id not in kept_ids]
    sizes = _unique_sizes(client, doomed) if doomed else {}
    removed: list[str] = []
    in_use: list[str] = []
    deleted = freed = 0
    for image_id in doomed:
        refs = images[image_id][1]
        for ref in refs:
            if _untag(client, ref):
                removed.append(ref)
            else:
                in_use.append(ref)
        if not engine.image_exists(client, image_id):
            deleted += 1
            freed += sizes.get(image_id, 0)
    kept = [ref for image_id in order if image_id in kept_ids for ref in images[image_id][1]]
    return LocalPrune(
        name=name, kept=tuple(kept), removed=tuple(removed), deleted_images=deleted, freed_bytes=freed,
        in_use=tuple(in_use),
    )  # fmt: skip


def _names(reference: str, name: str) -> bool:
    repository = reference.rpartition(":")[0]
    return repository == name or repository.endswith(f"/{name}")


def _unique_sizes(client: Any, image_ids: Iterable[str]) -> dict[str, int]:
    """Bytes each image holds that no other image shares (what deleting it alone frees)."""
    wanted = set(image_ids)
    sizes = {}
    for row in client.api.df().get("Images") or []:
        if row.get("Id") in wanted:
            sizes[row["Id"]] = max(0, int(row.get("Size") or 0) - max(0, int(row.get("SharedSize") or 0)))
    return sizes


def _untag(client: Any, reference: str) -> bool:
    """Remove one reference (the image goes with its last one); False when a container uses it."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.remove(reference)
    except ImageNotFound:
        return True
    except APIError as err:
        if err.status_code == 409:  # conflict: a (stopped) container was made from it
            return False
        raise DockerError(f"cannot remove {reference}: {err.explanation or err}") from err
    return True


# --- the registry ---------------------------------------------------------------------------


class Registry(Protocol):
    host: str

    def tags(self, name: str) -> list[RegistryTag]: ...

    def delete(self, name: str, digest: str) -> None: ...


def _prune_registry(
    registry: Registry, name: str, keep: int, bundle_tags: frozenset[str], job_images: frozenset[str], delete: bool
) -> RegistryPrune:
    """Tags go by manifest digest (deleting a digest deletes every tag on it), so a digest goes
    only when none of its tags is kept."""
    tags = registry.tags(name)
    latest = next((t.digest for t in tags if t.tag == "latest"), None)
    used_by_jobs = {ref.rpartition(":")[2] for ref in job_images if _names(ref, name)}
    digests = sorted({t.digest for t in tags}, key=lambda d: max(t.created for t in tags if t.digest == d))[::-1]
    newest = set(digests[:keep])
    reasons: dict[str, str] = {}
    for t in tags:
        if t.tag == "latest" or t.digest == latest:
            reasons[t.tag] = "latest"
        elif t.tag in bundle_tags:
            reasons[t.tag] = "a bundle on the remote names it"
        elif t.tag in used_by_jobs:
            reasons[t.tag] = "an active job definition uses it"
        elif t.digest in newest:
            reasons[t.tag] = f"among the newest {keep}"
    kept_digests = {t.digest for t in tags if t.tag in reasons}
    doomed = tuple(t for t in tags if t.digest not in kept_digests)
    kept = tuple(sorted(reasons.items()))
    for digest in sorted({t.digest for t in doomed}) if delete else ():
        registry.delete(name, digest)
    return RegistryPrune(repository=f"{registry.host}/{name}", doomed=doomed, kept=kept, deleted=delete)


def _registry(settings: Settings) -> Registry:
    host = settings.docker.registry
    if not host:
        raise DisdatError(
            "--registry needs a registry", hint="set [docker] registry in disdat.cfg (host:port or *ECR*)"
        )
    return EcrRegistry() if host == ECR_REGISTRY else HttpRegistry(host)


class HttpRegistry:
    """A registry speaking the Docker Registry HTTP API v2 (loopback over HTTP, others HTTPS)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.base = f"{'http' if _loopback(host) else 'https'}://{host}/v2"

    def tags(self, name: str) -> list[RegistryTag]:
        listed = self._get_json(f"/{name}/tags/list", "application/json")
        found = []
        for tag_name in (listed or {}).get("tags") or []:
            response = self._request("GET", f"/{name}/manifests/{tag_name}", MANIFEST_TYPES)
            digest = response.headers.get("Docker-Content-Digest", "")
            manifest = json.loads(response.read())
            config = (manifest.get("config") or {}).get("digest")
            created = ""
            if config:
                created = (self._get_json(f"/{name}/blobs/{config}", "application/json") or {}).get("created", "")
            found.append(RegistryTag(tag=tag_name, digest=digest, created=created))
        return found

    def delete(self, name: str, digest: str) -> None:
        self._request("DELETE", f"/{name}/manifests/{digest}", MANIFEST_TYPES)

    def _get_json(self, path: str, accept: str) -> Any:
        try:
            return json.loads(self._request("GET", path, accept).read())
        except DockerError as err:
            if "404" in err.message:
                return None
            raise

    def _request(self, method: str, path: str, accept: str) -> Any:
        request = urllib.request.Request(self.base + path, method=method, headers={"Accept": accept})
        try:
            return urllib.request.urlopen(request, timeout=60)  # noqa: S310 (the configured registry)
        except urllib.error.HTTPError as err:
            hint = (
                "the registry refuses deletes: set storage.delete.enabled: true in its config"
                if method == "DELETE" and err.code == 405
                else "check [docker] registry"
            )
            raise DockerError(f"registry {self.host}: {method} {path} answered {err.code} {err.reason}", hint) from err
        except (urllib.error.URLError, OSError) as err:
            raise DockerError(f"cannot reach the registry {self.host}: {err}", hint="check [docker] registry") from err


class EcrRegistry:
    """The account's ECR registry, through boto3 (ECR does not take the v2 API's DELETE)."""

    host = ECR_REGISTRY

    def __init__(self) -> None:
        import boto3

        self.ecr = boto3.client("ecr")

    def tags(self, name: str) -> list[RegistryTag]:
        found = []
        try:
            pages = self.ecr.get_paginator("describe_images").paginate(repositoryName=name)
            for page in pages:
                for detail in page["imageDetails"]:
                    pushed = detail.get("imagePushedAt")
                    created = pushed.isoformat() if isinstance(pushed, datetime) else str(pushed or "")
                    for tag_name in detail.get("imageTags") or []:
                        found.append(RegistryTag(tag=tag_name, digest=detail["imageDigest"], created=created))
        except self.ecr.exceptions.RepositoryNotFoundException:
            return []
        return found

    def delete(self, name: str, digest: str) -> None:
        self.ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageDigest": digest}])


def _loopback(host: str) -> bool:
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def active_job_definition_images() -> frozenset[str]:
    """The image of every ACTIVE AWS Batch job definition of the account (its tags are in use)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    images = set()
    try:
        pages = boto3.client("batch").get_paginator("describe_job_definitions").paginate(status="ACTIVE")
        for page in pages:
            for definition in page["jobDefinitions"]:
                image = (definition.get("containerProperties") or {}).get("image")
                if image:
                    images.add(image)
    except (BotoCoreError, ClientError) as err:
        raise DockerError(
            f"cannot list the active AWS Batch job definitions ({err}), so cannot tell which tags are in use",
            hint="give AWS credentials and a region (AWS_PROFILE, AWS_REGION) and run again",
        ) from err
    return frozenset(images)
