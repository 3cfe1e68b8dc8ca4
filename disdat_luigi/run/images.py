"""Keep a pipeline module's image in step with its code before anything runs in it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from disdat_luigi.config import Settings
from disdat_luigi.dockerize.images import DockerizeRequest, dockerize
from disdat_luigi.errors import ImageNotFound


def refresh_image(
    pipe_cls: str,
    pipe_root: Path | None,
    *,
    push: bool,
    build: bool,
    settings: Settings,
    log: Callable[[str], None],
) -> None:
    """Build (and with `push`, push) the image of `pipe_cls`'s module when the content tag
    `dsdt dockerize` would give differs from the image's; without `build` refuse a stale image,
    naming the command that fixes it. Without a findable pipe root the image is used as built
    (said on the log)."""
    if pipe_root is None:
        log(f"cannot find the project of {pipe_cls} to check its image; set [dockerize] pipe_root")
        return
    try:
        dockerize(
            DockerizeRequest(pipe_root=pipe_root, pipe_cls=pipe_cls, push=push and build, no_build=not build),
            settings,
            log,
        )
    except ImageNotFound as err:
        command = f"dsdt dockerize {'--push ' if push else ''}{pipe_root} {pipe_cls}"
        raise ImageNotFound(
            f"the image of {pipe_cls} does not hold the current code of {pipe_root}",
            hint=f"rebuild it: {command} (or run without --no-build)",
        ) from err
