"""Preflight for a data-services run: pick the backend, build ``$DS``, check the mount.

The container sees only the workspace (mounted at the same path inside and outside),
so every path the run reads or writes must lie under it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from tao_aoi import atomic, backend
from tao_aoi.bank import DATA_SERVICES_IMAGE_KEY, bank_root, resolve_image
from tao_aoi.cli import OneLineParser, UsageError
from tao_aoi.contract import MARK_BACKEND
from tao_aoi.paths import is_within

SHELL_VARS = ("DS", "DS_CMD", "DS_BACKEND", "WORKSPACE", "DS_IMAGE")


def _abs(path: str) -> Path:
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(path))))


def default_workspace(paths: list[Path]) -> Path:
    """The deepest existing folder holding every path (cwd when none are given)."""
    if not paths:
        return Path.cwd()
    root = Path(os.path.commonpath([str(p) for p in paths]))
    while not root.is_dir():  # a single file, or outputs not created yet
        root = root.parent
    return root


def check_paths(workspace: Path, paths: list[Path]) -> None:
    real_ws = Path(os.path.realpath(workspace))
    for p in paths:
        if not is_within(p, workspace):
            raise UsageError(f"{p} is outside the workspace {workspace}: the container sees only "
                             "the workspace mount; pick a --workspace that holds every path")
        real = Path(os.path.realpath(p))
        if not is_within(real, real_ws):
            raise UsageError(f"{p} resolves through a symlink to {real}, outside the workspace "
                             f"{workspace}; the container cannot follow it")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="preflight.py",
        description="Decide how the data-services actions run and print the command prefix $DS. "
                    "The container backend is chosen when docker works, a GPU answers and the "
                    "pinned image is pulled; otherwise the local runner (same command line). "
                    "The chosen backend and the reason are always printed.",
        epilog="examples:\n"
               "  # look before running\n"
               "  python3 scripts/preflight.py --paths /data/exp/inference /data/exp/train.yaml\n"
               "  # set DS, DS_BACKEND, WORKSPACE, DS_IMAGE in this shell, then run an action\n"
               "  eval \"$(python3 scripts/preflight.py --workspace /data --shell)\"\n"
               "  \"$DS\" gap_analysis vcn_aoi -e \"$SPEC\" results_dir=/data/exp/rca\n\n"
               "With --shell, $DS is the path of a one-line launcher script that runs the prefix\n"
               "(kept under ~/.cache/tao-aoi/launchers), so \"$DS\" works whatever spaces the\n"
               "workspace or bank paths hold; $DS_CMD holds the same prefix as one shell string.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", help="folder mounted into the container at the same path "
                        "(default: the common folder of --paths, else the current directory)")
    parser.add_argument("--paths", nargs="+", default=[], metavar="P",
                        help="every path the run reads or writes; each must be inside the workspace")
    parser.add_argument("--backend", choices=("auto", *backend.BACKENDS), default="auto",
                        help="auto (default) decides from the checks; docker or local forces one")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--shell", action="store_true",
                     help="print export lines for eval (DS, DS_BACKEND, WORKSPACE, DS_IMAGE)")
    return parser


def preflight(workspace: str | None, paths: Sequence[str], force: str = "auto") -> dict:
    abs_paths = [_abs(p) for p in paths]
    if workspace is not None:
        ws = _abs(workspace)
        if not ws.is_dir():
            raise UsageError(f"workspace {ws} is not an existing folder")
    else:
        ws = default_workspace(abs_paths)
    check_paths(ws, abs_paths)

    bank = bank_root()
    image = resolve_image(DATA_SERVICES_IMAGE_KEY, bank)
    checks = [] if force == "local" else backend.probe(image)
    decision = backend.decide(checks, force)
    if decision.backend == "docker":
        if decision.missing:
            missing = "; ".join(c.detail for c in decision.missing)
            raise UsageError(f"--backend docker, but the container cannot run: {missing}")
        if ":" in str(ws):
            raise UsageError(f"workspace {ws} contains ':', which docker -v cannot mount")
    argv = backend.prefix_argv(decision.backend, ws, image, bank)
    notes = [backend.CHOWN_HINT] if decision.backend == "docker" else []
    result = {**decision.as_dict(), "image": image, "workspace": str(ws), "bank": str(bank),
              "paths": [str(p) for p in abs_paths], "argv": argv, "ds": backend.join(argv),
              "notes": notes}
    if decision.backend == "docker":
        result["docker"] = backend.join(backend.docker_argv(ws, image))
        result["notes"].insert(0, backend.QUOTING_NOTE)
    return result


def backend_line(result: dict) -> str:
    return f"{MARK_BACKEND} {result['backend']} ({result['reason']})"


def launcher_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tao-aoi" / "launchers"


def write_launcher(result: dict) -> Path:
    """An executable that runs the prefix with its own arguments appended.

    A shell variable cannot hold an argv: ``$DS args`` splits quoted paths apart. One file
    per distinct prefix (named by its hash), so concurrent runs never rewrite each other's.
    """
    # The runner prints this reason on its first line, so the log says why it ran locally.
    body = (f"#!/bin/sh\n# data-services launcher written by preflight.py\n"
            f"DS_BACKEND_REASON={shlex.quote(result['reason'])} exec {result['ds']} \"$@\"\n")
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    dest = launcher_dir() / f"ds-{result['backend']}-{digest}"
    if not dest.exists():
        with atomic.atomic_path(dest) as tmp:  # executable before it appears under its name
            tmp.write_text(body, encoding="utf-8")
            tmp.chmod(0o755)
    return dest


def shell_lines(result: dict) -> list[str]:
    values = {"DS": str(write_launcher(result)), "DS_CMD": result["ds"],
              "DS_BACKEND": result["backend"],
              "WORKSPACE": result["workspace"], "DS_IMAGE": result["image"]}
    return [f"# {backend_line(result)}"] + [f"export {k}={shlex.quote(values[k])}" for k in SHELL_VARS]


def human_lines(result: dict) -> list[str]:
    lines = [f"image: {result['image']}"]
    if not result["checks"]:
        lines.append("  (container checks skipped: local backend forced)")
    for c in result["checks"]:
        lines.append(f"  {'OK' if c['ok'] else 'MISSING':<8}{c['name']:<7}{c['detail']}")
    lines += [backend_line(result), f"DS: {result['ds']}"]
    if "docker" in result:
        lines.append(f"docker: {result['docker']} <category> <action> "
                     f"-e /tao_aoi/spec/<spec file> key=value ...")
    lines.append(f"workspace: {result['workspace']}")
    lines += [f"note: {n}" for n in result["notes"]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = preflight(args.workspace, args.paths, args.backend)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.shell:
        print("\n".join(shell_lines(result)))
        # eval swallows stdout: say the decision where the caller still sees it
        print(backend_line(result), file=sys.stderr)
    else:
        print("\n".join(human_lines(result)))
    return 0
