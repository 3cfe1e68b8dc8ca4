"""Load `disdat.cfg` into a typed, frozen settings object; callers pass it on explicitly."""

from __future__ import annotations

import configparser
import math
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from disdat_luigi.errors import ConfigError

SSE_CHOICES = ("none", "AES256", "aws:kms")


@dataclass(frozen=True)
class RemoteSettings:
    transfer_threads: int = 10
    multipart_concurrency: int = 4
    server_side_encryption: str = "none"
    sse_kms_key_id: str | None = None


ECR_REGISTRY = "*ECR*"  # [docker] registry value meaning "the account's ECR registry"


@dataclass(frozen=True)
class DockerSettings:
    registry: str | None = None  # host[:port], or ECR_REGISTRY
    repository_prefix: str | None = None
    network_mode: str | None = None


@dataclass(frozen=True)
class DockerizeSettings:
    base_image: str | None = None
    os_type: str | None = None
    os_version: str | None = None
    dot_pip_file: str | None = None
    pipe_root: str | None = None  # the pipeline project, when it cannot be found from a module's source


@dataclass(frozen=True)
class RunSettings:
    aws_batch_queue: str | None = None
    job_role_arn: str | None = None
    execution_role_arn: str | None = None  # the role AWS Batch reads a job's --secret values with
    vcpus: int = 1
    memory: int = 2048
    gpus: int = 0
    timeout: int = 0  # seconds per attempt; 0: none
    retries: int = 0
    tags: tuple[tuple[str, str], ...] = ()
    memory_retry_factor: float = 0.0  # > 1: an out-of-memory kill is retried once with this much more
    runnable_warning_seconds: int = 600
    poll_seconds: float = 5.0


@dataclass(frozen=True, kw_only=True)
class GcSettings:
    """The `[gc]` section: a team's agreed keep rules for `dsdt gc` (flags override them)."""

    keep_last: int = 3  # newest bundles kept per recipe (at least 1: apply reuses the newest)
    keep_days: float = 0.0  # bundles younger than this many days are kept; 0: no age rule
    keep_tags: tuple[tuple[str, str], ...] = ()  # a bundle carrying any of these tags is kept
    grace_hours: float = 24.0  # remote objects no manifest names are kept this long


GC_KEYS = ("keep_last", "keep_days", "keep_tags", "grace_hours")
# what a key of the file nothing reads does, when not simply ignored
UNKNOWN_KEY_EFFECT = {"gc": "gc and du refuse to run until it is fixed"}
# every key of every section this file reads: anything else is a typo that would silently do nothing
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "core": ("root", "ignore_code_version"),
    "remote": ("transfer_threads", "multipart_concurrency", "server_side_encryption", "sse_kms_key_id"),
    "docker": ("registry", "repository_prefix", "network_mode"),
    "dockerize": ("base_image", "os_type", "os_version", "dot_pip_file", "pipe_root"),
    "run": (
        "aws_batch_queue", "job_role_arn", "execution_role_arn", "vcpus", "memory", "gpus", "timeout", "retries",
        "tags", "memory_retry_factor", "runnable_warning_seconds", "poll_seconds",
    ),
    "gc": GC_KEYS,
}  # fmt: skip
EXECUTOR_KEYS = (
    "type", "queue", "job_role_arn", "vcpus", "memory", "gpus", "timeout", "retries", "max_concurrent_jobs",
    "array_min_size", "tags", "use_aws_session_token", "env", "secrets",
)  # fmt: skip


EXECUTOR_TYPES = ("aws_batch", "docker", "local")
LOCAL_EXECUTOR = "local"


@dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    """One `[executor.NAME]` section: where the tasks that name it run, and with what."""

    name: str
    type: str = "local"  # one of EXECUTOR_TYPES
    queue: str | None = None  # default: [run] aws_batch_queue
    job_role_arn: str | None = None  # default: [run] job_role_arn
    vcpus: int = 1
    memory: int = 2048
    gpus: int = 0
    timeout: int = 0
    retries: int = 0
    max_concurrent_jobs: int = 100
    array_min_size: int = 5
    tags: tuple[tuple[str, str], ...] = ()
    use_aws_session_token: int = 0
    env: tuple[tuple[str, str], ...] = ()  # `env = K=V, ...`: checked when an apply uses the section
    secrets: tuple[tuple[str, str], ...] = ()  # `secrets = K=ARN, ...`

    @property
    def remote(self) -> bool:
        return self.type != "local"


@dataclass(frozen=True)
class Settings:
    config_path: Path
    root: Path
    ignore_code_version: bool = False
    remote: RemoteSettings = RemoteSettings()
    docker: DockerSettings = DockerSettings()
    dockerize: DockerizeSettings = DockerizeSettings()
    run: RunSettings = RunSettings()
    gc_section: tuple[tuple[str, str], ...] = ()  # `[gc]` as written: read and checked when gc runs
    # the `[executor.NAME]` sections as written: each is read and checked when an apply uses it
    # (or by `dsdt config check`), so a mistake in one breaks only what uses it
    executor_sections: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    unknown: tuple[ConfigError, ...] = ()  # sections and keys of other sections this file does not know

    def executor(self, name: str) -> ExecutorSettings:
        """The `[executor.NAME]` section (`local` is built in); ConfigError naming the fix."""
        for section, items in self.executor_sections:
            if section == f"executor.{name}":
                parser = configparser.ConfigParser(interpolation=None)
                parser.read_dict({section: dict(items)})
                return _executor(_Reader(parser, self.config_path), section)
        if name == LOCAL_EXECUTOR:
            return ExecutorSettings(name=LOCAL_EXECUTOR)
        raise ConfigError(
            f"no executor {name!r} is configured",
            hint=f"add an [executor.{name}] section with type = aws_batch | docker | local to {self.config_path}",
        )

    @property
    def gc(self) -> GcSettings:
        """The `[gc]` section, typed; ConfigError naming the section and the key. Read only when
        gc or du runs, so a mistake there never breaks the other commands."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_dict({"gc": dict(self.gc_section)})
        return _gc(_Reader(parser, self.config_path))

    def check(self) -> list[ConfigError]:
        """Every executor section (and [gc]) read as its command would read it, and every section or
        key the file does not know: what is wrong (each once)."""
        problems = list(self.unknown)
        try:
            _ = self.gc
        except ConfigError as err:
            if err.message not in {p.message for p in problems}:  # an unknown [gc] key is both
                problems.append(err)
        for section, _items in self.executor_sections:
            try:
                self.executor(section.partition(".")[2])
            except ConfigError as err:
                problems.append(err)
        return problems


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is: DISDAT_CONFIG, else ~/.config/disdat/disdat.cfg."""
    env = os.environ if env is None else env
    explicit = env.get("DISDAT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path("~/.config/disdat/disdat.cfg").expanduser()


def template_path() -> Path:
    return Path(__file__).with_name("disdat.cfg.example")


def init_config(env: Mapping[str, str] | None = None) -> Path:
    """Create the config file from the template if it is missing; harmless when it exists."""
    path = config_path(env)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        shutil.copyfile(template_path(), tmp)
        os.replace(tmp, path)
    return path


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file now (not at import) into `Settings`; DISDAT_HOME overrides the root."""
    env = os.environ if env is None else env
    path = config_path(env)
    if not path.is_file():
        raise ConfigError(
            f"no disdat config at {path}",
            hint="run `dsdt init` (or set DISDAT_CONFIG to an existing disdat.cfg)",
        )
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8-sig")  # editors on Windows start UTF-8 files with a byte-order mark
    except (configparser.Error, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"malformed config {path}: {first}") from err
    reader = _Reader(parser, path)
    unknown = _unknown(reader)
    for section, problem in unknown:  # a typo must not do nothing silently; `dsdt config check` fails on it
        effect = UNKNOWN_KEY_EFFECT.get(section, "it is ignored")
        warnings.warn(f"{problem.message}; {effect} ({problem.hint})", stacklevel=2)
    root = env.get("DISDAT_HOME") or reader.text("core", "root") or "~/.disdat"
    sse = reader.text("remote", "server_side_encryption") or "none"
    if sse not in SSE_CHOICES:
        raise ConfigError(f"{path}: [remote] server_side_encryption = {sse!r} is not one of {', '.join(SSE_CHOICES)}")
    return Settings(
        config_path=path,
        root=Path(root).expanduser(),
        ignore_code_version=reader.boolean("core", "ignore_code_version", False),
        remote=RemoteSettings(
            transfer_threads=reader.integer("remote", "transfer_threads", 10),
            multipart_concurrency=reader.integer("remote", "multipart_concurrency", 4),
            server_side_encryption=sse,
            sse_kms_key_id=reader.text("remote", "sse_kms_key_id"),
        ),
        docker=DockerSettings(
            registry=reader.text("docker", "registry"),
            repository_prefix=reader.text("docker", "repository_prefix"),
            network_mode=reader.text("docker", "network_mode"),
        ),
        dockerize=DockerizeSettings(
            base_image=reader.text("dockerize", "base_image"),
            os_type=reader.text("dockerize", "os_type"),
            os_version=reader.text("dockerize", "os_version"),
            dot_pip_file=reader.text("dockerize", "dot_pip_file"),
            pipe_root=reader.text("dockerize", "pipe_root"),
        ),
        run=RunSettings(
            aws_batch_queue=reader.text("run", "aws_batch_queue"),
            job_role_arn=reader.text("run", "job_role_arn"),
            execution_role_arn=reader.text("run", "execution_role_arn"),
            vcpus=reader.integer("run", "vcpus", 1),
            memory=reader.integer("run", "memory", 2048),
            gpus=reader.integer("run", "gpus", 0, minimum=0),
            timeout=reader.integer("run", "timeout", 0, minimum=0),
            retries=reader.integer("run", "retries", 0, minimum=0),
            tags=reader.tags("run", "tags"),
            memory_retry_factor=reader.number("run", "memory_retry_factor", 0.0),
            runnable_warning_seconds=reader.integer("run", "runnable_warning_seconds", 600),
            poll_seconds=reader.number("run", "poll_seconds", 5.0),
        ),
        gc_section=tuple(parser.items("gc", raw=True)) if parser.has_section("gc") else (),
        executor_sections=tuple(
            (section, tuple(parser.items(section, raw=True)))
            for section in parser.sections()
            if section.startswith("executor.")
        ),
        unknown=tuple(problem for _, problem in unknown),
    )


def _unknown(reader: _Reader) -> list[tuple[str, ConfigError]]:
    """Sections and keys no command reads, with their section (executor sections are checked
    when used)."""
    found: list[tuple[str, ConfigError]] = []
    for section in reader.parser.sections():
        if section.startswith("executor."):
            continue
        known = SECTION_KEYS.get(section)
        if known is None:
            sections = ", ".join([*SECTION_KEYS, "executor.NAME"])
            problem = ConfigError(
                f"{reader.path}: [{section}] is not a section of disdat.cfg (known: {sections})",
                hint=f"fix or remove [{section}] in {reader.path}",
            )
            found.append((section, problem))
            continue
        found += [(section, problem) for problem in _unknown_keys(reader, section)]
    return found


def _unknown_keys(reader: _Reader, section: str) -> list[ConfigError]:
    known = SECTION_KEYS[section]
    return [
        reader.fail(section, key, f"is not a setting of [{section}] (known: {', '.join(known)})")
        for key in reader.parser.options(section)
        if key not in known
    ]


def _gc(reader: _Reader) -> GcSettings:
    """The `[gc]` section; a key it does not know is an error here too (a typo would silently
    keep nothing)."""
    if reader.parser.has_section("gc") and (unknown := _unknown_keys(reader, "gc")):
        raise unknown[0]
    return GcSettings(
        keep_last=reader.integer("gc", "keep_last", 3, minimum=1),
        keep_days=reader.number("gc", "keep_days", 0.0),
        keep_tags=reader.tags("gc", "keep_tags"),
        grace_hours=reader.number("gc", "grace_hours", 24.0),
    )


def several_tags(value: str) -> bool:
    """Whether a tag's value looks like more tags written after it with spaces (`release:v1
    stage:prod` is the one tag release = 'v1 stage:prod', and would keep neither)."""
    return any(":" in word for word in value.split()[1:])


def _executor(reader: _Reader, section: str) -> ExecutorSettings:
    name = section.partition(".")[2]
    for key in reader.parser.options(section):
        if key not in EXECUTOR_KEYS:
            raise reader.fail(section, key, f"is not an executor setting (known: {', '.join(EXECUTOR_KEYS)})")
    kind = reader.text(section, "type")
    if kind is None:
        raise ConfigError(
            f"{reader.path}: [{section}] has no type",
            hint=f"add `type = aws_batch`, `docker` or `local` to [{section}]",
        )
    if kind not in EXECUTOR_TYPES:
        raise reader.fail(section, "type", f"= {kind!r} is not one of {', '.join(EXECUTOR_TYPES)}")
    if not name or name == LOCAL_EXECUTOR:
        raise ConfigError(f"{reader.path}: [{section}] is not a usable executor name (`local` is built in)")
    return ExecutorSettings(
        name=name,
        type=kind,
        queue=reader.text(section, "queue"),
        job_role_arn=reader.text(section, "job_role_arn"),
        vcpus=reader.integer(section, "vcpus", 1),
        memory=reader.integer(section, "memory", 2048),
        gpus=reader.integer(section, "gpus", 0, minimum=0),
        timeout=reader.integer(section, "timeout", 0, minimum=0),
        retries=reader.integer(section, "retries", 0, minimum=0),
        max_concurrent_jobs=reader.integer(section, "max_concurrent_jobs", 100),
        array_min_size=reader.integer(section, "array_min_size", 5),
        tags=reader.tags(section, "tags"),
        use_aws_session_token=reader.integer(section, "use_aws_session_token", 0, minimum=0),
        env=reader.pairs(section, "env", "="),
        secrets=reader.pairs(section, "secrets", "="),
    )


@dataclass(frozen=True)
class _Reader:
    """Typed access to one parsed file; conversion errors name the file, section and key."""

    parser: configparser.ConfigParser
    path: Path

    def fail(self, section: str, key: str, problem: str) -> ConfigError:
        """The error for one bad setting, its hint the line of the file to fix."""
        line = _line_of(self.path, section, key)
        where = f"line {line} of {self.path}" if line else f"[{section}] {key} in {self.path}"
        return ConfigError(f"{self.path}: [{section}] {key} {problem}", hint=f"fix {where}")

    def text(self, section: str, key: str) -> str | None:
        value = self.parser.get(section, key, fallback="").strip()
        return value or None

    def boolean(self, section: str, key: str, default: bool) -> bool:
        if not self.text(section, key):
            return default
        try:
            return self.parser.getboolean(section, key)
        except ValueError as err:
            raise self.fail(section, key, f"must be true or false, not {self.parser.get(section, key)!r}") from err

    def integer(self, section: str, key: str, default: int, minimum: int = 1) -> int:
        raw = self.text(section, key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError as err:
            raise self.fail(section, key, f"must be a whole number, not {raw!r}") from err
        if value < minimum:
            raise self.fail(section, key, f"must be at least {minimum}, not {value}")
        return value

    def number(self, section: str, key: str, default: float) -> float:
        raw = self.text(section, key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError as err:
            raise self.fail(section, key, f"must be a number, not {raw!r}") from err
        if not math.isfinite(value):  # float() takes nan and inf, which no setting can mean
            raise self.fail(section, key, f"must be a finite number, not {raw!r}")
        if value < 0:
            raise self.fail(section, key, f"must not be negative, not {value}")
        return value

    def tags(self, section: str, key: str) -> tuple[tuple[str, str], ...]:
        """`k:v, k2:v2` as pairs; several tags separated by spaces instead of commas are an error
        (they would read as one tag whose value holds the rest)."""
        pairs = self.pairs(section, key)
        for name, value in pairs:
            if several_tags(value):
                written = f"{name}:{value}"
                raise self.fail(
                    section,
                    key,
                    f"has {written!r}, which reads as the one tag {name} = {value!r}; separate tags with commas: "
                    f"{key} = {', '.join(written.split())}",
                )
        return pairs

    def pairs(self, section: str, key: str, separator: str = ":") -> tuple[tuple[str, str], ...]:
        """`k:v, k2:v2` as pairs (tags; `k=v, ...` with separator '=')."""
        raw = self.text(section, key)
        if raw is None:
            return ()
        found = []
        for item in raw.split(","):
            name, sep, value = item.strip().partition(separator)
            if not sep or not name.strip():
                raise self.fail(section, key, f"has {item.strip()!r}, which is not key{separator}value")
            found.append((name.strip(), value.strip()))
        return tuple(found)


def _line_of(path: Path, section: str, key: str) -> int | None:
    """The line number of `key` in `[section]` of the file (for the hint of an error)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError:
        return None
    current = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
        elif current == section and stripped.split("=", 1)[0].split(":", 1)[0].strip().lower() == key.lower():
            return number
    return None
