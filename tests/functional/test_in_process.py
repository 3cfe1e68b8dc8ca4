"""The default apply (one worker, local scheduler) runs its tasks in this process without luigi's
scheduler: luigi's task events and callbacks, dynamic dependencies and failures behave as with
luigi; asking for luigi's own machinery goes through luigi.build."""

from __future__ import annotations

from pathlib import Path

import luigi
import pytest

from disdat_luigi import api
from disdat_luigi.errors import ApplyError
from disdat_luigi.pipe import PipeTask

FIRED: list[str] = []


class Counted(PipeTask):
    n = luigi.IntParameter(default=1)

    def pipe_run(self):
        self.set_status_message("halfway")  # a luigi worker's callback; harmless here
        self.set_progress_percentage(50)
        return self.n


@Counted.event_handler(luigi.Event.START)
def _started(task: luigi.Task) -> None:
    FIRED.append(f"start {task.n}")


@Counted.event_handler(luigi.Event.SUCCESS)
def _succeeded(task: luigi.Task) -> None:
    FIRED.append(f"success {task.n}")


class Boom(PipeTask):
    def pipe_run(self):
        raise ValueError("kaboom")


@Boom.event_handler(luigi.Event.FAILURE)
def _failed(task: luigi.Task, error: Exception) -> None:
    FIRED.append(f"failure {type(error).__name__}")


class YieldsBoom(PipeTask):
    def pipe_run(self):
        value = yield self.yield_dependency(Boom, {})
        return value


class YieldsTwo(PipeTask):
    def pipe_run(self):
        first = yield self.yield_dependency(Counted, {"n": 2})
        more = yield [self.yield_dependency(Counted, {"n": 3}), self.yield_dependency(Counted, {"n": 4})]
        return [first, *more]


@pytest.fixture(autouse=True)
def _clear() -> None:
    FIRED.clear()


def test_luigi_events_and_callbacks(ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(luigi, "build", lambda *a, **k: pytest.fail("the default apply must not use luigi.build"))
    assert api.apply(ctx, Counted, params={"n": 5}) == {"success": True, "did_work": True}
    assert FIRED == ["start 5", "success 5"]
    FIRED.clear()
    assert api.apply(ctx, Counted, params={"n": 5})["did_work"] is False and FIRED == []


def test_dynamic_dependencies_run_when_yielded(ctx: str) -> None:
    api.apply(ctx, YieldsTwo)
    assert api.get(ctx, "YieldsTwo").data == [2, 3, 4]
    assert sorted(FIRED) == sorted(["start 2", "success 2", "start 3", "success 3", "start 4", "success 4"])
    FIRED.clear()
    assert api.apply(ctx, YieldsTwo)["did_work"] is False and FIRED == []


def test_a_failed_dynamic_dependency_fails_the_task_and_leaves_nothing(ctx: str, disdat_env: Path) -> None:
    with pytest.raises(
        ApplyError, match=r"YieldsBoom\(\) failed: .*its dependency Boom\(\) failed: ValueError: kaboom"
    ) as failed:
        api.apply(ctx, YieldsBoom)
    assert FIRED == ["failure ValueError"]
    cause = failed.value.__cause__
    assert isinstance(cause, ValueError) and cause.__traceback__ is not None  # `dsdt --verbose` shows it
    assert api.search(ctx) == []
    report = api.verify(ctx)
    assert report.ok and report.cleaned == []  # no half-made bundle or stray draft was left


def test_luigi_settings_use_luigi_build(ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several workers (or [worker]/[scheduler] settings) keep luigi's worker and scheduler."""
    built: list[int] = []
    real = luigi.build

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(kwargs.get("workers", 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(luigi, "build", counting)
    api.apply(ctx, Counted, params={"n": 7}, workers=2)
    assert built == [2] and api.get(ctx, "Counted").data == 7
