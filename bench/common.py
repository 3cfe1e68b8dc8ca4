"""Shared benchmark plumbing: a moto server process, child runs with timing and peak RSS, tables."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_rss_mb: float
    detail: dict[str, float] = field(default_factory=dict)  # named parts of `seconds`, when a child reports them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1 (so it does not share our GIL).

    It keeps its objects' temporary files in memory (tmpfs under /dev/shm where there is one): S3's
    storage is not the client's disk, and on a disk a server's writes and deletes (trims, on a
    `discard` mount) stall the client's own I/O at random, which is what the engines are timed on."""
    port = free_port()
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="dl-bench-moto-", dir=shm if shm.is_dir() else None))
    code = (
        "import logging, time; logging.getLogger('werkzeug').setLevel(logging.ERROR);"
        "from moto.server import ThreadedMotoServer;"
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); s.start();"
        "time.sleep(10**9)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def child_result(seconds: float, **detail: float) -> str:
    """What a benchmark child prints as its last line: its time, its own peak RSS and any named
    parts of that time (`detail`).

    The peak comes from the child's VmHWM, not from wait4: Linux carries a child's RSS high-water
    mark over from the parent it was forked from, so wait4 would report the benchmark's own size."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return json.dumps({"seconds": seconds, "peak_rss_mb": kib / 1024, "detail": detail})


def run_child(argv: Sequence[str], env: dict[str, str], python: str = sys.executable) -> Measure:
    """Run `python argv...`; the child prints `child_result(...)` as its last line. Dirty pages
    are flushed first so no run pays for the previous one's writes."""
    os.sync()
    proc = subprocess.Popen([python, *argv], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return Measure(seconds=result["seconds"], peak_rss_mb=result["peak_rss_mb"], detail=result.get("detail", {}))


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [title, "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def ensure_venv(path: Path, requirement: str) -> Path:
    """A separate virtualenv with `requirement` installed (for the legacy tools we compare with)."""
    python = path / "bin" / "python"
    marker = path / ".installed"
    if not marker.exists() or marker.read_text() != requirement:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
        marker.write_text(requirement)
    return python
