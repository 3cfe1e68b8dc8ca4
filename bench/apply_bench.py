"""apply benchmark: a fan-in DAG of N trivial tasks, first run and no-op re-run, side by side.

Engines: disdat_luigi; plain luigi with LocalTargets (same DAG); disdat-luigi 1.0.2 from PyPI
in its own venv. Each run is a fresh child process; times exclude interpreter start and imports.

    python bench/apply_bench.py [--sizes 200 1000] [--skip-legacy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ensure_venv, print_table, run_child  # noqa: E402


def child(engine: str, n: int, work: str) -> None:
    """Run the DAG once in this process and print the seconds it took."""
    sys.path.insert(0, str(HERE))
    if engine == "ours":
        from fanin.ours import Root

        from disdat_luigi import api

        started = time.perf_counter()
        api.apply("bench", Root, params={"n": n})
    elif engine == "plain":
        import luigi
        from fanin.plain import Root

        started = time.perf_counter()
        luigi.build([Root(n=n, root=work)], local_scheduler=True, log_level="WARNING")
    else:
        import logging

        logging.disable(logging.CRITICAL)
        import disdatluigi.api as api
        from fanin.legacy import Root

        started = time.perf_counter()
        api.apply("bench", Root, params={"n": n})
    print(json.dumps({"seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--skip-legacy", action="store_true")
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    root = Path(tempfile.mkdtemp(prefix="dl-apply-bench-"))
    try:
        engines: dict[str, tuple[str, dict[str, str]]] = {}
        ours_env = {"DISDAT_HOME": str(root / "store"), "DISDAT_CONFIG": str(root / "disdat.cfg")}
        os.environ.update(ours_env)
        from disdat_luigi import api

        api.init()
        api.context("bench")
        engines["disdat_luigi"] = (sys.executable, ours_env)
        engines["plain luigi + LocalTarget"] = (sys.executable, {})
        if not args.skip_legacy:
            python = ensure_venv(HERE / ".venv-disdat-luigi-1.0.2", "disdat-luigi==1.0.2")
            home = root / "legacy-home"
            (home / ".config").mkdir(parents=True)
            legacy_env = {"HOME": str(home)}
            run_code = "import disdat.api as a; a.init(); a.context('bench')"
            import subprocess

            subprocess.run([str(python), "-c", run_code], env={**os.environ, **legacy_env}, check=True)
            engines["disdat-luigi 1.0.2"] = (str(python), legacy_env)
        key = {"disdat_luigi": "ours", "plain luigi + LocalTarget": "plain", "disdat-luigi 1.0.2": "legacy"}
        results: dict[tuple[str, int], tuple[float, float]] = {}
        for n in args.sizes:
            for name, (python, env) in engines.items():
                work = root / f"{key[name]}-{n}"
                work.mkdir()
                argv = [str(HERE / "apply_bench.py"), "--child", key[name], str(n), str(work)]
                first = run_child(argv, env, python=python).seconds
                again = run_child(argv, env, python=python).seconds
                results[(name, n)] = (first, again)
        rows = []
        for n in args.sizes:
            ours_first, ours_again = results[("disdat_luigi", n)]
            for name in engines:
                first, again = results[(name, n)]
                ratios = [f"{first / ours_first:.2f}x", f"{again / ours_again:.1f}x"]
                rows.append([n, name, f"{first:.2f}", f"{again:.3f}", *ratios])
        print_table(
            "apply: fan-in DAG of N trivial tasks (ratio = engine time / disdat_luigi time; >1x: disdat_luigi faster)",
            ["N", "engine", "first run s", "no-op re-run s", "first vs ours", "re-run vs ours"],
            rows,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
