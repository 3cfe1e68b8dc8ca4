"""Keep a pipeline module's image in step with its code before anything runs in it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from disdat_luigi.config import Settings
from disdat_luigi.dockerize.images import DockerizeRequest, dockerize
from disdat_luigi.errors import BuildError, ImageNotFound

LogSink = Callable[[str], None]


class _BuildLog:
    """The build's and push's own output, kept in a file; the log gets one line per step."""

    def __init__(self, path: Path, log: LogSink) -> None:
        self.path = path
        self.log = log
        self._file: IO[str] | None = None

    def write(self, line: str) -> None:
        if line.startswith("building "):
            self.log(f"{line} (full log: {self.path})")
        else:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across lines
            self._file.write(line + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def refresh_image(
    pipe_cls: str,
    pipe_root: Path | None,
    *,
    push: bool,
    build: bool,
    settings: Settings,
    log: LogSink,
) -> None:
    """Build (and with `push`, push) the image of `pipe_cls`'s module when the content tag
    `dsdt dockerize` would give differs from the image's; without `build` refuse a stale image,
    naming the command that fixes it. Without a findable pipe root the image is used as built
    (said on the log). The build's output goes to a file under the store's logs/ (shown in the
    error when the build fails); a push the registry already holds is skipped."""
    if pipe_root is None:
        log(f"cannot find the project of {pipe_cls} to check its image; set [dockerize] pipe_root")
        return
    module = pipe_cls.rpartition(".")[0]
    output = _BuildLog(settings.root / "logs" / f"build-{module}-{time.strftime('%Y%m%d-%H%M%S')}.log", log)
    try:
        results = dockerize(
            DockerizeRequest(pipe_root=pipe_root, pipe_cls=pipe_cls, push=push and build, no_build=not build),
            settings,
            output.write,
        )
    except ImageNotFound as err:
        command = f"dsdt dockerize {'--push ' if push else ''}{pipe_root} {pipe_cls}"
        raise ImageNotFound(
            f"the image of {pipe_cls} does not hold the current code of {pipe_root}",
            hint=f"rebuild it: {command} (or run without --no-build)",
        ) from err
    except BuildError as err:
        raise BuildError(err.message, hint=f"{err.hint}\nfull build log: {output.path}") from err
    finally:
        output.close()
    for result in results:
        if len(result.pushed) > 1:  # pushed now (a content tag already there is one reference)
            log(f"pushed {result.pushed[0]}")
