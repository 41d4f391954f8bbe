"""Exclusive advisory locks (``fcntl.flock``) with a bounded wait; standard library only.

One owner for the lock loop the ledger (a read-modify-write file) and the artifact-set commit
(several renames in one folder) both need. The lock dies with its process, so a killed
writer never leaves a folder locked.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from tao_aoi.cli import UsageError


def _open_for_lock(path: Path) -> int:
    if path.is_dir():
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file, created when missing, or a folder).

    Waits up to ``timeout`` seconds, then raises UsageError naming ``what``. Lock files are
    never deleted: every writer must lock the same inode."""
    import fcntl

    path = Path(path)
    fd = _open_for_lock(path)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UsageError(f"{what} is locked by another writer for more than "
                                     f"{timeout:.0f}s (lock on {path}); try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
