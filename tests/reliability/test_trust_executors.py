"""What a writer of the shared bucket (or a transient bundle) can do to an apply with executors:
remote tasks run as child processes of the real entry point (tests/functional/test_executors.py)."""

from __future__ import annotations

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.errors import ApplyError, PipelineError
from tests.functional import pipelines as p
from tests.functional.test_executors import ProcessExecutor, farm  # noqa: F401
from tests.planting import manifest_doc, plant

TRIALS = 3


def test_planted_output_uuids(farm, remote_ctx: str, bucket: str, ledger, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Each trial plants a manifest under the uuid the host fixed for a queued Fit: the job fails
    naming it, and the next apply gives the Fit a fresh uuid and succeeds."""
    failures = 0
    start = ProcessExecutor.start
    for trial in range(TRIALS):
        planted: list[str] = []

        def start_after_planting(self, tasks, started, planted=planted):  # type: ignore[no-untyped-def]
            for task in tasks:
                if not planted:
                    planted.append(task.output_uuid)
                    plant(bucket, manifest_doc("HybridFit", task.output_uuid, processing_name="x"))
            start(self, tasks, started)

        monkeypatch.setattr(ProcessExecutor, "start", start_after_planting)
        try:
            farm(params={"alphas": 1, "rows": 10 + trial})
            failures += 1  # the job must not succeed on a planted uuid
        except ApplyError as err:
            failures += int(not planted or planted[0] not in f"{err} {err.hint}")
        monkeypatch.setattr(ProcessExecutor, "start", start)
        again = farm(params={"alphas": 1, "rows": 10 + trial})
        fit = next(d.uuid for d in api.get(remote_ctx, None, uuid=again.root_uuid).dependencies)  # type: ignore[union-attr]
        failures += int(fit == planted[0])
    ledger.record(
        "planted output uuid of a queued job",
        TRIALS,
        failures,
        "the job fails naming the planted uuid (UuidConflict); the next apply uses a fresh uuid and succeeds",
    )
    assert failures == 0


def test_transient_bundles_stay_here(farm, bucket: str, ledger) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A transient task on an executor, and a remote task reading a transient one: refused before
    any job, and nothing reaches the bucket."""
    failures = 0
    cases = {
        "Transient": r"Transient\(\) is transient \(mark_transient\) but runs on an executor",
        "UsesTransient": r"UsesTransient\(\) runs on an executor and reads t from Transient\(\)",
    }
    for cls, says in cases.items():
        with pytest.raises(PipelineError, match=says):
            farm(transform=p.UsesTransient, executors={cls: "farm"})
    failures += int(ProcessExecutor.launched != [])
    failures += int(boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="team/")["KeyCount"] != 0)
    assert farm(transform=p.UsesTransient, executors={"Transient": "here"}).success  # a local section is fine
    ledger.record(
        "transient bundles and executors",
        len(cases),
        failures,
        "PipelineError naming both tasks before any job; nothing pushed",
    )
    assert failures == 0
