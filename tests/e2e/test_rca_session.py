"""RCA sessions in the real binary on the synthetic demo experiment (local backend).

The scripted model does what the RCA skill tells a model to do: load the skill, run the
recipe's bash block, write RCA_Report.md. The plugin's real hooks check the report and
package the run; the tests read what came back to the model and what landed on disk.
"""
from __future__ import annotations

import pytest
from aoi_demo import (assert_bundle, assert_feedback, assert_no_feedback, drop_section,
                      good_rca_report, new_experiment, rca_dir_from, rca_recipe_command,
                      results_copy)
from harness import SKILL_NAMES, plugin_skill, scratch_copy
from standin import Recorded, bash, final, skill, write

pytestmark = pytest.mark.e2e

SECRET = "hf_abcdefghijklmnopqrstuvwxyz0123"


def test_rca_session_runs_recipe_checks_report_and_packages_redacted_bundle(run_claude, demo_ws):
    exp = new_experiment(demo_ws, "exp_session")
    state: dict = {}

    def bad_write(req: Recorded):
        state["rca"] = rca = rca_dir_from(req.last_tool_result())
        state["good"] = good_rca_report(rca)
        return write(rca / "RCA_Report.md", drop_section(state["good"], "Visual Spot Check"))

    def good_write(req: Recorded):
        return write(state["rca"] / "RCA_Report.md", state["good"])

    s = run_claude([
        bash(f"export HF_TOKEN={SECRET}; echo token configured", "configure the hub token"),
        skill(plugin_skill("rca")),
        bash(rca_recipe_command(demo_ws, exp), "run the gap-analysis recipe"),
        bad_write,
        good_write,
        final("RCA done"),
    ], prompt=f"Analyse the gaps of the VCN experiment in {exp}")
    s.check_completed()
    rca = state["rca"]

    # the skill loaded, then its recipe ran on the local backend and left every artifact
    assert "Launching skill: " + plugin_skill("rca") in s.seen_after(1)
    out = s.seen_after(2)
    assert "backend: local" in out and "gap_analysis exit code: 0" in out, out[-3000:]
    for name in ("kpi_gaps.parquet", "threshold.txt", "metrics.json",
                 "weak_samples_breakdown.txt", "RCA_Report.draft.md", "vcn_aoi_spec.yaml"):
        assert (rca / name).is_file(), name
    # ten 128x128 first-lighting thumbnails, and the overview sheet beside them
    assert len(list((rca / "rca_images").glob("[0-9][0-9]_*.png"))) == 10
    assert (rca / "rca_images" / "spot_check_sheet.png").is_file()
    assert_no_feedback(s, 2)  # a clean recipe run draws no complaint from the script check

    # a report without the Visual Spot Check section: the hook says so on the next turn
    assert_feedback(s, 3, "RCA_Report.md", "Visual Spot Check")
    # the complete report passes quietly and is packaged
    assert_no_feedback(s, 4)
    assert (rca / "RCA_Report.md").read_text(encoding="utf-8") == state["good"]
    bundled = assert_bundle(rca, "rca_config", SKILL_NAMES["rca"], s)
    assert any((rca / "rca_config").rglob("*.yaml")), "no run/bank configuration in rca_config/"

    # the bundled transcript is this session's, with the token redacted
    assert SECRET in s.transcript().read_text(encoding="utf-8")  # the original holds it
    assert SECRET not in bundled
    assert "export HF_TOKEN=" in bundled and "gap_analysis exit code: 0" in bundled


def test_rca_report_with_missing_artifact_gets_feedback(run_claude, rca_results):
    rca = results_copy(rca_results, "missing_threshold")
    report = good_rca_report(rca)
    (rca / "threshold.txt").unlink()
    s = run_claude([write(rca / "RCA_Report.md", report), final()])
    s.check_completed()
    assert_feedback(s, 0, "threshold.txt", "RCA_Report.md")


def test_sabotaged_report_hook_is_caught(run_claude, rca_results, tmp_path):
    """The scenario's check fails when the report hook stays silent: it can catch a regression."""
    plugin = scratch_copy(tmp_path / "sabotaged")
    hook = plugin / "hooks" / "on_report_written.py"
    hook.write_text("raise SystemExit(0)  # sabotaged by the e2e test: no feedback, no bundle\n")
    rca = results_copy(rca_results, "sabotaged")
    report = good_rca_report(rca)
    (rca / "threshold.txt").unlink()
    s = run_claude([write(rca / "RCA_Report.md", report), final()], plugin_dir=plugin)
    s.check_completed()
    with pytest.raises(AssertionError, match="no report-hook feedback"):
        assert_feedback(s, 0, "threshold.txt", "RCA_Report.md")
    assert not (rca / "rca_config").exists()
