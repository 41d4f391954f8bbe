"""An RCA session in the real binary on the container backend.

The session's PATH starts with the `docker` / `nvidia-smi` stand-ins (tests/oracle/bin), so the
recipe's preflight picks docker on its own and `"$DS" gap_analysis vcn_aoi` runs NVIDIA's
module as the image's entrypoint does. The scripted model loads the skill, runs the recipe
as documented (no DS_BACKEND_FORCE), writes the report from the draft, then runs the recipe
once more on a PASS-only experiment whose recall target cannot be met.
"""
from __future__ import annotations

import re

import pytest
from aoi_demo import (assert_bundle, assert_no_feedback, good_rca_report, new_experiment,
                      rca_dir_from)
from harness import REPO, SKILL_NAMES, plugin_skill
from standin import Recorded, bash, final, skill, write

pytestmark = pytest.mark.e2e


def container_recipe_command(ws, exp) -> str:
    """The RCA recipe (first bash block of recipe.md) with its inputs exported first, the
    backend left to the preflight's own choice."""
    from tao_aoi.demo.rca import extract_recipe

    exports = (f'export EXP="{exp}" TRAIN_YAML="{exp}/train.yaml" DATASET="{ws}/dataset" '
               f'WORKSPACE="{ws}"')
    return exports + "\n" + extract_recipe(REPO)


def test_rca_session_on_container_backend(run_claude, demo_ws, container_env, tmp_path):
    from tao_aoi.hooks.report_rules import MARK_UNREACHABLE, RCA_UNREACHABLE_FILE

    tag = tmp_path.name  # demo_ws is shared by both claude builds: one experiment each
    exp = new_experiment(demo_ws, f"exp_container_{tag}")
    exp_pass = new_experiment(demo_ws, f"exp_container_pass_only_{tag}", keep_labels={"PASS"})
    state: dict = {}

    def good_write(req: Recorded):
        state["rca"] = rca = rca_dir_from(req.last_tool_result())
        state["good"] = good_rca_report(rca)
        return write(rca / "RCA_Report.md", state["good"])

    # only what makes this host a GPU host; claude_env keeps HOME, keys etc. its own
    env = {"PATH": container_env["PATH"],
           "TAO_AOI_ORACLE_PYTHON": container_env["TAO_AOI_ORACLE_PYTHON"]}
    s = run_claude([
        skill(plugin_skill("rca")),                                                   # 0
        bash(container_recipe_command(demo_ws, exp), "run the gap-analysis recipe"),  # 1
        good_write,                                                                   # 2
        bash(container_recipe_command(demo_ws, exp_pass), "rerun on the PASS-only set"),  # 3
        final("RCA done on the container backend"),
    ], prompt=f"Analyse the gaps of the VCN experiment in {exp}", env=env)
    s.check_completed()
    rca = state["rca"]

    # the recipe took the container path, the completion step ran, every artifact exists
    out = s.seen_after(1)
    assert "backend: docker" in out, out[-3000:]
    assert "Execution status: PASS" in out and "gap_analysis exit code: 0" in out, out[-3000:]
    assert "completion exit code: 0" in out
    for name in ("kpi_gaps.parquet", "threshold.txt", "metrics.json", "weak_samples_breakdown.txt",
                 "RCA_Report.draft.md", "vcn_aoi_spec.yaml", "rca_images/spot_check.json"):
        assert (rca / name).is_file(), name
    assert len(list((rca / "rca_images").glob("[0-9][0-9]_*.png"))) == 10
    assert_no_feedback(s, 1)   # a clean container run draws no complaint from the script check

    # the report written from the draft passes quietly and is packaged with this session
    assert_no_feedback(s, 2)
    bundled = assert_bundle(rca, "rca_config", SKILL_NAMES["rca"], s)
    assert "backend: docker" in bundled  # the container run is in the bundled transcript

    # unreachable target on the container: its FAIL, then the completion's file and draft
    result = s.standin.after_step(3).last_tool_result()
    assert "Exit code 1" in result, result[-3000:]
    assert "No threshold achieves 100% recall on the NO_PASS class." in result, result[-3000:]
    assert "Execution status: FAIL" in result and f"{MARK_UNREACHABLE}:" in result
    rca_pass = rca_dir_from(result)
    assert (rca_pass / RCA_UNREACHABLE_FILE).is_file()
    draft = (rca_pass / "RCA_Report.draft.md").read_text(encoding="utf-8")
    assert "Unreachable KPI" in draft and "Visual Spot Check" not in draft
    assert not (rca_pass / "kpi_gaps.parquet").exists()
    # the script check answers the failed call with the unreachable advice
    seen = s.seen_after(3)
    hook = re.search(r"PostToolUse(?:Failure)?:Bash hook additional context:", seen)
    assert hook is not None, seen[-2000:]
    advice = seen[hook.start():]
    assert "skip the visual spot check" in advice and RCA_UNREACHABLE_FILE in advice, advice
