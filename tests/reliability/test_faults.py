"""S3 faults through a fault-injecting proxy: transfers retry and succeed, or fail clearly with
nothing partial left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.errors import TransferError
from tests.reliability.faultproxy import FaultProxy


def _bundle(ctx: str, name: str, files: int = 60) -> api.Bundle:
    with api.Bundle(ctx, name=name) as bundle:
        paths = []
        for j in range(files):
            path = bundle.get_file(f"f{j:03d}.txt")
            Path(path).write_text(f"{name} {j}\n" * 2000)
            paths.append(path)
        bundle.add_data(paths)
    return bundle.commit()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_push_and_pull_through_faults(
    ledger, remote_ctx: str, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:  # type: ignore[no-untyped-def]
    """With 25% of requests failing (500, 503, resets, slow answers) push and pull still complete exactly."""
    bundle = _bundle(remote_ctx, f"faulty{seed}")
    with FaultProxy(moto_endpoint, fault_rate=0.25, seed=seed) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        api.push(remote_ctx, uuid=bundle.uuid)
        api.context("other")
        api.remote("other", "shared", f"s3://{bucket}/team")
        (pulled,) = api.pull("other", uuid=bundle.uuid, localize=True)
        injected = sum(v for k, v in proxy.counts.items() if k != "forwarded")
    failures = (
        0
        if api.verify("other").ok
        and [Path(p).read_text() for p in pulled.data] == [Path(p).read_text() for p in bundle.data]
        else 1
    )
    row = ledger.rows.get("push+pull through S3 faults (25%)", [0, 0, ""])
    ledger.record(
        "push+pull through S3 faults (25%)", int(row[0]) + 1, int(row[1]) + failures,
        f"3 seeds, 60 files each; {injected} faults injected in the last; byte-exact after pull",
    )  # fmt: skip
    assert injected > 10 and failures == 0


def test_unrecoverable_faults_fail_clearly_and_leave_nothing(
    ledger, remote_ctx: str, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """When the server fails every request, push and pull raise TransferError and publish nothing."""
    bundle = _bundle(remote_ctx, "doomed", files=5)
    with FaultProxy(moto_endpoint, fault_rate=1.0, seed=9, delay=0.0) as proxy:
        proxy.choose = lambda: "503"  # type: ignore[method-assign]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(TransferError):
            api.push(remote_ctx, uuid=bundle.uuid)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    api.context("other")
    api.remote("other", "shared", f"s3://{bucket}/team")
    visible = api.pull("other")
    api.push(remote_ctx, uuid=bundle.uuid)
    with FaultProxy(moto_endpoint, fault_rate=1.0, seed=9, delay=0.0) as proxy:
        proxy.choose = lambda: "reset"  # type: ignore[method-assign]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(TransferError):
            api.pull("other", uuid=bundle.uuid, localize=True)
    failures = int(bool(visible)) + int(bool(api.search("other"))) + int(not api.verify("other").ok)
    ledger.record(
        "S3 down (100% faults)", 2, failures, "push and pull raise TransferError; nothing visible locally or remotely"
    )
    assert failures == 0
