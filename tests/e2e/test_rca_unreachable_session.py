"""An RCA session whose recall target cannot be met: the inference CSV holds no NO_PASS row.

The scripted model runs the RCA recipe (local backend) on a PASS-only CSV. The runner exits 1
and writes unreachable_kpi.txt; the script-check hook should tell the model to skip the spot
check (see the end of the test: a known gap with Claude Code's PostToolUseFailure); the abridged
report (report_rules.RCA_UNREACHABLE_SECTIONS) passes the report check quietly and
is packaged, while an abridged report without its Unreachable KPI section draws feedback.
"""
from __future__ import annotations

import re

import pytest
from aoi_demo import (assert_feedback, assert_no_feedback, drop_section,
                      new_experiment, rca_dir_from, rca_recipe_command, unreachable_rca_report)
from harness import SKILL_NAMES
from standin import Recorded, bash, final, write

pytestmark = pytest.mark.e2e


def test_unreachable_kpi_session_skips_spot_check_and_accepts_abridged_report(run_claude,
                                                                              demo_ws):
    from tao_aoi.hooks.report_rules import (CONFIG_DIRS, MARK_UNREACHABLE, RCA_UNREACHABLE_FILE,
                                            SESSION_FILE)

    exp = new_experiment(demo_ws, "exp_pass_only", keep_labels={"PASS"})
    state: dict = {}

    def good_write(req: Recorded):
        state["rca"] = rca = rca_dir_from(req.last_tool_result())
        state["good"] = unreachable_rca_report(rca)
        return write(rca / "RCA_Report.md", state["good"])

    def bad_write(req: Recorded):
        rca = state["rca"]  # what the good Write left, before the bad one re-packages
        state["after_good"] = {p.name for p in rca.iterdir()}
        return write(rca / "RCA_Report.md", drop_section(state["good"], "Unreachable KPI"))

    s = run_claude([
        bash(rca_recipe_command(demo_ws, exp), "run the gap-analysis recipe"),  # 0
        good_write,                                                              # 1
        bad_write,                                                               # 2
        final("RCA stopped: unreachable KPI"),
    ], prompt=f"Analyse the gaps of the VCN experiment in {exp}")
    s.check_completed()
    rca = state["rca"]

    # the recipe's Bash call failed with the runner's exit code 1 and the UNREACHABLE marker
    recipe_result = s.standin.after_step(0).last_tool_result()
    assert "Exit code 1" in recipe_result, recipe_result[-3000:]
    assert "backend: local" in recipe_result and "gap_analysis exit code: 1" in recipe_result
    assert f"{MARK_UNREACHABLE}: no threshold reaches min_recall=1.0" in recipe_result
    # on disk: the unreachable file, no ranking, no spot check, an abridged draft
    assert MARK_UNREACHABLE in (rca / RCA_UNREACHABLE_FILE).read_text(encoding="utf-8")
    for name in ("kpi_gaps.parquet", "threshold.txt", "metrics.json", "rca_images"):
        assert not (rca / name).exists(), name
    draft = (rca / "RCA_Report.draft.md").read_text(encoding="utf-8")
    assert "## 3. Unreachable KPI" in draft and "Visual Spot Check" not in draft, draft

    # the abridged report passes quietly and is packaged
    assert_no_feedback(s, 1)
    assert {CONFIG_DIRS["rca"], SESSION_FILE, "RCA_Report.md"} <= state["after_good"], \
        state["after_good"]
    assert (rca / CONFIG_DIRS["rca"] / SKILL_NAMES["rca"] / "SKILL.md").is_file()
    assert "gap_analysis exit code: 1" in (rca / SESSION_FILE).read_text(encoding="utf-8")

    # without its Unreachable KPI section it draws feedback on the next turn
    feedback = assert_feedback(s, 2, "RCA_Report.md", "## 3. Unreachable KPI` is missing")
    assert "Visual Spot Check" not in feedback, feedback  # the abridged rules, not the full ones

    # the script-check hook's advice ("skip the spot check") reaches the model's next request.
    # Claude Code 2.1.328 runs PostToolUse hooks only for tool calls that succeed: a Bash call
    # exiting non-zero fires PostToolUseFailure instead (input: tool_input + ``error`` =
    # "Exit code N\n<stdout>\n<stderr>", no tool_response), and hooks/hooks.json registers
    # check_script_output.py for PostToolUse only. Checked last, so every other assertion
    # above still guards this scenario while that gap is open.
    seen = s.seen_after(0)
    hook = re.search(r"PostToolUse(?:Failure)?:Bash hook additional context:", seen)
    # The recipe exits 1, so Claude Code fires PostToolUseFailure (not PostToolUse); the
    # script check is registered for both and must answer under the failure event's name.
    assert hook is not None and hook.group(0).startswith("PostToolUseFailure"), seen[-2000:]
    advice = seen[hook.start():]
    assert "tao-aoi rca script check:" in advice, advice
    assert "skip the visual spot check" in advice and RCA_UNREACHABLE_FILE in advice, advice
