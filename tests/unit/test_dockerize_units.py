"""dockerize/ without Docker: naming, module discovery, build-context assembly, the build flow
against a stubbed engine, and the engine wrappers against a stubbed docker client."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from disdat_luigi.config import DockerizeSettings, DockerSettings, Settings
from disdat_luigi.dockerize import buildcontext, engine, images, naming
from disdat_luigi.errors import BuildError, DisdatError, DockerError, ImageNotFound, PipeClassNotFound
from disdat_luigi.util.codeversion import CodeVersion

PIPE = "from disdat_luigi.pipe import PipeTask\n\n\nclass {name}(PipeTask):\n    pass\n"


def _pipe_root(
    tmp_path: Path, setup: str | None = "from setuptools import setup\nsetup(install_requires=['numpy>=1'])\n"
) -> Path:
    root = tmp_path / "pipes"
    (root / "etl").mkdir(parents=True)
    (root / "etl" / "__init__.py").write_text("")
    (root / "etl" / "ingest.py").write_text(PIPE.format(name="Ingest"))
    (root / "etl" / "helpers.py").write_text("def helper():\n    return 1\n")
    (root / "etl" / "derived.py").write_text(
        "import disdat_luigi.pipe as p\n\nclass Base(p.PipeTask):\n    pass\n\nclass Leaf(Base):\n    pass\n"
    )
    (root / "loose.py").write_text(PIPE.format(name="Loose"))  # a top-level module counts
    (root / "nopkg").mkdir()
    (root / "nopkg" / "inner.py").write_text(PIPE.format(name="Inner"))  # below a non-package: skipped
    (root / "build").mkdir()
    (root / "build" / "copy.py").write_text(PIPE.format(name="Copy"))
    if setup is not None:
        (root / "setup.py").write_text(setup)
    return root


def _settings(tmp_path: Path, **docker: Any) -> Settings:
    return Settings(config_path=tmp_path / "cfg", root=tmp_path / "home", docker=DockerSettings(**docker))


# --- naming -------------------------------------------------------------------------------------


def test_image_names_follow_the_module() -> None:
    """module.submodule -> disdat-module-submodule (lower case), below the repository prefix."""
    assert naming.image_name("etl.Ingest") == "disdat-etl-ingest"
    assert naming.image_name("etl.ingest", "team/") == "team/disdat-etl-ingest"
    assert naming.module_of("etl.ingest.Ingest") == ("etl.ingest", "Ingest")
    with pytest.raises(PipeClassNotFound, match="dotted path"):
        naming.module_of("Ingest")


def test_pipeline_modules_are_found_by_reading_source(tmp_path: Path) -> None:
    """Modules in packages that define a PipeTask (also through a base class of the same module)."""
    root = _pipe_root(tmp_path)
    assert naming.pipeline_modules(root) == ["etl.derived", "etl.ingest", "loose"]
    assert naming.check_pipe_class(root, "etl.ingest.Ingest") == "etl.ingest"
    with pytest.raises(PipeClassNotFound, match="defines no class Missing"):
        naming.check_pipe_class(root, "etl.ingest.Missing")
    with pytest.raises(PipeClassNotFound, match="no module etl.nothing"):
        naming.check_pipe_class(root, "etl.nothing.X")
    (root / "etl" / "broken.py").write_text("class (:\n")
    with pytest.raises(PipeClassNotFound, match="does not parse"):
        naming.check_pipe_class(root, "etl.broken.X")


# --- build context ------------------------------------------------------------------------------


def test_build_context_holds_everything_and_is_content_addressed(tmp_path: Path) -> None:
    """Dockerfile, requirements (ours + the pipeline's), our source with its setup.py, the pipe
    root; the content tag changes with the content and git labels describe the code."""
    root = _pipe_root(tmp_path)
    code = CodeVersion(commit="abc123", branch="main", repo="git@x:y.git", dirty=False, diff_sha256=None)
    context = buildcontext.assemble(tmp_path / "ctx", root, "base:1", None, None, code)
    files = {p.relative_to(context.path).as_posix() for p in context.path.rglob("*") if p.is_file()}
    assert {"Dockerfile", "requirements.txt", "os-packages.txt", "pip.conf", "pipe-src/setup.py"} <= files
    assert "disdat_luigi-src/setup.py" in files and "disdat_luigi-src/disdat_luigi/packaging.py" in files
    requirements = (context.path / "requirements.txt").read_text().splitlines()
    assert "numpy>=1" in requirements and any(r.startswith("luigi") for r in requirements)
    assert (
        context.labels["disdat.git.commit"] == "abc123" and context.labels["disdat.content-tag"] == context.content_tag
    )
    dockerfile = (context.path / "Dockerfile").read_text()
    assert 'ENV DISDAT_GIT_COMMIT="abc123"' in dockerfile and "disdat_luigi.cli.container" in dockerfile
    again = buildcontext.assemble(tmp_path / "ctx2", root, "base:1", None, None, code)
    assert again.content_tag == context.content_tag
    (root / "etl" / "helpers.py").write_text("def helper():\n    return 2\n")
    changed = buildcontext.assemble(tmp_path / "ctx3", root, "base:1", None, None, code)
    assert changed.content_tag != context.content_tag
    other_base = buildcontext.assemble(tmp_path / "ctx4", root, "base:2", None, None, None)
    assert other_base.content_tag != changed.content_tag and "disdat.git.commit" not in other_base.labels


def test_build_context_options_and_errors(tmp_path: Path) -> None:
    """apt packages and pip.conf from the config dir; missing ones and a root without setup.py
    are clear errors; requirements come from pyproject.toml or a computed install_requires too."""
    root = _pipe_root(tmp_path)
    config = tmp_path / "config"
    config.mkdir()
    (config / "apt.txt").write_text("curl  # for downloads\n\nlibgomp1\n")
    (config / "pip.conf").write_text("[global]\nindex-url = http://127.0.0.1/simple\n")
    context = buildcontext.assemble(tmp_path / "ctx", root, "base:1", config, None, None)
    assert (context.path / "os-packages.txt").read_text() == "curl\nlibgomp1\n"
    assert "127.0.0.1" in (context.path / "pip.conf").read_text()
    with pytest.raises(DisdatError, match="config directory"):
        buildcontext.assemble(tmp_path / "ctx2", root, "b", tmp_path / "nope", None, None)
    with pytest.raises(DisdatError, match="pip configuration"):
        buildcontext.assemble(tmp_path / "ctx3", root, "b", None, tmp_path / "missing.conf", None)
    (root / "setup.py").unlink()
    with pytest.raises(BuildError, match="neither setup.py nor pyproject.toml"):
        buildcontext.assemble(tmp_path / "ctx4", root, "b", None, None, None)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\n[project]\nname = "p"\ndependencies = ["scipy", "disdat_luigi"]\n'
    )
    requirements = buildcontext._requirements(root)
    assert "scipy" in requirements and "hatchling" in requirements
    assert not any(r.lower().startswith("disdat") for r in requirements)
    (root / "pyproject.toml").unlink()
    (root / "setup.py").write_text(
        textwrap.dedent(
            """
            from setuptools import setup
            DEPS = ["pyyaml"] + ["toolz"]
            setup(name="p", install_requires=DEPS)
            """
        )
    )
    assert {"pyyaml", "toolz"} <= set(buildcontext._requirements(root))
    (root / "setup.py").write_text(
        "from setuptools import setup\n\ndef deps():\n    raise RuntimeError('broken setup')\n\n"
        "setup(install_requires=deps())\n"
    )
    with pytest.raises(BuildError, match="failed to run"):
        buildcontext._requirements(root)
    (root / "setup.py").write_text("setup(\n")
    with pytest.raises(BuildError, match="does not parse"):
        buildcontext._requirements(root)
    assert buildcontext._requirement_name("Foo_Bar[x]>=1; python_version<'3.9'") == "foo-bar"
    assert buildcontext.default_base_image().startswith("python:3.")


# --- the build flow, against a stubbed engine -------------------------------------------------------


class StubEngine:
    """Records what dockerize asks of the engine; images "exist" once built or tagged."""

    def __init__(self, existing: set[str] | None = None) -> None:
        self.images = set(existing or ())
        self.registry: set[str] = set()  # repository:tag the registry holds
        self.calls: list[tuple[Any, ...]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(engine, "connect", lambda: "client")
        monkeypatch.setattr(engine, "registry_has", lambda _c, ref, _auth: ref in self.registry)
        monkeypatch.setattr(engine, "image_exists", lambda _c, ref: ref in self.images)
        monkeypatch.setattr(engine, "build", self.build)
        monkeypatch.setattr(engine, "tag", self.tag)
        monkeypatch.setattr(engine, "push", lambda _c, repo, tags, auth, _log: self.push(repo, tuple(tags), auth))
        monkeypatch.setattr(engine, "ecr_login", lambda name: ("123.dkr.ecr", {"username": "AWS"}))

    def build(self, _client: Any, path: str, tag: str, base: str, network: Any, log: Any, no_cache: bool) -> None:
        assert Path(path, "Dockerfile").is_file()
        self.calls.append(("build", tag, base, network))
        self.images.add(tag)

    def push(self, repository: str, tags: tuple[str, ...], auth: Any) -> None:
        self.calls.append(("push", repository, tags, auth))
        self.registry.update(f"{repository}:{t}" for t in tags)

    def tag(self, _client: Any, source: str, repository: str, tag_name: str) -> None:
        self.calls.append(("tag", source, f"{repository}:{tag_name}"))
        self.images.add(f"{repository}:{tag_name}")


def test_dockerize_builds_once_tags_each_module_and_pushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One build per pipe root, a content tag and 'latest' per module image, a push of both, and
    nothing rebuilt when the content tag exists."""
    root = _pipe_root(tmp_path)
    stub = StubEngine()
    stub.install(monkeypatch)
    settings = _settings(tmp_path, registry="127.0.0.1:5999", network_mode="host")
    logged: list[str] = []
    results = images.dockerize(
        images.DockerizeRequest(pipe_root=root, push=True, base_image="b:1"), settings, logged.append
    )
    assert [r.name for r in results] == ["disdat-etl-derived", "disdat-etl-ingest", "disdat-loose"]
    assert all(r.built for r in results)
    assert [c for c in stub.calls if c[0] == "build"] == [("build", results[0].reference, "b:1", "host")]
    assert ("push", "127.0.0.1:5999/disdat-etl-ingest", (results[1].content_tag, "latest"), None) in stub.calls
    assert results[1].pushed == (
        f"127.0.0.1:5999/disdat-etl-ingest:{results[1].content_tag}",
        "127.0.0.1:5999/disdat-etl-ingest:latest",
    )
    stub.calls.clear()
    pushed_again = images.dockerize(
        images.DockerizeRequest(pipe_root=root, pipe_cls="etl.ingest.Ingest", push=True, base_image="b:1"), settings
    )
    assert not [c for c in stub.calls if c[0] == "push"]  # the registry has that content tag: nothing pushed
    assert pushed_again[0].pushed == (f"127.0.0.1:5999/disdat-etl-ingest:{results[1].content_tag}",)
    stub.calls.clear()
    again = images.dockerize(
        images.DockerizeRequest(pipe_root=root, pipe_cls="etl.ingest.Ingest", base_image="b:1"), settings
    )
    assert [r.built for r in again] == [False] and not [c for c in stub.calls if c[0] == "build"]
    ecr = images.dockerize(
        images.DockerizeRequest(pipe_root=root, pipe_cls="etl.ingest.Ingest", push=True, base_image="b:1"),
        _settings(tmp_path, registry="*ECR*"),
    )
    assert ecr[0].pushed[0].startswith("123.dkr.ecr/disdat-etl-ingest:")


def test_dockerize_refuses_what_it_cannot_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a directory, no setup.py, no pipeline module, --no-build of a missing image, --push
    without a registry: each a clear error."""
    StubEngine().install(monkeypatch)
    settings = _settings(tmp_path)
    with pytest.raises(DisdatError, match="not a directory"):
        images.dockerize(images.DockerizeRequest(pipe_root=tmp_path / "nope"), settings)
    bare = _pipe_root(tmp_path / "bare", setup=None)
    with pytest.raises(BuildError, match="neither setup.py"):
        images.dockerize(images.DockerizeRequest(pipe_root=bare), settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    with pytest.raises(PipeClassNotFound, match="no module"):
        images.dockerize(images.DockerizeRequest(pipe_root=empty), settings)
    root = _pipe_root(tmp_path)
    with pytest.raises(ImageNotFound, match="--no-build"):
        images.dockerize(images.DockerizeRequest(pipe_root=root, no_build=True, base_image="b"), settings)
    with pytest.raises(DisdatError, match="needs a registry"):
        images.dockerize(images.DockerizeRequest(pipe_root=root, push=True, base_image="b"), settings)


def test_base_image_choice(tmp_path: Path) -> None:
    """Flag, then [dockerize] base_image, then os_type/os_version, then python:X.Y-slim."""
    settings = Settings(config_path=tmp_path, root=tmp_path, dockerize=DockerizeSettings(os_version="3.12-slim"))
    request = images.DockerizeRequest(pipe_root=tmp_path)
    assert images.base_image_for(images.DockerizeRequest(pipe_root=tmp_path, base_image="mine:1"), settings) == "mine:1"
    assert images.base_image_for(request, settings) == "python:3.12-slim"
    configured = Settings(config_path=tmp_path, root=tmp_path, dockerize=DockerizeSettings(base_image="corp:2"))
    assert images.base_image_for(request, configured) == "corp:2"
    assert (
        images.base_image_for(request, Settings(config_path=tmp_path, root=tmp_path))
        == buildcontext.default_base_image()
    )


# --- engine wrappers, against a stubbed docker client -----------------------------------------------


class FakeImages:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.tagged: list[tuple[str, str]] = []

    def get(self, reference: str) -> Any:
        from docker.errors import ImageNotFound as SdkImageNotFound

        if reference not in self.known:
            raise SdkImageNotFound(reference)
        return SimpleNamespace(tag=lambda repo, tag: self.tagged.append((repo, tag)))

    def pull(self, repository: str, tag: str, auth_config: Any) -> None:
        from docker.errors import NotFound

        raise NotFound("manifest unknown\nmore")


class FakeApi:
    def __init__(self, build_chunks: list[dict[str, str]], push_chunks: list[dict[str, str]]) -> None:
        self.build_chunks, self.push_chunks = build_chunks, push_chunks

    def build(self, **_kwargs: Any) -> Any:
        return iter(self.build_chunks)

    def push(self, *_args: Any, **_kwargs: Any) -> Any:
        return iter(self.push_chunks)


def test_engine_wrappers_translate_docker_answers() -> None:
    """Build output is logged without colours and a failing step is a BuildError quoting pip's
    own error line; push errors, missing images and failed pulls are disdat errors."""
    images_api = FakeImages({"a:1"})
    ok = SimpleNamespace(
        images=images_api, api=FakeApi([{"stream": "\x1b[31mStep 1/2\x1b[0m\n"}], [{"status": "Pushed", "id": "l1"}])
    )
    lines: list[str] = []
    engine.build(ok, "/ctx", "t:1", "base", None, lines.append)
    engine.push(ok, "repo", ["t"], None, lines.append)
    assert lines == ["Step 1/2", "Pushed l1"]
    assert engine.image_exists(ok, "a:1") and not engine.image_exists(ok, "b:1")
    engine.tag(ok, "a:1", "repo", "latest")
    assert images_api.tagged == [("repo", "latest")]
    with pytest.raises(ImageNotFound):
        engine.get_image(ok, "b:1")
    with pytest.raises(ImageNotFound, match="manifest unknown"):
        engine.pull(ok, "repo", "t")
    failing = SimpleNamespace(
        images=images_api,
        api=FakeApi(
            [{"stream": "Collecting nothere\n"}, {"stream": "ERROR: No matching distribution found for nothere\n"},
             {"error": "The command returned a non-zero code: 1"}],
            [{"error": "denied"}],
        ),
    )  # fmt: skip
    with pytest.raises(BuildError, match="ERROR: No matching distribution found for nothere"):
        engine.build(failing, "/ctx", "t:1", "base", None, lambda _line: None)
    with pytest.raises(DockerError, match="denied"):
        engine.push(failing, "repo", ["t"], None, lambda _line: None)
    assert engine._cause([], "") == "unknown error"


def test_engine_connect_and_ecr_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable engine is DockerUnavailable; ECR login creates the repository when missing
    and returns the registry host and docker auth."""
    from disdat_luigi.errors import DockerUnavailable

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable, match="cannot reach the Docker engine"):
        engine.connect()

    class Missing(Exception):
        pass

    created: list[str] = []
    token = base64.b64encode(b"AWS:secret").decode()
    ecr = SimpleNamespace(
        exceptions=SimpleNamespace(RepositoryNotFoundException=Missing),
        describe_repositories=lambda repositoryNames: (_ for _ in ()).throw(Missing()),
        create_repository=lambda repositoryName: created.append(repositoryName),
        get_authorization_token=lambda: {
            "authorizationData": [{"authorizationToken": token, "proxyEndpoint": "https://123.dkr.ecr.example/"}]
        },
    )
    import boto3

    monkeypatch.setattr(boto3, "client", lambda service, region_name=None: ecr)
    registry, auth = engine.ecr_login("disdat-etl")
    assert created == ["disdat-etl"] and registry == "123.dkr.ecr.example"
    assert auth == {"username": "AWS", "password": "secret", "serveraddress": "123.dkr.ecr.example"}


def test_push_progress_counts_layers() -> None:
    """`dsdt dockerize --push` shows layers pushed out of layers seen, from the engine's status lines."""
    from disdat_luigi.cli.docker import PushBar

    bar = PushBar()
    for line in ["Preparing a1", "Preparing b2", "Waiting b2", "Pushing a1", "Pushed a1", "Pushed a1",
                 "Layer already exists b2"]:  # fmt: skip
        assert bar.feed(line)
    assert not bar.feed("Step 3/9 : RUN pip install")
    assert bar.bar is not None and (bar.bar.n, bar.bar.total) == (2, 2)
    bar.close()
