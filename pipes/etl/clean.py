"""Clean: drop incomplete readings and add features."""

import luigi

from disdat_luigi.pipe import PipeTask
from etl.ingest import Ingest


class Clean(PipeTask):
    rows = luigi.IntParameter(default=200)
    min_temperature = luigi.FloatParameter(default=-50.0)

    def pipe_requires(self):
        self.set_bundle_name("clean_readings")
        self.add_dependency("raw", Ingest, {"rows": self.rows})

    def pipe_run(self, raw):
        frame = raw["table"].dropna()
        frame = frame[frame.temperature >= self.min_temperature].copy()
        frame["temp_x_humidity"] = frame.temperature * frame.humidity
        return frame
