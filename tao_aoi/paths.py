"""Path containment, the one rule for "is this path inside that folder"; standard library only.

``is_within`` compares paths as given. The other helpers resolve the *whole* path (every
component, not just the last) with ``realpath`` before comparing, so a symlinked folder
anywhere along the way (``<results>/sub -> /etc``) cannot lead outside the allowed root, and
they never put file contents into an error message.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class PathEscape(ValueError):
    """A path leads (through a link, or plainly) outside the folder it must stay in. The
    message names the path and the root, never anything read from the file."""


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """``path`` is ``root`` or lies below it, compared by path components (no file system
    access: pass normalized absolute paths, resolved with realpath where symlinks matter)."""
    path, root = Path(path), Path(root)
    return path == root or root in path.parents


def resolve_within(path: str | os.PathLike, root: str | os.PathLike, what: str = "path") -> Path:
    """``path`` with every symlink resolved; :class:`PathEscape` when that leaves ``root``."""
    real = os.path.realpath(path)
    if not is_within(real, os.path.realpath(root)):
        raise PathEscape(f"{what} {os.fspath(path)} leads outside {os.fspath(root)}"
                         + (" through a symbolic link" if _has_link(path) else ""))
    return Path(real)


def _has_link(path: str | os.PathLike) -> bool:
    p = Path(os.path.abspath(path))
    return any(os.path.islink(q) for q in [p, *p.parents])


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def open_regular_within(path: str | os.PathLike, root: str | os.PathLike,
                        what: str = "file") -> int:
    """A read-only fd on ``path`` once it is proven a regular file inside ``root``.

    The whole path is resolved and checked, the final open refuses a link (``O_NOFOLLOW``),
    the opened file must be the one checked (same device and inode) and, where ``/proc``
    tells, the path actually opened must lie inside ``root``. Raises :class:`PathEscape`
    or ``OSError`` (missing, unreadable, not a regular file)."""
    real = resolve_within(path, root, what)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathEscape(f"{what} {os.fspath(path)} changed into a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{what} {os.fspath(path)} is not a regular file")
        again = os.stat(real, follow_symlinks=False)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            raise PathEscape(f"{what} {os.fspath(path)} changed while it was opened")
        opened = _fd_path(fd)
        if opened is not None and opened.startswith("/") and not is_within(
                opened, os.path.realpath(root)):
            raise PathEscape(f"{what} {os.fspath(path)} leads outside {os.fspath(root)}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes_within(path: str | os.PathLike, root: str | os.PathLike, limit: int | None = None,
                      what: str = "file") -> bytes:
    """The bytes (at most ``limit``) of a regular file proven inside ``root``."""
    fd = open_regular_within(path, root, what)
    with os.fdopen(fd, "rb") as fh:
        return fh.read() if limit is None else fh.read(limit)


def read_text_within(path: str | os.PathLike, root: str | os.PathLike, limit: int | None = None,
                     what: str = "file") -> str:
    """Text form of :func:`read_bytes_within` (undecodable bytes replaced)."""
    return read_bytes_within(path, root, limit, what).decode("utf-8", errors="replace")


def ensure_dir_within(path: str | os.PathLike, root: str | os.PathLike,
                      what: str = "output folder") -> Path:
    """Create ``path`` (and missing parents) below ``root`` and return its real location.

    Each existing component is checked before the next one is created, so a symlink (say
    ``<results>/rca_images -> /elsewhere``) that leads outside ``root`` is refused with
    :class:`PathEscape` and nothing is created or written through it. A link that stays
    inside ``root`` is allowed."""
    root_real = os.path.realpath(root)
    target = Path(os.path.abspath(path))
    for start in (Path(os.path.abspath(root)), Path(root_real)):
        if is_within(target, start):
            rel_parts, current = target.relative_to(start).parts, start
            break
    else:
        raise PathEscape(f"{what} {os.fspath(path)} is outside {os.fspath(root)}")
    for part in rel_parts:
        current = current / part
        if os.path.lexists(current):
            if not is_within(os.path.realpath(current), root_real):
                raise PathEscape(f"{what} {os.fspath(path)} leads outside {os.fspath(root)} "
                                 f"through the symbolic link {current}")
            if not os.path.isdir(current):
                raise NotADirectoryError(errno.ENOTDIR, f"{current} is not a folder")
            continue
        os.mkdir(current)
    real = Path(os.path.realpath(current))
    if not is_within(real, root_real):
        raise PathEscape(f"{what} {os.fspath(path)} leads outside {os.fspath(root)}")
    return real


def output_file_within(path: str | os.PathLike, root: str | os.PathLike,
                       what: str = "output file") -> Path:
    """Where to write ``path`` so that nothing goes through a link out of ``root``: the real
    parent folder (checked, every component) joined with the file name. A link at the file
    name itself is fine for an atomic rename (the rename replaces the link entry), but
    refused when it points outside ``root``, because a plain ``open(path, "w")`` would
    follow it."""
    p = Path(os.path.abspath(path))
    parent = resolve_within(p.parent, root, what)
    dest = parent / p.name
    if os.path.islink(dest) and not is_within(os.path.realpath(dest), os.path.realpath(root)):
        raise PathEscape(f"{what} {os.fspath(path)} is a symbolic link to outside {os.fspath(root)}")
    return dest


def check_writable(path: str | os.PathLike, what: str = "output", folder: bool = False) -> None:
    """Fail now, before any work, when ``path`` (a file, or a folder when ``folder``) could not be
    written later: a folder where a file goes (or the reverse), a parent that is a file, a place
    nothing may be created in (read-only, /proc, /sys). Probes with a temp file in the nearest
    existing folder, removed at once; creates nothing else. Raises ``UsageError``."""
    import tempfile

    from tao_aoi.cli import UsageError

    p = Path(os.path.abspath(path))
    if folder and os.path.lexists(p) and not p.is_dir():
        raise UsageError(f"{what} {os.fspath(path)} exists and is not a folder")
    if not folder and p.is_dir():
        raise UsageError(f"{what} {os.fspath(path)} is a folder; give a file path")
    base = p if folder else p.parent
    while not os.path.lexists(base):
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"{what} {os.fspath(path)} cannot be created: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tao_aoi-probe.", suffix=".tmp", dir=base)
    except OSError as exc:
        raise UsageError(f"{what} {os.fspath(path)} cannot be written: {exc.strerror or exc} "
                         f"({base})") from None
    os.close(fd)
    os.unlink(probe)
