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

Redaction (#9): every file that goes into the bundle is redacted -- transcript, settings,
specs and the copied plugin files -- by ``redact.Redactor`` (standard library; values found in
one file are masked in all). When the plugin's Python environment is ready (the venv the
session-start hook builds, or ``$TAO_SKILL_BANK_PYTHON``) and holds ``detect-secrets``, its
ruleset runs over the redacted copies as a second opinion and whatever it still finds is
masked too (it never reads a transcript over 2 MB: for a bigger one it scans the other files
while the transcript is being redacted); when it is not ready, the built-in rules run in their
conservative mode (shorter high-entropy runs are masked). ``manifest.json`` records per file how many values each rule
masked (never a value), and which engines ran. A file that is not UTF-8 text is copied only
from the plugin root; from the results folder or the project it is skipped.

The transcript must be a regular file, not a link, that resolves (every path component)
inside ``$CLAUDE_CONFIG_DIR/projects``, ``~/.claude/projects`` or the session's working tree
(the event's ``cwd`` or ``$CLAUDE_PROJECT_DIR``, never ``/`` or the home folder itself), and
its first line must be a JSON object; otherwise it is not copied and the reason (never its
content) is reported.

Re-writing the report re-packages in place: the bundle is built in a temporary folder beside
the destination and swapped in, so no stale file survives and a reader never sees half a bundle.

Symbolic links (decisions):

* the report itself must be a regular file: a symlinked report is refused (its content lives
  elsewhere, so "the folder next to it" is not the run's folder);
* the results folder may be reached through symlinked parents (experiments often live on a
  mounted disk): packaging then works in the folder's real location, and that real folder is
  the root every copied run file must stay inside;
* a source file is copied only when its whole path (every component resolved) lies inside
  its root (the results folder, the plugin root, the project dir); otherwise it is skipped
  and listed under ``skipped`` in the manifest; files are opened without following a final
  link and checked to be the regular file that was resolved;
* a symlinked transcript is never followed (the session file is then not refreshed: an earlier
  regular copy stays, recorded as ``kept_previous_copy`` in the manifest);
* an existing ``<family>_config`` or ``claude_session.jsonl`` that is a symlink is replaced as
  a directory entry: nothing is ever written through it to its target.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from ..atomic import settle
from ..paths import PathEscape, is_within, open_regular_within, read_bytes_within
from . import report_rules as rr
from .common import env_on, plugin_manifest
from .redact import Redactor, ValueMask, line_blocks

_PLUGIN_FILES = ("versions.yaml", ".claude-plugin/plugin.json", "hooks/hooks.json")
_SKIP_NAMES = {"__pycache__", ".DS_Store"}
_MAX_DEPTH = 32
_SESSION_TMP = ".claude_session.jsonl.part"   # inside the bundle's temp folder, moved out last
DETECT_SECRETS_ENV = "TAO_AOI_DETECT_SECRETS"  # 0 = do not run detect-secrets
_DS_TIMEOUT_S = 30.0        # the hook has 60 s in all (hooks/hooks.json)
_DS_BUDGET_S = 15.0         # no file is started after this
_DS_MAX_BYTES = 2 << 20     # detect-secrets reads ~150 kB/s: a bigger file is left to the builtin rules
_JSONL_PROBE = 1 << 16


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
    def __init__(self, tmp: Path, conservative: bool):
        self.tmp = tmp
        self.conservative = conservative
        self.known: set[str] = set()          # values masked so far, masked in every file
        self.skipped: list[dict] = []
        self.redactions: dict[str, Counter] = {}
        self._seen_dirs: set[str] = set()
        # sha256, size and mask count of the transcript as it was streamed into the bundle
        self.streamed_session: tuple[str, int, int] | None = None

    def redactor(self) -> Redactor:
        return Redactor(self.conservative, self.known)

    def text_files(self) -> dict[str, Path]:
        """The bundle's files so far, by bundle path (binary ones too: a pass skips them)."""
        return {rel: self.tmp / rel for rel in self.redactions if (self.tmp / rel).is_file()}

    def session_digest(self, session: Path) -> tuple[str, int]:
        """sha256 and size of the redacted transcript: those computed while it was streamed,
        unless a later pass masked more in it (and so rewrote it)."""
        sha, size, masked = self.streamed_session
        if sum(self.redactions[rr.SESSION_FILE].values()) == masked:
            return sha, size
        return _digest(session)

    def skip(self, path, reason: str) -> None:
        self.skipped.append({"path": str(path), "reason": reason})

    def _safe(self, src: Path, root: str) -> bool:
        if not os.path.lexists(src):
            self.skip(src, "missing")
            return False
        if not is_within(os.path.realpath(src), root):
            self.skip(src, "leads outside " + root + " (a symbolic link on the way)")
            return False
        return True

    def copy_file(self, src: Path, rel: str, root: str, trusted_binary: bool = False,
                  json_doc: bool = False) -> None:
        """Copy ``src`` redacted to ``rel``; binary files only when ``trusted_binary``."""
        if not self._safe(src, root):
            return
        try:
            data = read_bytes_within(src, root)
        except PathEscape:
            self.skip(src, "leads outside " + root + " (a symbolic link on the way)")
            return
        except OSError:
            self.skip(src, "not a readable regular file")
            return
        dest = self.tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:
            if not trusted_binary:
                self.skip(src, "not UTF-8 text (cannot be redacted)")
                return
            dest.write_bytes(data)
            self.redactions[rel] = Counter()
            return
        redactor = self.redactor()
        dest.write_text(redactor.document(text, json_doc=json_doc), encoding="utf-8")
        self.redactions[rel] = redactor.counts

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
                self.copy_file(child, f"{rel}/{entry.name}", root, trusted_binary=True)

    def rescan_known(self, paths: dict[str, Path]) -> None:
        """Mask, in every text file of the bundle, the values found anywhere in it."""
        for rel, path in paths.items():
            counts = self.redactions.setdefault(rel, Counter())
            r = Redactor(self.conservative, self.known)
            _rewrite_lines(path, lambda line, r=r, c=counts: _count_into(c, r, r.known_values(line)),
                           may_change=r.may_hold_known)


class _HashingWriter:
    """A binary file that also computes the sha256 and size of what is written to it."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)


def _count_into(counts: Counter, redactor: Redactor, text: str) -> str:
    counts.update(redactor.counts)
    redactor.counts.clear()
    return text


_BLOCK = 1 << 20


def _rewrite_lines(path: Path, fix, may_change=None) -> bool:
    """Apply ``fix`` to every line of a UTF-8 file in place (via a temp file); True if changed.

    ``may_change(text)``: False when ``fix`` leaves every line of ``text`` (a block of whole
    lines) as it is; such a block is not split into lines, and a file none of whose blocks
    may change is not rewritten at all."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if b"\x00" in head:
        return False
    if may_change is not None:
        with open(path, "rb") as src:
            if not any(may_change(block.decode("utf-8", "surrogateescape"))
                       for block in line_blocks(src, _BLOCK)):
                return False
    changed = False
    tmp = path.with_name(path.name + ".fix")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for block in line_blocks(src, _BLOCK):
            text = block.decode("utf-8", "surrogateescape")
            if may_change is not None and not may_change(text):
                dst.write(block)
                continue
            lines = text.split("\n")
            last = lines.pop()          # "" after a final line end
            for line in [ln + "\n" for ln in lines] + ([last] if last else []):
                new = fix(line)
                changed |= new != line
                dst.write(new.encode("utf-8", "surrogateescape"))
    if changed:
        os.replace(tmp, path)
    else:
        os.unlink(tmp)
    return changed


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


# ---------------------------------------------------------------- detect-secrets

def environment_python(root: Path) -> tuple[str | None, str]:
    """(python of the plugin's ready environment, or None; why). Never waits for an install:
    the ``tao-python`` wrapper (which waits) is not used, only a finished venv."""
    from ..backend import PYTHON_ENV
    from . import venv

    if not env_on(DETECT_SECRETS_ENV):
        return None, f"disabled ({DETECT_SECRETS_ENV}=0)"
    given = os.environ.get(PYTHON_ENV, "").strip()
    from .common import data_dir

    if given and given != str(venv.wrapper_path(data_dir())) and os.path.isfile(given) \
            and os.access(given, os.X_OK):
        return given, f"{PYTHON_ENV}={given}"
    try:
        deps = venv.dependencies(root / "pyproject.toml", venv.requested_extras())
    except Exception as exc:  # no pyproject in an installed plugin copy, unknown extra
        return None, f"environment not found ({type(exc).__name__})"
    layout = venv.Layout(venv.env_key(deps), data_dir())
    if layout.ready.is_file() and os.access(layout.python, os.X_OK):
        return str(layout.python), f"venv {layout.venv}"
    return None, "the plugin's Python environment is not ready"


def _kind(ds_type: str) -> str:
    return "ds_" + re.sub(r"[^a-z0-9]+", "_", ds_type.lower()).strip("_")


def detect_secrets_pass(python: str, files: dict[str, Path], redactions: dict[str, Counter],
                        known: set[str]) -> dict:
    """Run detect-secrets on the bundle's redacted text files; mask what it still finds (in
    every file). Returns the manifest entry for this engine."""
    return finish_detect_secrets(start_detect_secrets(python, files), files, redactions, known)


def start_detect_secrets(python: str, files: dict[str, Path]) -> tuple:
    """Start detect-secrets on ``files`` (it runs while this process goes on); the handle is
    for :func:`finish_detect_secrets`."""
    rels = list(files)
    script = Path(__file__).resolve().parents[1] / "secret_scan.py"   # runs in the venv, not here
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        proc = subprocess.Popen([python, "-I", str(script), str(_DS_BUDGET_S), str(_DS_MAX_BYTES),
                                 *(str(files[r]) for r in rels)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=env)
    except OSError:
        proc = None
    return proc, rels, time.monotonic()


def stop_detect_secrets(handle: tuple) -> None:
    proc = handle[0]
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.communicate()


def finish_detect_secrets(handle: tuple, files: dict[str, Path], redactions: dict[str, Counter],
                          known: set[str]) -> dict:
    """Wait for the scan started by :func:`start_detect_secrets` (on some of ``files``, in the
    same order) and mask what it found in every one of ``files``."""
    scanned_rels = handle[1]
    result = _scan_result(handle)
    if not isinstance(result, dict):
        return {"ran": False, "reason": "detect-secrets did not run in the plugin environment "
                                        "(not installed, failed or too slow)"}
    values = _found_values(result, files, scanned_rels)
    if values:
        known.update(values)
        mask = ValueMask(values)
        for rel, path in files.items():
            counts = redactions.setdefault(rel, Counter())
            _rewrite_lines(path, lambda line, c=counts: mask.sub(line, c), may_change=mask.may_hold)
    scanned = {scanned_rels[i] for i in result.get("scanned", [])
               if isinstance(i, int) and 0 <= i < len(scanned_rels)}
    return {"ran": True, "version": result.get("version"), "values_found": len(values),
            "not_scanned": sorted(set(files) - scanned)}


def _scan_result(handle: tuple):
    """The scan's JSON report, or None when it failed, printed no JSON or ran out of time."""
    proc, _, started = handle
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(timeout=max(0.1, _DS_TIMEOUT_S - (time.monotonic() - started)))
        return json.loads(out) if proc.returncode == 0 else None
    except subprocess.TimeoutExpired:
        stop_detect_secrets(handle)
    except ValueError:
        pass
    return None


def _found_values(result: dict, files: dict[str, Path], scanned_rels: list[str]) -> dict[str, str]:
    """value -> rule (``ds_<type>``) of every finding; a finding reported by its prefix only
    is completed from its line."""
    values: dict[str, str] = {}
    for f in result.get("findings", []):
        value, kind = str(f.get("value", "")), _kind(str(f.get("type", "secret")))
        if len(value) >= 8:
            values.setdefault(value, kind)
        elif len(value) >= 3:       # a regex plugin that reports only the prefix ("ghp")
            try:
                line = _line_of(files[scanned_rels[int(f["file"])]], int(f["line"]))
            except (KeyError, ValueError, IndexError, OSError):
                continue
            for m in re.finditer(re.escape(value) + r"[A-Za-z0-9_\-+/=.]{8,}", line):
                values.setdefault(m.group(), kind)
    return values


def _source_size(event: dict) -> int:
    """Size of the transcript the event names (a hint only: 0 when it cannot be read)."""
    try:
        return os.lstat(event.get("transcript_path") or "").st_size
    except (OSError, TypeError, ValueError):
        return 0


def _line_of(path: Path, number: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            if i == number:
                return line
    return ""


# ---------------------------------------------------------------- transcript

def transcript_roots(event: dict) -> list[str]:
    """Real folders a transcript may live in: the Claude Code projects folders and the
    session's working tree (never ``/`` or the home folder itself)."""
    home = os.path.realpath(os.path.expanduser("~"))
    roots = []
    config = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if config:
        roots.append(os.path.join(config, "projects"))
    roots.append(os.path.join(home, ".claude", "projects"))
    for tree in (event.get("cwd"), os.environ.get("CLAUDE_PROJECT_DIR")):
        if isinstance(tree, str) and os.path.isabs(tree):
            roots.append(tree)
    out = []
    for root in roots:
        real = os.path.realpath(root)
        if real not in ("/", home) and os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def open_transcript(event: dict) -> tuple[int | None, str]:
    """(read-only fd on the session transcript, "") or (None, why it is not copied). The
    reason never quotes the file."""
    source = event.get("transcript_path")
    if not isinstance(source, str) or not source:
        return None, "no transcript_path in the hook event"
    if not os.path.isabs(source):
        return None, "transcript_path is not an absolute path"
    if os.path.islink(source):
        return None, "transcript_path is a symbolic link; not followed"
    if not os.path.lexists(source):
        return None, "transcript not found"
    roots = [r for r in transcript_roots(event) if is_within(os.path.realpath(source), r)]
    if not roots:
        return None, ("transcript_path does not lie (every link resolved) inside the Claude Code "
                      "projects folder or the session's working tree")
    try:
        fd = open_regular_within(source, roots[0], "transcript")
    except PathEscape:
        return None, "transcript_path leads outside its folder through a symbolic link"
    except OSError:
        return None, "transcript is not a readable regular file"
    head = os.pread(fd, _JSONL_PROBE, 0)
    first = head.split(b"\n", 1)[0].strip()
    ok = False
    if first.startswith(b"{"):
        try:
            ok = isinstance(json.loads(first), dict)
        except ValueError:
            ok = b"\n" not in head          # one line longer than the probe: judged by its start
    elif not head.strip():
        ok = True                           # an empty session so far
    if not ok:
        os.close(fd)
        return None, "transcript does not look like a JSONL session transcript"
    return fd, ""


def _copy_session(event: dict, folder: Path, bundle: _Bundle, manifest: dict) -> Path | None:
    """Redact the transcript into the bundle's temp folder; the caller moves it out."""
    dest = folder / rr.SESSION_FILE
    info: dict = {"source": event.get("transcript_path"), "file": rr.SESSION_FILE, "copied": False}
    manifest["transcript"] = info
    fd, reason = open_transcript(event)
    if fd is None:
        info["reason"] = reason
        # Keep an earlier copy from this folder (it is still this run's session, only shorter);
        # a link is never left in place.
        if os.path.islink(dest):
            os.unlink(dest)
        elif os.path.isfile(dest):
            info["kept_previous_copy"] = True
            info["sha256"], info["size"] = _digest(dest)
        return None
    part = bundle.tmp / _SESSION_TMP
    redactor = bundle.redactor()
    with os.fdopen(fd, "rb") as src, open(part, "wb") as fh:
        dst = _HashingWriter(fh)
        info["lines"] = redactor.stream(src, dst)
    bundle.streamed_session = (dst.sha.hexdigest(), dst.size, sum(redactor.counts.values()))
    bundle.redactions[rr.SESSION_FILE] = redactor.counts
    return part


# ---------------------------------------------------------------- package

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
    settle(folder)  # bundle a whole set, never one a killed writer left half renamed
    root = plugin_root()
    python, why = environment_python(root)
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{config_name}.", suffix=".tmp", dir=folder))
    try:
        bundle = _Bundle(tmp, conservative=python is None)
        _copy_sources(bundle, folder, root, family, event)
        session, engines = _redact_session_and_scan(bundle, python, why, folder, event, manifest)
        manifest["redaction"] = {
            "engines": engines,
            "masked_total": sum(sum(c.values()) for c in bundle.redactions.values()),
            "note": "per file: how many values each rule masked; the values are never recorded",
        }
        _record_files(manifest, bundle, session)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _install(tmp, session, folder, config_name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    problems = []
    if not manifest["transcript"]["copied"] and manifest["transcript"]["source"]:
        problems.append(f"- {rr.SESSION_FILE} not written: {manifest['transcript']['reason']}.")
    return problems + _refresh_index(folder)


def _copy_sources(bundle: _Bundle, folder: Path, root: Path, family: str, event: dict) -> None:
    """Project settings, the run's specs, the skill folder and the plugin files, redacted."""
    project = os.environ.get("CLAUDE_PROJECT_DIR") or event.get("cwd")
    if isinstance(project, str) and project and os.path.isdir(project):
        project_real = os.path.realpath(project)
        for settings in sorted(Path(project, ".claude").glob("settings*.json")):
            bundle.copy_file(settings, f"project_settings/{settings.name}", project_real,
                             json_doc=True)
    for spec in sorted(folder.glob("*_spec.yaml")):
        bundle.copy_file(spec, f"specs/{spec.name}", str(folder))
    plugin_real = os.path.realpath(root)
    bundle.copy_tree(root / "skills" / rr.SKILLS[family], rr.SKILLS[family], plugin_real)
    for rel in _PLUGIN_FILES:
        bundle.copy_file(root / rel, rel, plugin_real, trusted_binary=True)


def _redact_session_and_scan(bundle: _Bundle, python: str | None, why: str, folder: Path,
                             event: dict, manifest: dict) -> tuple[Path | None, dict]:
    """Redact the transcript into the bundle, run detect-secrets when it is ready, then mask
    every value found anywhere in every file. Returns the transcript's temporary copy (None
    when not copied) and the manifest's ``engines``."""
    known_before_session = len(bundle.known)
    # detect-secrets never reads a transcript over _DS_MAX_BYTES: for a big one it scans the
    # other files while the transcript is redacted here (its findings are masked in all)
    early = None
    if python is not None and _source_size(event) > 2 * _DS_MAX_BYTES:
        early = start_detect_secrets(python, bundle.text_files())
    try:
        session = _copy_session(event, folder, bundle, manifest)
    except BaseException:
        if early is not None:
            stop_detect_secrets(early)
        raise
    text_files = bundle.text_files()
    if session is not None:
        text_files[rr.SESSION_FILE] = session
    engines: dict = {"builtin": {"mode": "conservative" if python is None else "standard"}}
    if early is not None and (session is None or session.stat().st_size > _DS_MAX_BYTES):
        engines["detect_secrets"] = finish_detect_secrets(early, text_files, bundle.redactions,
                                                          bundle.known)
    elif python is not None:
        if early is not None:                   # the redacted transcript is small: scan it too
            stop_detect_secrets(early)
        engines["detect_secrets"] = detect_secrets_pass(python, text_files, bundle.redactions,
                                                        bundle.known)
    else:
        engines["detect_secrets"] = {"ran": False, "reason": why}
    # values first met late in the transcript (or by detect-secrets) are masked everywhere;
    # the transcript is read again only when such values exist
    rescan = dict(text_files)
    if session is not None and len(bundle.known) == known_before_session:
        rescan.pop(rr.SESSION_FILE)
    bundle.rescan_known(rescan)
    return session, engines


def _record_files(manifest: dict, bundle: _Bundle, session: Path | None) -> None:
    """sha256, size and masks of every bundled file, and of the transcript, into the manifest."""
    files = []
    for path in sorted(p for p in bundle.tmp.rglob("*") if p.is_file() and p != session):
        rel = path.relative_to(bundle.tmp).as_posix()
        sha, size = _digest(path)
        files.append({"path": rel, "sha256": sha, "size": size,
                      "redactions": dict(sorted(bundle.redactions.get(rel, Counter()).items()))})
    manifest["files"] = files
    manifest["skipped"] = bundle.skipped
    if session is not None:
        info = manifest["transcript"]
        info["redactions"] = dict(sorted(bundle.redactions[rr.SESSION_FILE].items()))
        info["sha256"], info["size"] = bundle.session_digest(session)
        info["copied"] = True


def _install(tmp: Path, session: Path | None, folder: Path, config_name: str) -> None:
    """Move the finished transcript and bundle into the results folder, with the modes a
    plain write under the umask would give."""
    for path in [tmp, *tmp.rglob("*")]:
        os.chmod(path, _mode("dir" if path.is_dir() else "file"))
    if session is not None:
        dest = folder / rr.SESSION_FILE
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        os.replace(session, dest)    # replaces a symlink entry, never writes through it
    _swap_in(tmp, folder / config_name)


def _refresh_index(folder: Path) -> list[str]:
    """The offline results page follows the report and its bundle (standard library only)."""
    try:
        from tao_aoi import html_index

        html_index.refresh(folder)
    except Exception as exc:  # noqa: BLE001 - a page must never block packaging
        return [f"- index.html not rebuilt ({type(exc).__name__}); run "
                f"scripts/build_index.py {folder}."]
    return []


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
