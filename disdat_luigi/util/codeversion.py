"""The code a task ran: its identity (what reuse compares) and its provenance.

The identity is the content of the project files the task's class runs (see `util.closure`), or a
version the class declares (`code_version = "2"`). Git's commit, branch, remote and an exact
dirty marker are provenance only; inside images (no .git) the environment variables set by
dockerize stand in for git."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "DISDAT_GIT_"


@dataclass(frozen=True)
class CodeVersion:
    commit: str | None
    branch: str | None = None
    repo: str | None = None
    dirty: bool = False
    diff_sha256: str | None = None
    image: str | None = None
    source: str | None = None  # the task's own code identity (`CodeIdentity.version`)
    code_files: dict[str, str] | None = None  # the files in that identity: path -> git blob hash

    @property
    def version(self) -> str:
        """What reuse compares: the task's own code when known; else (a class without a source
        file) the commit plus a hash of the uncommitted changes, or the image's content tag."""
        if self.source is not None:
            return self.source
        if self.commit is None:
            return f"image:{self.image}"
        return f"{self.commit}+{self.diff_sha256[:16]}" if self.dirty and self.diff_sha256 else self.commit

    def as_git_info(self) -> dict[str, Any]:
        info = {k: v for k, v in asdict(self).items() if v is not None}
        info["version"] = self.version
        return info


def capture(directory: Path, env: Mapping[str, str] | None = None) -> CodeVersion | None:
    """The code version of the git work tree holding `directory`; None outside any repository."""
    env = os.environ if env is None else env
    image = env.get("DISDAT_IMAGE_TAG") or None
    if env.get(f"{ENV_PREFIX}COMMIT"):
        return CodeVersion(
            commit=env[f"{ENV_PREFIX}COMMIT"],
            branch=env.get(f"{ENV_PREFIX}BRANCH") or None,
            repo=env.get(f"{ENV_PREFIX}REMOTE") or None,
            dirty=env.get(f"{ENV_PREFIX}DIRTY", "").lower() in ("1", "true", "yes"),
            diff_sha256=env.get(f"{ENV_PREFIX}DIFF_SHA256") or None,
            image=image,
        )
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return CodeVersion(commit=None, image=image) if image else None
    branch = _git(directory, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=no") or ""
    diff_sha = None
    if status:
        diff = subprocess.run(
            ["git", "-C", str(directory), "diff", "HEAD", "--binary"], capture_output=True, check=False
        ).stdout
        diff_sha = hashlib.sha256(diff).hexdigest()
    return CodeVersion(
        commit=commit,
        branch=None if branch in (None, "HEAD") else branch,
        repo=_git(directory, "config", "--get", "remote.origin.url"),
        dirty=bool(status),
        diff_sha256=diff_sha,
        image=image,
    )


def _git(directory: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def blob_hash(content: bytes) -> str:
    """git's object id of a file with this content (`git hash-object`): computable without git."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()
