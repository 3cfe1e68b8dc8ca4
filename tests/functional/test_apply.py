"""apply on real luigi: results, reuse and re-run decisions, inputs, failures and execution modes."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import luigi
import pandas as pd
import pytest

from disdat_luigi import api
from disdat_luigi.errors import ApplyError
from disdat_luigi.pipe import PipeTask
from tests.functional import pipelines as p


def _decisions(ctx: str, cls: type, **kwargs) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(d.label, d.reason if not d.reuse else "reuse") for d in api.explain(ctx, cls, **kwargs)]


def test_apply_runs_then_reuses(ctx: str) -> None:
    """A first apply makes one bundle per task; the same apply again makes none."""
    assert api.apply(ctx, p.Double, params={"n": 3}) == {"success": True, "did_work": True}
    assert api.get(ctx, "Double").data == {"label": "base", "doubled": [0, 2, 4]}
    assert len(api.search(ctx)) == 2
    assert api.apply(ctx, p.Double, params={"n": 3}) == {"success": True, "did_work": False}
    assert len(api.search(ctx)) == 2


def test_new_parameters_rerun_with_reason(ctx: str) -> None:
    """Changing a parameter (inherited ones too) re-runs, and explain says which one changed."""
    api.apply(ctx, p.Double, params={"n": 3})
    assert _decisions(ctx, p.Double, params={"n": 3, "label": "other"}) == [
        ("Source(n=3)", "reuse"),
        ("Double(label=other, n=3)", "new parameters: label='base' -> 'other'"),
    ]
    api.apply(ctx, p.Double, params={"n": 3, "label": "other"})
    assert api.get(ctx, "Double").data["label"] == "other"
    assert api.get(ctx, "Double").typed_params == {"label": "other", "n": 3}
    assert _decisions(ctx, p.Double, params={"n": 4})[0] == ("Source(n=4)", "new parameters: n=3 -> 4")


def test_one_more_value_of_a_sweep_says_no_bundle_yet(ctx: str) -> None:
    """A class that ran with one parameter value changed it ('new parameters'); one that ran with
    several gets one more value ('no bundle yet for ...; newest other: ...')."""
    assert _decisions(ctx, p.Source, params={"n": 3}) == [("Source(n=3)", "no bundle yet")]
    api.apply(ctx, p.Source, params={"n": 3})
    assert _decisions(ctx, p.Source, params={"n": 4}) == [("Source(n=4)", "new parameters: n=3 -> 4")]
    api.apply(ctx, p.Source, params={"n": 4})
    assert _decisions(ctx, p.Source, params={"n": 666}) == [
        ("Source(n=666)", "no bundle yet for n=666; newest other: n=4")
    ]
    api.apply(ctx, p.Source, params={"n": 3}, force=True)  # the newest other is the newest bundle
    assert _decisions(ctx, p.Source, params={"n": 666})[0][1] == "no bundle yet for n=666; newest other: n=3"


def test_equal_values_written_differently_say_so(ctx: str) -> None:
    """[1, 2] and [1.0, 2.0] are equal but written differently: a recipe keeps parameters as
    written, so the task runs, and explain says why instead of blaming the upstream."""
    api.apply(ctx, p.Typed, params={"items": [1.0, 2.0]})
    (decision,) = _decisions(ctx, p.Typed, params={"items": [1, 2]})
    assert decision[1] == (
        "new parameters: items=(1.0, 2.0) -> (1, 2) (equal values written differently: a recipe keeps its "
        "parameters as written)"
    )


def test_force_and_force_all(ctx: str) -> None:
    """force re-runs only the root; force_all re-runs every task."""
    api.apply(ctx, p.Double)
    assert _decisions(ctx, p.Double, force=True) == [
        ("Source(n=3)", "reuse"),
        ("Double(label=base, n=3)", "forced (--force)"),
    ]
    api.apply(ctx, p.Double, force=True)
    assert (len(api.search(ctx, "Source")), len(api.search(ctx, "Double"))) == (1, 2)
    api.apply(ctx, p.Double, force_all=True)
    assert (len(api.search(ctx, "Source")), len(api.search(ctx, "Double"))) == (2, 3)


def test_forced_upstream_makes_downstream_rerun(ctx: str) -> None:
    """A newer bundle of an upstream recipe (here: forced alone) makes the downstream task re-run."""
    api.apply(ctx, p.Double)
    old = api.get(ctx, "Source").uuid
    api.apply(ctx, p.Source, force=True)
    new = api.get(ctx, "Source").uuid
    assert _decisions(ctx, p.Double)[1] == (
        "Double(label=base, n=3)",
        f"upstream nums changed: {old[:8]} -> {new[:8]}",
    )
    api.apply(ctx, p.Double)
    assert [d.uuid for d in api.get(ctx, "Double").dependencies] == [new]


def test_mark_force(ctx: str) -> None:
    """A task that calls mark_force runs every time."""
    api.apply(ctx, p.AlwaysRuns)
    assert api.apply(ctx, p.AlwaysRuns)["did_work"] is True
    assert len(api.search(ctx, "AlwaysRuns")) == 2


def test_renamed_output_reruns(ctx: str) -> None:
    """A new output name for the root makes a new bundle with that name."""
    api.apply(ctx, p.Source, output_bundle="first")
    assert _decisions(ctx, p.Source, output_bundle="second") == [("Source(n=3)", "output renamed: first -> second")]
    api.apply(ctx, p.Source, output_bundle="second")
    assert api.get(ctx, "second").data == [0, 1, 2]
    assert api.apply(ctx, p.Source, output_bundle="second")["did_work"] is False


def test_swapped_arguments_rerun(ctx: str) -> None:
    """Swapping which upstream feeds which argument is a different recipe."""
    api.apply(ctx, p.Pair, params={"a": 1, "b": 2})
    assert api.get(ctx, "Pair").data == (1, 2)
    assert api.apply(ctx, p.Pair, params={"a": 2, "b": 1})["did_work"] is True
    assert api.get(ctx, "Pair").data == (2, 1)


def test_output_tags_and_root_marker(ctx: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """-ot tags land on the root bundle only; the root is marked so ls -r / -i tell them apart."""
    api.apply(ctx, p.Double, output_tags={"run": "1"})
    assert api.get(ctx, "Double").tags == {"run": "1"}
    assert api.get(ctx, "Source").tags == {}
    assert [b.name for b in api.search(ctx, find_roots=True)] == ["Double"]
    assert [b.name for b in api.search(ctx, find_intermediates=True)] == ["Source"]
    assert dsdt("ls", "-r").out.splitlines() == ["Double"]
    assert _decisions(ctx, p.Double, output_tags={"run": "2"})[1][1] == "output tags changed"


def test_tags_and_input_helpers(ctx: str) -> None:
    """add_tags / set_bundle_name in pipe_requires; get_tags and get_bundle_uuid in pipe_run."""
    api.apply(ctx, p.ReadsTags)
    tagged = api.get(ctx, "tagged_output")
    assert tagged.tags == {"team": "ml"}
    assert api.get(ctx, "ReadsTags").data == {"tags": {"team": "ml"}, "uuid": tagged.uuid}


def test_values_arrive_exactly(ctx: str) -> None:
    """Inputs reach pipe_run with the exact value upstream returned (index, dtypes, tuples)."""
    api.apply(ctx, p.UsesFrames)
    data = api.get(ctx, "UsesFrames").data
    pd.testing.assert_frame_equal(data["frame"], pd.DataFrame({"a": [1, 2]}, index=pd.Index(["r", "s"], name="k")))
    assert data["tuple"] == (1, "two") and data["dtype"] == "int64"


def test_output_files_and_directories(ctx: str) -> None:
    """create_output_file (name, dict) and create_output_dir live in the bundle; downstream reads them."""
    api.apply(ctx, p.ReadsFiles)
    files = api.get(ctx, "Files")
    assert Path(files.data["one"]).read_text() == "one"
    assert Path(files.data["many"]["a"]).read_text() == "a"
    assert Path(files.data["dir"], "x.bin").read_bytes() == b"x"
    assert files.data["one"].startswith(files.local_dir)
    assert api.get(ctx, "ReadsFiles").data == "oneb"


def test_failing_task_keeps_earlier_bundles_and_leaves_nothing(ctx: str, disdat_env: Path) -> None:
    """A raising task: ApplyError with the result and the error, no bundle of its own, no drafts."""
    with pytest.raises(ApplyError, match="Fails.* failed: ValueError: boom at the last step") as info:
        api.apply(ctx, p.Fails)
    assert info.value.result == {"success": False, "did_work": True}
    assert [b.name for b in api.search(ctx)] == ["Source"]
    tmp = disdat_env / "home/context" / ctx / "tmp"
    assert list(tmp.iterdir()) == []
    assert api.verify(ctx).ok


def test_luigi_retries_a_failed_task(ctx: str, tmp_path: Path) -> None:
    """luigi's own retry settings work, and a task that succeeds on a retry is a success."""
    config = luigi.configuration.get_config()
    settings = {
        ("scheduler", "retry_delay"): "0",
        ("worker", "keep_alive"): "true",
        ("worker", "wait_interval"): "0.1",
        ("worker", "wait_jitter"): "0",
    }
    for (section, key), value in settings.items():
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)
    try:
        assert api.apply(ctx, p.FailsOnce, params={"marker": str(tmp_path / "failed")}) == {
            "success": True,
            "did_work": True,
        }
    finally:
        for section, key in settings:
            config.remove_option(section, key)
    assert (tmp_path / "failed").exists() and api.get(ctx, "FailsOnce").data == 1


def test_luigi_retry_settings_are_honoured_without_luigis_scheduler(
    ctx: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry settings alone keep the apply on the in-process runner (luigi's scheduler is
    quadratic): a task failing once is run again after retry_delay; retry_count bounds it."""
    import luigi.worker

    config = luigi.configuration.get_config()
    settings = {("scheduler", "retry_delay"): "0", ("worker", "keep_alive"): "true", ("scheduler", "retry_count"): "2"}
    for (section, key), value in settings.items():
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)

    def no_luigi_worker(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("luigi's worker was used")

    monkeypatch.setattr(luigi.worker.Worker, "__init__", no_luigi_worker)
    try:
        with caplog.at_level("INFO", logger="disdat_luigi.apply"):
            result = api.apply(ctx, p.FailsOnce, params={"marker": str(tmp_path / "failed")})
        assert result == {"success": True, "did_work": True}
        assert "FailsOnce() failed (RuntimeError: first attempt fails); retrying in 0 s (attempt 2 of 2)" in caplog.text
        caplog.clear()
        with caplog.at_level("INFO", logger="disdat_luigi.apply"), pytest.raises(ApplyError, match="Fails.* boom"):
            api.apply(ctx, p.Fails)  # fails on every attempt: two, then the apply fails
        assert caplog.text.count("retrying in 0 s") == 1
    finally:
        for section, key in settings:
            config.remove_option(section, key)


def test_parameters_added_to_a_class_later_are_seen(ctx: str) -> None:
    """PipeTask remembers each class's parameters; adding or removing one on a base class is seen."""

    class Later(p.Source):
        pass

    assert [name for name, _ in Later.get_params()] == ["disdat_apply", "n"]
    p.Source.extra = luigi.IntParameter(default=7)
    try:
        assert [name for name, _ in Later.get_params()] == ["disdat_apply", "n", "extra"]
    finally:
        del p.Source.extra
    assert [name for name, _ in Later.get_params()] == ["disdat_apply", "n"]


def test_external_dependencies(ctx: str) -> None:
    """External inputs by human name, by uuid and by class+params; a missing one fails naming it."""
    made = api.Bundle(ctx, name="handmade", data=[5, 6])
    api.apply(ctx, p.ExternalByName, params={"source_name": "handmade"})
    assert api.get(ctx, "ExternalByName").data == [5, 6]
    api.apply(ctx, p.ExternalByUuid, params={"source_uuid": made.uuid})
    assert api.get(ctx, "ExternalByUuid").dependencies[0].uuid == made.uuid
    with pytest.raises(ApplyError, match="external dependency 'data' of ExternalByClass.* not found") as info:
        api.apply(ctx, p.ExternalByClass)
    assert info.value.result == {"success": False, "did_work": False}
    api.apply(ctx, p.Source, params={"n": 4})
    api.apply(ctx, p.ExternalByClass)
    assert api.get(ctx, "ExternalByClass").data == 6
    assert api.apply(ctx, p.ExternalByName, params={"source_name": "handmade"})["did_work"] is False
    api.Bundle(ctx, name="handmade", data=[7])
    assert api.apply(ctx, p.ExternalByName, params={"source_name": "handmade"})["did_work"] is True
    with pytest.raises(ApplyError, match="no bundle named 'nothing'"):
        api.apply(ctx, p.ExternalByName, params={"source_name": "nothing"})


@pytest.mark.parametrize("workers", [1, 3])
def test_dynamic_dependencies(ctx: str, workers: int) -> None:
    """Dependencies yielded from pipe_run run first and their data is sent back, with 1 and 3 workers."""
    assert api.apply(ctx, p.Dynamic, workers=workers)["success"]
    result = api.get(ctx, "Dynamic")
    assert result.data["sums"] == [0, 1, 3] and result.data["lengths"] == [5, 6]
    assert len(result.dependencies) == 5
    assert api.apply(ctx, p.Dynamic, workers=workers)["did_work"] is False


def test_static_fan_in_with_worker_processes(ctx: str) -> None:
    """Three luigi worker processes build a fan-in DAG into one context."""
    assert api.apply(ctx, p.FanIn, params={"width": 8}, workers=3)["success"]
    assert api.get(ctx, "FanIn").data == list(range(8))
    assert len(api.search(ctx, "Source")) == 8 and api.verify(ctx).ok


def test_nested_apply(ctx: str) -> None:
    """A pipe_run may call apply itself."""
    api.apply(ctx, p.Nested, params={"context_name": ctx})
    data = api.get(ctx, "Nested").data
    assert data == {"inner": {"success": True, "did_work": True}, "data": list(range(9))}


def test_pipeline_input_from_input_tags(ctx: str) -> None:
    """The bundle selected by input_tags reaches the root as pipeline_input and is part of its recipe."""
    api.Bundle(ctx, name="in", data={"v": 1}, tags={"batch": "a"})
    api.apply(ctx, p.WithInput, input_tags={"batch": "a"})
    assert api.get(ctx, "WithInput").data == {"got": {"v": 1}}
    api.Bundle(ctx, name="in", data={"v": 2}, tags={"batch": "b"})
    api.apply(ctx, p.WithInput, input_tags={"batch": "b"})
    assert api.get(ctx, "WithInput").data == {"got": {"v": 2}}


def test_incremental_push_survives_a_failure(remote_ctx: str, bucket: str) -> None:
    """With incremental_push the bundles made before a failure are already on the remote."""
    with pytest.raises(ApplyError):
        api.apply(remote_ctx, p.Fails, incremental_push=True)
    api.context("other")
    api.remote("other", "shared", f"s3://{bucket}/team")
    assert [b.name for b in api.pull("other")] == ["Source"]


def test_transient_bundles_are_not_pushed(remote_ctx: str, bucket: str) -> None:
    """mark_transient keeps a bundle out of incremental pushes."""
    api.apply(remote_ctx, p.UsesTransient, incremental_push=True)
    api.context("other")
    api.remote("other", "shared", f"s3://{bucket}/team")
    assert [b.name for b in api.pull("other")] == ["UsesTransient"]


def test_incremental_pull_reuses_bundles_from_the_remote(remote_ctx: str, bucket: str) -> None:
    """A fresh context with incremental_pull finds upstream bundles on the remote instead of re-running."""
    api.apply(remote_ctx, p.Double, incremental_push=True)
    api.context("fresh")
    api.remote("fresh", "shared", f"s3://{bucket}/team")
    assert api.apply("fresh", p.Double, incremental_pull=True)["did_work"] is False
    assert api.get("fresh", "Double").data["doubled"] == [0, 2, 4]


def test_central_scheduler(ctx: str, tmp_path: Path) -> None:
    """apply can use a luigid central scheduler (on 127.0.0.1)."""
    from tests.conftest import free_port, wait_for_port

    port = free_port()
    luigid = subprocess.Popen(
        [sys.executable, "-c", "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])",
         "--address", "127.0.0.1", "--port", str(port),
         "--logdir", str(tmp_path), "--state-path", str(tmp_path / "state.pickle")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        from disdat_luigi.apply.driver import ApplyRequest, apply
        from disdat_luigi.config import load_settings

        request = ApplyRequest(
            context=ctx, transform=p.Double, central_scheduler=True,
            luigi_options={"scheduler_host": "127.0.0.1", "scheduler_port": port},
        )  # fmt: skip
        assert apply(request, load_settings()) == {"success": True, "did_work": True}
    finally:
        luigid.terminate()
        luigid.wait()


def test_typed_parameters_from_the_cli(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """CLI values are parsed by each luigi Parameter: ints, floats, bools, dates, lists, dicts."""
    result = dsdt(
        "apply", "tests.functional.pipelines.Typed", "--count", "3", "--ratio", "1.5", "--flag",
        "--day", "2021-02-03", "--items", "[1, 2]", "--mapping", '{"k": "v"}', "--name=hello",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert api.get(ctx, "Typed").data == {
        "count": 3, "ratio": 1.5, "flag": True, "day": dt.date(2021, 2, 3),
        "items": [1, 2], "mapping": {"k": "v"}, "name": "hello",
    }  # fmt: skip
    assert api.get(ctx, "Typed").typed_params["day"] == dt.date(2021, 2, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.functional.pipelines.Typed", "--nope", "1"], "Typed has no parameter --nope"),
        (["tests.functional.pipelines.Typed", "--count", "many"], "--count 'many'"),
        (["tests.functional.pipelines.Typed", "stray"], "unexpected argument 'stray'"),
        (["tests.functional.pipelines.Pair", "--a", "1"], "requires the 'b' parameter"),
        (["no_such_module.Task"], "cannot import module 'no_such_module'"),
        (["tests.functional.pipelines.Missing"], "has no class 'Missing'"),
        (["tests.functional.pipelines.Path"], "is not a PipeTask subclass"),
        (["NoDots"], "not a dotted path"),
    ],
)
def test_cli_apply_bad_input(dsdt, ctx: str, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    """Unknown parameters, unparsable values and unimportable classes are one-line errors."""
    result = dsdt("apply", *args)
    assert result.code == 1 and message in result.err.splitlines()[0], result.err
    assert api.search(ctx) == []


def test_an_apply_option_after_the_class_says_where_it_goes(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    result = dsdt("apply", "tests.functional.pipelines.Typed", "--explain")
    assert result.code == 1 and "Typed has no parameter --explain" in result.err
    assert "dsdt's own --explain goes before the class (dsdt apply --explain Typed ...)" in result.err


def test_cli_explain_prints_every_task(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """--explain prints run/reuse with the reason for each task and runs nothing."""
    first = dsdt("apply", "--explain", "tests.functional.pipelines.Double", "--n", "2").out.splitlines()
    assert first == [
        "run   Source(n=2): no bundle yet",
        "run   Double(label=base, n=2): upstream nums (Source(n=2)) will run",
    ]
    assert api.search(ctx) == []
    assert dsdt("apply", "tests.functional.pipelines.Double", "--n", "2").out.startswith(
        "done: new bundles made; the output is Double "
    )
    again = dsdt("apply", "--explain", "tests.functional.pipelines.Double", "--n", "2").out.splitlines()
    assert again[0].startswith("reuse ") and again[0].endswith("Source(n=2)")


def test_errors_inside_pipelines_are_reported_by_the_cli(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A failing pipeline exits 1 with the task and its error on one line."""
    result = dsdt("apply", "tests.functional.pipelines.Fails")
    assert result.code == 1
    assert "Fails() failed: ValueError: boom at the last step" in result.err.splitlines()[-2]


class _NeedsN(PipeTask):
    n = luigi.IntParameter()


class _Misspells(PipeTask):
    def pipe_requires(self):
        self.add_dependency("up", _NeedsN, {"nn": 3})


class _Forgets(PipeTask):
    def pipe_requires(self):
        self.add_dependency("up", _NeedsN, {})


def test_a_dependency_parameter_typo_is_one_clean_line(ctx: str) -> None:
    """A misspelled or missing parameter of a dependency names the class and its parameters,
    without the apply's hidden options luigi would print; nothing runs."""
    with pytest.raises(ApplyError) as misspelled:
        api.apply(ctx, _Misspells)
    assert str(misspelled.value) == "_Misspells(): _NeedsN has no parameter nn"
    assert misspelled.value.hint == "its parameters are: n"
    with pytest.raises(ApplyError, match=r"^_Forgets\(\): _NeedsN requires the 'n' parameter to be set$"):
        api.apply(ctx, _Forgets)
    assert api.search(ctx) == []
