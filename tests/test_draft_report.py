"""RCA_Report.draft.md: numbers, labels, threshold, image links, plot, unreachable variant."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tao_aoi.hooks import report_rules as rr
from tao_aoi.report_draft import draft
from tao_aoi.spot_check import label_cell, run_spot_check
from test_spot_check import LIGHTS, NO_PASS, PASS, make_results

ROOT = Path(__file__).resolve().parents[1]
CM = {"tp": 417, "fp": 93, "tn": 1208, "fn": 0}
# RARE appears only in metrics.json (no kept rows): it must still get its own row.
# per_label is keyed by the normalised label (" pass " rows count under PASS), as the container groups
PER_LABEL = {"PASS": {"total": 1301, "mean_weakness": -0.31, "median_weakness": -0.3,
                      "max_weakness": 0.4, "n_misclassified": 93},
             "MISSING": {"total": 200, "mean_weakness": -0.2, "median_weakness": -0.2,
                         "max_weakness": 0.3, "n_misclassified": 0},
             "BRIDGE": {"total": 150, "mean_weakness": -0.3, "median_weakness": -0.3,
                        "max_weakness": 0.2, "n_misclassified": 0},
             "SHIFT": {"total": 40, "mean_weakness": -0.1, "median_weakness": -0.1,
                       "max_weakness": -0.1, "n_misclassified": 0},
             "passed": {"total": 20, "mean_weakness": -0.2, "median_weakness": -0.2,
                        "max_weakness": -0.2, "n_misclassified": 0},
             "RARE_LABEL": {"total": 7, "mean_weakness": -0.5, "median_weakness": -0.5,
                            "max_weakness": -0.4, "n_misclassified": 0}}


def write_metrics(results: Path, threshold=0.123456789, mode="sweep"):
    t_file = results / "threshold.txt"
    if mode == "sweep":
        t_file.write_text(str(threshold))  # the container's str(t), no newline
    elif t_file.exists():
        t_file.unlink()  # a pinned threshold: no threshold.txt
    m = {"threshold": threshold, "threshold_mode": mode, "min_recall": 1.0,
         "top_k_per_label": 50, "selection_mode": "top_k", "precision": 0.8176470588,
         "recall": 1.0, "f1": 0.8996763754, "far": 0.0714834743, "confusion_matrix": CM,
         "n_rows": 1718, "n_pass": 1301, "n_no_pass": 417, "n_candidates": 640,
         "n_candidates_meeting_recall": 212, "kept_rows": 13, "expanded_rows": 39,
         "lightings": LIGHTS, "image_ext": ".jpg", "missing_images": 0, "per_label": PER_LABEL}
    (results / "metrics.json").write_text(json.dumps(m))
    (results / "weak_samples_breakdown.txt").write_text(
        f"Weak samples breakdown by label (threshold={threshold}, top_k_per_label=50)\n"
        "Total KPI samples: 1718\nTotal weak samples kept: 13\n\n"
        "  PASS: 5 (38.5%) \u2014 4 misclassified, 1 marginal\n")


def build(tmp_path):
    results, train = make_results(tmp_path, PASS + NO_PASS)
    write_metrics(results)
    run_spot_check(results, LIGHTS, ".jpg")
    return results


def section_text(md: str, name: str) -> str:
    m = re.search(rf"^## \d+\. {re.escape(name)}\n(.*?)(?=^## |\Z)", md, re.S | re.M)
    assert m, f"section {name} missing"
    return m.group(1)


def test_draft_has_structure_numbers_labels_and_links(tmp_path):
    results = build(tmp_path)
    info = draft(results)
    md = (results / "RCA_Report.draft.md").read_text()
    assert not (results / "RCA_Report.md").exists()
    headings = re.findall(r"^## (\d+)\. (.+)$", md, re.M)
    assert headings == [(str(i), s) for i, s in enumerate(rr.RCA_SECTIONS, 1)]
    thr = section_text(md, "Threshold Selection")
    assert "0.123456789" in thr and "sweep" in thr
    for key, value in CM.items():
        assert f"{key.upper()} = {value} |" in thr
    assert "| Precision | 0.8176 |" in thr and "| FAR (false-alarm rate) | 0.0715 |" in thr
    assert "640 candidate thresholds" in thr and "212 of them" in thr
    assert "![Score distribution" in thr and "(score_distribution.png)" in thr
    with Image.open(results / "score_distribution.png") as im:
        assert im.format == "PNG"
    per_label = section_text(md, "Per-Label Breakdown")
    rows = [line for line in per_label.splitlines() if line.startswith("| ")][1:]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(label_cell(k) for k in PER_LABEL)
    # kept samples count " pass " under PASS: all 7 PASS-like samples of make_results
    assert "| PASS | PASS | 1301 | 93 | 7.1% | -0.3100 | -0.3000 | 0.4000 | 7 |" in per_label
    assert "| passed | NO_PASS | 20 |" in per_label
    assert "| RARE_LABEL | NO_PASS | 7 | 0 | 0.0% |" in per_label
    spot = section_text(md, "Visual Spot Check")
    links = re.findall(r"\]\((rca_images/[^)]+\.png)\)", spot)
    assert links[0] == "rca_images/spot_check_sheet.png"  # the overview sheet first
    assert len(links) == 11 and all((results / link).is_file() for link in links)
    assert "Degenerate threshold" not in md  # a clean run: no degenerate lead
    assert spot.count("|  |") >= 10  # empty Verdict cells for the agent
    top = section_text(md, "Top-K Weakest Samples")
    top_rows = [line for line in top.splitlines() if re.match(r"\| \d+ \|", line)]
    samples = [r.split("|")[3].strip() for r in top_rows]
    assert len(samples) == len(set(samples))  # one row per sample, never per lighting
    assert "| 1 | PASS | p/1/C1 | 0.9000 | 0.4000 | wrong |" in top
    weak = section_text(md, "Weakness Distribution")
    assert "| MISSING | 2 |" in weak and "```text" in weak
    assert info["placeholders"] == md.count("<!-- AGENT:") >= 7
    assert info["variant"] == "full"


def test_pinned_run_without_threshold_file(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS)
    write_metrics(results, threshold=0.5, mode="pinned")
    run_spot_check(results, LIGHTS, ".jpg")
    assert not (results / "threshold.txt").exists()
    draft(results)
    thr = section_text((results / "RCA_Report.draft.md").read_text(), "Threshold Selection")
    assert "| Threshold | 0.5 (pinned) |" in thr and "no sweep was run" in thr


def test_histogram_uses_full_csv_when_given(tmp_path, capsys):
    results = build(tmp_path)
    inf = tmp_path / "exp" / "inference"
    inf.mkdir()
    (inf / "inference.csv").write_text("input_path,object_name,label,siamese_score\n"
                                       "a,b,PASS,0.1\na,c,MISSING,0.9\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/draft_report.py"), str(results),
                           "--inference-dir", str(inf), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    md = (results / "RCA_Report.draft.md").read_text()
    assert "every row of the inference CSV" in md
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/draft_report.py"), str(results),
                          "--inference-dir", str(inf / "inference.csv" / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2


def test_unreachable_variant(tmp_path):
    results = tmp_path / "rca"
    results.mkdir()
    text = "NO_PASS recall 0.9731 is the best any threshold reaches; min_recall=1.0 is unreachable"
    (results / "unreachable_kpi.txt").write_text(text + "\n")
    info = draft(results)
    md = (results / "RCA_Report.draft.md").read_text()
    headings = [h for _, h in re.findall(r"^## (\d+)\. (.+)$", md, re.M)]
    assert headings == list(rr.RCA_UNREACHABLE_SECTIONS)
    assert "> " + text in section_text(md, "Unreachable KPI")
    assert "Visual Spot Check" not in md and "rca_images/" not in md
    assert "retrain" in section_text(md, "Recommended Actions")
    assert info["variant"] == "unreachable" and info["plot"] is None


def test_empty_results_dir_is_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/draft_report.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "metrics.json" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- degenerate threshold
CURVE = [{"min_recall": 1.0, "threshold": -5e-324, "recall": 1.0, "far": 1.0, "precision": 0.2427,
          "f1": 0.3906, "false_alarms": 1301},
         {"min_recall": 0.999, "threshold": 0.31, "recall": 0.9976, "far": 0.0415,
          "precision": 0.88, "f1": 0.93, "false_alarms": 54},
         {"min_recall": 0.99, "threshold": 0.35, "recall": 0.9904, "far": 0.02, "precision": 0.94,
          "f1": 0.96, "false_alarms": 26}]


def make_degenerate(results: Path) -> None:
    write_metrics(results, threshold=-5e-324)
    m = json.loads((results / "metrics.json").read_text())
    m.update(confusion_matrix={"tp": 417, "fp": 1301, "tn": 0, "fn": 0}, far=1.0,
             precision=0.2427, operating_curve=CURVE, degenerate_threshold=True,
             threshold_readable="below every score (-5e-324)",
             threshold_pinned_by=[{"input_path": "n/9", "object_name": "R99", "label": "MISSING",
                                   "score": 0.0}],
             relaxed_target=CURVE[1])
    (results / "metrics.json").write_text(json.dumps(m))


def test_degenerate_threshold_leads_the_verdict(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS)
    make_degenerate(results)
    run_spot_check(results, LIGHTS, ".jpg")
    draft(results)
    md = (results / "RCA_Report.draft.md").read_text()
    verdict = section_text(md, "Verdict").strip()
    first = verdict.split("\n\n")[0]
    assert first.startswith("**Degenerate threshold.**")
    assert "below every score (-5e-324)" in first and "1301 of 1301 PASS rows" in first
    assert "FAR 1.0000" in first and "`n/9/R99` (MISSING, score 0)" in first
    assert "min_recall = 0.999 gives threshold 0.31, recall 0.9976, FAR 0.0415 (54 false alarms)" in verdict
    # the operating curve as a table in the lead
    assert "| Recall target | Threshold | Recall | FAR | False alarms | Precision |" in verdict
    assert "| 1 | -5e-324 (chosen) | 1.0000 | 1.0000 | 1301 |" in verdict
    assert "| 0.99 | 0.35 | 0.9904 | 0.0200 | 26 |" in verdict
    assert verdict.index("Degenerate") < verdict.index("<!-- AGENT: verdict")
    thr = section_text(md, "Threshold Selection")
    assert "| Threshold | below every score (-5e-324) (sweep) |" in thr
    # the report hook reads the readable form as the threshold of threshold.txt
    from tao_aoi.hooks.report_rca_numbers import same_threshold, stated_thresholds
    assert any(same_threshold(v, "-5e-324") for v in stated_thresholds(verdict))
    assert any(same_threshold(v, "-5e-324") for v in stated_thresholds(thr))


def test_clean_run_shows_the_curve_in_threshold_selection_without_a_lead(tmp_path):
    results = build(tmp_path)
    m = json.loads((results / "metrics.json").read_text())
    m.update(operating_curve=CURVE[1:], degenerate_threshold=False, threshold_readable="0.123456789")
    (results / "metrics.json").write_text(json.dumps(m))
    draft(results)
    md = (results / "RCA_Report.draft.md").read_text()
    assert "Degenerate" not in md
    assert section_text(md, "Verdict").strip().startswith("<!-- AGENT: verdict")
    assert "| 0.999 | 0.31 | 0.9976 | 0.0415 | 54 |" in section_text(md, "Threshold Selection")


def test_score_plot_one_log_strip_per_label(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from tao_aoi.report_draft import plot_scores
    import pandas as pd

    df = pd.DataFrame({"label": ["PASS"] * 500 + [" pass "] * 3 + ["MISSING"] * 20 + ["BRIDGE"] * 5,
                       "siamese_score": [0.1] * 503 + [0.0] + [0.8] * 19 + [0.7] * 5})
    for n_labels, frame in ((3, df), (2, df[df["label"] != "BRIDGE"])):
        dest = tmp_path / f"plot{n_labels}.png"
        plot_scores(frame, -5e-324, dest, "test", CURVE)
        with Image.open(dest) as im:
            # one strip per normalised label (" pass " is PASS): 100 px + 85 px per strip
            assert im.size == (800, round(100 * (1.0 + 0.85 * n_labels)))
    import matplotlib.pyplot as plt
    captured = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        axes = self.axes
        captured["scales"] = [ax.get_yscale() for ax in axes]
        captured["vlines"] = [sorted(round(l.get_xdata()[0], 4) for l in ax.get_lines()
                                     if len(l.get_xdata()) == 2) for ax in axes]
        return orig(self, *a, **k)
    plt.Figure.savefig = spy
    try:
        plot_scores(df, -5e-324, tmp_path / "spy.png", "test", CURVE)
    finally:
        plt.Figure.savefig = orig
    assert captured["scales"] == ["log"] * 3
    assert all(v == [0.0, 0.31, 0.35] for v in captured["vlines"])
