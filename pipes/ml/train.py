"""Train: a ridge regression of load on the cleaned features; the model is also saved as a file."""

import luigi
import numpy as np
from etl.clean import Clean

from disdat_luigi.pipe import PipeTask

FEATURES = ["temperature", "humidity", "temp_x_humidity"]


def ridge(data, alpha):
    """The coefficients (intercept first) of a ridge fit on standardized features, and the RMSE."""
    x = data[FEATURES].to_numpy()
    x = np.column_stack([np.ones(len(x)), (x - x.mean(axis=0)) / x.std(axis=0)])
    y = data["load"].to_numpy()
    penalty = alpha * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    coef = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    residual = y - x @ coef
    return coef, float(np.sqrt(np.mean(residual**2)))


class Train(PipeTask):
    rows = luigi.IntParameter(default=200)
    alpha = luigi.FloatParameter(default=1.0)

    def pipe_requires(self):
        self.add_dependency("data", Clean, {"rows": self.rows})

    def pipe_run(self, data):
        coef, rmse = ridge(data, self.alpha)
        model = self.create_output_file("model.npy")
        np.save(model.path, coef)
        return {"alpha": self.alpha, "rmse": rmse, "model": model.path}
