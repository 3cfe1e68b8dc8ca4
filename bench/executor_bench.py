"""Executors benchmark: a fan-out of N trivial remote tasks on moto's AWS Batch (which runs the
pushed image on the real Docker engine), side by side with the same DAG run whole in one container.

For each N: the wall time of one hybrid `dsdt apply` (the N leaves as Batch jobs: one array job
with the default array_min_size, or N single jobs) and of `dsdt run --backend AWSBatch --wait` of
the same DAG; the host apply's CPU seconds (its children included) and peak RSS; and the AWS
Batch and CloudWatch Logs requests it made, and its requests on the claims of the remote
(`claims/`, each task submitted once across machines), counted at the endpoint (a counting layer
in front of moto), which unlike time does not vary from run to run.

The hybrid applies run with the code before a change and after it, side by side (the sides
alternating within each round): "before" is a copy of `disdat_luigi` at --before (`git archive`),
put first on PYTHONPATH, with a store of its own (its images are built from that copy too);
"after" is the working tree's installation.

    python bench/executor_bench.py [--sizes 10 50] [--rounds 2] [--before REV | --no-before]

Needs the test stack (tests/infra/stack.sh up: Docker engine, offline base image) and runs as root.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import AWS_ENV, free_port  # noqa: E402

BEFORE = "256e396"  # the last commit before Batch tasks were claimed on the remote

FAN = """
import luigi
from disdat_luigi.pipe import PipeTask


class Leaf(PipeTask):
    executor = "batch"
    i = luigi.IntParameter()
    salt = luigi.Parameter()

    def pipe_run(self):
        return self.i


class Fan(PipeTask):
    n = luigi.IntParameter()
    salt = luigi.Parameter()

    def pipe_requires(self):
        for i in range(self.n):
            self.add_dependency(f"leaf_{i}", Leaf, {"i": i, "salt": self.salt})

    def pipe_run(self, **leaves):
        return sum(leaves.values())
"""


class Counting:
    """WSGI layer in front of moto: counts Batch (REST, /v1/...) and Logs (X-Amz-Target) calls."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, target = environ.get("PATH_INFO", ""), environ.get("HTTP_X_AMZ_TARGET", "")
        if path.startswith("/v1/"):
            key = "batch:" + path[4:]
        elif "/claims/" in path:  # S3, path style: /bucket/prefix/context/<remote>/claims/<digest>.json
            key = "claims:" + environ.get("REQUEST_METHOD", "")
        elif target.startswith("Logs_"):
            key = "logs:" + target.rpartition(".")[2]
        else:
            key = "other"
        with self.lock:
            self.counts[key] += 1
        return self.app(environ, start_response)

    def take(self) -> collections.Counter[str]:
        with self.lock:
            taken, self.counts = self.counts, collections.Counter()
        return taken


def start_moto() -> tuple[str, Counting]:
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    counting = Counting(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, counting, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", counting


def start_registry(root: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = root / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return f"127.0.0.1:{port}", proc


def code_tree(rev: str, dest: Path) -> str:
    """A copy of the repository at `rev` under `dest` (the package links to files beside it);
    a description of what was copied."""
    commit = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if commit.returncode != 0:
        raise SystemExit(f"not a revision of {REPO}: {rev}")
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return f"{rev} = {commit.stdout.strip()}"


def side_env(env: dict[str, str], work: Path, side: str) -> dict[str, str]:
    """The environment of one side's `dsdt`: its own store; "before" imports its copy first."""
    path = f"{work / 'code-before'}:{work / 'pipes'}" if side == "before" else str(work / "pipes")
    return {**env, "DISDAT_HOME": str(work / f"store-{side}"), "PYTHONPATH": path}


def setup(work: Path, sides: list[str]) -> tuple[dict[str, dict[str, str]], Counting, subprocess.Popen[bytes]]:
    subprocess.run(["bash", str(REPO / "tests/infra/stack.sh"), "up"], check=True)
    endpoint, counting = start_moto()
    registry, registry_proc = start_registry(work)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DISDAT_"))},
        **AWS_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials"),
        "AWS_CONFIG_FILE": str(work / "no-config"),
        "DISDAT_HOME": str(work / "store"),
        "DISDAT_CONFIG": str(work / "disdat.cfg"),
        "PYTHONPATH": str(work / "pipes"),
    }
    os.environ.update(env)
    os.environ["MOTO_DOCKER_NETWORK_MODE"] = "host"
    import boto3

    role = boto3.client("iam").create_role(RoleName="bench-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch")
    ce = batch.create_compute_environment(computeEnvironmentName="bench-ce", type="UNMANAGED", serviceRole=role)
    batch.create_job_queue(
        jobQueueName="bench-queue",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce["computeEnvironmentArn"]}],
    )
    boto3.client("s3").create_bucket(Bucket="bench")
    (work / "pipes" / "fan").mkdir(parents=True)
    (work / "pipes" / "fan" / "__init__.py").write_text("")
    (work / "pipes" / "fan" / "tasks.py").write_text(FAN)
    (work / "pipes" / "setup.py").write_text("from setuptools import setup\nsetup(name='fan', packages=['fan'])\n")
    dsdt(env, "init")
    config = Path(env["DISDAT_CONFIG"])
    text = config.read_text()
    for key, value in (
        ("registry", registry),
        ("network_mode", "host"),
        ("base_image", "disdat-test-base:bookworm"),
        ("aws_batch_queue", "bench-queue"),
        ("pipe_root", str(work / "pipes")),
    ):
        text = text.replace(f"\n{key} =\n", f"\n{key} = {value}\n", 1)
    text = text.replace("poll_seconds = 5\n", "poll_seconds = 1\n")
    text += "\n[executor.batch]\ntype = aws_batch\nuse_aws_session_token = 900\n"
    text += "\n[executor.single]\ntype = aws_batch\nuse_aws_session_token = 900\narray_min_size = 100000\n"
    config.write_text(text)
    envs = {side: side_env(env, work, side) for side in sides}
    for side, side_env_ in envs.items():
        for args in (("context", "bench"), ("switch", "bench"), ("remote", side, "s3://bench/runs")):
            dsdt(side_env_, *args)
        dsdt(side_env_, "dockerize", "--push", str(work / "pipes"), "fan.tasks.Fan")
    counting.take()
    return envs, counting, registry_proc


def dsdt(env: dict[str, str], *args: str) -> tuple[float, dict[str, float], str]:
    """One measured `dsdt` command: (wall seconds, {cpu, hwm_kb}, stderr)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / "measured.py"), *args], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dsdt {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    report = next(json.loads(line[6:]) for line in reversed(proc.stderr.splitlines()) if line.startswith("BENCH "))
    return wall, report, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["array", "single", "whole", "driver"],
        choices=["array", "single", "whole", "driver"],
    )
    parser.add_argument("--before", default=BEFORE, help=f"revision of the code before the change ({BEFORE})")
    parser.add_argument("--no-before", action="store_true", help="measure the working tree only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-exec-bench-"))
    sides = ["after"] if args.no_before else ["before", "after"]
    if not args.no_before:
        print(f"before: {code_tree(args.before, work / 'code-before')}", file=sys.stderr, flush=True)
    envs, counting, registry = setup(work, sides)
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    try:
        for round_ in range(args.rounds):
            order = 1 if round_ % 2 == 0 else -1
            for n in args.sizes[::order]:
                for mode in args.modes[::order]:
                    for side in (["after"] if mode in ("whole", "driver") else sides)[::order]:
                        env, salt = envs[side], uuid.uuid4().hex[:8]
                        if mode == "driver":
                            wall, report, err = dsdt({**env, "BENCH_COUNT_REQUESTS": "1"}, "run", "--backend",
                                                     "AWSBatch", "--detach", "--use-aws-session-token", "900", "-",
                                                     f"driven_{salt}", "fan.tasks.Fan", "--n", str(n),
                                                     "--salt", salt)  # fmt: skip
                            report["driver_wall"] = wall + wait_for_driver(err)
                        elif mode == "whole":
                            wall, report, _err = dsdt(env, "run", "--backend", "AWSBatch", "--wait",
                                                      "--use-aws-session-token", "900", "-", f"whole_{salt}",
                                                      "fan.tasks.Fan", "--n", str(n), "--salt", salt)  # fmt: skip
                        else:
                            executor = ["--executor", "Leaf=single"] if mode == "single" else []
                            wall, report, _err = dsdt(env, "apply", *executor, "fan.tasks.Fan", "--n", str(n),
                                                      "--salt", salt)  # fmt: skip
                        counts = counting.take()
                        row = {"wall": wall, **report, "counts": counts}
                        key = (side, mode, n)
                        if key not in best or wall < best[key]["wall"]:
                            best[key] = row
                        print(
                            f"round {round_ + 1} {side:>6} {mode:>6} N={n:<4} {wall:7.1f} s claims {_claims(counts)}",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        registry.terminate()
        registry.wait()
    print_results(best, args.sizes, sides, args.modes)


def wait_for_driver(stderr: str) -> float:
    """Seconds until the driver job `dsdt run --detach` submitted (named on stderr) ended."""
    import boto3

    job_id = re.search(r"submitted AWS Batch job (\S+)", stderr)
    if job_id is None:
        raise SystemExit(f"no driver job submitted:\n{stderr[-3000:]}")
    started = time.perf_counter()
    while True:
        (job,) = boto3.client("batch").describe_jobs(jobs=[job_id.group(1)])["jobs"]
        if job["status"] in ("SUCCEEDED", "FAILED"):
            if job["status"] == "FAILED":
                raise SystemExit(f"driver job {job_id.group(1)} failed: {job.get('statusReason')}")
            return time.perf_counter() - started
        time.sleep(1)


def _aws(counts: collections.Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.startswith(("batch:", "logs:")))


def _claims(counts: collections.Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.startswith("claims:"))


def print_results(
    best: dict[tuple[str, str, int], dict[str, Any]], sizes: list[int], sides: list[str], modes: list[str]
) -> None:
    print(
        "\n| N | mode | code | hybrid apply | whole DAG in one container (`dsdt run --wait`) | ratio | "
        "Batch+Logs requests / task | of which submit / describe / logs | claim requests / task | "
        "host CPU ms / task | host peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        whole = best[("after", "whole", n)]["wall"] if "whole" in modes else None
        for mode in [m for m in ("array", "single") if m in modes]:
            for side in sides:
                row = best[(side, mode, n)]
                counts = row["counts"]
                parts = (counts["batch:submitjob"], counts["batch:describejobs"], _aws(counts) - sum(
                    v for k, v in counts.items() if k.startswith("batch:")))  # fmt: skip
                ratio = f"{row['wall'] / whole:.2f}x" if whole else "n/a"
                print(
                    f"| {n} | {mode} | {side} | {row['wall']:.1f} s | {f'{whole:.1f} s' if whole else 'n/a'} | "
                    f"{ratio} | {_aws(counts) / n:.2f} | {parts[0]} / {parts[1]} / {parts[2]} | "
                    f"{_claims(counts) / n:.2f} | {1000 * row['cpu'] / n:.0f} | {row['hwm_kb'] / 1024:.0f} |"
                )
    if "driver" in modes:
        print(
            "\n| N | laptop: `dsdt run --detach` | laptop's AWS requests | laptop CPU s "
            "| driver run to its end | whole DAG in one container (`dsdt run --wait`) |"
        )
        print("|---|---|---|---|---|---|")
        for n in sizes:
            row = best[("after", "driver", n)]
            requests = row["requests"]
            whole = f"{best[('after', 'whole', n)]['wall']:.1f} s" if "whole" in modes else "n/a"
            services = collections.Counter({k.partition(":")[0]: 0 for k in requests})
            for key, count in requests.items():
                services[key.partition(":")[0]] += count
            by_service = ", ".join(f"{name} {count}" for name, count in sorted(services.items()))
            print(
                f"| {n} | {row['wall']:.1f} s | {sum(requests.values())}: {by_service} "
                f"({requests.get('batch:SubmitJob', 0)} SubmitJob) "
                f"| {row['cpu']:.2f} | {row['driver_wall']:.1f} s | {whole} |"
            )
    for mode in [m for m in ("array", "single") if m in modes]:
        worst = max(_claims(best[("after", mode, n)]["counts"]) / n for n in sizes)
        print(
            f"\n{mode}: claim requests per remote task at most {worst:.2f} "
            f"(target <= 2: {'yes' if worst <= 2 else 'NO'})"
        )
        if "before" in sides:
            grew = [
                n for n in sizes if _aws(best[("after", mode, n)]["counts"]) > _aws(best[("before", mode, n)]["counts"])
            ]
            print(f"{mode}: Batch+Logs requests no more than before: {'yes' if not grew else f'NO (N={grew})'}")
        if len(sizes) >= 2:
            small, large = min(sizes), max(sizes)
            a, b = best[("after", mode, small)], best[("after", mode, large)]
            marginal = 1000 * (b["cpu"] - a["cpu"]) / (large - small)
            growth = b["hwm_kb"] / a["hwm_kb"]
            print(
                f"{mode}: host CPU per additional remote task {marginal:.0f} ms (target < 50: "
                f"{'yes' if marginal < 50 else 'NO'}); peak RSS x{growth:.2f} from N={small} to N={large} "
                f"(flat: {'yes' if growth < 1.25 else 'NO'})"
            )


if __name__ == "__main__":
    main()
