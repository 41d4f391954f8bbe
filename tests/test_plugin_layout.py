"""The plugin as Claude Code and the Agent Skills validator see it, plus layout rules.

Uses the real `claude` binary (npm @anthropic-ai/claude-code, `make claude-code`) with a
throwaway HOME, and `agentskills` from PyPI `skills-ref`.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLAUDE = Path(os.environ.get("CLAUDE_BIN") or REPO / ".cache/claude-code/node_modules/.bin/claude")
SKILL_DIRS = sorted(p.parent for p in (REPO / "skills").glob("*/SKILL.md"))
EXPECTED_SKILLS = ("tao-analyze-gaps-visual-changenet", "tao-route-visual-changenet-samples",
                   "tao-mine-aoi-images")
needs_claude = pytest.mark.skipif(not CLAUDE.is_file(),
                                  reason=f"claude binary not found at {CLAUDE}: run `make claude-code` "
                                         "or set CLAUDE_BIN")


def claude(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    return subprocess.run([str(CLAUDE), *args], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=120)


def _problems(report: dict) -> list:
    found = list(report["manifest"]["errors"]) + list(report["manifest"]["warnings"])
    for item in report.get("contents", []):
        found += list(item.get("errors", [])) + list(item.get("warnings", []))
    found += list((report.get("directory") or {}).get("findings", []))
    return found


@needs_claude
@pytest.mark.parametrize("target", [".", ".claude-plugin/plugin.json"])
def test_claude_plugin_validate_is_clean(tmp_path, target):
    proc = claude(tmp_path, "plugin", "validate", "--json", "--strict", "--profile", "directory", target)
    report = json.loads(proc.stdout)
    assert _problems(report) == []
    assert proc.returncode == 0 and report["success"] is True, proc.stdout + proc.stderr


@needs_claude
def test_plugin_details_lists_every_skill_and_the_hooks(tmp_path):
    proc = claude(tmp_path, "--plugin-dir", ".", "plugin", "details", "tao-aoi")
    assert proc.returncode == 0, proc.stderr
    inventory = proc.stdout
    skills_line = next(l for l in inventory.splitlines() if l.strip().startswith("Skills ("))
    assert f"Skills ({len(SKILL_DIRS)})" in skills_line
    for skill_dir in SKILL_DIRS:
        assert skill_dir.name in skills_line
    hooks_line = next(l for l in inventory.splitlines() if l.strip().startswith("Hooks ("))
    assert "SessionStart" in hooks_line and "PostToolUse" in hooks_line


def test_expected_skills_exist():
    present = {p.name for p in SKILL_DIRS}
    missing = [s for s in EXPECTED_SKILLS if s not in present]
    assert not missing, f"skills not written yet: {missing}"


@pytest.mark.parametrize("skill_dir", SKILL_DIRS, ids=[p.name for p in SKILL_DIRS])
def test_agentskills_validate(skill_dir):
    tool = shutil.which("agentskills") or str(Path(sys.executable).parent / "agentskills")
    if not Path(tool).exists():
        pytest.skip("agentskills not installed (PyPI skills-ref)")
    proc = subprocess.run([tool, "validate", str(skill_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- standard-library-only hook code ---------------------------------------------------

HOOK_FILES = sorted({*REPO.glob("hooks/*.py"), *REPO.glob("tao_aoi/hooks/*.py"),
                     REPO / "tao_aoi/__init__.py", REPO / "tao_aoi/atomic.py",
                     REPO / "tao_aoi/backend.py"})


def _imports(tree: ast.AST, module_level_only: bool) -> list[str]:
    names = []
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif module_level_only and isinstance(node, (ast.If, ast.Try)):
            names += _imports(ast.Module(body=list(ast.iter_child_nodes(node)), type_ignores=[]), True)
    return names


def _module_file(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def non_stdlib_imports(path: Path, module_level_only: bool = False, seen: set | None = None) -> list[str]:
    """Third-party imports of ``path``; tao_aoi modules it imports are followed (their
    module-level imports are what a hook pays for at import time)."""
    seen = set() if seen is None else seen
    if path in seen:
        return []
    seen.add(path)
    bad = []
    for name in _imports(ast.parse(path.read_text(), str(path)), module_level_only):
        top = name.split(".")[0]
        if top == "tao_aoi":
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # package __init__s run too
                target = _module_file(".".join(parts[:i]))
                if target is not None:
                    bad += non_stdlib_imports(target, True, seen)
        elif top not in sys.stdlib_module_names and top != "__future__":
            bad.append(f"{os.path.relpath(path, REPO)}: {name}")
    return bad


@pytest.mark.parametrize("path", HOOK_FILES, ids=[str(p.relative_to(REPO)) for p in HOOK_FILES])
def test_hook_code_is_standard_library_only(path):
    assert non_stdlib_imports(path) == []


def test_stdlib_scan_catches_a_third_party_import(tmp_path):
    sample = tmp_path / "hook.py"
    sample.write_text("import os\nfrom tao_aoi import bank\n"
                      "def f():\n    import numpy\n    from yaml import safe_load\n")
    assert sorted(n.split(": ")[1] for n in non_stdlib_imports(sample)) == ["numpy", "yaml"]
    # bank.py imports PyYAML inside a function only, so importing it costs a hook nothing
    assert non_stdlib_imports(REPO / "tao_aoi" / "bank.py", module_level_only=True) == []


# ---- manifests -----------------------------------------------------------------------

def test_version_is_the_same_everywhere():
    import tao_aoi

    plugin = json.loads((REPO / ".claude-plugin/plugin.json").read_text())
    market = json.loads((REPO / ".claude-plugin/marketplace.json").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    entry = next(p for p in market["plugins"] if p["name"] == plugin["name"])
    versions = {"plugin.json": plugin["version"], "marketplace.json": entry["version"],
                "pyproject.toml": pyproject["project"]["version"], "tao_aoi": tao_aoi.__version__}
    assert len(set(versions.values())) == 1, versions


def test_hooks_json_commands_quote_the_root_and_exist():
    hooks = json.loads((REPO / "hooks/hooks.json").read_text())["hooks"]
    commands = [h["command"] for groups in hooks.values() for g in groups for h in g["hooks"]]
    assert commands
    for command in commands:
        assert "${CLAUDE_PLUGIN_ROOT}" in command
        assert re.search(r'"\$\{CLAUDE_PLUGIN_ROOT\}[^"]*"', command), f"unquoted root: {command}"
        for rel in re.findall(r'"\$\{CLAUDE_PLUGIN_ROOT\}/([^"]+)"', command):
            assert (REPO / rel).is_file(), f"{command} points at missing {rel}"


def test_icon_is_a_square_png_within_limits():
    from PIL import Image

    icon = REPO / ".claude-plugin" / "icon.png"
    with Image.open(icon) as img:
        assert img.format == "PNG" and img.width == img.height and 512 <= img.width <= 2048
    assert icon.stat().st_size < 2 * 1024 * 1024


def test_only_hooks_import_the_hooks_package():
    """Shared names live in tao_aoi/contract.py; the hooks package is the hooks' own."""
    import re

    offenders = []
    for path in (REPO / "tao_aoi").rglob("*.py"):
        if "hooks" in path.relative_to(REPO / "tao_aoi").parts:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from tao_aoi\.hooks|import tao_aoi\.hooks|from tao_aoi import hooks)", text, re.M):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
