"""The harness against the real binary with a tiny throwaway plugin (independent of this repo's
hooks and skills): proves the stand-in, the env and the request helpers see what the scenario
tests rely on, and pins the Claude Code facts of SPEC section 5 on the installed version."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from standin import bash, final, skill, write

pytestmark = pytest.mark.e2e

POST_HOOK = """\
import json, os, sys
event = json.load(sys.stdin)
with open(os.path.join(os.environ["CLAUDE_PLUGIN_DATA"], "events.jsonl"), "a") as fh:
    fh.write(json.dumps(event) + "\\n")
if event["tool_name"] == "Write":
    print(json.dumps({"hookSpecificOutput": {"hookEventName": "PostToolUse",
                      "additionalContext": "PROBE-FEEDBACK " + event["tool_input"]["file_path"]}}))
else:
    print("plain stdout never reaches the model")
"""
START_HOOK = """\
import os
with open(os.environ["CLAUDE_ENV_FILE"], "a") as fh:
    fh.write("export PROBE_VAR=from-session-start\\n")
print("PROBE-START context for the model")
"""


def make_plugin(root: Path) -> Path:
    files = {
        ".claude-plugin/plugin.json": json.dumps(
            {"name": "probe", "version": "0.0.1", "description": "e2e probe",
             "author": {"name": "e2e"}}),
        "skills/probe-skill/SKILL.md": textwrap.dedent("""\
            ---
            name: probe-skill
            description: Probe skill PROBE-DESC for the harness test.
            ---
            Probe body PROBE-BODY rooted at ${CLAUDE_PLUGIN_ROOT}.
            """),
        "hooks/start.py": START_HOOK,
        "hooks/post.py": POST_HOOK,
        "hooks/hooks.json": json.dumps({"hooks": {
            "SessionStart": [{"hooks": [{"type": "command",
                                         "command": 'python3 "${CLAUDE_PLUGIN_ROOT}/hooks/start.py"'}]}],
            "PostToolUse": [{"matcher": "Bash|Write", "hooks": [{
                "type": "command", "command": 'python3 "${CLAUDE_PLUGIN_ROOT}/hooks/post.py"'}]}]}}),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_binary_runs_tools_and_hooks_against_the_standin(run_claude, tmp_path, project):
    plugin = make_plugin(tmp_path / "plugin")
    notes = project / "notes.md"
    s = run_claude([skill("probe:probe-skill"), bash('echo "var=$PROBE_VAR"'),
                    write(notes, "# notes\n"), final("bye")], plugin_dir=plugin)
    s.check_completed()
    assert s.output["result"] == "bye"
    assert not s.standin.unknown, s.standin.unknown

    first = s.first()
    assert "- probe:probe-skill: Probe skill PROBE-DESC" in first.text
    assert "SessionStart:startup hook success: PROBE-START context for the model" in first.text
    # the real tools ran, in order, with the hook context right after the tool result
    assert f"Probe body PROBE-BODY rooted at {plugin}" in s.seen_after(0)
    assert "var=from-session-start" in s.seen_after(1)
    assert "plain stdout never reaches the model" not in s.standin.main_requests()[-1].text
    assert notes.read_text() == "# notes\n"
    assert f"PostToolUse:Write hook additional context: PROBE-FEEDBACK {notes}" in s.seen_after(2)
    assert "PROBE-FEEDBACK" not in s.seen_after(1)

    # hook stdin carries what the plugin's hooks parse (SPEC section 5)
    data = s.home / ".claude" / "plugins" / "data" / "probe-inline"
    events = [json.loads(line) for line in (data / "events.jsonl").read_text().splitlines()]
    by_tool = {e["tool_name"]: e for e in events}
    assert set(by_tool["Bash"]["tool_response"]) >= {"stdout", "stderr", "interrupted"}
    assert by_tool["Write"]["tool_input"] == {"file_path": str(notes), "content": "# notes\n"}
    transcript = Path(by_tool["Write"]["transcript_path"])
    assert transcript == s.transcript() and "PROBE-BODY" in transcript.read_text()
    assert by_tool["Bash"]["cwd"] == str(project)


def test_missing_hook_script_surfaces_as_blocking_error(run_claude, tmp_path):
    """python3 exits 2 on a missing script, and exit 2 is Claude Code's 'blocking error':
    a hook entry point that is not there is loud, so a quiet session proves the hooks ran."""
    plugin = make_plugin(tmp_path / "plugin")
    (plugin / "hooks" / "post.py").unlink()
    s = run_claude([bash("echo hi"), final()], plugin_dir=plugin)
    s.check_completed()
    assert "PostToolUse:Bash hook blocking error" in s.seen_after(0)
