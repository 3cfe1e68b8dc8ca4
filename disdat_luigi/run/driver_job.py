"""Pipelines that need no host: `dsdt run --backend AWSBatch` of a pipeline whose tasks name
`aws_batch` executors runs the apply itself (the driver) as one Batch job, which sends those tasks
out as their own jobs, exactly as a laptop apply would.

The host decides, checks and builds: it finds the pipeline's remote classes, builds and pushes
their images, and hands the driver a `DriverConfig` (the executor sections it used and the exact
image of each remote class) in the job's command, which only the Batch API sets. Inside the driver,
`docker` executors run their tasks in the driver's own container (no Docker socket is mounted).
"""

from __future__ import annotations

import configparser
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from disdat_luigi.apply.identity import class_path
from disdat_luigi.apply.plan import Decision
from disdat_luigi.config import Settings, config_path
from disdat_luigi.errors import TaskSpecRejected
from disdat_luigi.run.environment import JobEnvironment
from disdat_luigi.run.journal import JobRecord
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.location import RemoteLocation
from disdat_luigi.store.remote.s3 import S3

LogSink = Callable[[str], None]
VERSION = 1
MAX_CHILD_RECORD = 64 * 1024
# what a driver takes from the host's config besides its [executor.*] sections
HOST_SECTIONS = {"docker": ("registry", "repository_prefix"), "run": None}


@dataclass(frozen=True, kw_only=True)
class DriverConfig:
    """What a driver job needs of the host that submitted it."""

    sections: dict[str, dict[str, str]]  # config sections, as the host's file has them
    images: dict[str, str]  # class path -> the registry image its jobs run (pushed by the host)
    env_names: tuple[str, ...] = ()  # the run's --env names: the driver hands its own values on
    secrets: dict[str, str] = field(default_factory=dict)  # the run's --secret names -> ARNs
    version: int = VERSION

    def to_json(self) -> str:
        doc = {
            "version": self.version,
            "sections": self.sections,
            "images": self.images,
            "env_names": list(self.env_names),
            "secrets": self.secrets,
        }
        return json.dumps(doc, sort_keys=True)

    def environment(self, own: Mapping[str, str]) -> JobEnvironment:
        """What the driver's children get of the run's --env and --secret: the values as the
        driver has them (Batch set them in its own environment), the secrets by reference."""
        values = {name: own[name] for name in self.env_names if name in own}
        return JobEnvironment(values=values, from_host=frozenset(values), secrets=dict(self.secrets))

    @classmethod
    def from_json(cls, text: str) -> DriverConfig:
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise TaskSpecRejected(f"--driver-config is not JSON ({err})") from err
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            found = doc.get("version") if isinstance(doc, dict) else type(doc).__name__
            raise TaskSpecRejected(
                f"--driver-config has version {found!r}, this image reads version {VERSION}",
                hint="rebuild the image with the dsdt that submits the run",
            )
        sections: Any = doc.get("sections")
        images: Any = doc.get("images")
        names: Any = doc.get("env_names", [])
        secrets: Any = doc.get("secrets", {})
        if not _strings_of_strings(sections) or not _strings(images) or not _strings(secrets):
            raise TaskSpecRejected("--driver-config needs 'sections' (section -> key -> text) and 'images'")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise TaskSpecRejected("--driver-config 'env_names' must be a list of names")
        return cls(
            sections={name: dict(values) for name, values in sections.items()},
            images=dict(images),
            env_names=tuple(names),
            secrets=dict(secrets),
        )

    def install(self, path: Path) -> None:
        """Add the host's sections to the driver's own config file (the remote's stay)."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path)
        for section, values in self.sections.items():
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, value)
        with open(path, "w", encoding="utf-8") as handle:
            parser.write(handle)


@dataclass(frozen=True, kw_only=True)
class DriverPlan:
    """The remote classes of a pipeline, by the `aws_batch` executor each names."""

    remote: dict[str, list[type]] = field(default_factory=dict)
    executors: tuple[str, ...] = ()  # every executor the pipeline names (local ones too)


def plan(decisions: Sequence[Decision], settings: Settings) -> DriverPlan:
    """Which classes of the tasks that will run go out as their own Batch jobs, by executor (the
    apply's plan against the remote, as the driver makes it; a class yielded at run time runs
    where the task that yields it runs)."""
    from disdat_luigi.apply.loader import load_pipe_class

    remote: dict[str, list[type]] = {}
    for decision in decisions:
        if decision.reuse or not decision.pipe_cls or settings.executor(decision.executor).type != "aws_batch":
            continue
        cls = load_pipe_class(decision.pipe_cls)
        if cls not in remote.setdefault(decision.executor, []):
            remote[decision.executor].append(cls)
    names = tuple(sorted({d.executor for d in decisions}))
    return DriverPlan(remote={k: v for k, v in remote.items() if v}, executors=names)


def prepare(
    driver: DriverPlan,
    settings: Settings,
    context: LocalContext,
    *,
    build: bool,
    job_role_arn: str | None,
    environment: JobEnvironment,
    log: LogSink,
    submit: bool = True,
) -> DriverConfig:
    """On the host, before the driver is submitted: each executor's queue and resources checked,
    the images built and pushed; the settings and images the driver runs with. Without `submit`
    (`--no-submit`) nothing is built or pushed: the config shows what the driver would get."""
    from disdat_luigi.run.executors import executor_factory

    images: dict[str, str] = {}
    for name, classes in driver.remote.items() if submit else ():
        executor: Any = executor_factory(settings, build=build)(name, context)
        executor.prepare(classes, log)
        images.update({class_path(cls): executor.images[class_path(cls)][1] for cls in classes})
    return DriverConfig(
        sections=host_sections(config_path(), driver.executors, job_role_arn),
        images=images,
        env_names=tuple(sorted(environment.values)),
        secrets=dict(environment.secrets),
    )


def host_sections(path: Path, executors: tuple[str, ...], job_role_arn: str | None) -> dict[str, dict[str, str]]:
    """The host's [executor.NAME] sections the pipeline names (a `docker` one becomes `local`: the
    driver runs those tasks in its own container), its registry settings and its [run] section.
    A driver with a job role gives its children roles, not session tokens (STS cannot mint those
    from a role's credentials)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8-sig")
    found: dict[str, dict[str, str]] = {}
    for name in executors:
        section = f"executor.{name}"
        if parser.has_section(section):
            values = dict(parser.items(section))
            if values.get("type", "").strip() == "docker":
                values["type"] = "local"
            if job_role_arn:
                values["use_aws_session_token"] = "0"
            found[section] = values
    for section, keys in HOST_SECTIONS.items():
        if parser.has_section(section):
            values = dict(parser.items(section))
            found[section] = {k: v for k, v in values.items() if keys is None or k in keys}
    if job_role_arn:
        found.setdefault("run", {})["job_role_arn"] = job_role_arn
    return found


def record_child(s3: S3, location: RemoteLocation, record: JobRecord) -> None:
    """Inside a driver: a job it submitted, where its host finds it (`dsdt jobs`, `logs`, ...)."""
    key = f"{location.driver_prefix(record.driver)}{record.job_id}.json"
    s3.put_bytes(location.bucket, key, json.dumps(asdict(record), sort_keys=True).encode())


def children(s3: S3, location: RemoteLocation, driver_job_id: str) -> list[JobRecord]:
    """On the host: the jobs a driver submitted, oldest first (a record that does not read as one
    is skipped: it names a job, nothing is run from it)."""
    found = []
    for listed in s3.list_objects(location.bucket, location.driver_prefix(driver_job_id)):
        body = s3.get_bytes(location.bucket, listed.key, MAX_CHILD_RECORD)
        try:
            record = JobRecord(**json.loads(body or b""))
        except (ValueError, TypeError):
            continue
        if record.driver == driver_job_id:
            found.append(record)
    return sorted(found, key=lambda r: r.submitted)


def session_token_warning(seconds: int) -> str:
    return (
        f"warning: the driver runs on temporary credentials (use_aws_session_token = {seconds} s) and its "
        "child jobs inherit them: every job of this run must end before they expire; real runs should "
        "give the driver a job role ([run] job_role_arn)"
    )


def _strings(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _strings_of_strings(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and _strings(v) for k, v in value.items())
