"""apply benchmark: a fan-in DAG of N trivial tasks, first run and no-op re-run, side by side.

Engines: disdat_luigi; plain luigi with LocalTargets (same DAG); disdat-luigi 1.0.2 from PyPI
in its own venv. Each run is a fresh child process; times exclude interpreter start and imports.

    python bench/apply_bench.py [--sizes 1000 4000 10000] [--rounds 2] [--skip-legacy] [--plain-max 4000]

Plain luigi is quadratic in N (its scheduler walks every pending task for each task it hands out):
it is skipped above --plain-max (4,000 took 84 s; 10,000 would take well over 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import child_result, ensure_venv, print_table, run_child  # noqa: E402


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
    print(child_result(time.perf_counter() - started))


class Engine:
    """One engine: its python, and a fresh store (or work directory) for every round."""

    def __init__(self, name: str, key: str, python: str, root: Path) -> None:
        self.name, self.key, self.python, self.root = name, key, python, root

    def fresh_env(self, label: str) -> tuple[dict[str, str], Path]:
        work = self.root / f"{self.key}-{label}"
        work.mkdir(parents=True)
        if self.key == "ours":
            env = {"DISDAT_HOME": str(work / "store"), "DISDAT_CONFIG": str(work / "disdat.cfg")}
            code = "from disdat_luigi import api; api.init(); api.context('bench')"
        elif self.key == "legacy":
            (work / ".config").mkdir()
            env = {"HOME": str(work)}
            code = "import disdat.api as a; a.init(); a.context('bench')"
        else:
            return {}, work
        subprocess.run([self.python, "-c", code], env={**os.environ, **env}, check=True, capture_output=True)
        return env, work

    def first_and_again(self, n: int, label: str) -> tuple[float, float, float]:
        """First run and no-op re-run seconds, and the first run's peak RSS (MB)."""
        env, work = self.fresh_env(label)
        argv = [str(HERE / "apply_bench.py"), "--child", self.key, str(n), str(work)]
        first = run_child(argv, env, python=self.python)
        again = run_child(argv, env, python=self.python).seconds
        shutil.rmtree(work, ignore_errors=True)
        return first.seconds, again, first.peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--rounds", type=int, default=2, help="best of this many round-robin runs per engine")
    parser.add_argument("--skip-legacy", action="store_true")
    parser.add_argument("--plain-max", type=int, default=4000, help="largest N plain luigi is run at")
    parser.add_argument("--legacy-max", type=int, default=1000, help="largest N disdat-luigi 1.0.2 is run at")
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    root = Path(tempfile.mkdtemp(prefix="dl-apply-bench-"))
    try:
        engines = [
            Engine("disdat_luigi", "ours", sys.executable, root),
            Engine("plain luigi + LocalTarget", "plain", sys.executable, root),
        ]
        if not args.skip_legacy:
            legacy = ensure_venv(HERE / ".venv-disdat-luigi-1.0.2", "disdat-luigi==1.0.2")
            engines.append(Engine("disdat-luigi 1.0.2", "legacy", str(legacy), root))
        limits = {"plain": args.plain_max, "legacy": args.legacy_max}
        runs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for round_ in range(args.rounds):
            for n in args.sizes:
                # rotate the order each round so no engine always runs on a warmer (or noisier) machine
                for engine in engines[round_ % len(engines) :] + engines[: round_ % len(engines)]:
                    if n <= limits.get(engine.key, n):
                        runs.setdefault((engine.name, n), []).append(engine.first_and_again(n, f"{n}-r{round_}"))
        best = {key: (min(r[0] for r in v), min(r[1] for r in v), min(r[2] for r in v)) for key, v in runs.items()}
        rows = []
        for n in args.sizes:
            ours_first, ours_again, _rss = best[("disdat_luigi", n)]
            for engine in engines:
                if (engine.name, n) not in best:
                    rows.append([n, engine.name, f"skipped (N > {limits[engine.key]})", "", "", "", "", ""])
                    continue
                first, again, rss = best[(engine.name, n)]
                ratios = [f"{first / ours_first:.2f}x", f"{again / ours_again:.2f}x"]
                rows.append(
                    [n, engine.name, f"{first:.2f}", f"{again:.3f}", f"{1000 * first / n:.2f}", f"{rss:.0f}", *ratios]
                )
        print_table(
            f"apply: fan-in DAG of N trivial tasks, best of {args.rounds} round-robin runs "
            "(ratio = engine time / disdat_luigi time; >1x: disdat_luigi faster)",
            [
                "N",
                "engine",
                "first run s",
                "no-op re-run s",
                "ms per task",
                "peak RSS MB",
                "first vs ours",
                "re-run vs ours",
            ],
            rows,
        )
        ours = {n: best[("disdat_luigi", n)] for n in args.sizes}
        small, large = min(args.sizes), max(args.sizes)
        growth = ours[large][0] / ours[small][0]
        checks = [
            (
                f"first run at N={large} within 12x of N={small} (x{large // small} tasks)",
                f"{growth:.1f}x",
                growth <= 12,
            ),
            (
                f"under 3 ms per task at N={large}",
                f"{1000 * ours[large][0] / large:.2f} ms",
                1000 * ours[large][0] / large < 3,
            ),
            (f"no-op re-run at N={large} under 1.5 s", f"{ours[large][1]:.2f} s", ours[large][1] < 1.5),
            (
                "peak RSS under 1 GB",
                f"{max(r[2] for r in ours.values()):.0f} MB",
                max(r[2] for r in ours.values()) < 1024,
            ),
        ]
        for what, measured, ok in checks:
            print(f"{what}: {measured} ({'yes' if ok else 'NO'})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
