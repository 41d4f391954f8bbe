"""`data_services.py gap_analysis vcn_aoi` end to end on a small experiment folder on disk."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tao_aoi.cli import run_cli
from tao_aoi.data_services.cli import main
from tao_aoi.hooks.report_rules import (MARK_MISSING_IMAGES, MARK_UNREACHABLE, RCA_ARTIFACTS,
                                        RCA_UNREACHABLE_FILE, THRESHOLD_FILE)
from conftest import run_script, write_train_yaml

# the container's four columns first, then this bank's
GAP_COLUMNS = ["filepath", "label", "siamese_score", "weakness", "input_path", "object_name",
               "lighting", "misclassified"]
SWEEP_ARTIFACTS = sorted([*RCA_ARTIFACTS, THRESHOLD_FILE])  # threshold.txt only after a sweep

# PASS 0.1 0.2 0.3 0.6 ; NO_PASS (SHORT 0.5 0.7 0.9, MISSING 0.4 0.8). At recall 1 the best-F1
# threshold is 0.3 (tp 5, fp 1, tn 3, fn 0); the PASS row at 0.6 is the only misclassified one.
# Object names are not numeric-looking: the container's pd.read_csv would turn "001" into 1.
ROWS = [
    ("b1/c", "s001", "PASS", 0.1), ("b1/c", "s002", "PASS", 0.2), ("b2/c", "s003", "PASS", 0.3),
    ("b2/c", "s004", "PASS", 0.6), ("b1/c", "s005", "SHORT", 0.5), ("b1/c", "s006", "SHORT", 0.7),
    ("b2/c", "s007", "SHORT", 0.9), ("b2/c", "s008", "MISSING", 0.4), ("b3/c", "s009", "MISSING", 0.8),
]


def rows(extra=True):
    out = []
    for i, (ip, on, lab, s) in enumerate(ROWS):
        r = {"input_path": ip, "object_name": on, "label": lab, "siamese_score": s}
        if extra:
            r["camera"] = f"cam{i % 2}"
        out.append(r)
    return out


def spec_for(exp, path: Path, **values) -> Path:
    doc = {"inference_results_dir": str(exp["inference_dir"]), "train_config": str(exp["train"]),
           "kpi_media_path": str(exp["media"]), "results_dir": str(exp["results"])}
    doc.update(values)
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def call(capsys, *argv):
    code = run_cli(main, "data_services.py", list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_whole_command_writes_every_artifact(vcn_experiment, tmp_path):
    exp = vcn_experiment(rows(), images_for=3)
    spec = spec_for(exp, tmp_path / "spec.yaml", top_k_per_label="???")
    env = dict(os.environ, DS_BACKEND_REASON="no docker on this host")
    res = run_script("data_services.py", "gap_analysis", "vcn_aoi", "-e", spec, "top_k_per_label=2",
                     env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "backend: local (no docker on this host)"
    assert "threshold: 0.3 " in res.stdout
    assert f"{MARK_MISSING_IMAGES} 15 of 18 expanded filepaths" in res.stdout
    assert "Total weak samples kept: 6" in res.stdout
    out = exp["results"]
    assert sorted(p.name for p in out.iterdir()) == SWEEP_ARTIFACTS

    assert (out / "threshold.txt").read_text() == "0.3"  # the container's str(t), no newline
    m = json.loads((out / "metrics.json").read_text())
    assert m["threshold"] == 0.3 and m["threshold_mode"] == "sweep" and m["selection_mode"] == "top_k"
    assert m["confusion_matrix"] == {"tp": 5, "fp": 1, "tn": 3, "fn": 0}
    assert m["precision"] == pytest.approx(5 / 6) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(10 / 11) and m["far"] == pytest.approx(0.25)
    assert (m["n_rows"], m["n_pass"], m["n_no_pass"]) == (9, 4, 5)
    assert m["n_candidates"] == 10 and m["n_candidates_meeting_recall"] == 4
    assert m["top_k_per_label"] == 2 and m["min_recall"] == 1.0
    assert (m["kept_rows"], m["expanded_rows"]) == (6, 18)
    # YAML key order of input_map (the fixture lists Diffuse first), not the index values
    assert m["lightings"] == ["Diffuse", "Coaxial", "Side"] and m["image_ext"] == ".jpg"
    assert m["missing_images"] == 15  # only s003 of the kept rows has images
    assert m["per_label"]["PASS"]["total"] == 4 and m["per_label"]["PASS"]["n_misclassified"] == 1
    assert m["per_label"]["PASS"]["max_weakness"] == pytest.approx(0.3)
    assert m["per_label"]["SHORT"]["median_weakness"] == pytest.approx(0.3 - 0.7)
    assert m["per_label"]["MISSING"]["mean_weakness"] == pytest.approx(0.3 - 0.6)

    table = pq.read_table(out / "kpi_gaps.parquet")
    assert table.column_names == GAP_COLUMNS + ["camera"]
    df = table.to_pandas()
    assert len(df) == 18
    assert list(df["weakness"]) == sorted(df["weakness"], reverse=True)
    # top 2 per label: PASS s004 (0.3) and s003 (0); MISSING s008, s009; SHORT s005, s006
    firsts = df[df["lighting"] == "Diffuse"]
    assert list(firsts["object_name"]) == ["s004", "s003", "s008", "s005", "s006", "s009"]
    assert list(df["lighting"][:3]) == ["Diffuse", "Coaxial", "Side"]
    assert df["filepath"][0] == f"{exp['media']}/b2/c/s004_Diffuse.jpg"
    assert df["misclassified"].tolist()[:3] == [True] * 3 and not df["misclassified"][3:].any()
    assert df["camera"][0] == "cam1"

    # the container's format, groups in the order they first appear in the sorted rows
    assert (out / "weak_samples_breakdown.txt").read_text() == (
        "Weak samples breakdown by label (threshold=0.3, top_k_per_label=2)\n"
        "Total KPI samples: 9\nTotal weak samples kept: 6\n\n"
        "  PASS: 2 (33.3%) \u2014 1 misclassified, 1 marginal\n"
        "  MISSING: 2 (33.3%) \u2014 0 misclassified, 2 marginal\n"
        "  SHORT: 2 (33.3%) \u2014 0 misclassified, 2 marginal\n")


@pytest.mark.parametrize("value", ["null", "0", "-1"])
def test_top_k_has_no_off_value_and_is_refused(vcn_experiment, tmp_path, capsys, value):
    # the old wrong-side mode (top_k_per_label null/0) is gone: the container has no "off"
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, out, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, f"top_k_per_label={value}")
    assert code == 2 and "top_k_per_label" in err and len(err.strip().splitlines()) == 1
    assert not exp["results"].exists()


def test_pinned_threshold_below_target_warns_and_still_writes(vcn_experiment, tmp_path, capsys):
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, out, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, "threshold=0.5")
    # the container uses a pinned threshold as given: no recall check, exit 0
    assert code == 0 and "recall 0.6" in out.replace("0.600000", "0.6") and err == ""
    m = json.loads((exp["results"] / "metrics.json").read_text())
    assert m["threshold_mode"] == "pinned" and m["recall_target_met"] is False
    assert m["threshold"] == 0.5
    assert m["confusion_matrix"] == {"tp": 3, "fp": 1, "tn": 3, "fn": 2}
    # and writes no threshold.txt (the container writes it only after a sweep)
    assert sorted(p.name for p in exp["results"].iterdir()) == sorted(RCA_ARTIFACTS)
    assert (exp["results"] / "weak_samples_breakdown.txt").read_text().startswith(
        "Weak samples breakdown by label (threshold=0.5, top_k_per_label=50)\n")
    df = pq.read_table(exp["results"] / "kpi_gaps.parquet").to_pandas()
    on_line = df[(df["object_name"] == "s005") & (df["lighting"] == "Coaxial")].iloc[0]
    assert on_line["weakness"] == 0.0 and bool(on_line["misclassified"])  # NO_PASS exactly at t


def test_pinned_run_after_a_sweep_removes_the_stale_threshold_file(vcn_experiment, tmp_path, capsys):
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml")
    assert call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)[0] == 0
    assert sorted(p.name for p in exp["results"].iterdir()) == SWEEP_ARTIFACTS
    assert call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, "threshold=0")[0] == 0
    assert sorted(p.name for p in exp["results"].iterdir()) == sorted(RCA_ARTIFACTS)


def test_min_recall_zero_and_input_map_list_are_accepted_like_the_container(vcn_experiment,
                                                                            tmp_path, capsys):
    exp = vcn_experiment(rows())
    exp["train"].write_text("dataset:\n  classify:\n    input_map: [Side, Top]\n    image_ext: .png\n")
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, _, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, "min_recall=0",
                        "top_k_per_label=1")
    assert code == 0, err
    m = json.loads((exp["results"] / "metrics.json").read_text())
    assert m["min_recall"] == 0.0 and m["lightings"] == ["Side", "Top"] and m["image_ext"] == ".png"
    df = pq.read_table(exp["results"] / "kpi_gaps.parquet").to_pandas()
    assert list(df["lighting"][:2]) == ["Side", "Top"] and df["filepath"][0].endswith("_Side.png")


def test_cfg_job_prints_resolved_yaml_with_aliases_and_overrides(vcn_experiment, tmp_path, capsys):
    exp = vcn_experiment(rows())
    spec = tmp_path / "old.yaml"
    spec.write_text(yaml.safe_dump({"inference_csv": str(exp["inference_dir"]), "train_config": "t.yaml",
                                    "kpi_media_path": "???", "output_dir": "/x", "min_recall": 0.5}))
    code, out, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, "--cfg=job", "min_recall=1",
                          "top_k_per_label=7", "output_dir=2024_01_01")
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg == {"inference_results_dir": str(exp["inference_dir"]), "train_config": "t.yaml",
                   "kpi_media_path": "???", "results_dir": "2024_01_01", "min_recall": 1.0,
                   "top_k_per_label": 7, "threshold": -1.0}
    assert "'inference_csv'" in err and "'output_dir'" in err and "old name" in err


def test_missing_mandatory_value_is_named(vcn_experiment, tmp_path, capsys):
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml", kpi_media_path="???")
    code, _, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)
    assert code == 2 and "kpi_media_path" in err and "???" in err
    assert not exp["results"].exists()


@pytest.mark.parametrize("argv, needle", [
    (["gap_analysis", "vcn_aoi"], "-e <spec.yaml> is required"),
    (["gap_analysis", "nope", "-e", "s.yaml"], "valid: vcn_aoi"),
    (["nope", "vcn_aoi"], "valid categories: embedding, gap_analysis, tmm"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "bogus=1"], "valid keys: inference_results_dir"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "min_recall=-0.1"], "must be in [0, 1]"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "min_recall=1.5"], "must be in [0, 1]"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "top_k_per_label=0"], "must be in [1, inf)"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "top_k_per_label=2.5"], "top_k_per_label: expected an integer"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "top_k_per_label=abc"], "top_k_per_label: expected an integer"),
    (["gap_analysis", "vcn_aoi", "-e", "{spec}", "threshold=high"], "threshold: expected a number"),
])
def test_usage_errors(vcn_experiment, tmp_path, capsys, argv, needle):
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, _, err = call(capsys, *[a.format(spec=spec) for a in argv])
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not exp["results"].exists()


def test_help_lists_actions_and_keys_with_defaults(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0 and "gap_analysis vcn_aoi" in out and "tmm nearest_neighbors" in out
    code, out, _ = call(capsys, "gap_analysis", "vcn_aoi", "--help")
    assert code == 0
    assert "top_k_per_label (an integer; default 50)" in out
    assert "kpi_media_path (a string; default '')" in out
    assert "min_recall (a number; default 1.0)" in out and "inference_csv -> inference_results_dir" in out


# ----------------------------------------------------------------------------- bad input

def _rewrite_csv(exp, text):
    exp["csv"].write_text(text, encoding="utf-8")


def _csv_text(score_of=None, label_of=None):
    lines = ["input_path,object_name,label,siamese_score"]
    for i, (ip, on, lab, s) in enumerate(ROWS):
        s = score_of.get(i, s) if score_of else s
        lab = label_of.get(i, lab) if label_of else lab
        lines.append(f"{ip},{on},{lab},{s}")
    return "\n".join(lines) + "\n"


BAD_INPUTS = {
    "missing inference dir": (lambda e: None, ["inference_results_dir={exp}/nowhere"], "does not exist"),
    "no csv in dir": (lambda e: e["csv"].unlink(), [], "no inference.csv directly in"),
    "experiment dir instead": (lambda e: None, ["inference_results_dir={exp}"],
                               "; found one in"),
    "csv path given": (lambda e: None, ["inference_results_dir={exp}/inference/inference.csv"],
                       "pass the directory that holds inference.csv"),
    "missing columns": (lambda e: _rewrite_csv(e, "input_path,label\na,PASS\n"), [],
                        "lacks required column(s) object_name, siamese_score"),
    "zero-byte csv": (lambda e: _rewrite_csv(e, ""), [], "is empty"),
    "header only": (lambda e: _rewrite_csv(e, "input_path,object_name,label,siamese_score\n"), [],
                    "has a header and no rows"),
    "non-numeric score": (lambda e: _rewrite_csv(e, _csv_text({2: "abc", 5: "x"})), [],
                          "siamese_score is not a number on 2 row(s)"),
    "nan score": (lambda e: _rewrite_csv(e, _csv_text({0: "nan", 3: ""})), [], "lines 2, 5"),
    "infinite score": (lambda e: _rewrite_csv(e, _csv_text({8: "inf"})), [], "line 10"),
    "empty label": (lambda e: _rewrite_csv(e, _csv_text(label_of={1: "", 4: "  "})), [],
                    "label is empty on 1 row(s)"),
    "blank label": (lambda e: _rewrite_csv(e, _csv_text(label_of={1: " ", 4: "  "})), [],
                    "label is blank on 2 row(s)"),
    "train yaml missing": (lambda e: e["train"].unlink(), [], "train_config not found"),
    "no input_map": (lambda e: e["train"].write_text("dataset:\n  classify:\n    image_ext: .jpg\n"), [],
                     "dataset.classify.input_map must be a non-empty mapping"),
    "empty input_map": (lambda e: write_train_yaml(e["train"], input_map={}), [],
                        "input_map must be a non-empty mapping"),
    "input_map scalar": (lambda e: e["train"].write_text(
        "dataset:\n  classify:\n    input_map: abc\n    image_ext: .jpg\n"), [], "non-empty mapping"),
    "no image_ext": (lambda e: e["train"].write_text(
        "dataset:\n  classify:\n    input_map: {A: 0}\n"), [], "dataset.classify.image_ext"),
    "min_recall negative": (lambda e: None, ["min_recall=-0.5"], "min_recall"),
    "top_k zero": (lambda e: None, ["top_k_per_label=0"], "top_k_per_label"),
    "top_k null": (lambda e: None, ["top_k_per_label=null"], "top_k_per_label"),
    "top_k float": (lambda e: None, ["top_k_per_label=2.5"], "top_k_per_label"),
    "top_k text": (lambda e: None, ["top_k_per_label=abc"], "top_k_per_label"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_writes_nothing_and_keeps_previous_artifacts(vcn_experiment, tmp_path, capsys, case):
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, _, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)  # an earlier good run
    assert code == 0, err
    before = snapshot(exp["results"])
    assert sorted(before) == SWEEP_ARTIFACTS
    breaker, overrides, needle = BAD_INPUTS[case]
    breaker(exp)
    code, out, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec,
                          *[o.format(exp=exp["exp"]) for o in overrides])
    assert code == 2, (out, err)
    assert needle in err and len(err.strip().splitlines()) == 1
    assert snapshot(exp["results"]) == before
    # and into a fresh results_dir: nothing is created at all
    fresh = tmp_path / "fresh"
    code, _, _ = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, f"results_dir={fresh}",
                      *[o.format(exp=exp["exp"]) for o in overrides])
    assert code == 2 and not fresh.exists()


def test_unreachable_writes_only_the_explanation_and_removes_stale_artifacts(vcn_experiment, tmp_path,
                                                                              capsys):
    exp = vcn_experiment(rows())
    spec = spec_for(exp, tmp_path / "spec.yaml")
    assert call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)[0] == 0
    (exp["results"] / "rca_images").mkdir()  # not ours: must survive
    _rewrite_csv(exp, _csv_text(label_of={i: "PASS" for i in range(len(ROWS))}))
    code, out, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)
    assert code == 1
    # the container's text, word for word
    assert "ValueError: No threshold achieves 100% recall on the NO_PASS class." in out.splitlines()
    assert "No threshold achieves" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in exp["results"].iterdir()) == sorted([RCA_UNREACHABLE_FILE, "rca_images"])
    text = (exp["results"] / RCA_UNREACHABLE_FILE).read_text()
    assert text.startswith(MARK_UNREACHABLE) and "no NO_PASS (defect) row" in text
    assert "min_recall: 1.0" in text
    # a later successful run removes the stale unreachable file
    _rewrite_csv(exp, _csv_text())
    assert call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)[0] == 0
    assert not (exp["results"] / RCA_UNREACHABLE_FILE).exists()
    assert not [p for p in exp["results"].iterdir() if p.name.startswith(".")]  # no staging left


def test_large_scores_and_labels_with_spaces_round_trip(vcn_experiment, tmp_path, capsys):
    data = rows(extra=False)
    data[0]["label"] = " pass "
    exp = vcn_experiment(data)
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, out, _ = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)
    assert code == 0
    m = json.loads((exp["results"] / "metrics.json").read_text())
    # per_label is keyed by the normalised label; the label column is written stripped
    assert set(m["per_label"]) == {"PASS", "SHORT", "MISSING"} and m["n_pass"] == 4
    assert m["per_label"]["PASS"]["total"] == 4
    assert math.isclose(float((exp["results"] / "threshold.txt").read_text()), 0.3)
    df = pq.read_table(exp["results"] / "kpi_gaps.parquet").to_pandas()
    assert "pass" in set(df["label"]) and " pass " not in set(df["label"])


def test_header_with_spaces_is_refused_like_the_container(vcn_experiment, tmp_path, capsys):
    # the container looks the columns up by exact name (KeyError); we refuse in one line
    exp = vcn_experiment(rows())
    lines = ["input_path , object_name,label ,siamese_score"]
    lines += [f"{ip},{on},{lab},{s}" for ip, on, lab, s in ROWS]
    _rewrite_csv(exp, "\n".join(lines) + "\n")
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, _, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)
    assert code == 2 and "carry spaces" in err and len(err.strip().splitlines()) == 1
    assert not exp["results"].exists()


def test_numeric_looking_names_are_read_as_the_container_reads_them(vcn_experiment, tmp_path, capsys):
    # pd.read_csv infers numbers: "03" -> 3 and "004" -> 4 in the container's filepaths
    exp = vcn_experiment(rows())
    lines = ["input_path,object_name,label,siamese_score,lot"]
    lines += [f"0{i},00{i + 1},{lab},{s},00{i}" for i, (_, _, lab, s) in enumerate(ROWS)]
    _rewrite_csv(exp, "\n".join(lines) + "\n")
    spec = spec_for(exp, tmp_path / "spec.yaml")
    code, _, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec)
    assert code == 0, err
    df = pq.read_table(exp["results"] / "kpi_gaps.parquet").to_pandas()
    first = df.iloc[0]
    assert (first["input_path"], first["object_name"]) == ("3", "4")
    assert first["filepath"].endswith("/3/4_Diffuse.jpg")
    assert "lot" in df.columns


@pytest.mark.parametrize("top_k", ["2", "50"])
def test_many_rows_give_deterministic_container_ordered_artifacts(vcn_experiment, tmp_path, capsys,
                                                                   top_k):
    import random

    rng = random.Random(7)
    data = [{"input_path": rng.choice(["b1/c", "b2/c", "b10/c"]), "object_name": f"o{rng.randrange(30):03d}",
             "label": rng.choice(["PASS", "PASS", "SHORT", "MISSING", " pass", "short "]),
             "siamese_score": rng.choice([0.1, 0.25, 0.5, 0.75, round(rng.random(), 2)]),
             "camera": rng.choice(["a", "b"])} for _ in range(300)]
    exp = vcn_experiment(data, images_for=40)
    spec = spec_for(exp, tmp_path / "spec.yaml")
    results = []
    for i in range(2):
        out = tmp_path / f"out_{i}"
        code, stdout, err = call(capsys, "gap_analysis", "vcn_aoi", "-e", spec, f"top_k_per_label={top_k}",
                                 "min_recall=0.5", f"results_dir={out}")
        assert code == 0, err
        results.append((pq.read_table(out / "kpi_gaps.parquet"),
                        json.loads((out / "metrics.json").read_text()),
                        (out / "weak_samples_breakdown.txt").read_text()))
    (t0, m0, b0), (t1, m1, b1) = results
    assert t0.num_rows > 3
    assert t0.equals(t1) and m0 == m1 and b0 == b1
    assert 0 < m0["missing_images"] < m0["expanded_rows"]
    df = t0.to_pandas()
    assert list(df["weakness"]) == sorted(df["weakness"], reverse=True)
    groups = df["label"].str.strip().str.upper()
    assert set(groups) == {"PASS", "SHORT", "MISSING"}  # " pass" and "PASS" are one group
    assert (groups.value_counts() <= int(top_k) * 3).all()
    assert set(m0["per_label"]) == {"PASS", "SHORT", "MISSING"}
