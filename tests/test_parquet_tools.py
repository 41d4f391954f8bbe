"""sample_parquet, dedupe_first_lighting and resize_images, driven through their scripts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tao_aoi.cli import UsageError
from tao_aoi.parquet_tools import dedupe_first_lighting, read_lightings

ROOT = Path(__file__).resolve().parents[1]


def script(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True)


def gaps(tmp_path: Path, with_lighting=True) -> Path:
    rows = []
    for ip, obj, label, w in [("a", "C1", "PASS", 0.5), ("a", "C2", "MISSING", 0.9),
                              ("b", "C1", "BRIDGE", -0.1), ("b", "C1_X", "PASS", 0.2)]:
        for light in ("Side_Low", "Top", "Side"):  # underscores in a lighting name on purpose
            rows.append({"filepath": f"/d/{ip}/{obj}_{light}.jpg", "input_path": ip,
                         "object_name": obj, "lighting": light, "label": label,
                         "siamese_score": 0.5, "weakness": w, "misclassified": w > 0})
    df = pd.DataFrame(rows)
    if not with_lighting:
        df = df.drop(columns=["lighting"])
    p = tmp_path / "kpi_gaps.parquet"
    df.to_parquet(p, index=False)
    return p


def train_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "train.yaml"
    # YAML key order (the container's expansion order) differs from index order on purpose
    p.write_text("dataset:\n  classify:\n    image_ext: .jpg\n    input_map:\n"
                 "      Side_Low: 1\n      Top: 0\n      Side: 2\n")
    return p


def test_read_lightings_follows_yaml_key_order_like_the_container(tmp_path):
    # the container iterates input_map: YAML key order, not the index values
    assert read_lightings(train_yaml(tmp_path)) == (["Side_Low", "Top", "Side"], ".jpg")
    as_list = tmp_path / "list.yaml"
    as_list.write_text("dataset:\n  classify:\n    image_ext: .jpg\n    input_map: [Top, Side_Low]\n")
    assert read_lightings(as_list) == (["Top", "Side_Low"], ".jpg")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  classify:\n    input_map: {Top: 0}\n")
    with pytest.raises(UsageError, match="image_ext"):
        read_lightings(bad)


@pytest.mark.parametrize("with_lighting", [True, False])
def test_dedupe_keeps_first_lighting_one_row_per_sample(tmp_path, with_lighting):
    out = tmp_path / "first.parquet"
    proc = script("dedupe_first_lighting.py", gaps(tmp_path, with_lighting),
                  "--train-config", train_yaml(tmp_path), "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["input_rows"] == 12 and summary["output_rows"] == 4
    df = pd.read_parquet(out)
    assert list(df["object_name"]) == ["C2", "C1", "C1_X", "C1"]  # weakness descending
    assert all(fp.endswith("_Side_Low.jpg") for fp in df["filepath"])


def test_dedupe_parses_names_with_underscores_without_lighting_column(tmp_path):
    df = pd.read_parquet(gaps(tmp_path, with_lighting=False))
    out = dedupe_first_lighting(df, ["Top", "Side_Low", "Side"], ".jpg")
    # "Top" is first here: "C1_X_Top.jpg" must not be mistaken for object C1 lighting X_Top
    assert all(fp.endswith("_Top.jpg") for fp in out["filepath"])
    assert len(out) == 4


def test_sample_parquet_counts_and_head(tmp_path):
    p = gaps(tmp_path)
    proc = script("sample_parquet.py", p, "--head", "2", "--sort", "weakness",
                  "--columns", "object_name", "weakness", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["rows"] == 12
    assert info["counts"] == {"PASS": 6, "BRIDGE": 3, "MISSING": 3}
    assert info["head"] == [{"object_name": "C2", "weakness": 0.9}] * 2
    text = script("sample_parquet.py", p, "--head", "3")
    assert text.returncode == 0 and "12 rows x 8 columns" in text.stdout
    assert "PASS" in text.stdout and "first 3 rows" in text.stdout
    bad = script("sample_parquet.py", p, "--columns", "nope")
    assert bad.returncode == 2 and "unknown column" in bad.stderr


def test_sample_parquet_rejects_non_parquet(tmp_path):
    f = tmp_path / "x.parquet"
    f.write_text("hello")
    proc = script("sample_parquet.py", f)
    assert proc.returncode == 2 and proc.stderr.startswith("sample_parquet.py: error:")


def test_resize_images_square_png_and_unreadable_reported(tmp_path):
    tall = tmp_path / "tall.jpg"
    Image.new("RGB", (40, 100), (250, 250, 250)).save(tall)
    wide = tmp_path / "sub" / "wide.png"
    wide.parent.mkdir()
    Image.new("L", (300, 30), 200).save(wide)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00garbage")
    out = tmp_path / "thumbs"
    proc = script("resize_images.py", tall, wide, junk, tmp_path / "absent.jpg",
                  "--out-dir", out, "--size", "64", "--json")
    assert proc.returncode == 1
    res = json.loads(proc.stdout)
    assert res["ok"] == 2 and res["unreadable"] == 2
    with Image.open(out / "tall.png") as im:
        assert im.size == (64, 64) and im.format == "PNG"
        assert im.getpixel((1, 32)) == (0, 0, 0)          # side padding
        assert im.getpixel((32, 32)) == (250, 250, 250)   # image kept, not stretched
    with Image.open(out / "wide.png") as im:
        assert im.size == (64, 64) and im.getpixel((32, 2)) == (0, 0, 0)
    assert sorted(p.name for p in out.iterdir()) == ["tall.png", "wide.png"]
