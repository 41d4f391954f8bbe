"""CSV source pool -> parquet for the embedding step."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tao_aoi.cli import run_cli
from tao_aoi.hooks.report_rules import MARK_MISSING_IMAGES
from tao_aoi.pool import main

ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = run_cli(main, "pool_to_parquet.py", [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_keeps_filepath_and_label_only_by_default(tmp_path, capsys):
    pd.DataFrame({"board": ["b1", "b2"], "label": ["PASS", "007"], "filepath": [" a.jpg", "b.jpg"],
                  "score": [0.1, 0.2]}).to_csv(tmp_path / "pool.csv", index=False)
    code, out, err = run([tmp_path / "pool.csv", "--out", tmp_path / "pool.parquet"], capsys)
    assert code == 0, err
    df = pd.read_parquet(tmp_path / "pool.parquet")
    assert list(df.columns) == ["filepath", "label"]
    assert list(df["filepath"]) == ["a.jpg", "b.jpg"]
    assert list(df["label"]) == ["PASS", "007"]  # labels stay strings, not numbers


def test_keep_all_puts_filepath_first(tmp_path, capsys):
    pd.DataFrame({"board": ["b1"], "filepath": ["a.jpg"], "score": [0.5]}).to_csv(
        tmp_path / "pool.csv", index=False)
    code, _, err = run([tmp_path / "pool.csv", "--out", tmp_path / "p.parquet", "--keep-all"], capsys)
    assert code == 0
    df = pd.read_parquet(tmp_path / "p.parquet")
    assert list(df.columns) == ["filepath", "board", "score"] and df["score"][0] == 0.5
    assert "no 'label' column" in err


def test_check_exists_counts_missing_files(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"x")
    absolute = tmp_path / "imgs" / "a.jpg"
    pd.DataFrame({"filepath": ["imgs/a.jpg", "imgs/b.jpg", str(absolute), "imgs/c.jpg"],
                  "label": ["X"] * 4}).to_csv(tmp_path / "pool.csv", index=False)
    code, out, err = run([tmp_path / "pool.csv", "--out", tmp_path / "p.parquet", "--check-exists",
                          "--base-dir", tmp_path, "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["missing_files"] == 2 and doc["missing_examples"] == ["imgs/b.jpg", "imgs/c.jpg"]
    assert doc["duplicate_filepaths"] == 0 and doc["labels"] == {"X": 4}
    assert MARK_MISSING_IMAGES in err and "2 of 4" in err
    assert (tmp_path / "p.parquet").exists()  # missing files are reported, not fatal


@pytest.mark.parametrize("content,needle", [
    ("path,label\na.jpg,X\n", "rename column 'path' to 'filepath'"),
    ("filepath,label\na.jpg,X\n,Y\n", "empty filepath (first at CSV line 3)"),
    ("filepath,label\n", "no rows"),
    ("", "empty"),
])
def test_bad_csv_is_usage_error_and_writes_nothing(tmp_path, capsys, content, needle):
    (tmp_path / "pool.csv").write_text(content)
    code, _, err = run([tmp_path / "pool.csv", "--out", tmp_path / "p.parquet"], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "pool.csv"]


def test_missing_csv_and_bad_out(tmp_path, capsys):
    code, _, err = run([tmp_path / "nope.csv", "--out", tmp_path / "p.parquet"], capsys)
    assert code == 2 and "not found" in err
    (tmp_path / "pool.csv").write_text("filepath\na\n")
    code, _, err = run([tmp_path / "pool.csv", "--out", tmp_path / "p.csv"], capsys)
    assert code == 2 and ".parquet" in err
    assert not (tmp_path / "p.csv").exists()


def test_script_entry_point_help_and_run(tmp_path):
    (tmp_path / "pool.csv").write_text("filepath,label\nx.jpg,PASS\n")
    script = str(ROOT / "scripts" / "pool_to_parquet.py")
    proc = subprocess.run([sys.executable, script, "pool.csv", "--out", "p.parquet"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 rows" in proc.stdout
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert "example:" in helped.stdout
