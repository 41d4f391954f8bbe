"""The plugin as the real binary loads it: skill listing, Skill tool, SessionStart, env in Bash."""
from __future__ import annotations

import re

import pytest
from harness import REPO, SKILL_NAMES, bank_python, plugin_skill, require
from standin import bash, final, skill

pytestmark = pytest.mark.e2e

ENV_PROBE = ('echo "BANK=$TAO_SKILL_BANK_PATH|PY=$TAO_SKILL_BANK_PYTHON"; '
             '"$TAO_SKILL_BANK_PYTHON" -c "import pandas, pyarrow, yaml, jsonschema, omegaconf; '
             'print(\'DEPS=ok\')"')


def skill_body_excerpt(skill_dir: str) -> str:
    """A distinctive line of the SKILL.md body (after the front matter)."""
    text = (REPO / "skills" / skill_dir / "SKILL.md").read_text(encoding="utf-8")
    body = text.split("---", 2)[2] if text.startswith("---") else text
    lines = [ln.strip() for ln in body.splitlines()
             if len(ln.strip()) > 30 and "${" not in ln and not ln.lstrip().startswith("|")]
    assert lines, "SKILL.md body has no prose line to look for"
    return lines[0]


def test_plugin_skills_session_start_and_bank_env(run_claude):
    require("hooks/session_start.py", "skills/" + SKILL_NAMES["rca"] + "/SKILL.md")
    s = run_claude([skill(plugin_skill("rca")), bash(ENV_PROBE, "print the bank env"),
                    final("checked")])
    s.check_completed()
    first = s.first()
    assert "Skill" in first.tool_names()

    # 1. every skill under skills/ is offered to the model as tao-aoi:<name>: <description>
    present = [name for name in SKILL_NAMES.values() if (REPO / "skills" / name).is_dir()]
    for name in present:
        assert f"- tao-aoi:{name}: " in first.text, f"skill {name} missing from the listing"

    # 2. the SessionStart hook ran and its stdout is in the model's context
    started = re.search(r"SessionStart:startup hook success: (.{0,400})", first.text, re.S)
    assert started, "no SessionStart output from the plugin in the first request"
    assert "error" not in started.group(1).lower()[:200], started.group(1)
    assert str(s.plugin_dir) in started.group(1), started.group(1)  # it names the bank root

    # 3. the Skill call loaded the RCA SKILL.md body (with ${CLAUDE_PLUGIN_ROOT} expanded)
    loaded = s.seen_after(0)
    assert f"Launching skill: {plugin_skill('rca')}" in loaded
    assert skill_body_excerpt(SKILL_NAMES["rca"]) in loaded
    assert "${CLAUDE_PLUGIN_ROOT}" not in loaded

    # 4. the session-start hook's environment reaches every Bash call
    probe = s.seen_after(1)
    assert f"BANK={s.plugin_dir}|PY={bank_python()}" in probe, probe
    assert "DEPS=ok" in probe, probe  # the bank python runs the scripts' dependencies

    # nothing the plugin did failed loudly anywhere in the session
    for rec in s.standin.main_requests():
        assert "hook blocking error" not in rec.text and "hook error" not in rec.text, \
            rec.text[rec.text.find("hook "):][:500]
