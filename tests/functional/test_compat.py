"""Disdat compatibility: programs written against Disdat's API run unchanged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.errors import ApplyError, BundleStateError


def test_bundle_attributes_are_assignable_while_open(ctx: str) -> None:
    """As in Disdat, `b.name = ...` (and processing_name, owner) works inside the `with` block
    and is refused once the bundle is closed."""
    with api.Bundle(ctx) as bundle:
        bundle.name = "output"
        bundle.processing_name = "made_by_hand"
        bundle.owner = "alice"
        assert bundle.name == "output"
        bundle.add_data([1, 2])
    found = api.get(ctx, "output")
    assert found is not None and found.data == [1, 2]
    assert (found.processing_name, found.owner) == ("made_by_hand", "alice")
    with pytest.raises(BundleStateError, match="immutable"):
        bundle.name = "renamed"


def test_delete_context_deletes_with_uncommitted_bundles(ctx: str, caplog: pytest.LogCaptureFixture, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`api.delete_context` deletes like Disdat, warning how many uncommitted bundles went; the
    CLI keeps its safety and asks for -f."""
    api.Bundle(ctx, name="x", data=1)
    api.Bundle(ctx, name="y", data=2)
    api.context("other")
    api.Bundle("other", name="z", data=3)
    refused = dsdt("context", "-d", "other")
    assert refused.code == 1 and "1 uncommitted bundle(s)" in refused.err and "-f" in refused.err
    assert "other" in api.ls_contexts()
    with caplog.at_level("WARNING"):
        api.delete_context(ctx)
    assert ctx not in api.ls_contexts()
    assert "2 uncommitted bundle(s)" in caplog.text
    assert dsdt("context", "-d", "-f", "other").code == 0 and api.ls_contexts() == []


def test_exception_in_pipe_requires_is_a_failed_apply(ctx: str) -> None:
    """An assert in pipe_requires fails the apply with ApplyError naming the task; nothing is made
    and the external task is not run to satisfy the lookup."""
    with pytest.raises(ApplyError, match=r"AssertsInRequires\(\): pipe_requires raised AssertionError") as caught:
        api.apply(ctx, "tests.functional.pipelines.AssertsInRequires")
    assert caught.value.result == {"success": False, "did_work": False}
    assert api.search(ctx) == []


def test_task_params_are_luigi_strings(ctx: str) -> None:
    """As in Disdat, a task bundle's params are luigi's serialized strings: `Cls.param.parse`
    gives every value back; the Python values are under `typed_params`."""
    from tests.functional import pipelines as p

    api.apply(ctx, p.Typed, params={"count": 3, "day": dt.date(2021, 2, 3), "items": [1, 2], "mapping": {"k": "v"}})
    bundle = api.get(ctx, "Typed")
    assert bundle is not None
    assert all(isinstance(v, str) for v in bundle.params.values())
    for name, value in (("count", 3), ("day", dt.date(2021, 2, 3)), ("ratio", 0.5), ("flag", False)):
        assert getattr(p.Typed, name).parse(bundle.params[name]) == value
    assert list(p.Typed.items.parse(bundle.params["items"])) == [1, 2]
    assert dict(p.Typed.mapping.parse(bundle.params["mapping"])) == {"k": "v"}
    assert bundle.typed_params["day"] == dt.date(2021, 2, 3) and bundle.typed_params["items"] == (1, 2)


@pytest.mark.parametrize("workers", [1, 3])
def test_yield_dependency_returns_the_task(ctx: str, workers: int) -> None:
    """`t = self.yield_dependency(...); yield t; t.pipe_output` works for one task, a list, a
    task that itself yields, next to static dependencies, with one worker or several."""
    from tests.functional import pipelines as p

    assert api.apply(ctx, p.YieldsTasks, workers=workers) == {"success": True, "did_work": True}
    assert api.get(ctx, "YieldsTasks").data == {"base": 2, "one": 3, "many": 9, "inner": [0]}
    assert api.apply(ctx, p.YieldsTasks, workers=workers)["did_work"] is False


def test_managed_paths_stay_valid_after_close(ctx: str) -> None:
    """Disdat hands out the bundle's final paths: a file written at get_file's path, added as
    data, can be read back at that same path after the with block."""
    with api.Bundle(ctx, name="files") as bundle:
        path = bundle.get_file("model.txt")
        directory = bundle.get_directory("parts")
        with open(path, "w") as handle:
            handle.write("weights")
        (Path(directory) / "p0").write_text("part")
        bundle.add_data({"model": path, "parts": directory})
    with open(path) as handle:
        assert handle.read() == "weights"
    assert (Path(directory) / "p0").read_text() == "part"
    assert api.get(ctx, "files").data == {"model": path, "parts": directory}


@pytest.mark.parametrize(("inner", "outer"), [(1, 1), (3, 1), (1, 3), (3, 3)])
def test_nested_apply_with_several_workers(ctx: str, inner: int, outer: int) -> None:
    """A pipe_run that calls api.apply(..., workers=3) inside an apply with several workers
    finishes with the right result (luigi's fork lock no longer follows a task into its process)."""
    from tests.functional import pipelines as p

    result = api.apply(ctx, p.NestedWorkers, params={"context_name": ctx, "inner_workers": inner}, workers=outer)
    assert result == {"success": True, "did_work": True}
    assert api.get(ctx, "NestedWorkers").data == {
        "inner": {"success": True, "did_work": True},
        "data": [0, 1, 2, 3],
    }


def test_incremental_pull_localizes_reused_inputs(remote_ctx: str, bucket: str) -> None:
    """Bundles pulled as metadata only: a task that must run gets the files of the upstream
    bundles it reuses downloaded first; what it did not need stays remote; nothing is re-made."""
    from tests.functional import pipelines as p

    api.apply(remote_ctx, p.Files, incremental_push=True)
    api.apply(remote_ctx, p.Double, incremental_push=True)
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    api.pull("fresh")  # metadata only
    files = api.get("fresh", "Files")
    unrelated = api.get("fresh", "Double")
    assert files is not None and unrelated is not None
    assert files.data["one"].startswith("s3://")
    assert api.apply("fresh", p.ReadsFiles, incremental_pull=True) == {"success": True, "did_work": True}
    assert api.get("fresh", "ReadsFiles").data == "oneb"
    reused = api.get("fresh", "Files")
    assert reused.uuid == files.uuid and Path(reused.data["one"]).read_text() == "one"
    assert Path(reused.data["many"]["b"]).exists()
    assert len(api.search("fresh", "Files")) == 1
    made = api.get("fresh", "ReadsFiles")
    assert not made.data.startswith("s3://") and Path(made.local_dir).is_dir()
    assert api.get("fresh", "Double").uuid == unrelated.uuid
    assert unrelated.context.is_remote_only(unrelated.uuid) or not unrelated.files
    # a context that never pulled: incremental_pull finds the inputs on the remote, then localizes them
    api.context("fresh2")
    api.remote("fresh2", "shared", f"s3://{bucket}/team")
    assert api.apply("fresh2", p.ReadsFiles, incremental_pull=True)["did_work"] is True
    assert api.get("fresh2", "Files").uuid == files.uuid and api.get("fresh2", "ReadsFiles").data == "oneb"
    assert Path(api.get("fresh2", "Files").data["one"]).read_text() == "one"


def test_managed_remote_outputs_need_incremental_push(remote_ctx: str) -> None:
    """create_remote_output_file without incremental push fails the apply, saying to use it, and
    leaves no bundle; with it, the bundle accounts for the S3 object."""
    from tests.functional import pipelines as p

    with pytest.raises(ApplyError, match="incremental push") as caught:
        api.apply(remote_ctx, p.RemoteOutput)
    assert caught.value.result["success"] is False and api.search(remote_ctx) == []
    assert api.apply(remote_ctx, p.RemoteOutput, incremental_push=True)["success"] is True
    bundle = api.get(remote_ctx, "RemoteOutput")
    assert bundle.data.startswith("s3://") and [f.path for f in bundle.files] == ["data/model.txt"]
    assert Path(bundle.localize(bundle.data)).read_text() == "remote weights"


def test_s3_files_are_copied_in_without_a_remote(ctx: str, bucket: str) -> None:
    """In a context with no remote, an s3:// file or directory in a bundle's data is downloaded
    into the bundle (Disdat's copy-in), from a Bundle and from a PipeTask's return value."""
    import boto3

    from tests.functional import pipelines as p

    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="in/model.bin", Body=b"weights")
    client.put_object(Bucket=bucket, Key="in/dir/a.txt", Body=b"a")
    client.put_object(Bucket=bucket, Key="in/dir/sub/b.txt", Body=b"b")
    bundle = api.Bundle(ctx, name="copied", data=[f"s3://{bucket}/in/model.bin", f"s3://{bucket}/in/dir"])
    model, directory = bundle.data
    assert Path(model).read_bytes() == b"weights" and model.startswith(bundle.local_dir)
    assert (Path(directory) / "sub" / "b.txt").read_bytes() == b"b"
    assert sorted(f.path for f in bundle.files) == ["data/dir/a.txt", "data/dir/sub/b.txt", "data/model.bin"]
    api.apply(ctx, p.ReturnsS3Path, params={"url": f"s3://{bucket}/in/model.bin"})
    assert Path(api.get(ctx, "ReturnsS3Path").data["model"]).read_bytes() == b"weights"


def test_the_rest_of_disdats_surface(ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disdat's search by date strings, set_aws_profile, is_presentable and the PipeTask helpers
    processing_id, human_id, input_bundles and mark_transient(push_meta=...) work as there."""
    from tests.functional import pipelines as p

    bundle = api.Bundle(ctx, name="dated", data=1)
    assert bundle.is_presentable
    assert [b.uuid for b in api.search(ctx, "dated", after="01-01-2000")] == [bundle.uuid]
    assert api.search(ctx, "dated", before="01-01-2000 00:00:00") == []
    assert [b.uuid for b in api.search(ctx, "dated", after="2000-01-01")] == [bundle.uuid]
    monkeypatch.setenv("AWS_PROFILE", "placeholder")  # so the variable is put back as it was afterwards
    api.set_aws_profile("research")
    import os

    assert os.environ["AWS_PROFILE"] == "research"
    api.apply(ctx, p.DisdatHelpers)
    made = api.get(ctx, "DisdatHelpers")
    assert made.data["inputs"] == {"nums": "Source"} and made.data["human_id"] == "DisdatHelpers"
    assert made.data["processing_id"] == made.processing_name
