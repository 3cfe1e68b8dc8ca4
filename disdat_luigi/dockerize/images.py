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
