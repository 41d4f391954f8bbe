"""compare_iterations: two synthetic iterations with planted fixed / regressed / still-wrong samples.

Both results folders are written by the real gap analysis (``data_services.py gap_analysis
vcn_aoi``, local backend), so metrics.json and its ``inference_csv`` are the real thing.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tao_aoi.cli import run_cli
from tao_aoi.data_services.cli import main as ds_main
from tao_aoi.iteration_compare import (JSON_NAME, MD_NAME, ONLY_IN_ONE_NAME, OUTPUT_NAMES,
                                       PLOT_NAME, SECTION_TITLE)
from tao_aoi.iteration_compare import main as compare_main
from conftest import run_script, write_inference_csv, write_train_yaml

T_BEFORE, T_AFTER = 0.5, 0.6  # pinned, different: each run is judged by its own threshold

# (input_path, object_name, label before, score before, label after, score after, planted)
PLANTED = [
    ("b1/c", "ok1", "PASS", 0.10, "PASS", 0.12, None),
    ("b1/c", "ok2", "SHORT", 0.90, "SHORT", 0.95, None),
    ("b1/c", "ok3", "MISSING", 0.70, "MISSING", 0.75, None),
    ("b2/c", "ok4", " pass", 0.20, "Pass ", 0.30, None),       # label case/space: still PASS
    ("b2/c", "fx1", "PASS", 0.70, "PASS", 0.20, "fixed"),
    ("b2/c", "fx2", "SHORT", 0.30, "SHORT", 0.80, "fixed"),
    ("b2/c", "fx3", "PASS", 0.55, "PASS", 0.55, "fixed"),      # same score: fixed by t 0.5 -> 0.6
    ("b3/c", "fx4", "PASS", 0.80, "short", 0.80, "fixed"),     # relabeled PASS -> SHORT
    ("b3/c", "rg1", "PASS", 0.20, "PASS", 0.90, "regressed"),
    ("b3/c", "rg2", "MISSING", 0.80, "MISSING", 0.40, "regressed"),
    ("b3/c", "rg3", "MISSING", 0.58, "MISSING", 0.58, "regressed"),  # same score, t moved up
    ("b4/c", "st1", "PASS", 0.90, "PASS", 0.95, "still_misclassified"),
    ("b4/c", "st2", "SHORT", 0.10, "SHORT", 0.20, "still_misclassified"),
    ("b4/c", "st3", "missing", 0.50, "MISSING", 0.60, "still_misclassified"),  # exactly at t
]
ONLY_BEFORE = [("b9/c", "gone1", "PASS", 0.3), ("b9/c", "gone2", "SHORT", 0.2)]
ONLY_AFTER = [("b8/c", "new1", "SHORT", 0.9), ("b8/c", "new2", "PASS", 0.7), ("b8/c", "new3", "PASS", 0.1)]


def _csv_rows(side: str):
    rows = []
    for ip, on, lb, sb, la, sa, _ in PLANTED:
        lab, s = (lb, sb) if side == "before" else (la, sa)
        rows.append({"input_path": ip, "object_name": on, "label": lab, "siamese_score": s})
    extra = ONLY_BEFORE if side == "before" else ONLY_AFTER
    rows += [{"input_path": ip, "object_name": on, "label": lab, "siamese_score": s}
             for ip, on, lab, s in extra]
    return rows


def gap_analysis(tmp_path: Path, name: str, rows, threshold=None, score_col="siamese_score",
                 capsys=None) -> Path:
    """Run the real gap analysis on ``rows``; returns its results folder."""
    exp = tmp_path / name
    if score_col != "siamese_score":
        rows = [{**{k: v for k, v in r.items() if k != "siamese_score"},
                 score_col: r["siamese_score"]} for r in rows]
    csv_path = write_inference_csv(exp / "inference" / "inference.csv", rows)
    train = write_train_yaml(exp / "train.yaml")
    results = exp / "rca_results" / "2025-01-01_000000"
    spec = exp / "gap_spec.yaml"
    doc = {"inference_results_dir": str(csv_path.parent), "train_config": str(train),
           "kpi_media_path": str(tmp_path / "media"), "results_dir": str(results),
           "top_k_per_label": 3}
    if threshold is not None:
        doc["threshold"] = threshold
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    code = run_cli(ds_main, "data_services.py", ["gap_analysis", "vcn_aoi", "-e", str(spec)])
    if capsys is not None:
        capsys.readouterr()
    assert code == 0
    return results


@pytest.fixture
def iterations(tmp_path, capsys):
    before = gap_analysis(tmp_path, "exp_v1", _csv_rows("before"), T_BEFORE, capsys=capsys)
    after = gap_analysis(tmp_path, "exp_v2", _csv_rows("after"), T_AFTER, capsys=capsys)
    return before, after


def compare(capsys, *argv):
    code = run_cli(compare_main, "compare_iterations.py", [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def brute_metrics(rows, t):
    tp = fp = tn = fn = 0
    for r in rows:
        pos = str(r["label"]).strip().upper() != "PASS"
        flag = float(r["siamese_score"]) > t
        tp += pos and flag
        fp += (not pos) and flag
        tn += (not pos) and not flag
        fn += pos and not flag
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2.0 * prec * rec / (prec + rec) if prec + rec else 0.0
    far = fp / (fp + tn) if fp + tn else 0.0
    return {"threshold": t, "recall": rec, "far": far, "f1": f1, "precision": prec,
            "confusion_matrix": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}}


def brute_buckets(before_rows, after_rows, tb, ta):
    def wrong(r, t):
        return (float(r["siamese_score"]) > t) != (str(r["label"]).strip().upper() != "PASS")
    b = {(r["input_path"], r["object_name"]): r for r in before_rows}
    out = {"fixed": set(), "regressed": set(), "still_misclassified": set()}
    for r in after_rows:
        k = (r["input_path"], r["object_name"])
        if k not in b:
            continue
        wb, wa = wrong(b[k], tb), wrong(r, ta)
        if wb and wa:
            out["still_misclassified"].add(k)
        elif wb:
            out["fixed"].add(k)
        elif wa:
            out["regressed"].add(k)
    return out


def keys(entries):
    return {(e["input_path"], e["object_name"]) for e in entries}


def test_planted_samples_land_in_exactly_their_bucket(iterations, capsys):
    before, after = iterations
    code, out, err = compare(capsys, before, after)
    assert code == 0, err
    assert sorted(p.name for p in after.iterdir() if p.name in OUTPUT_NAMES) == sorted(OUTPUT_NAMES)
    r = json.loads((after / JSON_NAME).read_text())
    for bucket in ("fixed", "regressed", "still_misclassified"):
        planted = {(ip, on) for ip, on, *_, p in PLANTED if p == bucket}
        assert keys(r[bucket]) == planted, bucket
        assert r["counts"][bucket] == len(planted)
        for e in r[bucket]:
            assert set(e) == {"input_path", "object_name", "label", "score_before", "score_after"}
            row = next(p for p in PLANTED if (p[0], p[1]) == (e["input_path"], e["object_name"]))
            assert (e["label"], e["score_before"], e["score_after"]) == (row[4], row[3], row[5])
    assert r["counts"]["shared"] == len(PLANTED)
    assert r["relabeled"] == [{"input_path": "b3/c", "object_name": "fx4",
                               "label_before": "PASS", "label_after": "short"}]
    # a one-line summary on stdout, the written paths
    assert "fixed 4, regressed 3, still misclassified 3" in out
    assert str(after / JSON_NAME) in out


def test_metrics_match_a_brute_force_recomputation_and_the_gap_analysis(iterations, capsys):
    before, after = iterations
    assert compare(capsys, before, after)[0] == 0
    r = json.loads((after / JSON_NAME).read_text())
    rb, ra = _csv_rows("before"), _csv_rows("after")
    exp_b, exp_a = brute_metrics(rb, T_BEFORE), brute_metrics(ra, T_AFTER)
    exp_old = brute_metrics(ra, T_BEFORE)
    for got, exp in ((r["before"], exp_b), (r["after"], exp_a),
                     (r["after_at_before_threshold"], exp_old)):
        assert got["confusion_matrix"] == exp["confusion_matrix"]
        for k in ("threshold", "recall", "far", "f1", "precision"):
            assert got[k] == pytest.approx(exp[k], abs=1e-12), k
    # the same numbers the gap analysis itself wrote
    for folder, got in ((before, r["before"]), (after, r["after"])):
        m = json.loads((folder / "metrics.json").read_text())
        assert got["confusion_matrix"] == m["confusion_matrix"]
        for k in ("threshold", "recall", "far", "f1", "precision"):
            assert got[k] == m[k], k
    for k in ("recall", "far", "f1", "precision"):
        assert r["delta"][k] == pytest.approx(exp_a[k] - exp_b[k], abs=1e-12)
    # shared-sample metrics only use the samples in both CSVs
    shared = {(p[0], p[1]) for p in PLANTED}
    sb = brute_metrics([x for x in rb if (x["input_path"], x["object_name"]) in shared], T_BEFORE)
    assert r["on_shared_samples"]["before"]["confusion_matrix"] == sb["confusion_matrix"]
    # per label (normalised): misclassified counts before/after, and the bucket moves
    pl = r["per_label"]
    assert set(pl) == {"PASS", "SHORT", "MISSING"}

    def wrong_count(rows, t, name):
        return sum(1 for x in rows if str(x["label"]).strip().upper() == name
                   and (x["siamese_score"] > t) != (name != "PASS"))
    for name in pl:
        assert pl[name]["misclassified_before"] == wrong_count(rb, T_BEFORE, name)
        assert pl[name]["misclassified_after"] == wrong_count(ra, T_AFTER, name)
        assert pl[name]["delta_misclassified"] == (pl[name]["misclassified_after"]
                                                   - pl[name]["misclassified_before"])
    assert pl["SHORT"]["fixed"] == 2 and pl["MISSING"]["regressed"] == 2


def test_randomised_iterations_match_brute_force(tmp_path, capsys):
    rng = random.Random(12)
    labels = ["PASS", "PASS", "pass ", "SHORT", "MISSING", "Bridge"]
    before_rows, after_rows = [], []
    for i in range(300):
        lab = rng.choice(labels)
        sb = round(rng.random(), 3)
        sa = round(min(1.0, max(0.0, sb + rng.gauss(0, 0.25))), 3)
        if i % 37 != 0:
            before_rows.append({"input_path": f"p{i % 7}", "object_name": f"o{i}", "label": lab,
                                "siamese_score": sb})
        if i % 41 != 1:
            after_rows.append({"input_path": f"p{i % 7}", "object_name": f"o{i}", "label": lab,
                               "siamese_score": sa})
    rng.shuffle(after_rows)
    before = gap_analysis(tmp_path, "r1", before_rows, None, capsys=capsys)  # swept threshold
    after = gap_analysis(tmp_path, "r2", after_rows, None, capsys=capsys)
    tb = json.loads((before / "metrics.json").read_text())["threshold"]
    ta = json.loads((after / "metrics.json").read_text())["threshold"]
    assert compare(capsys, before, after, "--out", tmp_path / "cmp")[0] == 0
    r = json.loads((tmp_path / "cmp" / JSON_NAME).read_text())
    exp = brute_buckets(before_rows, after_rows, tb, ta)
    for bucket, want in exp.items():
        assert keys(r[bucket]) == want
        assert len(r[bucket]) == len(want)  # no duplicates
    for got, want in ((r["before"], brute_metrics(before_rows, tb)),
                      (r["after"], brute_metrics(after_rows, ta)),
                      (r["after_at_before_threshold"], brute_metrics(after_rows, tb))):
        assert got["confusion_matrix"] == want["confusion_matrix"]
        for k in ("recall", "far", "f1", "precision"):
            assert got[k] == pytest.approx(want[k], abs=1e-12)
    bk = {(x["input_path"], x["object_name"]) for x in before_rows}
    ak = {(x["input_path"], x["object_name"]) for x in after_rows}
    assert r["counts"]["only_in_before"] == len(bk - ak)
    assert r["counts"]["only_in_after"] == len(ak - bk)
    assert r["counts"]["shared"] == len(ak & bk)


def test_samples_in_one_csv_only_are_counted_and_listed(iterations, capsys):
    before, after = iterations
    assert compare(capsys, before, after)[0] == 0
    r = json.loads((after / JSON_NAME).read_text())
    assert r["counts"]["only_in_before"] == len(ONLY_BEFORE)
    assert r["counts"]["only_in_after"] == len(ONLY_AFTER)
    with open(after / ONLY_IN_ONE_NAME, newline="", encoding="utf-8") as fh:
        listed = list(csv.DictReader(fh))
    assert {(x["side"], x["input_path"], x["object_name"]) for x in listed} == (
        {("before", ip, on) for ip, on, *_ in ONLY_BEFORE}
        | {("after", ip, on) for ip, on, *_ in ONLY_AFTER})
    new2 = next(x for x in listed if x["object_name"] == "new2")
    assert new2["misclassified"] == "True" and float(new2["score"]) == 0.7


def test_markdown_section_and_plot(iterations, capsys):
    from PIL import Image

    before, after = iterations
    assert compare(capsys, before, after)[0] == 0
    md = (after / MD_NAME).read_text()
    r = json.loads((after / JSON_NAME).read_text())
    assert md.startswith(f"## {SECTION_TITLE}\n")
    assert "**4 fixed**, **3 regressed** and **3 still misclassified**" in md
    # numbers in the section are the JSON's
    assert f"| recall | {r['before']['recall']:.4f} | {r['after']['recall']:.4f} |" in md
    assert f"| far | {r['before']['far']:.4f} | {r['after']['far']:.4f} | " \
           f"{r['after_at_before_threshold']['far']:.4f} |" in md
    assert f"![Score before vs after per sample]({PLOT_NAME})" in md
    with Image.open(after / PLOT_NAME) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300


def test_routed_samples_from_last_rounds_routing(iterations, capsys, tmp_path):
    before, after = iterations
    route = before / "routing_results" / "2025-01-01_010000"
    route.mkdir(parents=True)
    routed = [("b2/c", "fx2"), ("b4/c", "st2"), ("b3/c", "rg2"), ("b9/c", "gone2")]
    rows = [(ip, on, light) for ip, on in routed for light in ("Coaxial", "Diffuse")]
    pq.write_table(pa.table({"filepath": [f"/m/{ip}/{on}_{li}.jpg" for ip, on, li in rows],
                             "label": ["SHORT"] * len(rows),
                             "input_path": [ip for ip, _, _ in rows],
                             "object_name": [on for _, on, _ in rows]}),
                   route / "mining_gaps.parquet")
    assert compare(capsys, before, after)[0] == 0
    rt = json.loads((after / JSON_NAME).read_text())["routed_to_mining"]
    assert rt["available"] and rt["source"].endswith("mining_gaps.parquet")
    assert (rt["routed"], rt["in_both"], rt["not_in_both"]) == (4, 3, 1)
    assert (rt["fixed"], rt["regressed"], rt["still_misclassified"]) == (1, 1, 1)
    assert {s["object_name"]: s["status"] for s in rt["samples"]} == {
        "fx2": "fixed", "st2": "still_misclassified", "rg2": "regressed"}
    # without routing results it says so instead of guessing
    assert compare(capsys, before, after, "--routed", route / "missing.parquet")[0] == 2


def test_no_routing_results_is_reported_not_guessed(iterations, capsys):
    before, after = iterations
    assert compare(capsys, before, after)[0] == 0
    rt = json.loads((after / JSON_NAME).read_text())["routed_to_mining"]
    assert rt["available"] is False and "routing_results" in rt["reason"]
    assert "Samples routed to mining last round: not known" in (after / MD_NAME).read_text()


def test_output_score_csv_is_read_like_the_gap_analysis_reads_it(tmp_path, capsys):
    before = gap_analysis(tmp_path, "a", _csv_rows("before"), T_BEFORE, capsys=capsys)
    after = gap_analysis(tmp_path, "b", _csv_rows("after"), T_AFTER, score_col="output_score",
                         capsys=capsys)
    code, _, err = compare(capsys, before, after)
    assert code == 0, err
    r = json.loads((after / JSON_NAME).read_text())
    assert r["counts"]["fixed"] == 4


# ----------------------------------------------------------------------------- bad inputs

def _outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} & (set(OUTPUT_NAMES) | {"cmp"}) if folder.exists() else set()


def refused(capsys, *argv):
    code, _, err = compare(capsys, *argv)
    return code, err


def _one_line_error(code, err, needle):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compare_iterations.py: error: "), err
    assert needle in lines[0], lines[0]


def test_a_folder_that_is_not_a_gap_analysis_result_is_refused(iterations, capsys, tmp_path):
    before, after = iterations
    not_rca = tmp_path / "exp_v1" / "inference"  # holds inference.csv, not a results folder
    code, _, err = compare(capsys, not_rca, after)
    _one_line_error(code, err, "is not a gap-analysis result")
    code, _, err = compare(capsys, before, tmp_path / "nowhere")
    _one_line_error(code, err, "is not a folder")
    assert _outputs(after) == set()


def test_different_experiments_with_no_shared_samples_are_refused(iterations, capsys, tmp_path):
    before, _ = iterations
    other = gap_analysis(tmp_path, "other", [
        {"input_path": "z/c", "object_name": f"q{i}", "label": lab, "siamese_score": s}
        for i, (lab, s) in enumerate([("PASS", 0.1), ("SHORT", 0.9), ("PASS", 0.4)])],
        capsys=capsys)
    code, _, err = compare(capsys, before, other)
    _one_line_error(code, err, "no sample (input_path, object_name) is in both")
    assert _outputs(other) == set()


def test_duplicate_sample_keys_are_refused(iterations, capsys, tmp_path):
    before, _ = iterations
    rows = _csv_rows("after")
    rows.append(dict(rows[0], siamese_score=0.33))
    dup = gap_analysis(tmp_path, "dup", rows, T_AFTER, capsys=capsys)
    code, _, err = compare(capsys, before, dup)
    _one_line_error(code, err, "repeats 1 (input_path, object_name) key(s): b1/c/ok1")
    assert _outputs(dup) == set()


def test_a_csv_changed_since_its_run_is_refused(iterations, capsys):
    before, after = iterations
    csv_path = Path(json.loads((after / "metrics.json").read_text())["inference_csv"])
    rows = _csv_rows("after")
    rows[0]["siamese_score"] = 0.99  # a PASS row now flagged: confusion matrix differs
    write_inference_csv(csv_path, rows)
    code, _, err = compare(capsys, before, after)
    _one_line_error(code, err, "the CSV changed since that run")
    csv_path.unlink()
    code, _, err = compare(capsys, before, after)
    _one_line_error(code, err, "does not exist (moved? pass --after-csv PATH)")
    assert _outputs(after) == set()


def test_other_bad_invocations(iterations, capsys, tmp_path):
    before, after = iterations
    _one_line_error(*refused(capsys, before, before), "same folder")
    _one_line_error(*refused(capsys, before), "the following arguments are required")
    (tmp_path / "afile").write_text("x")
    _one_line_error(*refused(capsys, before, after, "--out", tmp_path / "afile"),
                    "exists and is not a folder")
    (before / "metrics.json").write_text("{not json")
    _one_line_error(*refused(capsys, before, after), "is not readable JSON")
    assert _outputs(after) == set()


def test_an_unreachable_run_is_refused(iterations, capsys, tmp_path):
    _, after = iterations
    rows = [{"input_path": "b1/c", "object_name": "ok1", "label": "PASS", "siamese_score": 0.1}]
    exp = tmp_path / "unr"
    csv_path = write_inference_csv(exp / "inference" / "inference.csv", rows)
    spec = exp / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "inference_results_dir": str(csv_path.parent), "train_config": str(write_train_yaml(exp / "t.yaml")),
        "kpi_media_path": "", "results_dir": str(exp / "rca")}))
    assert run_cli(ds_main, "data_services.py", ["gap_analysis", "vcn_aoi", "-e", str(spec)]) == 1
    capsys.readouterr()
    _one_line_error(*refused(capsys, exp / "rca", after), "unreachable_kpi.txt")


def test_the_script_runs_as_a_command(iterations, tmp_path):
    before, after = iterations
    out = tmp_path / "cmp_out"
    res = run_script("compare_iterations.py", before, after, "--out", out)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)
    res = run_script("compare_iterations.py", before, tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
