"""A string a task received from its inputs stays a string in the bundle it makes: a planted
path or s3:// URL never makes a downstream task copy (and publish) the file it names."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import luigi
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from disdat_luigi import api
from disdat_luigi.pipe import PipeTask
from tests.planting import manifest_doc, plant

SECRET = b"aws_secret_access_key = victim\n"
PRIVATE = b"-----BEGIN PRIVATE KEY-----\n"


def _keep(records: dict[str, str]) -> Any:
    return records


# each a way a task passes its input records on, as users write them
SHAPES: dict[str, Any] = {
    "as is": _keep,
    "in a dict": lambda r: {"kept": r["secret"], "url": r["key"], "n": 1},
    "in a list": lambda r: [r["secret"], r["key"], 3],
    "in a tuple": lambda r: (r["secret"], (r["key"],)),
    "normpath'ed": lambda r: [os.path.normpath(r["secret"]), r["key"] + "/"],
    "as Path(s) str": lambda r: [str(Path(r["secret"])), str(Path(r["secret"]).resolve())],
    "as a file:// URL": lambda r: "file://" + r["secret"],
    "in a DataFrame": lambda r: pd.DataFrame({"path": [r["secret"], r["key"]]}),
}


class PassOn(PipeTask):
    """Reads the bundle named `source` (from the remote) and returns its records reshaped."""

    source = luigi.Parameter()
    how = luigi.Parameter(default="as is")

    def pipe_requires(self):
        self.add_external_dependency("records", None, None, human_name=self.source)

    def pipe_run(self, records):
        return SHAPES[self.how](records)


class Relay(PipeTask):
    """Passes on what PassOn made: a second hop through an ordinary dependency."""

    source = luigi.Parameter()

    def pipe_requires(self):
        self.add_dependency("upstream", PassOn, {"source": self.source, "how": "in a list"})

    def pipe_run(self, upstream):
        return {"again": upstream}


class FromFrame(PipeTask):
    """Turns the string cells of an input frame and array into plain lists (as records)."""

    source = luigi.Parameter()

    def pipe_requires(self):
        self.add_external_dependency("table", None, None, human_name=self.source)

    def pipe_run(self, table):
        return {
            "cells": table["frame"]["path"].tolist(),
            "array": table["array"].tolist(),
            "index": list(table["frame"].index),
        }


class WithInput(PipeTask):
    def pipe_run(self, pipeline_input):
        return [pipeline_input["secret"], pipeline_input["key"]]


class Own(PipeTask):
    """Reads the planted bundle but returns paths of its own: a file it wrote outside its
    bundle, and an existing file it was not given (a parameter)."""

    source = luigi.Parameter()
    scratch = luigi.Parameter()
    existing = luigi.Parameter()

    def pipe_requires(self):
        self.add_external_dependency("records", None, None, human_name=self.source)

    def pipe_run(self, records):
        made = Path(self.scratch) / "made.txt"
        made.write_text("made by the task")
        return {"made": str(made), "existing": self.existing, "given": records["secret"]}


class WritesFile(PipeTask):
    def pipe_run(self):
        target = self.create_output_file("out.txt")
        with target.open("w") as handle:
            handle.write("upstream file")
        return target.path


class PassesFile(PipeTask):
    def pipe_requires(self):
        self.add_dependency("upstream", WritesFile, {})

    def pipe_run(self, upstream):
        return {"file": upstream}


class Pick(PipeTask):
    """Returns strings it got from the planted bundle `source` some other way than as str data."""

    source = luigi.Parameter()
    how = luigi.Parameter()

    def pipe_requires(self):
        self.add_external_dependency("records", None, None, human_name=self.source)

    def pipe_run(self, records):
        return GIVEN[self.how][1](self, records)


def _plant(bucket: str, name: str, data: dict[str, Any]) -> str:
    """A manifest with `data` and no files, on the shared remote as an attacker writes it."""
    return plant(bucket, manifest_doc(name, data=data))


def _str(text: str) -> dict[str, Any]:
    return {"t": "str", "v": text}


@pytest.fixture
def targets(tmp_path: Path, bucket: str) -> dict[str, str]:
    """A victim's secret file on this host and a private object in another bucket."""
    secret = tmp_path / "victim" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    private = f"private-{uuidlib.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=private)
    boto3.client("s3").put_object(Bucket=private, Key="keys/prod.pem", Body=PRIVATE)
    return {"secret": str(secret), "key": f"s3://{private}/keys/prod.pem"}


@pytest.fixture
def planted(remote_ctx: str, bucket: str, targets: dict[str, str]) -> str:
    """`records` on the remote: {"secret": <local path>, "key": <s3 URL>} as plain strings."""
    tree = {"t": "dict", "items": [[_str(k), _str(v)] for k, v in targets.items()]}
    _plant(bucket, "records", tree)
    return "records"


def _fresh(name: str, bucket: str) -> str:
    api.context(name)
    api.remote(name, "shared", f"s3://{bucket}/team")
    return name


def _assert_nothing_copied(bundle: Any, bucket: str) -> None:
    """No file of the bundle holds a victim's bytes, locally or on the shared remote."""
    assert not [e.path for e in bundle.files if e.path.startswith("data/")]
    for entry in bundle.files:
        local = Path(bundle.local_dir) / entry.path
        if local.exists():
            assert SECRET not in local.read_bytes() and PRIVATE not in local.read_bytes()
    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            assert SECRET not in body and PRIVATE not in body, item["Key"]


@pytest.mark.parametrize("how", list(SHAPES))
def test_planted_strings_stay_strings(planted: str, bucket: str, targets: dict[str, str], how: str) -> None:
    """A task that pulls the planted records and returns them (as is, nested, normalised, in a
    frame) makes a bundle holding the same plain strings; nothing is copied or published."""
    fresh = _fresh("fresh", bucket)
    api.apply(fresh, PassOn, params={"source": planted, "how": how}, incremental_pull=True, incremental_push=True)
    bundle = api.get(fresh, "PassOn")
    expected = SHAPES[how](targets)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(bundle.data, expected)
    else:
        assert bundle.data == expected
    _assert_nothing_copied(bundle, bucket)


def test_planted_json_and_two_hops(remote_ctx: str, bucket: str, targets: dict[str, str]) -> None:
    """Strings inside a planted JSON value count too, and stay strings through a second task."""
    _plant(bucket, "records", {"t": "json", "v": {"secret": targets["secret"], "key": targets["key"]}})
    fresh = _fresh("fresh", bucket)
    api.apply(fresh, Relay, params={"source": "records"}, incremental_pull=True, incremental_push=True)
    relayed = api.get(fresh, "Relay")
    assert relayed.data == {"again": [targets["secret"], targets["key"], 3]}
    _assert_nothing_copied(relayed, bucket)
    _assert_nothing_copied(api.get(fresh, "PassOn"), bucket)


def test_frame_cells_and_array_strings(remote_ctx: str, bucket: str, targets: dict[str, str]) -> None:
    """Paths held in an input's DataFrame cells, index or string array stay strings when a task
    turns them into lists."""
    values = [targets["secret"], targets["key"]]
    frame = pd.DataFrame({"path": values}, index=[targets["secret"] + "/../credentials", "b"])
    api.context("mallory")
    api.remote("mallory", "shared", f"s3://{bucket}/team")
    api.Bundle("mallory", name="table", data={"frame": frame, "array": np.array(values)}).commit()
    api.push("mallory", "table")
    fresh = _fresh("fresh", bucket)
    api.apply(fresh, FromFrame, params={"source": "table"}, incremental_pull=True, incremental_push=True)
    bundle = api.get(fresh, "FromFrame")
    assert bundle.data == {"cells": values, "array": values, "index": [*frame.index]}
    _assert_nothing_copied(bundle, bucket)


def test_pipeline_input_strings_stay_strings(planted: str, bucket: str, targets: dict[str, str]) -> None:
    """The run's pipeline_input is an input like any other."""
    fresh = _fresh("fresh", bucket)
    api.pull(fresh, planted)
    api.apply(fresh, WithInput, input_bundle=planted, incremental_push=True)
    bundle = api.get(fresh, "WithInput")
    assert bundle.data == [targets["secret"], targets["key"]]
    _assert_nothing_copied(bundle, bucket)


def test_own_paths_are_still_copied_in(planted: str, bucket: str, targets: dict[str, str], tmp_path: Path) -> None:
    """Disdat's behaviour is kept for paths the task was not given: a file it wrote and an
    existing file it names are copied in, next to the given path that stays a string."""
    existing = tmp_path / "mine" / "notes.txt"
    existing.parent.mkdir()
    existing.write_text("versioned")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    fresh = _fresh("fresh", bucket)
    params = {"source": planted, "scratch": str(scratch), "existing": str(existing)}
    api.apply(fresh, Own, params=params, incremental_pull=True, incremental_push=True)
    bundle = api.get(fresh, "Own")
    data = bundle.data
    assert data["given"] == targets["secret"]
    assert Path(data["made"]).read_text() == "made by the task"
    assert Path(data["existing"]).read_text() == "versioned"
    assert data["made"].startswith(bundle.local_dir) and data["existing"].startswith(bundle.local_dir)
    assert sorted(e.path for e in bundle.files) == ["data/mine/notes.txt", "data/scratch/made.txt"]


def test_files_of_inputs_are_still_copied_in(ctx: str) -> None:
    """A task returning its input's file value gets that (verified) file in its own bundle."""
    api.apply(ctx, PassesFile)
    bundle = api.get(ctx, "PassesFile")
    path = bundle.data["file"]
    assert path.startswith(bundle.local_dir) and Path(path).read_text() == "upstream file"
    assert [e.path for e in bundle.files] == ["data/out.txt"]


def test_s3_key_normalisation_is_compared() -> None:
    """`.`, `..` and doubled slashes in a key name the object they lead to."""
    from disdat_luigi.store.taint import targets_of

    assert targets_of("s3://b/keys/./x/../prod.pem") == targets_of("s3://b/keys//prod.pem/")
    assert targets_of("s3://B/keys/prod.pem") == {"s3://b/keys/prod.pem"}
    assert targets_of("no path here") == set()


def _files(data: Any, files: dict[str, bytes], **changes: Any) -> dict[str, Any]:
    """A planted manifest's data, its files (listed with size and sha256) and other fields."""
    entries = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in files.items()]
    return {"doc": {"data": data, "files": entries, **changes}, "files": files}


def _parquet(table: pa.Table) -> dict[str, Any]:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return _files({"t": "dataframe", "path": "values/0.parquet"}, {"values/0.parquet": buffer.getvalue()})


def _frame(frame: pd.DataFrame) -> dict[str, Any]:
    return _parquet(pa.Table.from_pandas(frame, preserve_index=True))


def _npy(array: np.ndarray) -> dict[str, Any]:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return _files({"t": "ndarray", "path": "values/0.npy"}, {"values/0.npy": buffer.getvalue()})


def _labelled(secret: str, key: str) -> pd.DataFrame:
    frame = pd.DataFrame({"a": [1]}, index=pd.Index([0], name=secret))
    frame.columns.name = key
    return frame


def _with_attrs(secret: str, key: str) -> pd.DataFrame:
    frame = pd.DataFrame({"a": [1]})
    frame.attrs = {"src": secret, "nested": {"keys": [key]}}
    return frame


def _bytes(text: str) -> dict[str, Any]:
    return {"t": "bytes", "b64": base64.b64encode(text.encode()).decode()}


def _bytes_scalar(text: str) -> dict[str, Any]:
    scalar = np.bytes_(text.encode())
    return {"t": "npscalar", "dtype": scalar.dtype.str, "hex": scalar.tobytes().hex()}


def _strs(**items: str) -> dict[str, Any]:
    return {"t": "dict", "items": [[_str(k), _str(v)] for k, v in items.items()]}


Plants = Callable[[str, str], dict[str, Any]]
Picks = Callable[[PipeTask, Any], list[str]]

# how the secret path and the private URL reach a task other than as str data: (how they are
# planted, given them; how the task gets them back as [secret, key])
GIVEN: dict[str, tuple[Plants, Picks]] = {
    "frame column labels": (
        lambda s, k: _frame(pd.DataFrame({s: [1], k: [2]})),
        lambda task, r: list(r.columns),
    ),
    "frame index and columns names": (
        lambda s, k: _frame(_labelled(s, k)),
        lambda task, r: [r.index.name, r.columns.name],
    ),
    "frame attrs": (
        lambda s, k: _frame(_with_attrs(s, k)),
        lambda task, r: [r.attrs["src"], r.attrs["nested"]["keys"][0]],
    ),
    "extension column (arrow.json)": (
        lambda s, k: _parquet(pa.table({"j": pa.array([s, k], type=pa.json_())})),
        lambda task, r: list(r["j"]),
    ),
    "multi-index column levels": (
        lambda s, k: _frame(pd.DataFrame([[1]], columns=pd.MultiIndex.from_tuples([(s, k)]))),
        lambda task, r: list(r.columns[0]),
    ),
    "map column": (
        lambda s, k: _parquet(pa.table({"m": pa.array([[(s, k)]], type=pa.map_(pa.string(), pa.string()))})),
        lambda task, r: list(r["m"][0][0]),
    ),
    "list of structs column": (
        lambda s, k: _parquet(pa.table({"n": pa.array([[{"a": s, "b": [k]}]])})),
        lambda task, r: [r["n"][0][0]["a"], r["n"][0][0]["b"][0]],
    ),
    "binary column": (
        lambda s, k: _parquet(pa.table({"b": pa.array([s.encode(), k.encode()], pa.binary())})),
        lambda task, r: [cell.decode() for cell in r["b"]],
    ),
    "structured array": (
        lambda s, k: _npy(np.array([(s, k.encode())], dtype=[("p", "U300"), ("k", "S300")])),
        lambda task, r: [r.tolist()[0][0], r.tolist()[0][1].decode()],
    ),
    "array field names": (
        lambda s, k: _npy(np.zeros(1, dtype=[(s, "i4"), (k, "i4")])),
        lambda task, r: list(r.dtype.names),
    ),
    "bytes array": (
        lambda s, k: _npy(np.array([s.encode(), k.encode()])),
        lambda task, r: [cell.decode() for cell in r.tolist()],
    ),
    "bytes values": (
        lambda s, k: _files({"t": "list", "items": [_bytes(s), _bytes(k)]}, {}),
        lambda task, r: [cell.decode() for cell in r],
    ),
    "bytes scalars": (
        lambda s, k: _files({"t": "list", "items": [_bytes_scalar(s), _bytes_scalar(k)]}, {}),
        lambda task, r: [bytes(cell).decode() for cell in r],
    ),
    "dict keys": (
        lambda s, k: _files({"t": "dict", "items": [[_str(s), {"t": "int", "v": 1}], [_str(k), {"t": "none"}]]}, {}),
        lambda task, r: list(r),
    ),
    "tags": (
        lambda s, k: _files({"t": "none"}, {}, tags={s: "mine", "p": k}),
        lambda task, r: [*(key for key in task.get_tags("records") if key != "p"), task.get_tags("records")["p"]],
    ),
    "params and typed params": (
        lambda s, k: _files({"t": "none"}, {}, params=_strs(where=s), typed_params=_strs(key=k)),
        lambda task, r: [
            task.input_bundles()["records"].params["where"],
            task.input_bundles()["records"].typed_params["key"],
        ],
    ),
}


@pytest.mark.parametrize("how", list(GIVEN))
def test_strings_from_schemas_bytes_and_metadata_stay_strings(
    remote_ctx: str, bucket: str, targets: dict[str, str], how: str
) -> None:
    """Paths planted in a frame's schema (labels, index and columns names, attrs), nested
    parquet columns, structured and bytes arrays, bytes values, or the input's tags and params
    stay strings when a task returns them; nothing is copied or published."""
    planted = GIVEN[how][0](targets["secret"], targets["key"])
    plant(bucket, manifest_doc("records", **planted["doc"]), planted["files"])
    fresh = _fresh("fresh", bucket)
    api.apply(fresh, Pick, params={"source": "records", "how": how}, incremental_pull=True, incremental_push=True)
    bundle = api.get(fresh, "Pick")
    assert bundle.data == [targets["secret"], targets["key"]]
    _assert_nothing_copied(bundle, bucket)
