"""Bundle a run's provenance next to its report (standard library only).

When a report is written, the results folder gets

* ``<family>_config/`` (``report_rules.CONFIG_DIRS``): the skill folder, ``versions.yaml``,
  ``.claude-plugin/plugin.json`` and ``hooks/hooks.json`` of the plugin that ran (from
  ``$CLAUDE_PLUGIN_ROOT``, else the checkout this file lives in); the run's spec files
  (``*_spec.yaml`` in the results folder) under ``specs/``; the project's
  ``.claude/settings*.json`` (redacted) under ``project_settings/``; and ``manifest.json``
  (plugin name and version, time, report path, session id, sha256 and size of every file);
* ``claude_session.jsonl``: the session transcript with credentials redacted (``redact.py``),
  streamed line by line.

Re-writing the report re-packages in place: the bundle is built in a temporary folder beside
the destination and swapped in, so no stale file survives and a reader never sees half a bundle.

Symbolic links (decisions):

* the report itself must be a regular file: a symlinked report is refused (its content lives
  elsewhere, so "the folder next to it" is not the run's folder);
* the results folder may be reached through symlinked parents (experiments often live on a
  mounted disk): packaging then works in the folder's real location, and that real folder is
  the root every copied run file must stay inside;
* a source file that is a symlink is copied only when its target lies inside its root (the
  results folder, the plugin root, the project dir); otherwise it is skipped and listed under
  ``skipped`` in the manifest;
* a symlinked transcript is never followed (the session file is then not refreshed: an earlier
  regular copy stays, recorded as ``kept_previous_copy`` in the manifest);
* an existing ``<family>_config`` or ``claude_session.jsonl`` that is a symlink is replaced as
  a directory entry: nothing is ever written through it to its target.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..atomic import atomic_path
from ..paths import is_within
from . import report_rules as rr
from .common import plugin_manifest
from .redact import redact_stream, redact_text

_PLUGIN_FILES = ("versions.yaml", ".claude-plugin/plugin.json", "hooks/hooks.json")
_SKIP_NAMES = {"__pycache__", ".DS_Store"}
_MAX_DEPTH = 32


def plugin_root() -> Path:
    env = os.environ.get("CLAUDE_PLUGIN_ROOT")
    if env and os.path.isdir(env):
        return Path(env)
    return Path(__file__).resolve().parents[2]


def _mode(kind: str) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if kind == "dir" else 0o666) & ~mask


class _Bundle:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.skipped: list[dict] = []
        self._seen_dirs: set[str] = set()

    def skip(self, path, reason: str) -> None:
        self.skipped.append({"path": str(path), "reason": reason})

    def _safe(self, src: Path, root: str) -> bool:
        if not os.path.lexists(src):
            self.skip(src, "missing")
            return False
        if not is_within(os.path.realpath(src), root):
            self.skip(src, "symlink to a target outside " + root)
            return False
        return True

    def copy_file(self, src: Path, rel: str, root: str) -> None:
        if not self._safe(src, root):
            return
        if not src.is_file():
            self.skip(src, "not a regular file")
            return
        dest = self.tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def write_redacted(self, src: Path, rel: str, root: str) -> None:
        if not self._safe(src, root) or not src.is_file():
            return
        dest = self.tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(redact_text(src.read_text(encoding="utf-8", errors="replace")),
                        encoding="utf-8")

    def copy_tree(self, src: Path, rel: str, root: str, depth: int = 0) -> None:
        if depth > _MAX_DEPTH or not self._safe(src, root):
            return
        if not src.is_dir():
            self.skip(src, "not a directory")
            return
        real = os.path.realpath(src)
        if real in self._seen_dirs:         # a link loop: copy each real folder once
            self.skip(src, "directory already copied (symlink loop)")
            return
        self._seen_dirs.add(real)
        for entry in sorted(os.scandir(src), key=lambda e: e.name):
            if entry.name in _SKIP_NAMES or entry.name.endswith(".pyc"):
                continue
            child = Path(entry.path)
            if entry.is_dir():          # follows an inside-root symlink; _safe rejects the rest
                self.copy_tree(child, f"{rel}/{entry.name}", root, depth + 1)
            else:
                self.copy_file(child, f"{rel}/{entry.name}", root)


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _plugin_identity(root: Path) -> dict:
    data = plugin_manifest(root)
    if data is None:
        from .. import __version__

        return {"name": "tao-aoi", "version": __version__}
    return {"name": data.get("name"), "version": data.get("version")}


def _copy_session(event: dict, folder: Path, manifest: dict) -> None:
    dest = folder / rr.SESSION_FILE
    source = event.get("transcript_path")
    info: dict = {"source": source, "file": rr.SESSION_FILE, "copied": False}
    manifest["transcript"] = info
    if not isinstance(source, str) or not source:
        info["reason"] = "no transcript_path in the hook event"
    elif os.path.islink(source):
        info["reason"] = "transcript_path is a symbolic link; not followed"
    elif not os.path.isfile(source):
        info["reason"] = "transcript not found"
    if "reason" in info:
        # Keep an earlier copy from this folder (it is still this run's session, only shorter);
        # a link is never left in place.
        if os.path.islink(dest):
            os.unlink(dest)
        elif os.path.isfile(dest):
            info["kept_previous_copy"] = True
            info["sha256"], info["size"] = _digest(dest)
        return
    with atomic_path(dest) as tmp:   # the rename replaces a symlink entry, never its target
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            info["lines"] = redact_stream(src, dst)
        os.chmod(tmp, _mode("file"))
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
    info["copied"] = True
    info["sha256"], info["size"] = _digest(dest)


def package(report: Path, family: str, event: dict) -> list[str]:
    """Build ``<family>_config/`` and ``claude_session.jsonl`` beside ``report``.

    Returns feedback bullets for the model (empty when packaging went as planned)."""
    report = Path(report)
    config_name = rr.CONFIG_DIRS[family]
    if os.path.islink(report):
        return [f"- not packaged: {report} is a symbolic link; write the report as a regular file "
                "inside its results folder."]
    if not report.is_file():
        return []
    folder = Path(os.path.realpath(report.parent))
    root = plugin_root()
    plugin_real = os.path.realpath(root)
    manifest: dict = {
        "plugin": _plugin_identity(root),
        "family": family,
        "skill": rr.SKILLS[family],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "report": str(folder / report.name),
        "results_folder": str(folder),
        "session_id": event.get("session_id"),
        "plugin_root": str(root),
    }
    _copy_session(event, folder, manifest)

    tmp = Path(tempfile.mkdtemp(prefix=f".{config_name}.", suffix=".tmp", dir=folder))
    try:
        bundle = _Bundle(tmp)
        bundle.copy_tree(root / "skills" / rr.SKILLS[family], rr.SKILLS[family], plugin_real)
        for rel in _PLUGIN_FILES:
            bundle.copy_file(root / rel, rel, plugin_real)
        for spec in sorted(folder.glob("*_spec.yaml")):
            bundle.copy_file(spec, f"specs/{spec.name}", str(folder))
        project = os.environ.get("CLAUDE_PROJECT_DIR") or event.get("cwd")
        if isinstance(project, str) and project and os.path.isdir(project):
            project_real = os.path.realpath(project)
            for settings in sorted(Path(project, ".claude").glob("settings*.json")):
                bundle.write_redacted(settings, f"project_settings/{settings.name}", project_real)
        files = []
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            sha, size = _digest(path)
            files.append({"path": path.relative_to(tmp).as_posix(), "sha256": sha, "size": size})
        manifest["files"] = files
        manifest["skipped"] = bundle.skipped
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for path in [tmp, *tmp.rglob("*")]:
            os.chmod(path, _mode("dir" if path.is_dir() else "file"))
        _swap_in(tmp, folder / config_name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    problems = []
    if not manifest["transcript"]["copied"] and manifest["transcript"]["source"]:
        problems.append(f"- {rr.SESSION_FILE} not written: {manifest['transcript']['reason']}.")
    return problems


def _swap_in(tmp: Path, dest: Path) -> None:
    """Put the finished bundle at ``dest``; an old bundle (or a link there) goes away whole."""
    if os.path.islink(dest) or (os.path.lexists(dest) and not dest.is_dir()):
        os.unlink(dest)
        os.rename(tmp, dest)
        return
    if dest.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.rmdir(old)
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError:
            os.rename(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, dest)
