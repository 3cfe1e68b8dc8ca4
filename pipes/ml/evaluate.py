"""Evaluate: train one model per alpha (dynamic dependencies) and report them best first."""

import luigi
import pandas as pd

from disdat_luigi.pipe import PipeTask
from ml.train import Train


class Evaluate(PipeTask):
    rows = luigi.IntParameter(default=200)
    alphas = luigi.ListParameter(default=[0.1, 1.0, 10.0])

    def pipe_run(self):
        results = []
        for alpha in self.alphas:
            result = yield self.yield_dependency(Train, {"rows": self.rows, "alpha": alpha})
            results.append({"alpha": result["alpha"], "rmse": result["rmse"]})
        return pd.DataFrame(results).sort_values("rmse", ignore_index=True)
