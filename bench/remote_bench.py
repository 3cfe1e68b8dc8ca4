"""Push/pull benchmark against a local moto S3 server, every engine side by side in one run.

Shapes: 500 files of 100 KiB, and one 512 MiB file. Engines: disdat_luigi; boto3's transfer
manager with its default TransferConfig (the `aws s3 cp` engine); the server's raw capacity (best
of concurrent put_object/get_object with 4, 10 and 32 threads); Disdat 1.2.0 in its own venv.
Each measurement runs in a fresh child process; times exclude interpreter start and imports.

    python bench/remote_bench.py            # full run (needs ~4 GB of disk in $TMPDIR)
    python bench/remote_bench.py --quick    # 100 files, 64 MiB: a smoke test
    python bench/remote_bench.py --shape large --rounds 5 --skip-legacy   # one shape, more rounds
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AWS_ENV, Measure, child_result, ensure_venv, moto_server, print_table, run_child  # noqa: E402

HERE = Path(__file__).resolve().parent
KIB = 1024
MIB = 1024 * KIB
RAW_THREADS = (4, 10, 32)
SETTLE_SECONDS = 6  # longer than ext4's journal commit interval


def make_data(root: Path, quick: bool) -> dict[str, Path]:
    small, big = root / "small", root / "big"
    small.mkdir(parents=True)
    big.mkdir()
    count = 100 if quick else 500
    for i in range(count):
        (small / f"part-{i:04d}.bin").write_bytes(os.urandom(100 * KIB))
    with open(big / "blob.bin", "wb") as handle:
        for _ in range((64 if quick else 512) // 8):
            handle.write(os.urandom(8 * MIB))
    return {"500 x 100 KiB" if not quick else "100 x 100 KiB": small, ("512 MiB" if not quick else "64 MiB"): big}


# --- children: each prints child_result(...) -----------------------------------------------


def child(args: list[str]) -> None:
    engine, op, source, bucket, extra = args[0], args[1], Path(args[2]), args[3], args[4:]
    import boto3

    client = boto3.client("s3")
    if engine == "disdat_luigi":
        # import and create the S3 client before the clock, as every other engine does
        from disdat_luigi import api
        from disdat_luigi.config import load_settings
        from disdat_luigi.store.remote.s3 import S3

        S3(load_settings().remote)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    prefix = f"{engine}/{source.name}"
    out = Path(tempfile.mkdtemp(dir=source.parent))
    started = time.perf_counter()
    if engine == "transfer_manager":
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        with create_transfer_manager(client, TransferConfig()) as manager:
            futures = [
                manager.upload(str(f), bucket, f"{prefix}/{f.name}")
                if op == "push"
                else manager.download(bucket, f"{prefix}/{f.name}", str(out / f.name))
                for f in files
            ]
            for future in futures:
                future.result()
    elif engine == "raw":

        def put(f: Path) -> None:
            with open(f, "rb") as body:
                client.put_object(Bucket=bucket, Key=f"{prefix}/{f.name}", Body=body)

        def get(f: Path) -> None:
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{f.name}")["Body"]
            with open(out / f.name, "wb") as handle:
                for chunk in body.iter_chunks(MIB):
                    handle.write(chunk)

        with ThreadPoolExecutor(int(extra[0])) as pool:
            list(pool.map(put if op == "push" else get, files))
    elif engine == "disdat_luigi":  # extra: bundle name [, context to pull into]
        if op == "push":
            api.push("bench", extra[0])
        else:
            api.pull(extra[1], extra[0], localize=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    print(child_result(seconds))


# --- parent ---------------------------------------------------------------------------------


class Engines:
    """Each engine pushes then pulls one shape in child processes; every round uses fresh keys,
    bundles and contexts (a second push of the same bundle would be a no-op). Every measurement
    gets a moto server of its own: moto slows down with the memory and temporary files earlier
    transfers leave behind (ranged GETs of a large object copy it once per range), and no engine
    should pay for another's."""

    def __init__(self, env: dict[str, str], root: Path, legacy: bool) -> None:
        self.env = env
        self.root = root
        os.environ.update(env)
        from disdat_luigi import api

        self.api = api
        api.init()
        api.context("bench")
        self.names = ["disdat_luigi", "boto3 transfer manager", "raw capacity (best of 4/10/32 threads)"]
        self.legacy_python = None
        if legacy:
            self.legacy_python = ensure_venv(HERE / ".venv-disdat-1.2.0", "disdat==1.2.0")
            (root / "disdat-home" / ".config").mkdir(parents=True)
            self.names.append("Disdat 1.2.0")

    def prepare(self, source: Path, round_: int) -> None:
        """Every engine's input for one round and shape: a copy of the files (a distinct key set)
        and the bundles of the disdat engines (a second push of one bundle would be a no-op).

        All of it is made before the first measurement. On these machines an upload that runs
        right after 512 MiB were written is ~25% slower (measured: it costs the server ~2 s more
        CPU, even after a sync and a pause), so whoever made their input last would pay for it."""
        copy = self._copy(source, round_)
        shutil.copytree(source, copy)
        self.api.commit("bench", self.api.add("bench", _bundle_name(copy), copy).name)
        if self.legacy_python is not None:
            argv = [str(HERE / "legacy_disdat.py"), "add", str(copy), "-"]
            run_child(argv, self._legacy_env(), python=str(self.legacy_python))

    def _copy(self, source: Path, round_: int) -> Path:
        return self.root / f"r{round_}" / source.name

    def measure(self, name: str, source: Path, round_: int) -> tuple[Measure, Measure]:
        copy = self._copy(source, round_)
        with moto_server() as endpoint:
            self.env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"] = endpoint
            import boto3

            client = boto3.client("s3")
            client.create_bucket(Bucket="bench")
            _warm_up(client)
            result = self._measure(name, copy, round_)
        # what this measurement deleted (its downloads, a pulled context) is trimmed on a `discard`
        # mount only once ext4 commits its journal (every 5 s): let that happen before the next
        # engine is timed, not during its run
        os.sync()
        time.sleep(SETTLE_SECONDS)
        return result

    def _measure(self, name: str, copy: Path, round_: int) -> tuple[Measure, Measure]:
        if name == "disdat_luigi":
            return self._ours(copy, round_)
        if name == "Disdat 1.2.0":
            return self._legacy(copy, round_)
        engine = "transfer_manager" if name.startswith("boto3") else "raw"
        if engine == "raw":
            pushes, pulls = [], []
            # more threads than files is the same measurement again: take it once, so that
            # raw capacity is not the best of more samples than the other engines get
            files = sum(1 for p in copy.rglob("*") if p.is_file())
            for threads in sorted({min(t, files) for t in RAW_THREADS}):
                argv = ["--child", "raw", "push", str(copy), "bench", str(threads)]
                pushes.append(run_child([__file__, *argv], self.env))
                pulls.append(run_child([__file__, *argv[:2], "pull", *argv[3:]], self.env))
                _empty_bucket()
            return min(pushes, key=lambda m: m.seconds), min(pulls, key=lambda m: m.seconds)
        push = run_child([__file__, "--child", engine, "push", str(copy), "bench"], self.env)
        return push, run_child([__file__, "--child", engine, "pull", str(copy), "bench"], self.env)

    def _ours(self, copy: Path, round_: int) -> tuple[Measure, Measure]:
        api = self.api
        name = _bundle_name(copy)
        api.remote("bench", "bench", "s3://bench/dl")  # this measurement's server
        push = run_child([__file__, "--child", "disdat_luigi", "push", str(copy), "bench", name], self.env)
        context = f"pull{name}"
        api.context(context)
        api.remote(context, "bench", "s3://bench/dl")
        pull = run_child([__file__, "--child", "disdat_luigi", "pull", str(copy), "bench", name, context], self.env)
        api.delete_context(context, force=True)
        return push, pull

    def _legacy(self, copy: Path, round_: int) -> tuple[Measure, Measure]:
        env = self._legacy_env()
        argv = [str(HERE / "legacy_disdat.py"), "push", str(copy), f"s3://bench/legacy{round_}"]
        push = run_child(argv, env, python=str(self.legacy_python))
        argv[1] = "pull"
        return push, run_child(argv, env, python=str(self.legacy_python))

    def _legacy_env(self) -> dict[str, str]:
        return {**self.env, "HOME": str(self.root / "disdat-home")}


def _bundle_name(copy: Path) -> str:
    return f"{copy.parent.name}{copy.name}"


def _warm_up(client: Any) -> None:
    """Run every kind of request once: a new moto server sets up each on first use (imports,
    response templates), which no measurement should pay for."""
    client.put_object(Bucket="bench", Key="warm/small", Body=b"x", Metadata={"sha256": "0"})
    client.head_object(Bucket="bench", Key="warm/small")
    client.get_object(Bucket="bench", Key="warm/small")["Body"].read()
    client.get_object(Bucket="bench", Key="warm/small", Range="bytes=0-0")["Body"].read()
    client.list_objects_v2(Bucket="bench", Prefix="warm/")
    upload = client.create_multipart_upload(Bucket="bench", Key="warm/large")["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": client.upload_part(Bucket="bench", Key="warm/large", UploadId=upload, PartNumber=n, Body=body)[
                "ETag"
            ],
        }
        for n, body in ((1, b"x" * 5 * MIB), (2, b"x"))
    ]
    client.complete_multipart_upload(
        Bucket="bench", Key="warm/large", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    _empty_bucket()


def _empty_bucket() -> None:
    import boto3

    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket="bench", Delete={"Objects": keys})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shape", choices=["small", "large"], help="measure only one of the two shapes")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs per engine")
    parser.add_argument("--skip-legacy", action="store_true", help="leave out Disdat 1.2.0")
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    root = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    try:
        data = make_data(root, args.quick)
        if args.shape:
            data = dict([list(data.items())[0 if args.shape == "small" else 1]])
        env = {**AWS_ENV, "DISDAT_HOME": str(root / "store"), "DISDAT_CONFIG": str(root / "disdat.cfg")}
        engines = Engines(env, root, legacy=not args.skip_legacy)
        for round_ in range(args.rounds):
            for source in data.values():
                engines.prepare(source, round_)
        os.sync()
        time.sleep(SETTLE_SECONDS)
        best: dict[tuple[str, str], tuple[Measure, Measure]] = {}
        for round_ in range(args.rounds):
            for shape, source in data.items():
                order = engines.names[round_ % len(engines.names) :] + engines.names[: round_ % len(engines.names)]
                if round_ % 2:
                    order.reverse()
                # rotated each round so no engine always goes first, reversed every other round so
                # no engine always follows the same one (and pays for what that one left behind)
                for name in order:
                    push, pull = engines.measure(name, source, round_)
                    print(
                        f"round {round_} {shape} {name}: push {push.seconds:.2f} pull {pull.seconds:.2f}",
                        file=sys.stderr,
                    )
                    old = best.get((name, shape))
                    if old is not None:
                        push = min(push, old[0], key=lambda m: m.seconds)
                        pull = min(pull, old[1], key=lambda m: m.seconds)
                    best[(name, shape)] = (push, pull)
        rows = []
        for shape in data:
            ours_push, ours_pull = best[("disdat_luigi", shape)]
            for name in engines.names:
                push, pull = best[(name, shape)]
                rows.append(
                    [
                        shape,
                        name,
                        f"{push.seconds:.2f}",
                        f"{pull.seconds:.2f}",
                        f"{push.seconds / ours_push.seconds:.2f}x",
                        f"{pull.seconds / ours_pull.seconds:.2f}x",
                        f"{max(push.peak_rss_mb, pull.peak_rss_mb):.0f}",
                    ]
                )
        print_table(
            f"S3 push/pull against moto, best of {args.rounds} round-robin runs "
            "(ratio = engine time / disdat_luigi time: >1x means disdat_luigi is faster)",
            ["shape", "engine", "push s", "pull s", "push vs ours", "pull vs ours", "peak RSS MB"],
            rows,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
