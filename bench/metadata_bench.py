"""Metadata at scale: push, pull and listing of many metadata-only bundles, with the code before
a change (default 256e396) and after it (the working tree), side by side on one moto server.

    python bench/metadata_bench.py [--before 256e396] [--remote 10000] [--local 100000] [--rounds 3]
    python bench/metadata_bench.py --quick      # 2,000 remote and 10,000 local bundles

Bundles are made once per run through the library's own commit path (with fsync off: they are
the benchmark's input, not what it times) and copied for each side. Every measurement is a fresh
child process with PYTHONPATH on that side's copy of `disdat_luigi`. S3 requests are counted in
the child (every HTTP request botocore sends). `dsdt` commands are timed from spawn to exit (or
to their first line of output), interpreter start included; `api.search` and push/pull inside
the child, after imports. Times are best of --rounds (push and pull: one round each).
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
from common import AWS_ENV, child_result, moto_server, print_table, run_child  # noqa: E402
from identity_bench import code_tree  # noqa: E402

BEFORE = "256e396"  # the last commit before this work
NAMES = 1000  # names of the local (listing) store; the remote bundles use 100
LS_LATEST, LS_NAME, LS_FIRST, SEARCH = "ls -l", "ls NAME", "ls (first row)", "api.search"


# --- children -------------------------------------------------------------------------------


def child(op: str, code_root: str, context: str) -> None:
    """Run one operation in this process with the requests counted; print child_result."""
    import botocore.httpsession

    sent = [0]
    original = botocore.httpsession.URLLib3Session.send

    def send(self: object, request: object) -> object:
        sent[0] += 1
        return original(self, request)  # type: ignore[arg-type]

    botocore.httpsession.URLLib3Session.send = send  # type: ignore[method-assign]
    import disdat_luigi
    from disdat_luigi import api

    if not Path(disdat_luigi.__file__).resolve().is_relative_to(Path(code_root).resolve()):
        raise SystemExit(f"disdat_luigi imported from {disdat_luigi.__file__}, not from {code_root}")
    started = time.perf_counter()
    if op == "push":
        count = len(api.push(context).pushed)
    elif op == "pull":
        count = len(api.pull(context))
    elif op == "search":
        count = len(api.search(context))
    else:
        raise SystemExit(f"unknown operation {op}")
    print(child_result(time.perf_counter() - started, requests=float(sent[0]), count=float(count)))


def make(root: str, context: str, count: int, names: int, remote_url: str) -> None:
    """`count` committed metadata-only bundles in `context` of the store at `root` (fsync off)."""
    from disdat_luigi import api
    from disdat_luigi.store.bundle import Bundle
    from disdat_luigi.store.store import LocalStore

    api.init()
    api.context(context)
    api.switch(context)
    if remote_url:
        api.remote(context, "shared", remote_url)
    ctx = LocalStore(Path(root), durable=False).context(context)
    started = time.perf_counter()
    for i in range(count):
        Bundle(ctx, name=f"n{i % names:04d}", data=i, tags={"i": str(i)}).commit()
    print(child_result(time.perf_counter() - started))


# --- the parent -------------------------------------------------------------------------------


def cli_seconds(code: Path, env: dict[str, str], args: list[str], first_line: bool = False) -> tuple[float, int]:
    """Wall time of `dsdt ARGS` (a fresh interpreter) to its exit, or to its first line of
    output; and how many lines it printed."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "disdat_luigi.cli.main", *args],
        env={**os.environ, **env, "PYTHONPATH": str(code)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=code,  # `-m` puts the working directory first on sys.path: it must hold that side's code
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    seconds = time.perf_counter() - started
    lines = (1 if first else 0) + proc.stdout.read().count(b"\n")
    if not first_line:
        seconds = time.perf_counter() - started
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0 or (first_line and not first):
        raise RuntimeError(f"dsdt {' '.join(args)} failed: {err.decode()[-2000:]}")
    return seconds, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"revision of the code before ({BEFORE})")
    parser.add_argument("--remote", type=int, default=10000, help="bundles pushed and pulled")
    parser.add_argument("--local", type=int, default=100000, help="bundles in the listed store")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.make:
        root, context, count, names, url = args.make
        make(root, context, int(count), int(names), url)
        return
    remote_n, local_n = (2000, 10000) if args.quick else (args.remote, args.local)
    work = Path(tempfile.mkdtemp(prefix="dl-metadata-bench-"))
    try:
        codes = {"before": work / "code-before", "after": work / "code-after"}
        described = {"before": code_tree(args.before, codes["before"]), "after": code_tree(None, codes["after"])}
        print(f"before: {described['before']}; after: {described['after']}", flush=True)
        with moto_server() as endpoint:
            aws = {**AWS_ENV, "AWS_ENDPOINT_URL": endpoint}
            os.environ.update(aws)
            import boto3

            s3 = boto3.client("s3")
            rows = run_all(work, codes, aws, s3, remote_n, local_n, args.rounds)
        print_table(
            f"metadata at scale, before ({described['before']}) vs after (working tree), moto on 127.0.0.1",
            ["operation", "size", "before", "after", "before/after", "requests before", "requests after"],
            rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _dsdt(env: dict[str, str], *args: str) -> None:
    code = env["PYTHONPATH"]  # run from there: `-m` puts the working directory first on sys.path
    subprocess.run(
        [sys.executable, "-m", "disdat_luigi.cli.main", *args], env={**os.environ, **env}, cwd=code, check=True
    )


def _store_env(work: Path, name: str) -> dict[str, str]:
    return {"DISDAT_HOME": str(work / name / "home"), "DISDAT_CONFIG": str(work / name / "disdat.cfg")}


def run_all(
    work: Path, codes: dict[str, Path], aws: dict[str, str], s3: object, remote_n: int, local_n: int, rounds: int
) -> list[list[object]]:
    after_code = {"PYTHONPATH": str(codes["after"])}
    started = time.perf_counter()
    # the pushed bundles, once; then a copy of that store per side
    run_child(
        [__file__, "--make", str(work / "src/home"), "src", str(remote_n), "100", ""],
        {**_store_env(work, "src"), **after_code},
    )
    # the listed store, once (read-only: both sides list the same one)
    run_child(
        [__file__, "--make", str(work / "big/home"), "big", str(local_n), str(NAMES), ""],
        {**_store_env(work, "big"), **after_code},
    )
    print(f"made {remote_n} + {local_n} bundles in {time.perf_counter() - started:.0f} s", flush=True)
    results: dict[tuple[str, str], tuple[float, float | None]] = {}
    printed: dict[tuple[str, str], set[int]] = {}  # lines each dsdt command printed: both sides must agree
    for side, code in codes.items():
        env = {**_store_env(work, side), "PYTHONPATH": str(code)}
        shutil.copytree(work / "src", work / side, symlinks=True)
        (work / side / "disdat.cfg").write_text(
            (work / "src" / "disdat.cfg").read_text().replace(str(work / "src"), str(work / side))
        )
        s3.create_bucket(Bucket=side)  # type: ignore[attr-defined]
        url = f"s3://{side}/team"
        _dsdt(env, "remote", "shared", url)
        pushed = run_child([__file__, "--child", "push", str(code), "src"], env)
        results[(side, "push")] = (pushed.seconds, pushed.detail["requests"])
        for command in (["context", "dst"], ["switch", "dst"], ["remote", "shared", url]):
            _dsdt(env, *command)
        first = run_child([__file__, "--child", "pull", str(code), "dst"], env)
        results[(side, "pull")] = (first.seconds, first.detail["requests"])
        again = run_child([__file__, "--child", "pull", str(code), "dst"], env)
        results[(side, "pull no-op")] = (again.seconds, again.detail["requests"])
        print(
            f"{side}: push {pushed.seconds:.1f} s, pull {first.seconds:.1f} s, no-op pull {again.seconds:.1f} s",
            flush=True,
        )
        big = {**_store_env(work, "big"), "PYTHONPATH": str(code)}
        empty = {**_store_env(work, f"empty-{side}"), "PYTHONPATH": str(code)}
        for command in (["init"], ["context", "e"], ["switch", "e"]):
            _dsdt(empty, *command)
        timings = {  # (store, arguments, up to the first line only)
            LS_LATEST: (big, ["ls", "-l"], False),
            LS_NAME: (big, ["ls", "n0007"], False),
            LS_FIRST: (big, ["ls"], True),
            "ls (empty context)": (empty, ["ls"], False),
            "--version": (empty, ["--version"], False),
        }
        for label, (store, argv, first_line) in timings.items():
            runs = [cli_seconds(code, store, argv, first_line) for _ in range(rounds)]
            results[(side, label)] = (min(seconds for seconds, _ in runs), None)
            printed[(side, label)] = {lines for _, lines in runs}
        searched = min(
            (run_child([__file__, "--child", "search", str(code), "big"], big) for _ in range(rounds)),
            key=lambda m: m.seconds,
        )
        results[(side, SEARCH)] = (searched.seconds / max(1, searched.detail["count"]) * 1e6, None)
    for label in {label for _, label in printed}:
        if printed[("before", label)] != printed[("after", label)]:
            print(
                f"WARNING {label}: before printed {printed[('before', label)]} lines, after {printed[('after', label)]}"
            )
    return _rows(results, remote_n, local_n)


def _rows(
    results: dict[tuple[str, str], tuple[float, float | None]], remote_n: int, local_n: int
) -> list[list[object]]:
    sizes = {
        "push": (remote_n, "push (committed, metadata only)", "s"),
        "pull": (remote_n, "pull into an empty context", "s"),
        "pull no-op": (remote_n, "pull, everything already here", "s"),
        LS_LATEST: (local_n, "dsdt ls -l", "s"),
        LS_NAME: (local_n, f"dsdt ls NAME ({local_n // NAMES} rows)", "s"),
        LS_FIRST: (local_n, "dsdt ls, first row", "s"),
        "ls (empty context)": (0, "dsdt ls, empty context", "s"),
        "--version": (0, "dsdt --version", "s"),
        SEARCH: (local_n, "api.search, per row", "us"),
    }
    rows: list[list[object]] = []
    for key, (size, label, unit) in sizes.items():
        before, before_requests = results[("before", key)]
        after, after_requests = results[("after", key)]
        rows.append(
            [
                label,
                f"{size:,}",
                f"{before:.2f} {unit}" if unit == "s" else f"{before:.1f} us",
                f"{after:.2f} {unit}" if unit == "s" else f"{after:.1f} us",
                f"{before / after:.1f}x" if after else "n/a",
                "" if before_requests is None else f"{before_requests:,.0f}",
                "" if after_requests is None else f"{after_requests:,.0f}",
            ]
        )
    return rows


if __name__ == "__main__":
    main()
