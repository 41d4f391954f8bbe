"""The demo: synthetic data, the skill's own recipe run by bash, the report, the hooks."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from tao_aoi.demo import DemoContext
from tao_aoi.demo.rca import extract_recipe, run_recipe
from tao_aoi.demo.synth import INPUT_MAP, generate
from tao_aoi.hooks import report_rules as rr

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "hooks" / "on_report_written.py"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes().replace(str(folder).encode(), b"<workspace>"))
    return h.hexdigest()


def test_synthetic_experiment_is_deterministic_and_shaped_like_vcn(tmp_path):
    a, _ = generate(tmp_path / "a", seed=3), generate(tmp_path / "b", seed=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert generate(tmp_path / "c", seed=4).mislabeled != [] and \
        _digest(tmp_path / "c") != _digest(tmp_path / "a")
    df = pd.read_csv(a.csv_path)
    assert 300 <= len(df) <= 600
    assert {"input_path", "golden_path", "object_name", "label", "siamese_score"} <= set(df.columns)
    labels = set(df["label"].str.strip().str.upper())
    assert {"PASS", "MISSING", "BRIDGE", "EXCESS_SOLDER", "SHIFT", "TOMBSTONE"} <= labels
    classify = yaml.safe_load(a.train_yaml.read_text())["dataset"]["classify"]
    assert classify["image_ext"] == ".jpg"
    assert len(classify["input_map"]) == classify["num_input"] == 4
    assert classify["grid_map"] == {"x": 2, "y": 2} and classify["concat_type"] == "grid"
    assert classify["infer_dataset"]["images_dir"] == str(a.dataset_dir)
    assert list(classify["input_map"]) != sorted(classify["input_map"], key=classify["input_map"].get)
    row = df.iloc[0]
    for light in INPUT_MAP:
        with Image.open(a.dataset_dir / row["input_path"] / f"{row['object_name']}_{light}.jpg") as im:
            assert im.size == (96, 96)
        # the golden: <images_dir>/<golden_path>/<object>_<light><ext>
        assert (a.dataset_dir / row["golden_path"] / f"{row['object_name']}_{light}.jpg").is_file()
    # overlapping classes: some PASS rows score above some NO_PASS rows
    is_pass = df["label"].str.strip().str.upper() == "PASS"
    assert df.loc[is_pass, "siamese_score"].max() > df.loc[~is_pass, "siamese_score"].min()
    assert len(a.mislabeled) >= 3


def test_recipe_block_is_first_bash_block_and_refuses_unset_paths(tmp_path):
    script = extract_recipe(ROOT)
    assert "gap_analysis vcn_aoi -e" in script and "top_k_per_label=" in script
    assert "date +%Y-%m-%d_%H%M%S" in script and "--user" not in script
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "TAO_SKILL_BANK_PATH": str(ROOT)})
    assert proc.returncode != 0 and "set EXP" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_recipe_unreachable_kpi_skips_spot_check_and_drafts_abridged(tmp_path):
    exp = tmp_path / "exp"
    (exp / "inference").mkdir(parents=True)
    (exp / "inference" / "inference.csv").write_text(
        "input_path,object_name,label,siamese_score\n"
        + "".join(f"b/{i},C{i},PASS,0.{i + 1}\n" for i in range(6)))
    (exp / "train.yaml").write_text("dataset:\n  classify:\n    input_map: {Top: 0}\n"
                                    "    image_ext: .jpg\n")
    (tmp_path / "data").mkdir()
    ctx = DemoContext(workspace=tmp_path, experiment_dir=exp, dataset_dir=tmp_path / "data",
                      train_yaml=exp / "train.yaml", python=sys.executable, bank_root=ROOT)
    res = run_recipe(ctx)
    assert res["returncode"] == 1, res["stdout"] + res["stderr"]
    rca = res["rca_dir"]
    assert (rca / rr.RCA_UNREACHABLE_FILE).is_file()
    assert not (rca / rr.RCA_IMAGES_DIR).exists()
    draft = (rca / "RCA_Report.draft.md").read_text()
    assert "## 3. Unreachable KPI" in draft and "Visual Spot Check" not in draft
    assert rr.MARK_UNREACHABLE in res["stdout"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    ws = tmp_path / "demo_ws"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py"), "--workspace", str(ws)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((ws / "experiment" / "rca_results").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d_\d{6}", runs[0].name)
    rca = runs[0]
    for name in (*rr.RCA_ARTIFACTS, "vcn_aoi_spec.yaml", "score_distribution.png",
                 "RCA_Report.draft.md", "RCA_Report.md"):
        assert (rca / name).is_file(), name
    assert not (rca / rr.RCA_UNREACHABLE_FILE).exists()
    spec = yaml.safe_load((rca / "vcn_aoi_spec.yaml").read_text())
    assert spec["top_k_per_label"] == 50 and spec["min_recall"] == 1.0
    gaps = pd.read_parquet(rca / "kpi_gaps.parquet")
    assert (gaps["label"].str.strip().str.upper() != "PASS").any()  # top-K, not wrong-side
    thumbs = sorted(p for p in (rca / rr.RCA_IMAGES_DIR).glob("*.png")
                    if p.name != rr.RCA_SPOT_CHECK_SHEET)
    assert len(thumbs) == rr.RCA_SPOT_CHECK_COUNT
    # the sheet: every lighting in the 2x2 grid_map with the golden beside, all ten samples
    spot = json.loads((rca / rr.RCA_IMAGES_DIR / rr.RCA_SPOT_CHECK_JSON).read_text())
    assert spot["layout"]["columns"] == 2 and spot["layout"]["rows"] == 2 and spot["layout"]["golden"]
    assert spot["missing_tiles"] == 0 and len(spot["samples"]) == 10
    assert all(len(s["lightings"]) == 4 and s["golden"] and s["tiles"] == 8 for s in spot["samples"])
    with Image.open(rca / rr.RCA_IMAGES_DIR / rr.RCA_SPOT_CHECK_SHEET) as im:
        assert im.width <= 2000 and im.size == (spot["sheet"]["width"], spot["sheet"]["height"])
    for t in thumbs:
        with Image.open(t) as im:
            assert im.size == (128, 128)
    report = (rca / "RCA_Report.md").read_text()
    headings = re.findall(r"^## \d+\. (.+)$", report, re.M)
    assert headings == list(rr.RCA_SECTIONS)
    lo, hi = rr.RCA_WORDS
    assert lo <= rr.count_words(report) <= hi
    assert "<!-- AGENT" not in report
    for t in thumbs:
        assert f"rca_images/{t.name}" in report
    verdict_rows = re.findall(r"\| ([a-z ]+) \(auto, not reviewed by a person\) \|", report)
    assert len(verdict_rows) == 10 and set(verdict_rows) <= set(rr.VERDICTS)
    metrics = json.loads((rca / "metrics.json").read_text())
    for label in metrics["per_label"]:
        assert f"| {label} |" in report
    cm = metrics["confusion_matrix"]
    assert f"TP = {cm['tp']}" in report and f"FP = {cm['fp']}" in report
    assert (rca / "threshold.txt").read_text().strip() in report
    if not HOOK.is_file():
        pytest.skip("hooks/on_report_written.py is absent: packaging not checked")
    assert "report hook passed" in proc.stdout
    assert (rca / rr.CONFIG_DIRS["rca"]).is_dir()
    session = (rca / rr.SESSION_FILE).read_text().splitlines()
    assert session and all(json.loads(line) for line in session)
