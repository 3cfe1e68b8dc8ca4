"""dsdt run end to end: images from pipes/, a bucket on moto as the remote, Local and AWS Batch."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.dockerize.images import ImageResult
from disdat_luigi.errors import (
    BundleNotFound,
    DockerUnavailable,
    ImageNotFound,
    NotCommitted,
    PipeClassNotFound,
    QueueNotFound,
    RemoteNotConfigured,
)
from tests.conftest import wait_for_batch_job
from tests.docker.conftest import moto_batch_queue

FAILING = """
import luigi
from disdat_luigi.pipe import PipeTask


class Prepare(PipeTask):
    def pipe_run(self):
        return [1, 2, 3]


class Explode(PipeTask):
    def pipe_requires(self):
        self.add_dependency("prepared", Prepare, {})

    def pipe_run(self, prepared):
        raise RuntimeError("the model diverged")
"""


@pytest.fixture
def run_env(docker_env: Path, built_pipes: list[ImageResult], bucket: str, dsdt, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """The documented set-up from the command line: a context bound to the bucket, a committed input."""
    assert dsdt("context", "work").code == 0
    assert dsdt("switch", "work").code == 0
    assert dsdt("remote", "shared", f"s3://{bucket}/runs").code == 0
    data = tmp_path / "readings.csv"
    data.write_text("temp,hum\n1,10\n3,30\n8,80\n")
    assert dsdt("add", "readings_in", str(data)).code == 0
    assert dsdt("commit", "readings_in").code == 0
    return "work"


@pytest.fixture
def batch_queue(run_env: str, docker_env: Path, pipes_copy: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A moto Batch queue (unmanaged compute environment) whose jobs run with host networking."""
    queue = moto_batch_queue(monkeypatch)
    cfg = docker_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace("aws_batch_queue =\n", f"aws_batch_queue = {queue}\n"))
    api.dockerize(pipes_copy, "etl.summarize.Summarize", push=True)
    return queue


def _summary_run(dsdt, *extra: str, output: str = "summary"):  # type: ignore[no-untyped-def]
    return dsdt("run", *extra, "readings_in", output, "etl.summarize.Summarize", "--column", "temp")


def test_documented_local_flow(run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """dsdt run with the Local backend leaves the output, with its lineage, in the local context."""
    result = _summary_run(dsdt)
    assert result.code == 0, result.err
    name, uuid_ = result.out.split()
    output = api.get(run_env, None, uuid=uuid_)
    assert name == "summary" and output.data == {"rows": 3, "mean": 4.0, "max": 8.0, "reference_rows": 24}
    assert output.is_committed
    inputs = {d.arg_name: d.name for d in output.dependencies}
    assert inputs == {"reference": "readings", "pipeline_input": "readings_in"}
    assert output.git_info is not None and output.git_info["image"].startswith("c")
    names = [r.name for r in api.lineage(run_env, uuid_)]
    assert names[0] == "summary" and set(names[1:]) == {"readings", "readings_in"}
    assert all(r.found for r in api.lineage(run_env, uuid_))


def test_second_run_reuses_and_force_reruns(run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """The same run again makes no new bundle; --force makes one."""
    first = _summary_run(dsdt).out.split()[1]
    again = _summary_run(dsdt)
    assert "nothing started" in again.err  # planned against the remote on the host: no container
    second = again.out.split()[1]
    assert second == first and len(api.search(run_env, "summary")) == 1
    forced = _summary_run(dsdt, "--force").out.split()[1]
    assert forced != first and len(api.search(run_env, "summary")) == 2
    assert len(api.search(run_env, "readings")) == 1  # only the root re-ran


def test_failing_pipeline_reports_and_keeps_intermediates(
    run_env: str, docker_env: Path, tmp_path: Path, dsdt, bucket: str
) -> None:  # type: ignore[no-untyped-def]
    """A raising pipeline: non-zero exit, the error and the log tail; finished bundles are on the remote."""
    root = tmp_path / "failing"
    (root / "boom").mkdir(parents=True)
    (root / "boom" / "__init__.py").write_text("")
    (root / "boom" / "tasks.py").write_text(FAILING)
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='boom', packages=['boom'])\n")
    api.dockerize(root, "boom.tasks.Explode")
    result = dsdt("run", "-", "-", "boom.tasks.Explode")
    assert result.code == 1
    assert "failed in its container" in result.err and "RuntimeError: the model diverged" in result.err
    api.context("check")
    api.remote("check", "shared", f"s3://{bucket}/runs")
    assert [b.name for b in api.pull("check", "Prepare")] == ["Prepare"]


def test_batch_without_wait_then_pull(batch_queue: str, run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """AWSBatch returns the job id at once; the job runs in moto; dsdt pull brings the output."""
    result = _summary_run(dsdt, "--backend", "AWSBatch", "--use-aws-session-token", "900", output="batch_summary")
    assert result.code == 0, result.err
    assert wait_for_batch_job(result.out.strip()) == "SUCCEEDED"
    assert dsdt("pull", "batch_summary", "-l").code == 0
    assert api.get(run_env, "batch_summary").data["max"] == 8.0


def test_batch_with_wait_pulls_the_output(batch_queue: str, run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """--wait follows the job, streams its log and pulls the output."""
    result = _summary_run(dsdt, "--backend", "AWSBatch", "--wait", "--use-aws-session-token", "900", output="waited")
    assert result.code == 0, result.err
    assert "DISDAT_OUTPUT_BUNDLE" not in result.err  # the entry point's line for the host is not shown
    name, uuid_ = result.out.strip().splitlines()[-1].split()  # (moto, in this process, may print first)
    assert api.get(run_env, None, uuid=uuid_).data["rows"] == 3


def test_batch_credentials_are_temporary_and_only_in_overrides(batch_queue: str, run_env: str) -> None:
    """Session-token credentials go into the job's overrides only; the job definition has none."""
    result = api.run(
        run_env, "readings_in", "creds", "etl.summarize.Summarize", backend="AWSBatch", use_aws_session_token=900
    )
    job = boto3.client("batch").describe_jobs(jobs=[result.job_id])["jobs"][0]
    definition = boto3.client("batch").describe_job_definitions(jobDefinitions=[job["jobDefinition"]])[
        "jobDefinitions"
    ][0]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(definition)
    assert "testing" not in json.dumps(definition)
    env = {e["name"]: e["value"] for e in job["container"]["environment"]}
    assert env["AWS_SESSION_TOKEN"] and env["AWS_ACCESS_KEY_ID"] != "testing"
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert wait_for_batch_job(result.job_id) == "SUCCEEDED"  # the temporary credentials work in the job


def test_batch_no_submit_changes_nothing_and_definitions_are_reused(
    batch_queue: str, run_env: str, dsdt, bucket: str
) -> None:  # type: ignore[no-untyped-def]
    """--no-submit pushes, registers and submits nothing and prints the job definition and the
    exact submission; job definitions are reused while image, resources and role match, any
    matching revision (going back to the default resources registers nothing new)."""
    batch = boto3.client("batch")
    name = "disdat-etl-summarize-job-definition"

    def revisions() -> list[int]:
        found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]
        return sorted(d["revision"] for d in found)

    def remote_keys() -> list[str]:
        listed = boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    before_keys, before_revisions = remote_keys(), revisions()
    prepared = dsdt("run", "--backend", "AWSBatch", "--no-submit", "--gpus", "1", "--timeout", "120", "--retries",
                    "2", "--tag", "team:ml", "readings_in", "-", "etl.summarize.Summarize")  # fmt: skip
    assert prepared.code == 0, prepared.err
    shown = json.loads(prepared.out)
    assert remote_keys() == before_keys and revisions() == before_revisions
    assert shown["job_definition"]["jobDefinitionName"] == name
    submission = shown["submission"]
    assert submission["jobQueue"] == batch_queue and submission["timeout"] == {"attemptDurationSeconds": 120}
    assert submission["retryStrategy"]["attempts"] == 3 and submission["tags"]["team"] == "ml"
    assert {"type": "GPU", "value": "1"} in submission["containerOverrides"]["resourceRequirements"]
    assert submission["containerOverrides"]["command"][-1] == "etl.summarize.Summarize"

    def submitted_definition(*extra: str) -> str:
        result = _summary_run(dsdt, "--backend", "AWSBatch", *extra, output="defs")
        assert result.code == 0, result.err
        job_id = result.out.strip()
        wait_for_batch_job(job_id)
        return str(batch.describe_jobs(jobs=[job_id])["jobs"][0]["jobDefinition"])

    first = submitted_definition()
    assert submitted_definition() == first
    bigger = submitted_definition("--vcpus", "2", "--memory", "4096")
    assert bigger != first
    registered = revisions()
    assert submitted_definition() == first and revisions() == registered  # going back registers nothing


def test_batch_failure_shows_reason_and_log(batch_queue: str, run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """A failing Batch job with --wait exits non-zero with the log tail (here: no credentials given)."""
    result = _summary_run(dsdt, "--backend", "AWSBatch", "--wait", output="nocreds")
    assert result.code == 1
    assert "AWS Batch job" in result.err and "failed" in result.err and "no AWS credentials" in result.err


def test_bad_run_inputs(run_env: str, docker_env: Path, dsdt, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Each bad input is a one-line error with a hint and a non-zero exit."""
    missing_image = dsdt("run", "-", "-", "nosuch.module.Task")
    assert missing_image.code == 1 and "no local image disdat-nosuch-module:latest" in missing_image.err
    assert "dsdt dockerize" in missing_image.err
    unknown_class = dsdt("run", "-", "-", "etl.ingest.Nope")  # caught on the host, nothing started
    assert unknown_class.code == 1 and "has no class 'Nope'" in unknown_class.err
    bad_parameter = dsdt("run", "-", "-", "etl.summarize.Summarize", "--raw_bundle", "x")
    assert bad_parameter.code == 1 and "raw_bundle" in bad_parameter.err
    api.Bundle(run_env, name="draft", data=1)
    uncommitted = dsdt("run", "draft", "-", "etl.summarize.Summarize")
    assert uncommitted.code == 1 and "is not committed" in uncommitted.err
    unknown_input = dsdt("run", "no_such_input", "-", "etl.summarize.Summarize")
    assert unknown_input.code == 1 and "no bundle with name 'no_such_input'" in unknown_input.err
    with pytest.raises(NotCommitted):
        api.run(run_env, "draft", "-", "etl.summarize.Summarize")
    with pytest.raises(BundleNotFound):
        api.run(run_env, "no_such_input", "-", "etl.summarize.Summarize")
    with pytest.raises(ImageNotFound):
        api.run(run_env, "-", "-", "nosuch.module.Task")
    with pytest.raises(PipeClassNotFound):
        api.run(run_env, "-", "-", "etl.ingest.Nope")


def test_run_needs_a_remote(docker_env: Path, built_pipes: list[ImageResult], dsdt) -> None:  # type: ignore[no-untyped-def]
    """A context without a remote cannot run containers."""
    api.context("lonely")
    with pytest.raises(RemoteNotConfigured, match="not bound to a remote"):
        api.run("lonely", "-", "-", "etl.summarize.Summarize")


def test_run_engine_unreachable(run_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no Docker engine the run fails clearly."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable, match="cannot reach the Docker engine"):
        api.run(run_env, "readings_in", "-", "etl.summarize.Summarize")


def test_batch_queue_missing(run_env: str, batch_queue: str, docker_env: Path) -> None:
    """A queue that does not exist is named in the error."""
    cfg = docker_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace(f"aws_batch_queue = {batch_queue}", "aws_batch_queue = nope-queue"))
    with pytest.raises(QueueNotFound, match="nope-queue"):
        api.run(run_env, "readings_in", "-", "etl.summarize.Summarize", backend="AWSBatch")


def test_batch_needs_a_pushed_image(run_env: str, docker_env: Path, pipes_copy: Path, tmp_path: Path) -> None:
    """AWSBatch runs the registry copy of the exact local image: an unpushed one is a clear error
    when run may not push (--no-submit), and an image older than the code is refused with
    --no-build, naming the command that rebuilds it."""
    root = tmp_path / "pipes"
    shutil.copytree(pipes_copy, root)
    (root / "etl" / "clean.py").write_text((root / "etl" / "clean.py").read_text() + "\n# unpushed\n")
    api.dockerize(root, "etl.clean.Clean")
    cfg = docker_env / "config" / "disdat.cfg"
    cfg.write_text(cfg.read_text().replace(f"pipe_root = {pipes_copy}\n", f"pipe_root = {root}\n"))
    with pytest.raises(ImageNotFound, match="was never pushed"):
        api.run(run_env, "-", "-", "etl.clean.Clean", backend="AWSBatch", no_submit=True)
    (root / "etl" / "clean.py").write_text((root / "etl" / "clean.py").read_text() + "\n# edited since\n")
    with pytest.raises(ImageNotFound, match="does not hold the current code") as caught:
        api.run(run_env, "-", "-", "etl.clean.Clean", backend="AWSBatch", build=False)
    assert f"dsdt dockerize --push {root} etl.clean.Clean" in (caught.value.hint or "")


JOBS = """
import os
import signal
import sys
import time

import luigi
from disdat_luigi.pipe import PipeTask


class Chatty(PipeTask):
    lines = luigi.IntParameter(default=3)

    def pipe_run(self):
        for i in range(self.lines):
            print(f"chatty line {i}", file=sys.stderr)
        return self.lines


class Killed(PipeTask):
    def pipe_run(self):
        # the container's status after the kernel's OOM killer sends SIGKILL: 128 + 9. (Inside the
        # container this process is PID 1, which ignores a SIGKILL sent from its own namespace.)
        sys.stderr.flush()
        os._exit(128 + signal.SIGKILL)


class Sleeper(PipeTask):
    def pipe_run(self):
        time.sleep(300)
        return 1


class UsesReference(PipeTask):
    def pipe_requires(self):
        found = self.add_external_dependency("reference", None, None, human_name="reference")
        assert found is not None, "no bundle named reference"

    def pipe_run(self, reference):
        return sum(reference)
"""


TOKEN = ("--use-aws-session-token", "900")  # moto gives jobs no credentials of their own


@pytest.fixture
def jobs_root(batch_queue: str, docker_env: Path, tmp_path: Path) -> Path:
    """A pipe root of small job shapes, built and pushed; status polled every second."""
    root = tmp_path / "jobs"
    (root / "shapes").mkdir(parents=True)
    (root / "shapes" / "__init__.py").write_text("")
    (root / "shapes" / "tasks.py").write_text(JOBS + f"\n# {uuid.uuid4().hex}\n")  # a fresh image per run
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='shapes', packages=['shapes'])\n")
    api.dockerize(root, "shapes.tasks.Chatty", push=True)
    cfg = docker_env / "config" / "disdat.cfg"
    text = cfg.read_text().replace("poll_seconds = 5\n", "poll_seconds = 1\n")
    cfg.write_text(text.replace("pipe_root = ", f"pipe_root = {root}\n# was: ", 1))
    return root


def test_batch_jobs_followed_explained_found_again(jobs_root: Path, run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """A 12,000-line job is followed to its last line; a task killed with SIGKILL (exit 137) is
    explained as out of memory, also to `dsdt pull` of its output; a detached job is found again
    with `dsdt jobs`, read with `dsdt logs`, and cancelled; `dsdt wait` pulls a detached output."""
    tasks = jobs_root / "shapes" / "tasks.py"
    tasks.write_text(tasks.read_text().replace("chatty line {i}", "edited line {i}"))  # no dockerize
    stale = dsdt("run", "--backend", "AWSBatch", *TOKEN, "--no-build", "--wait", "-", "x", "shapes.tasks.Chatty")
    assert stale.code == 1 and "does not hold the current code" in stale.err and "dsdt dockerize --push" in stale.err
    rebuilt = dsdt("run", "--backend", "AWSBatch", *TOKEN, "--wait", "-", "edited", "shapes.tasks.Chatty")
    assert rebuilt.code == 0, rebuilt.err[-2000:]
    assert "edited line 2" in rebuilt.err and "building" in rebuilt.err  # rebuilt, pushed, run
    tasks.write_text(tasks.read_text().replace("edited line {i}", "chatty line {i}"))
    long = dsdt(
        "run", "--backend", "AWSBatch", *TOKEN, "--wait", "-", "long", "shapes.tasks.Chatty", "--lines", "12000"
    )
    assert long.code == 0, long.err[-2000:]
    assert "chatty line 11999" in long.err and "DISDAT_OUTPUT_BUNDLE" not in long.err
    assert "RUNNING" in long.err or "SUCCEEDED" in long.err
    assert api.get(run_env, "long").data == 12000
    provenance = api.get(run_env, "long").git_info or {}
    assert provenance["batch_memory_mib"] == "2048" and provenance["batch_job_id"]  # where it ran, with what
    jobs_before = dsdt("jobs").out.count("\n")
    again = dsdt(
        "run", "--backend", "AWSBatch", *TOKEN, "--wait", "-", "long", "shapes.tasks.Chatty", "--lines", "12000"
    )
    assert again.code == 0 and "nothing started" in again.err and "submitted" not in again.err
    assert again.out.split()[1] == api.get(run_env, "long").uuid and dsdt("jobs").out.count("\n") == jobs_before

    killed = dsdt("run", "--backend", "AWSBatch", *TOKEN, "--wait", "-", "killed", "shapes.tasks.Killed")
    assert killed.code == 1 and "exit code 137" in killed.err and "out of memory" in killed.err
    assert "--memory 4096" in killed.err
    pulled = dsdt("pull", "killed")
    assert pulled.code == 1 and "exit code 137" in pulled.err

    detached = dsdt("run", "--backend", "AWSBatch", *TOKEN, "--detach", "-", "later", "shapes.tasks.Chatty")
    assert detached.code == 0 and "dsdt wait" in detached.err
    job_id = detached.out.strip()
    waited = dsdt("wait", job_id)
    assert waited.code == 0, waited.err and waited.out.split()[0] == "later"
    assert api.get(run_env, "later").data == 3
    assert "chatty line 2" in dsdt("logs", job_id).out

    sleeping = dsdt("run", "--backend", "AWSBatch", *TOKEN, "-", "never", "shapes.tasks.Sleeper")
    sleeper = sleeping.out.strip()
    assert dsdt("cancel", sleeper).code == 0
    assert wait_for_batch_job(sleeper) == "FAILED"
    listed = dsdt("jobs").out
    assert "JOB ID" in listed and job_id in listed and sleeper in listed
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    assert "SUCCEEDED" in rows[job_id] and "FAILED" in rows[sleeper] and "shapes.tasks.Chatty" in rows[job_id]
    assert dsdt("cancel", "no-such-job").code == 1


def test_batch_job_finds_external_inputs_and_ctrl_c_terminates(jobs_root: Path, run_env: str, dsdt) -> None:  # type: ignore[no-untyped-def]
    """Inside the job an external dependency by name is found on the remote; Ctrl-C while
    following a job terminates it and says so."""
    import os
    import signal
    import subprocess
    import sys
    import time

    api.Bundle(run_env, name="reference", data=[1, 2, 3]).commit().push()
    used = dsdt("run", "--backend", "AWSBatch", *TOKEN, "--wait", "-", "used", "shapes.tasks.UsesReference")
    assert used.code == 0, used.err[-2000:]
    assert api.get(run_env, "used").data == 6

    follower = subprocess.Popen(
        [sys.executable, "-m", "disdat_luigi.cli.main", "run", "--backend", "AWSBatch", *TOKEN, "--wait",
         "-", "never", "shapes.tasks.Sleeper"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert follower.stderr is not None
    seen: list[str] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = follower.stderr.readline()
        seen.append(line)
        if ": RUNNING (" in line:
            break
    job_id = next(line.split()[1].rstrip(":") for line in seen if line.startswith("job "))
    follower.send_signal(signal.SIGINT)
    rest = follower.communicate(timeout=60)[1]
    assert follower.returncode == 130 and f"terminated AWS Batch job {job_id}" in rest
    assert wait_for_batch_job(job_id) == "FAILED"
