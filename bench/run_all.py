"""Run every benchmark, one after the other (each prints its own table)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in (
    "remote_bench.py",
    "metadata_bench.py",
    "apply_bench.py",
    "dockerize_bench.py",
    "executor_bench.py",
    "identity_bench.py",
    "gc_bench.py",
):
    subprocess.run([sys.executable, str(HERE / script)], check=True)
