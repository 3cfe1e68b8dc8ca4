"""The environment a job's container gets from its user: plain values (`--env KEY=VALUE`, `--env
KEY` from the host), and secrets by reference (`--secret KEY=ARN`): parsed, checked, shown masked,
and resolved on the host only for containers this machine starts."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from disdat_luigi.errors import JobEnvironmentError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:(secretsmanager:[^:]+:\d{12}:secret:.+|ssm:[^:]+:\d{12}:parameter/.+)$")
MASK = "***"
# the AWS settings disdat_luigi gives a job itself: credentials, region, endpoints, Batch's own
MANAGED_AWS = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
    }
)
MANAGED_AWS_PREFIXES = ("AWS_ENDPOINT_URL", "AWS_BATCH_")


@dataclass(frozen=True, kw_only=True)
class JobEnvironment:
    """What a job's container gets besides what disdat_luigi sets: `values` (plain; those taken
    from the host are named in `from_host` and masked wherever a submission is shown) and
    `secrets` (name -> Secrets Manager or SSM parameter ARN; never a value)."""

    values: Mapping[str, str] = field(default_factory=dict)
    from_host: frozenset[str] = frozenset()
    secrets: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values or self.secrets)

    @classmethod
    def parse(
        cls, env: Iterable[str] = (), secrets: Iterable[str] = (), host: Mapping[str, str] | None = None
    ) -> JobEnvironment:
        """The command line's `--env KEY=VALUE` / `--env KEY` and `--secret KEY=ARN`."""
        host = os.environ if host is None else host
        values: dict[str, str] = {}
        from_host: set[str] = set()
        for item in env:
            name, sep, value = item.partition("=")
            _check_name(name, f"--env {item!r}", "write --env KEY=VALUE, or --env KEY for this shell's value")
            if not sep:
                if name not in host:
                    raise JobEnvironmentError(
                        f"--env {name}: {name} is not set in this shell",
                        hint=f"export {name} first, or pass --env {name}=VALUE",
                    )
                value = host[name]
                from_host.add(name)
            else:
                from_host.discard(name)
            values[name] = value
        refs: dict[str, str] = {}
        for item in secrets:
            name, sep, arn = item.partition("=")
            _check_name(name, f"--secret {item!r}", "write --secret KEY=ARN")
            _check_arn(name, arn if sep else "", f"--secret {item!r}")
            refs[name] = arn
        return cls(values=values, from_host=frozenset(from_host), secrets=refs)._checked()

    @classmethod
    def of(cls, env: Any = None, secrets: Any = None, where: str = "") -> JobEnvironment:
        """Python mappings (`api.run(env=, secrets=)`, `executor_options`, a config section,
        named by `where`); an `env` value None takes the host's value, as `--env KEY` does."""
        prefix = f"{where} " if where else ""
        values: dict[str, str] = {}
        from_host: set[str] = set()
        for key, value in _mapping(env, f"{prefix}env", allow_none=True).items():
            _check_name(key, f"{prefix}env {key!r}", "use a name of letters, digits and _")
            if value is None:
                values.update(cls.parse([key]).values)
                from_host.add(key)
            else:
                values[key] = value
        refs = _mapping(secrets, f"{prefix}secrets", allow_none=False)
        for key, arn in refs.items():
            _check_name(key, f"{prefix}secrets {key!r}", "use a name of letters, digits and _")
            _check_arn(key, arn, f"{prefix}secrets {key!r}")
        return cls(values=values, from_host=frozenset(from_host), secrets=refs)._checked()

    @classmethod
    def from_pairs(
        cls, env: Iterable[tuple[str, str]], secrets: Iterable[tuple[str, str]], where: str
    ) -> JobEnvironment:
        """An `[executor.NAME]` section's `env = K=V, ...` and `secrets = K=ARN, ...`."""
        return cls.of(dict(env), dict(secrets), where=where)

    @classmethod
    def given(cls, env: Any = None, secrets: Any = None) -> JobEnvironment:
        """The API's `env=` and `secrets=`: mappings (see `of`), or the command line's strings
        (`["KEY=VALUE", "KEY"]`, `["KEY=ARN"]`, see `parse`)."""
        if isinstance(env, (str, bytes)) or isinstance(secrets, (str, bytes)):
            raise JobEnvironmentError("env and secrets are dicts or lists of KEY=VALUE strings, not one string")
        if (env is None or isinstance(env, Mapping)) and (secrets is None or isinstance(secrets, Mapping)):
            return cls.of(env, secrets)
        as_env = [f"{k}" if v is None else f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else env
        as_secrets = [f"{k}={v}" for k, v in secrets.items()] if isinstance(secrets, Mapping) else secrets
        return cls.parse(as_env or (), as_secrets or ())

    def merged(self, other: JobEnvironment) -> JobEnvironment:
        """`other` over this one (a run's values over a class's over an executor section's)."""
        values = {**self.values, **other.values}
        secrets = {k: v for k, v in self.secrets.items() if k not in other.values}
        secrets.update(other.secrets)
        values = {k: v for k, v in values.items() if k not in other.secrets}
        host = (self.from_host - set(other.values)) | other.from_host
        return JobEnvironment(values=values, from_host=frozenset(host & set(values)), secrets=secrets)

    def batch_secrets(self) -> list[dict[str, str]]:
        """The job definition's `secrets`: references Batch resolves when the container starts."""
        return [{"name": k, "valueFrom": v} for k, v in sorted(self.secrets.items())]

    def resolved(self) -> dict[str, str]:
        """Values and secrets' values, read now on this host with boto3 (for a container this
        machine starts; never written anywhere else)."""
        resolved = dict(self.values)
        for name, arn in self.secrets.items():
            resolved[name] = resolve_secret(name, arn)
        return resolved

    def _checked(self) -> JobEnvironment:
        both = sorted(set(self.values) & set(self.secrets))
        if both:
            raise JobEnvironmentError(
                f"{both[0]} is given both as a value and as a secret", hint=f"keep one of --env {both[0]} and --secret"
            )
        return self


def class_environment(cls: type) -> JobEnvironment:
    """A PipeTask class's `executor_options = {"env": {...}, "secrets": {...}}`."""
    options = getattr(cls, "executor_options", None) or {}
    if not isinstance(options, Mapping):
        return JobEnvironment()  # executor_options itself is refused with its own error
    where = f"{cls.__module__}.{cls.__qualname__}.executor_options"
    return JobEnvironment.of(options.get("env"), options.get("secrets"), where=where)


def resolve_secret(name: str, arn: str) -> str:
    """The value behind a Secrets Manager secret or SSM parameter ARN."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if ":secretsmanager:" in arn:
            answer = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
            if "SecretString" in answer:
                return str(answer["SecretString"])
            return bytes(answer["SecretBinary"]).decode("utf-8")
        parameter = arn.split(":parameter", 1)[1]
        return str(boto3.client("ssm").get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"])
    except (BotoCoreError, ClientError, UnicodeDecodeError) as err:
        raise JobEnvironmentError(
            f"cannot read the secret {name} ({arn}): {err}",
            hint="check the ARN and that these AWS credentials may read it",
        ) from err


def managed_reason(name: str) -> str | None:
    """Why disdat_luigi itself sets `name` for a job (None: the user may set it)."""
    if name.startswith("DISDAT_"):
        return "DISDAT_* names are set by disdat_luigi itself"
    if name in MANAGED_AWS or name.startswith(MANAGED_AWS_PREFIXES):
        return f"{name} is one of the AWS settings disdat_luigi gives the job itself (credentials, region, endpoints)"
    return None


def _check_name(name: str, what: str, fix: str) -> None:
    if not name:
        raise JobEnvironmentError(f"{what} has no variable name", hint=fix)
    if not NAME.match(name):
        raise JobEnvironmentError(
            f"{what}: {name!r} is not a variable name", hint="use letters, digits and _, not starting with a digit"
        )
    reason = managed_reason(name)
    if reason:
        hint = (
            "disdat_luigi gives jobs their AWS settings: on AWS Batch through a job role (job_role_arn) or "
            "use_aws_session_token, in a container on this machine from your own credentials"
            if name.startswith("AWS_")
            else "choose another name"
        )
        raise JobEnvironmentError(f"{what}: {name} cannot be set: {reason}", hint=hint)


def _check_arn(name: str, arn: str, what: str) -> None:
    if not SECRET_ARN.match(arn):
        raise JobEnvironmentError(
            f"{what}: the value of {name} must be a Secrets Manager secret or SSM parameter ARN",
            hint=f"pass {name}=arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME "
            f"(or arn:aws:ssm:REGION:ACCOUNT:parameter/NAME); never the secret itself",
        )


def _mapping(raw: Any, what: str, allow_none: bool) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and (isinstance(v, str) or (allow_none and v is None)) for k, v in raw.items()
    ):
        shown = type(raw).__name__ if not isinstance(raw, Mapping) else "a dict with other values"
        raise JobEnvironmentError(
            f"{what} must be a dict of str to str, not {shown}", hint=f'give {what} as a dict like {{"NAME": "value"}}'
        )
    return dict(raw)
