"""Trust: a hostile remote, a careless user or local damage never leaks, corrupts or loses data.

Each test is one row of the reliability ledger; hostile input is refused with an exact error type.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.errors import (
    BundleCorrupt,
    BundleExists,
    IndexDamaged,
    InvalidName,
    LocalDiskError,
    ManifestRejected,
    PartialPull,
    RemoteOnlyData,
    UnsupportedValue,
    UuidConflict,
)
from disdat_luigi.store.remote import transfer
from tests.reliability.test_hostile import _doc, _plant, _snapshot

SECRET = "aws_secret_access_key = planted-secret"
PREFIX = "team/context/shared/objects"


def _record(ledger: Any, operation: str, failures: list[str], cases: int, detail: str) -> None:
    ledger.record(operation, cases, len(failures), detail)
    assert not failures, failures


def _expect(failures: list[str], label: str, error: type[Exception], action: Any) -> None:
    """Run `action`; note a failure unless it raises exactly `error`."""
    try:
        action()
    except Exception as err:  # the exact type is what is checked
        if type(err) is not error:
            failures.append(f"{label}: {type(err).__name__}: {err}")
        return
    failures.append(f"{label}: accepted")


# --- 1. value trees naming local files ------------------------------------------------------

HOSTILE_TREES = {
    "bytes at an absolute path": {"t": "bytes", "path": "{secret}"},
    "file at a relative escape": {"t": "file", "path": "../../../../../../..{secret}"},
    "json at an absolute path": {"t": "json", "path": "{secret}"},
    "ndarray at an absolute path": {"t": "ndarray", "path": "{secret}"},
    "dataframe at an absolute path": {"t": "dataframe", "path": "{secret}"},
    "dir at an absolute path": {"t": "dir", "path": "{secret_dir}"},
    "nested in a list": {"t": "list", "items": [{"t": "int", "v": 1}, {"t": "bytes", "path": "{secret}"}]},
    "bundle path not listed": {"t": "bytes", "path": "values/0.bin"},
    "unknown kind": {"t": "pickle", "path": "data/x"},
    "object dtype scalar": {"t": "npscalar", "dtype": "O", "hex": "00"},
}


def _tree(template: Any, secret: Path) -> Any:
    text = json.dumps(template).replace("{secret}", str(secret)).replace("{secret_dir}", str(secret.parent))
    return json.loads(text)


def test_value_trees_never_name_local_files(ledger, remote_ctx: str, bucket: str, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """Every path in a pulled value tree must be a listed bundle file: others are ManifestRejected
    at pull time with nothing written, and a tampered local manifest is refused when read."""
    secret = disdat_env / "victim" / "credentials"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    home = disdat_env / "home"
    failures: list[str] = []
    for index, (label, template) in enumerate(HOSTILE_TREES.items()):
        uuid = f"00000000-0000-0000-0001-{index:012d}"
        doc = {**_doc(uuid, []), "data": _tree(template, secret)}
        _plant(bucket, uuid, doc)
        before = _snapshot(home)
        _expect(failures, label, ManifestRejected, lambda uuid=uuid: api.pull(remote_ctx, uuid=uuid, localize=True))
        if _snapshot(home) != before:
            failures.append(f"{label}: something was written")
    deep = "".join('{"t":"list","items":[' for _ in range(50_000)) + "]}" * 50_000
    deep_uuid = "00000000-0000-0000-0002-000000000000"
    raw = json.dumps(_doc(deep_uuid, [])).replace('{"t": "none"}', deep).encode()
    _plant(bucket, deep_uuid, raw)
    _expect(failures, "50,000 levels", ManifestRejected, lambda: api.pull(remote_ctx, uuid=deep_uuid))
    shallow_deep = {"t": "none"}
    for _ in range(300):
        shallow_deep = {"t": "list", "items": [shallow_deep]}
    _plant(bucket, deep_uuid, {**_doc(deep_uuid, []), "data": shallow_deep})
    _expect(failures, "300 levels", ManifestRejected, lambda: api.pull(remote_ctx, uuid=deep_uuid))
    # a local manifest edited to point at the secret is refused when read
    bundle = api.Bundle(remote_ctx, name="local", data=b"x" * 5000)
    manifest_path = Path(bundle.local_dir) / "manifest.json"
    doc = json.loads(manifest_path.read_bytes())
    doc["data"] = {"t": "bytes", "path": str(secret)}
    manifest_path.write_text(json.dumps(doc))
    _expect(failures, "tampered local manifest", ManifestRejected, lambda: api.cat(remote_ctx, "local"))
    # a data file swapped for a symlink to the secret is not followed out of the bundle
    other = api.Bundle(remote_ctx, name="linked", data=b"y" * 5000)
    value_file = Path(other.local_dir) / "values" / "0.bin"
    value_file.unlink()
    value_file.symlink_to(secret)
    _expect(failures, "symlink out of the bundle", BundleCorrupt, lambda: other.data)
    _record(
        ledger,
        "hostile value trees (paths, depth, kinds)",
        failures,
        len(HOSTILE_TREES) + 4,
        "ManifestRejected at pull, nothing written; tampered local manifest and links out refused",
    )


# --- 2. files that enter a bundle -------------------------------------------------------------


class Colour(str, enum.Enum):
    RED = "red"


Point = collections.namedtuple("Point", "x y")


def test_files_and_values_entering_a_bundle(ledger, ctx: str, tmp_path: Path, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """Links out of an added tree, FIFOs and devices are refused by name; a task's symlink is
    frozen as content; pseudo files and dict keys stay strings; lossy types are refused."""
    failures: list[str] = []
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    (tree / "link").symlink_to(outside)
    home = disdat_env / "home"
    before = _snapshot(home)
    _expect(failures, "add: link out of DIR", UnsupportedValue, lambda: api.add(ctx, "t", tree))
    followed = api.add(ctx, "t", tree, follow_links=True)
    if sorted(Path(p).read_text() for p in followed.data) != ["a", "outside"]:
        failures.append("add --follow-links did not copy the link's target")
    (tree / "link").unlink()
    os.mkfifo(tree / "pipe")
    before = _snapshot(home)
    _expect(failures, "add: FIFO in DIR", UnsupportedValue, lambda: api.add(ctx, "t", tree))
    _expect(failures, "add /dev/zero", UnsupportedValue, lambda: api.add(ctx, "z", "/dev/zero"))
    if _snapshot(home) != before:
        failures.append("a refused add wrote something")
    # a symlink a task leaves in its bundle is stored as the content it points to at close
    with api.Bundle(ctx, name="links") as bundle:
        target = Path(bundle.get_file("model.bin"))
        target.symlink_to(outside)
        bundle.add_data(str(target))
    outside.write_text("changed later")
    stored = Path(bundle.data)
    if stored.is_symlink() or stored.read_text() != "outside":
        failures.append("a symlink in the bundle was kept as a link")
    values = {
        "pseudo file": ["started", "/proc/self/environ"],
        "file as dict key": {"/etc/hostname": (1,), "/etc/../etc/hostname": (2,)},
        "long slash string": "/" + "a" * 300,
        "under a file": "/etc/hostname/not-a-dir",
    }
    for label, value in values.items():
        got = api.Bundle(ctx, name="v", data=value).data
        if got != value:
            failures.append(f"{label}: came back as {got!r}")
    lossy = {
        "str Enum": Colour.RED,
        "namedtuple": Point(1, 2),
        "OrderedDict": collections.OrderedDict(a=1),
        "defaultdict": collections.defaultdict(int, a=1),
        "Counter": collections.Counter("aab"),
    }
    before = _snapshot(home)
    for label, value in lossy.items():
        _expect(failures, label, UnsupportedValue, lambda value=value: api.Bundle(ctx, name="lossy", data=value))
    if _snapshot(home) != before or api.get(ctx, "lossy") is not None:
        failures.append("a refused value left something behind")
    _record(
        ledger,
        "files and values entering a bundle",
        failures,
        4 + 1 + len(values) + len(lossy),
        "links out, FIFOs, devices refused by name; links frozen; pseudo files and keys stay strings",
    )


# --- 3. push and delocalize publish and drop only what is verified -------------------------------


def _objects(bucket: str, uuid: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{uuid}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_push_publishes_only_verified_content(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A same-size edit after commit is refused by push (small and multipart files), nothing
    published; a different bundle under the same uuid blocks delocalize; failed uploads abort."""
    failures: list[str] = []
    for size in (5000, 9 * 1024 * 1024):
        bundle = api.Bundle(remote_ctx, name=f"edited{size}", data=b"a" * size).commit()
        value = Path(bundle.local_dir) / "values" / "0.bin"
        value.write_bytes(b"b" * size)  # same size, other content
        _expect(failures, f"push after edit ({size} B)", BundleCorrupt, lambda n=bundle.name: api.push(remote_ctx, n))
        if _objects(bucket, bundle.uuid):
            failures.append(f"push after edit ({size} B) left objects on the remote")
    # a different bundle on the remote under this uuid
    mine = api.Bundle(remote_ctx, name="mine", data=b"m" * 5000).commit()
    _plant(bucket, mine.uuid, _doc(mine.uuid, []))
    _expect(failures, "push over another bundle's uuid", UuidConflict, lambda: api.push(remote_ctx, "mine"))
    _expect(failures, "delocalize over another bundle", UuidConflict, lambda: mine.push(delocalize=True))
    if not (Path(mine.local_dir) / "values" / "0.bin").exists():
        failures.append("the local copy was dropped")
    # an upload that fails half-way aborts its multipart upload
    api.Bundle(remote_ctx, name="big", data=b"c" * (20 * 1024 * 1024)).commit()
    from disdat_luigi.store.remote import s3 as s3_module

    original = s3_module._HashingReader.read

    def failing_read(self: Any, amount: int = -1) -> bytes:
        if self.size > 8 * 1024 * 1024:
            raise OSError("the disk went away")
        return original(self, amount)

    s3_module._HashingReader.read = failing_read  # type: ignore[method-assign]
    try:
        try:
            api.push(remote_ctx, "big")
            failures.append("a failing upload was accepted")
        except Exception:
            pass
    finally:
        s3_module._HashingReader.read = original  # type: ignore[method-assign]
    uploads = boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if uploads:
        failures.append(f"{len(uploads)} multipart upload(s) left open")
    api.push(remote_ctx, "big", delocalize=True)
    if api.get(remote_ctx, "big").data != b"c" * (20 * 1024 * 1024):
        failures.append("push -d after the failure did not round-trip")
    _record(
        ledger,
        "push/delocalize verify what they publish and drop",
        failures,
        6,
        "BundleCorrupt on edited files (nothing published); UuidConflict; aborted multipart uploads",
    )


def test_remote_only_bundles_are_protected(ledger, remote_ctx: str, bucket: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """rmr, rebinding and deleting the remote context refuse (or ask) when local bundles keep
    their files only there; verify reports remote-only bundles the remote lost."""
    failures: list[str] = []
    gone = api.Bundle(remote_ctx, name="gone", data=b"g" * 5000).commit()
    api.push(remote_ctx, "gone", delocalize=True)
    boto3.client("s3").create_bucket(Bucket=bucket + "-other")
    _expect(failures, "rmr remote-only", RemoteOnlyData, lambda: api.rmr(remote_ctx, "gone"))
    _expect(
        failures,
        "rebind",
        RemoteOnlyData,
        lambda: api.remote(remote_ctx, "shared", f"s3://{bucket}-other/team"),
    )
    refused = dsdt("context", "-d", "-r", remote_ctx)
    if refused.code != 1 or "removes 1 bundle(s)" not in refused.out or "--yes" not in refused.err:
        failures.append(f"context -d -r without --yes: {refused.code} {refused.out} {refused.err}")
    if api.get(remote_ctx, "gone") is None:
        failures.append("the refused delete removed the context")
    api.rmr(remote_ctx, "gone", force=True)
    report = api.verify(remote_ctx)
    if [p.uuid for p in report.problems] != [gone.uuid] or "remote no longer has" not in report.problems[0].detail:
        failures.append(f"verify did not report the lost remote-only bundle: {report.problems}")
    done = dsdt("context", "-d", "-r", "--yes", "-f", remote_ctx)
    if done.code != 0 or remote_ctx in api.ls_contexts():
        failures.append(f"context -d -r --yes: {done.code} {done.err}")
    _record(
        ledger,
        "remote-only bundles protected",
        failures,
        5,
        "rmr/rebind RemoteOnlyData; context -d -r counts and needs --yes; verify reports losses",
    )


# --- 4. a failed close is a clean failure -----------------------------------------------------


@pytest.mark.parametrize(
    ("label", "error", "message"),
    [
        ("index locked past the timeout", sqlite3.OperationalError("database is locked"), "database is locked"),
        ("index on a full disk", sqlite3.OperationalError("database or disk is full"), "no space left on device"),
        (
            "data on a full disk",
            OSError(28, "No space left on device", "/store/x"),
            "no space left on device: /store/x",
        ),
    ],
)
def test_failed_close_leaves_no_bundle(
    ledger, ctx: str, monkeypatch: pytest.MonkeyPatch, label: str, error: Exception, message: str
) -> None:  # type: ignore[no-untyped-def]
    """When the index insert (or a write) fails during close, the caller gets LocalDiskError
    naming the cause, and neither the store nor a later verify shows the bundle."""
    from disdat_luigi.store.context import LocalContext
    from disdat_luigi.store.index import BundleIndex

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise error

    target = (BundleIndex, "insert_many") if isinstance(error, sqlite3.Error) else (LocalContext, "publish")
    failures: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(*target, fail)
        try:
            api.Bundle(ctx, name="x", data=b"z" * 9000)
            failures.append("close succeeded")
        except LocalDiskError as err:
            if message not in str(err):
                failures.append(f"message {err} lacks {message!r}")
    report = api.verify(ctx)
    if api.search(ctx) or report.indexed or report.problems:
        failures.append(f"the bundle came back: {api.search(ctx)} {report}")
    row = ledger.rows.get("failed close", [0, 0, ""])
    ledger.record(
        "failed close", int(row[0]) + 1, int(row[1]) + len(failures), "LocalDiskError; no bundle, none after verify"
    )
    assert not failures, failures


# --- 5. concurrent writers of one uuid -----------------------------------------------------------


def test_two_pulls_of_one_bundle_and_a_third_writer(
    ledger, remote_ctx: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Two pulls of the same uuid into one context, with a third writer cleaning leftovers while
    the first is mid-download: both pulls succeed, the live draft is never removed."""
    made = api.Bundle(remote_ctx, name="shared", data=b"s" * 20000).commit()
    api.push(remote_ctx, "shared")
    api.context("second")
    api.remote("second", "shared", f"s3://{bucket}/team")
    release = threading.Event()
    entered = threading.Event()
    original = transfer.run_groups  # what a pull downloads through

    def slow_run_groups(*args: Any, **kwargs: Any) -> int:
        entered.set()
        assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(transfer, "run_groups", slow_run_groups)
    results: dict[str, Any] = {}

    def pull(key: str) -> None:
        try:
            results[key] = api.pull("second", uuid=made.uuid, localize=True)
        except Exception as err:  # recorded and checked below
            results[key] = err

    first = threading.Thread(target=pull, args=("first",))
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=pull, args=("second",))
    second.start()
    failures: list[str] = []
    api.Bundle("second", name="third", data=1)  # a third writer: cleans leftovers on its first bundle
    home = Path(os.environ["DISDAT_HOME"])
    if not (home / "context" / "second" / "objects" / made.uuid).is_dir():
        failures.append("the third writer removed the live draft")
    if api.get("second", "shared") is not None:
        failures.append("the draft was visible before it was complete")
    release.set()
    first.join(60)
    second.join(60)
    for key in ("first", "second"):
        if isinstance(results.get(key), BaseException) or not results.get(key):
            failures.append(f"{key} pull: {results.get(key)!r}")
    if api.get("second", "shared").data != b"s" * 20000 or not api.verify("second").ok:
        failures.append("the pulled bundle is not intact")
    bad_uuid = lambda: api.Bundle(remote_ctx, name="u").open(force_uuid="ABC-DEF")  # noqa: E731
    _expect(failures, "upper-case forced uuid", InvalidName, bad_uuid)
    _expect(failures, "existing forced uuid", BundleExists, lambda: api.Bundle(remote_ctx, name="u").open(made.uuid))
    _expect(
        failures,
        "malformed output_bundle_uuid",
        InvalidName,
        lambda: api.apply(remote_ctx, "tests.functional.pipelines.Source", output_bundle_uuid="not a uuid"),
    )
    _record(
        ledger,
        "same-uuid writers (2 pulls + a cleaner)",
        failures,
        5,
        "both pulls succeed, live draft kept; bad or taken uuids refused where they enter",
    )


# --- 6. damage is repairable with dsdt --------------------------------------------------------


def test_damage_is_repairable(ledger, remote_ctx: str, bucket: str, dsdt, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """A damaged manifest is removable by uuid; a garbage index is moved aside and rebuilt; a
    missing one is rebuilt on open; a bad remote manifest neither blocks pull nor rmr."""
    failures: list[str] = []
    keep = api.Bundle(remote_ctx, name="keep", data=[1, 2]).commit()
    broken = api.Bundle(remote_ctx, name="broken", data=[3]).commit()
    (Path(broken.local_dir) / "manifest.json").write_text("{not json")
    if "dsdt rm -u" not in dsdt("verify").out:
        failures.append("verify does not say how to remove the damaged bundle")
    if dsdt("rm", "-u", broken.uuid).code != 0 or Path(broken.local_dir).exists():
        failures.append("rm -u of a damaged bundle failed")
    index = Path(keep.local_dir).parents[1] / "index.sqlite"
    index.write_bytes(b"garbage" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    _expect(failures, "garbage index", IndexDamaged, lambda: api.search(remote_ctx))
    rebuilt = dsdt("verify", "--rebuild")
    if rebuilt.code != 0 or "moved it to" not in rebuilt.out or api.get(remote_ctx, "keep") is None:
        failures.append(f"verify --rebuild: {rebuilt.code} {rebuilt.out} {rebuilt.err}")
    index.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    with caplog.at_level("WARNING"):
        found = api.get(remote_ctx, "keep")
    if found is None or "rebuilt it from 1 bundle manifest" not in caplog.text:
        failures.append(f"a missing index was not rebuilt with a notice: {caplog.text}")
    api.push(remote_ctx, "keep")
    bad = "00000000-0000-0000-0003-000000000000"
    _plant(bucket, bad, b"\x00garbage")
    api.rm(remote_ctx, "keep")
    _expect(failures, "pull around a bad manifest", PartialPull, lambda: api.pull(remote_ctx))
    if api.get(remote_ctx, "keep") is None:
        failures.append("the good bundle was not pulled around the bad one")
    cli = dsdt("pull")
    if cli.code != 1 or f"skipped {bad}" not in cli.err:
        failures.append(f"dsdt pull with a bad manifest: {cli.code} {cli.err}")
    if dsdt("rmr", "-u", bad).code != 0 or _objects(bucket, bad):
        failures.append("rmr -u of an unreadable remote bundle failed")
    _record(
        ledger,
        "damage repairable with dsdt",
        failures,
        7,
        "rm -u damaged; IndexDamaged -> verify --rebuild; missing index rebuilt; PartialPull; rmr -u",
    )


# --- 7. CLI answers a user can act on ------------------------------------------------------------


def test_cli_answers(ledger, remote_ctx: str, bucket: str, dsdt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Errors are one line without a traceback; nothing-matched exits non-zero; control characters
    are refused locally and from the remote; pull counts what it fetched; apply names its output."""
    failures: list[str] = []

    def check(label: str, ok: bool, result: Any) -> None:
        if not ok:
            failures.append(f"{label}: {result}")

    bad_date = dsdt("ls", "-v", "-A", "not-a-date")
    check("ls -v error", bad_date.code == 1 and "Traceback" not in bad_date.err, bad_date)
    failed = dsdt("apply", "tests.functional.pipelines.Fails")
    check("apply failure", failed.code == 1 and "Traceback" not in failed.err and "boom" in failed.err, failed)
    check("rm nothing", dsdt("rm", "nosuch").code == 1, "exit 0")
    check("rmr nothing", dsdt("rmr", "x*").code == 1, "exit 0")
    for name in ("evil\nforged", "red\x1b[31m"):
        _expect(failures, f"bundle name {name!r}", InvalidName, lambda n=name: api.Bundle(remote_ctx, name=n, data=1))
        _expect(
            failures,
            f"tag {name!r}",
            InvalidName,
            lambda n=name: api.Bundle(remote_ctx, name="t", data=1, tags={"k": n}),
        )
    forged = "00000000-0000-0000-0004-000000000000"
    _plant(bucket, forged, {**_doc(forged, []), "name": "ok\nforged-line"})
    _expect(failures, "pulled name with a newline", ManifestRejected, lambda: api.pull(remote_ctx, uuid=forged))
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"{PREFIX}/{forged}/manifest.json")
    api.Bundle(remote_ctx, name="pulled", data=b"p" * 5000).commit()
    api.push(remote_ctx, "pulled")
    counted = dsdt("pull", "pulled")
    check("pull counts", counted.code == 0 and "1 already here, 0 pulled" in counted.out, counted)
    source = tmp_path / "added.txt"
    source.write_text("x")
    dsdt("add", "added", str(source))
    made = dsdt("apply", "tests.functional.pipelines.Double")
    check("apply names its output", made.code == 0 and "the output is Double " in made.out, made)
    intermediates = dsdt("ls", "-i")
    check("ls -i", "added" not in intermediates.out and "Source" in intermediates.out, intermediates)
    _record(ledger, "CLI answers", failures, 12, "one line, no traceback; non-zero on no match; control chars refused")


def test_read_only_store_answers(ledger, ctx: str, disdat_env: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On a read-only mount of the store, ls, cat and lineage answer; a write is one clear line."""
    import subprocess
    import sys

    bundle = api.Bundle(ctx, name="ro", data={"a": 1})
    home = disdat_env / "home"
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(home), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True)
        env = {**os.environ, "DISDAT_HOME": str(mount)}
        failures = []
        for args, expected in ((["ls", "-v"], "ro "), (["cat", "ro"], "{'a': 1}"), (["lineage", bundle.uuid], "ro ")):
            result = subprocess.run(
                [sys.executable, "-m", "disdat_luigi.cli.main", *args], env=env, capture_output=True, text=True
            )
            if result.returncode != 0 or expected not in result.stdout:
                failures.append(f"{args}: {result.returncode} {result.stderr}")
        write = subprocess.run(
            [sys.executable, "-m", "disdat_luigi.cli.main", "add", "x", "/etc/hostname"],
            env=env,
            capture_output=True,
            text=True,
        )
        if write.returncode != 1 or "read-only file system" not in write.stderr or "unexpected" in write.stderr:
            failures.append(f"add on a read-only store: {write.returncode} {write.stderr}")
        piped = subprocess.run(
            f"{sys.executable} -m disdat_luigi.cli.main ls -v | head -1",
            shell=True,
            env=env,
            capture_output=True,
            text=True,
        )
        if piped.stderr:
            failures.append(f"ls | head -1 was not quiet: {piped.stderr}")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    _record(
        ledger,
        "read-only store",
        failures,
        5,
        "ls, cat, lineage answer; a write is one line; ls piped into head ends quietly",
    )
