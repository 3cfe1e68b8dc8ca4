"""A chain of tasks writing files, for crash trials."""

from __future__ import annotations

from pathlib import Path

import luigi

from disdat_luigi.pipe import PipeTask


class Step(PipeTask):
    index = luigi.IntParameter()
    salt = luigi.IntParameter()

    def pipe_requires(self):
        if self.index > 0:
            self.add_dependency("previous", Step, {"index": self.index - 1, "salt": self.salt})

    def pipe_run(self, previous=None):
        for j in range(8):
            Path(self.create_output_file(f"f{j}.txt").path).write_text(f"Step {self.index}\n" * 500)
        return (previous or 0) + self.index + self.salt


class Chain(PipeTask):
    length = luigi.IntParameter()
    salt = luigi.IntParameter()

    def pipe_requires(self):
        self.add_dependency("last", Step, {"index": self.length - 1, "salt": self.salt})

    def pipe_run(self, last):
        return last
