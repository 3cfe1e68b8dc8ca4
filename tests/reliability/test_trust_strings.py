"""Trust: strings a task receives from its inputs stay strings in the bundle it makes.

Planted bundles name a victim's file (in many spellings: `.`, `..`, `//`, a symlink, `file://`)
and a private S3 object, as str data or in a frame's schema, a nested parquet column, a structured
array, bytes, tags or params; tasks pass them on reshaped. One row of the reliability ledger.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import uuid as uuidlib
from pathlib import Path
from typing import Any

import boto3
import luigi
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from disdat_luigi import api
from disdat_luigi.pipe import PipeTask
from tests.planting import manifest_doc, plant

SECRET = b"aws_secret_access_key = planted-secret\n"
PRIVATE = b"-----BEGIN PRIVATE KEY-----\n"
TRIALS = 48


def _leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    return [s for v in value for s in _leaves(v)]


RESHAPE: dict[str, Any] = {
    "as is": lambda v: v,
    "flattened": _leaves,
    "normpath'ed": lambda v: [os.path.normpath(s) if s.startswith("/") else s for s in _leaves(v)],
    "realpath'ed": lambda v: [os.path.realpath(s) if s.startswith("/") else s for s in _leaves(v)],
    "in a dict": lambda v: {f"k{i}": s for i, s in enumerate(_leaves(v))},
}


class Reshape(PipeTask):
    source = luigi.Parameter()
    how = luigi.Parameter()
    carrier = luigi.Parameter(default="data")

    def pipe_requires(self):
        self.add_external_dependency("planted", None, None, human_name=self.source)

    def pipe_run(self, planted):
        return RESHAPE[self.how](CARRIERS[self.carrier][1](self, planted))


def _spellings(secret: Path, link: Path, url: str) -> list[str]:
    """Strings naming the victim's file or object, each a different way."""
    parent = secret.parent
    return [
        str(secret),
        f"{parent}/./{secret.name}",
        f"{parent}//{secret.name}",
        f"{parent}/../{parent.name}/{secret.name}",
        str(link),
        f"file://{secret}",
        url,
        url + "/",
    ]


def _to_tree(value: Any) -> Any:
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if isinstance(value, dict):
        return {"t": "dict", "items": [[_to_tree(k), _to_tree(v)] for k, v in value.items()]}
    return {"t": "list", "items": [_to_tree(v) for v in value]}


def _with_files(data: Any, files: dict[str, bytes], **changes: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    entries = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in files.items()]
    return {"data": data, "files": entries, **changes}, files


def _parquet(table: pa.Table) -> tuple[dict[str, Any], dict[str, bytes]]:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return _with_files({"t": "dataframe", "path": "values/0.parquet"}, {"values/0.parquet": buffer.getvalue()})


def _npy(array: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return _with_files({"t": "ndarray", "path": "values/0.npy"}, {"values/0.npy": buffer.getvalue()})


def _with_attrs(strings: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"n": [1]})
    frame.attrs = {"paths": strings}
    return frame


def _named(strings: list[str]) -> dict[str, str]:
    return {f"k{i}": s for i, s in enumerate(strings)}


def _bytes(text: str) -> dict[str, Any]:
    return {"t": "bytes", "b64": base64.b64encode(text.encode()).decode()}


_NONE = {"t": "none"}

# where a planted bundle holds the (flat, distinct) strings, and how a task gets them back
CARRIERS: dict[str, tuple[Any, Any]] = {
    "data": (None, lambda task, p: p),  # planted as a value tree of str
    "frame labels": (
        lambda v: _parquet(pa.Table.from_pandas(pd.DataFrame({s: [1] for s in v}), preserve_index=True)),
        lambda task, p: list(p.columns),
    ),
    "frame attrs": (
        lambda v: _parquet(pa.Table.from_pandas(_with_attrs(v), preserve_index=True)),
        lambda task, p: list(p.attrs["paths"]),
    ),
    "map column": (
        lambda v: _parquet(pa.table({"m": pa.array([list(_named(v).items())], pa.map_(pa.string(), pa.string()))})),
        lambda task, p: [value for _key, value in p["m"][0]],
    ),
    "structured array": (
        lambda v: _npy(np.array([tuple(s.encode() for s in v)], dtype=[(f"f{i}", "S300") for i in range(len(v))])),
        lambda task, p: [cell.decode() for cell in p.tolist()[0]],
    ),
    "bytes": (
        lambda v: _with_files({"t": "list", "items": [_bytes(s) for s in v]}, {}),
        lambda task, p: [cell.decode() for cell in p],
    ),
    "tags": (
        lambda v: _with_files(_NONE, {}, tags=_named(v)),
        lambda task, p: [task.get_tags("planted")[f"k{i}"] for i in range(len(task.get_tags("planted")))],
    ),
    "params": (
        lambda v: _with_files(_NONE, {}, params=_to_tree(_named(v))),
        lambda task, p: list(task.input_bundles()["planted"].params.values()),
    ),
}


def _plant(bucket: str, name: str, value: Any, carrier: str) -> None:
    if carrier == "data":
        plant(bucket, manifest_doc(name, data=_to_tree(value)))
    else:
        doc, files = CARRIERS[carrier][0](value)
        plant(bucket, manifest_doc(name, **doc), files)


def _leaked(bucket: str, bundle: Any) -> list[str]:
    found = [e.path for e in bundle.files if e.path.startswith("data/")]
    for root, _dirs, files in os.walk(bundle.local_dir):
        found += [name for name in files if SECRET in Path(root, name).read_bytes()]
    client = boto3.client("s3")
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        if SECRET in body or PRIVATE in body:
            found.append(f"s3://{bucket}/{item['Key']}")
    return found


def test_strings_from_inputs_stay_strings(ledger, remote_ctx: str, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Random nestings of the planted spellings, passed on in random shapes by a task in another
    context with incremental pull and push: each output holds the strings and no file."""
    secret = tmp_path / "victim" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    link = tmp_path / "innocent" / "notes.txt"
    link.parent.mkdir()
    link.symlink_to(secret)
    private = f"private-{uuidlib.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=private)
    boto3.client("s3").put_object(Bucket=private, Key="keys/prod.pem", Body=PRIVATE)
    spellings = _spellings(secret, link, f"s3://{private}/keys/prod.pem")
    rng = random.Random(20240611)
    api.context("victim")
    api.remote("victim", "shared", f"s3://{bucket}/team")
    failures: list[str] = []
    carriers = list(CARRIERS)
    for trial in range(TRIALS):
        picked = rng.sample(spellings, rng.randint(1, 4)) + ["decoy"]
        carrier = carriers[trial % len(carriers)]  # every carrier, several times
        value: Any = picked
        if carrier == "data":
            value = {"paths": picked} if rng.random() < 0.5 else [[s] for s in picked]
        how = rng.choice(sorted(RESHAPE))
        name = f"planted{trial}"
        _plant(bucket, name, value, carrier)
        params = {"source": name, "how": how, "carrier": carrier}
        made = api.apply_outcome("victim", Reshape, params=params, incremental_pull=True, incremental_push=True)
        bundle = api.get("victim", None, uuid=made.root_uuid)
        leaked = _leaked(bucket, bundle)
        if bundle.data != RESHAPE[how](value) or leaked:
            failures.append(f"trial {trial} ({carrier}, {how}, {picked}): data {bundle.data!r}, copied {leaked}")
    ledger.record(
        "strings from inputs stay strings",
        TRIALS,
        len(failures),
        f"{TRIALS} planted bundles naming a local secret ({len(spellings) - 2} spellings incl. a symlink) and a "
        "private S3 object as str data, frame labels or attrs, a map column, a bytes structured array, bytes, "
        "tags or params, passed on as is / flattened / normpath'ed / realpath'ed / in a dict by a task with "
        "incremental pull+push: output holds the plain strings, no file copied locally or to the remote",
    )
    assert not failures, failures
