"""The fan-in DAG for disdat-luigi 1.0.2 (run with its own venv's python)."""

import luigi
from disdatluigi.pipe import PipeTask


class Leaf(PipeTask):
    i = luigi.IntParameter()

    def pipe_run(self):
        return self.i


class Root(PipeTask):
    n = luigi.IntParameter()

    def pipe_requires(self):
        for i in range(self.n):
            self.add_dependency(f"leaf_{i}", Leaf, {"i": i})

    def pipe_run(self, **leaves):
        return sum(leaves.values())
