"""Races inside one context: verify against a concurrent publish, Ctrl-C at the commit point of
a close or a pull, and localize against delocalize of one bundle. Each race is injected at its
exact point (a patched step waiting on an event or raising), so the outcome does not hang on timing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleNotFound
from disdat_luigi.store import index as index_module
from disdat_luigi.store import verify as verify_module
from disdat_luigi.store.bundle import Bundle
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.drafts import DraftList
from disdat_luigi.store.index import BundleIndex
from disdat_luigi.store.manifest import BundleManifest
from disdat_luigi.store.remote import sync
from disdat_luigi.store.remote.sync import RemoteSync
from tests.interrupts import interrupt_once

# --- helpers -----------------------------------------------------------------------------------


def _problems(ctx: str) -> list[str]:
    """What a user would see wrong: damage found by verify, a row verify had to add or drop, a
    listed bundle that does not read back."""
    report = api.verify(ctx)
    found = [f"verify: {p.uuid} {p.detail}" for p in report.problems]
    found += [f"verify had to index {u}" for u in report.indexed]
    found += [f"verify dropped the stale row {u}" for u in report.unindexed]
    try:
        listed = api.search(ctx)
    except BundleNotFound as err:
        return [*found, f"a stale index row: {err}"]
    for bundle in listed:
        try:
            bundle.data  # noqa: B018 - reading is the check
        except Exception as err:  # noqa: BLE001 - any failure to read is what we look for
            found.append(f"{bundle.name} {bundle.uuid} does not read back: {type(err).__name__}: {err}")
    return found


def _leftovers(context: LocalContext) -> list[str]:
    """Locks and drafts nobody holds any more."""
    return sorted(p.name for p in context.tmp_dir.iterdir())


@contextmanager
def _once(target: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Replace `target.name` by `make(original)` for the duration of the block."""
    original = getattr(target, name)
    replacement = make(original)
    if isinstance(vars(target).get(name), staticmethod):
        replacement = staticmethod(replacement)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(target, name, replacement)
        yield


# --- 7. verify against a concurrent publish ---------------------------------------------------------


def test_verify_never_drops_a_bundle_published_while_it_runs(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A bundle published while verify hashes (or rebuilds) stays listed and readable, with no
    second verify needed; a draft caught mid-publish whose index insert then fails stays invisible."""
    for i in range(3):
        api.Bundle(ctx, name=f"old{i}", data=b"o" * 5000)
    failures: list[str] = []
    trials = 0

    def publish_during(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            done: list[bool] = []

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                if not done:
                    done.append(True)
                    api.Bundle(ctx, name=name, data=b"n" * 5000)
                return original(*args, **kwargs)

            return wrapped

        return make

    cases: list[tuple[str, Any, str, bool]] = [
        ("while hashing", verify_module, "_check_files", False),
        ("while hashing, --rebuild", verify_module, "_check_files", True),
        ("right before the rebuild's swap", BundleIndex, "replace_all", True),
        ("right before stale rows are dropped", BundleIndex, "delete", False),
    ]
    for n, (label, target, attr, rebuild) in enumerate(cases):
        trials += 1
        name = f"late{n}"
        with _once(target, attr, publish_during(name)):
            api.verify(ctx, rebuild=rebuild)
        late = api.get(ctx, name)
        if late is None or late.data != b"n" * 5000:
            failures.append(f"{label}: the bundle published during verify is gone: {late}")
        failures += [f"{label}: {p}" for p in _problems(ctx)]

    # a draft whose manifest is in place but whose insert is still to come (and then fails):
    # verify, plain or --rebuild, must neither index it nor wait forever for it
    for rebuild in (False, True):
        trials += 1
        failures += [f"rebuild={rebuild}: {p}" for p in _verify_beside_a_failing_publish(ctx, rebuild)]
    ledger.record(
        "verify during a publish",
        trials,
        len(failures),
        "published while hashing / rebuilding / dropping rows: still listed, no 2nd verify; failed draft stays out",
    )
    assert not failures, failures


def _verify_beside_a_failing_publish(ctx: str, rebuild: bool) -> list[str]:
    """Run verify while a writer sits between its manifest and its index insert, which then
    fails: verify neither indexes the draft nor hangs, and the close raises LocalDiskError."""
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(self: BundleIndex, rows: list[tuple[BundleManifest, bool]]) -> None:
            if all(manifest.name != "doomed" for manifest, _committed in rows):
                return original(self, rows)
            entered.set()
            assert release.wait(30)
            raise OSError(28, "No space left on device")

        return wrapped

    def close() -> None:
        try:
            api.Bundle(ctx, name="doomed", data=b"d" * 5000)
        except BaseException as err:  # noqa: BLE001 - the expected LocalDiskError is checked below
            errors.append(err)

    failures: list[str] = []
    with _once(BundleIndex, "insert_many", make):  # a publish's index rows go in one insert
        writer = threading.Thread(target=close)
        writer.start()
        assert entered.wait(30)
        checker = threading.Thread(target=api.verify, args=(ctx,), kwargs={"rebuild": rebuild})
        checker.start()
        checker.join(0.5)  # plain verify finishes; --rebuild waits for the publishing writer
        release.set()
        writer.join(30)
        checker.join(30)
    if checker.is_alive() or writer.is_alive():
        failures.append("verify or the writer hangs")
    if not errors or type(errors[0]).__name__ != "LocalDiskError":
        failures.append(f"the failed close did not raise LocalDiskError: {errors}")
    try:
        if api.search(ctx, "doomed"):
            failures.append("verify indexed a draft whose publish failed")
    except BundleNotFound:
        failures.append("verify indexed a draft whose publish failed; its row is now stale")
    return failures + _problems(ctx)


def test_verify_while_another_process_publishes(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Verify runs over and over while another process closes 40 bundles: every one of them is
    listed at the end without a final verify, and nothing reads back wrong."""
    for i in range(20):
        api.Bundle(ctx, name=f"base{i}", data=b"b" * 200_000)
    script = (
        "import sys\nfrom disdat_luigi import api\n"
        "for i in range(40):\n    api.Bundle(sys.argv[1], name=f'p{i}', data=b'p' * 50_000)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, ctx], stderr=subprocess.PIPE, text=True)
    rounds = 0
    while child.poll() is None:
        api.verify(ctx, rebuild=rounds % 3 == 2)
        rounds += 1
    failures = [] if child.returncode == 0 else [f"writer failed: {child.stderr.read()[-500:] if child.stderr else ''}"]
    names = {b.name for b in api.search(ctx)}
    missing = [f"p{i}" for i in range(40) if f"p{i}" not in names]
    if missing:
        failures.append(f"{len(missing)} bundles published during verify vanished: {missing[:5]}")
    failures += _problems(ctx)
    ledger.record(
        "verify while another process publishes",
        40,
        len(failures),
        f"{rounds} verify runs (every 3rd --rebuild) during 40 closes; all 40 listed without another verify",
    )
    assert not failures, failures


# --- 8. Ctrl-C at the commit point -----------------------------------------------------------------

INTERRUPTS: list[tuple[str, Any, str, bool, bool]] = [
    # label, target, attribute, raise before (else after) the call, published at that point
    ("before the manifest is written", BundleManifest, "to_json", True, False),
    ("after the manifest, before the index insert", BundleIndex, "insert_many", True, False),
    ("inside the index insert, before its COMMIT", index_module, "_insert", False, False),
    ("right after the index insert", BundleIndex, "insert_many", False, True),
    ("at the release step", LocalContext, "_release", True, True),
    ("inside the release step", DraftList, "release", False, True),
]


@pytest.mark.parametrize(("label", "target", "attr", "before", "published"), INTERRUPTS, ids=lambda v: v)
def test_ctrl_c_during_close(  # type: ignore[no-untyped-def]
    ledger, ctx: str, label: str, target: Any, attr: str, before: bool, published: bool
) -> None:
    """A KeyboardInterrupt at each step of close's publish: once the bundle's directory is in
    place and its index row written it stays (listed, readable, the Bundle closed); before that
    the draft is abandoned and nothing of it stays, not even after verify."""
    failures: list[str] = []
    bundle = api.Bundle(ctx, name="ctrl-c").open()
    uuid = bundle.uuid
    bundle.add_data({"rows": list(range(50)), "blob": b"c" * 10_000})
    context = bundle.context
    try:
        with _once(target, attr, lambda original: interrupt_once(original, before)):
            bundle.close()
        failures.append("the interrupt never landed")
    except KeyboardInterrupt:
        pass
    try:
        found = api.get(ctx, "ctrl-c")
    except BundleNotFound as err:  # its row outlived its directory
        failures.append(f"the bundle was deleted under its index row: {err}")
        found = None
    if published:
        if found is None or found.uuid != uuid or found.data["rows"] != list(range(50)):
            failures.append(f"the published bundle was lost: {found}")
        if not bundle.closed:
            failures.append("the Bundle object does not know it was published")
    else:
        if found is not None or context.bundle_dir(uuid).exists():
            failures.append("the abandoned draft is still there")
    failures += _problems(ctx)
    if _leftovers(context):
        failures.append(f"left in tmp/: {_leftovers(context)}")
    api.Bundle(ctx, name="after", data=1)  # the next close works
    row = ledger.rows.get("Ctrl-C during close", [0, 0, ""])
    ledger.record(
        "Ctrl-C during close",
        int(row[0]) + 1,
        int(row[1]) + len(failures),
        "interrupt before/after manifest, index insert, release: published stays, draft leaves nothing",
    )
    assert not failures, f"{label}: {failures}"


@pytest.mark.parametrize(("label", "target", "attr", "before", "published"), INTERRUPTS[1:], ids=lambda v: v)
def test_ctrl_c_during_pull_batch(  # type: ignore[no-untyped-def]
    ledger,
    remote_ctx: str,
    bucket: str,
    label: str,
    target: Any,
    attr: str,
    before: bool,
    published: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A KeyboardInterrupt while a pull publishes its second of three bundles (a batch each:
    a batch's bundles are published together, all or none): the first (and the second once
    indexed) stay, the rest are abandoned cleanly; pulling again completes."""
    monkeypatch.setattr(sync, "PULL_BATCH", 1)
    for i in range(3):
        api.Bundle(remote_ctx, name=f"pb{i}", data=b"p" * (5000 + i)).commit()
    api.push(remote_ctx)
    api.context("puller")
    api.remote("puller", "shared", f"s3://{bucket}/team")
    failures: list[str] = []

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        calls: list[int] = []

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2 and before:
                raise KeyboardInterrupt
            result = original(*args, **kwargs)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return result

        return wrapped

    try:
        with _once(target, attr, make):
            api.pull("puller", localize=True)
        failures.append("the interrupt never landed")
    except KeyboardInterrupt:
        pass
    try:
        here = {b.name for b in api.search("puller")}
    except BundleNotFound as err:
        failures.append(f"a bundle was deleted under its index row: {err}")
        here = set()
    expected = {"pb2", "pb1"} if published else {"pb2"}  # pulled newest first
    if here != expected:
        failures.append(f"after the interrupt {sorted(here)} are here, expected {sorted(expected)}")
    failures += _problems("puller")
    tmp = Path(os.environ["DISDAT_HOME"]) / "context" / "puller" / "tmp"
    if list(tmp.iterdir()):
        failures.append(f"left in tmp/: {sorted(p.name for p in tmp.iterdir())}")
    api.pull("puller", localize=True)
    if {b.name for b in api.search("puller")} != {"pb0", "pb1", "pb2"}:
        failures.append("pulling again did not complete")
    failures += _problems("puller")
    row = ledger.rows.get("Ctrl-C during a pull batch", [0, 0, ""])
    ledger.record(
        "Ctrl-C during a pull batch",
        int(row[0]) + 1,
        int(row[1]) + len(failures),
        "interrupt at the 2nd of 3 publishes: indexed bundles stay, rest abandoned; pull again completes",
    )
    assert not failures, f"{label}: {failures}"


BATCH_INTERRUPTS: list[tuple[str, Any, str, bool, bool]] = [
    # label, target, attribute, raise before (else after) the call, published at that point
    ("while the drafts get their manifests", LocalContext, "_place_manifest", False, False),
    ("after the manifests, before the index insert", BundleIndex, "insert_many", True, False),
    ("inside the index insert, before its COMMIT", index_module, "_insert", False, False),
    ("right after the index insert", BundleIndex, "insert_many", False, True),
]


@pytest.mark.parametrize(("label", "target", "attr", "before", "published"), BATCH_INTERRUPTS, ids=lambda v: v)
def test_ctrl_c_while_a_pull_batch_publishes_together(  # type: ignore[no-untyped-def]
    ledger, remote_ctx: str, bucket: str, label: str, target: Any, attr: str, before: bool, published: bool
) -> None:
    """A KeyboardInterrupt while one batch publishes its three bundles together: all three stay
    (their rows were committed) or none does, nothing is left in tmp/; pulling again completes."""
    for i in range(3):
        api.Bundle(remote_ctx, name=f"pt{i}", data=i).commit()
    api.push(remote_ctx)
    api.context("puller")
    api.remote("puller", "shared", f"s3://{bucket}/team")
    failures: list[str] = []
    try:
        with _once(target, attr, lambda original: interrupt_once(original, before)):
            api.pull("puller")
        failures.append("the interrupt never landed")
    except KeyboardInterrupt:
        pass
    here = {b.name for b in api.search("puller")}
    if here != ({"pt0", "pt1", "pt2"} if published else set()):
        failures.append(f"after the interrupt {sorted(here)} are here: a batch is published whole or not at all")
    failures += _problems("puller")
    tmp = Path(os.environ["DISDAT_HOME"]) / "context" / "puller" / "tmp"
    if list(tmp.iterdir()):
        failures.append(f"left in tmp/: {sorted(p.name for p in tmp.iterdir())}")
    api.pull("puller")
    if {b.name for b in api.search("puller")} != {"pt0", "pt1", "pt2"}:
        failures.append("pulling again did not complete")
    row = ledger.rows.get("Ctrl-C while a pull batch publishes", [0, 0, ""])
    ledger.record(
        "Ctrl-C while a pull batch publishes",
        int(row[0]) + 1,
        int(row[1]) + len(failures),
        "interrupt in publish_many (manifests, index insert): the batch is published whole or not at all",
    )
    assert not failures, f"{label}: {failures}"


# --- 9. localize against delocalize -----------------------------------------------------------------


def _file_bundle(ctx: str) -> Bundle:
    bundle = api.Bundle(ctx, name="files").open()
    paths = []
    for i in range(3):
        path = Path(bundle.get_file(f"part{i}.txt"))
        path.write_text(f"part {i}\n" * 1000)
        paths.append(str(path))
    bundle.add_data(paths)
    bundle.close().commit()
    api.push(ctx, uuid=bundle.uuid)
    return bundle


def _claims_hold(bundle: Bundle) -> list[str]:
    """A bundle without the `.remote` marker must have every file here."""
    local = Path(bundle.local_dir)
    absent = [e.path for e in bundle.files if not (local / e.path).exists()]
    if absent and not bundle.context.is_remote_only(bundle.uuid):
        return [f"{absent} missing but no .remote marker: the bundle claims its files are local"]
    return []


def _race_once(sync: RemoteSync, bundle: Bundle, first: str) -> list[str]:
    """Hold a thread running `first` at its marker step (delocalize: marker set, files not yet
    dropped; localize: files checked, marker not yet removed), run the opposite operation in a
    second thread, then let the first go on: the bundle's claim must hold."""
    entered, release = threading.Event(), threading.Event()
    pause_at = first == "delocalize"  # the marker value whose setting the held thread pauses at
    errors: list[BaseException] = []

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(self: LocalContext, uuid: str, remote_only: bool) -> None:
            held = threading.current_thread().name == "held" and remote_only == pause_at
            if held and not pause_at:
                entered.set()
                assert release.wait(30)
            original(self, uuid, remote_only)
            if held and pause_at:
                entered.set()
                assert release.wait(30)

        return wrapped

    def run(action: str) -> None:
        try:
            getattr(sync, action)(bundle)
        except BaseException as err:  # noqa: BLE001 - checked below
            errors.append(err)

    second = "localize" if first == "delocalize" else "delocalize"
    with _once(LocalContext, "set_remote_only", make):
        held = threading.Thread(target=run, args=(first,), name="held")
        held.start()
        assert entered.wait(30)
        other = threading.Thread(target=run, args=(second,), name="other")
        other.start()
        other.join(1.0)  # without a lock the other operation completes here
        release.set()
        held.join(60)
        other.join(60)
    failures = [f"{first} vs {second}: {err!r}" for err in errors]
    return failures + _claims_hold(bundle)


@pytest.mark.parametrize("first", ["delocalize", "localize"])
def test_localize_against_delocalize(ledger, remote_ctx: str, first: str) -> None:  # type: ignore[no-untyped-def]
    """One thread is held inside delocalize (marker set, files not yet dropped) or inside localize
    (files checked, marker not yet removed) while the other runs the opposite operation: the
    bundle never claims files are local that are not, and verify stays clean."""
    bundle = _file_bundle(remote_ctx)
    sync = RemoteSync(bundle.context, bundle.context.remote_settings)
    failures: list[str] = []
    rounds = 3
    for _ in range(rounds):
        if first == "localize":
            sync.delocalize(bundle)  # so the held localize has something to do
        failures += _race_once(sync, bundle, first)
        failures += _problems(remote_ctx)
        sync.localize(bundle)
        failures += _claims_hold(bundle)
    row = ledger.rows.get("localize vs delocalize of one bundle", [0, 0, ""])
    ledger.record(
        "localize vs delocalize of one bundle",
        int(row[0]) + rounds,
        int(row[1]) + len(failures),
        "each held at its marker step while the other runs: files local or marked remote, verify clean",
    )
    assert not failures, failures


def test_localize_and_delocalize_free_running(ledger, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Four threads localize and delocalize one bundle 15 times each: afterwards the bundle's
    claim holds, and a final localize brings every file back intact."""
    bundle = _file_bundle(remote_ctx)
    sync = RemoteSync(bundle.context, bundle.context.remote_settings)
    failures: list[str] = []
    lock = threading.Lock()

    def work(action: str) -> None:
        for _ in range(15):
            try:
                getattr(sync, action)(bundle)
            except BaseException as err:  # noqa: BLE001 - checked below
                with lock:
                    failures.append(f"{action}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=work, args=(a,)) for a in ("localize", "delocalize") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failures += _claims_hold(bundle)
    sync.localize(bundle)
    if [Path(p).read_text() for p in bundle.data] != [f"part {i}\n" * 1000 for i in range(3)]:
        failures.append("files do not read back after a final localize")
    failures += _problems(remote_ctx)
    ledger.record(
        "localize/delocalize free-running, 4 threads",
        60,
        len(failures),
        "60 racing calls on one bundle; claim holds; final localize reads back intact",
    )
    assert not failures, failures
