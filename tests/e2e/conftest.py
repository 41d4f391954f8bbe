"""Fixtures for the end-to-end tests: the claude binary, a project dir, ``run_claude``,
and the synthetic demo experiment shared by the RCA / routing / mining sessions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (DEFAULT_BIN, LATEST_BIN, REPO, SESSION_TIMEOUT, Session, claude_env,  # noqa: E402
                     require)
from standin import StandIn  # noqa: E402


# Every scenario runs on the pinned claude (the version the plugin is checked on) and on the
# newest release (what users get from npm today); `make claude-code` installs both.
CLAUDE_BUILDS = {"pinned": DEFAULT_BIN, "latest": LATEST_BIN}


@pytest.fixture(scope="session", params=sorted(CLAUDE_BUILDS))
def claude_bin(request) -> Path:
    path = Path(os.environ.get("CLAUDE_BIN") or CLAUDE_BUILDS[request.param])
    if not path.exists():
        pytest.fail(f"claude binary not installed ({path}): run `make claude-code`")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "project"
    p.mkdir()
    return p


@pytest.fixture
def run_claude(claude_bin: Path, tmp_path: Path, project: Path):
    """``run_claude(steps, prompt=..., plugin_dir=REPO, env=None, debug_hooks=False)`` runs one
    claude session against a fresh stand-in playing ``steps`` and returns a ``Session``."""
    counter = iter(range(1000))

    def run(steps: list, prompt: str = "Run the scripted scenario.", *,
            plugin_dir: Path | None = None, env: dict | None = None, debug_hooks: bool = False,
            timeout: float = SESSION_TIMEOUT) -> Session:
        # TAO_E2E_PLUGIN_DIR points every session at another copy of the plugin (e.g. one
        # broken on purpose, to see which scenario catches the breakage).
        plugin_dir = plugin_dir or Path(os.environ.get("TAO_E2E_PLUGIN_DIR") or REPO)
        home = tmp_path / f"home{next(counter)}"
        home.mkdir()
        with StandIn(steps, max_lifetime=timeout + 60) as si:
            cmd = [str(claude_bin), "-p", prompt, "--plugin-dir", str(plugin_dir),
                   "--output-format", "json", "--dangerously-skip-permissions"]
            if debug_hooks:  # per-hook wall times land in $HOME/.claude/debug/<session>.txt
                cmd += ["--debug", "hooks"]
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, cwd=project, env=claude_env(home, si.url, env),
                                      capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as exc:
                pytest.fail(f"claude session exceeded {timeout}s; steps answered "
                            f"{si.steps_done()}; stderr: {exc.stderr!r}")
            seconds = time.monotonic() - start
        try:
            output = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        except ValueError:
            output = {}
        return Session(si, proc, home, project, Path(plugin_dir), seconds, output)

    return run


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory, claude_bin) -> Path:
    """The demo's synthetic VCN experiment (inference CSV, train YAML, images): one per claude
    build, since scenarios add experiments under fixed names."""
    from aoi_demo import RCA_PIECES

    require(*RCA_PIECES)
    from tao_aoi.demo import synth

    ws = tmp_path_factory.mktemp("demo_ws")
    synth.generate(ws)
    return ws


@pytest.fixture(scope="session")
def rca_results(demo_ws: Path) -> Path:
    """A finished gap-analysis results folder, made by the skill's recipe outside claude."""
    from aoi_demo import new_experiment, run_rca_recipe

    return run_rca_recipe(demo_ws, new_experiment(demo_ws, "exp_fixture"))


@pytest.fixture(scope="session")
def demo_pool(demo_ws: Path) -> Path:
    """The demo's synthetic source pool (pool.csv, relative filepaths under demo_ws)."""
    require("tao_aoi/demo/mining.py", "scripts/route_samples.py")
    from tao_aoi.demo.mining import make_pool

    pool_csv, _ = make_pool(demo_ws)
    return pool_csv
