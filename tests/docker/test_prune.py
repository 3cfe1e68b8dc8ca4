"""`dsdt dockerize --prune`: old images of a module go, on this machine and (asked for) in the
registry; `latest`, tags bundles name and tags active job definitions use stay."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import docker
import pytest

from disdat_luigi import api
from disdat_luigi.dockerize.images import ImageResult


def _project(root: Path) -> str:
    """A one-module project of a name no other test (or engineer on this engine) uses; its package."""
    package = f"prune{uuid.uuid4().hex[:8]}"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "tasks.py").write_text(
        "from disdat_luigi.pipe import PipeTask\n\nclass Hello(PipeTask):\n    def pipe_run(self):\n        return 1\n"
    )
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{package}"\nversion = "0.1"\ndependencies = []\n\n'
        f'[tool.setuptools]\npackages = ["{package}"]\n'
    )
    return package


def _versions(root: Path, package: str, count: int, push: bool = False) -> list[ImageResult]:
    """`count` code versions built one after the other (each a new content tag), oldest first."""
    built = []
    source = root / package / "tasks.py"
    for i in range(count):
        source.write_text(source.read_text() + f"# version {i}\n")
        (result,) = api.dockerize(root, push=push)
        assert result.built
        built.append(result)
    return built


def _registry_tags(registry: str, name: str) -> set[str]:
    with urllib.request.urlopen(f"http://{registry}/v2/{name}/tags/list") as response:  # noqa: S310
        return set(json.loads(response.read()).get("tags") or [])


@pytest.fixture
def project(docker_env: Path, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "proj"
    package = _project(root)
    yield root, package
    client = docker.from_env(version="auto")
    for image in client.images.list():
        for ref in image.tags:
            if f"disdat-{package}-tasks" in ref:
                client.images.remove(ref, force=True)


def test_prune_keeps_the_newest_and_latest_and_says_what_it_freed(project: tuple[Path, str], dsdt) -> None:  # type: ignore[no-untyped-def]
    """With --keep 1 the two older images go; the newest (latest) stays; the freed size is shown."""
    root, package = project
    old, older, newest = _versions(root, package, 3)
    name = f"disdat-{package}-tasks"
    result = dsdt("dockerize", "--prune", "--keep", "1", str(root))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"{name}: removed 2 tag(s), kept 1; freed ")
    assert lines[0].endswith(("MB", "kB"))
    assert sorted(lines[1:]) == sorted(f"  removed {name}:{r.content_tag}" for r in (old, older))
    client = docker.from_env(version="auto")
    tags = {t for image in client.images.list(name=name) for t in image.tags}
    assert tags == {f"{name}:{newest.content_tag}", f"{name}:latest"}
    again = dsdt("dockerize", "--prune", "--keep", "1", str(root))
    assert again.out.strip() == f"{name}: removed 0 tag(s), kept 1"


def test_prune_default_keeps_three(project: tuple[Path, str], dsdt) -> None:  # type: ignore[no-untyped-def]
    """Without --keep the three newest images stay."""
    root, package = project
    built = _versions(root, package, 4)
    result = dsdt("dockerize", "--prune", str(root))
    assert result.code == 0, result.err
    assert result.out.splitlines()[1:] == [f"  removed disdat-{package}-tasks:{built[0].content_tag}"]


def test_prune_registry_lists_first_and_keeps_what_is_named(
    project: tuple[Path, str], registry: str, remote_ctx: str, dsdt, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """--registry without --yes (and no terminal) only lists; with --yes the one tag nothing names
    goes, while latest, the newest, a tag a remote bundle names and one an active job definition
    uses stay."""
    root, package = project
    name = f"disdat-{package}-tasks"
    v1, v2, v3, v4 = _versions(root, package, 4, push=True)
    with api.Bundle(remote_ctx, name="model", vc_info={"image": v1.content_tag}) as bundle:
        bundle.add_data(1)
    bundle.commit()
    bundle.push()
    boto3.client("batch").register_job_definition(
        jobDefinitionName=f"{package}-def", type="container",
        containerProperties={"image": f"{registry}/{name}:{v2.content_tag}", "vcpus": 1, "memory": 512,
                             "command": ["true"]},
    )  # fmt: skip
    assert _registry_tags(registry, name) == {v.content_tag for v in (v1, v2, v3, v4)} | {"latest"}

    listed = dsdt("dockerize", "--prune", "--keep", "1", "--registry", str(root))
    assert listed.code == 0, listed.err
    assert f"registry {registry}/{name}: 1 tag(s) to delete" in listed.out
    assert f"  delete {v3.content_tag} (built " in listed.out
    assert f"  keep {v1.content_tag} (a bundle on the remote names it)" in listed.out
    assert f"  keep {v2.content_tag} (an active job definition uses it)" in listed.out
    assert f"  keep {v4.content_tag} (latest)" in listed.out and "  keep latest (latest)" in listed.out
    assert "nothing deleted from the registry: pass --yes to delete these tags" in listed.err
    assert v3.content_tag in _registry_tags(registry, name)

    deleted = dsdt("dockerize", "--prune", "--keep", "1", "--registry", "--yes", str(root))
    assert deleted.code == 0, deleted.err
    assert f"deleted {registry}/{name}:{v3.content_tag}" in deleted.out
    assert _registry_tags(registry, name) == {v1.content_tag, v2.content_tag, v4.content_tag, "latest"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keep", "2"], "--keep, --registry and --yes go with --prune"),
        (["--prune", "--yes"], "--yes only confirms registry deletes"),
        (["--prune", "--keep", "-1"], "--keep -1 is negative"),
    ],
)
def test_prune_bad_flags(project: tuple[Path, str], dsdt, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    """Flags that do not fit together fail with one line and change nothing."""
    root, _package = project
    result = dsdt("dockerize", *args, str(root))
    assert result.code != 0 and message in result.err
