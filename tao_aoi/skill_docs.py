"""Runnable blocks of the skill documents.

The demo and the tests run the recipes exactly as the skills document them, so the
documents cannot drift from what works. One pattern for "a fenced bash block".
"""
from __future__ import annotations

import os
import re

_BASH_BLOCK = re.compile(r"^```(?:bash|sh)[ \t]*\n(.*?)^```", re.S | re.M)


def bash_blocks(path: str | os.PathLike) -> list[str]:
    """The ```bash (or ```sh) fenced blocks of a markdown file, in document order."""
    with open(path, encoding="utf-8") as fh:
        return _BASH_BLOCK.findall(fh.read())
