"""The two PostToolUse entry points as Claude Code runs them: bad input, unrelated events, bare python."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys

import pytest
from test_hook_report_check import (REPO, feedback, hook_env, make_rca_run, rca_report, run_hook,
                                    write_event, write_rca_report)

ENTRIES = ("check_script_output.py", "on_report_written.py")
MODULES = ("script_check", "report_check", "packaging", "redact", "parquet_meta")


@pytest.mark.parametrize("script", ENTRIES)
@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", "null", '{"tool_name": 5}',
                                 '{"tool_name": "Bash", "tool_input": "ls"}',
                                 '{"tool_name": "Write", "tool_input": {"file_path": 7}}',
                                 '{"tool_name": "Bash", "tool_input": {"command": "python3 scripts/route_samples.py"}, "tool_response": "text"}'])
def test_malformed_stdin_exits_zero_silently(tmp_path, script, raw):
    rc, out, err = run_hook(script, None, hook_env(tmp_path), raw=raw)
    assert rc == 0
    assert out == ""


@pytest.mark.parametrize("event", [
    {"tool_name": "Bash", "tool_input": {"command": "echo hello"},
     "tool_response": {"stdout": "hello\n", "stderr": "", "interrupted": False}},
    {"tool_name": "Write", "tool_input": {"file_path": "/tmp/notes.md", "content": "# notes"}},
    {"tool_name": "Read", "tool_input": {"file_path": "/tmp/RCA_Report.md"}},
])
@pytest.mark.parametrize("script", ENTRIES)
def test_unrelated_events_are_quiet(tmp_path, script, event):
    event = {"session_id": "s", "transcript_path": "", "cwd": str(tmp_path),
             "hook_event_name": "PostToolUse", **event}
    rc, out, _ = run_hook(script, event, hook_env(tmp_path))
    assert rc == 0 and out == ""


def test_draft_and_other_markdown_are_not_checked(tmp_path):
    folder = make_rca_run(tmp_path)
    for name in ("RCA_Report.draft.md", "notes.md"):
        path = folder / name
        path.write_text("# draft\n")
        rc, out, _ = run_hook("on_report_written.py", write_event(path), hook_env(tmp_path))
        assert rc == 0 and out == ""
    assert not (folder / "rca_config").exists()


def test_relative_report_path_resolves_against_cwd(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report(threshold="0.1"))
    event = write_event(report, cwd=folder.parent)
    event["tool_input"]["file_path"] = f"{folder.name}/RCA_Report.md"
    rc, out, _ = run_hook("on_report_written.py", event, hook_env(tmp_path))
    assert "does not state the threshold" in feedback(out)


def test_report_deleted_before_the_hook_runs_is_quiet(tmp_path):
    folder = make_rca_run(tmp_path)
    report = folder / "RCA_Report.md"
    event = write_event(report)
    report.unlink()
    rc, out, _ = run_hook("on_report_written.py", event, hook_env(tmp_path))
    assert rc == 0 and out == ""


def test_hooks_run_on_a_bare_python_with_no_site_packages(tmp_path):
    """-S -I: no site-packages, no pandas/pyarrow, no editable install -- the plugin's own copy only."""
    folder = make_rca_run(tmp_path)
    write_rca_report(folder, rca_report(threshold="0.5"))
    proc = subprocess.run([sys.executable, "-S", "-I", str(REPO / "hooks" / "on_report_written.py")],
                          input=json.dumps(write_event(folder / "RCA_Report.md")),
                          capture_output=True, text=True, env=hook_env(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "does not state the threshold" in feedback(proc.stdout)
    assert (folder / "rca_config" / "manifest.json").is_file()


def test_entry_points_exit_zero_when_the_package_is_missing(tmp_path):
    hooks = tmp_path / "plugin" / "hooks"
    hooks.mkdir(parents=True)
    for script in ENTRIES:
        shutil.copy(REPO / "hooks" / script, hooks / script)
        proc = subprocess.run([sys.executable, "-S", "-I", str(hooks / script)], input="{}",
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout == ""


def test_hook_modules_import_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"tao_aoi"}
    for name in MODULES:
        tree = ast.parse((REPO / "tao_aoi" / "hooks" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, (name, roots)


def test_entry_points_are_thin():
    for script in ENTRIES:
        lines = [ln for ln in (REPO / "hooks" / script).read_text().splitlines() if ln.strip()]
        assert len(lines) <= 12, script
