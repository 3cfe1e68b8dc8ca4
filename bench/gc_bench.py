"""gc of 10,000 bundles (1,000 names x 10 versions, one small file each), locally and on a moto S3
server, with the S3 requests it makes, counted by botocore's event hooks (deterministic: the
same store gives the same count). Each gc runs in a fresh child process, timed from its call
(imports and the S3 client made before the clock). One table.

    python bench/gc_bench.py            # 1,000 names x 10 versions, keep the newest 3
    python bench/gc_bench.py --quick    # 100 names x 10 versions
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AWS_ENV, child_result, moto_server, print_table, run_child  # noqa: E402

KEEP = 3
VERSIONS = 10


def make_store(root: Path, names: int) -> str:
    """`names` x VERSIONS committed bundles in context 'src' (not flushed to disk: set-up only)."""
    from disdat_luigi.store.bundle import Bundle
    from disdat_luigi.store.store import LocalStore

    context = LocalStore(root, durable=False).create_context("src")
    for version in range(VERSIONS):
        for n in range(names):
            with Bundle(context, name=f"name{n:04d}") as bundle:
                Path(bundle.get_file("part.bin")).write_bytes(f"{n} {version}\n".encode() * 50)
                bundle.add_data(bundle.get_file("part.bin"))
            bundle.commit()
    context.index.close()  # its WAL folded into the file: the context can be copied
    return "src"


def publish(objects: Path, bucket: str) -> None:
    """Put every bundle of 'src' on the remote as a push would leave it (file, manifest, catalog
    entry), written concurrently with plain PUTs: the set-up, not what is measured."""
    import boto3

    from disdat_luigi.store.location import RemoteLocation
    from disdat_luigi.store.manifest import MANIFEST_NAME, BundleManifest

    client = boto3.client("s3")
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    location = RemoteLocation.parse(f"s3://{bucket}/team", "shared")

    def put(uuid: str) -> None:
        raw = (objects / uuid / MANIFEST_NAME).read_bytes()
        manifest = BundleManifest.from_json(raw, uuid)
        for entry in manifest.files:
            body = (objects / uuid / entry.path).read_bytes()
            client.put_object(Bucket=bucket, Key=location.file_key(uuid, entry.path), Body=body)
        client.put_object(Bucket=bucket, Key=location.manifest_key(uuid), Body=raw)
        client.put_object(Bucket=bucket, Key=location.catalog_key(manifest.name, uuid), Body=b"")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, sorted(os.listdir(objects))))


def child(context: str, remote: str) -> None:
    """One gc, timed; prints child_result with the S3 requests it made and what it reclaimed."""
    from disdat_luigi import api
    from disdat_luigi.config import load_settings
    from disdat_luigi.store.remote.s3 import S3

    requests = {"count": 0}

    def count(**_kwargs: object) -> None:
        requests["count"] += 1

    S3(load_settings().remote).client.meta.events.register("before-send.s3", count)
    started = time.perf_counter()
    result = api.gc(context, keep_last=KEEP, remote=remote == "remote", dry_run=False, force=True)
    seconds = time.perf_counter() - started
    print(
        child_result(
            seconds,
            requests=float(requests["count"]),
            reclaimed=float(len(result.reclaimed)),
            bundles=float(len(result.plan.verdicts)),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 names")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    names = 100 if args.quick else args.names
    work = Path(tempfile.mkdtemp(prefix="dl-gc-bench-"))
    try:
        env = {"DISDAT_HOME": str(work / "home"), "DISDAT_CONFIG": str(work / "disdat.cfg"), **AWS_ENV}
        os.environ.update(env)
        from disdat_luigi import api

        api.init()
        started = time.perf_counter()
        make_store(work / "home", names)
        print(f"set-up: {names * VERSIONS} bundles in {time.perf_counter() - started:.1f} s", flush=True)
        pristine = work / "pristine"
        shutil.copytree(work / "home" / "context" / "src", pristine)
        rows = []
        with moto_server() as endpoint:
            os.environ["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"] = endpoint
            cases = [
                ("local gc", "src", "local", None),
                ("remote gc, manifests fetched (fresh context)", "fresh", "remote", None),
                ("remote gc, manifests known here (pulled context)", "pulled", "remote", pristine),
            ]
            for label, context, where, copy in cases:
                if where == "remote":  # every bundle on the remote again (the previous gc reclaimed some)
                    publish(pristine / "objects", "gc-bench")
                target = work / "home" / "context" / context
                if context != "src":
                    shutil.rmtree(target, ignore_errors=True)
                    if copy is not None:
                        shutil.copytree(copy, target)
                    else:
                        api.context(context)
                    api.remote(context, "shared", "s3://gc-bench/team")
                measure = run_child([__file__, "--child", context, where], env)
                bundles, reclaimed = int(measure.detail["bundles"]), int(measure.detail["reclaimed"])
                requests = int(measure.detail["requests"])
                per = requests / reclaimed if reclaimed else 0.0
                # file, manifest and catalog entry per bundle listed; holds, intents, claims listed once each
                budget = 2 * reclaimed + -(-3 * bundles // 1000) + 3
                rows.append(
                    (
                        label,
                        f"{bundles:,}",
                        f"{reclaimed:,}",
                        f"{measure.seconds:.2f}",
                        f"{measure.seconds / bundles * 1e6:.0f}",
                        f"{requests:,}",
                        f"{per:.2f}",
                        ("yes" if requests <= budget else "NO") if where == "remote" else "-",
                    )
                )
        print_table(
            f"gc of {names * VERSIONS:,} bundles ({names:,} names x {VERSIONS} versions), keep the newest {KEEP}",
            (
                "operation",
                "bundles",
                "reclaimed",
                "seconds",
                "us/bundle",
                "S3 requests",
                "requests/reclaimed",
                "within 2/reclaimed + 1/1,000 listed",
            ),
            rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
