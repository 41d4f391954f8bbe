"""Editing RCA_Report.md in place (Claude Code's Edit tool) re-checks and re-packages the run.

The scripted model writes a good report, Reads it (Edit refuses a file not read first),
Edits a section heading away, then Edits it back. The report hook fires on Edit as on Write:
feedback for the broken report, silence for the restored one, and each time the bundle is
rebuilt whole (a file planted in rca_config/ between the calls does not survive).
"""
from __future__ import annotations

import json

import pytest
from aoi_demo import assert_feedback, assert_no_feedback, good_rca_report, results_copy
from harness import SKILL_NAMES
from standin import Recorded, edit, final, read, write

pytestmark = pytest.mark.e2e

HEADING = "## 5. Visual Spot Check\n"
STALE = "STALE_planted_by_e2e.txt"


def bundle_files(config) -> set[str]:
    return {p.relative_to(config).as_posix() for p in config.rglob("*") if p.is_file()}


def test_edit_of_rca_report_is_checked_and_repackaged_in_place(run_claude, rca_results):
    rca = results_copy(rca_results, "edit_session")
    report, config = rca / "RCA_Report.md", rca / "rca_config"
    good = good_rca_report(rca)
    at = good.index(HEADING)
    chunk = good[at:at + len(HEADING) + 160]  # the heading and the start of its section
    assert good.count(HEADING) == 1 and good.count(chunk[len(HEADING):]) == 1
    manifests: list[dict] = []

    def snapshot(plant: bool = False):
        """Record the bundle the previous call left (a step callable runs after its hooks)."""
        manifest = json.loads((config / "manifest.json").read_text(encoding="utf-8"))
        manifest["on_disk"] = bundle_files(config)
        manifests.append(manifest)
        if plant:
            (config / STALE).write_text("left over from an older bundle\n")

    def read_after_write(req: Recorded):
        snapshot(plant=True)
        return read(report)

    def break_heading(req: Recorded):
        return edit(report, chunk, chunk[len(HEADING):])

    def restore_heading(req: Recorded):
        snapshot()
        return edit(report, chunk[len(HEADING):], chunk)

    s = run_claude([
        write(report, good),   # 0
        read_after_write,      # 1 (Edit refuses a file the session has not read)
        break_heading,         # 2
        restore_heading,       # 3
        final("report fixed"),
    ], prompt=f"Tidy the RCA report in {rca}")
    s.check_completed()
    after_write, after_break = manifests

    # the good Write: quiet, packaged; the Read: nothing to say
    assert_no_feedback(s, 0)
    assert_no_feedback(s, 1)
    assert "Visual Spot Check" in s.seen_after(1)  # the Read returned the report

    # the Edit that drops a heading: the check's feedback reaches the next request
    assert_feedback(s, 2, "RCA_Report.md", "## 5. Visual Spot Check` is missing", tool="Edit")
    # ... and the bundle was rebuilt, not patched: new transcript copy, planted file gone
    for manifest in (after_write, after_break):
        assert manifest["report"] == str(report)
        assert manifest["on_disk"] == {f["path"] for f in manifest["files"]} | {"manifest.json"}
    assert STALE not in after_break["on_disk"]
    assert after_break["transcript"]["sha256"] != after_write["transcript"]["sha256"]
    assert after_break["transcript"]["lines"] > after_write["transcript"]["lines"]
    assert after_break["session_id"] == after_write["session_id"]

    # the Edit that restores it: quiet, the report is the good one again, bundle rebuilt again
    assert_no_feedback(s, 3)
    assert report.read_text(encoding="utf-8") == good
    final_manifest = json.loads((config / "manifest.json").read_text(encoding="utf-8"))
    assert final_manifest["transcript"]["sha256"] != after_break["transcript"]["sha256"]
    assert bundle_files(config) == {f["path"] for f in final_manifest["files"]} | {"manifest.json"}
    assert (config / SKILL_NAMES["rca"] / "SKILL.md").is_file()
    leftovers = [p.name for p in rca.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # no temp bundle or transcript copy left beside it
    bundled = (rca / "claude_session.jsonl").read_text(encoding="utf-8")
    assert '"name":"Edit"' in bundled.replace(" ", ""), "the bundled transcript predates the Edit"
