"""Path containment, the one rule for "is this path inside that folder"; standard library only."""
from __future__ import annotations

import os
from pathlib import Path


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """``path`` is ``root`` or lies below it, compared by path components (no file system
    access: pass normalized absolute paths, resolved with realpath where symlinks matter)."""
    path, root = Path(path), Path(root)
    return path == root or root in path.parents
