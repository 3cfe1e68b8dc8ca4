"""dockerize benchmark: a cold first build of a pipes/ module image, a no-op re-dockerize, and a
rebuild after a one-line change of pipeline code, in one run (targets: < 5 s and < 20 s).

    python bench/dockerize_bench.py [--base-image disdat-test-base:bookworm] [--network-mode host]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-image", default="disdat-test-base:bookworm")
    parser.add_argument("--network-mode", default="host")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-dockerize-bench-"))
    try:
        os.environ.update(DISDAT_HOME=str(work / "store"), DISDAT_CONFIG=str(work / "disdat.cfg"))
        from disdat_luigi import api
        from disdat_luigi.config import load_settings
        from disdat_luigi.dockerize.images import DockerizeRequest, dockerize

        api.init()
        cfg = work / "disdat.cfg"
        cfg.write_text(cfg.read_text().replace("network_mode =\n", f"network_mode = {args.network_mode}\n", 1))
        root = work / "pipes"
        shutil.copytree(HERE.parent / "pipes", root, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        request = DockerizeRequest(pipe_root=root, pipe_cls="ml.train.Train", base_image=args.base_image)

        def timed(req: DockerizeRequest) -> tuple[float, bool]:
            started = time.perf_counter()
            (result,) = dockerize(req, load_settings())
            return time.perf_counter() - started, result.built

        cold, cold_built = timed(DockerizeRequest(**{**request.__dict__, "no_cache": True}))
        noop, noop_built = timed(request)
        source = root / "ml" / "train.py"
        source.write_text(
            source.read_text().replace(
                "alpha = luigi.FloatParameter(default=1.0)", "alpha = luigi.FloatParameter(default=0.5)"
            )
        )
        change, change_built = timed(request)
        print_table(
            "dockerize of pipes/ ml.train.Train (image disdat-ml-train)",
            ["step", "seconds", "built", "target"],
            [
                ["first build (no cache)", f"{cold:.1f}", cold_built, "-"],
                ["no-op re-dockerize", f"{noop:.2f}", noop_built, "< 5 s"],
                ["one-line code change", f"{change:.1f}", change_built, "< 20 s"],
            ],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
