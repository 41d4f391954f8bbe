"""Spot check: which 10 samples, one per sample on the first lighting, thumbnails, bad images."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tao_aoi.spot_check import (PANELS_DIR, SHEET_NAME, grid_for, panel_size,
                                run_spot_check)

ROOT = Path(__file__).resolve().parents[1]
# the container expands lightings in the YAML key order of input_map (A, B, C), not by index;
# the index values say B first on purpose
TRAIN_YAML = "dataset:\n  classify:\n    input_map:\n      A: 1\n      B: 0\n      C: 2\n    image_ext: .jpg\n"
LIGHTS = ["A", "B", "C"]


def make_results(tmp_path: Path, samples, *, lighting_column=True, image_size=(96, 60),
                 skip_images=(), lights=LIGHTS, train_yaml=TRAIN_YAML, golden=False,
                 skip_golden=()):
    """samples: list of (input_path, object_name, label, score, weakness).

    Writes dataset images, kpi_gaps.parquet (one row per sample x lighting, in the
    COMMON.md column order), metrics.json, threshold.txt and the train YAML. With
    ``golden`` the parquet gets a ``golden_path`` column (``golden/<input_path>``, as in a
    TAO CSV) and the golden images are written beside the samples' (except ``skip_golden``).
    Returns (results_dir, train_yaml).
    """
    data = tmp_path / "dataset"
    results = tmp_path / "exp" / "rca_results" / "2024-01-01_000000"
    results.mkdir(parents=True)
    rows = []
    for i, (ip, obj, label, score, weak) in enumerate(samples):
        for light in lights:
            fp = data / ip / f"{obj}_{light}.jpg"
            shade = {"A": 200, "B": 120, "C": 60, "D": 30}[light]
            if (ip, obj) not in skip_images:
                fp.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", image_size, (shade, (i * 37) % 255, 90)).save(fp)
            row = {"filepath": str(fp), "input_path": ip, "object_name": obj,
                   "lighting": light, "label": label, "siamese_score": score,
                   "weakness": weak, "misclassified": weak > 0, "board": "b1"}
            if golden:
                row["golden_path"] = f"golden/{ip}"
                gp = data / "golden" / ip / f"{obj}_{light}.jpg"
                if (ip, obj) not in skip_golden:
                    gp.parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", image_size, (90, 200, shade)).save(gp)
            rows.append(row)
    df = pd.DataFrame(rows).sort_values("weakness", ascending=False, kind="mergesort")
    if not lighting_column:
        df = df.drop(columns=["lighting"])
    df.to_parquet(results / "kpi_gaps.parquet", index=False)
    train = tmp_path / "exp" / "train.yaml"
    train.write_text(train_yaml)
    (results / "threshold.txt").write_text("0.5\n")
    (results / "metrics.json").write_text(json.dumps({"lightings": list(lights), "image_ext": ".jpg"}))
    return results, train


def thumbs(results: Path) -> list[Path]:
    """The 128x128 first-lighting copies (not the overview sheet)."""
    return sorted(p for p in (results / "rca_images").glob("*.png") if p.name != SHEET_NAME)


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
    files = thumbs(results)
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
    assert len(thumbs(results)) == 10
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
    assert len(thumbs(results)) == 4
    assert len(list((results / "rca_images" / "samples").glob("*.png"))) == 4


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


# ---------------------------------------------------------------- panels and the sheet
GRID_YAML = ("dataset:\n  classify:\n    num_input: 4\n    concat_type: grid\n"
             "    grid_map:\n      x: 2\n      y: 2\n    input_map:\n      A: 1\n      B: 0\n"
             "      C: 2\n      D: 3\n    image_ext: .jpg\n")
LIGHTS4 = ["A", "B", "C", "D"]


def _colour_near(px, want, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(px, want))


def test_sheet_grid_map_with_golden_layout_and_json(tmp_path):
    results, train = make_results(tmp_path, PASS + NO_PASS, lights=LIGHTS4, train_yaml=GRID_YAML,
                                  golden=True)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/spot_check.py"), str(results),
                           "--train-config", str(train)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((results / "rca_images" / "spot_check.json").read_text())
    # 2x2 grid, cells by input_map index (B is index 0), golden beside
    assert doc["layout"]["columns"] == 2 and doc["layout"]["rows"] == 2
    assert doc["layout"]["cells"] == ["B", "A", "C", "D"] and doc["layout"]["golden"] is True
    assert "grid_map x=2, y=2" in proc.stdout and "golden beside" in proc.stdout
    for s in doc["samples"]:
        # tiles per sample = lightings x (1 + golden)
        assert s["tiles"] == 4 * 2 and s["missing_tiles"] == 0
        assert s["lightings"] == [str(tmp_path / "dataset" / s["input_path"] / f"{s['object_name']}_{x}.jpg")
                                  for x in LIGHTS4]
        assert s["golden"] == str(tmp_path / "dataset" / "golden" / s["input_path"])
        assert s["golden_lightings"] == [f"{s['golden']}/{s['object_name']}_{x}.jpg" for x in LIGHTS4]
        assert (results / s["panel"]).is_file() and s["verdict"] == ""
        assert {"label", "siamese_score", "weakness"} <= set(s)
    # the sheet: two columns of five 2x2+2x2 panels at 128 px tiles, <= 2000 px wide
    # panel: 6 + (2*128+2) + 14 + (2*128+2) + 6 = 542 wide; 38 + 16 + (2*128+2) + 6 = 318 high
    assert panel_size(2, 2, True, 128) == (542, 318)
    sheet = doc["sheet"]
    assert sheet["image"] == f"rca_images/{SHEET_NAME}" and sheet["tile"] == 128
    assert (sheet["columns"], sheet["rows"]) == (2, 5)
    with Image.open(results / "rca_images" / SHEET_NAME) as im:
        assert im.size == (sheet["width"], sheet["height"]) == (2 * 542 + 3 * 8, 26 + 5 * 318 + 6 * 8)
        rgb = im.convert("RGB")
        # caption bands: PASS panels (left) blue, NO_PASS (right) red
        assert _colour_near(rgb.getpixel((8 + 4, 26 + 8 + 35)), (40, 90, 190))
        assert _colour_near(rgb.getpixel((8 + 542 + 8 + 4, 26 + 8 + 35)), (190, 50, 40))
        # first sample tile (cell 0 = lighting B, shade 120) and its golden (green-ish)
        x0, y0 = 8 + 6, 26 + 8 + 38 + 16
        assert rgb.getpixel((x0 + 64, y0 + 64))[0] == pytest.approx(120, abs=12)
        gx = x0 + 258 + 14
        assert _colour_near(rgb.getpixel((gx + 64, y0 + 64)), (90, 200, 120), tol=15)
    with Image.open(results / doc["samples"][0]["panel"]) as im:
        assert im.width <= 2000 and im.size == panel_size(2, 2, True, doc["sheet"]["panel_tile"])
    # the 128x128 first-lighting copies stay (first lighting = first input_map key: A)
    assert len(thumbs(results)) == 10
    assert all(s["source"].endswith("_A.jpg") for s in doc["samples"])


def test_no_golden_column_means_golden_null_and_one_row(tmp_path):
    results, _ = make_results(tmp_path, PASS + NO_PASS)
    doc = run_spot_check(results, LIGHTS, ".jpg")
    assert doc["layout"]["rows"] == 1 and doc["layout"]["columns"] == 3
    assert "no grid_map" in doc["layout"]["how"] and doc["layout"]["golden"] is False
    for s in doc["samples"]:
        assert s["golden"] is None and s["golden_lightings"] is None and s["tiles"] == 3
        assert len(s["lightings"]) == 3
    with Image.open(results / "rca_images" / SHEET_NAME) as im:
        pw, ph = panel_size(3, 1, False, doc["sheet"]["tile"])
        assert im.size == (2 * pw + 24, 26 + 5 * ph + 48) and im.width <= 2000


def test_missing_lighting_and_golden_images_are_counted_stand_ins(tmp_path):
    results, train = make_results(tmp_path, PASS + NO_PASS, golden=True,
                                  skip_images={("n/1", "R1")}, skip_golden={("p/1", "C1")})
    doc = run_spot_check(results, LIGHTS, ".jpg", train_config=train)
    miss = {s["object_name"]: s["missing_tiles"] for s in doc["samples"]}
    assert miss["R1"] == 3 and miss["C1"] == 3 and sum(miss.values()) == 6
    assert doc["missing_tiles"] == 6
    assert any(n.startswith("WARNING [missing-images] 6 of 60 sheet tiles") for n in doc["notes"])
    assert (results / "rca_images" / SHEET_NAME).is_file()


def test_grid_map_too_small_or_linear_falls_back_to_a_row():
    assert grid_for(["A", "B", "C"], {"grid_map": {"x": 1, "y": 2}})[:2] == (3, 1)
    assert grid_for(["A", "B"], {"grid_map": {"x": 1, "y": 2}, "concat_type": "linear"})[:2] == (2, 1)
    cols, rows, cells, _ = grid_for(["A", "B", "C"], {"grid_map": {"x": 2, "y": 2}})
    assert (cols, rows, cells) == (2, 2, ["A", "B", "C", None])


def test_refuses_symlinked_rca_images_outside_results(tmp_path):
    results, train = make_results(tmp_path, PASS + NO_PASS)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (results / "rca_images").symlink_to(outside)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/spot_check.py"), str(results),
                           "--train-config", str(train)], capture_output=True, text=True)
    assert proc.returncode == 2 and "outside the results folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []
    # a link that stays inside the results folder is fine
    (results / "rca_images").unlink()
    inside = results / "images_here"
    inside.mkdir()
    (results / "rca_images").symlink_to(inside)
    assert len(run_spot_check(results, LIGHTS, ".jpg")["samples"]) == 10
    # and so is a samples/ link that leads outside: refused
    (results / "rca_images" / PANELS_DIR).rename(results / "old_panels")
    (results / "rca_images" / PANELS_DIR).symlink_to(outside)
    with pytest.raises(Exception, match="outside the results folder"):
        run_spot_check(results, LIGHTS, ".jpg")
    assert list(outside.iterdir()) == []
