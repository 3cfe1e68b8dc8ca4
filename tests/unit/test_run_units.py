"""run/ without Docker or AWS: requests and arguments, the output marker, the backend registry,
the Batch backend and the AWS wrappers against stubbed clients, the Local backend against a
stubbed docker client, and the host side of `dsdt run` with a stubbed backend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from disdat_luigi.config import EXECUTOR_TYPES, DockerSettings, RemoteSettings, RunSettings, Settings
from disdat_luigi.dockerize import engine
from disdat_luigi.errors import (
    ConfigError,
    CredentialsError,
    ImageNotFound,
    JobFailed,
    NotCommitted,
    QueueNotFound,
    RunError,
)
from disdat_luigi.run import runner
from disdat_luigi.run.batch import client as batch_client
from disdat_luigi.run.batch import state
from disdat_luigi.run.batch.spec import job_definition_name
from disdat_luigi.run.executors import EXECUTORS, executor_type
from disdat_luigi.run.executors.batch import BatchExecutor
from disdat_luigi.run.executors.docker import DockerExecutor
from disdat_luigi.run.executors.local import LocalExecutor
from disdat_luigi.run.output import OUTPUT_MARKER, output_line, output_of
from disdat_luigi.run.request import (
    BackendName,
    ContainerJob,
    RunRequest,
    RunResult,
    RunStatus,
    backend_name,
    params_to_args,
)


def _settings(tmp_path: Path, **run: Any) -> Settings:
    return Settings(
        config_path=tmp_path / "cfg",
        root=tmp_path / "home",
        docker=DockerSettings(registry="127.0.0.1:5999", network_mode="host"),
        run=RunSettings(**{"aws_batch_queue": "q", "vcpus": 2, "memory": 4096, **run}),
    )


def _request(**fields: Any) -> RunRequest:
    return RunRequest(**{"context": "c", "input_bundle": "-", "output_bundle": "-", "pipe_cls": "etl.x.X", **fields})


JOB = ContainerJob(image="reg/disdat-etl-x:c1", image_name="disdat-etl-x", command=("--a", "b"), environment={"E": "1"})


# --- values ------------------------------------------------------------------------------------------


def test_parameters_become_the_text_the_entry_point_parses() -> None:
    """Strings stay, dates are ISO, everything else JSON; names get dashes."""
    args = params_to_args({"name": "x", "day": dt.date(2021, 2, 3), "items": [1, 2], "my_flag": True})
    assert args == ("--name", "x", "--day", "2021-02-03", "--items", "[1, 2]", "--my-flag", "true")
    assert params_to_args(None) == ()


def test_the_output_marker_is_the_last_one_printed() -> None:
    lines = ["noise", output_line("first", "u1"), f"{OUTPUT_MARKER} broken", output_line("out", "u2"), "tail"]
    assert output_of(lines) == ("out", "u2") and output_of(["nothing"]) == (None, None)


def test_executors_by_name() -> None:
    """One registry of executor types (every type the config accepts), imported when asked for;
    each `dsdt run --backend` runs on one of them; unknown names are errors naming the choices."""
    assert executor_type("local") is LocalExecutor and executor_type("docker") is DockerExecutor
    assert executor_type("aws_batch") is BatchExecutor and set(EXECUTORS) == set(EXECUTOR_TYPES)
    assert set(runner.RUN_EXECUTORS) == set(BackendName) and set(runner.RUN_EXECUTORS.values()) <= set(EXECUTORS)
    with pytest.raises(ConfigError, match="no executor type 'k8s'") as unknown:
        executor_type("k8s")
    assert unknown.value.hint == "use one of: local, docker, aws_batch"
    assert backend_name("AWSBatch") is BackendName.AWS_BATCH
    with pytest.raises(RunError, match="unknown backend 'Kubernetes'") as caught:
        backend_name("Kubernetes")
    assert caught.value.hint == "choose one of Local, AWSBatch"
    assert RunStatus.SUCCEEDED == "succeeded"


# --- the Batch backend ----------------------------------------------------------------------------------


class StubBatch:
    """The Batch client module's functions, recorded; the job goes through `states`, printing `log`."""

    def __init__(self, states: list[dict[str, Any]], log: list[str], definitions: list[dict[str, Any]] | None = None):
        self.states = states
        self.log = log
        self.definitions = definitions or []
        self.submitted: list[dict[str, Any]] = []
        self.registered: list[dict[str, Any]] = []
        self.terminated: list[str] = []
        self.environments: list[dict[str, Any]] = [  # an unmanaged environment: no limits known
            {"computeEnvironmentName": "own", "state": "ENABLED", "status": "VALID"}
        ]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            batch_client, "active_job_definitions", lambda name: sorted(self.definitions, key=lambda d: -d["revision"])
        )
        monkeypatch.setattr(batch_client, "register_job_definition", self.register)
        monkeypatch.setattr(batch_client, "submit_job", self.submit)
        monkeypatch.setattr(batch_client, "describe_jobs", self.describe)
        monkeypatch.setattr(batch_client, "log_page", lambda stream, token: (
            [{"message": m} for m in self.log[int(token or 0):]], str(len(self.log))))  # fmt: skip
        monkeypatch.setattr(batch_client, "session_credentials", lambda seconds: {"AWS_SESSION_TOKEN": f"tok{seconds}"})
        monkeypatch.setattr(batch_client, "terminate_job", lambda job_id, reason: self.terminated.append(job_id))
        monkeypatch.setattr(batch_client, "compute_environments", lambda queue: self.environments)
        monkeypatch.setattr(batch_client, "instance_sizes", lambda types: {"m5.large": (2, 8192, 0)})

    def describe(self, ids: list[str]) -> list[dict[str, Any]]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return [{"jobId": ids[0], "jobName": "n", **state}]

    def register(self, name: str, properties: dict[str, Any]) -> dict[str, Any]:
        definition = {
            "jobDefinitionName": name,
            "jobDefinitionArn": f"arn:{name}:{len(self.definitions) + 1}",
            "revision": len(self.definitions) + 1,
            "containerProperties": properties,
        }
        self.registered.append(properties)
        self.definitions.append(definition)
        return definition

    def submit(self, **submission: Any) -> str:
        self.submitted.append(submission)
        return f"job-{len(self.submitted)}"


def _executor(tmp_path: Path, settings: Settings, backend: BackendName, log: Any = None) -> Any:
    """`dsdt run`'s executor for `backend`, on a context of its own."""
    from disdat_luigi.store.store import LocalStore

    store = LocalStore(tmp_path / "home")
    context = store.context("c") if "c" in store.list_contexts() else store.create_context("c")
    return runner.run_executor(_request(backend=backend), settings, context, log or (lambda _line: None))


def _batch(tmp_path: Path, log: Any = None, **run: Any) -> BatchExecutor:
    settings = _settings(tmp_path, poll_seconds=0.0, **run)
    executor: BatchExecutor = _executor(tmp_path, settings, BackendName.AWS_BATCH, log)
    return executor


def test_batch_job_definitions_are_reused_when_they_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image, vCPUs, memory and role decide; any matching active revision is reused (going back
    to earlier resources registers nothing new)."""
    stub = StubBatch([{"status": "SUCCEEDED"}], [])
    stub.install(monkeypatch)
    backend = _batch(tmp_path, job_role_arn="arn:role")
    first = backend.job_definition(_request(), JOB)
    assert backend.job_definition(_request(), JOB) is first and len(stub.registered) == 1
    assert first["containerProperties"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "4096"},
    ]
    assert first["containerProperties"]["jobRoleArn"] == "arn:role"
    backend.job_definition(_request(vcpus=8), JOB)
    assert len(stub.registered) == 2
    assert backend.job_definition(_request(), JOB) is first and len(stub.registered) == 2
    assert job_definition_name("team/disdat-x") == "team-disdat-x-job-definition"


def test_batch_no_submit_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-submit registers and submits nothing; it shows the definition and the exact submission
    (timeout, retry strategy, tags, GPU), with secrets masked."""
    stub = StubBatch([{"status": "SUCCEEDED"}], [])
    stub.install(monkeypatch)
    result = _batch(tmp_path, tags=(("team", "ml"),)).launch(
        _request(no_submit=True, gpus=1, timeout=3600, retries=2, tags={"run": "7"}, queue="gpu-q"), JOB
    )
    assert result.status is RunStatus.PREPARED and not stub.registered and not stub.submitted
    shown = result.submission
    assert shown is not None and shown["jobQueue"] == "gpu-q" and shown["timeout"] == {"attemptDurationSeconds": 3600}
    assert shown["retryStrategy"]["attempts"] == 3
    assert shown["tags"] == {"team": "ml", "run": "7", "disdat:pipe": "etl.x.X"} and shown["propagateTags"]
    assert {"type": "GPU", "value": "1"} in shown["containerOverrides"]["resourceRequirements"]
    assert shown["jobName"].startswith("X-")


def test_batch_launch_submits_follows_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job is submitted with its command and environment (session credentials only without a
    role, with a warning); followed, its status changes and log are told and its output read;
    --detach returns at once."""
    stub = StubBatch(
        [{"status": "RUNNABLE"}, {"status": "RUNNING"}, {"status": "SUCCEEDED", "container": {"logStreamName": "s"}}],
        ["hello", output_line("out", "u1")],
    )
    stub.install(monkeypatch)
    lines: list[str] = []
    backend = _batch(tmp_path, lines.append)
    submitted = backend.launch(_request(use_aws_session_token=900), JOB)
    assert submitted.status is RunStatus.SUBMITTED and submitted.job_id == "job-1"
    overrides = stub.submitted[0]["containerOverrides"]
    assert stub.submitted[0]["jobQueue"] == "q" and overrides["command"] == ["--a", "b"]
    assert {"name": "AWS_SESSION_TOKEN", "value": "tok900"} in overrides["environment"]
    assert any("readable by anyone who can describe jobs" in line for line in lines)
    assert {"name": "AWS_SESSION_TOKEN", "value": "***"} in (submitted.submission or {})["containerOverrides"][
        "environment"
    ]
    assert backend.launch(_request(wait=True, detach=True), JOB).status is RunStatus.SUBMITTED
    followed = backend.launch(_request(wait=True), JOB)
    assert (followed.status, followed.output_name, followed.output_uuid) == (RunStatus.SUCCEEDED, "out", "u1")
    assert "hello" in lines and any(line.startswith("job job-3: RUNNABLE") for line in lines)
    assert any(line.startswith("job job-3: SUCCEEDED") for line in lines)


def test_batch_failures_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed job names its reason, exit code and log tail; exit 137 is called out of memory
    and, with memory_retry_factor, retried once with more memory (capped by the queue)."""
    killed = {"status": "FAILED", "statusReason": "Essential container in task exited", "container": {"exitCode": 137}}
    stub = StubBatch([killed], ["Traceback", "boom"])
    stub.install(monkeypatch)
    backend = _batch(tmp_path)
    with pytest.raises(JobFailed, match="exit code 137") as caught:
        backend.launch(_request(wait=True), JOB)
    assert "out of memory: it asked for 4096 MiB" in caught.value.message and "boom" in (caught.value.hint or "")
    stub.environments = [
        {"computeEnvironmentName": "ce", "state": "ENABLED", "status": "VALID",
         "computeResources": {"maxvCpus": 16, "instanceTypes": ["m5.large"]}}
    ]  # fmt: skip
    stub.states = [killed, {"status": "SUCCEEDED"}]
    stub.log = ["", output_line("out", "u2")]
    retried = _batch(tmp_path, memory_retry_factor=4.0).launch(_request(wait=True), JOB)
    assert retried.output_uuid == "u2"
    memories = [
        next(r["value"] for r in s["containerOverrides"]["resourceRequirements"] if r["type"] == "MEMORY")
        for s in stub.submitted[-2:]
    ]
    assert memories == ["4096", "8192"]  # 4x asked, the largest instance (m5.large) gives 8192
    with pytest.raises(RunError, match="no AWS Batch queue"):
        _batch(tmp_path, aws_batch_queue=None).launch(_request(), JOB)


def test_batch_refuses_jobs_no_compute_environment_can_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before submission: more vCPUs than any compute environment allows, or a disabled
    environment, are refused with the numbers; --vcpus 0 is an error."""
    stub = StubBatch([{"status": "SUCCEEDED"}], [])
    stub.install(monkeypatch)
    stub.environments = [
        {"computeEnvironmentName": "ce", "state": "ENABLED", "status": "VALID",
         "computeResources": {"maxvCpus": 16, "instanceTypes": ["m5.large"]}}
    ]  # fmt: skip
    with pytest.raises(RunError, match="can give 64 vCPUs; the largest allows 16"):
        _batch(tmp_path).launch(_request(vcpus=64), JOB)
    with pytest.raises(RunError, match="at least 1 vCPU"):
        _batch(tmp_path).launch(_request(vcpus=0), JOB)
    stub.environments[0]["state"] = "DISABLED"
    with pytest.raises(RunError, match="no compute environment of queue q is enabled"):
        _batch(tmp_path).launch(_request(), JOB)
    assert not stub.submitted


def test_ctrl_c_terminates_the_followed_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = StubBatch([{"status": "RUNNING"}], [])
    stub.install(monkeypatch)

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    import time

    monkeypatch.setattr(
        "disdat_luigi.run.batch.state.time", SimpleNamespace(sleep=interrupted, monotonic=time.monotonic)
    )
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _batch(tmp_path, lines.append).launch(_request(wait=True), JOB)
    assert stub.terminated == ["job-1"] and "terminated AWS Batch job job-1" in lines


def test_batch_runs_the_pushed_content_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry copy of the local image's content tag; no registry, an image not built by
    dockerize, or one never pushed are clear errors."""
    labels = {"disdat.content-tag": "c123"}
    known = {"disdat-etl-x:latest", "127.0.0.1:5999/disdat-etl-x:c123", "123.ecr/disdat-etl-x:c123"}
    monkeypatch.setattr(engine, "connect", lambda: "client")
    monkeypatch.setattr(engine, "get_image", lambda _c, ref: SimpleNamespace(labels=labels if ref in known else {}))
    monkeypatch.setattr(engine, "image_exists", lambda _c, ref: ref in known)
    monkeypatch.setattr(engine, "ecr_login", lambda name: ("123.ecr", {}))
    backend = _batch(tmp_path)
    assert backend.image_reference("disdat-etl-x") == "127.0.0.1:5999/disdat-etl-x:c123"
    ecr = Settings(config_path=tmp_path, root=tmp_path, docker=DockerSettings(registry="*ECR*"))
    assert (
        _executor(tmp_path, ecr, BackendName.AWS_BATCH).image_reference("disdat-etl-x") == "123.ecr/disdat-etl-x:c123"
    )
    known.add("disdat-etl-y:latest")  # built locally, never pushed
    with pytest.raises(ImageNotFound, match="never pushed"):
        backend.image_reference("disdat-etl-y")
    with pytest.raises(RunError, match="from a registry"):
        _executor(tmp_path, Settings(config_path=tmp_path, root=tmp_path), BackendName.AWS_BATCH).image_reference("x")
    labels.clear()
    with pytest.raises(ImageNotFound, match="not built by dsdt dockerize"):
        backend.image_reference("disdat-etl-x")


# --- the AWS wrappers ---------------------------------------------------------------------------------


class FakeClient:
    """Answers the calls run/batch_client.py makes; `fail` maps a method name to the error it raises."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

        class NotFound(Exception):
            pass

        self.exceptions = SimpleNamespace(ResourceNotFoundException=NotFound)

    def __getattr__(self, name: str) -> Any:
        answers = {
            "describe_job_queues": {"jobQueues": []},
            "register_job_definition": {"revision": 3},
            "submit_job": {"jobId": "j-9"},
            "describe_jobs": {"jobs": []},
            "terminate_job": {},
            "get_session_token": {"Credentials": {"AccessKeyId": "A", "SecretAccessKey": "S", "SessionToken": "T"}},
            "get_log_events": {"events": [{"message": "one\ntwo"}], "nextForwardToken": "f/1"},
            "describe_instance_types": {"InstanceTypes": [
                {"InstanceType": "p3.2xlarge", "VCpuInfo": {"DefaultVCpus": 8}, "MemoryInfo": {"SizeInMiB": 62464},
                 "GpuInfo": {"Gpus": [{"Count": 1}]}}]},
        }  # fmt: skip

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            if name in self.fail:
                raise self.fail[name]
            return answers[name]

        return call

    def get_paginator(self, name: str) -> Any:
        pages = [{"jobDefinitions": [{"revision": 1}, {"revision": 3}]}, {"jobDefinitions": [{"revision": 2}]}]
        return SimpleNamespace(paginate=lambda **kwargs: iter(pages))


def test_aws_wrappers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queues, job definitions (every active revision, newest first), submission, job lookup,
    termination, session tokens, instance sizes and log pages, translated into disdat errors."""
    client = FakeClient()
    monkeypatch.setattr(batch_client, "_client", lambda service: client)
    with pytest.raises(QueueNotFound):
        batch_client.check_queue("q")
    with pytest.raises(QueueNotFound):
        batch_client.compute_environments("q")
    assert [d["revision"] for d in batch_client.active_job_definitions("d")] == [3, 2, 1]
    assert batch_client.register_job_definition("d", {"image": "i"}) == {"revision": 3}
    assert batch_client.submit_job(jobName="n", jobQueue="q") == "j-9"
    with pytest.raises(RunError, match="knows no job"):
        state.describe_one("j-9")
    batch_client.terminate_job("j-9", "why")
    assert ("terminate_job", {"jobId": "j-9", "reason": "why"}) in client.calls
    assert batch_client.session_credentials(900)["AWS_SESSION_TOKEN"] == "T"
    assert batch_client.instance_sizes(["p3.2xlarge", "optimal"]) == {"p3.2xlarge": (8, 62464, 1)}
    assert batch_client.instance_sizes(["m5"]) == {}
    assert batch_client.log_page("s", None) == ([{"message": "one\ntwo"}], "f/1")
    assert client.calls[-1][1] == {"logGroupName": batch_client.LOG_GROUP, "logStreamName": "s", "startFromHead": True}
    batch_client.log_page("s", "f/1")
    assert client.calls[-1][1]["nextToken"] == "f/1"
    missing = FakeClient()
    missing.fail["get_log_events"] = missing.exceptions.ResourceNotFoundException()
    monkeypatch.setattr(batch_client, "_client", lambda service: missing)
    assert batch_client.log_page("s", None) is None
    throttled = FakeClient({"get_log_events": ClientError({"Error": {"Code": "ThrottlingException"}}, "GetLogEvents")})
    monkeypatch.setattr(batch_client, "_client", lambda service: throttled)
    monkeypatch.setattr(batch_client.time, "sleep", lambda _s: None)
    with pytest.raises(RunError, match="reading the job log"):
        batch_client.log_page("s", None)
    assert len(throttled.calls) == 8  # backed off and retried before giving up
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "SubmitJob")
    monkeypatch.setattr(
        batch_client,
        "_client",
        lambda service: FakeClient({"submit_job": denied, "get_session_token": NoCredentialsError()}),
    )
    with pytest.raises(RunError, match="submit_job failed"):
        batch_client.submit_job(jobName="n")
    with pytest.raises(CredentialsError):
        batch_client.session_credentials(900)


# --- the Local backend ---------------------------------------------------------------------------


class FakeContainer:
    def __init__(self, output: list[bytes], code: int) -> None:
        self.output, self.code, self.removed = output, code, False

    def logs(self, stream: bool, follow: bool) -> Iterator[bytes]:
        return iter(self.output)

    def wait(self) -> dict[str, int]:
        return {"StatusCode": self.code}

    def remove(self, force: bool) -> None:
        self.removed = True


def test_local_backend_runs_with_host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker run with the configured network, the host's credentials added by the backend, the
    log streamed, the container removed, the output read; a non-zero exit is a failed result."""
    started: list[dict[str, Any]] = []
    container = FakeContainer([b"hello\n", output_line("out", "u1").encode() + b"\n"], 0)

    def run(image: str, **kwargs: Any) -> FakeContainer:
        started.append({"image": image, **kwargs})
        return container

    client = SimpleNamespace(containers=SimpleNamespace(run=run))
    monkeypatch.setattr(engine, "connect", lambda: client)
    monkeypatch.setattr(engine, "image_exists", lambda _c, ref: ref == "disdat-etl-x:latest")
    monkeypatch.setattr(DockerExecutor, "secret_environment", lambda self: {"AWS_ACCESS_KEY_ID": "host"})
    lines: list[str] = []
    backend = _executor(tmp_path, _settings(tmp_path), BackendName.LOCAL, lines.append)
    assert backend.image_reference("disdat-etl-x") == "disdat-etl-x:latest"
    with pytest.raises(ImageNotFound):
        backend.image_reference("disdat-etl-y")
    result = backend.launch(_request(), JOB)
    assert (result.status, result.output_name, result.output_uuid) == (RunStatus.SUCCEEDED, "out", "u1")
    assert started[0]["network_mode"] == "host" and started[0]["environment"] == {"E": "1", "AWS_ACCESS_KEY_ID": "host"}
    assert container.removed and lines[0] == "hello"
    container.code = 3
    assert backend.launch(_request(), JOB).status is RunStatus.FAILED


def test_local_credentials_come_from_the_credential_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    env = _executor(tmp_path, _settings(tmp_path), BackendName.LOCAL).secret_environment()
    assert env == {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
    assert not hasattr(_batch(tmp_path), "secret_environment")  # never given to AWS Batch jobs


# --- the host side of dsdt run ---------------------------------------------------------------------


class FakeBackend:
    name = BackendName.LOCAL

    def __init__(self, settings: Settings, log: Any, status: RunStatus = RunStatus.SUCCEEDED) -> None:
        self.jobs: list[ContainerJob] = []
        self.status = status

    def image_reference(self, image_name: str) -> str:
        if image_name != "disdat-etl-x":
            raise ImageNotFound(f"no local image {image_name}:latest")
        return f"{image_name}:latest"

    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        self.jobs.append(job)
        if self.status is RunStatus.FAILED:
            return RunResult(backend=self.name, status=RunStatus.FAILED, log_tail=("boom",))
        return RunResult(backend=self.name, status=self.status, output_name="out", output_uuid="u-out")


class FakeSync:
    def __init__(self) -> None:
        self.pushed: list[Any] = []
        self.pulls: list[dict[str, Any]] = []

    def push(self, bundles: list[Any]) -> None:
        self.pushed.extend(bundles)

    def pull(self, name: str | None = None, uuid: str | None = None, localize: bool = False) -> list[Any]:
        self.pulls.append({"name": name, "uuid": uuid, "localize": localize})
        deps = {"u-out": [SimpleNamespace(uuid="u-up")], "u-up": []}
        if uuid not in deps:
            from disdat_luigi.errors import BundleNotFound

            raise BundleNotFound(uuid or "")
        return [SimpleNamespace(uuid=uuid, dependencies=deps[uuid])]


def test_run_on_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input is checked (committed) and pushed, the container gets the remote and the run's
    options as arguments (no credentials in its environment), and the output comes back with
    its lineage; a failed container and a missing image are clear errors."""
    from disdat_luigi.store.store import LocalStore

    store = LocalStore(tmp_path / "home", remote_settings=RemoteSettings(server_side_encryption="AES256"))
    context = store.create_context("c")
    context.bind_remote("shared", "s3://bucket/team")
    from disdat_luigi.store.bundle import Bundle

    raw = Bundle(context, name="raw", data=1)
    sync = FakeSync()
    backend = FakeBackend(None, None)  # type: ignore[arg-type]
    monkeypatch.setattr(runner, "RemoteSync", lambda *_args: sync)
    monkeypatch.setattr(runner, "run_executor", lambda request, settings, context, log: backend)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = Settings(config_path=tmp_path / "cfg", root=tmp_path / "home", remote=store.remote_settings)  # type: ignore[arg-type]
    with pytest.raises(NotCommitted):
        runner.run(_request(input_bundle="raw"), settings, lambda _l: None)
    raw.commit()
    request = _request(input_bundle="raw", output_tags={"k": "v"}, force=True, workers=3, pipe_args=("--n", "2"))
    result = runner.run(request, settings, lambda _l: None)
    assert result.output_uuid == "u-out" and sync.pushed[0].uuid == raw.uuid
    command = backend.jobs[0].command
    assert command[:4] == ("--remote-context", "shared", "--remote-url", "s3://bucket/team")
    assert command[4:6] == ("--server-side-encryption", "AES256")
    assert ("--input-bundle", raw.uuid) == command[6:8] and "--force" in command and "--output-tag" in command
    assert command[-3:] == ("etl.x.X", "--n", "2")
    assert backend.jobs[0].environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert not any("SECRET" in k for k in backend.jobs[0].environment)
    assert [p["uuid"] for p in sync.pulls] == ["u-out", "u-up"] and sync.pulls[0]["localize"]
    backend.status = RunStatus.FAILED
    with pytest.raises(JobFailed, match="failed in its container"):
        runner.run(_request(), settings, lambda _l: None)
    with pytest.raises(ImageNotFound, match="the image of etl.y.Y") as missing:
        runner.run(_request(pipe_cls="etl.y.Y"), settings, lambda _l: None)
    assert "dsdt dockerize" in (missing.value.hint or "")


def test_the_pipeline_is_checked_on_the_host() -> None:
    """Before anything is pushed or started: the class must import and its parameters parse."""
    from disdat_luigi.errors import ParameterError, PipeClassNotFound

    repo = Path(__file__).resolve().parents[2]
    cls, params = runner._load_pipeline(
        _request(pipe_cls="tests.functional.pipelines.Source", pipe_args=("--n", "2")), repo
    )
    assert cls.__name__ == "Source" and params == {"n": 2}
    with pytest.raises(ParameterError, match="raw_bundle"):
        runner._load_pipeline(
            _request(pipe_cls="tests.functional.pipelines.Source", pipe_args=("--raw_bundle", "x")), repo
        )
    with pytest.raises(PipeClassNotFound, match="has no class 'Nope'"):
        runner._load_pipeline(_request(pipe_cls="tests.functional.pipelines.Nope"), repo)


def test_local_limits_and_container_provenance() -> None:
    """--vcpus/--memory become docker's limits on the Local backend (never silently ignored; 0 is
    an error); the container records the Batch job and its memory in every bundle it makes."""
    from disdat_luigi.cli.container import _provenance

    assert DockerExecutor.limits(_request(vcpus=2, memory=512)) == {"nano_cpus": 2_000_000_000, "mem_limit": "512m"}
    assert DockerExecutor.limits(_request()) == {}
    with pytest.raises(RunError, match="at least 1 CPU"):
        DockerExecutor.limits(_request(vcpus=0))
    with pytest.raises(RunError, match="--gpus is for AWS Batch"):
        DockerExecutor.limits(_request(gpus=1))
    env = {"AWS_BATCH_JOB_ID": "j-1", "DISDAT_JOB_MEMORY": "4096", "OTHER": "x"}
    assert _provenance(env) == {"batch_job_id": "j-1", "batch_memory_mib": "4096"} and _provenance({}) == {}


def test_the_container_entry_point_leaves_no_work_directory(tmp_path: Path) -> None:
    """Run outside a container (an executor's test, a process executor), the entry point's
    temporary store goes when it ends, whatever the outcome (here: a remote URL it refuses, once
    its store is made); a DISDAT_WORK_DIR given to it stays."""
    import os
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "DISDAT_WORK_DIR": ""}
    argv = [sys.executable, "-m", "disdat_luigi.cli.container", "--remote-context", "c", "--remote-url", "ftp://b/r"]
    failed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "disdat run failed" in failed.stderr
    assert list(scratch.iterdir()) == []
    kept = tmp_path / "work"
    subprocess.run(argv, env={**env, "DISDAT_WORK_DIR": str(kept)}, capture_output=True, timeout=120)
    assert (kept / "disdat.cfg").exists()
