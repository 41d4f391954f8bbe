"""Running the real Claude Code binary against the scripted stand-in model.

One session = one real ``claude -p`` run: throwaway HOME, a tmp project dir as cwd, this
repository (or a scratch copy) as ``--plugin-dir``, no network (the Messages API is the
loopback stand-in in ``standin.py``). The pytest fixtures live in ``conftest.py``; this
module holds what tests import (a plain module name, so it cannot clash with
``tests/conftest.py``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from standin import StandIn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

DEFAULT_BIN = REPO / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"
LATEST_BIN = REPO / ".cache" / "claude-code-latest" / "node_modules" / ".bin" / "claude"
SESSION_TIMEOUT = 120  # seconds for one whole claude session
PLUGIN = "tao-aoi"
SKILL_NAMES = {"rca": "tao-analyze-gaps-visual-changenet",
               "routing": "tao-route-visual-changenet-samples",
               "mining": "tao-mine-aoi-images"}


def plugin_skill(key: str) -> str:
    """``tao-aoi:<skill dir>`` as the Skill tool wants it."""
    return f"{PLUGIN}:{SKILL_NAMES[key]}"


def bank_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def require(*relpaths: str, root: Path = REPO) -> None:
    """Fail (never pass, never skip) when a piece the scenario drives is missing."""
    missing = [p for p in relpaths if not (root / p).exists()]
    if missing:
        pytest.fail("not in the tree: " + ", ".join(missing))


@dataclass
class Session:
    """What one claude run did: the process result plus every request it sent."""

    standin: StandIn
    proc: subprocess.CompletedProcess
    home: Path
    project: Path
    plugin_dir: Path
    seconds: float
    output: dict = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"claude exit {self.proc.returncode} after {self.seconds:.1f}s",
                 f"steps answered: {self.standin.steps_done()} of {len(self.standin.steps)}",
                 f"stand-in errors: {self.standin.errors}",
                 f"unknown paths: {self.standin.unknown}",
                 "stdout: " + self.proc.stdout[-2000:], "stderr: " + self.proc.stderr[-2000:]]
        return "\n".join(lines)

    def check_completed(self) -> None:
        """The session ran every scripted step and ended cleanly."""
        assert self.proc.returncode == 0, self.describe()
        assert not self.standin.errors, self.describe()
        assert self.standin.steps_done() >= len(self.standin.steps), self.describe()
        assert self.output.get("is_error") is False, self.describe()

    def seen_after(self, n: int) -> str:
        return self.standin.seen_after(n)

    def first(self):
        reqs = self.standin.main_requests()
        assert reqs, "the binary sent no main-loop request\n" + self.describe()
        return reqs[0]

    def transcript(self) -> Path:
        """The session transcript Claude Code wrote under the throwaway HOME."""
        hits = sorted((self.home / ".claude" / "projects").glob("*/*.jsonl"))
        assert hits, "no transcript under " + str(self.home)
        return hits[-1]


def claude_env(home: Path, base_url: str, extra: dict | None = None) -> dict:
    # Nothing from an enclosing Claude Code session or real account may leak in.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLAUDE", "ANTHROPIC", "TAO_SKILL_BANK"))}
    env.update(HOME=str(home), ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY="dummy",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", IS_SANDBOX="1",
               TAO_SKILL_BANK_PYTHON=bank_python(), DISABLE_AUTOUPDATER="1")
    env.update(extra or {})
    return env


_PLACEHOLDER = re.compile(r"<([A-Za-z_][\w.\-/ ]*)>")


def fill_recipe(block: str, values: dict[str, str]) -> str:
    """Make a documented recipe runnable: a line ``NAME=...`` whose NAME is in ``values`` gets
    that value; every other ``<placeholder>`` must be a key of ``values``. A placeholder left
    over fails the test (the document asks for something the scenario does not know)."""
    out = []
    for line in block.splitlines():
        m = re.match(r"(\s*(?:export\s+)?)([A-Z_][A-Z0-9_]*)=", line)
        if m and m.group(2) in values:
            line = f'{m.group(1)}{m.group(2)}="{values[m.group(2)]}"'
        line = _PLACEHOLDER.sub(lambda p: values.get(p.group(1), p.group(0)), line)
        out.append(line)
    text = "\n".join(out)
    left = _PLACEHOLDER.findall(text)
    assert not left, f"recipe placeholders the scenario cannot fill: {left}\n{text}"
    return text


def scratch_copy(dest: Path) -> Path:
    """A copy of the plugin (no venv, caches or git) that a test may sabotage."""
    ignore = shutil.ignore_patterns(".git", ".venv", ".cache", "__pycache__", "*.pyc",
                                    ".pytest_cache", ".hypothesis", "demo_workspace",
                                    "*.egg-info", "benchmarks", "tests")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest
