"""The small interface every run backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from disdat_luigi.config import Settings
from disdat_luigi.run.request import BackendName, ContainerJob, RunRequest, RunResult

LogSink = Callable[[str], None]


class Backend(ABC):
    name: BackendName

    def __init__(self, settings: Settings, log: LogSink) -> None:
        self.settings = settings
        self.log = log
        # told of every job as soon as it is submitted (so it can be found again, even when the
        # process following it fails or is interrupted): (job id, submission, job definition)
        self.on_submitted: Callable[[str, Mapping[str, Any], Mapping[str, Any]], None] = lambda *_: None

    @abstractmethod
    def image_reference(self, image_name: str) -> str:
        """The exact image this backend will run for `image_name` (raises ImageNotFound)."""

    def secret_environment(self) -> dict[str, str]:
        """Credentials the container gets from this backend (none unless the backend says so)."""
        return {}

    @abstractmethod
    def launch(self, request: RunRequest, job: ContainerJob) -> RunResult:
        """Start the container; return once it finished (or, for Batch without --wait, once submitted)."""
