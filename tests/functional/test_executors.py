"""Per-task executors without Docker: the host's dispatch (planning, pushing inputs, fixed uuids,
journal, attach, failure, resume) against real moto S3, each remote task run by the image's own
entry point (`python -m disdat_luigi.cli.container --task-spec ...`) in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from disdat_luigi import api
from disdat_luigi.apply.driver import ApplyRequest, apply_outcome
from disdat_luigi.apply.executors import Phase, RemoteTask, executor_name, executor_options, parse_overrides
from disdat_luigi.config import ExecutorSettings, load_settings
from disdat_luigi.errors import ApplyError, ConfigError, PipelineError, RemoteNotConfigured
from disdat_luigi.run.executors.container import ContainerExecutor, Tracked
from disdat_luigi.run.executors.local import LocalExecutor
from disdat_luigi.store.store import LocalStore
from tests.functional import pipelines as p

REPO = Path(__file__).resolve().parents[2]


class ProcessExecutor(ContainerExecutor):
    """Runs each task's container command as a child process of the test (the same entry point
    the images run); the journal, attach, poll and cancel logic is the real executors'."""

    launched: list[str] = []

    def prepare(self, classes: Sequence[type], log) -> None:  # type: ignore[no-untyped-def]
        self.log = log
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def image_reference(self, name: str) -> str:
        return name  # no image: the entry point runs from this checkout

    def start(self, tasks: Sequence[RemoteTask], started) -> None:  # type: ignore[no-untyped-def]

        for task in tasks:
            env = {**os.environ, "PYTHONPATH": str(REPO), "DISDAT_WORK_DIR": ""}
            command = [
                sys.executable,
                "-m",
                "disdat_luigi.cli.container",
                *self.command(["--task-spec", task.spec(self.name).to_json()]),
            ]
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.procs[str(proc.pid)] = proc
            ProcessExecutor.launched.append(task.label)
            started(task, str(proc.pid))

    def phases(self, job_ids: Sequence[str]) -> dict[str, Phase | None]:
        found: dict[str, Phase | None] = {}
        for job_id in job_ids:
            proc = self.procs.get(job_id)
            if proc is None:  # another apply's process: alive, or gone (its bundle decides)
                stat = Path(f"/proc/{job_id}/stat")
                alive = stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"
                found[job_id] = Phase.RUNNING if alive else Phase.DONE
            else:
                code = proc.poll()
                found[job_id] = Phase.RUNNING if code is None else (Phase.DONE if code == 0 else Phase.FAILED)
        return found

    def finish(self, tracked: Tracked):  # type: ignore[no-untyped-def]
        from disdat_luigi.errors import JobFailed

        proc = self.procs.pop(tracked.job_id, None)
        if proc is None:  # attached to another apply's process: its bundle tells
            return [], None
        lines = (proc.stdout.read() if proc.stdout else "").splitlines()
        if tracked.phase is Phase.DONE:
            return lines, None
        return lines, JobFailed(f"process {tracked.job_id} exited with {proc.returncode}", hint="\n".join(lines[-5:]))

    def terminate(self, job_id: str) -> None:
        self.procs[job_id].kill()


@pytest.fixture
def farm(remote_ctx: str, disdat_env: Path):  # type: ignore[no-untyped-def]
    """Settings with an [executor.farm] section and a factory of ProcessExecutors."""
    cfg = disdat_env / "config" / "disdat.cfg"
    cfg.write_text(
        cfg.read_text() + "\n[executor.farm]\ntype = docker\nmax_concurrent_jobs = 4\n\n[executor.here]\ntype = local\n"
    )
    settings = load_settings()
    context = LocalStore(settings.root, remote_settings=settings.remote).context(remote_ctx)
    ProcessExecutor.launched = []
    lines: list[str] = []

    def run(transform=p.HybridEvaluate, **fields):  # type: ignore[no-untyped-def]
        def make(name: str, _context):  # type: ignore[no-untyped-def]
            config = settings.executor(name)
            if config.type == "local":
                return LocalExecutor(config=config)
            return ProcessExecutor(settings=settings, config=config, context=context, build=True)

        request = ApplyRequest(context=remote_ctx, transform=transform, **fields)
        return apply_outcome(
            request, settings.__class__(**{**settings.__dict__, "run": _fast(settings.run)}), make, lines.append
        )

    run.lines = lines  # type: ignore[attr-defined]
    return run


def _fast(run):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(run, poll_seconds=0.2)


def test_a_fan_out_runs_elsewhere_and_the_rest_here(farm, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    """local -> 6 remote -> local: right result, every Fit bundle made by another process under
    the uuid the host fixed, with its executor in its lineage; again: nothing is started."""
    outcome = farm(params={"alphas": 6})
    result = api.get(remote_ctx, None, uuid=outcome.root_uuid).data
    assert result["best_alpha"] == 6 and result["fits"] == 6
    assert os.getpid() not in result["pids"] and len(result["pids"]) == 6
    assert sorted(ProcessExecutor.launched) == sorted(f"HybridFit(alpha={a}, rows=20)" for a in range(1, 7))
    fits = api.search(remote_ctx, "HybridFit")
    assert len(fits) == 6 and all(f.git_info and f.git_info.get("executor") == "farm" for f in fits)
    assert any(line.startswith("JOB STATUS") for line in farm.lines)
    assert any("[HybridFit(alpha=3, rows=20)]" in line for line in farm.lines)  # job log lines, prefixed
    ProcessExecutor.launched = []
    again = farm(params={"alphas": 6})
    assert not again.did_work and again.root_uuid == outcome.root_uuid and ProcessExecutor.launched == []
    # the reuse rules do not depend on the executor: the same pipeline all local reuses everything
    here = farm(params={"alphas": 6}, executors={"*": "here"})
    assert not here.did_work and here.root_uuid == outcome.root_uuid


def test_explain_names_the_executor_and_overrides_apply(farm, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    decisions = api.explain(remote_ctx, p.HybridEvaluate, params={"alphas": 2})
    shown = [str(d) for d in decisions]
    assert any("[executor farm]" in s and "HybridFit" in s for s in shown)
    assert not any("[executor" in str(d) for d in decisions if not d.label.startswith("HybridFit"))
    moved = api.explain(remote_ctx, p.HybridEvaluate, params={"alphas": 2}, executors={"HybridFit": "local"})
    assert all(d.executor == "local" for d in moved)
    assert executor_name(p.HybridFit, {"*": "x"}) == "x"
    assert executor_name(p.HybridFit, {"tests.functional.pipelines.HybridFit": "y", "*": "x"}) == "y"
    assert executor_name(p.HybridPrepare, {}) == "local"


def test_a_failed_remote_task_keeps_the_others_and_resumes(farm, remote_ctx: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HYBRID_FAIL_ALPHA", "2")
    with pytest.raises(ApplyError, match=r"HybridFit\(alpha=2, rows=20\) failed: process \d+ exited with 1") as failed:
        farm(params={"alphas": 4})
    assert failed.value.result == {"success": False, "did_work": True}
    kept = {b.params["alpha"] for b in api.search(remote_ctx, "HybridFit")}
    assert kept == {"1", "3", "4"}  # the jobs in flight finished; their bundles are here
    monkeypatch.delenv("HYBRID_FAIL_ALPHA")
    ProcessExecutor.launched = []
    outcome = farm(params={"alphas": 4})
    assert ProcessExecutor.launched == ["HybridFit(alpha=2, rows=20)"]  # only what failed runs again
    assert api.get(remote_ctx, None, uuid=outcome.root_uuid).data["fits"] == 4


def test_two_applies_share_one_job(farm, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A job already doing the same work (a host that died, or an apply at the same time) is
    attached to, never started twice: here its journal line and process are left by a first
    apply that was stopped right after submitting."""
    settings = load_settings()
    context = LocalStore(settings.root, remote_settings=settings.remote).context(remote_ctx)
    first = ProcessExecutor(
        settings=settings, config=ExecutorSettings(name="farm", type="docker"), context=context, build=True
    )
    first.prepare([], print)
    api.apply(remote_ctx, p.HybridPrepare)
    prepared = api.search(remote_ctx, "HybridPrepare")[0]
    prepared.commit().push()
    spec = RemoteTask(
        task_id="x", label="HybridFit(alpha=1, rows=20)", pipe_cls="tests.functional.pipelines.HybridFit",
        params={"alpha": "1", "rows": "20"}, processing_name=_pname(remote_ctx, 1), output_bundle="HybridFit",
        output_uuid="0b0b0b0b-0000-4000-8000-000000000001", pins={_pname_prepare(remote_ctx): prepared.uuid},
        code=_code(remote_ctx, 1),
    )  # fmt: skip
    first.submit([spec])
    ProcessExecutor.launched = []
    outcome = farm(params={"alphas": 2})
    assert ProcessExecutor.launched == ["HybridFit(alpha=2, rows=20)"]
    fit1 = [b for b in api.search(remote_ctx, "HybridFit") if b.params["alpha"] == "1"]
    assert [b.uuid for b in fit1] == ["0b0b0b0b-0000-4000-8000-000000000001"]
    assert outcome.did_work


def _pname(ctx: str, alpha: int) -> str:
    return next(
        d.processing_name for d in api.explain(ctx, p.HybridFit, params={"alpha": alpha}) if "HybridFit" in d.label
    )


def _code(ctx: str, alpha: int) -> str:
    return next(
        d.code_version for d in api.explain(ctx, p.HybridFit, params={"alpha": alpha}) if "HybridFit" in d.label
    )


def _pname_prepare(ctx: str) -> str:
    return next(d.processing_name for d in api.explain(ctx, p.HybridPrepare))


def test_bad_executor_setups_are_clear(farm, ctx: str, remote_ctx: str, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no executor 'nowhere' is configured"):
        api.apply(remote_ctx, p.HybridEvaluate, params={"alphas": 1}, executors={"HybridFit": "nowhere"})
    with pytest.raises(PipelineError, match="not CLASS=EXECUTOR"):
        parse_overrides(["HybridFit"])
    assert parse_overrides(["*=batch", "Fit = debug"]) == {"*": "batch", "Fit": "debug"}

    class Odd(p.HybridFit):
        executor_options = {"cpus": 2}

    with pytest.raises(PipelineError, match="unknown option 'cpus'"):
        executor_options(Odd)
    api.context("plain")
    settings = load_settings()
    plain = LocalStore(settings.root, remote_settings=settings.remote).context("plain")

    def make(name: str, _context: object) -> ProcessExecutor:
        return ProcessExecutor(
            settings=settings, config=ExecutorSettings(name=name, type="docker"), context=plain, build=True
        )

    request = ApplyRequest(context="plain", transform=p.HybridEvaluate, params={"alphas": 1})
    with pytest.raises(RemoteNotConfigured, match="context 'plain' has none"):
        apply_outcome(request, settings, make, print)


def test_a_job_is_adopted_only_for_exactly_the_same_work(farm, remote_ctx: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An earlier job's bundle serves a task only when recipe, code and inputs are the same and the
    run is not forced: after an edit of the Fit code (its declared code_version here) and again
    with --force-all, new jobs run, and the downstream task reads the bundles they made."""
    farm(params={"alphas": 2})
    assert sorted(ProcessExecutor.launched) == ["HybridFit(alpha=1, rows=20)", "HybridFit(alpha=2, rows=20)"]
    monkeypatch.setenv("HYBRID_FIT_CODE_VERSION", "2")  # seen by the task's process
    monkeypatch.setattr(p.HybridFit, "code_version", "2")  # and by the host's
    ProcessExecutor.launched = []
    edited = farm(params={"alphas": 2})
    assert len(ProcessExecutor.launched) == 2
    assert not any("already made its bundle" in line for line in farm.lines)
    fits = {d.uuid for d in api.get(remote_ctx, None, uuid=edited.root_uuid).dependencies}  # type: ignore[union-attr]
    assert {api.get(remote_ctx, None, uuid=u).git_info["version"] for u in fits} == {"declared:2"}  # type: ignore[union-attr]

    ProcessExecutor.launched = []
    forced = farm(params={"alphas": 2}, force_all=True)
    assert len(ProcessExecutor.launched) == 2
    refits = {d.uuid for d in api.get(remote_ctx, None, uuid=forced.root_uuid).dependencies}  # type: ignore[union-attr]
    assert len(refits) == 2 and not refits & fits
    assert not any("already made its bundle" in line for line in farm.lines)


def test_a_misspelled_executor_override_is_refused(farm, remote_ctx: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """`--executor Trian=...` names no class of the pipeline: refused before anything runs (with
    --explain too), naming the classes there are; a class of a planned task's module counts."""
    with pytest.raises(PipelineError, match=r"--executor HybridFt=here names no task class") as refused:
        farm(executors={"HybridFt": "here"})
    assert "HybridFit" in (refused.value.hint or "") and ProcessExecutor.launched == []
    explained = dsdt("apply", "--explain", "--executor", "HybridFt=here", "tests.functional.pipelines.HybridEvaluate")
    assert explained.code == 1 and "names no task class" in explained.err
    assert farm(executors={"tests.functional.pipelines.HybridFit": "here", "Transient": "here"}).success


def test_local_tasks_of_a_hybrid_apply_run_w_at_once(farm, remote_ctx: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`-w 3`: the three local naps run at the same time, each in a worker process, while the fit
    runs elsewhere; with one worker they run one after another in the apply's own process; a
    failing one fails the apply with its error and keeps the others' bundles."""
    parallel = farm(transform=p.HybridNaps, params={"count": 3, "seconds": 1.5}, workers=3)
    naps = api.get(remote_ctx, None, uuid=parallel.root_uuid).data["naps"]
    assert max(n["start"] for n in naps) < min(n["end"] for n in naps)  # all three overlapped
    assert os.getpid() not in {n["pid"] for n in naps} and len({n["pid"] for n in naps}) == 3
    serial = farm(transform=p.HybridNaps, params={"count": 3, "seconds": 0.5}, workers=1)
    naps = sorted(api.get(remote_ctx, None, uuid=serial.root_uuid).data["naps"], key=lambda n: n["start"])
    assert all(a["end"] <= b["start"] for a, b in zip(naps, naps[1:])) and {n["pid"] for n in naps} == {os.getpid()}
    monkeypatch.setenv("HYBRID_FAIL_NAP", "1")
    with pytest.raises(ApplyError, match=r"HybridNap\(n=1, seconds=0.2\) failed: .*nap 1 woke badly"):
        farm(transform=p.HybridNaps, params={"count": 3, "seconds": 0.2}, workers=3)
    assert sorted(b.params["n"] for b in api.search(remote_ctx, "HybridNap") if b.params["seconds"] == "0.2") == [
        "0",
        "2",
    ]
