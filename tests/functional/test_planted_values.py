"""What a writer of the shared bucket plants that passes the manifest's checks: a value that
cannot be rebuilt, a file path with terminal escapes, a result without a code identity. Each is a
clear error or is planned around; none is an unexpected error or a reused result."""

from __future__ import annotations

import functools
import json

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleCorrupt, ManifestRejected
from disdat_luigi.store.manifest import BundleManifest
from tests.functional import pipelines as p
from tests.planting import manifest_doc, plant


def _fresh(name: str, bucket: str) -> str:
    api.context(name)
    api.remote(name, "shared", f"s3://{bucket}/team")
    return name


@pytest.mark.parametrize(
    "tree",
    [
        {"t": "float", "v": "abc"},
        {"t": "npscalar", "dtype": "<U0", "hex": ""},
        {"t": "npscalar", "dtype": "<M8[zzz]", "hex": "00"},
        {"t": "timedelta", "us": 10**30},
        {"t": "datetime", "v": "not a date"},
        {"t": "dict", "items": [[{"t": "list", "items": []}, {"t": "int", "v": 1}]]},
        {"t": "npscalar", "dtype": "<U1", "hex": "ffffffff"},
        {"t": "json", "v": functools.reduce(lambda inner, _: [inner], range(600), [])},  # deeper than decoding goes
    ],
)
def test_an_unreadable_planted_value_is_named_not_unexpected(remote_ctx: str, bucket: str, dsdt, tree) -> None:  # type: ignore[no-untyped-def]
    """`dsdt cat` of it is one BundleCorrupt line (exit 1); `dsdt ls -a` still lists every bundle."""
    api.apply(remote_ctx, p.Source)
    api.commit(remote_ctx, "Source")
    api.push(remote_ctx)
    bad = plant(
        bucket, manifest_doc("planted", data=tree, params={"t": "dict", "items": [[{"t": "str", "v": "a"}, tree]]})
    )
    reader = _fresh("reader", bucket)
    api.pull(reader)
    with pytest.raises(BundleCorrupt, match=f"the data of bundle {bad} cannot be read"):
        _ = api.get(reader, "planted").data  # type: ignore[union-attr]
    assert dsdt("switch", reader).code == 0
    shown = dsdt("cat", "planted")
    assert shown.code == 1 and "cannot be read" in shown.err and "unexpected" not in shown.err
    listed = dsdt("ls", "-a")
    assert listed.code == 0 and "Source" in listed.out and "(unreadable: " in listed.out


def test_terminal_escapes_in_a_file_path_are_refused(remote_ctx: str, bucket: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """A planted file path holding escape sequences is refused when read; no command's output
    carries the raw escape."""
    path = "data/x\x1b]0;PWNED\x07\x1b[31mRED\x1b[0m"
    doc = manifest_doc("ctl", data={"t": "file", "path": path}, files=[{"path": path, "size": 5, "sha256": "0" * 64}])
    with pytest.raises(ManifestRejected, match="invalid path"):
        BundleManifest.from_json(json.dumps(doc).encode(), "planted")
    plant(bucket, doc, {path: b"HELLO"})
    assert dsdt("switch", remote_ctx).code == 0
    for args in (["pull", "ctl", "-l"], ["pull", "-l"], ["ls", "-v"]):
        ran = dsdt(*args)
        assert "\x1b" not in ran.out + ran.err and "\x07" not in ran.out + ran.err and "unexpected" not in ran.err


def test_a_planted_result_without_a_code_identity_is_not_reused(remote_ctx: str, bucket: str) -> None:
    """A copy of a task's bundle with other data and no code identity, planted newer on the
    remote: an apply that pulls from the remote runs the task instead of reusing it."""
    api.apply(remote_ctx, p.Source, incremental_push=True)
    good = api.get(remote_ctx, "Source")
    assert good is not None
    key = f"team/context/shared/objects/{good.uuid}/manifest.json"
    real = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    forged = manifest_doc("Source", **{k: v for k, v in real.items() if k not in ("uuid", "creation_date", "name")})
    forged.update(data={"t": "str", "v": "EVIL"}, git_info=None)
    plant(bucket, forged)
    reader = _fresh("reader", bucket)
    assert api.apply(reader, p.Source, incremental_pull=True)["did_work"] is True
    assert api.get(reader, "Source").data == [0, 1, 2]  # type: ignore[union-attr]
