"""Disdat 1.2.0 pushing or pulling one directory bundle; run with the legacy venv's python.

legacy_disdat.py add|push|pull SOURCE_DIR s3://bucket/prefix   (add ignores the URL)
"""

import logging
import os
import sys
import time
from pathlib import Path

import disdat.api as api
from common import child_result  # this script's folder, bench/, is on sys.path

logging.basicConfig(level=logging.WARNING)

op, source, url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
os.makedirs(Path.home() / ".config", exist_ok=True)
name = f"legacy{source.parent.name}{source.name}"  # unique per benchmark round
if not (Path.home() / ".config" / "disdat").exists():
    api.init()  # Disdat exits the process when asked to init twice
if op == "add":  # before any measurement, as for every engine
    api.context("bench")
    api.add("bench", name, str(source))
    api.commit("bench", name)
    print(child_result(0.0))
    sys.exit(0)
if op == "push":
    api.remote("bench", "bench", url)
    started = time.perf_counter()
    api.push("bench", name)
else:
    ctx = f"pull{source.parent.name}{source.name}"
    api.context(ctx)
    api.remote(ctx, "bench", url)
    started = time.perf_counter()
    api.pull(ctx, name, localize=True)
print(child_result(time.perf_counter() - started))
