"""Atomic writes: of one file, and of a set of files that must agree with each other.

One file: a temp file beside it, fsync, rename over it. Readers see the old file or the new
one, never half of one.

A set (``kpi_gaps.parquet`` + ``metrics.json`` + ...): every temp file is written and fsynced
first. Then, under an exclusive lock on the folder, a journal listing each (temp, artifact)
rename and each file the set drops is written atomically; the renames and removals follow; the
journal is deleted. Writing the journal is the commit point:

* killed before it, the previous set is untouched and the dead run's temp files are removed
  by the next write into that folder (or :func:`settle`);
* killed after it, :func:`settle` (run by the next write into the folder, and by readers of a
  set before they read) finishes the renames, so the folder holds the complete new set.

Temp files carry their writer's host and pid (``.<name>.<host>-<pid>.<random>.tmp``), so the
clean-up removes only those of processes that are gone, never those of a live concurrent run.
Journals and temp files are plain names inside the folder: recovery renames nothing across
folders and follows no link. Standard library only (the hooks use this module).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

JOURNAL_PREFIX = ".tao_aoi-commit."
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "host")
_TMP_RE = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_LEGACY_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # releases before the owner tag
# A temp file of another host, or of no known owner, is judged dead only when this old.
FOREIGN_STALE_S = 24 * 3600.0
COMMIT_LOCK_TIMEOUT_S = 120.0
_settled: set[str] = set()


def _plain_open_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask (mkstemp
    makes 0o600, which would hide results from teammates on a shared drive)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _owner() -> str:
    return f"{_HOST}-{os.getpid()}"  # per call: a forked worker is another owner


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _is_dead_temp(entry: os.DirEntry, now: float) -> bool:
    m = _TMP_RE.match(entry.name)
    if m is None and not _LEGACY_TMP_RE.match(entry.name):
        return False
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        if m is not None and m["host"] == _HOST:
            return not _pid_alive(int(m["pid"]))
        # another host's, or a name without an owner: only age can tell
        return now - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_STALE_S
    except OSError:
        return False


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _plain_name(name) -> str | None:
    return name if isinstance(name, str) and name and "/" not in name and name not in (".", "..") else None


def _replay(folder: Path, journal: Path) -> None:
    """Finish a committed set: rename the temps still present, remove what the set drops."""
    try:
        plan = json.loads(journal.read_text(encoding="utf-8"))
        pairs = [(_plain_name(a), _plain_name(b)) for a, b in plan["rename"]]
        drops = [_plain_name(n) for n in plan.get("remove", [])]
    except (OSError, ValueError, KeyError, TypeError):
        pairs, drops = [], []  # unreadable journal: torn before its own rename, never committed
    for tmp, dest in pairs:
        if tmp and dest and (folder / tmp).is_file() and not (folder / tmp).is_symlink():
            os.replace(folder / tmp, folder / dest)
    for name in drops:
        if name and (folder / name).is_file() and not (folder / name).is_symlink():
            (folder / name).unlink()
    journal.unlink(missing_ok=True)
    _fsync_dir(folder)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    from tao_aoi import locks

    with locks.exclusive(folder, COMMIT_LOCK_TIMEOUT_S, f"folder {folder}"):
        yield


def settle(folder: str | os.PathLike, force: bool = False) -> None:
    """Finish the set a killed writer committed in ``folder`` and remove dead runs' temp files.

    Cheap and idempotent; done once per folder per process unless ``force``."""
    folder = Path(folder)
    key = os.path.abspath(folder)
    if (key in _settled and not force) or not folder.is_dir() or folder.is_symlink():
        return
    _settled.add(key)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    journals = [e for e in entries if e.name.startswith(JOURNAL_PREFIX) and e.is_file(follow_symlinks=False)]
    if journals:
        # The lock is held by a writer from its journal to its last rename: any journal seen
        # under the lock belongs to a process that died mid-commit.
        with _folder_lock(folder):
            for entry in sorted(journals, key=lambda e: e.name):
                if (folder / entry.name).is_file():
                    _replay(folder, folder / entry.name)
        entries = list(os.scandir(folder))
    now = time.time()
    for entry in entries:
        if _is_dead_temp(entry, now):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _check_destinations(targets: list[Path]) -> None:
    """Refuse before anything is renamed: a set must not be cut short by a bad destination."""
    from tao_aoi.cli import UsageError

    # A link is replaced by the new file, never written through; a folder cannot be replaced.
    for dest in targets:
        if not dest.is_symlink() and dest.exists() and not dest.is_file():
            raise UsageError(f"cannot write {dest}: it exists and is not a regular file; "
                             f"move it away and rerun")


@contextlib.contextmanager
def atomic_paths(*dests: str | os.PathLike, remove: Iterable[str | os.PathLike] = ()) -> Iterator[list[Path]]:
    """Yield one temp path beside each of ``dests`` (all in one folder); if the block succeeds,
    commit them as one set (see the module doc), also removing ``remove`` (files of an older set
    that the new one does not have). A failed block leaves the folder as it was."""
    targets = [Path(os.path.abspath(d)) for d in dests]
    drops = [Path(os.path.abspath(d)) for d in remove]
    folders = {p.parent for p in targets + drops}
    if len(folders) != 1:
        raise ValueError(f"an artifact set lives in one folder, got {sorted(map(str, folders))}")
    folder = folders.pop()
    folder.mkdir(parents=True, exist_ok=True)
    settle(folder)
    _check_destinations(targets)
    tmps: list[Path] = []
    mode = _plain_open_mode()
    try:
        for dest in targets:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{_owner()}.", suffix=".tmp", dir=folder)
            os.fchmod(fd, mode)
            os.close(fd)
            tmps.append(Path(tmp))
        yield list(tmps)
        for tmp in tmps:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        _check_destinations(targets)
        if len(targets) == 1 and not drops:
            os.replace(tmps[0], targets[0])
        else:
            _commit(folder, tmps, targets, drops)
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _commit(folder: Path, tmps: list[Path], targets: list[Path], drops: list[Path]) -> None:
    plan = {"rename": [[t.name, d.name] for t, d in zip(tmps, targets)],
            "remove": [d.name for d in drops if d.name not in {t.name for t in targets}]}
    with _folder_lock(folder):
        fd, journal_tmp = tempfile.mkstemp(prefix=f".journal.{_owner()}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(plan, fh)
            fh.flush()
            os.fsync(fh.fileno())
        journal = folder / f"{JOURNAL_PREFIX}{_owner()}.json"
        os.replace(journal_tmp, journal)
        _fsync_dir(folder)
        _replay(folder, journal)


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
