"""Hostile input: each case is a clear error and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.errors import DisdatError

BAD_NAMES = ["a/b", "../up", "..", "x\x00y", "", " ", "w*ld", "x" * 300, "back\\slash"]
GOOD_NAMES = ["données-2026", "модель", "名前", "a.b_c-d e"]


def _snapshot(home: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(home)), p.stat().st_size)
        for p in home.rglob("*")
        if p.is_file() and "index.sqlite" not in p.name
    )


def test_hostile_names_and_tags(ledger, ctx: str, disdat_env: Path, tmp_path: Path, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Path separators, '..', NUL, empty, wildcard and over-long names and tags are refused untouched."""
    source = tmp_path / "f.txt"
    source.write_text("x")
    home = disdat_env / "home"
    before = _snapshot(home)
    failures = []
    cases = 0
    for name in BAD_NAMES:
        context_name = "a/b/c" if name == "a/b" else name  # 'remote/local' is a valid context name
        for attempt in (
            lambda name=name: api.Bundle(ctx, name=name, data=1),
            lambda name=name: api.add(ctx, name, source),
            lambda name=name: api.Bundle(ctx, name="ok", data=1, tags={name: "v"}),
            lambda name=context_name: api.context(name),
        ):
            cases += 1
            try:
                attempt()
                failures.append(f"{name!r} was accepted")
            except DisdatError:
                pass
    for value in ["a\x00b"]:
        cases += 1
        with pytest.raises(DisdatError):
            api.Bundle(ctx, name="ok", data=1, tags={"k": value})
    if _snapshot(home) != before:
        failures.append("the store changed")
    for name in GOOD_NAMES:
        cases += 1
        bundle = api.Bundle(ctx, name=name, data=name, tags={"tag": name + "/with/slashes"})
        if api.get(ctx, name).data != name or bundle.tags["tag"] != name + "/with/slashes":
            failures.append(f"{name!r} did not round-trip")
    cli = dsdt("add", "../evil", str(source))
    cases += 1
    if cli.code != 1 or "path separator" not in cli.err:
        failures.append("dsdt add ../evil was not refused clearly")
    ledger.record(
        "hostile names and tags", cases, len(failures), "refused with InvalidName, store unchanged; non-ASCII accepted"
    )
    assert not failures, failures


def _plant(bucket: str, uuid: str, manifest: Any, files: dict[str, bytes] | None = None) -> None:
    client = boto3.client("s3")
    prefix = f"team/context/shared/objects/{uuid}/"
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    client.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=body)
    for rel, data in (files or {}).items():
        client.put_object(Bucket=bucket, Key=prefix + rel, Body=data)
    client.put_object(Bucket=bucket, Key=f"team/context/shared/catalog/hostile/{uuid}", Body=b"")


def _doc(uuid: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": 1, "uuid": uuid, "name": "hostile", "processing_name": "hostile", "owner": "x",
        "creation_date": "2026-01-01T00:00:00+00:00", "data": {"t": "none"}, "files": files,
    }  # fmt: skip


SHA_OF_HELLO = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
UUIDS = [f"00000000-0000-0000-0000-{i:012d}" for i in range(10)]
MANIFESTS = {
    "path traversal": lambda u: _doc(u, [{"path": "../../../../tmp/owned", "size": 5, "sha256": SHA_OF_HELLO}]),
    "absolute path": lambda u: _doc(u, [{"path": "/etc/cron.d/owned", "size": 5, "sha256": SHA_OF_HELLO}]),
    "wrong size": lambda u: _doc(u, [{"path": "data/hello.txt", "size": 6, "sha256": SHA_OF_HELLO}]),
    "bad checksum": lambda u: _doc(u, [{"path": "data/hello.txt", "size": 5, "sha256": "0" * 64}]),
    "not json": lambda u: b"\x00\xffnot json",
    "other uuid": lambda u: _doc(UUIDS[9], []),
    "future schema": lambda u: {**_doc(u, []), "schema": 99},
    "duplicate file": lambda u: _doc(u, [{"path": "data/hello.txt", "size": 5, "sha256": SHA_OF_HELLO}] * 2),
}


def test_malicious_remote_manifests(
    ledger, remote_ctx: str, bucket: str, disdat_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Traversal, wrong sizes, bad checksums, garbage, huge counts: refused, nothing kept locally."""
    failures = []
    home = disdat_env / "home"
    for index, (label, make) in enumerate(MANIFESTS.items()):
        uuid = UUIDS[index]
        _plant(bucket, uuid, make(uuid), {"data/hello.txt": b"hello"})
        before = _snapshot(home)
        try:
            api.pull(remote_ctx, uuid=uuid, localize=True)
            failures.append(f"{label}: accepted")
        except DisdatError:
            pass
        if _snapshot(home) != before or api.search(remote_ctx):
            failures.append(f"{label}: something was written")
        boto3.client("s3").delete_object(Bucket=bucket, Key=f"team/context/shared/objects/{uuid}/manifest.json")
    if Path("/tmp/owned").exists() or Path("/etc/cron.d/owned").exists():
        failures.append("a file escaped the bundle")
    from disdat_luigi.store import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "MAX_FILES", 10)
    many = [{"path": f"data/{i}", "size": 1, "sha256": SHA_OF_HELLO} for i in range(11)]
    _plant(bucket, UUIDS[8], _doc(UUIDS[8], many))
    try:
        api.pull(remote_ctx, uuid=UUIDS[8])
        failures.append("huge count: accepted")
    except DisdatError:
        pass
    ledger.record(
        "malicious remote manifests",
        len(MANIFESTS) + 1,
        len(failures),
        "ManifestRejected/BundleCorrupt; no file written anywhere",
    )
    assert not failures, failures


@pytest.mark.parametrize(
    "text",
    [
        "[core\nroot",
        "[run]\nvcpus = -3\n",
        "[core]\nignore_code_version = perhaps\n",
        "\x00\x01binary",
        "[remote]\nserver_side_encryption = rot13\n",
    ],
)
def test_malformed_config_is_a_clear_cli_error(ledger, disdat_env: Path, dsdt, text: str) -> None:  # type: ignore[no-untyped-def]
    """A broken disdat.cfg: one line naming the file, exit 1, no traceback, store untouched."""
    cfg = disdat_env / "config" / "disdat.cfg"
    cfg.write_text(text)
    result = dsdt("context", "x")
    ok = result.code == 1 and str(cfg) in result.err and "Traceback" not in result.err
    ok = ok and not (disdat_env / "home" / "context" / "x").exists()
    row = ledger.rows.get("malformed config", [0, 0, ""])
    ledger.record(
        "malformed config",
        int(row[0]) + 1,
        int(row[1]) + (0 if ok else 1),
        "one line naming the file and key; nothing created",
    )
    assert ok, result.err


@pytest.mark.parametrize(
    "pipe_cls", ["os.system", "no.such.Module", "tests.functional.pipelines.Missing", "Bare", "__import__('os').system"]
)
def test_unimportable_pipe_classes(ledger, ctx: str, dsdt, pipe_cls: str) -> None:  # type: ignore[no-untyped-def]
    """Pipe class strings that are not PipeTasks are refused without running anything."""
    result = dsdt("apply", pipe_cls)
    ok = result.code == 1 and "Traceback" not in result.err and api.search(ctx) == []
    row = ledger.rows.get("unimportable pipe classes", [0, 0, ""])
    ledger.record(
        "unimportable pipe classes", int(row[0]) + 1, int(row[1]) + (0 if ok else 1), "PipeClassNotFound, nothing run"
    )
    assert ok, result.err
