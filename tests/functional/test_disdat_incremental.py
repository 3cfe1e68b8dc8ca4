"""Disdat's incremental pull and push (its test_inc_pull / test_inc_push), as a user sees them:
where the data lives after apply, what is committed, what is said."""

from __future__ import annotations

import logging
from pathlib import Path

import boto3
import luigi
import pytest

from disdat_luigi import api
from disdat_luigi.pipe import PipeTask


class AInc(PipeTask):
    def pipe_requires(self):
        self.set_bundle_name("a")

    def pipe_run(self):
        target = self.create_output_file("a.txt")
        with target.open("w") as output:
            output.write("Hi!")
        return {"file": [target.path]}


class BInc(PipeTask):
    n = luigi.IntParameter()

    def pipe_requires(self):
        self.set_bundle_name("b")
        self.add_dependency("a", AInc, params={})

    def pipe_run(self, a):
        with open(a["file"][0]) as f:  # a local path, or this fails
            greeting = f.read()
        target = self.create_output_file("b.txt")
        with target.open("w") as output:
            output.write(f"{greeting} {self.n}")
        return {"file": [target.path]}


class CInc(PipeTask):
    n = luigi.IntParameter(default=2)

    def pipe_requires(self):
        self.set_bundle_name("c")
        self.add_dependency("b", BInc, params={"n": self.n})

    def pipe_run(self, b=None):
        target = self.create_output_file("c.txt")
        with target.open("w") as output:
            output.write(str(self.n + 5))
        return {"file": [target.path]}


class YieldsAInc(PipeTask):
    """Reads `a` through a dynamic dependency."""

    def pipe_requires(self):
        self.set_bundle_name("yields_a")

    def pipe_run(self):
        a = yield self.yield_dependency(AInc, {})
        with open(a["file"][0]) as f:
            return f.read()


def _first_path(ctx: str, name: str) -> str:
    bundle = api.get(ctx, name)
    assert bundle is not None, f"no bundle {name!r}"
    return str(bundle.data["file"][0])


def _metadata_only_copy(remote_ctx: str, bucket: str) -> None:
    """Disdat's setup: a, b, c made, committed and pushed; the context deleted, made again and
    pulled without localizing, so every data path is an s3:// URL."""
    api.apply(remote_ctx, CInc)
    for name in ("a", "b", "c"):
        api.commit(remote_ctx, name)
        api.push(remote_ctx, name)
    api.delete_context(remote_ctx)
    api.context(remote_ctx)
    api.remote(remote_ctx, "shared", f"s3://{bucket}/team")
    assert api.search(remote_ctx) == []
    api.pull(remote_ctx)
    for name in ("a", "b", "c"):
        assert _first_path(remote_ctx, name).startswith("s3://")


@pytest.mark.parametrize("workers", [1, 3])
def test_incremental_pull_localizes_the_inputs_a_task_reads(remote_ctx: str, bucket: str, workers: int) -> None:
    """After an incremental-pull apply, the reused upstream bundle a running task read has local
    paths in the context (as Disdat's test_inc_pull), the new bundle too; what no task read stays on S3."""
    _metadata_only_copy(remote_ctx, bucket)
    a_uuid = api.get(remote_ctx, "a").uuid
    result = api.apply(remote_ctx, BInc, params={"n": 100}, incremental_pull=True, workers=workers)
    assert result == {"success": True, "did_work": True}
    a_path, b_path = _first_path(remote_ctx, "a"), _first_path(remote_ctx, "b")
    assert not a_path.startswith("s3://") and Path(a_path).read_text() == "Hi!"
    assert not b_path.startswith("s3://") and Path(b_path).read_text() == "Hi! 100"
    assert api.get(remote_ctx, "a").uuid == a_uuid and len(api.search(remote_ctx, "a")) == 1
    assert _first_path(remote_ctx, "c").startswith("s3://")
    # the context's record says so too: a fresh handle, `ls`-style search, sees it local
    assert [b.uuid for b in api.search(remote_ctx, "a")] == [a_uuid]
    assert not api.get(remote_ctx, "a").data["file"][0].startswith("s3://")


def test_incremental_pull_localizes_a_dynamic_dependency(remote_ctx: str, bucket: str) -> None:
    """A reused bundle read through yield_dependency is localized in the context as well."""
    _metadata_only_copy(remote_ctx, bucket)
    assert api.apply(remote_ctx, YieldsAInc, incremental_pull=True)["did_work"] is True
    assert api.get(remote_ctx, "yields_a").data == "Hi!"
    a_path = _first_path(remote_ctx, "a")
    assert not a_path.startswith("s3://") and Path(a_path).read_text() == "Hi!"


def test_an_apply_after_the_context_was_made_again_writes_into_the_new_one(ctx: str) -> None:
    """Deleting a context and making it again between two applies in one process: the second
    apply's bundles are in the new context (not written through the deleted one's index)."""
    assert api.apply(ctx, AInc)["did_work"] is True
    api.delete_context(ctx)
    api.context(ctx)
    assert api.apply(ctx, AInc) == {"success": True, "did_work": True}
    assert [b.name for b in api.search(ctx)] == ["a"]
    assert Path(_first_path(ctx, "a")).read_text() == "Hi!"


def test_without_incremental_pull_the_metadata_copy_stays_remote(remote_ctx: str, bucket: str) -> None:
    """Control: `c` is reused without running anything, so nothing is localized."""
    _metadata_only_copy(remote_ctx, bucket)
    assert api.apply(remote_ctx, CInc, incremental_pull=True) == {"success": True, "did_work": False}
    for name in ("a", "b", "c"):
        assert _first_path(remote_ctx, name).startswith("s3://")


def test_incremental_push_without_a_remote_commits_and_warns(ctx: str, caplog: pytest.LogCaptureFixture) -> None:
    """In a context with no remote, incremental_push commits every bundle it makes, pushes
    nothing, and says so once; the apply succeeds (as in Disdat)."""
    with caplog.at_level(logging.WARNING, logger="disdat_luigi.apply"):
        result = api.apply(ctx, CInc, incremental_push=True)
    assert result == {"success": True, "did_work": True}
    for name in ("a", "b", "c"):
        bundle = api.get(ctx, name)
        assert bundle is not None and bundle.is_committed
        assert not _first_path(ctx, name).startswith("s3://")
    warnings = [r for r in caplog.records if r.name == "disdat_luigi.apply" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "no remote" in warnings[0].getMessage() and ctx in warnings[0].getMessage()


def test_incremental_push_with_a_remote_pushes_each_bundle(remote_ctx: str, bucket: str) -> None:
    """Control for the above: with a remote the same apply pushes a, b and c's files, warning nothing."""
    api.apply(remote_ctx, CInc, incremental_push=True)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    for name in ("a.txt", "b.txt", "c.txt"):
        assert any(k.endswith(f"/{name}") for k in keys), keys
