"""`pip install .` of disdat_luigi: quiet, and the installation carries the image-build template."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_builds_without_setuptools_warnings(tmp_path: Path) -> None:
    """pip's own (isolated, current setuptools) build of the wheel warns of no directory "absent
    from the `packages` configuration"; the dockerizer template and the example config are in it;
    no bytecode directory is packaged."""
    source = tmp_path / "src"  # a copy: pip builds in the tree it is given
    skip = shutil.ignore_patterns(".git", ".venv", ".demo", "build", "*.egg-info", "__pycache__", "tests", "bench")
    shutil.copytree(REPO, source, ignore=skip)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "wheel"), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "absent from the" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheel").glob("disdat_luigi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "disdat_luigi/dockerizer/Dockerfile" in names and "disdat_luigi/disdat.cfg.example" in names
    assert not [name for name in names if "__pycache__" in name]
