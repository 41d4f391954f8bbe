"""Unrelated tool calls: the plugin's PostToolUse hooks say nothing, fail nowhere, and are fast."""
from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from harness import require
from standin import bash, final, write

pytestmark = pytest.mark.e2e

HOOK_BUDGET_MS = 150
RUNS = 7


def real_python3() -> str:
    """The interpreter `python3` resolves to (past a pyenv-style shim), for timing the hook itself."""
    out = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def time_hook(interpreter: str, script: Path, event: dict, env: dict):
    """Wall and CPU (user+sys) milliseconds of RUNS runs, plus everything the hook printed."""
    wall, cpu, stdout = [], [], ""
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([interpreter, str(script)], input=json.dumps(event),
                              capture_output=True, text=True, env=env, timeout=30)
        wall.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        assert proc.returncode == 0, proc.stderr
        stdout += proc.stdout
    return wall, cpu, stdout


def test_unrelated_bash_and_write_get_no_feedback_and_hooks_are_fast(run_claude, project):
    require("hooks/check_script_output.py", "hooks/on_report_written.py")
    notes = project / "notes.md"
    notes_text = "# Meeting notes\n\nNothing to do with reports. Verdict: lunch at noon.\n"
    s = run_claude([bash("echo hello"), write(notes, notes_text), final("done")],
                   debug_hooks=True)
    s.check_completed()
    assert "hello" in s.seen_after(0)
    assert notes.read_text() == notes_text
    for step in (0, 1):
        seen = s.seen_after(step)
        assert "PostToolUse:" not in seen, f"hook spoke after step {step}: {seen}"
    # quiet does not mean broken: nothing crashed, no bundle appeared beside the notes
    log = s.home / ".claude" / "plugins" / "data" / "tao-aoi-inline" / "hooks.log"
    assert "crash" not in (log.read_text() if log.exists() else "")
    assert sorted(p.name for p in project.iterdir()) == ["notes.md"]

    # the binary's own measurement of each hook run (claude --debug hooks)
    debug = "\n".join(p.read_text() for p in (s.home / ".claude" / "debug").glob("*.txt"))
    ran = re.findall(r"Hooks: PostToolUse:(\w+) \[[^\]]*hooks/(\w+\.py)[^\]]*\] \(plugin tao-aoi@inline\) "
                     r"finished with status (\d+) \((\d+)ms\)", debug)
    assert {(tool, script) for tool, script, _, _ in ran} == {
        ("Bash", "check_script_output.py"), ("Write", "on_report_written.py")}, ran
    assert all(status == "0" for _, _, status, _ in ran), ran
    print("binary-measured hook wall time (ms, includes the python3 shim):",
          {f"{t}:{sc}": int(ms) for t, sc, _, ms in ran})

    # direct timing of the entry points on the same events, on the real interpreter
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
    env.update(CLAUDE_PLUGIN_ROOT=str(s.plugin_dir), CLAUDE_PROJECT_DIR=str(project),
               CLAUDE_PLUGIN_DATA=str(s.home / "hookdata"))
    base = {"session_id": "e2e", "transcript_path": str(s.transcript()), "cwd": str(project),
            "hook_event_name": "PostToolUse"}
    cases = {
        "check_script_output.py": dict(base, tool_name="Bash",
                                       tool_input={"command": "echo hello"},
                                       tool_response={"stdout": "hello", "stderr": "",
                                                      "interrupted": False}),
        "on_report_written.py": dict(base, tool_name="Write",
                                     tool_input={"file_path": str(notes), "content": notes_text},
                                     tool_response={"filePath": str(notes), "type": "create"}),
    }
    python = real_python3()
    for script, event in cases.items():
        wall, cpu, stdout = time_hook(python, s.plugin_dir / "hooks" / script, event, env)
        assert stdout == "", f"{script} printed {stdout!r} for an unrelated call"
        print(f"{script}: wall min {min(wall):.0f} / median {statistics.median(wall):.0f} ms, "
              f"cpu min {min(cpu):.0f} / median {statistics.median(cpu):.0f} ms "
              f"over {RUNS} runs ({python})")
        # CPU time is the hook's own cost; wall time on this shared 2-core machine mostly
        # measures the neighbours (it is printed above, and the budget is the same).
        assert min(cpu) < HOOK_BUDGET_MS, (script, cpu)
