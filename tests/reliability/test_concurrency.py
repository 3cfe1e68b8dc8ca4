"""Concurrent writers: overlapping applies into one context, two contexts pushing to one remote."""

from __future__ import annotations

import subprocess
import sys

from disdat_luigi import api

APPLY = """
import sys
from disdat_luigi import api
from tests.functional import pipelines as p
cls = {"fan": p.FanIn, "double": p.Double}[sys.argv[2]]
params = {"width": 8} if sys.argv[2] == "fan" else {"n": 3}
for _ in range(3):
    assert api.apply(sys.argv[1], cls, params=params)["success"]
"""

PUSH = """
import sys
from disdat_luigi import api
api.push(sys.argv[1])
"""


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_overlapping_applies_into_one_context(ledger, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Four processes apply two pipelines sharing upstream tasks into one context at once."""
    procs = [_spawn(APPLY, ctx, kind) for kind in ("fan", "double", "fan", "double")]
    failures = []
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(err[-500:])
    report = api.verify(ctx)
    failures += [f"{p.uuid}: {p.detail}" for p in report.problems]
    if api.get(ctx, "FanIn").data != list(range(8)) or api.get(ctx, "Double").data["doubled"] != [0, 2, 4]:
        failures.append("wrong results")
    ledger.record(
        "overlapping applies, 4 processes, 1 context", 4, len(failures), "all succeed; verify clean; results right"
    )
    assert not failures, failures


def test_two_contexts_push_to_one_remote(ledger, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Two contexts push (some bundles in common) to the same remote at the same time."""
    api.context("second")
    api.remote("second", "shared", f"s3://{bucket}/team")
    shared = api.Bundle(remote_ctx, name="common", data=list(range(100))).commit()
    api.push(remote_ctx, uuid=shared.uuid)
    api.pull("second", uuid=shared.uuid, localize=True)
    api.rmr(remote_ctx, uuid=shared.uuid)
    for ctx in (remote_ctx, "second"):
        for i in range(15):
            api.Bundle(ctx, name=f"{ctx}_{i}", data={"i": i, "blob": b"x" * 20_000}).commit()
    procs = [_spawn(PUSH, ctx) for ctx in (remote_ctx, "second")]
    failures = [p.communicate(timeout=300)[1][-500:] for p in procs if p.wait() != 0]
    api.context("reader")
    api.remote("reader", "shared", f"s3://{bucket}/team")
    pulled = api.pull("reader", localize=True)
    if len(pulled) != 31:
        failures.append(f"{len(pulled)} bundles on the remote, expected 31")
    failures += [f"{p.uuid}: {p.detail}" for p in api.verify("reader").problems]
    ledger.record(
        "two contexts pushing to one remote",
        2,
        len(failures),
        "31 bundles, one shared; all complete after a verified pull",
    )
    assert not failures, failures
