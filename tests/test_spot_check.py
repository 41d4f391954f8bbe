"""Spot check: which 10 samples, one per sample on the first lighting, thumbnails, bad images."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tao_aoi.spot_check import run_spot_check

ROOT = Path(__file__).resolve().parents[1]
# the container expands lightings in the YAML key order of input_map (A, B, C), not by index;
# the index values say B first on purpose
TRAIN_YAML = "dataset:\n  classify:\n    input_map:\n      A: 1\n      B: 0\n      C: 2\n    image_ext: .jpg\n"
LIGHTS = ["A", "B", "C"]


def make_results(tmp_path: Path, samples, *, lighting_column=True, image_size=(96, 60),
                 skip_images=()):
    """samples: list of (input_path, object_name, label, score, weakness).

    Writes dataset images, kpi_gaps.parquet (one row per sample x lighting, in the
    COMMON.md column order), metrics.json, threshold.txt and the train YAML.
    Returns (results_dir, train_yaml).
    """
    data = tmp_path / "dataset"
    results = tmp_path / "exp" / "rca_results" / "2024-01-01_000000"
    results.mkdir(parents=True)
    rows = []
    for i, (ip, obj, label, score, weak) in enumerate(samples):
        for light in LIGHTS:
            fp = data / ip / f"{obj}_{light}.jpg"
            if (ip, obj) not in skip_images:
                fp.parent.mkdir(parents=True, exist_ok=True)
                shade = {"A": 200, "B": 120, "C": 60}[light]
                Image.new("RGB", image_size, (shade, (i * 37) % 255, 90)).save(fp)
            rows.append({"filepath": str(fp), "input_path": ip, "object_name": obj,
                         "lighting": light, "label": label, "siamese_score": score,
                         "weakness": weak, "misclassified": weak > 0, "board": "b1"})
    df = pd.DataFrame(rows).sort_values("weakness", ascending=False, kind="mergesort")
    if not lighting_column:
        df = df.drop(columns=["lighting"])
    df.to_parquet(results / "kpi_gaps.parquet", index=False)
    train = tmp_path / "exp" / "train.yaml"
    train.write_text(TRAIN_YAML)
    (results / "threshold.txt").write_text("0.5\n")
    (results / "metrics.json").write_text(json.dumps({"lightings": LIGHTS, "image_ext": ".jpg"}))
    return results, train


PASS = [("p/1", "C1", "PASS", 0.9, 0.40), ("p/1", "C2", " pass ", 0.8, 0.30),
        ("p/2", "C3", "PASS", 0.7, 0.20), ("p/2", "C4", "PASS", 0.7, 0.20),  # tie with C3
        ("p/0", "C9", "PASS", 0.7, 0.20),  # tie: input_path p/0 sorts first
        ("p/3", "C5", "PASS", 0.4, -0.10), ("p/3", "C6", "PASS", 0.1, -0.40)]
NO_PASS = [("n/1", "R1", "MISSING", 0.2, 0.30), ("n/1", "R2", "BRIDGE", 0.3, 0.20),
           ("n/2", "R3", "SHIFT", 0.6, -0.10), ("n/2", "R4", "passed", 0.7, -0.20),
           ("n/3", "R5", "MISSING", 0.8, -0.30), ("n/3", "R6", "BRIDGE", 0.9, -0.40)]


def test_picks_five_weakest_per_class_with_tie_break_and_first_lighting(tmp_path):
    # a duplicated sample (same input_path/object_name twice): only its weakest row counts
    dup = [("n/1", "R1", "MISSING", 0.25, 0.25)]
    results, train = make_results(tmp_path, PASS + NO_PASS + dup)
    doc = run_spot_check(results, LIGHTS, ".jpg")
    got = [(s["class"], s["input_path"], s["object_name"]) for s in doc["samples"]]
    assert got == [("PASS", "p/1", "C1"), ("PASS", "p/1", "C2"), ("PASS", "p/0", "C9"),
                   ("PASS", "p/2", "C3"), ("PASS", "p/2", "C4"),
                   ("NO_PASS", "n/1", "R1"), ("NO_PASS", "n/1", "R2"), ("NO_PASS", "n/2", "R3"),
                   ("NO_PASS", "n/2", "R4"), ("NO_PASS", "n/3", "R5")]
    # "passed" is not PASS after strip/upper; " pass " is
    assert doc["samples"][1]["label"] == " pass "
    r1 = doc["samples"][5]
    assert r1["weakness"] == pytest.approx(0.30)  # the duplicate's stronger row lost
    assert all(s["source"].endswith("_A.jpg") for s in doc["samples"])  # the first lighting
    assert doc["first_lighting"] == "A"
    assert doc["notes"] == []
    saved = json.loads((results / "rca_images" / "spot_check.json").read_text())
    assert saved["samples"] == doc["samples"]


def test_thumbnails_are_128_square_png_with_padding(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS, image_size=(96, 60))
    doc = run_spot_check(results, LIGHTS, ".jpg")
    files = sorted((results / "rca_images").glob("*.png"))
    assert len(files) == 10
    assert [s["image"] for s in doc["samples"]] == [f"rca_images/{f.name}" for f in files]
    assert files[0].name == "01_PASS_C1.png" and files[5].name == "06_MISSING_R1.png"
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size == (128, 128)
            # 96x60 scaled to 128x80: the top rows are padding, the middle is the image
            assert im.getpixel((64, 2)) == (0, 0, 0)
            assert im.getpixel((64, 64)) != (0, 0, 0)


def test_missing_and_unreadable_images_are_reported_not_fatal(tmp_path, capsys):
    results, train = make_results(tmp_path, PASS + NO_PASS, skip_images={("p/1", "C2")})
    bad = tmp_path / "dataset" / "n" / "1" / "R2_A.jpg"
    bad.write_bytes(b"not a jpeg")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/spot_check.py"), str(results),
                           "--train-config", str(train)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((results / "rca_images" / "spot_check.json").read_text())
    status = {s["object_name"]: s["status"] for s in doc["samples"]}
    assert status["C2"] == "missing" and status["R2"].startswith("unreadable")
    assert sum(v == "ok" for v in status.values()) == 8
    # every row still links one 128x128 image: the two bad ones get a labelled stand-in
    stand_ins = sorted(p.name for p in (results / "rca_images").glob("*_NO-IMAGE.png"))
    assert stand_ins == ["02_PASS_C2_NO-IMAGE.png", "07_BRIDGE_R2_NO-IMAGE.png"]
    assert len(list((results / "rca_images").glob("*.png"))) == 10
    with Image.open(results / "rca_images" / stand_ins[0]) as im:
        assert im.size == (128, 128)
    assert "WARNING [missing-images]" in proc.stdout
    assert "| ![02](rca_images/02_PASS_C2_NO-IMAGE.png) missing: `" in proc.stdout
    assert "| Verdict |" in proc.stdout


def test_fewer_than_five_in_a_class_takes_what_exists(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS[:2])
    doc = run_spot_check(results, LIGHTS, ".jpg")
    assert [s["class"] for s in doc["samples"]].count("NO_PASS") == 2
    assert any("only 2 NO_PASS" in n for n in doc["notes"])


def test_lighting_parsed_from_filepath_when_column_absent(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS, lighting_column=False)
    # without --train-config the order comes from metrics.json
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/spot_check.py"), str(results),
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["samples"]) == 10
    assert all(s["source"].endswith("_A.jpg") for s in doc["samples"])


def test_rerun_removes_stale_thumbnails(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS)
    run_spot_check(results, LIGHTS, ".jpg")
    run_spot_check(results, LIGHTS, ".jpg", per_class=2)
    assert len(list((results / "rca_images").glob("*.png"))) == 4


def test_unreachable_and_bad_input_exit_2_without_writing(tmp_path):
    results, train = make_results(tmp_path, PASS + NO_PASS)
    (results / "unreachable_kpi.txt").write_text("recall 0.9 max\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/spot_check.py"), str(results),
                           "--train-config", str(train)], capture_output=True, text=True)
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    assert not (results / "rca_images").exists()
    (results / "unreachable_kpi.txt").unlink()
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: {classify: {image_ext: .jpg}}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/spot_check.py"), str(results),
                           "--train-config", str(broken)], capture_output=True, text=True)
    assert proc.returncode == 2 and "input_map" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (results / "rca_images").exists()
