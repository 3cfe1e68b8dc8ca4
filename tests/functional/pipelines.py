"""Small PipeTask pipelines used by the apply tests (importable by luigi worker processes)."""

from __future__ import annotations

import os
from pathlib import Path

import luigi
import pandas as pd

from disdat_luigi import api
from disdat_luigi.pipe import PipeTask


class Source(PipeTask):
    n = luigi.IntParameter(default=3)

    def pipe_run(self):
        return list(range(self.n))


class Base(PipeTask):
    label = luigi.Parameter(default="base")


class Double(Base):
    """Inherits `label` from Base; both parameters are part of its identity."""

    n = luigi.IntParameter(default=3)

    def pipe_requires(self):
        self.add_dependency("nums", Source, {"n": self.n})

    def pipe_run(self, nums):
        return {"label": self.label, "doubled": [2 * v for v in nums]}


class Pair(PipeTask):
    """Two inputs of one class: swapping their parameters must change the result."""

    a = luigi.IntParameter()
    b = luigi.IntParameter()

    def pipe_requires(self):
        self.add_dependency("x", Source, {"n": self.a})
        self.add_dependency("y", Source, {"n": self.b})

    def pipe_run(self, x, y):
        return (len(x), len(y))


class Typed(PipeTask):
    """Parameters of many luigi types, echoed back."""

    count = luigi.IntParameter(default=1)
    ratio = luigi.FloatParameter(default=0.5)
    flag = luigi.BoolParameter(default=False)
    day = luigi.DateParameter(default=pd.Timestamp("2020-01-01").date())
    items = luigi.ListParameter(default=[])
    mapping = luigi.DictParameter(default={})
    name = luigi.Parameter(default="x")

    def pipe_run(self):
        return {
            "count": self.count,
            "ratio": self.ratio,
            "flag": self.flag,
            "day": self.day,
            "items": list(self.items),
            "mapping": dict(self.mapping),
            "name": self.name,
        }


class Frames(PipeTask):
    def pipe_run(self):
        return pd.DataFrame({"a": [1, 2]}, index=pd.Index(["r", "s"], name="k"))


class UsesFrames(PipeTask):
    def pipe_requires(self):
        self.add_dependency("frame", Frames, {})

    def pipe_run(self, frame):
        return {"frame": frame, "tuple": (1, "two"), "dtype": str(frame["a"].dtype)}


class Files(PipeTask):
    def pipe_run(self):
        single = self.create_output_file("one.txt")
        with single.open("w") as handle:
            handle.write("one")
        many = self.create_output_file({"a": "sub/a.txt", "b": "sub/b.txt"})
        for key, target in many.items():
            with target.open("w") as handle:
                handle.write(key)
        folder = self.create_output_dir("folder")
        Path(folder, "x.bin").write_bytes(b"x")
        return {"one": single.path, "many": {k: t.path for k, t in many.items()}, "dir": folder}


class ReadsFiles(PipeTask):
    def pipe_requires(self):
        self.add_dependency("files", Files, {})

    def pipe_run(self, files):
        return Path(files["one"]).read_text() + Path(files["many"]["b"]).read_text()


class Tagged(PipeTask):
    def pipe_requires(self):
        self.add_tags({"team": "ml"})
        self.set_bundle_name("tagged_output")

    def pipe_run(self):
        return 1


class ReadsTags(PipeTask):
    def pipe_requires(self):
        self.add_dependency("src", Tagged, {})

    def pipe_run(self, src):
        return {"tags": self.get_tags("src"), "uuid": self.get_bundle_uuid("src")}


class AlwaysRuns(PipeTask):
    def pipe_requires(self):
        self.mark_force()

    def pipe_run(self):
        return 1


class Fails(PipeTask):
    def pipe_requires(self):
        self.add_dependency("nums", Source, {"n": 2})

    def pipe_run(self, nums):
        Path(self.create_output_file("partial.txt").path).write_text("half")
        raise ValueError("boom at the last step")


class FailsOnce(PipeTask):
    """Fails the first time it runs (it leaves `marker` behind), then succeeds."""

    marker = luigi.Parameter(significant=False)

    def pipe_requires(self):
        self.add_dependency("nums", Source, {"n": 2})

    def pipe_run(self, nums):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("failed once")
            raise RuntimeError("first attempt fails")
        return sum(nums)


class ExternalByName(PipeTask):
    source_name = luigi.Parameter()

    def pipe_requires(self):
        self.add_external_dependency("data", None, None, human_name=self.source_name)

    def pipe_run(self, data):
        return data


class ExternalByUuid(PipeTask):
    source_uuid = luigi.Parameter()

    def pipe_requires(self):
        self.add_external_dependency("data", None, None, uuid=self.source_uuid)

    def pipe_run(self, data):
        return data


class ExternalByClass(PipeTask):
    def pipe_requires(self):
        self.add_external_dependency("data", Source, {"n": 4})

    def pipe_run(self, data):
        return sum(data)


class Dynamic(PipeTask):
    sizes = luigi.ListParameter(default=[1, 2, 3])

    def pipe_run(self):
        total = []
        for size in self.sizes:
            values = yield self.yield_dependency(Source, {"n": size})
            total.append(sum(values))
        both = yield [self.yield_dependency(Source, {"n": 5}), self.yield_dependency(Source, {"n": 6})]
        return {"sums": total, "lengths": [len(v) for v in both], "pid": os.getpid()}


class FanIn(PipeTask):
    width = luigi.IntParameter(default=6)

    def pipe_requires(self):
        for i in range(self.width):
            self.add_dependency(f"s{i}", Source, {"n": i})

    def pipe_run(self, **inputs):
        return sorted(len(v) for v in inputs.values())


class Nested(PipeTask):
    context_name = luigi.Parameter()

    def pipe_run(self):
        result = api.apply(self.context_name, Source, params={"n": 9})
        return {"inner": result, "data": api.get(self.context_name, "Source").data}


class WithInput(PipeTask):
    def pipe_run(self, pipeline_input):
        return {"got": pipeline_input}


class Transient(PipeTask):
    def pipe_requires(self):
        self.mark_transient()

    def pipe_run(self):
        return "scratch"


class UsesTransient(PipeTask):
    def pipe_requires(self):
        self.add_dependency("t", Transient, {})

    def pipe_run(self, t):
        return t + "!"


class AssertsInRequires(PipeTask):
    """Disdat's idiom: assert on what add_external_dependency returned (None when not found)."""

    def pipe_requires(self):
        found = self.add_external_dependency("data", Source, {"n": 99})
        assert found is not None, "no Source(n=99) bundle"

    def pipe_run(self, data):
        return data


class YieldsTasks(PipeTask):
    """Disdat's idiom: yield_dependency returns the task; after yielding it, read pipe_output."""

    offset = luigi.IntParameter(default=0)

    def pipe_requires(self):
        self.add_dependency("base", Source, {"n": 2})

    def pipe_run(self, base):
        one = self.yield_dependency(Source, {"n": 3 + self.offset})
        yield one
        many = [self.yield_dependency(Source, {"n": n}) for n in (4, 5)]
        yield many
        inner = self.yield_dependency(Dynamic, {"sizes": [1]})
        yield inner
        return {
            "base": len(base),
            "one": len(one.pipe_output),
            "many": sum(len(t.pipe_output) for t in many),
            "inner": inner.pipe_output["sums"],
        }


class NestedWorkers(PipeTask):
    """Runs another apply, with several workers, from inside pipe_run."""

    context_name = luigi.Parameter()
    inner_workers = luigi.IntParameter(default=3)

    def pipe_run(self):
        result = api.apply(self.context_name, FanIn, params={"width": 4}, workers=self.inner_workers)
        return {"inner": result, "data": api.get(self.context_name, "FanIn").data}


class RemoteOutput(PipeTask):
    """Writes straight into its bundle's remote directory."""

    def pipe_run(self):
        target = self.create_remote_output_file("model.txt")
        with target.open("w") as handle:
            handle.write("remote weights")
        return target.path


class ReturnsS3Path(PipeTask):
    """Returns an existing s3:// object's URL as its data."""

    url = luigi.Parameter()

    def pipe_run(self):
        return {"model": self.url}


class DisdatHelpers(PipeTask):
    """Uses the rest of Disdat's PipeTask helpers."""

    def pipe_requires(self):
        self.add_dependency("nums", Source, {"n": 2})
        self.mark_transient(push_meta=False)

    def pipe_run(self, nums):
        inputs = self.input_bundles()
        return {
            "inputs": {arg: bundle.name for arg, bundle in inputs.items()},
            "processing_id": self.processing_id(),
            "human_id": self.human_id(),
        }


class NeedsInputDeep(PipeTask):
    """A root whose upstream task wants pipeline_input (only the root gets it)."""

    def pipe_requires(self):
        self.add_dependency("inner", WithInput, {})

    def pipe_run(self, inner):
        return inner


# --- a hybrid pipeline: prepare here, fit per hyperparameter elsewhere, evaluate here ----------------


class HybridPrepare(PipeTask):
    rows = luigi.IntParameter(default=20)

    def pipe_run(self):
        return [float(i) for i in range(self.rows)]


class HybridFit(PipeTask):
    executor = "farm"
    executor_options = {"memory": 512}
    code_version = os.environ.get("HYBRID_FIT_CODE_VERSION") or None  # a test's stand-in for an edit
    alpha = luigi.IntParameter()
    rows = luigi.IntParameter(default=20)

    def pipe_requires(self):
        self.add_dependency("data", HybridPrepare, {"rows": self.rows})

    def pipe_run(self, data):
        if os.environ.get("HYBRID_FAIL_ALPHA") == str(self.alpha):
            raise RuntimeError(f"alpha {self.alpha} diverged")
        return {"alpha": self.alpha, "score": sum(data) * self.alpha, "pid": os.getpid()}


class HybridEvaluate(PipeTask):
    alphas = luigi.IntParameter(default=6)
    rows = luigi.IntParameter(default=20)

    def pipe_requires(self):
        for alpha in range(1, self.alphas + 1):
            self.add_dependency(f"fit_{alpha}", HybridFit, {"alpha": alpha, "rows": self.rows})

    def pipe_run(self, **fits):
        best = max(fits.values(), key=lambda f: f["score"])
        return {"best_alpha": best["alpha"], "fits": len(fits), "pids": sorted({f["pid"] for f in fits.values()})}


class HybridNap(PipeTask):
    """A local task that takes a while and says when and where it ran."""

    n = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=1.0)

    def pipe_run(self):
        import time

        started = time.time()
        time.sleep(self.seconds)
        if os.environ.get("HYBRID_FAIL_NAP") == str(self.n):
            raise RuntimeError(f"nap {self.n} woke badly")
        return {"n": self.n, "start": started, "end": time.time(), "pid": os.getpid()}


class HybridNaps(PipeTask):
    """Several local naps and one remote fit, side by side."""

    count = luigi.IntParameter(default=3)
    seconds = luigi.FloatParameter(default=1.0)

    def pipe_requires(self):
        for n in range(self.count):
            self.add_dependency(f"nap_{n}", HybridNap, {"n": n, "seconds": self.seconds})
        self.add_dependency("fit", HybridFit, {"alpha": 1})

    def pipe_run(self, fit, **naps):
        return {"naps": sorted(naps.values(), key=lambda nap: nap["n"]), "fit": fit["alpha"]}
