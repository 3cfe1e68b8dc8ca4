"""Push/pull benchmark against a local moto S3 server, every engine side by side in one run.

Shapes: 500 files of 100 KiB, and one 512 MiB file. Engines: disdat_luigi; boto3's transfer
manager with its default TransferConfig (the `aws s3 cp` engine); the server's raw capacity (best
of concurrent put_object/get_object with 4, 10 and 32 threads); Disdat 1.2.0 in its own venv.
Each measurement runs in a fresh child process; times exclude interpreter start and imports.

    python bench/remote_bench.py            # full run (needs ~4 GB of disk in $TMPDIR)
    python bench/remote_bench.py --quick    # 100 files, 64 MiB: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AWS_ENV, Measure, ensure_venv, moto_server, print_table, run_child  # noqa: E402

HERE = Path(__file__).resolve().parent
KIB = 1024
MIB = 1024 * KIB


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


# --- children: each prints {"seconds": ...} ------------------------------------------------


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
    elif engine == "disdat_luigi":
        if op == "push":
            api.push("bench", source.name)
        else:
            api.pull(extra[0], source.name, localize=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"seconds": seconds}))


# --- parent ---------------------------------------------------------------------------------


def measure_disdat_luigi(
    data: dict[str, Path], env: dict[str, str], bucket: str, root: Path
) -> dict[str, tuple[Measure, Measure]]:
    os.environ.update(env)
    from disdat_luigi import api

    api.init()
    api.context("bench")
    api.remote("bench", "bench", f"s3://{bucket}/dl")
    results = {}
    for shape, source in data.items():
        api.commit("bench", api.add("bench", source.name, source).name)
        push = run_child([__file__, "--child", "disdat_luigi", "push", str(source), bucket], env)
        pull_ctx = f"pull{source.name}"
        api.context(pull_ctx)
        api.remote(pull_ctx, "bench", f"s3://{bucket}/dl")
        pull = run_child([__file__, "--child", "disdat_luigi", "pull", str(source), bucket, pull_ctx], env)
        results[shape] = (push, pull)
        api.delete_context(pull_ctx, force=True)
    return results


def measure_legacy_disdat(
    data: dict[str, Path], env: dict[str, str], bucket: str, root: Path
) -> dict[str, tuple[Measure, Measure]]:
    python = ensure_venv(HERE / ".venv-disdat-1.2.0", "disdat==1.2.0")
    home = root / "disdat-home"
    home.mkdir()
    legacy_env = {**env, "HOME": str(home)}
    results = {}
    for shape, source in data.items():
        argv = [str(HERE / "legacy_disdat.py"), "push", str(source), f"s3://{bucket}/legacy"]
        push = run_child(argv, legacy_env, python=str(python))
        argv[1] = "pull"
        pull = run_child(argv, legacy_env, python=str(python))
        results[shape] = (push, pull)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-legacy", action="store_true", help="leave out Disdat 1.2.0")
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    root = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    try:
        data = make_data(root, args.quick)
        with moto_server() as endpoint:
            env = {
                **AWS_ENV,
                "AWS_ENDPOINT_URL": endpoint,
                "DISDAT_HOME": str(root / "store"),
                "DISDAT_CONFIG": str(root / "disdat.cfg"),
            }
            os.environ.update(env)
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            rows = []
            engines: dict[str, dict[str, tuple[Measure, Measure]]] = {}
            engines["disdat_luigi"] = measure_disdat_luigi(data, env, "bench", root)
            tm: dict[str, tuple[Measure, Measure]] = {}
            raw: dict[str, tuple[Measure, Measure]] = {}
            for shape, source in data.items():
                tm[shape] = tuple(  # type: ignore[assignment]
                    run_child([__file__, "--child", "transfer_manager", op, str(source), "bench"], env)
                    for op in ("push", "pull")
                )
                best = []
                for op in ("push", "pull"):
                    runs = [
                        run_child([__file__, "--child", "raw", op, str(source), "bench", str(threads)], env)
                        for threads in (4, 10, 32)
                    ]
                    best.append(min(runs, key=lambda m: m.seconds))
                raw[shape] = (best[0], best[1])
            engines["boto3 transfer manager"] = tm
            engines["raw capacity (best of 4/10/32 threads)"] = raw
            if not args.skip_legacy:
                engines["Disdat 1.2.0"] = measure_legacy_disdat(data, env, "bench", root)
        for shape in data:
            ours_push, ours_pull = engines["disdat_luigi"][shape]
            for name, results in engines.items():
                push, pull = results[shape]
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
            "S3 push/pull against moto (time relative to disdat_luigi: >1x means disdat_luigi is faster)",
            ["shape", "engine", "push s", "pull s", "push vs ours", "pull vs ours", "peak RSS MB"],
            rows,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
