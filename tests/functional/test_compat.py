"""Disdat compatibility: programs written against Disdat's API run unchanged."""

from __future__ import annotations

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
