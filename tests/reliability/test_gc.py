"""gc under fire: SIGKILL at 50 seeded moments of a local and of a remote gc leaves every bundle
whole or without a manifest; a second store's pushes racing a remote gc lose nothing published;
a `push -d` elsewhere survives; applies and readers racing a local gc read whole bundles."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.store.manifest import MANIFEST_NAME
from tests.reliability.crash import kill_trials

TRIALS = int(os.environ.get("DISDAT_CRASH_TRIALS", "50"))
PER_TRIAL = 24  # bundles made before each local kill (3 names x 8 versions)
REMOTE_PER_TRIAL = 9  # and before each remote one (3 names x 3 versions)

GC = """
import sys
from disdat_luigi import api
import disdat_luigi.store.gc, disdat_luigi.store.remote.gc
print("READY", flush=True)
api.gc(sys.argv[1], keep_last=1, remote=sys.argv[2] == "remote", dry_run=False, force=True)
"""


def _versions(ctx: str, trial: int, files: int = 4, count: int = PER_TRIAL) -> list[str]:
    made = []
    for i in range(count):
        with api.Bundle(ctx, name=f"n{trial}-{i % 3}") as bundle:
            paths = []
            for j in range(files):
                path = Path(bundle.get_file(f"f{j}.bin"))
                path.write_bytes(f"{trial} {i} {j}\n".encode() * 300)
                paths.append(str(path))
            bundle.add_data(paths)
        made.append(bundle.commit().uuid)
    return made


def _local_problems(ctx: str, made: list[str]) -> list[str]:
    """After the kill and a verify: a listed bundle verifies and reads back; one that is not
    listed has no manifest left; the newest of each name is still there."""
    report = api.verify(ctx)
    problems = [f"verify: {p.uuid} {p.detail}" for p in report.problems]
    listed = {b.uuid: b for b in api.search(ctx)}
    objects = Path(os.environ["DISDAT_HOME"]) / "context" / ctx / "objects"
    for uuid in made:
        if uuid in listed:
            data = listed[uuid].data
            if not all(Path(p).read_bytes().endswith(b"\n") for p in data):
                problems.append(f"{uuid} does not read back")
        elif (objects / uuid / MANIFEST_NAME).exists():
            problems.append(f"{uuid} is not listed but its manifest is still there")
    for newest in made[-3:]:
        if newest not in listed:
            problems.append(f"the newest bundle {newest} of its name was reclaimed")
    return problems


@pytest.mark.timeout(1200)  # 50 child processes; a busy shared machine can take minutes
def test_sigkill_during_local_gc(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A local gc killed anywhere: each bundle whole (verifies, reads back) or gone with its
    manifest; gc run again completes the plan."""
    made: dict[int, list[str]] = {}

    def prepare(trial: int) -> None:
        made[trial] = _versions(ctx, trial)

    def check(trial: int) -> list[str]:
        problems = _local_problems(ctx, made[trial])
        api.gc(ctx, keep_last=1, dry_run=False, force=True)
        left = {b.uuid for b in api.search(ctx)} & set(made[trial])
        if left != set(made[trial][-3:]):
            problems.append(f"gc run again left {len(left)} bundles of the trial, not 3")
        return problems + _local_problems(ctx, made[trial])

    landed, problems = kill_trials(GC, lambda _t: [ctx, "local"], TRIALS, 0.25, check, seed=31, prepare=prepare)
    ledger.record(
        "local gc (SIGKILL)",
        TRIALS,
        len(problems),
        f"{landed} kills landed mid-gc; kept bundles verify and read back, removed ones leave no manifest",
    )
    assert not problems, problems[:5]


def _remote_state(bucket: str) -> tuple[dict[str, dict[str, int]], set[str]]:
    """uuid -> {relative key: size} of every object below objects/, and uuids with a catalog entry."""
    s3 = boto3.client("s3")
    objects: dict[str, dict[str, int]] = {}
    catalog: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="team/context/shared/"):
        for item in page.get("Contents", []):
            rest = item["Key"][len("team/context/shared/") :]
            kind, _, tail = rest.partition("/")
            if kind == "objects":
                uuid, _, rel = tail.partition("/")
                objects.setdefault(uuid, {})[rel] = item["Size"]
            elif kind == "catalog":
                catalog.add(tail.rpartition("/")[2])
    return objects, catalog


def _remote_problems(bucket: str, made: list[str]) -> list[str]:
    """Every bundle with a manifest on the remote has all its files with their sizes; a catalog
    entry never outlives its manifest."""
    s3 = boto3.client("s3")
    objects, catalog = _remote_state(bucket)
    problems = []
    for uuid in made:
        listed = objects.get(uuid, {})
        if MANIFEST_NAME not in listed:
            if uuid in catalog:
                problems.append(f"{uuid}: catalog entry without a manifest")
            continue
        body = s3.get_object(Bucket=bucket, Key=f"team/context/shared/objects/{uuid}/{MANIFEST_NAME}")["Body"]
        manifest = json.loads(body.read())
        for entry in manifest["files"]:
            if listed.get(entry["path"]) != entry["size"]:
                problems.append(f"{uuid}: manifest kept but {entry['path']} is missing or cut")
    return problems


@pytest.mark.timeout(1200)  # 50 child processes; a busy shared machine can take minutes
def test_sigkill_during_remote_gc(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A remote gc killed anywhere: each bundle whole or without a manifest (manifests and
    catalog first, files after); gc run again completes the plan; kept bundles pull and verify."""
    made: dict[int, list[str]] = {}
    api.context("observer")
    api.remote("observer", "shared", f"s3://{bucket}/team")

    def prepare(trial: int) -> None:
        made[trial] = _versions(remote_ctx, trial, files=1, count=REMOTE_PER_TRIAL)
        api.push(remote_ctx)

    def check(trial: int) -> list[str]:
        problems = _remote_problems(bucket, made[trial])
        api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False, force=True)
        objects, _ = _remote_state(bucket)
        kept = {u for u in made[trial] if MANIFEST_NAME in objects.get(u, {})}
        if kept != set(made[trial][-3:]):
            problems.append(f"gc run again left {len(kept)} bundles of the trial on the remote, not 3")
        if trial % 10 == 9:  # now and then a pull of what is kept, every file checked against its sha256
            for uuid in sorted(kept):
                (pulled,) = api.pull("observer", uuid=uuid, localize=True)
                if not Path(pulled.data[0]).read_bytes():
                    problems.append(f"{uuid}: pulled an empty file")
        return problems + _remote_problems(bucket, made[trial])

    landed, problems = kill_trials(GC, lambda _t: [remote_ctx, "remote"], TRIALS, 0.15, check, seed=32, prepare=prepare)
    ledger.record(
        "remote gc (SIGKILL)",
        TRIALS,
        len(problems),
        f"{landed} kills landed mid-gc; manifests whole or gone, no stray catalog entry; kept ones pull verified",
    )
    assert not problems, problems[:5]


def test_push_from_a_second_store_racing_remote_gc(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """100 rounds: a second store pushes a new version (files and all) while the first runs a
    remote gc keeping 1 per recipe. Every bundle the push published is whole, and the newest is
    there after the round; pulling it verifies every file."""
    api.context("second")
    api.remote("second", "shared", f"s3://{bucket}/team")
    rounds, failures = 100, []
    for round_ in range(rounds):
        with api.Bundle("second", name="raced") as bundle:
            paths = []
            for j in range(3):
                path = Path(bundle.get_file(f"f{j}.bin"))
                path.write_bytes(f"round {round_} {j}\n".encode() * 2000)
                paths.append(str(path))
            bundle.add_data(paths)
        bundle.commit()
        errors: list[BaseException] = []
        pusher = threading.Thread(target=_push, args=("second", bundle.uuid, errors))
        pusher.start()
        api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
        pusher.join(60)
        failures += [f"round {round_}: push failed: {err!r}" for err in errors]
        failures += [f"round {round_}: {p}" for p in _remote_problems(bucket, [bundle.uuid])]
        objects, catalog = _remote_state(bucket)
        if MANIFEST_NAME not in objects.get(bundle.uuid, {}) or bundle.uuid not in catalog:
            failures.append(f"round {round_}: the pushed bundle {bundle.uuid} is gone")
    api.context("checker")
    api.remote("checker", "shared", f"s3://{bucket}/team")
    newest = api.pull("checker", "raced", localize=True)
    if not newest or Path(newest[0].data[0]).read_bytes() != f"round {rounds - 1} 0\n".encode() * 2000:
        failures.append("the last pushed version does not pull back intact")
    ledger.record(
        "push racing a remote gc",
        rounds,
        len(failures),
        "a second store pushes while gc runs: every published bundle whole, the newest kept, pull verifies",
    )
    assert not failures, failures[:5]


def test_push_d_of_a_second_store_survives_remote_gc(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A second store pushes with -d (its only copy is now the remote); ten remote gc runs from the
    first store, with newer versions arriving, keep it; the second store still reads its files."""
    api.context("laptop")
    api.remote("laptop", "shared", f"s3://{bucket}/team")
    with api.Bundle("laptop", name="held") as bundle:
        path = Path(bundle.get_file("only.bin"))
        path.write_bytes(b"only copy\n" * 1000)
        bundle.add_data(str(path))
    api.push("laptop", uuid=bundle.commit().uuid, delocalize=True)
    failures = []
    for round_ in range(10):
        api.Bundle(remote_ctx, name="held", data=round_).commit()
        api.push(remote_ctx)
        result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
        if bundle.uuid in result.reclaimed:
            failures.append(f"round {round_}: the held bundle was reclaimed")
    api.pull("laptop", uuid=bundle.uuid, localize=True)
    if Path(api.get("laptop", None, uuid=bundle.uuid).data).read_bytes() != b"only copy\n" * 1000:
        failures.append("the held bundle does not read back")
    ledger.record("push -d elsewhere vs remote gc", 10, len(failures), "held bundle kept by 10 gc runs, reads back")
    assert not failures, failures


def _push(ctx: str, uuid: str, errors: list[BaseException]) -> None:
    try:
        api.push(ctx, uuid=uuid)
    except BaseException as err:  # noqa: BLE001 - the caller checks
        errors.append(err)


APPLIES = """
import sys
from disdat_luigi import api
from tests.reliability.pipelines import Chain
for i in range(int(sys.argv[2])):
    result = api.apply(sys.argv[1], Chain, params={"length": 4, "salt": 7}, force_all=i % 2 == 0)
    assert result["success"], result
    assert api.cat(sys.argv[1], "Chain") == sum(range(4)) + 7 * 4
print("DONE", flush=True)
"""


def test_apply_racing_local_gc(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """An apply process re-runs and reuses a pipeline while this one runs local gc over and over:
    every apply succeeds with the right result, and the store verifies and reads back."""
    applies = 8
    child = subprocess.Popen(
        [sys.executable, "-c", APPLIES, ctx, str(applies)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    runs = reclaimed = 0
    while child.poll() is None:
        reclaimed += len(api.gc(ctx, keep_last=1, dry_run=False, force=True).reclaimed)
        runs += 1
    out, err = child.communicate()
    failures = [] if "DONE" in out else [f"the applies failed: {err[-800:]}"]
    report = api.verify(ctx)
    failures += [f"verify: {p.uuid} {p.detail}" for p in report.problems]
    for bundle in api.search(ctx):
        try:
            bundle.data  # noqa: B018 - reading is the check
        except Exception as error:  # noqa: BLE001
            failures.append(f"{bundle.name} {bundle.uuid} does not read back: {error}")
    ledger.record(
        "apply racing local gc",
        applies,
        len(failures),
        f"{runs} gc runs reclaimed {reclaimed} bundles during {applies} applies; all succeed, verify clean",
    )
    assert not failures, failures[:5]


def test_reader_holds_off_gc(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A reader inside a bundle (shared lock) makes gc wait for it; once it is done gc removes the
    bundle, and a reader arriving after that is told it is gone."""
    from disdat_luigi.errors import BundleNotFound
    from disdat_luigi.store.store import LocalStore

    old = api.Bundle(ctx, name="read", data=b"r" * 1000)
    api.Bundle(ctx, name="read", data=b"new")
    context = LocalStore(Path(os.environ["DISDAT_HOME"])).context(ctx)
    entered, release = threading.Event(), threading.Event()
    failures: list[str] = []

    def reader() -> None:
        with context.reading(old.uuid):
            entered.set()
            release.wait(30)
            if (context.bundle_dir(old.uuid) / MANIFEST_NAME).read_bytes() == b"":
                failures.append("the manifest went while the reader was inside")

    thread = threading.Thread(target=reader)
    thread.start()
    assert entered.wait(30)
    collector = threading.Thread(target=lambda: api.gc(ctx, keep_last=1, dry_run=False, force=True))
    collector.start()
    collector.join(1.0)
    if not collector.is_alive():
        failures.append("gc did not wait for the reader")
    release.set()
    thread.join(30)
    collector.join(30)
    if api.get(ctx, None, uuid=old.uuid) is not None:
        failures.append("gc did not remove the bundle after the reader left")
    try:
        old.data  # noqa: B018
        failures.append("a reader after gc read a removed bundle")
    except BundleNotFound:
        pass
    ledger.record("reader vs local gc", 1, len(failures), "gc waits for a reader's shared lock; late reader told")
    assert not failures, failures


def test_resumed_push_keeps_its_old_files_from_gc(ledger, remote_ctx: str, bucket: str, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """A push dies after its files and before its manifest; once its files are past the grace
    period gc would delete them, but the push resumed now writes a fresh intent, and a gc run while
    it is about to write its manifest keeps them: the bundle is published whole."""
    from disdat_luigi.store.remote.sync import RemoteSync

    with api.Bundle(remote_ctx, name="resumed") as bundle:
        paths = []
        for j in range(3):
            path = Path(bundle.get_file(f"f{j}.bin"))
            path.write_bytes(f"resumed {j}\n".encode() * 1000)
            paths.append(str(path))
        bundle.add_data(paths)
    bundle.commit()
    original = RemoteSync._publish_manifest
    entered, release = threading.Event(), threading.Event()
    failures: list[str] = []

    def dies(self: RemoteSync, pushed: object) -> None:
        raise KeyboardInterrupt  # the first push stops right before its manifest

    def waits(self: RemoteSync, pushed: object) -> None:
        entered.set()
        assert release.wait(30)
        original(self, pushed)  # type: ignore[arg-type]

    config = disdat_env / "config" / "disdat.cfg"
    head, _, tail = config.read_text().partition("[gc]\n")
    config.write_text(f"{head}[gc]\ngrace_hours = 0.001\n{tail[tail.find(chr(10) + '[') :]}")  # 3.6 seconds
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RemoteSync, "_publish_manifest", dies)
        with contextlib.suppress(KeyboardInterrupt):
            api.push(remote_ctx, uuid=bundle.uuid)
        time.sleep(4.5)  # the files (and the dead push's intent) are past the grace period now
        stale = api.gc(remote_ctx, remote=True).orphans
        if stale != 3:  # its 3 files (an interrupted push removes its intent on the way out)
            failures.append(f"the dead push's 3 files are not seen as past the grace period ({stale})")
        patch.setattr(RemoteSync, "_publish_manifest", waits)
        errors: list[BaseException] = []
        pusher = threading.Thread(target=_push, args=(remote_ctx, bundle.uuid, errors))
        pusher.start()
        try:
            assert entered.wait(30)
            result = api.gc(remote_ctx, remote=True, dry_run=False)
            if result.orphans:
                failures.append(f"gc deleted {result.orphans} file(s) of the resumed push")
        finally:
            release.set()
            pusher.join(30)
        failures += [f"the resumed push failed: {err!r}" for err in errors]
    failures += _remote_problems(bucket, [bundle.uuid])
    api.context("reader")
    api.remote("reader", "shared", f"s3://{bucket}/team")
    (pulled,) = api.pull("reader", uuid=bundle.uuid, localize=True)
    if [Path(p).read_bytes() for p in pulled.data] != [f"resumed {j}\n".encode() * 1000 for j in range(3)]:
        failures.append("the resumed push's bundle does not pull back intact")
    ledger.record(
        "resumed push vs remote gc",
        1,
        len(failures),
        "files past the grace period kept by the resumed push's fresh intent; published whole",
    )
    assert not failures, failures
