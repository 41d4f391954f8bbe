"""Real TAO experiment layouts and the operating point: TensorRT's output_score, inference.csv
one level down, the image root from the train spec, a threshold pinned by one outlier, images
missing for most samples, and files that honour the umask."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_script, write_inference_csv


def _train(path, images_dir=None):
    classify = {"input_map": {"Coaxial": 0, "Side": 1}, "image_ext": ".png", "num_input": 2,
                "concat_type": "grid", "grid_map": {"x": 2, "y": 1}}
    if images_dir:
        classify["infer_dataset"] = {"images_dir": str(images_dir), "csv_path": "x.csv"}
    path.write_text(yaml.safe_dump({"dataset": {"classify": classify}}), encoding="utf-8")
    return path


def _rows(n_pass=40, n_defect=10, low_defect=False, score_col="siamese_score"):
    rows = [{"input_path": "boards/b1", "golden_path": "golden/g1", "label": "PASS",
             "object_name": f"P{i}", score_col: round(0.02 * (i % 20), 4)} for i in range(n_pass)]
    rows += [{"input_path": "boards/b2", "golden_path": "golden/g2", "label": "BRIDGE",
              "object_name": f"D{i}", score_col: 0.9 + 0.001 * i} for i in range(n_defect)]
    if low_defect:
        rows.append({"input_path": "boards/b3", "golden_path": "golden/g3", "label": "MISSING",
                     "object_name": "OUTLIER", score_col: 0.0})
    return rows


def _images(root, rows, lights=("Coaxial", "Side")):
    for r in rows:
        d = root / r["input_path"]
        d.mkdir(parents=True, exist_ok=True)
        for light in lights:
            (d / f"{r['object_name']}_{light}.png").write_bytes(b"\x89PNG")


def _spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("inference_results_dir: ???\ntrain_config: ???\nresults_dir: ???\n")
    return spec


def test_output_score_is_read_as_the_score_with_a_notice(tmp_path):
    write_inference_csv(tmp_path / "inf" / "inference.csv", _rows(score_col="output_score"))
    proc = run_script("data_services.py", "gap_analysis", "vcn_aoi", "-e", _spec(tmp_path),
                      f"inference_results_dir={tmp_path / 'inf'}",
                      f"train_config={_train(tmp_path / 'train.yaml')}", f"results_dir={tmp_path / 'r'}")
    assert proc.returncode == 0, proc.stderr
    assert "output_score (TensorRT inference)" in proc.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["n_rows"] == 50


def test_both_score_columns_are_refused_naming_both(tmp_path):
    rows = [dict(r, output_score=r["siamese_score"]) for r in _rows()]
    write_inference_csv(tmp_path / "inf" / "inference.csv", rows)
    proc = run_script("data_services.py", "gap_analysis", "vcn_aoi", "-e", _spec(tmp_path),
                      f"inference_results_dir={tmp_path / 'inf'}",
                      f"train_config={_train(tmp_path / 'train.yaml')}", f"results_dir={tmp_path / 'r'}")
    assert proc.returncode == 2
    assert "siamese_score and output_score" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("layout", ["direct", "inference", "latest", "single-run"])
def test_locate_finds_inference_csv_in_tao_layouts(tmp_path, layout):
    exp = tmp_path / "exp"
    where = {"direct": exp, "inference": exp / "inference", "latest": exp / "inference" / "latest",
             "single-run": exp / "inference" / "run_2026_11_30"}[layout]
    write_inference_csv(where / "inference.csv", _rows(score_col="output_score"))
    train = _train(tmp_path / "train.yaml", images_dir=tmp_path / "images")
    proc = run_script("locate_inference.py", exp, "--train-config", train, "--results", tmp_path / "rca")
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    prepared = tmp_path / "rca" / "inference_input"
    assert values["INFER_DIR"] == str(prepared)  # output_score: a renamed copy for the container
    assert (prepared / "inference.csv").read_text().splitlines()[0].endswith("siamese_score")
    assert values["DATASET"] == str(tmp_path / "images")
    assert "infer_dataset.images_dir" in proc.stderr


def test_locate_refuses_ambiguous_run_folders(tmp_path):
    for run in ("a", "b"):
        write_inference_csv(tmp_path / "exp" / "inference" / run / "inference.csv", _rows())
    proc = run_script("locate_inference.py", tmp_path / "exp", "--train-config",
                      _train(tmp_path / "train.yaml"), "--results", tmp_path / "rca")
    assert proc.returncode == 2 and "2 run folders" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _run_and_complete(tmp_path, rows, media, min_recall="1.0"):
    write_inference_csv(tmp_path / "inf" / "inference.csv", rows)
    args = ["-e", _spec(tmp_path), f"inference_results_dir={tmp_path / 'inf'}",
            f"train_config={_train(tmp_path / 'train.yaml')}", f"results_dir={tmp_path / 'r'}",
            f"kpi_media_path={media}", f"min_recall={min_recall}"]
    ran = run_script("data_services.py", "gap_analysis", "vcn_aoi", *args)
    done = run_script("complete_gap_analysis.py", *args)
    return ran, done


def test_one_low_scoring_defect_pins_the_threshold_and_is_named(tmp_path):
    rows = _rows(low_defect=True)
    _images(tmp_path / "media", rows)
    ran, done = _run_and_complete(tmp_path, rows, tmp_path / "media")
    assert ran.returncode == 0 and done.returncode == 0, ran.stderr + done.stderr
    assert "WARNING [degenerate-threshold]" in ran.stdout and "OUTLIER" in ran.stdout
    assert "below every score" in ran.stdout
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["degenerate_threshold"] is True
    assert [p["object_name"] for p in m["threshold_pinned_by"]] == ["OUTLIER"]
    curve = {c["min_recall"]: c for c in m["operating_curve"]}
    assert {1.0, 0.999, 0.995, 0.99, 0.98, 0.95} <= set(curve)
    assert curve[1.0]["false_alarms"] == 40  # every PASS row is a false alarm
    assert m["relaxed_target"]["far"] < 0.5 and m["relaxed_target"]["min_recall"] < 1.0
    # the relaxed target the warning names is really what the same rule gives at that target
    again = run_script("data_services.py", "gap_analysis", "vcn_aoi", "-e", _spec(tmp_path),
                       f"inference_results_dir={tmp_path / 'inf'}",
                       f"train_config={tmp_path / 'train.yaml'}", f"results_dir={tmp_path / 'r2'}",
                       f"min_recall={m['relaxed_target']['min_recall']!r}")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["threshold"] == m["relaxed_target"]["threshold"]


def test_a_clean_experiment_has_no_warning(tmp_path):
    rows = _rows()
    _images(tmp_path / "media", rows)
    ran, done = _run_and_complete(tmp_path, rows, tmp_path / "media")
    assert done.returncode == 0, done.stderr
    assert "degenerate" not in ran.stdout + done.stdout
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["degenerate_threshold"] is False and m["threshold_pinned_by"] == []
    assert m["image_coverage"] == {"samples_checked": 50, "samples_incomplete": 0, "sampled": False,
                                   "suggested_root": None}


def test_images_missing_for_most_samples_stop_with_the_root_that_resolves_them(tmp_path):
    rows = _rows()
    _images(tmp_path / "media" / "images", rows)  # one level below the root given
    ran, done = _run_and_complete(tmp_path, rows, tmp_path / "media")
    assert ran.returncode == 0  # the action itself behaves as the container does
    assert done.returncode == 1
    assert f"kpi_media_path={tmp_path / 'media' / 'images'} resolves them" in done.stderr


def test_artifacts_honour_the_umask(tmp_path):
    write_inference_csv(tmp_path / "inf" / "inference.csv", _rows())
    argv = ["ds", "gap_analysis", "vcn_aoi", "-e", str(_spec(tmp_path)),
            f"inference_results_dir={tmp_path / 'inf'}",
            f"train_config={_train(tmp_path / 'train.yaml')}", f"results_dir={tmp_path / 'r'}"]
    code = (f"import os, sys; os.umask(0o022); sys.argv = {argv!r}; sys.path.insert(0, {str(REPO)!r}); "
            "from tao_aoi.cli import run_cli; from tao_aoi.data_services.cli import main; "
            "raise SystemExit(run_cli(main, 'ds'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("kpi_gaps.parquet", "metrics.json", "threshold.txt", "weak_samples_breakdown.txt"):
        assert stat.S_IMODE(os.stat(tmp_path / "r" / name).st_mode) == 0o644, name
