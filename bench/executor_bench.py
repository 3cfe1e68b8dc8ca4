"""Executors benchmark: a fan-out of N trivial remote tasks on moto's AWS Batch (which runs the
pushed image on the real Docker engine), side by side with the same DAG run whole in one container.

For each N: the wall time of one hybrid `dsdt apply` (the N leaves as Batch jobs: one array job
with the default array_min_size, or N single jobs) and of `dsdt run --backend AWSBatch --wait` of
the same DAG; the host apply's CPU seconds (its children included) and peak RSS; and the AWS
Batch and CloudWatch Logs requests it made, counted at the endpoint (a counting layer in front of
moto), which unlike time does not vary from run to run.

    python bench/executor_bench.py [--sizes 10 50] [--rounds 2]

Needs the test stack (tests/infra/stack.sh up: Docker engine, offline base image) and runs as root.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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


def setup(work: Path) -> tuple[dict[str, str], Counting, subprocess.Popen[bytes]]:
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
    for args in (("context", "bench"), ("switch", "bench"), ("remote", "shared", "s3://bench/runs")):
        dsdt(env, *args)
    dsdt(env, "dockerize", "--push", str(work / "pipes"), "fan.tasks.Fan")
    counting.take()
    return env, counting, registry_proc


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
        "--modes", nargs="+", default=["array", "single", "whole"], choices=["array", "single", "whole"]
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-exec-bench-"))
    env, counting, registry = setup(work)
    best: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for round_ in range(args.rounds):
            for n in args.sizes if round_ % 2 == 0 else list(reversed(args.sizes)):
                for mode in args.modes if round_ % 2 == 0 else list(reversed(args.modes)):
                    salt = uuid.uuid4().hex[:8]
                    if mode == "whole":
                        wall, report, _err = dsdt(env, "run", "--backend", "AWSBatch", "--wait",
                                                  "--use-aws-session-token", "900", "-", f"whole_{salt}",
                                                  "fan.tasks.Fan", "--n", str(n), "--salt", salt)  # fmt: skip
                    else:
                        executor = ["--executor", "Leaf=single"] if mode == "single" else []
                        wall, report, _err = dsdt(env, "apply", *executor, "fan.tasks.Fan", "--n", str(n),
                                                  "--salt", salt)  # fmt: skip
                    counts = counting.take()
                    row = {"wall": wall, **report, "counts": counts}
                    key = (mode, n)
                    if key not in best or wall < best[key]["wall"]:
                        best[key] = row
                    print(f"round {round_ + 1} {mode:>6} N={n:<4} {wall:7.1f} s", file=sys.stderr, flush=True)
    finally:
        registry.terminate()
    if set(args.modes) == {"array", "single", "whole"}:
        print_results(best, args.sizes)
    else:
        for key, row in sorted(best.items()):
            print(
                key,
                f"{row['wall']:.1f} s",
                f"cpu {row['cpu']:.2f} s",
                f"{row['hwm_kb'] / 1024:.0f} MB",
                dict(row["counts"]),
            )


def _aws(counts: collections.Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.startswith(("batch:", "logs:")))


def print_results(best: dict[tuple[str, int], dict[str, Any]], sizes: list[int]) -> None:
    print(
        "\n| N | mode | hybrid apply | whole DAG in one container (`dsdt run --wait`) | ratio | "
        "Batch+Logs requests / task | of which submit / describe / logs | host CPU ms / task | host peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        whole = best[("whole", n)]["wall"]
        for mode in ("array", "single"):
            row = best[(mode, n)]
            counts = row["counts"]
            parts = (counts["batch:submitjob"], counts["batch:describejobs"], _aws(counts) - sum(
                v for k, v in counts.items() if k.startswith("batch:")))  # fmt: skip
            print(
                f"| {n} | {mode} | {row['wall']:.1f} s | {whole:.1f} s | {row['wall'] / whole:.2f}x | "
                f"{_aws(counts) / n:.2f} | {parts[0]} / {parts[1]} / {parts[2]} | "
                f"{1000 * row['cpu'] / n:.0f} | {row['hwm_kb'] / 1024:.0f} |"
            )
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        for mode in ("array", "single"):
            a, b = best[(mode, small)], best[(mode, large)]
            marginal = 1000 * (b["cpu"] - a["cpu"]) / (large - small)
            growth = b["hwm_kb"] / a["hwm_kb"]
            print(
                f"\n{mode}: host CPU per additional remote task {marginal:.0f} ms (target < 50: "
                f"{'yes' if marginal < 50 else 'NO'}); peak RSS x{growth:.2f} from N={small} to N={large} "
                f"(flat: {'yes' if growth < 1.25 else 'NO'})"
            )


if __name__ == "__main__":
    main()
