"""`dsdt dockerize`: build the image of each pipeline module, skip it when its content tag exists,
and push to the configured registry (or ECR)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from disdat_luigi.config import ECR_REGISTRY, Settings
from disdat_luigi.dockerize import engine
from disdat_luigi.dockerize.buildcontext import assemble, default_base_image
from disdat_luigi.dockerize.naming import check_pipe_class, image_name, pipeline_modules
from disdat_luigi.errors import BuildError, DisdatError, ImageNotFound, PipeClassNotFound
from disdat_luigi.util.codeversion import capture


@dataclass(frozen=True, kw_only=True)
class DockerizeRequest:
    pipe_root: Path
    pipe_cls: str | None = None
    config_dir: Path | None = None
    os_type: str | None = None
    os_version: str | None = None
    base_image: str | None = None
    push: bool = False
    no_build: bool = False
    no_cache: bool = False  # build every layer anew (benchmarks of cold builds)


@dataclass(frozen=True, kw_only=True)
class ImageResult:
    """One image: its name, immutable content tag, whether it was built now, where it was pushed."""

    name: str
    module: str
    content_tag: str
    built: bool
    pushed: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.content_tag}"


def base_image_for(request: DockerizeRequest, settings: Settings) -> str:
    if request.base_image or settings.dockerize.base_image:
        return request.base_image or settings.dockerize.base_image  # type: ignore[return-value]
    os_type = request.os_type or settings.dockerize.os_type
    os_version = request.os_version or settings.dockerize.os_version
    if os_type or os_version:
        return f"{os_type or 'python'}:{os_version or default_base_image().split(':')[1]}"
    return default_base_image()


def dockerize(
    request: DockerizeRequest, settings: Settings, log: engine.LogSink = lambda _line: None
) -> list[ImageResult]:
    pipe_root = request.pipe_root.resolve()
    if not pipe_root.is_dir():
        raise DisdatError(f"pipe root {pipe_root} is not a directory", hint="pass the directory holding setup.py")
    if not ((pipe_root / "setup.py").is_file() or (pipe_root / "pyproject.toml").is_file()):
        raise BuildError(
            f"{pipe_root} has neither setup.py nor pyproject.toml",
            hint="pipe_root must be a pip-installable project (the directory with the setup.py)",
        )
    modules = [check_pipe_class(pipe_root, request.pipe_cls)] if request.pipe_cls else pipeline_modules(pipe_root)
    if not modules:
        raise PipeClassNotFound(f"no module under {pipe_root} defines a PipeTask subclass")
    client = engine.connect()
    names = {module: image_name(module, settings.docker.repository_prefix) for module in modules}
    with tempfile.TemporaryDirectory(prefix="dsdt-dockerize-") as tmp:
        context = assemble(
            Path(tmp) / "context",
            pipe_root,
            base_image_for(request, settings),
            request.config_dir,
            Path(settings.dockerize.dot_pip_file).expanduser() if settings.dockerize.dot_pip_file else None,
            capture(pipe_root),
        )
        results = []
        built_reference: str | None = None
        for module, name in names.items():
            reference = f"{name}:{context.content_tag}"
            built = False
            if not engine.image_exists(client, reference):
                if request.no_build:
                    raise ImageNotFound(
                        f"no local image {reference} and --no-build was given",
                        hint=f"build it first: dsdt dockerize {request.pipe_root} {request.pipe_cls or ''}".rstrip(),
                    )
                if built_reference is None:  # every module of one pipe root shares one build context
                    log(f"building {reference} from {context.base_image}")
                    network = settings.docker.network_mode
                    engine.build(
                        client, str(context.path), reference, context.base_image, network, log, request.no_cache
                    )
                    built_reference = reference
                else:
                    engine.tag(client, built_reference, name, context.content_tag)
                built = True
            engine.tag(client, reference, name, "latest")
            pushed = _push(client, name, context.content_tag, settings, log) if request.push else ()
            results.append(
                ImageResult(name=name, module=module, content_tag=context.content_tag, built=built, pushed=pushed)
            )
        return results


@dataclass(frozen=True, kw_only=True)
class PlannedImage:
    """What an apply or run would do to a module's image (for --explain): nothing is built."""

    name: str
    content_tag: str
    present: bool  # this machine has name:content_tag
    previous_tag: str | None  # the content tag name:latest holds here (another code version), if any
    registry: str | None = None  # where it would be pushed (asked for): host or *ECR*
    in_registry: bool = False

    def describe(self) -> str:
        """`image NAME:TAG: build (code changed since TAG0), then push to REG (not there yet)`."""
        steps = []
        if not self.present:
            why = f"code changed since {self.previous_tag}" if self.previous_tag else "no image of it yet"
            steps.append(f"will be built ({why})")
        if self.registry and not self.in_registry:
            steps.append(f"will be pushed to {self.registry} (the registry does not have it)")
        return f"image {self.name}:{self.content_tag} " + (", then ".join(steps) if steps else "is ready")


def plan_image(pipe_root: Path, pipe_cls: str, settings: Settings, push: bool) -> PlannedImage:
    """The image `dockerize` would make for `pipe_cls` now, and whether it (and with `push`, the
    registry) has it already."""
    module = check_pipe_class(pipe_root, pipe_cls)
    name = image_name(module, settings.docker.repository_prefix)
    request = DockerizeRequest(pipe_root=pipe_root, pipe_cls=pipe_cls)
    with tempfile.TemporaryDirectory(prefix="dsdt-explain-") as tmp:
        dot_pip = settings.dockerize.dot_pip_file
        context = assemble(
            Path(tmp) / "context", pipe_root.resolve(), base_image_for(request, settings), None,
            Path(dot_pip).expanduser() if dot_pip else None, capture(pipe_root),
        )  # fmt: skip
    client = engine.connect()
    present = engine.image_exists(client, f"{name}:{context.content_tag}")
    previous = None
    if engine.image_exists(client, f"{name}:latest"):
        previous = (engine.get_image(client, f"{name}:latest").labels or {}).get("disdat.content-tag")
    registry = settings.docker.registry if push else None
    in_registry = bool(registry) and _registry_has(client, registry or "", name, context.content_tag)
    return PlannedImage(
        name=name, content_tag=context.content_tag, present=present,
        previous_tag=previous if previous != context.content_tag else None, registry=registry, in_registry=in_registry,
    )  # fmt: skip


def _registry_has(client: object, registry: str, name: str, content_tag: str) -> bool:
    """Asked without side effects (no ECR repository is created)."""
    if registry != ECR_REGISTRY:
        return engine.registry_has(client, f"{registry}/{name}:{content_tag}", None)
    import boto3
    from botocore.exceptions import ClientError

    try:
        boto3.client("ecr").describe_images(repositoryName=name, imageIds=[{"imageTag": content_tag}])
    except ClientError:
        return False
    return True


def _push(client: object, name: str, content_tag: str, settings: Settings, log: engine.LogSink) -> tuple[str, ...]:
    registry = settings.docker.registry
    if not registry:
        raise DisdatError("--push needs a registry", hint="set [docker] registry in disdat.cfg (host:port or *ECR*)")
    auth = None
    if registry == ECR_REGISTRY:
        registry, auth = engine.ecr_login(name)
    repository = f"{registry}/{name}"
    if engine.registry_has(client, f"{repository}:{content_tag}", auth):  # this exact content is there already
        return (f"{repository}:{content_tag}",)
    for tag_name in (content_tag, "latest"):
        engine.tag(client, f"{name}:{content_tag}", repository, tag_name)
    engine.push(client, repository, (content_tag, "latest"), auth, log)
    return (f"{repository}:{content_tag}", f"{repository}:latest")
