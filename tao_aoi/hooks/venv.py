"""The bank's own Python environment, built in the background so session start never waits.

Layout under the plugin data dir (``$CLAUDE_PLUGIN_DATA``, else ``~/.cache/tao-aoi``)::

    venvs/<key>/               the virtual environment; <key> hashes the dependency list
    venvs/<key>/.tao-aoi-ready written last by a successful install
    venvs/<key>.lock           held (pid inside) while an install runs
    venvs/<key>.failed         written by a failed install
    venvs/<key>.log            install output
    bin/tao-python             waits for the install, then runs the venv's python

Standard library only. ``python3 -m tao_aoi.hooks.venv install ...`` is the detached
installer the hook starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from tao_aoi.atomic import atomic_path, write_text
from tao_aoi.backend import PYTHON_ENV
from tao_aoi.hooks.common import data_dir, env_on

BOOTSTRAP_ENV = "TAO_AOI_BOOTSTRAP"        # 0 = no venv, tools run on python3
EXTRAS_ENV = "TAO_AOI_EXTRAS"              # e.g. "embeddings"
PIP_ENV = "TAO_AOI_PIP_INSTALL"            # replaces "<venv python> -m pip install" (tests, mirrors)
WAIT_LIMIT_ENV = "TAO_AOI_WAIT_LIMIT_S"    # how long tao-python waits (default 20 min)
READY_NAME = ".tao-aoi-ready"
WAIT_LIMIT_S = 1200
PROGRESS_EVERY_S = 10
RETRY_FAILED_AFTER_S = 600   # a failed install is retried by a session starting this much later
FRESH_LOCK_S = 60            # a lock without a pid yet is trusted this long
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]   # the folder holding tao_aoi/


def bootstrap_enabled() -> bool:
    return env_on(BOOTSTRAP_ENV)


def requested_extras() -> list[str]:
    raw = os.environ.get(EXTRAS_ENV, "")
    return sorted({e for e in raw.replace(",", " ").split() if e})


def dependencies(pyproject: Path, extras: list[str]) -> list[str]:
    """``[project].dependencies`` plus the named optional groups, sorted."""
    import tomllib  # Python >= 3.11; imported here so older pythons still get a message

    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    deps = list(project.get("dependencies", []))
    groups = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in groups:
            raise ValueError(f"{EXTRAS_ENV}: unknown extra {extra!r}; known: {', '.join(sorted(groups))}")
        deps += groups[extra]
    return sorted(set(deps))


def env_key(deps: list[str], python_version: str | None = None) -> str:
    payload = json.dumps({"deps": sorted(deps), "python": python_version or platform.python_version()})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Layout:
    key: str
    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venvs" / self.key

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def ready(self) -> Path:
        return self.venv / READY_NAME

    @property
    def lock(self) -> Path:
        return self.root / "venvs" / f"{self.key}.lock"

    @property
    def failed(self) -> Path:
        return self.root / "venvs" / f"{self.key}.failed"

    @property
    def log(self) -> Path:
        return self.root / "venvs" / f"{self.key}.log"

    @property
    def wrapper(self) -> Path:
        return wrapper_path(self.root)


def wrapper_path(root: Path) -> Path:
    return root / "bin" / "tao-python"


@dataclass
class EnvState:
    state: str        # ready | installing | failed | provided | disabled | unavailable
    python: str       # the value for TAO_SKILL_BANK_PYTHON
    detail: str       # one line for the model's context


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_held(lock: Path) -> bool:
    """True while an installer owns ``lock``; a lock left by a dead installer is not held."""
    try:
        text = lock.read_text().strip()
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return False
    if not text:
        return age < FRESH_LOCK_S
    try:
        return _pid_alive(int(text))
    except ValueError:
        return False


def _take_lock(lock: Path) -> int | None:
    """An fd on a freshly created lock, or None when another firing holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            return os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_held(lock):
                return None
            try:
                lock.unlink()  # stale: its installer died
            except FileNotFoundError:
                pass
    return None


def start_install(layout: Layout, deps: list[str]) -> bool:
    """Start the detached installer; False when one is already running."""
    fd = _take_lock(layout.lock)
    if fd is None:
        return False
    try:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
        with open(layout.log, "ab") as logfh:
            child = subprocess.Popen(
                [sys.executable, "-m", "tao_aoi.hooks.venv", "install", "--venv", str(layout.venv),
                 "--lock", str(layout.lock), "--failed", str(layout.failed),
                 "--deps", json.dumps(deps)],
                stdin=subprocess.DEVNULL, stdout=logfh, stderr=subprocess.STDOUT,
                cwd=str(layout.root), env=env, start_new_session=True, close_fds=True)
        os.write(fd, str(child.pid).encode())
    except BaseException:
        os.close(fd)
        layout.lock.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


WRAPPER = """#!/bin/sh
# Written by the tao-aoi session-start hook: waits for the background install of the
# skill bank's Python environment, then runs that environment's python.
venv={venv}
lock={lock}
failed={failed}
log={log}
limit=${{{limit_env}:-{limit}}}
waited=0
lock_gone=0
while :; do
  if [ -f "$venv/{ready}" ]; then
    exec "$venv/bin/python" "$@"
  fi
  if [ -f "$failed" ]; then
    echo "tao-python: installing the skill bank's Python environment failed; end of $log:" >&2
    tail -n 25 "$log" >&2
    echo "tao-python: fix the cause, delete $failed and start a new session to retry, or point {python_env} at a python that has the bank's dependencies" >&2
    exit 1
  fi
  pid=$(cat "$lock" 2>/dev/null)
  if [ ! -f "$lock" ] || {{ [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; }}; then
    if [ "$lock_gone" = 1 ]; then
      echo "tao-python: no install is running and $venv is not ready; start a new session to retry (log: $log)" >&2
      exit 1
    fi
    lock_gone=1
    continue
  fi
  if [ "$waited" -ge "$limit" ]; then
    echo "tao-python: gave up after ${{waited}}s waiting for the Python environment install (log: $log)" >&2
    exit 1
  fi
  if [ $((waited % {every})) -eq 0 ]; then
    echo "tao-python: waiting for the skill bank's Python environment to finish installing (${{waited}}s so far, log: $log)" >&2
  fi
  sleep 1
  waited=$((waited + 1))
done
"""


def write_wrapper(layout: Layout) -> Path:
    text = WRAPPER.format(venv=shlex.quote(str(layout.venv)), lock=shlex.quote(str(layout.lock)),
                          failed=shlex.quote(str(layout.failed)), log=shlex.quote(str(layout.log)),
                          ready=READY_NAME, limit_env=WAIT_LIMIT_ENV, limit=WAIT_LIMIT_S,
                          every=PROGRESS_EVERY_S, python_env=PYTHON_ENV)
    path = layout.wrapper
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    with atomic_path(path) as tmp:  # executable before it appears under its name
        tmp.write_text(text)
        tmp.chmod(0o755)
    return path


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def ensure(plugin_root: Path) -> EnvState:
    """Decide TAO_SKILL_BANK_PYTHON; start a background install when one is needed."""
    root = data_dir()
    given = os.environ.get(PYTHON_ENV, "").strip()
    if given and given != str(wrapper_path(root)) and _is_executable(given):
        return EnvState("provided", given, f"provided by environment ({PYTHON_ENV}={given})")
    if not bootstrap_enabled():
        return EnvState("disabled", "python3",
                        f"bootstrap disabled ({BOOTSTRAP_ENV}=0): tools run on python3, which needs "
                        "the bank's dependencies installed")
    try:
        deps = dependencies(plugin_root / "pyproject.toml", requested_extras())
    except Exception as exc:  # no tomllib, no pyproject, unknown extra
        return EnvState("unavailable", "python3", f"no venv ({type(exc).__name__}: {exc}); "
                        "tools run on python3")
    layout = Layout(env_key(deps), root)
    # The wrapper is exported in every venv state, so the exported value stays the same
    # while the install goes from running to ready (and firing twice adds no line).
    wrapper = str(write_wrapper(layout))
    if layout.ready.is_file() and _is_executable(str(layout.python)):
        return EnvState("ready", wrapper, f"ready ({layout.venv})")
    if lock_held(layout.lock):
        return EnvState("installing", wrapper, f"installing in the background (log: {layout.log})")
    if layout.failed.is_file():
        age = time.time() - layout.failed.stat().st_mtime
        if age < RETRY_FAILED_AFTER_S:
            return EnvState("failed", wrapper, f"install failed (log: {layout.log}); delete "
                            f"{layout.failed} to retry at the next session start (automatic after "
                            f"{RETRY_FAILED_AFTER_S // 60} min)")
    start_install(layout, deps)
    return EnvState("installing", wrapper, f"installing in the background (log: {layout.log}); "
                    f"{PYTHON_ENV} waits for it")


# ---- the detached installer -------------------------------------------------------------

def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)


def install(venv: Path, deps: list[str], lock: Path, failed: Path) -> int:
    try:
        failed.unlink(missing_ok=True)
        if venv.exists():
            shutil.rmtree(venv)  # never ready (we were started), so a leftover of a failed try
        pip_cmd = os.environ.get(PIP_ENV, "").strip()
        make = [sys.executable, "-m", "venv", *(["--without-pip"] if pip_cmd else []), str(venv)]
        _say("creating " + shlex.join(make))
        subprocess.run(make, check=True, stdin=subprocess.DEVNULL)
        if pip_cmd:
            cmd = [*shlex.split(pip_cmd), *deps]
        else:
            cmd = [str(venv / "bin" / "python"), "-m", "pip", "install",
                   "--disable-pip-version-check", *deps]
        env = dict(os.environ, VIRTUAL_ENV=str(venv),
                   PATH=os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]))
        env.pop("PYTHONPATH", None)
        _say("installing " + shlex.join(cmd))
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, env=env)
        write_text(venv / READY_NAME, json.dumps({"deps": deps, "python": platform.python_version(),
                                                  "finished": time.time()}) + "\n")
        _say("ready")
        return 0
    except BaseException as exc:
        traceback.print_exc(file=sys.stdout)
        _say(f"FAILED: {exc}")
        write_text(failed, f"{exc}\n")
        return 1
    finally:
        sys.stdout.flush()
        lock.unlink(missing_ok=True)


def _installer_main(argv: list[str] | None = None) -> int:
    import argparse  # only the detached installer parses arguments

    parser = argparse.ArgumentParser(prog="python3 -m tao_aoi.hooks.venv",
                                     description="Detached installer started by the session-start hook.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install")
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--failed", type=Path, required=True)
    p.add_argument("--deps", required=True, help="JSON list of requirement strings")
    args = parser.parse_args(argv)
    return install(args.venv, json.loads(args.deps), args.lock, args.failed)


if __name__ == "__main__":
    raise SystemExit(_installer_main())
