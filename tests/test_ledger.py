"""scripts/mining_ledger.py: history-aware selection across mining runs."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from tao_aoi.cli import UsageError
from tao_aoi.ledger import filter_novel, read_ledger, record_run
from conftest import run_script


def mined(path: Path, files, labels=True) -> Path:
    df = pd.DataFrame({"filepath": files})
    if labels:
        df["label"] = ["SHORT"] * len(files)
        df["best_distance"] = [0.1 * i for i in range(len(files))]
    df.to_parquet(path)
    return path


def test_filter_then_record_across_runs(tmp_path):
    ledger = tmp_path / "ledger.parquet"
    run1 = mined(tmp_path / "m1.parquet", ["/p/a.jpg", "/p/b.jpg"])
    r = run_script("mining_ledger.py", "record", "--mined", run1, "--ledger", ledger, "--run-id", "run1")
    assert r.returncode == 0, r.stderr
    run2 = mined(tmp_path / "m2.parquet", ["/p/./b.jpg", "/p/c.jpg", "/p/d.jpg"])
    out = tmp_path / "novel.parquet"
    r = run_script("mining_ledger.py", "filter", "--mined", run2, "--ledger", ledger, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    audit = json.loads(r.stdout)
    assert audit["new"] == 2 and audit["already_mined"] == 1
    assert audit["already_mined_by_run"] == {"run1": 1}
    novel = pd.read_parquet(out)
    assert novel["filepath"].tolist() == ["/p/c.jpg", "/p/d.jpg"]
    assert list(novel.columns) == ["filepath", "label", "best_distance"]  # columns kept
    text = Path(audit["audit"]).read_text()
    assert "new: 2" in text and "run1: 1" in text
    r = run_script("mining_ledger.py", "record", "--mined", out, "--ledger", ledger, "--run-id", "run2")
    assert r.returncode == 0
    led = read_ledger(ledger)
    assert sorted(led["filepath"]) == ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg", "/p/d.jpg"]
    assert set(led["run_id"]) == {"run1", "run2"}
    assert all(datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ") for v in led["recorded_at"])


def test_record_is_idempotent_and_refuses_a_changed_run(tmp_path):
    ledger = tmp_path / "ledger.csv"  # CSV ledgers work the same
    m = mined(tmp_path / "m.parquet", ["/p/a.jpg", "/p/b.jpg"], labels=False)
    assert run_script("mining_ledger.py", "record", "--mined", m, "--ledger", ledger,
                      "--run-id", "r1").returncode == 0
    before = ledger.read_bytes()
    r = run_script("mining_ledger.py", "record", "--mined", m, "--ledger", ledger, "--run-id", "r1")
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert ledger.read_bytes() == before
    other = mined(tmp_path / "m2.parquet", ["/p/z.jpg"], labels=False)
    r = run_script("mining_ledger.py", "record", "--mined", other, "--ledger", ledger, "--run-id", "r1")
    assert r.returncode == 2 and "already in the ledger" in r.stderr
    assert ledger.read_bytes() == before
    r = run_script("mining_ledger.py", "record", "--mined", other, "--ledger", ledger,
                   "--run-id", "r1", "--replace")
    assert r.returncode == 0
    assert read_ledger(ledger)["filepath"].tolist() == ["/p/z.jpg"]


def test_file_mined_in_several_runs_is_attributed_to_each():
    led = pd.DataFrame({"filepath": ["/a", "/a", "/b"], "run_id": ["r1", "r2", "r2"],
                        "recorded_at": ["t"] * 3})
    novel, audit = filter_novel(pd.DataFrame({"filepath": ["/a", "/b", "/c"]}), led)
    assert novel["filepath"].tolist() == ["/c"]
    assert audit["already_mined_by_run"] == {"r1": 1, "r2": 2}
    assert audit["ledger_runs"] == 2 and audit["ledger_files"] == 2


def test_record_keeps_earlier_runs_and_stamps_time():
    led = read_ledger("/nonexistent/ledger.parquet")  # missing ledger = empty
    assert len(led) == 0
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    led, _ = record_run(pd.DataFrame({"filepath": ["/x", "/x", "/y"]}), led, "r1", now=now)
    assert led["filepath"].tolist() == ["/x", "/y"]  # duplicates recorded once
    assert set(led["recorded_at"]) == {"2025-01-02T03:04:05Z"}
    with pytest.raises(UsageError):
        record_run(pd.DataFrame({"filepath": ["/x"]}), led, " ")


def test_bad_inputs_exit_2_without_writing(tmp_path):
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"path": ["/a"]}).to_parquet(bad)
    out = tmp_path / "novel.parquet"
    r = run_script("mining_ledger.py", "filter", "--mined", bad, "--ledger", tmp_path / "l.parquet",
                   "--out", out)
    assert r.returncode == 2 and "no 'filepath' column" in r.stderr
    assert not out.exists()
    not_ledger = tmp_path / "notledger.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(not_ledger)
    good = mined(tmp_path / "m.parquet", ["/a"])
    r = run_script("mining_ledger.py", "record", "--mined", good, "--ledger", not_ledger, "--run-id", "r")
    assert r.returncode == 2 and "not a mining ledger" in r.stderr
    r = run_script("mining_ledger.py", "--help")
    assert r.returncode == 0 and "example" in r.stdout
