"""What `dsdt run` and `dsdt apply` share on the host: the same input option, clear errors for a
misplaced pipeline_input, and external dependencies found on the remote (as inside a run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.errors import ApplyError
from tests.functional import pipelines as p


def test_apply_takes_the_input_like_run(ctx: str, dsdt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`dsdt apply -i NAME [-it k:v]` gives the root its pipeline_input as `dsdt run INPUT` does;
    lineage records the input edge on the root only."""
    source = tmp_path / "in.txt"
    source.write_text("x")
    api.Bundle(ctx, name="raw", data=[1, 2], tags={"v": "1"})
    api.Bundle(ctx, name="raw", data=[3], tags={"v": "2"})
    made = dsdt("apply", "-i", "raw", "-it", "v:1", "tests.functional.pipelines.WithInput")
    assert made.code == 0, made.err
    bundle = api.get(ctx, "WithInput")
    assert bundle.data == {"got": [1, 2]}
    assert [d.arg_name for d in bundle.dependencies] == ["pipeline_input"]
    assert api.apply(ctx, p.WithInput, input_bundle="raw", force=True)["success"]
    assert api.get(ctx, "WithInput").data == {"got": [3]}
    missing = dsdt("apply", "-i", "nothing", "tests.functional.pipelines.WithInput")
    assert missing.code == 1 and "no bundle named 'nothing'" in missing.err


def test_misplaced_pipeline_input_is_a_clear_error(ctx: str) -> None:
    """A task that requires pipeline_input but does not get it fails with a sentence, not a TypeError."""
    api.Bundle(ctx, name="raw", data=1)
    with pytest.raises(ApplyError, match="only the root task of a run receives it"):
        api.apply(ctx, p.NeedsInputDeep, input_bundle="raw")
    with pytest.raises(ApplyError, match="this run was given no input bundle"):
        api.apply(ctx, p.WithInput)


def test_external_dependencies_are_found_on_the_remote(remote_ctx: str, bucket: str) -> None:
    """With incremental pull (as inside `dsdt run`), an external dependency by name, by uuid or by
    class that only the remote holds is found there."""
    by_name = api.Bundle(remote_ctx, name="reference", data=[5, 6]).commit()
    api.push(remote_ctx, "reference")
    api.apply(remote_ctx, p.Source, params={"n": 4}, incremental_push=True)
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    api.apply("fresh", p.ExternalByName, params={"source_name": "reference"}, incremental_pull=True)
    assert api.get("fresh", "ExternalByName").data == [5, 6]
    api.context("fresh2")
    api.remote("fresh2", "shared", f"s3://{bucket}/team")
    api.apply("fresh2", p.ExternalByUuid, params={"source_uuid": by_name.uuid}, incremental_pull=True)
    assert api.get("fresh2", "ExternalByUuid").data == [5, 6]
    api.apply("fresh2", p.ExternalByClass, incremental_pull=True)
    assert api.get("fresh2", "ExternalByClass").data == sum(range(4))
    with pytest.raises(ApplyError, match="no bundle named 'absent'"):
        api.apply("fresh2", p.ExternalByName, params={"source_name": "absent"}, incremental_pull=True)
