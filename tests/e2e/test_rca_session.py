"""RCA sessions in the real binary on the synthetic demo experiment (local backend).

The scripted model does what the RCA skill tells a model to do: load the skill, run the
recipe's bash block, write RCA_Report.md. The plugin's real hooks check the report and
package the run; the tests read what came back to the model and what landed on disk.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, plugin_skill, require, scratch_copy
from standin import Recorded, bash, final, skill, write

pytestmark = pytest.mark.e2e

RECIPE = REPO / "skills" / "tao-analyze-gaps-visual-changenet" / "references" / "recipe.md"
SECRET = "hf_abcdefghijklmnopqrstuvwxyz0123"
WRITE_FEEDBACK = "PostToolUse:Write hook additional context:"
BASH_FEEDBACK = "PostToolUse:Bash hook additional context:"
PIECES = ("skills/tao-analyze-gaps-visual-changenet/references/recipe.md",
          "scripts/data_services.py", "scripts/spot_check.py", "scripts/draft_report.py",
          "tao_aoi/demo/synth.py", "tao_aoi/demo/rca.py", "hooks/on_report_written.py")


# ------------------------------------------------------------------------- helpers
def recipe_block() -> str:
    from tao_aoi.demo.rca import extract_recipe  # the demo's reading of the same document

    return extract_recipe(REPO)


def recipe_command(ws: Path, exp: Path) -> str:
    """The skill's recipe as one Bash call, its inputs exported first (as recipe.md says)."""
    exports = (f'export EXP="{exp}" TRAIN_YAML="{exp}/train.yaml" DATASET="{ws}/dataset" '
               f'DS_BACKEND_FORCE=local')
    return exports + "\n" + recipe_block()


def new_experiment(ws: Path, name: str) -> Path:
    """A fresh experiment dir (inference CSV + train YAML) over the shared demo dataset."""
    exp = ws / name
    shutil.copytree(ws / "experiment", exp, ignore=shutil.ignore_patterns("*_results"))
    return exp


def rca_dir_from(output: str) -> Path:
    m = re.search(r"^RCA results dir: (.+)$", output, re.M)
    assert m, "the recipe did not print its results dir:\n" + output[-3000:]
    return Path(m.group(1).strip())


def good_report(rca_dir: Path) -> str:
    """A complete RCA_Report.md for ``rca_dir`` from the demo's draft-filling machinery,
    returned as text (the scripted Write puts it on disk, so the hook sees a real Write)."""
    from tao_aoi.demo.rca import write_report

    path, _ = write_report(rca_dir)
    text = path.read_text(encoding="utf-8")
    path.unlink()
    return text


def drop_section(report: str, name: str) -> str:
    m = re.search(rf"^## \d+\. {re.escape(name)}\n.*?(?=^## )", report, re.S | re.M)
    assert m, f"section {name} not found in the report"
    return report[:m.start()] + report[m.end():]


def assert_feedback(session, step: int, *needles: str) -> str:
    """The report hook's feedback for step ``step`` reached the model in the NEXT request,
    and was not there before the step."""
    seen = session.seen_after(step)
    assert WRITE_FEEDBACK in seen, f"no report-hook feedback after step {step}:\n{seen[:2000]}"
    feedback = seen[seen.index(WRITE_FEEDBACK):]
    for needle in needles:
        assert needle in feedback, f"{needle!r} not in the feedback:\n{feedback[:2000]}"
    if step > 0:  # it is this write's feedback, not an echo of an earlier one
        assert feedback not in session.seen_after(step - 1)
    return feedback


def assert_no_feedback(session, step: int) -> None:
    seen = session.seen_after(step)
    assert "PostToolUse:" not in seen, f"unexpected hook output after step {step}:\n{seen[:3000]}"


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory) -> Path:
    require(*PIECES)
    from tao_aoi.demo import synth

    ws = tmp_path_factory.mktemp("demo_ws")
    synth.generate(ws)
    return ws


@pytest.fixture(scope="module")
def rca_results(demo_ws: Path) -> Path:
    """A finished gap-analysis results folder made by the recipe outside claude."""
    import os
    import subprocess

    exp = new_experiment(demo_ws, "exp_fixture")
    env = dict(os.environ, TAO_SKILL_BANK_PATH=str(REPO), TAO_SKILL_BANK_PYTHON=_bank_python())
    proc = subprocess.run(["bash", "-c", recipe_command(demo_ws, exp)], cwd=demo_ws, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return rca_dir_from(proc.stdout)


def _bank_python() -> str:
    from conftest import bank_python

    return bank_python()


def results_copy(rca_results: Path, name: str) -> Path:
    """A private copy of the fixture results (a test may break it)."""
    dest = rca_results.parent / name
    shutil.copytree(rca_results, dest)
    return dest


# ------------------------------------------------------------------------- scenarios
def test_rca_session_runs_recipe_checks_report_and_packages_redacted_bundle(run_claude, demo_ws):
    exp = new_experiment(demo_ws, "exp_session")
    state: dict = {}

    def bad_write(req: Recorded):
        state["rca"] = rca = rca_dir_from(req.last_tool_result())
        state["good"] = good_report(rca)
        return write(rca / "RCA_Report.md", drop_section(state["good"], "Visual Spot Check"))

    def good_write(req: Recorded):
        return write(state["rca"] / "RCA_Report.md", state["good"])

    s = run_claude([
        bash(f"export HF_TOKEN={SECRET}; echo token configured", "configure the hub token"),
        skill(plugin_skill("rca")),
        bash(recipe_command(demo_ws, exp), "run the gap-analysis recipe"),
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
    assert len(list((rca / "rca_images").glob("*.png"))) == 10
    assert_no_feedback(s, 2)  # a clean recipe run draws no complaint from the script check

    # a report without the Visual Spot Check section: the hook says so on the next turn
    assert_feedback(s, 3, "RCA_Report.md", "Visual Spot Check")
    # the complete report passes quietly and is packaged
    assert_no_feedback(s, 4)
    assert (rca / "RCA_Report.md").read_text(encoding="utf-8") == state["good"]
    config = rca / "rca_config"
    assert (config / "tao-analyze-gaps-visual-changenet" / "SKILL.md").is_file()
    assert any(config.rglob("*.yaml")), "no run/bank configuration in rca_config/"

    # the bundled transcript is this session's, with the token redacted
    bundled = (rca / "claude_session.jsonl").read_text(encoding="utf-8")
    assert SECRET in s.transcript().read_text(encoding="utf-8")  # the original holds it
    assert SECRET not in bundled
    assert "export HF_TOKEN=" in bundled and "gap_analysis exit code: 0" in bundled


def test_rca_report_with_missing_artifact_gets_feedback(run_claude, rca_results):
    rca = results_copy(rca_results, "missing_threshold")
    report = good_report(rca)
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
    report = good_report(rca)
    (rca / "threshold.txt").unlink()
    s = run_claude([write(rca / "RCA_Report.md", report), final()], plugin_dir=plugin)
    s.check_completed()
    with pytest.raises(AssertionError, match="no report-hook feedback"):
        assert_feedback(s, 0, "threshold.txt", "RCA_Report.md")
    assert not (rca / "rca_config").exists()
