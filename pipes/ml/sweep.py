"""A hybrid pipeline: clean the data here, fit one model per alpha on AWS Batch (a fan-out of
jobs, one image), compare them here.

    dsdt apply ml.sweep.Sweep --alphas '[0.1, 1, 10]'                     # Fit runs on [executor.batch]
    dsdt apply --executor Fit=debug ml.sweep.Sweep ...                    # the same containers, locally
    dsdt apply --executor Fit=local ml.sweep.Sweep ...                    # everything in this process
"""

import os

import luigi
import numpy as np
import pandas as pd
from etl.clean import Clean

from disdat_luigi.pipe import PipeTask
from ml.train import ridge


class Fit(PipeTask):
    """One model; runs where [executor.batch] says, with these resources."""

    executor = "batch"
    executor_options = {"vcpus": 1, "memory": 1024}

    rows = luigi.IntParameter(default=200)
    alpha = luigi.FloatParameter(default=1.0)

    def pipe_requires(self):
        self.add_dependency("data", Clean, {"rows": self.rows})

    def pipe_run(self, data):
        if self.alpha < 0:
            raise ValueError(f"alpha must not be negative, got {self.alpha}")
        coef, rmse = ridge(data, self.alpha)
        model = self.create_output_file("model.npy")
        np.save(model.path, coef)
        where = os.environ.get("AWS_BATCH_JOB_ID") or os.environ.get("HOSTNAME") or "here"
        print(f"fitted alpha={self.alpha}: rmse {rmse:.4f} on {where}")
        return {"alpha": self.alpha, "rmse": rmse, "model": model.path}


class Sweep(PipeTask):
    """Every alpha's model, best first (runs here, after the fits)."""

    rows = luigi.IntParameter(default=200)
    alphas = luigi.ListParameter(default=[0.1, 1.0, 10.0])

    def pipe_requires(self):
        for index, alpha in enumerate(self.alphas):
            self.add_dependency(f"fit_{index}", Fit, {"rows": self.rows, "alpha": float(alpha)})

    def pipe_run(self, **fits):
        rows = [{"alpha": f["alpha"], "rmse": f["rmse"], "coef0": float(np.load(f["model"])[0])} for f in fits.values()]
        return pd.DataFrame(rows).sort_values("rmse", ignore_index=True)
