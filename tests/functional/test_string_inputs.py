"""A string a task received from its inputs stays a string in the bundle it makes: a planted
path or s3:// URL never makes a downstream task copy (and publish) the file it names."""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

import boto3
import luigi
import numpy as np
import pandas as pd
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
