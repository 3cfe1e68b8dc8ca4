"""Ingest: make a raw table of (synthetic) sensor readings, and keep a CSV copy as a file."""

import luigi
import numpy as np
import pandas as pd

from disdat_luigi.pipe import PipeTask


class Ingest(PipeTask):
    """Raw readings: `rows` rows from a seeded generator, some values missing."""

    rows = luigi.IntParameter(default=200)
    seed = luigi.IntParameter(default=7)

    def pipe_requires(self):
        self.set_bundle_name("readings")
        self.add_tags({"stage": "raw"})

    def pipe_run(self):
        rng = np.random.default_rng(self.seed)
        temperature = rng.normal(20, 5, self.rows)
        humidity = rng.uniform(30, 90, self.rows)
        load = 3.0 * temperature - 0.5 * humidity + rng.normal(0, 2, self.rows)
        frame = pd.DataFrame(
            {
                "when": pd.date_range("2026-01-01", periods=self.rows, freq="h", tz="UTC"),
                "site": pd.Categorical(rng.choice(["north", "south"], self.rows)),
                "temperature": temperature,
                "humidity": humidity,
                "load": load,
            }
        )
        frame.loc[frame.index % 17 == 0, "humidity"] = np.nan
        target = self.create_output_file("readings.csv")
        with target.open("w") as handle:
            frame.to_csv(handle, index=False)
        return {"table": frame, "csv": target.path}
