"""`dsdt dockerize` and `dsdt run`: pipeline images and running pipelines in them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from disdat_luigi import api


def register(subparsers: argparse._SubParsersAction) -> None:
    dock_p = subparsers.add_parser(
        "dockerize",
        help="build the image of each pipeline module (disdat-module-submodule)",
        description="Builds, for pipe_cls module.submodule.ClassName (module/submodule.py under pipe_root), "
        "the image disdat-module-submodule tagged latest and with an immutable content tag. Without "
        "pipe_cls: one image per module that defines a PipeTask. An image whose content tag exists is not "
        "rebuilt.",
    )
    dock_p.add_argument("--config-dir", type=Path, help="directory with apt.txt (OS packages) and pip.conf")
    dock_p.add_argument("--os-type", help="base image repository (default python)")
    dock_p.add_argument("--os-version", help="base image tag (default <host major.minor>-slim)")
    dock_p.add_argument("--base-image", help="base image (overrides --os-type/--os-version)")
    dock_p.add_argument("--push", action="store_true", help="push to [docker] registry (host:port or *ECR*)")
    dock_p.add_argument("--no-build", action="store_true", help="do not build; use (and push) the existing image")
    dock_p.add_argument("pipe_root", type=Path, help="the pipeline project (directory with setup.py)")
    dock_p.add_argument("pipe_cls", nargs="?", help="module.submodule.ClassName")
    dock_p.set_defaults(func=_dockerize)


def _dockerize(args: argparse.Namespace) -> int:
    def log(line: str) -> None:
        if args.verbose or line.startswith(("Step ", "building ")):
            print(line, file=sys.stderr, flush=True)

    results = api.dockerize(
        args.pipe_root, args.pipe_cls, config_dir=args.config_dir, os_type=args.os_type,
        os_version=args.os_version, base_image=args.base_image, push=args.push, no_build=args.no_build, log=log,
    )  # fmt: skip
    for result in results:
        state = "built" if result.built else "up to date"
        print(f"{result.name}:{result.content_tag} ({state}; also tagged latest)")
        for reference in result.pushed:
            print(f"  pushed {reference}")
    return 0
