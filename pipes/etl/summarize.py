"""Summarize: statistics of a CSV given as the run's input bundle.

dsdt add readings ./readings.csv && dsdt commit readings
dsdt run readings summary etl.summarize.Summarize --column temp
"""

import luigi
import pandas as pd

from disdat_luigi.pipe import PipeTask
from etl.ingest import Ingest


class Summarize(PipeTask):
    column = luigi.Parameter(default="temp")

    def pipe_requires(self):
        self.add_dependency("reference", Ingest, {"rows": 24})

    def pipe_run(self, reference, pipeline_input):
        frame = pd.read_csv(pipeline_input)
        values = frame[self.column]
        return {
            "rows": len(frame),
            "mean": float(values.mean()),
            "max": float(values.max()),
            "reference_rows": len(reference["table"]),
        }
