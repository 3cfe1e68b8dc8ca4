"""The fan-in DAG as disdat_luigi PipeTasks."""

import luigi

from disdat_luigi.pipe import PipeTask


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
