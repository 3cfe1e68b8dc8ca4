"""Team members upgrade at different times: the previous release (installed from git into its
own virtualenv) and this one share one remote, each reading what the other wrote and neither
bringing back what the other deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote import packs
from disdat_luigi.store.remote.s3 import S3
from tests.conftest import REPO, CliResult

PREVIOUS = "256e396"  # the release before manifest packs
VENV = REPO / ".venv-previous"


@pytest.fixture(scope="session")
def previous_python() -> Path:
    """The previous release, installed from this repository's git history (offline: no
    dependencies are fetched; they come from this interpreter's site-packages, shared by path)."""
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if not marker.exists() or marker.read_text() != PREVIOUS:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", f"git+file://{REPO}@{PREVIOUS}"],
            check=True,
        )
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # a plain path entry: this interpreter's packages, without its editable disdat_luigi finder
        (Path(site) / "shared-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        marker.write_text(PREVIOUS)
    return python


@pytest.fixture
def old_dsdt(previous_python: Path, tmp_path: Path, bucket: str) -> Callable[..., CliResult]:
    """`dsdt ARGS` of the previous release, in a store of its own whose context `old` (current)
    is bound to the same remote as `remote_ctx`."""
    env = {
        **os.environ,
        "DISDAT_HOME": str(tmp_path / "old-home"),
        "DISDAT_CONFIG": str(tmp_path / "old-config" / "disdat.cfg"),
        "PYTHONPATH": "",
    }

    def run(*args: str) -> CliResult:
        proc = subprocess.run(
            [str(previous_python), "-m", "disdat_luigi.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    where = subprocess.run(
        [str(previous_python), "-c", "import disdat_luigi; print(disdat_luigi.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(str(VENV)), f"the previous release must be the installed one, not {where}"
    for args in (("init",), ("context", "old"), ("switch", "old"), ("remote", "shared", f"s3://{bucket}/team")):
        done = run(*args)
        assert done.code == 0, done.err
    return run


def _values(ctx: str) -> dict[str, object]:
    return {b.uuid: b.data for b in api.search(ctx)}


def test_previous_release_reads_what_this_one_pushed_and_back(
    remote_ctx: str, bucket: str, old_dsdt: Callable[..., CliResult]
) -> None:
    """This release pushes enough bundles for a manifest pack; the previous one pulls every one
    (all, and by name) and pushes its own; this one then pulls everything, from packs and one
    by one, with the right values, and a second pull asks for nothing."""
    made = {api.Bundle(remote_ctx, name=f"n{i % 3}", data=i).commit().uuid: i for i in range(packs.PACK_MIN + 4)}
    api.push(remote_ctx)
    assert packs.listed(*_s3_and_location(remote_ctx))  # this push wrote a pack
    assert old_dsdt("pull", "n1").code == 0
    assert old_dsdt("ls", "n1").out.splitlines() == ["n1"] * sum(1 for i in made.values() if i % 3 == 1)
    pulled = old_dsdt("pull")
    assert pulled.code == 0, pulled.err
    assert sorted(old_dsdt("ls").out.split()) == sorted(f"n{i % 3}" for i in made.values())
    assert old_dsdt("cat", "n2").out.strip() == str(max(i for i in made.values() if i % 3 == 2))
    for i in range(3):
        assert old_dsdt("add", "theirs", str(_file(remote_ctx, f"theirs-{i}"))).code == 0
        assert old_dsdt("commit", "theirs").code == 0
        assert old_dsdt("push", "theirs").code == 0
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    result = api.pull("fresh")
    assert sorted(result.fetched) == sorted(b.uuid for b in result) and len(result) == len(made) + 3
    values = _values("fresh")
    assert {u: values[u] for u in made} == made
    theirs = api.search("fresh", "theirs")
    assert len(theirs) == 3 and Path(str(api.pull("fresh", "theirs", localize=True)[0].data)).exists()
    again = api.pull("fresh")
    assert again.fetched == [] and len(again) == len(made) + 3


def test_what_the_previous_release_deletes_stays_deleted(
    remote_ctx: str, bucket: str, old_dsdt: Callable[..., CliResult]
) -> None:
    """Bundles this release pushed inside a manifest pack, then removed by the previous release
    with `rmr` (one wholly, one cut short after its catalog entry and manifest, its data file
    left behind), are not brought back by a pull here, though the pack still holds their copies."""
    made = [api.Bundle(remote_ctx, name="m", data=b"%d" % i * 20_000).commit() for i in range(packs.PACK_MIN)]
    api.push(remote_ctx)
    removed, cut_short = made[-1].uuid, made[-2].uuid
    assert old_dsdt("rmr", "-u", removed).code == 0
    s3, location = _s3_and_location(remote_ctx)
    s3.delete(location.bucket, [location.catalog_key("m", cut_short), location.manifest_key(cut_short)])
    assert cut_short in api._sync(api._context(remote_ctx)).remote_uuids()  # its data file is still there
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    pulled = api.pull("fresh")
    assert sorted(b.uuid for b in pulled) == sorted(b.uuid for b in made[:-2])
    assert api.get("fresh", None, uuid=removed) is None and api.get("fresh", None, uuid=cut_short) is None
    assert old_dsdt("pull").code == 0
    assert old_dsdt("ls", "m").out.splitlines() == ["m"] * (len(made) - 2)


def _s3_and_location(ctx: str) -> tuple[S3, RemoteLocation]:
    context = api._context(ctx)
    return S3(context.remote_settings), RemoteLocation.of(context)


def _file(ctx: str, text: str) -> Path:
    path = Path(api._store().root).parent / f"{text}.txt"
    path.write_text(text)
    return path
