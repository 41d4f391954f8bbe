"""Atomic file writes: temp file in the destination folder, fsync, then rename.

Readers (and hooks) never see a half-written artifact, and a crash leaves the
previous version or nothing, never a truncated file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _plain_open_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask (mkstemp
    makes 0o600, which would hide results from teammates on a shared drive)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_paths(*dests: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one temp path beside each of ``dests``; if the block succeeds, fsync them all,
    then rename each over its destination in order. All files are complete before the first
    rename, so a failed block writes none of them."""
    targets = [Path(d) for d in dests]
    tmps: list[Path] = []
    mode = _plain_open_mode()
    try:
        for dest in targets:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            os.fchmod(fd, mode)
            os.close(fd)
            tmps.append(Path(tmp))
        yield list(tmps)
        for tmp in tmps:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for tmp, dest in zip(tmps, targets):
            os.replace(tmp, dest)
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; rename it over ``dest`` only if the block succeeds."""
    with atomic_paths(dest) as (tmp,):
        yield tmp


def write_text(dest: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
