"""Where the skill bank lives and what ``versions.yaml`` pins.

The module itself imports only the standard library (the session-start hook may use
``bank_root``); PyYAML is imported inside ``load_versions`` and only there.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tao_aoi.cli import UsageError
from tao_aoi.yaml_files import load_mapping

BANK_ENV = "TAO_SKILL_BANK_PATH"
VERSIONS_FILE = "versions.yaml"
DATA_SERVICES_IMAGE_KEY = "images.tao_toolkit.data_services"
_PACKAGE_BANK = Path(__file__).resolve().parent.parent


def bank_root() -> Path:
    """``$TAO_SKILL_BANK_PATH`` when set, else the bank this module belongs to."""
    override = os.environ.get(BANK_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else _PACKAGE_BANK


def _root_origin(root: Path) -> str:
    return f"{BANK_ENV}={root}" if os.environ.get(BANK_ENV, "").strip() else f"bank root {root}"


def load_versions(root: Path | None = None) -> dict:
    root = Path(root) if root is not None else bank_root()
    path = root / VERSIONS_FILE
    if not path.is_file():
        raise UsageError(f"{VERSIONS_FILE} not found at {path} ({_root_origin(root)})")
    return load_mapping(path, VERSIONS_FILE)


def lookup(key: str, root: Path | None = None) -> str:
    """The string at dotted ``key`` in versions.yaml; a UsageError names what is wrong."""
    root = Path(root) if root is not None else bank_root()
    node: object = load_versions(root)
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise UsageError(f"bad key {key!r}: expected dotted names such as {DATA_SERVICES_IMAGE_KEY}")
    walked: list[str] = []
    for part in parts:
        where = ".".join(walked) or "the top level"
        if not isinstance(node, dict):
            raise UsageError(f"key {key!r} not found in {root / VERSIONS_FILE}: "
                             f"{where} is a {type(node).__name__}, not a mapping")
        if part not in node:
            keys = ", ".join(sorted(map(str, node))) or "(none)"
            raise UsageError(f"key {key!r} not found in {root / VERSIONS_FILE}: no {part!r} "
                             f"under {where}; keys there: {keys}")
        node = node[part]
        walked.append(part)
    if not isinstance(node, str):
        shape = "a mapping" if isinstance(node, dict) else type(node).__name__
        raise UsageError(f"{key} in {root / VERSIONS_FILE} is {shape}, expected an image URI string")
    return node.strip()


def check_image_uri(uri: str, key: str = "image") -> str:
    """Reject floating or missing tags: a pinned image is ``repo:tag`` or ``repo@sha256:...``."""
    if not uri:
        raise UsageError(f"{key} is empty")
    if any(ch.isspace() for ch in uri):
        raise UsageError(f"{key} {uri!r} contains whitespace")
    if "@sha256:" in uri:
        return uri
    last = uri.rsplit("/", 1)[-1]  # a registry port (host:5000/...) is not a tag
    if ":" not in last:
        raise UsageError(f"{key} {uri!r} has no tag; pin a concrete tag or an @sha256: digest")
    tag = last.split(":", 1)[1]
    if not tag:
        raise UsageError(f"{key} {uri!r} has an empty tag; pin a concrete tag")
    if tag == "latest":
        raise UsageError(f"{key} {uri!r} uses the floating tag :latest; pin a concrete tag")
    return uri


def resolve_image(key: str = DATA_SERVICES_IMAGE_KEY, root: Path | None = None) -> str:
    """The pinned image URI at ``key`` (default: the data-services image)."""
    return check_image_uri(lookup(key, root), key)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse  # here, not at the top: the session-start hook imports this module

    from tao_aoi.cli import OneLineParser

    parser = OneLineParser(
        prog="resolve_image.py",
        description="Print the pinned container image URI stored under a dotted key of the "
                    "bank's versions.yaml. Floating (:latest) or untagged images are refused "
                    "(exit 2), so a recipe never runs an image nobody pinned.",
        epilog="example:\n  DS_IMAGE=$(python3 \"$TAO_SKILL_BANK_PATH/scripts/resolve_image.py\" "
               f"{DATA_SERVICES_IMAGE_KEY})\n\n"
               f"The bank root is ${BANK_ENV} when set, else the bank holding this script.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("key", nargs="?", default=DATA_SERVICES_IMAGE_KEY,
                        help=f"dotted key in versions.yaml (default: {DATA_SERVICES_IMAGE_KEY})")
    args = parser.parse_args(argv)
    print(resolve_image(args.key))
    return 0
