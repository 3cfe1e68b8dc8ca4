"""The fan-in DAG as plain luigi tasks with LocalTargets."""

import luigi


class Leaf(luigi.Task):
    i = luigi.IntParameter()
    root = luigi.Parameter(significant=False)

    def output(self):
        return luigi.LocalTarget(f"{self.root}/leaf_{self.i}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(str(self.i))


class Root(luigi.Task):
    n = luigi.IntParameter()
    root = luigi.Parameter(significant=False)

    def requires(self):
        return [Leaf(i=i, root=self.root) for i in range(self.n)]

    def output(self):
        return luigi.LocalTarget(f"{self.root}/root_{self.n}.txt")

    def run(self):
        total = sum(int(t.open().read()) for t in self.input())
        with self.output().open("w") as handle:
            handle.write(str(total))
