"""Push/pull benchmark against a local moto S3 server, every engine side by side in one run.

Shapes: 500 files of 100 KiB, and one 512 MiB file. Engines: disdat_luigi; boto3's transfer
manager with its default TransferConfig (the `aws s3 cp` engine); the server's raw capacity (best
of concurrent put_object/get_object with 4, 10 and 32 threads); for files of 8 MiB and more, the
server's raw multipart capacity (plain create_multipart_upload/upload_part/complete calls, the same
best of threads; pushes only); Disdat 1.2.0 in its own venv. Each measurement runs in a fresh child
process; times exclude interpreter start and imports. Below the table, every target of the remote
issue is checked against the measured ratios.

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
PART = 8 * MIB  # the part size of our multipart uploads and of boto3's default TransferConfig
OURS, TRANSFER_MANAGER, RAW, RAW_MULTIPART, LEGACY = (
    "disdat_luigi",
    "boto3 transfer manager",
    "raw capacity (best of 4/10/32 threads)",
    "raw multipart capacity (8 MiB parts)",
    "Disdat 1.2.0",
)
# the targets: our time / the other's at most (or, when strict, below) the limit
TARGETS = ((TRANSFER_MANAGER, 1.0, False), (RAW, 1.25, False), (LEGACY, 1.0, True))
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
    detail: dict[str, float] = {}
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
    elif engine == "raw_multipart":
        detail["complete"] = _put_multipart(client, bucket, prefix, files, int(extra[0]))
    elif engine == "disdat_luigi":  # extra: bundle name [, context to pull into]
        if op == "push":
            api.push("bench", extra[0])
        else:
            api.pull(extra[1], extra[0], localize=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    print(child_result(seconds, **detail))


def _put_multipart(client: Any, bucket: str, prefix: str, files: list[Path], threads: int) -> float:
    """Every file as one multipart upload of PART-sized parts with CRC32 checksums (what the
    transfer manager asks for by default), the parts of all files `threads` at a time; returns the
    seconds spent in CompleteMultipartUpload, the step that a single put_object does not have."""
    uploads = {
        f: client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/{f.name}", ChecksumAlgorithm="CRC32")[
            "UploadId"
        ]
        for f in files
    }
    pieces = [(f, number) for f in files for number in range(1, -(-f.stat().st_size // PART) + 1)]

    def put_part(piece: tuple[Path, int]) -> dict[str, Any]:
        f, number = piece
        with open(f, "rb") as handle:
            handle.seek((number - 1) * PART)
            body = handle.read(PART)
        answer = client.upload_part(
            Bucket=bucket,
            Key=f"{prefix}/{f.name}",
            UploadId=uploads[f],
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]}

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(put_part, pieces))
    started = time.perf_counter()
    for f in files:
        mine = [part for (owner, _), part in zip(pieces, parts) if owner == f]
        client.complete_multipart_upload(
            Bucket=bucket, Key=f"{prefix}/{f.name}", UploadId=uploads[f], MultipartUpload={"Parts": mine}
        )
    return time.perf_counter() - started


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
        self.names = [OURS, TRANSFER_MANAGER, RAW, RAW_MULTIPART]
        self.legacy_python = None
        if legacy:
            self.legacy_python = ensure_venv(HERE / ".venv-disdat-1.2.0", "disdat==1.2.0")
            (root / "disdat-home" / ".config").mkdir(parents=True)
            self.names.append(LEGACY)

    def names_for(self, source: Path) -> list[str]:
        """The engines that apply to a shape: multipart only where every file is large enough."""
        files = [p for p in source.rglob("*") if p.is_file()]
        large = all(f.stat().st_size >= PART for f in files)
        return [name for name in self.names if name != RAW_MULTIPART or large]

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

    def measure(self, name: str, source: Path, round_: int) -> tuple[Measure, Measure | None]:
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

    def _measure(self, name: str, copy: Path, round_: int) -> tuple[Measure, Measure | None]:
        if name == OURS:
            return self._ours(copy, round_)
        if name == LEGACY:
            return self._legacy(copy, round_)
        if name == TRANSFER_MANAGER:
            push = run_child([__file__, "--child", "transfer_manager", "push", str(copy), "bench"], self.env)
            return push, run_child([__file__, "--child", "transfer_manager", "pull", str(copy), "bench"], self.env)
        multipart = name == RAW_MULTIPART
        files = [p for p in copy.rglob("*") if p.is_file()]
        # more threads than items (files; parts when multipart) is the same measurement again:
        # take it once, so that raw capacity is not the best of more samples than the others get
        items = sum(-(-f.stat().st_size // PART) for f in files) if multipart else len(files)
        pushes, pulls = [], []
        for threads in sorted({min(t, items) for t in RAW_THREADS}):
            argv = ["--child", "raw_multipart" if multipart else "raw", "push", str(copy), "bench", str(threads)]
            pushes.append(run_child([__file__, *argv], self.env))
            if not multipart:  # a multipart upload is read back like any object: raw pull covers it
                pulls.append(run_child([__file__, *argv[:2], "pull", *argv[3:]], self.env))
            _empty_bucket()
        return _fastest(pushes), _fastest(pulls) if pulls else None

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


def _fastest(measures: list[Measure]) -> Measure:
    return min(measures, key=lambda m: m.seconds)


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


Best = dict[tuple[str, str], tuple[Measure, Measure | None]]  # (engine, shape) -> fastest push, pull


def _run_rounds(engines: Engines, data: dict[str, Path], rounds: int) -> Best:
    best: Best = {}
    for round_ in range(rounds):
        for shape, source in data.items():
            names = engines.names_for(source)
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            if round_ % 2:
                order.reverse()
            # rotated each round so no engine always goes first, reversed every other round so
            # no engine always follows the same one (and pays for what that one left behind)
            for name in order:
                push, pull = engines.measure(name, source, round_)
                complete = f" (complete {push.detail['complete']:.2f})" if "complete" in push.detail else ""
                pulled = f" pull {pull.seconds:.2f}" if pull is not None else ""
                print(f"round {round_} {shape} {name}: push {push.seconds:.2f}{complete}{pulled}", file=sys.stderr)
                old = best.get((name, shape))
                if old is not None:
                    push = _fastest([push, old[0]])
                    pull = _fastest([pull, old[1]]) if pull is not None and old[1] is not None else pull
                best[(name, shape)] = (push, pull)
    return best


def _result_rows(best: Best, names: list[str], shapes: list[str]) -> list[list[str]]:
    rows = []
    for shape in shapes:
        ours_push, ours_pull = best[(OURS, shape)]
        assert ours_pull is not None
        for name in names:
            if (name, shape) not in best:
                continue
            push, pull = best[(name, shape)]
            push_text = f"{push.seconds:.2f}"
            if "complete" in push.detail:
                push_text += f" ({push.detail['complete']:.2f} completing)"
            rows.append(
                [
                    shape,
                    name,
                    push_text,
                    f"{pull.seconds:.2f}" if pull is not None else "-",
                    f"{push.seconds / ours_push.seconds:.2f}x",
                    f"{pull.seconds / ours_pull.seconds:.2f}x" if pull is not None else "-",
                    f"{max(push.peak_rss_mb, pull.peak_rss_mb if pull is not None else 0):.0f}",
                ]
            )
    return rows


def _target_rows(best: Best, shapes: list[str]) -> list[list[str]]:
    """Each target of the issue: at least as fast as the transfer manager, within 1.25x of the
    raw capacity, faster than Disdat (push and pull, every shape); peak RSS under 200 MB."""
    rows = []
    for shape in shapes:
        ours = best[(OURS, shape)]
        for other, limit, strict in TARGETS:
            if (other, shape) not in best:
                continue
            for op, mine, theirs in zip(("push", "pull"), ours, best[(other, shape)]):
                assert mine is not None and theirs is not None
                ratio = mine.seconds / theirs.seconds
                met = ratio < limit if strict else ratio <= limit
                target = f"{op} {'<' if strict else '<='} {limit:.2f}x {other}"
                rows.append([shape, target, f"{ratio:.2f}x", "yes" if met else "NO"])
        if (RAW_MULTIPART, shape) in best:  # no target: shows how much of raw capacity is multipart's own cost
            ratio = ours[0].seconds / best[(RAW_MULTIPART, shape)][0].seconds
            rows.append([shape, f"(push vs {RAW_MULTIPART})", f"{ratio:.2f}x", "-"])
    peak = max(m.peak_rss_mb for shape in shapes for m in best[(OURS, shape)] if m is not None)
    rows.append(["all", "peak RSS < 200 MB", f"{peak:.0f} MB", "yes" if peak < 200 else "NO"])
    return rows


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
        best = _run_rounds(engines, data, args.rounds)
        print_table(
            f"S3 push/pull against moto, best of {args.rounds} round-robin runs "
            "(ratio = engine time / disdat_luigi time: >1x means disdat_luigi is faster)",
            ["shape", "engine", "push s", "pull s", "push vs ours", "pull vs ours", "peak RSS MB"],
            _result_rows(best, engines.names, list(data)),
        )
        print()
        print_table(
            "The remote issue's targets (ratio = disdat_luigi time / the other's time)",
            ["shape", "target", "measured", "met"],
            _target_rows(best, list(data)),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
