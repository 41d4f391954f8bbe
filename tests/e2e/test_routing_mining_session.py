"""Routing then mining in one real claude session, on the demo RCA outputs (baseline encoder).

The scripted model loads each skill, runs the command block the skill documents, and writes
the report; the plugin's hooks check the Bash output and the reports and package each run.
"""
from __future__ import annotations

import pytest
from aoi_demo import (BASH_FEEDBACK, assert_bundle, assert_feedback, assert_no_feedback,
                      mining_command, out_dir, results_copy, routing_command,
                      routing_summary_json)
from harness import SKILL_NAMES, plugin_skill
from standin import Recorded, bash, final, skill, write

pytestmark = pytest.mark.e2e

TEN_MINUTES_MS = 600_000


def test_routing_then_mining_session(run_claude, rca_results, demo_pool, demo_ws, tmp_path):
    from tao_aoi.demo.mining import POOL_COUNTS, mining_report, routing_report
    from tao_aoi.hooks.report_rules import MARK_DROPPED_LABELS

    rca = results_copy(rca_results, "routing_session")
    state: dict = {}

    def write_routing_report(req: Recorded):
        route_dir = state["route_dir"] = out_dir(req.last_tool_result(), "ROUTING_OUT")
        route = state["route"] = routing_summary_json(rca, demo_pool, route_dir, tmp_path / "rt")
        return write(route_dir / "Routing_Report.md",
                     routing_report(route, route_dir, POOL_COUNTS))

    def mine(req: Recorded):
        targets = state["route_dir"] / "mining_gaps.parquet"
        return bash(mining_command(demo_ws, targets, demo_pool, rca), "run the mining recipe",
                    TEN_MINUTES_MS)

    def hide_summary(req: Recorded):
        output = req.last_tool_result()
        run = state["run"] = out_dir(output, "MINING_RUN")
        state["report"] = mining_report(run, state["route"], POOL_COUNTS, output, demo_ws)
        return bash(f'mv "{run}/mining_summary.txt" "{run}/mining_summary.moved"')

    def write_mining_report(req: Recorded):
        return write(state["run"] / "Mining_Report.md", state["report"])

    def restore_summary(req: Recorded):
        run = state["run"]
        return bash(f'mv "{run}/mining_summary.moved" "{run}/mining_summary.txt"')

    s = run_claude([
        skill(plugin_skill("routing")),                                     # 0
        bash(routing_command(rca, demo_pool), "route the weak samples"),   # 1
        write_routing_report,                                               # 2
        skill(plugin_skill("mining")),                                      # 3
        mine,                                                               # 4
        hide_summary,                                                       # 5
        write_mining_report,                                                # 6 missing artifact
        restore_summary,                                                    # 7
        write_mining_report,                                                # 8 complete
        final("routing and mining done"),
    ], prompt=f"Route and mine the weak samples of {rca}")
    s.check_completed()
    route_dir, run = state["route_dir"], state["run"]

    # routing: the skill's command ran, and the script check flagged the dropped label
    assert "Launching skill: " + plugin_skill("routing") in s.seen_after(0)
    for name in ("mining_gaps.parquet", "anomalygen_gaps.parquet", "routing_summary.txt"):
        assert (route_dir / name).is_file(), name
    seen = s.seen_after(1)
    assert BASH_FEEDBACK in seen, seen[-3000:]
    hook_text = seen[seen.index(BASH_FEEDBACK):]
    assert MARK_DROPPED_LABELS in hook_text and "TOMBSTONE" in hook_text, hook_text
    # the routing report is accepted and packaged
    assert_no_feedback(s, 2)
    assert_bundle(route_dir, "routing_config", SKILL_NAMES["routing"], s)

    # mining: the skill's recipe ran with the baseline encoder on the local runner
    assert "Launching skill: " + plugin_skill("mining") in s.seen_after(3)
    mined = s.seen_after(4)
    assert "backend: local" in mined and f"MINING_RUN={run}" in mined, mined[-3000:]
    for name in ("target_embeddings.parquet", "source_embeddings.parquet", "mined.parquet",
                 "embedding_spec.yaml", "mining_spec.yaml"):
        assert (run / name).is_file(), name
    assert_no_feedback(s, 4)

    # a report written while mining_summary.txt is missing: feedback on the next turn
    assert_feedback(s, 6, "mining_summary.txt", "Mining_Report.md")
    # the same report once the artifact is back: accepted, packaged
    assert_no_feedback(s, 8)
    assert (run / "Mining_Report.md").read_text(encoding="utf-8") == state["report"]
    bundled = assert_bundle(run, "mining_config", SKILL_NAMES["mining"], s)
    assert "MINING_RUN=" in bundled
