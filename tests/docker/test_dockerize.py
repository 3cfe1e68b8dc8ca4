"""dockerize against a real Docker engine and registry: names, tags, labels, caching, errors."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import docker
import pytest

from disdat_luigi import api
from disdat_luigi.dockerize.images import ImageResult
from disdat_luigi.errors import BuildError, DockerUnavailable, ImageNotFound, PipeClassNotFound

MODULES = {"etl.ingest", "etl.clean", "etl.summarize", "ml.train", "ml.evaluate", "ml.sweep"}


def _client() -> docker.DockerClient:
    return docker.from_env(version="auto")


def test_one_image_per_pipeline_module(built_pipes: list[ImageResult]) -> None:
    """Without pipe_cls every module defining a PipeTask gets disdat-module-submodule:latest + content tag."""
    assert {r.module for r in built_pipes} == MODULES
    assert {r.name for r in built_pipes} == {f"disdat-{m.replace('.', '-')}" for m in MODULES}
    client = _client()
    for result in built_pipes:
        image = client.images.get(f"{result.name}:latest")
        assert f"{result.name}:{result.content_tag}" in image.tags
        assert image.labels["disdat.content-tag"] == result.content_tag
        assert image.labels["disdat.base-image"] == "disdat-test-base:bookworm"
        env = dict(e.split("=", 1) for e in image.attrs["Config"]["Env"])
        assert env["DISDAT_IMAGE_TAG"] == result.content_tag


def test_image_runs_and_imports_the_pipeline(built_pipes: list[ImageResult]) -> None:
    """`docker run IMAGE --help` prints the entry point's usage; the module imports inside."""
    client = _client()
    usage = client.containers.run("disdat-etl-ingest:latest", ["--help"], network_mode="host", remove=True)
    assert b"usage: disdat-entrypoint" in usage
    out = client.containers.run(
        "disdat-ml-train:latest", ["-c", "import ml.train, disdat_luigi; print(ml.train.Train.__name__)"],
        entrypoint="/opt/venv/bin/python", network_mode="host", remove=True,
    )  # fmt: skip
    assert out.strip() == b"Train"


def test_second_dockerize_does_nothing(built_pipes: list[ImageResult], pipes_copy: Path, dsdt) -> None:  # type: ignore[no-untyped-def]
    """A re-dockerize of unchanged code finds the content tag and only reports it."""
    started = time.perf_counter()
    result = dsdt("dockerize", str(pipes_copy), "etl.ingest.Ingest")
    assert result.code == 0 and time.perf_counter() - started < 5
    ingest = next(r for r in built_pipes if r.module == "etl.ingest")
    assert result.out.strip() == f"disdat-etl-ingest:{ingest.content_tag} (up to date; also tagged latest)"


def test_code_change_rebuilds_only_the_top_layers(docker_env: Path, pipes_copy: Path, tmp_path: Path) -> None:
    """Changing one line of pipeline code keeps every layer below the pipeline's own."""
    root = tmp_path / "pipes"
    shutil.copytree(pipes_copy, root)
    (first,) = api.dockerize(root, "etl.ingest.Ingest")
    source = root / "etl" / "ingest.py"
    # A change no earlier run made, so an engine reused between runs has no image for it yet.
    source.write_text(source.read_text() + f"\n# run {uuid.uuid4().hex}\n")
    (second,) = api.dockerize(root, "etl.ingest.Ingest")
    assert second.built and second.content_tag != first.content_tag
    client = _client()
    old = [layer["Id"] for layer in client.api.history(f"{first.name}:{first.content_tag}")][::-1]
    new = [layer["Id"] for layer in client.api.history(f"{second.name}:{second.content_tag}")][::-1]
    created = [layer["CreatedBy"] for layer in client.api.history(f"{second.name}:{second.content_tag}")][::-1]
    changed_from = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    assert "pipe-src" in created[changed_from], created[changed_from]
    assert all("requirements.txt" not in c and "disdat_luigi-src" not in c for c in created[changed_from:])


def test_push_to_registry_and_pull_back(
    built_pipes: list[ImageResult], docker_env: Path, pipes_copy: Path, registry: str
) -> None:
    """--push sends both tags to the registry, and nothing when the registry has the content tag;
    the image can be deleted locally and pulled again."""
    (result,) = api.dockerize(pipes_copy, "etl.clean.Clean", push=True)
    assert result.pushed == (
        f"{registry}/disdat-etl-clean:{result.content_tag}",
        f"{registry}/disdat-etl-clean:latest",
    )
    (again,) = api.dockerize(pipes_copy, "etl.clean.Clean", push=True)
    assert again.pushed == (f"{registry}/disdat-etl-clean:{result.content_tag}",)  # the registry has it: not pushed
    client = _client()
    reference = f"{registry}/disdat-etl-clean:{result.content_tag}"
    client.images.remove(reference)
    client.images.pull(f"{registry}/disdat-etl-clean", tag=result.content_tag)
    assert client.images.get(reference).labels["disdat.content-tag"] == result.content_tag


def test_pyproject_only_project(docker_env: Path, tmp_path: Path) -> None:
    """A pipe root with only a pyproject.toml builds too."""
    root = tmp_path / "proj"
    (root / "mini").mkdir(parents=True)
    (root / "mini" / "__init__.py").write_text("")
    (root / "mini" / "tasks.py").write_text(
        "from disdat_luigi.pipe import PipeTask\n\n"
        "class Hello(PipeTask):\n    def pipe_run(self):\n        return 'hi'\n"
        f"\n# run {uuid.uuid4().hex}: unique, so a reused engine has no image of it\n"
    )
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "mini"\nversion = "0.1"\ndependencies = []\n\n[tool.setuptools]\npackages = ["mini"]\n'
    )
    (result,) = api.dockerize(root)
    assert result.name == "disdat-mini-tasks" and result.built


def test_broken_dependency_fails_with_pips_message(docker_env: Path, tmp_path: Path, dsdt) -> None:  # type: ignore[no-untyped-def]
    """A requirement pip cannot install fails the build, quoting pip's own error."""
    root = tmp_path / "broken"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "__init__.py").write_text("")
    (root / "bad" / "task.py").write_text("from disdat_luigi.pipe import PipeTask\n\nclass T(PipeTask):\n    pass\n")
    (root / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='bad', packages=['bad'], "
        "install_requires=['disdat-no-such-package-anywhere==9.9.9'])\n"
    )
    with pytest.raises(BuildError, match="ERROR: .*disdat-no-such-package-anywhere"):
        api.dockerize(root, "bad.task.T")
    result = dsdt("dockerize", str(root), "bad.task.T")
    error = next(line for line in result.err.splitlines() if line.startswith("dsdt dockerize:"))
    assert result.code == 1 and "ERROR: Could not find a version" in error and "disdat-no-such-package" in error


@pytest.mark.parametrize(
    ("pipe_cls", "error", "message"),
    [
        ("etl.ingest.Nope", PipeClassNotFound, "defines no class Nope"),
        ("etl.nothere.Task", PipeClassNotFound, "no module etl.nothere"),
        ("Bare", PipeClassNotFound, "not a dotted path"),
    ],
)
def test_missing_pipe_class(docker_env: Path, pipes_copy: Path, pipe_cls: str, error: type, message: str) -> None:
    """A class the pipe root does not define is a clear error before any build."""
    with pytest.raises(error, match=message):
        api.dockerize(pipes_copy, pipe_cls)


def test_no_setup_py(docker_env: Path, tmp_path: Path) -> None:
    """A pipe root that is not a pip-installable project is refused."""
    (tmp_path / "pkg").mkdir()
    with pytest.raises(BuildError, match="neither setup.py nor pyproject.toml"):
        api.dockerize(tmp_path, "pkg.mod.Task")


def test_engine_unreachable(docker_env: Path, pipes_copy: Path, monkeypatch: pytest.MonkeyPatch, dsdt) -> None:  # type: ignore[no-untyped-def]
    """With no engine at DOCKER_HOST the error says so, with a hint."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable, match="cannot reach the Docker engine"):
        api.dockerize(pipes_copy, "etl.ingest.Ingest")
    result = dsdt("dockerize", str(pipes_copy), "etl.ingest.Ingest")
    assert result.code == 1 and "start the Docker engine" in result.err


def test_no_build_needs_an_existing_image(docker_env: Path, pipes_copy: Path, tmp_path: Path) -> None:
    """--no-build on code that was never built says which image is missing."""
    root = tmp_path / "pipes"
    shutil.copytree(pipes_copy, root)
    (root / "etl" / "clean.py").write_text((root / "etl" / "clean.py").read_text() + "\n# new\n")
    with pytest.raises(ImageNotFound, match="--no-build"):
        api.dockerize(root, "etl.clean.Clean", no_build=True)


def test_ecr_login_creates_the_repository(aws_env: str) -> None:
    """With *ECR* the repository is created when missing and a login token is decoded (no push here)."""
    import boto3

    from disdat_luigi.dockerize.engine import ecr_login

    registry, auth = ecr_login("disdat-etl-ingest")
    assert registry.endswith(".amazonaws.com") and auth["username"] == "AWS" and auth["password"]
    names = [r["repositoryName"] for r in boto3.client("ecr").describe_repositories()["repositories"]]
    assert "disdat-etl-ingest" in names
    assert ecr_login("disdat-etl-ingest")[0] == registry


def test_image_history_holds_no_pip_secrets(docker_env: Path, tmp_path: Path, pipes_copy: Path) -> None:
    """A pip.conf with a private index is used for the build but lands in no layer of the image."""
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\n# token=disdat-secret-token-123\n")
    cfg = docker_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace("dot_pip_file =\n", f"dot_pip_file = {conf}\n"))
    (result,) = api.dockerize(pipes_copy, "etl.ingest.Ingest")
    saved = subprocess.run(["docker", "save", f"{result.name}:{result.content_tag}"], capture_output=True, check=True)
    assert b"disdat-secret-token-123" not in saved.stdout
