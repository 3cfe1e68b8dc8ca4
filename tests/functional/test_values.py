"""Every value type in API.md comes back from a bundle with the same type and value."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from disdat_luigi import api
from disdat_luigi.errors import BundleError, UnsupportedValue


def _round_trip(ctx: str, value: Any) -> Any:
    with api.Bundle(ctx, name="v") as bundle:
        bundle.add_data(value)
    return api.get(ctx, None, uuid=bundle.uuid).data


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b), f"{type(a)} != {type(b)}"
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


SCALARS = [
    None,
    True,
    False,
    0,
    -7,
    2**80,
    1.5,
    -0.0,
    float("inf"),
    float("nan"),
    "",
    "text",
    "données ✓",
    b"",
    b"\x00\xffbytes",
    b"x" * 100_000,
    np.int8(-3),
    np.uint64(2**63),
    np.float32(1.25),
    np.float16(0.5),
    np.bool_(True),
    np.complex64(1 + 2j),
    np.datetime64("2020-01-02T03:04"),
    np.str_("npstr"),
    dt.date(2020, 1, 2),
    dt.datetime(2020, 1, 2, 3, 4, 5, 6),
    dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc),
    dt.timedelta(days=-1, microseconds=5),
    pd.Timestamp("2021-05-06 07:08:09.123456789", tz="UTC"),
    "relative/path/not/a/file.csv",
    "/definitely/not/an/existing/file",
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: f"{type(v).__name__}:{str(v)[:20]}")
def test_scalars_round_trip(ctx: str, value: Any) -> None:
    """Scalars keep their exact Python or numpy type and value."""
    _same(value, _round_trip(ctx, value))


CONTAINERS = [
    [1, 2, 3],
    [],
    [1, "a", None, [2.5, [True]]],
    (1, "x", (2, 3)),
    (),
    {"a": 1, "b": [1, 2], "c": {"d": None}},
    {1: "int key", (1, 2): "tuple key", "s": (1,)},
    {"a": np.int64(3), "b": np.arange(3)},
    [{"x": 1.0}, {"x": 2}],
    list(range(20_000)),
]


@pytest.mark.parametrize("value", CONTAINERS, ids=lambda v: type(v).__name__)
def test_containers_round_trip(ctx: str, value: Any) -> None:
    """Lists stay lists, tuples stay tuples, dict keys and values are unchanged."""
    _same(value, _round_trip(ctx, value))


ARRAYS = [
    np.arange(12, dtype=np.int16).reshape(3, 4),
    np.zeros((0, 3), dtype=np.float32),
    np.array(["a", "bc"]),
    np.array([1.5, np.nan]),
    np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]"),
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    np.asfortranarray(np.ones((2, 3))),
]


@pytest.mark.parametrize("value", ARRAYS, ids=lambda a: str(a.dtype))
def test_arrays_round_trip(ctx: str, value: np.ndarray) -> None:
    """Arrays keep dtype, shape and values."""
    _same(value, _round_trip(ctx, value))


FRAMES = [
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}),
    pd.DataFrame({"a": [1.5, None]}, index=pd.Index(["r1", "r2"], name="row")),
    pd.DataFrame(
        {
            "when": pd.to_datetime(["2020-01-01", "2021-06-01"]).tz_localize("Europe/Paris"),
            "cat": pd.Categorical(["lo", "hi"], categories=["lo", "hi"], ordered=True),
            "flag": [True, False],
            "i32": np.array([1, 2], dtype=np.int32),
            "nullable": pd.array([1, None], dtype="Int64"),
        }
    ),
    pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])),
    pd.DataFrame([[1, 2], [3, 4]], columns=[10, 20]),
    pd.DataFrame([[1, 2]], columns=["dup", "dup"]),
    pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")], names=["l0", "l1"])),
    pd.DataFrame({"a": range(5)}, index=pd.RangeIndex(10, 15)),
    pd.DataFrame(),
]


@pytest.mark.parametrize("value", FRAMES, ids=lambda f: ",".join(map(str, f.columns))[:30] or "empty")
def test_dataframes_round_trip(ctx: str, value: pd.DataFrame) -> None:
    """DataFrames come back equal with index, column labels and dtypes kept."""
    _same(value, _round_trip(ctx, value))


@pytest.mark.parametrize(
    "value",
    [
        pd.Series([1.5, 2.5], name="price"),
        pd.Series([1, 2], name=7, index=pd.Index(["a", "b"], name="k")),
        pd.Series(pd.Categorical(["a", "b"]), name=None),
        pd.Series(pd.date_range("2020-01-01", periods=3, freq="D"), name="d"),
    ],
    ids=lambda s: str(s.name),
)
def test_series_round_trip(ctx: str, value: pd.Series) -> None:
    """Series keep name, index and dtype."""
    _same(value, _round_trip(ctx, value))


def test_managed_files_and_directories(ctx: str) -> None:
    """Files from get_file and directories from get_directory come back as paths with their layout."""
    with api.Bundle(ctx, name="files") as bundle:
        out = bundle.get_file("reports/out.csv")
        Path(out).write_text("a,b\n1,2\n")
        folder = bundle.get_directory("model")
        Path(folder, "sub").mkdir()
        Path(folder, "sub", "w.bin").write_bytes(b"\x01")
        bundle.add_data({"csv": out, "model": folder, "list": [out]})
    data = api.get(ctx, "files").data
    local_dir = Path(bundle.local_dir)
    assert data["csv"] == str(local_dir / "data/reports/out.csv")
    assert Path(data["csv"]).read_text() == "a,b\n1,2\n"
    assert Path(data["model"], "sub", "w.bin").read_bytes() == b"\x01"
    assert data["list"] == [data["csv"]]
    assert {f.path for f in bundle.files} >= {"data/reports/out.csv", "data/model/sub/w.bin"}


def test_external_files_are_copied_keeping_relative_layout(ctx: str, tmp_path: Path) -> None:
    """Existing files returned by absolute path are copied in, below their common parent."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    first, second = tmp_path / "in" / "a.txt", tmp_path / "in" / "sub" / "b.txt"
    first.write_text("A")
    second.write_text("B")
    data = _round_trip(ctx, [str(first), f"file://{second}"])
    assert [Path(p).read_text() for p in data] == ["A", "B"]
    assert data[0].endswith("/data/a.txt") and data[1].endswith("/data/sub/b.txt")
    first.write_text("changed")
    assert Path(data[0]).read_text() == "A"


def test_unwritten_managed_file_is_an_error(ctx: str) -> None:
    """Returning a get_file path that was never written fails and leaves no bundle."""
    with pytest.raises(BundleError, match="nothing was written"), api.Bundle(ctx, name="ghost") as bundle:
        bundle.add_data(bundle.get_file("never.txt"))
    assert api.search(ctx) == []


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        ({1, 2}, "set"),
        ([1, object()], "object"),
        ({"k": lambda: 1}, "function"),
        (np.array([object()]), "dtype object"),
        (pd.DataFrame({"mixed": [1, "a"]}), "Parquet cannot hold"),
    ],
    ids=["class", "set", "nested-object", "lambda", "object-array", "mixed-frame"],
)
def test_unsupported_values_fail_before_writing(ctx: str, disdat_env: Path, value: Any, type_name: str) -> None:
    """An unsupported value names its type and leaves nothing: no bundle, no draft directory."""
    with pytest.raises(UnsupportedValue, match=type_name):
        api.Bundle(ctx, name="bad", data=value)
    assert api.search(ctx) == []
    context_dir = disdat_env / "home" / "context" / ctx
    assert list((context_dir / "objects").iterdir()) == []
    assert list((context_dir / "tmp").iterdir()) == []


def test_mutating_returned_data_does_not_change_the_bundle(ctx: str) -> None:
    """Bundles are immutable: each read decodes a fresh copy."""
    bundle = api.Bundle(ctx, name="m", data={"a": [1, 2]})
    bundle.data["a"].append(3)
    assert bundle.data == {"a": [1, 2]}


def test_explicit_data_none_stores_none(ctx: str) -> None:
    """Bundle(ctx, name=..., data=None) makes a closed bundle holding None (Disdat made nothing)."""
    bundle = api.Bundle(ctx, name="nothing", data=None)
    assert bundle.closed and api.get(ctx, "nothing").data is None
