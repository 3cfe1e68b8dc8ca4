"""SIGKILL at 50 seeded random moments per operation: close, apply, push and pull never expose a
partial bundle, verify finds no damage, and running the operation again completes it."""

from __future__ import annotations

import os
from pathlib import Path

from disdat_luigi import api
from tests.reliability.crash import kill_trials

TRIALS = int(os.environ.get("DISDAT_CRASH_TRIALS", "50"))

CLOSE = """
import sys
from pathlib import Path
import pandas as pd
from disdat_luigi import api
ctx = sys.argv[1]
print("READY", flush=True)
for i in range(10**6):
    with api.Bundle(ctx, name="crash", tags={"i": str(i)}) as b:
        paths = []
        for j in range(25):
            p = b.get_file(f"part-{j}.txt")
            Path(p).write_text(f"crash {i} {j}\\n" * 200)
            paths.append(p)
        b.add_data({"files": paths, "frame": pd.DataFrame({"i": [i] * 100})})
"""

APPLY = """
import sys
from disdat_luigi import api
from tests.reliability.pipelines import Chain
print("READY", flush=True)
api.apply(sys.argv[1], Chain, params={"length": 6, "salt": int(sys.argv[2])})
"""

PUSH = """
import sys
from disdat_luigi import api
import disdat_luigi.store.remote.sync
print("READY", flush=True)
api.push(sys.argv[1], uuid=sys.argv[2])
"""

PULL = """
import sys
from disdat_luigi import api
import disdat_luigi.store.remote.sync
print("READY", flush=True)
api.pull(sys.argv[1], uuid=sys.argv[2], localize=True)
"""


def _complete(ctx: str) -> list[str]:
    """Problems with what a context shows: damage found by verify, or data that does not read back."""
    report = api.verify(ctx)
    problems = [f"verify: {p.uuid} {p.detail}" for p in report.problems]
    for bundle in api.search(ctx):
        try:
            data = bundle.data
        except Exception as err:  # noqa: BLE001 - any failure to read is what we are looking for
            problems.append(f"{bundle.name} {bundle.uuid} does not read back: {err}")
            continue
        if isinstance(data, dict) and "files" in data:
            for path in data["files"]:
                if path.startswith("s3://"):
                    continue  # metadata-only: the file is on the remote
                if not Path(path).read_text().startswith(f"{bundle.name} "):
                    problems.append(f"{bundle.uuid}: {path} has the wrong content")
    return problems


def test_crash_during_bundle_close(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Writers killed mid-close leave complete bundles or none; the next close works."""

    def check(_trial: int) -> list[str]:
        problems = _complete(ctx)
        try:
            api.Bundle(ctx, name="after", data=[1])
        except Exception as err:  # noqa: BLE001
            problems.append(f"the next close failed: {err}")
        return problems

    landed, problems = kill_trials(CLOSE, lambda _t: [ctx], TRIALS, 0.8, check, seed=11)
    ledger.record(
        "bundle close (SIGKILL)",
        TRIALS,
        len(problems),
        f"{landed} kills landed mid-write; verify + read-back + next close",
    )
    assert not problems, problems[:5]


def test_crash_during_apply(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """apply killed anywhere: only complete bundles; applying again finishes the pipeline."""
    from tests.reliability.pipelines import Chain

    def check(trial: int) -> list[str]:
        problems = _complete(ctx)
        try:
            result = api.apply(ctx, Chain, params={"length": 6, "salt": trial})
            final = api.search(ctx, "Chain", tags=None)[0]
            if not result["success"] or final.data != sum(range(6)) + trial * 6:
                problems.append(f"re-run gave {result} / {final.data}")
        except Exception as err:  # noqa: BLE001
            problems.append(f"re-running apply failed: {err}")
        return problems

    landed, problems = kill_trials(APPLY, lambda t: [ctx, str(t)], TRIALS, 0.35, check, seed=12)
    ledger.record(
        "apply (SIGKILL)", TRIALS, len(problems), f"{landed} kills landed mid-run; verify + re-apply completes"
    )
    assert not problems, problems[:5]


def _payload(ctx: str, trial: int) -> api.Bundle:
    with api.Bundle(ctx, name="payload", tags={"trial": str(trial)}) as bundle:
        paths = []
        for j in range(40):
            path = bundle.get_file(f"f{j:02d}.bin")
            Path(path).write_text(f"payload {trial} {j}\n" * 1000)
            paths.append(path)
        bundle.add_data({"files": paths})
    return bundle.commit()


def test_crash_during_push(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Pushes killed mid-way are invisible to pull; the next push completes them, verified by a pull."""
    made: dict[int, str] = {}
    api.context("observer")
    api.remote("observer", "shared", f"s3://{bucket}/team")

    def prepare(trial: int) -> None:
        made[trial] = _payload(remote_ctx, trial).uuid

    def check(trial: int) -> list[str]:
        problems = []
        uuid = made[trial]
        visible = [b.uuid for b in api.pull("observer", "payload")]
        if uuid in visible:  # the push finished before the kill: it must be complete
            problems += _complete("observer")
        api.push(remote_ctx, uuid=uuid)
        (pulled,) = api.pull("observer", uuid=uuid, localize=True)
        problems += [p for p in _complete("observer") if uuid in p]
        if len(pulled.data["files"]) != 40:
            problems.append(f"{uuid}: pulled {len(pulled.data['files'])} files")
        return problems

    landed, problems = kill_trials(PUSH, lambda t: [remote_ctx, made[t]], TRIALS, 0.6, check, seed=13, prepare=prepare)
    ledger.record(
        "push (SIGKILL)",
        TRIALS,
        len(problems),
        f"{landed} kills landed mid-push; invisible until complete; resumed push + verified pull",
    )
    assert not problems, problems[:5]


def test_crash_during_pull(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Pulls killed mid-download leave no bundle or a complete one; pulling again completes."""
    source = _payload(remote_ctx, 999)
    api.push(remote_ctx, uuid=source.uuid)

    def prepare(trial: int) -> None:
        if f"p{trial}" not in api.ls_contexts():
            api.context(f"p{trial}")
            api.remote(f"p{trial}", "shared", f"s3://{bucket}/team")

    def check(trial: int) -> list[str]:
        ctx = f"p{trial}"
        problems = _complete(ctx)
        (pulled,) = api.pull(ctx, uuid=source.uuid, localize=True)
        problems += _complete(ctx)
        if any(not Path(p).exists() for p in pulled.data["files"]):
            problems.append("files missing after the repeated pull")
        return problems

    landed, problems = kill_trials(PULL, lambda t: [f"p{t}", source.uuid], TRIALS, 0.3, check, seed=14, prepare=prepare)
    ledger.record(
        "pull -l (SIGKILL)",
        TRIALS,
        len(problems),
        f"{landed} kills landed mid-pull; no partial bundle; repeated pull completes",
    )
    assert not problems, problems[:5]
