"""identity benchmark: planning (`api.explain`) a 10,000-task DAG over a generated 200-module pipe
root, with the code before a change and after it, side by side.

    python bench/identity_bench.py [--before 1799771] [--after-rev REV] [--tasks 10000] [--modules 200]
                                   [--rounds 3] [--repeats 2] [--quick]

Each side runs in child processes (--rounds per side, the sides alternating) with PYTHONPATH on a
copy of that side's `disdat_luigi` (`git archive` of a revision; "after" defaults to a snapshot of
the working tree) and a fresh store. A child imports the project, plans once untimed (lazy imports,
sqlite), then times --repeats fresh `api.explain` calls (luigi's instance cache cleared: every call
builds its tasks and its planner anew, as a new `dsdt apply --explain` would). Best time is kept.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import Measure, child_result, print_table, run_child  # noqa: E402

STAGES = 4  # task layers below the root
TARGET = 1.10  # after <= TARGET x before
BEFORE = "1799771"  # the last commit before code identities followed imports (ad0074e made them do so)


def _pad(prefix: str, count: int) -> str:
    """Small pure functions, so files are the size of real ones (parsing cost grows with size)."""
    return "".join(
        f"\n\ndef {prefix}_{k}(value, weight={k + 1}):\n"
        f'    """Step {k} of the {prefix} transform."""\n'
        f"    scaled = [v * weight for v in value] if isinstance(value, list) else value * weight\n"
        f"    return scaled\n"
        for k in range(count)
    )


def generate(project: Path, tasks: int, modules: int) -> str:
    """Write a pipe root (setup.py; packages `benchlib`, helpers, and `benchpipes`, task modules in
    STAGES layers plus a root module), commit it to git, and return the root class's dotted path."""
    rng = random.Random(7)
    helpers = max(2, modules // 10)
    steps = modules - helpers - 1  # one module per PipeTask class; the last module holds the root
    if steps < STAGES or tasks - 1 < steps:
        raise SystemExit(f"need at least {helpers + STAGES + 1} modules and one task per step class")
    files = {
        "setup.py": "from setuptools import find_packages, setup\n\nsetup(\n    name='identity-bench-pipes',\n"
        "    version='0.1.0',\n    packages=find_packages(include=['benchlib*', 'benchpipes*']),\n"
        "    install_requires=['disdat_luigi'],\n)\n",
        "benchlib/__init__.py": '"""Shared helpers: constants and pure functions."""\n',
        "benchpipes/__init__.py": '"""Generated steps for the identity benchmark."""\n',
    }
    for h in range(helpers):  # two helpers in three import up to two earlier ones
        deps = sorted({rng.randrange(h) for _ in range(2)}) if h and h % 3 else []
        imports = "".join(f"from benchlib import h{d:02d}\n" for d in deps)
        use = " + ".join(f"h{d:02d}.SCALE_{d:02d}" for d in deps) or "1"
        files[f"benchlib/h{h:02d}.py"] = (
            f'"""Helper {h}: constants and small pure functions."""\n\nimport math\n\n{imports}\n'
            f"SCALE_{h:02d} = {use} + {h}\nLABELS_{h:02d} = ('low', 'mid', 'high')\n\n\n"
            f"def scale_{h:02d}(x):\n    return math.fsum([x, SCALE_{h:02d}])\n{_pad(f'h{h:02d}', 12)}"
        )
    per_stage = [steps // STAGES + (1 if s < steps % STAGES else 0) for s in range(STAGES)]
    stage_of = [s for s in range(STAGES) for _ in range(per_stage[s])]
    first = [sum(per_stage[:s]) for s in range(STAGES)]
    shards = [(tasks - 1) // steps + (1 if c < (tasks - 1) % steps else 0) for c in range(steps)]
    required = [0] * steps  # how many shards of each class some downstream step already requires
    for s in range(STAGES):
        files[f"benchpipes/stage{s}/__init__.py"] = f'"""Stage {s} of the generated pipeline."""\n'
    for c in range(steps):
        s, p = stage_of[c], c - first[stage_of[c]]
        ups: list[int] = []
        if s:
            prev = list(range(first[s - 1], first[s - 1] + per_stage[s - 1]))
            ups = sorted({prev[p % len(prev)], prev[(p * 7 + 3) % len(prev)]})
        lines = ["import json\n\nimport luigi\n"]
        h1, h2, h3 = rng.sample(range(helpers), 3) if helpers >= 3 else (0, 1, 0)
        lines.append(f"from benchlib import h{h1:02d}\nfrom benchlib.h{h2:02d} import scale_{h2:02d}\n")
        lines.append(f"import benchlib.h{h3:02d}\n")
        for i, u in enumerate(ups):  # upstream classes: absolute and relative imports, both styles
            if i == 0:
                lines.append(f"from benchpipes.stage{s - 1}.m{u:03d} import M{u:03d}\n")
            else:
                lines.append(f"from ..stage{s - 1} import m{u:03d}\n")
        lines.append("\nfrom disdat_luigi.pipe import PipeTask\n")
        reqs = []
        for i, u in enumerate(ups):
            required[u] = max(required[u], min(shards[c], shards[u]))
            ref = f"M{u:03d}" if i == 0 else f"m{u:03d}.M{u:03d}"
            reqs.append(f"        if self.shard < {shards[u]}:\n")
            reqs.append(f'            self.add_dependency("in_{i}", {ref}, {{"shard": self.shard}})\n')
        body = "".join(reqs) or f'        self.set_bundle_name("source_{c:03d}")\n'
        files[f"benchpipes/stage{s}/m{c:03d}.py"] = (
            f'"""Stage {s}, step {c}: one PipeTask class, {shards[c]} shards."""\n\n{"".join(lines)}{_pad("prep", 6)}'
            f"\n\nclass M{c:03d}(PipeTask):\n    shard = luigi.IntParameter()\n"
            f'    region = luigi.Parameter(default="eu")\n\n    def pipe_requires(self):\n{body}\n'
            f"    def pipe_run(self, **inputs):\n        base = h{h1:02d}.scale_{h1:02d}(self.shard)"
            f" + scale_{h2:02d}(benchlib.h{h3:02d}.SCALE_{h3:02d})\n"
            f"        return json.dumps([base, sorted(inputs)])\n"
        )
    # the root requires every shard no step requires: all of the last stage's, and a few more
    ranges = [(c, required[c], shards[c]) for c in range(steps) if required[c] < shards[c]]
    imports = "".join(f"from benchpipes.stage{stage_of[c]} import m{c:03d}\n" for c, _a, _b in ranges)
    table = "".join(f"    (m{c:03d}.M{c:03d}, {a}, {b}),\n" for c, a, b in ranges)
    files["benchpipes/root.py"] = (
        f'"""The root: fans in every step not required by another."""\n\nimport luigi\n\n{imports}\n'
        f"from disdat_luigi.pipe import PipeTask\n\nRANGES = [\n{table}]\n\n\nclass Root(PipeTask):\n"
        f'    region = luigi.Parameter(default="eu")\n\n    def pipe_requires(self):\n'
        f"        for cls, start, stop in RANGES:\n            for shard in range(start, stop):\n"
        f'                self.add_dependency(f"{{cls.__name__}}_{{shard}}", cls, {{"shard": shard}})\n\n'
        f"    def pipe_run(self, **inputs):\n        return len(inputs)\n"
    )
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    git = ["git", "-C", str(project), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "generated pipe root"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    return "benchpipes.root.Root"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    """git in this repository, never taking its index lock (others work in this tree)."""
    return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True, text=True)


def code_tree(rev: str | None, dest: Path) -> str:
    """A copy of `disdat_luigi` at `rev` (None: the working tree, as it is now) under `dest`;
    a description of what was copied."""
    dest.mkdir(parents=True)
    if rev is None:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / "disdat_luigi", dest / "disdat_luigi", ignore=ignore)  # links followed
        status = _git("status", "--porcelain", "--", "disdat_luigi").stdout.splitlines()
        return f"working tree ({len(status)} files differ from HEAD)"
    commit = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    if commit.returncode != 0:
        raise SystemExit(f"not a revision of {REPO}: {rev}")
    # the whole tree: the package links to files beside it (the config template, dockerizer/)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return f"{rev} = {commit.stdout.strip()}"


def child(code_root: str, project: str, root_class: str, repeats: int) -> None:
    """Plan the project's root `repeats + 1` times in this process (the first untimed); print the best."""
    import importlib

    import luigi.task_register

    import disdat_luigi
    from disdat_luigi import api

    if not Path(disdat_luigi.__file__).resolve().is_relative_to(Path(code_root).resolve()):
        raise SystemExit(f"disdat_luigi imported from {disdat_luigi.__file__}, not from {code_root}")
    os.chdir(project)
    api.init()
    api.context("bench")
    module, _, name = root_class.rpartition(".")
    root = getattr(importlib.import_module(module), name)
    times: list[tuple[float, float]] = []  # (wall, CPU) seconds of each explain
    for _ in range(repeats + 1):
        luigi.task_register.Register.clear_instance_cache()  # fresh task objects, as in a new process
        started, cpu = time.perf_counter(), time.process_time()
        count = len(api.explain("bench", root))
        times.append((time.perf_counter() - started, time.process_time() - cpu))
    walls, cpus = zip(*times[1:])
    print(child_result(min(walls), cpu=min(cpus), first=times[0][0], tasks=float(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"revision of the code before the change ({BEFORE})")
    parser.add_argument("--after-rev", help="revision of the code after it (default: the working tree)")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--modules", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="child processes per side, the sides alternating")
    parser.add_argument("--repeats", type=int, default=2, help="timed explains in each child")
    parser.add_argument("--quick", action="store_true", help="1,000 tasks over 40 modules")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        code_root, project_dir, root_name, repeats = args.child
        child(code_root, project_dir, root_name, int(repeats))
        return
    tasks, modules = (1000, 40) if args.quick else (args.tasks, args.modules)
    work = Path(tempfile.mkdtemp(prefix="dl-identity-bench-"))
    try:
        project = work / "project"
        root_class = generate(project, tasks, modules)
        revs = {"before": args.before, "after": args.after_rev}
        described = {label: code_tree(rev, work / f"code-{label}") for label, rev in revs.items()}
        runs: dict[str, list[Measure]] = {label: [] for label in revs}
        failed: dict[str, str] = {}
        for round_ in range(args.rounds):
            for label in list(revs)[:: 1 if round_ % 2 == 0 else -1]:  # alternate who goes first
                if label in failed:
                    continue
                code, run = work / f"code-{label}", f"{label}-{round_}"
                env = {
                    "DISDAT_HOME": str(work / run / "home"),
                    "DISDAT_CONFIG": str(work / run / "disdat.cfg"),
                    "PYTHONPATH": os.pathsep.join([str(code), str(project)]),
                }
                argv = [str(HERE / "identity_bench.py"), "--child", str(code), str(project), root_class]
                try:
                    runs[label].append(run_child([*argv, str(args.repeats)], env))
                except RuntimeError as err:  # e.g. a working tree caught mid-edit: say so, measure the rest
                    failed[label] = (str(err).strip().splitlines() or ["failed"])[-1]
                    print(f"{label} side failed:\n{err}", file=sys.stderr)
        best: dict[str, float] = {}
        cpu: dict[str, float] = {}
        rows: list[list[object]] = []
        for label in revs:
            if label in failed:
                rows.append([label, described[label], "FAILED", "", "", "", failed[label]])
                continue
            best[label] = min(m.seconds for m in runs[label])
            planned = {int(m.detail["tasks"]) for m in runs[label]}
            first = min(m.detail["first"] for m in runs[label])
            rss = f"{max(m.peak_rss_mb for m in runs[label]):.0f}"
            ok = "ok" if planned == {tasks} else f"{sorted(planned)} (expected {tasks})"
            cpu[label] = min(m.detail["cpu"] for m in runs[label])
            rows.append([label, described[label], f"{first:.2f}", f"{best[label]:.2f}", f"{cpu[label]:.2f}", rss, ok])
        ratio = best["after"] / best["before"] if len(best) == 2 else None
        cpu_ratio = f"{cpu['after'] / cpu['before']:.2f}x" if ratio else "n/a"
        rows.append(["after / before", "", "", f"{ratio:.2f}x" if ratio else "n/a", cpu_ratio, "", ""])
        print_table(
            f"plan (api.explain, empty context): {tasks} tasks over a {modules}-module pipe root; "
            f"best of {args.rounds} alternating children x {args.repeats} fresh explains (after one untimed)",
            ["side", "code", "first explain s", "best explain s", "best CPU s", "peak RSS MB", "tasks planned"],
            rows,
        )
        verdict = "not measured" if ratio is None else "met" if ratio <= TARGET else "NOT met"
        print(f"target: after <= {TARGET:.2f} x before: {f'{ratio:.2f}x' if ratio else 'n/a'} ({verdict})")
        if ratio is None:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
