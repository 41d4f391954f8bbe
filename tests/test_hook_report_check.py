"""The report hook (hooks/on_report_written.py) over real results folders built on disk.

Every case runs the real entry point in a subprocess with the JSON Claude Code sends, and
reads what it prints: nothing for a good report, one bullet per problem otherwise. The folder
builders here are reused by the packaging and entry-point tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tao_aoi.hooks import report_rules as rr

REPO = Path(__file__).resolve().parents[1]
LABELS = ["PASS", "EXCESS_SOLDER", "MISSING", "BRIDGE", "TOMBSTONE"]
THRESHOLD = 0.42137
CM = {"tp": 57, "fp": 13, "tn": 911, "fn": 0}

# ---------------------------------------------------------------- running the hooks


def hook_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RCA_HOOKS", "ROUTING_HOOKS", "MINING_HOOKS", "CLAUDE_PROJECT_DIR")}
    env["CLAUDE_PLUGIN_ROOT"] = str(REPO)
    env["CLAUDE_PLUGIN_DATA"] = str(tmp_path / "plugin data")
    env.update(extra)
    return env


def run_hook(script: str, event, env: dict, raw: str | None = None) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, str(REPO / "hooks" / script)],
                          input=raw if raw is not None else json.dumps(event),
                          capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def feedback(stdout: str) -> str:
    """The additionalContext text of a hook's stdout ('' when it printed nothing)."""
    if not stdout.strip():
        return ""
    payload = json.loads(stdout)
    assert payload["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    return payload["hookSpecificOutput"]["additionalContext"]


def write_event(report: Path, transcript: Path | None = None, tool: str = "Write",
                cwd: Path | None = None) -> dict:
    tool_input = {"file_path": str(report)}
    if tool == "Write":
        tool_input["content"] = report.read_text() if report.exists() else ""
    elif tool == "Edit":
        tool_input.update(old_string="x", new_string="y")
    return {"session_id": "sess-0001", "transcript_path": str(transcript) if transcript else "",
            "cwd": str(cwd or report.parent), "hook_event_name": "PostToolUse",
            "tool_name": tool, "tool_input": tool_input,
            "tool_response": {"filePath": str(report), "success": True}}


def check(report: Path, tmp_path: Path, transcript: Path | None = None, **env) -> str:
    rc, out, err = run_hook("on_report_written.py", write_event(report, transcript),
                            hook_env(tmp_path, **env))
    assert rc == 0, err
    return feedback(out)


# ---------------------------------------------------------------- building folders

def _filler(topic: str, n: int) -> str:
    base = (f"The {topic} figures come straight from the artifacts in this folder and were "
            "read before any conclusion was drawn. ")
    words = base.split()
    out = []
    while len(out) < n:
        out.extend(words)
    return " ".join(out[:n])


def write_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (128, 128), (40, 90, 160)).save(path)


def make_rca_run(root: Path, name: str = "exp one") -> Path:
    """An RCA results folder as gap analysis + spot check leave it, plus a good report."""
    exp = root / name
    inference = exp / "inference"
    inference.mkdir(parents=True)
    rows = []
    for i in range(40):
        label = LABELS[i % len(LABELS)]
        rows.append({"input_path": f"board{i:03d}", "object_name": f"C{i}", "label": label,
                     "siamese_score": round(0.05 + 0.023 * i, 4)})
    pd.DataFrame(rows).to_csv(inference / "inference.csv", index=False)
    folder = exp / "rca_results" / "2024-05-01_101500"
    folder.mkdir(parents=True)
    (folder / "vcn_aoi_spec.yaml").write_text(
        f"inference_results_dir: {inference}\ntrain_config: {exp}/train.yaml\n"
        f"kpi_media_path: {exp}/media\nresults_dir: {folder}\nmin_recall: 1.0\n"
        "top_k_per_label: 50\nthreshold: -1.0\n")
    gaps = pd.DataFrame([{**r, "filepath": f"{exp}/media/{r['input_path']}/{r['object_name']}_Coaxial.jpg",
                          "lighting": "Coaxial", "weakness": 0.5 - r["siamese_score"],
                          "misclassified": False} for r in rows])
    gaps = gaps[["filepath", "label", "siamese_score", "weakness", "input_path", "object_name",
                 "lighting", "misclassified"]]  # the container's four columns, then ours
    gaps.to_parquet(folder / "kpi_gaps.parquet", index=False)
    (folder / "threshold.txt").write_text(str(THRESHOLD))  # the container's str(t), no newline
    metrics = {"threshold": THRESHOLD, "threshold_mode": "sweep", "min_recall": 1.0,
               "top_k_per_label": 50, "selection_mode": "top_k", "precision": 0.8143,
               "recall": 1.0, "f1": 0.8976, "far": 0.0141, "confusion_matrix": CM,
               "per_label": {lab: {"total": 8, "mean_weakness": 0.1, "median_weakness": 0.1,
                                   "max_weakness": 0.3, "n_misclassified": 1} for lab in LABELS}}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (folder / "weak_samples_breakdown.txt").write_text(
        f"Weak samples breakdown by label (threshold={THRESHOLD}, top_k_per_label=50)\n"
        f"Total KPI samples: 40\nTotal weak samples kept: 40\n\n"
        + "".join(f"  {lab}: 8 (20.0%) \u2014 1 misclassified, 7 marginal\n" for lab in LABELS))
    for i in range(rr.RCA_SPOT_CHECK_COUNT):
        write_png(folder / rr.RCA_IMAGES_DIR / f"sample_{i:02d}.png")
    write_png(folder / "score_distribution.png")
    (folder / "RCA_Report.md").write_text(rca_report())
    return folder


def rca_report(sections: tuple[str, ...] = rr.RCA_SECTIONS, threshold: str = f"{THRESHOLD:.4f}",
               labels: list[str] = LABELS, verdicts: list[str] | None = None,
               images: list[str] | None = None, filler: int = 170) -> str:
    verdicts = verdicts if verdicts is not None else [rr.VERDICTS[i % 4] for i in range(10)]
    images = images if images is not None else [f"sample_{i:02d}.png" for i in range(10)]
    body = {
        "Verdict": f"The model meets the recall KPI at threshold **{threshold}** with precision "
                   f"0.8143.\n\n{_filler('verdict', filler)}",
        "Threshold Selection": (f"Chosen threshold: {threshold} (sweep, min_recall 1.0).\n\n"
                                "| | Predicted NO_PASS | Predicted PASS |\n|---|---|---|\n"
                                f"| Actual NO_PASS | TP {CM['tp']} | FN {CM['fn']} |\n"
                                f"| Actual PASS | FP {CM['fp']} | TN {CM['tn']} |\n\n"
                                + _filler("threshold", filler)),
        "Weakness Distribution": "![scores](score_distribution.png)\n\n" + _filler("weakness", filler),
        "Top-K Weakest Samples": _filler("top-k", filler),
        "Visual Spot Check": ("| # | Image | Label | Verdict |\n|---|---|---|---|\n" + "".join(
            f"| {i + 1} | ![s{i}](rca_images/{img}) | {LABELS[i % 5]} | {verdicts[i] if i < len(verdicts) else ''} |\n"
            for i, img in enumerate(images)) + "\n" + _filler("spot check", filler)),
        "Per-Label Breakdown": ("| Label | Total | Mean weakness |\n|---|---|---|\n"
                                + "".join(f"| {lab} | 8 | 0.10 |\n" for lab in labels)
                                + "\n" + _filler("per-label", filler)),
        "Recommended Actions": "1. Relabel the mislabeled samples.\n\n" + _filler("actions", filler),
        "Unreachable KPI": "> Recall target 1.0 unreachable: best achievable recall is 0.93 because "
                           "seven NO_PASS samples score below every PASS sample.\n",
    }
    return "# RCA report\n\n" + "\n".join(
        f"## {n}. {name}\n\n{body[name]}\n" for n, name in enumerate(sections, 1))


def write_rca_report(folder: Path, text: str) -> Path:
    report = folder / "RCA_Report.md"
    report.write_text(text)
    return report


def make_unreachable_run(root: Path) -> Path:
    folder = root / "exp" / "rca_results" / "2024-05-02_080000"
    folder.mkdir(parents=True)
    (folder / rr.RCA_UNREACHABLE_FILE).write_text(
        "UNREACHABLE KPI\nRecall target 1.0 unreachable: best achievable recall is 0.93 because "
        "seven NO_PASS samples score below every PASS sample.\n")
    text = rca_report(sections=rr.RCA_UNREACHABLE_SECTIONS, filler=60)
    text = text.replace("Relabel the mislabeled samples.", "Retrain with more NO_PASS data or relabel.")
    (folder / "RCA_Report.md").write_text(text)
    return folder


def _gaps_frame(labels):
    return pd.DataFrame({"filepath": [f"/data/{lab}_{i}.jpg" for i, lab in enumerate(labels)],
                         "label": labels, "weakness": [0.1] * len(labels)})


ROUTES = [("EXCESS_SOLDER", 12, "yes", "yes"), ("MISSING", 8, "no", "yes"),
          ("TOMBSTONE", 5, "yes", "no"), ("LIFTED_LEAD", 3, "no", "no")]


def routing_report(per_label=None, dropped: str = "- LIFTED_LEAD: no pool images and no "
                   "AnomalyGen support; collect real samples.", sections=rr.ROUTING_SECTIONS) -> str:
    per_label = per_label if per_label is not None else [r[0] for r in ROUTES]
    body = {
        "Verdict": "28 weak samples routed; one label reaches neither module.",
        "Inputs": "kpi_gaps.parquet and pool.csv.",
        "Per-Label Routing Decisions": "| Label | Count | Mining | AnomalyGen |\n|---|---|---|---|\n"
        + "".join(f"| {lab} | 1 | yes | no |\n" for lab in per_label),
        "Module-Level Summaries": "Mining gets 20 rows, AnomalyGen 20 rows.",
        "Dropped Labels": dropped,
        "Recommended Actions": "Collect LIFTED_LEAD images.",
    }
    return "\n".join(f"## {n}. {s}\n\n{body[s]}\n" for n, s in enumerate(sections, 1))


def make_routing_run(root: Path) -> Path:
    folder = root / "rca" / "routing_results" / "2024-05-03_090000"
    folder.mkdir(parents=True)
    _gaps_frame(["EXCESS_SOLDER", "TOMBSTONE"]).to_parquet(folder / "mining_gaps.parquet")
    _gaps_frame(["EXCESS_SOLDER", "MISSING"]).to_parquet(folder / "anomalygen_gaps.parquet")
    (folder / "routing_summary.txt").write_text(
        "total rows: 28\nmining subset: 17\nanomalygen subset: 20\n"
        + "".join(f"{lab}: {n} (mining={m}, anomalygen={a})\n" for lab, n, m, a in ROUTES))
    (folder / "Routing_Report.md").write_text(routing_report())
    return folder


ENCODER = {"model": "SigLIP", "model_path": "google/siglip-base-patch16-224", "dim": 4}


def write_embeddings(path: Path, n: int, encoder: dict | None = ENCODER) -> None:
    table = pa.table({"filepath": [f"/pool/img_{i}.jpg" for i in range(n)],
                      "embedding": pa.array([[0.1 * i] * 4 for i in range(n)], pa.list_(pa.float32())),
                      "label": ["BRIDGE"] * n})
    if encoder is not None:
        table = table.replace_schema_metadata({rr.ENCODER_METADATA_KEY: json.dumps(encoder)})
    pq.write_table(table, path)


def mining_report(sections=rr.MINING_SECTIONS, filler: int = 120) -> str:
    return "\n".join(f"## {n}. {s}\n\n{_filler(s.lower(), filler)}\n"
                     for n, s in enumerate(sections, 1))


def make_mining_run(root: Path) -> Path:
    folder = root / "out" / "mining_results" / "2024-05-04_100000"
    folder.mkdir(parents=True)
    (folder / "embedding_spec.yaml").write_text("model: SigLIP\nmodel_path: google/siglip-base-patch16-224\n")
    (folder / "mining_spec.yaml").write_text("topn: 5\nknn_metric: cosine\n")
    write_embeddings(folder / "target_embeddings.parquet", 6)
    write_embeddings(folder / "source_embeddings.parquet", 30)
    pd.DataFrame({"filepath": ["/pool/img_1.jpg", "/pool/img_2.jpg"], "label": ["BRIDGE"] * 2}
                 ).to_parquet(folder / "mined.parquet")
    (folder / "mining_summary.txt").write_text("queries: 6\nmined: 2\n")
    (folder / "Mining_Report.md").write_text(mining_report())
    return folder


# ---------------------------------------------------------------- RCA cases

def test_good_rca_report_gets_no_feedback(tmp_path):
    folder = make_rca_run(tmp_path)
    write_rca_report(folder, rca_report())
    assert check(folder / "RCA_Report.md", tmp_path) == ""


@pytest.mark.parametrize("artifact", rr.RCA_ARTIFACTS)
def test_missing_rca_artifact_is_named(tmp_path, artifact):
    folder = make_rca_run(tmp_path)
    write_rca_report(folder, rca_report())
    (folder / artifact).unlink()
    text = check(folder / "RCA_Report.md", tmp_path)
    assert f"`{artifact}` is missing" in text
    assert "gap_analysis vcn_aoi" in text  # says how to fix


def test_malformed_rca_artifacts_are_each_reported(tmp_path):
    folder = make_rca_run(tmp_path)
    write_rca_report(folder, rca_report())
    (folder / "threshold.txt").write_text("0.42 0.43\n")
    (folder / "metrics.json").write_text(json.dumps({"precision": 0.8, "recall": "high"}))
    pd.DataFrame({"filepath": ["a"], "label": ["PASS"]}).to_parquet(folder / "kpi_gaps.parquet")
    text = check(folder / "RCA_Report.md", tmp_path)
    assert "`threshold.txt` must hold one finite float" in text
    assert "`metrics.json` lacks or malforms recall, f1, confusion_matrix{tp,fp,tn,fn}, per_label" in text
    assert "lacks column(s) siamese_score, weakness" in text


def test_truncated_and_empty_kpi_gaps(tmp_path):
    folder = make_rca_run(tmp_path)
    write_rca_report(folder, rca_report())
    gaps = folder / "kpi_gaps.parquet"
    pd.read_parquet(gaps).iloc[0:0].to_parquet(gaps)
    assert "`kpi_gaps.parquet` has no rows" in check(folder / "RCA_Report.md", tmp_path)
    gaps.write_bytes(gaps.read_bytes()[:-20])
    assert "`kpi_gaps.parquet` is not a readable parquet file" in check(folder / "RCA_Report.md", tmp_path)


@pytest.mark.parametrize("missing", rr.RCA_SECTIONS)
def test_each_missing_rca_section_is_named(tmp_path, missing):
    folder = make_rca_run(tmp_path)
    sections = tuple(s for s in rr.RCA_SECTIONS if s != missing)
    report = write_rca_report(folder, rca_report(sections=sections, filler=200))
    text = check(report, tmp_path)
    number = rr.RCA_SECTIONS.index(missing) + 1
    assert f"section `## {number}. {missing}` is missing" in text


def test_sections_out_of_order_and_heading_variants(tmp_path):
    folder = make_rca_run(tmp_path)
    good = rca_report()
    # numbering optional, case-insensitive: still quiet
    relaxed = good.replace("## 1. Verdict", "## VERDICT").replace("## 6. Per-Label Breakdown",
                                                                  "## 6) per-label breakdown")
    assert check(write_rca_report(folder, relaxed), tmp_path) == ""
    swapped = rca_report(sections=("Threshold Selection", "Verdict") + rr.RCA_SECTIONS[2:])
    assert "sections are out of order" in check(write_rca_report(folder, swapped), tmp_path)


def test_missing_tables_are_reported(tmp_path):
    folder = make_rca_run(tmp_path)
    text = rca_report()
    start = text.index("| | Predicted NO_PASS")
    end = text.index("| Actual PASS")
    text = text[:start] + "TP 57, FN 0, FP 13, TN 911.\n" + text[text.index("\n", end) + 1:]
    out = check(write_rca_report(folder, text), tmp_path)
    assert "Threshold Selection has no confusion-matrix table" in out


@pytest.mark.parametrize("cell,wrong", [("TP", 58), ("FP", 14), ("TN", 910), ("FN", 1)])
def test_each_wrong_confusion_matrix_cell_is_named(tmp_path, cell, wrong):
    folder = make_rca_run(tmp_path)
    right = CM[cell.lower()]
    text = rca_report().replace(f"{cell} {right} |", f"{cell} {wrong} |")
    out = check(write_rca_report(folder, text), tmp_path)
    assert (f"confusion-matrix cell {cell} is {wrong} in Threshold Selection, but metrics.json "
            f"has {cell.lower()}={right}") in out
    # only that cell is reported
    assert out.count("confusion-matrix cell") == 1


def test_swapped_cells_are_caught_although_every_number_appears(tmp_path):
    # the old check looked for each number anywhere in the tables: FP and FN swapped passed
    folder = make_rca_run(tmp_path)
    text = rca_report().replace("FN 0 |", "FN 13 |").replace("FP 13 |", "FP 0 |")
    out = check(write_rca_report(folder, text), tmp_path)
    assert "cell FP is 0" in out and "cell FN is 13" in out


def _matrix(tp, fn, fp, tn, style):
    if style == "bare":
        return ("| | Predicted NO_PASS | Predicted PASS |\n|---|---|---|\n"
                f"| Actual NO_PASS | {tp} | {fn} |\n| Actual PASS | {fp} | {tn} |\n")
    if style == "header":
        return f"| TP | FP | TN | FN |\n|---|---|---|---|\n| {tp} | {fp} | {tn} | {fn} |\n"
    return (f"| Cell | Count |\n|---|---|\n| TP | {tp} |\n| FP | {fp} |\n| TN | {tn} |\n"
            f"| FN | {fn:,} |\n")


@pytest.mark.parametrize("style", ["bare", "header", "rows"])
def test_confusion_matrix_table_styles(tmp_path, style):
    folder = make_rca_run(tmp_path)
    text = rca_report()
    start = text.index("| | Predicted NO_PASS")
    end = text.index("\n", text.index("| Actual PASS")) + 1
    good = text[:start] + _matrix(57, 0, 13, 911, style) + text[end:]
    assert check(write_rca_report(folder, good), tmp_path) == ""
    bad = text[:start] + _matrix(57, 0, 911, 13, style) + text[end:]  # FP and TN swapped
    out = check(write_rca_report(folder, bad), tmp_path)
    assert "cell FP is 911" in out and "cell TN is 13" in out


def test_confusion_matrix_cell_absent(tmp_path):
    folder = make_rca_run(tmp_path)
    text = rca_report().replace("| Actual PASS | FP 13 | TN 911 |", "| Actual PASS | FP 13 | |")
    out = check(write_rca_report(folder, text), tmp_path)
    assert "has no TN cell: write \"TN = 911\"" in out


def test_per_label_counts_must_match_metrics(tmp_path):
    folder = make_rca_run(tmp_path)
    text = rca_report().replace("| BRIDGE | 8 | 0.10 |", "| BRIDGE | 9 | 0.10 |")
    out = check(write_rca_report(folder, text), tmp_path)
    assert "Per-Label Breakdown: BRIDGE Total is 9, but metrics.json per_label['BRIDGE'].total is 8" in out
    # a misclassified column is checked too; escaped underscores and quoted labels resolve
    table = ("| Label | Rows | Misclassified |\n|---|---|---|\n"
             + "".join(f"| {lab.replace('_', chr(92) + '_')} | 8 | {2 if lab == 'TOMBSTONE' else 1} |\n"
                       for lab in LABELS))
    start = text.index("| Label | Total")
    end = text.index("\n\n", start)
    out = check(write_rca_report(folder, text[:start] + table + text[end:]), tmp_path)
    assert "TOMBSTONE Misclassified is 2, but metrics.json per_label['TOMBSTONE'].n_misclassified is 1" in out
    assert "BRIDGE" not in out


def test_threshold_is_read_where_it_is_stated(tmp_path):
    folder = make_rca_run(tmp_path)
    # the right value somewhere else (a score, a curve row) no longer counts as "stated"
    text = rca_report(threshold="0.4300").replace(
        "with precision 0.8143.", f"with precision 0.8143; the lowest defect scores {THRESHOLD}.")
    out = check(write_rca_report(folder, text), tmp_path)
    assert f"Verdict does not state the threshold from threshold.txt ({THRESHOLD}): it gives 0.4300" in out
    # rounding to fewer than 4 decimals, or rounding wrongly, is not the printed value
    for bad in ("0.42", "0.4213"):
        out = check(write_rca_report(folder, rca_report(threshold=bad)), tmp_path)
        assert f"it gives {bad};" in out
    # a "Threshold" table row is a statement too
    text = rca_report().replace(f"Chosen threshold: {THRESHOLD:.4f}", "The operating point:")
    text = text.replace("(sweep, min_recall 1.0).", "(sweep, min_recall 1.0).\n\n| Metric | Value |\n"
                        f"|---|---|\n| Threshold | {THRESHOLD} (sweep) |\n")
    assert check(write_rca_report(folder, text), tmp_path) == ""


def test_degenerate_threshold_below_every_score(tmp_path):
    folder = make_rca_run(tmp_path)
    (folder / "threshold.txt").write_text("-5e-324")
    m = json.loads((folder / "metrics.json").read_text())
    m["threshold"] = -5e-324
    (folder / "metrics.json").write_text(json.dumps(m))
    text = rca_report(threshold="below every score (-5e-324)")
    assert check(write_rca_report(folder, text), tmp_path) == ""
    out = check(write_rca_report(folder, rca_report(threshold="0.0000")), tmp_path)
    assert "does not state the threshold from threshold.txt (-5e-324): it gives 0.0000" in out


def test_missing_label_coverage_comes_from_inference_csv(tmp_path):
    folder = make_rca_run(tmp_path)
    out = check(write_rca_report(folder, rca_report(labels=["PASS", "EXCESS_SOLDER", "MISSING"])), tmp_path)
    assert "misses label(s) `BRIDGE`, `TOMBSTONE`" in out
    assert "inference.csv" in out


def test_label_coverage_falls_back_to_metrics_per_label(tmp_path):
    folder = make_rca_run(tmp_path)
    (folder / "vcn_aoi_spec.yaml").unlink()
    out = check(write_rca_report(folder, rca_report(labels=LABELS[:4])), tmp_path)
    assert "misses label(s) `TOMBSTONE` (from metrics.json per_label)" in out


def test_no_pass_alone_does_not_cover_pass(tmp_path):
    folder = make_rca_run(tmp_path)
    out = check(write_rca_report(folder, rca_report(labels=["NO_PASS"] + LABELS[1:])), tmp_path)
    assert "misses label(s) `PASS`" in out


def _pin(folder: Path, threshold: float) -> None:
    m = json.loads((folder / "metrics.json").read_text())
    m.update(threshold=threshold, threshold_mode="pinned")
    (folder / "metrics.json").write_text(json.dumps(m))


def test_pinned_threshold_needs_no_threshold_file(tmp_path):
    # the container writes threshold.txt only after a sweep; metrics.json holds a pinned one
    folder = make_rca_run(tmp_path)
    _pin(folder, THRESHOLD)
    (folder / "threshold.txt").unlink()
    assert check(write_rca_report(folder, rca_report()), tmp_path) == ""
    out = check(write_rca_report(folder, rca_report(threshold="0.4300")), tmp_path)
    assert f"Verdict does not state the threshold from metrics.json ({THRESHOLD}): it gives 0.4300" in out


def test_pinned_run_ignores_a_stale_threshold_file(tmp_path):
    # a sweep, then a pinned run in the same folder on the container (which removes nothing)
    folder = make_rca_run(tmp_path)
    _pin(folder, 0.5)
    assert check(write_rca_report(folder, rca_report(threshold="0.5000")), tmp_path) == ""


def test_swept_threshold_file_is_required(tmp_path):
    folder = make_rca_run(tmp_path)
    (folder / "threshold.txt").unlink()
    out = check(write_rca_report(folder, rca_report()), tmp_path)
    assert "`threshold.txt` is missing (the threshold was swept)" in out


def test_threshold_mismatch_in_verdict_and_selection(tmp_path):
    folder = make_rca_run(tmp_path)
    out = check(write_rca_report(folder, rca_report(threshold="0.4300")), tmp_path)
    assert f"Verdict does not state the threshold from threshold.txt ({THRESHOLD}): it gives 0.4300" in out
    assert "Threshold Selection does not state the threshold from threshold.txt" in out
    # more decimals than needed are fine
    assert check(write_rca_report(folder, rca_report(threshold="0.42137")), tmp_path) == ""


def test_missing_and_unlinked_images(tmp_path):
    folder = make_rca_run(tmp_path)
    (folder / rr.RCA_IMAGES_DIR / "sample_09.png").unlink()
    out = check(write_rca_report(folder, rca_report()), tmp_path)
    assert "holds 9 image(s), expected 10" in out
    assert "broken link(s): `rca_images/sample_09.png`" in out
    write_png(folder / rr.RCA_IMAGES_DIR / "sample_09.png")
    images = [f"sample_{i:02d}.png" for i in range(8)]
    out = check(write_rca_report(folder, rca_report(images=images, verdicts=["mislabeled"] * 8)), tmp_path)
    assert "not linked from the report: `rca_images/sample_08.png`, `rca_images/sample_09.png`" in out


def test_fewer_spot_check_samples_recorded_by_the_spot_check(tmp_path):
    # A class with fewer than 5 weak samples: spot_check.json says how many were picked.
    folder = make_rca_run(tmp_path)
    for i in (8, 9):
        (folder / rr.RCA_IMAGES_DIR / f"sample_{i:02d}.png").unlink()
    report = rca_report(images=[f"sample_{i:02d}.png" for i in range(8)],
                        verdicts=["edge case"] * 8)
    out = check(write_rca_report(folder, report), tmp_path)
    assert "holds 8 image(s), expected 10" in out
    picked = {"samples": [{"image": f"rca_images/sample_{i:02d}.png"} for i in range(8)]}
    (folder / rr.RCA_IMAGES_DIR / rr.RCA_SPOT_CHECK_JSON).write_text(json.dumps(picked))
    assert check(write_rca_report(folder, report), tmp_path) == ""
    # ... but the record cannot excuse images that are missing from what it lists
    (folder / rr.RCA_IMAGES_DIR / "sample_07.png").unlink()
    assert "holds 7 image(s), expected 8" in check(write_rca_report(folder, report), tmp_path)


def test_empty_verdict_cell(tmp_path):
    folder = make_rca_run(tmp_path)
    verdicts = [rr.VERDICTS[0]] * 10
    verdicts[3] = ""
    verdicts[7] = "looks fine"
    out = check(write_rca_report(folder, rca_report(verdicts=verdicts)), tmp_path)
    assert "row(s) 4, 8 have an empty or unknown Verdict" in out


def test_word_count_limits(tmp_path):
    folder = make_rca_run(tmp_path)
    out = check(write_rca_report(folder, rca_report(filler=40)), tmp_path)
    assert "write at least 1000" in out
    out = check(write_rca_report(folder, rca_report(filler=400)), tmp_path)
    assert "cut it to at most 1800" in out


def test_edit_reads_report_from_disk(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report(threshold="0.9999"))
    rc, out, _ = run_hook("on_report_written.py", write_event(report, tool="Edit"), hook_env(tmp_path))
    assert "does not state the threshold" in feedback(out)
    report.write_text(rca_report())
    rc, out, _ = run_hook("on_report_written.py", write_event(report, tool="MultiEdit"), hook_env(tmp_path))
    assert rc == 0 and out == ""


def test_unreachable_variant_good_and_bad(tmp_path):
    folder = make_unreachable_run(tmp_path)
    assert check(folder / "RCA_Report.md", tmp_path) == ""
    # the full 7-section report is wrong when the KPI is unreachable
    full = rca_report()
    (folder / "RCA_Report.md").write_text(full)
    out = check(folder / "RCA_Report.md", tmp_path)
    assert "section `## 3. Unreachable KPI` is missing" in out
    assert "drop the Visual Spot Check section" in out
    # the section must quote the file, and the actions must say retrain/relabel
    bad = rca_report(sections=rr.RCA_UNREACHABLE_SECTIONS, filler=60).replace(
        "best achievable recall is 0.93", "recall is low").replace("Relabel the mislabeled samples.", "Ship it.")
    (folder / "RCA_Report.md").write_text(bad)
    out = check(folder / "RCA_Report.md", tmp_path)
    assert "does not quote `unreachable_kpi.txt`" in out
    assert "must recommend retraining or relabeling" in out


# ---------------------------------------------------------------- routing cases

def test_good_routing_report_is_quiet(tmp_path):
    folder = make_routing_run(tmp_path)
    assert check(folder / "Routing_Report.md", tmp_path) == ""


def test_routing_problems(tmp_path):
    folder = make_routing_run(tmp_path)
    (folder / "anomalygen_gaps.parquet").write_bytes(b"not parquet at all")
    (folder / "Routing_Report.md").write_text(routing_report(
        per_label=["EXCESS_SOLDER", "MISSING"], dropped="None.",
        sections=tuple(s for s in rr.ROUTING_SECTIONS if s != "Module-Level Summaries")))
    out = check(folder / "Routing_Report.md", tmp_path)
    assert "`anomalygen_gaps.parquet` is not a readable parquet file" in out
    assert "section `## 4. Module-Level Summaries` is missing" in out
    assert "misses label(s) `TOMBSTONE`, `LIFTED_LEAD`" in out
    assert "Dropped Labels must list every label routed to neither module; missing `LIFTED_LEAD`" in out
    (folder / "routing_summary.txt").unlink()
    assert "`routing_summary.txt` is missing" in check(folder / "Routing_Report.md", tmp_path)


def test_routing_without_dropped_labels_must_say_none(tmp_path):
    folder = make_routing_run(tmp_path)
    summary = folder / "routing_summary.txt"
    summary.write_text(summary.read_text().replace("LIFTED_LEAD: 3 (mining=no, anomalygen=no)\n", ""))
    (folder / "Routing_Report.md").write_text(routing_report(dropped="Everything was routed somewhere."))
    assert 'say "none"' in check(folder / "Routing_Report.md", tmp_path)
    (folder / "Routing_Report.md").write_text(routing_report(dropped="None: every label is routed."))
    assert check(folder / "Routing_Report.md", tmp_path) == ""


# ---------------------------------------------------------------- mining cases

def test_good_mining_report_is_quiet(tmp_path):
    folder = make_mining_run(tmp_path)
    assert check(folder / "Mining_Report.md", tmp_path) == ""


def test_mining_encoder_mismatch_and_missing_identity(tmp_path):
    folder = make_mining_run(tmp_path)
    write_embeddings(folder / "source_embeddings.parquet", 30, {**ENCODER, "model": "CLIP", "dim": 8})
    out = check(folder / "Mining_Report.md", tmp_path)
    assert "different encoders (model: target 'SigLIP' vs source 'CLIP'; dim: target 4 vs source 8)" in out
    write_embeddings(folder / "target_embeddings.parquet", 6, None)
    out = check(folder / "Mining_Report.md", tmp_path)
    assert "`target_embeddings.parquet` carries no encoder identity" in out


def test_mining_artifact_and_report_problems(tmp_path):
    folder = make_mining_run(tmp_path)
    write_embeddings(folder / "target_embeddings.parquet", 0)
    pd.DataFrame({"path": ["x"]}).to_parquet(folder / "mined.parquet")
    (folder / "mining_summary.txt").unlink()
    (folder / "Mining_Report.md").write_text(mining_report(
        sections=tuple(s for s in rr.MINING_SECTIONS if s != "Encoder Consistency"), filler=30))
    out = check(folder / "Mining_Report.md", tmp_path)
    assert "`target_embeddings.parquet` has no rows" in out
    assert "`mined.parquet` lacks column(s) filepath" in out
    assert "`mining_summary.txt` is missing" in out
    assert "section `## 3. Encoder Consistency` is missing" in out
    assert "write at least 600" in out


def test_toggle_turns_a_family_off(tmp_path):
    folder = make_rca_run(tmp_path)
    write_rca_report(folder, rca_report(threshold="0.9"))
    assert check(folder / "RCA_Report.md", tmp_path, RCA_HOOKS="0") == ""
    assert not (folder / "rca_config").exists()
    mining = make_mining_run(tmp_path)
    (mining / "mined.parquet").unlink()
    assert check(mining / "Mining_Report.md", tmp_path, MINING_HOOKS="off") == ""
    assert "mined.parquet" in check(mining / "Mining_Report.md", tmp_path, RCA_HOOKS="0")


# ---------------------------------------------------------------- change since last iteration

def _iteration_json(folder: Path) -> None:
    (folder / rr.RCA_ITERATION_JSON).write_text(json.dumps({
        "counts": {"fixed": 17, "regressed": 3, "still_misclassified": 6},
        "before": {"far": 0.2462}, "after": {"far": 0.0513}}))


def _with_iteration(body: str) -> str:
    return rca_report() + f"\n## Change Since Last Iteration\n\n{body}\n"


def test_iteration_section_matching_the_json_passes(tmp_path):
    folder = make_rca_run(tmp_path)
    _iteration_json(folder)
    report = write_rca_report(folder, _with_iteration(
        "17 fixed, 3 regressed, 6 still misclassified; FAR 0.2462 -> 0.0513."))
    assert "Change Since Last Iteration" not in check(report, tmp_path)


@pytest.mark.parametrize("body,wrong", [
    ("18 fixed, 3 regressed, 6 still misclassified; FAR 0.2462 -> 0.0513.", "fixed"),
    ("17 fixed, 3 regressed, 9 still misclassified; FAR 0.2462 -> 0.0513.", "still misclassified"),
    ("17 fixed, 3 regressed, 6 still misclassified; FAR 0.2462 -> 0.0600.", "FAR after"),
])
def test_iteration_section_with_a_wrong_number_is_named(tmp_path, body, wrong):
    folder = make_rca_run(tmp_path)
    _iteration_json(folder)
    out = check(write_rca_report(folder, _with_iteration(body)), tmp_path)
    assert f"does not state the {wrong}" in out or f"number of {wrong}" in out, out


def test_iteration_section_without_the_json_asks_for_the_script(tmp_path):
    folder = make_rca_run(tmp_path)
    out = check(write_rca_report(folder, _with_iteration("17 fixed.")), tmp_path)
    assert "compare_iterations.py" in out
