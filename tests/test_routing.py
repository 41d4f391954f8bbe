"""Routing of kpi_gaps rows to mining / AnomalyGen (SPEC section 3)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tao_aoi.cli import UsageError, run_cli
from tao_aoi.hooks.report_rules import MARK_DROPPED_LABELS, ROUTING_ARTIFACTS
from tao_aoi.routing import main

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\S.*): (\d+) \(mining=(yes|no), anomalygen=(yes|no)\)$")

# (label as written, number of samples); each sample is expanded to two lighting rows.
GAPS_LABELS = [("PASS", 3), ("missing", 2), (" Bridge", 1), ("SHORT", 2), ("Tombstone", 1),
               ("bridge", 1)]


def make_gaps(path: Path, labels=GAPS_LABELS, lightings=("SolderLight", "UniformLight")) -> pd.DataFrame:
    rows = []
    n = 0
    for label, count in labels:
        for _ in range(count):
            n += 1
            for light in lightings:
                rows.append({"filepath": f"/media/s{n}/C{n}_{light}.jpg", "input_path": f"s{n}",
                             "object_name": f"C{n}", "lighting": light, "label": label,
                             "siamese_score": 0.01 * n, "weakness": 1.0 - 0.01 * n,
                             "misclassified": n % 2 == 0, "board": f"B{n % 3}"})
    df = pd.DataFrame(rows)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"origin": b"test"})
    pq.write_table(table, path)
    return df


def make_pool(path: Path, labels) -> None:
    pd.DataFrame({"filepath": [f"/pool/{i}.jpg" for i in range(len(labels))],
                  "label": list(labels)}).to_csv(path, index=False)


def run(argv, capsys):
    code = run_cli(main, "route_samples.py", [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def label_lines(text: str) -> dict[str, tuple[int, str, str]]:
    found = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            found[m.group(1)] = (int(m.group(2)), m.group(3), m.group(4))
    return found


def test_subsets_case_insensitive_and_columns_preserved(tmp_path, capsys):
    gaps = make_gaps(tmp_path / "kpi_gaps.parquet")
    make_pool(tmp_path / "pool.csv", ["bridge ", "short", "SHORT", "Solder_Ball"])
    code, out, err = run(["--gaps", tmp_path / "kpi_gaps.parquet", "--pool", tmp_path / "pool.csv",
                          "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    mining = pq.read_table(tmp_path / "r" / "mining_gaps.parquet")
    ag = pq.read_table(tmp_path / "r" / "anomalygen_gaps.parquet")
    src = pq.read_table(tmp_path / "kpi_gaps.parquet")
    # every column, in order, with types and custom metadata
    assert mining.schema.equals(src.schema, check_metadata=True)
    assert ag.schema.equals(src.schema, check_metadata=True)
    m = mining.to_pandas()
    # both spellings of BRIDGE ride along, text untouched
    assert sorted(set(m["label"])) == [" Bridge", "SHORT", "bridge"]
    assert len(m) == 2 * (1 + 1 + 2)
    a = ag.to_pandas()
    assert sorted(set(a["label"])) == [" Bridge", "PASS", "bridge", "missing"]
    assert len(a) == 2 * (3 + 2 + 1 + 1)
    # rows keep their relative order from the gaps file
    expected = gaps[gaps["label"].str.strip().str.upper().isin({"BRIDGE", "SHORT"})]
    assert list(m["filepath"]) == list(expected["filepath"])


def test_summary_lines_counts_and_both_count_units(tmp_path, capsys):
    make_gaps(tmp_path / "g.parquet")
    make_pool(tmp_path / "pool.csv", ["BRIDGE", "SHORT"])
    code, out, _ = run(["--gaps", tmp_path / "g.parquet", "--pool", tmp_path / "pool.csv",
                        "--out", tmp_path / "r"], capsys)
    assert code == 0
    summary = (tmp_path / "r" / "routing_summary.txt").read_text()
    assert out == summary
    assert label_lines(summary) == {
        "PASS": (6, "no", "yes"), "MISSING": (4, "no", "yes"), "BRIDGE": (4, "yes", "yes"),
        "SHORT": (4, "yes", "no"), "TOMBSTONE": (2, "no", "no")}
    assert "total: 20 rows, 10 samples" in summary
    assert f"mining subset: 8 rows, 4 samples -> {tmp_path / 'r' / 'mining_gaps.parquet'}" in summary
    assert "anomalygen subset: 14 rows, 7 samples" in summary
    assert "sample x lighting" in summary
    assert "POOL MISSING" not in summary


def test_dropped_labels_are_surfaced(tmp_path, capsys):
    make_gaps(tmp_path / "g.parquet")
    make_pool(tmp_path / "pool.csv", ["BRIDGE"])
    code, out, _ = run(["--gaps", tmp_path / "g.parquet", "--pool", tmp_path / "pool.csv",
                        "--out", tmp_path / "r"], capsys)
    assert code == 0
    summary = (tmp_path / "r" / "routing_summary.txt").read_text()
    dropped = summary.split("dropped labels (routed to neither module):", 1)[1]
    assert "SHORT: 4 rows, 2 samples" in dropped
    assert "TOMBSTONE: 2 rows, 1 samples" in dropped
    assert "PASS" not in dropped.replace(MARK_DROPPED_LABELS, "")
    marker = [line for line in out.splitlines() if line.startswith(MARK_DROPPED_LABELS)]
    assert len(marker) == 1 and "SHORT" in marker[0] and "TOMBSTONE" in marker[0]


def test_json_mode_keeps_stdout_json_and_marker_on_stderr(tmp_path, capsys):
    make_gaps(tmp_path / "g.parquet")
    code, out, err = run(["--gaps", tmp_path / "g.parquet", "--out", tmp_path / "r", "--json",
                          "--anomalygen-labels", " pass , Missing"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["pool_missing"] is True
    assert doc["anomalygen_labels"] == ["MISSING", "PASS"]
    assert doc["anomalygen"]["rows"] == 10 and doc["mining"]["rows"] == 0
    assert doc["dropped_labels"] == ["BRIDGE", "SHORT", "TOMBSTONE"]
    assert MARK_DROPPED_LABELS in err


def test_no_dropped_labels_says_none(tmp_path, capsys):
    make_gaps(tmp_path / "g.parquet", labels=[("PASS", 1), ("BRIDGE", 1)])
    code, out, _ = run(["--gaps", tmp_path / "g.parquet", "--out", tmp_path / "r"], capsys)
    assert code == 0 and MARK_DROPPED_LABELS not in out
    assert out.rstrip().endswith("dropped labels (routed to neither module):\nnone")


def test_pool_missing_gives_empty_mining_with_same_schema(tmp_path, capsys):
    make_gaps(tmp_path / "g.parquet")
    code, out, _ = run(["--gaps", tmp_path / "g.parquet", "--out", tmp_path / "r"], capsys)
    assert code == 0
    mining = pq.read_table(tmp_path / "r" / "mining_gaps.parquet")
    assert mining.num_rows == 0
    assert mining.schema.equals(pq.read_table(tmp_path / "g.parquet").schema)
    assert "POOL MISSING" in (tmp_path / "r" / "routing_summary.txt").read_text()
    assert "pool: none" in out
    assert all(v[1] == "no" for v in label_lines(out).values())


def test_parquet_pool_and_no_sample_columns(tmp_path, capsys):
    pd.DataFrame({"filepath": ["a", "b", "c"], "label": ["x", "Y", None]}).to_parquet(
        tmp_path / "g.parquet", index=False)
    pd.DataFrame({"filepath": ["p"], "label": ["X"]}).to_parquet(tmp_path / "pool.parquet")
    code, out, _ = run(["--gaps", tmp_path / "g.parquet", "--pool", tmp_path / "pool.parquet",
                        "--out", tmp_path / "r"], capsys)
    assert code == 0
    assert label_lines(out) == {"X": (1, "yes", "no"), "Y": (1, "no", "no"),
                                "<missing>": (1, "no", "no")}
    assert "samples are not counted" in out and "total: 3 rows\n" in out
    assert pq.read_table(tmp_path / "r" / "mining_gaps.parquet").column("filepath").to_pylist() == ["a"]


@pytest.mark.parametrize("case", ["no_gaps", "no_label", "no_filepath", "pool_no_label",
                                  "empty_labels", "pool_not_found"])
def test_bad_input_is_usage_error_and_writes_nothing(tmp_path, capsys, case):
    gaps = tmp_path / "g.parquet"
    make_gaps(gaps)
    pool = tmp_path / "pool.csv"
    make_pool(pool, ["BRIDGE"])
    argv = ["--gaps", gaps, "--pool", pool, "--out", tmp_path / "r"]
    if case == "no_gaps":
        argv[1] = tmp_path / "absent.parquet"
    elif case == "no_label":
        pd.read_parquet(gaps).drop(columns="label").to_parquet(gaps)
    elif case == "no_filepath":
        pd.read_parquet(gaps).drop(columns="filepath").to_parquet(gaps)
    elif case == "pool_no_label":
        pd.DataFrame({"filepath": ["a"], "klass": ["BRIDGE"]}).to_csv(pool, index=False)
    elif case == "empty_labels":
        argv += ["--anomalygen-labels", " , "]
    elif case == "pool_not_found":
        argv[3] = tmp_path / "nope.csv"
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("route_samples.py: error: ") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_failed_run_removes_stale_artifacts(tmp_path, capsys):
    make_gaps(tmp_path / "g.parquet")
    assert run(["--gaps", tmp_path / "g.parquet", "--out", tmp_path / "r"], capsys)[0] == 0
    assert all((tmp_path / "r" / n).exists() for n in ROUTING_ARTIFACTS)
    code, _, _ = run(["--gaps", tmp_path / "missing.parquet", "--out", tmp_path / "r"], capsys)
    assert code == 2
    assert not any((tmp_path / "r" / n).exists() for n in ROUTING_ARTIFACTS)


def test_write_failure_leaves_no_partial_outputs(tmp_path, monkeypatch, capsys):
    import tao_aoi.routing as routing

    make_gaps(tmp_path / "g.parquet")
    real = pq.write_table
    calls = []

    def flaky(table, where, *a, **k):
        calls.append(where)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", flaky)
    with pytest.raises(OSError):
        routing.main(["--gaps", str(tmp_path / "g.parquet"), "--out", str(tmp_path / "r")])
    assert list((tmp_path / "r").iterdir()) == []  # no artifact, no temp file


def test_script_entry_point(tmp_path):
    make_gaps(tmp_path / "g.parquet")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "route_samples.py"),
                           "--gaps", str(tmp_path / "g.parquet"), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert MARK_DROPPED_LABELS in proc.stdout
    helped = subprocess.run([sys.executable, str(ROOT / "scripts" / "route_samples.py"), "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "example:" in helped.stdout


def test_usage_error_type_for_library_callers(tmp_path):
    with pytest.raises(UsageError, match="label"):
        from tao_aoi.routing import route_table
        route_table(pa.table({"filepath": ["a"]}), None, ["PASS"])


def test_numeric_looking_labels_stay_text(tmp_path, capsys):
    pd.DataFrame({"filepath": ["a", "b"], "label": ["007", "7"]}).to_parquet(tmp_path / "g.parquet")
    (tmp_path / "pool.csv").write_text("filepath,label,extra\np.jpg,007,1\n")
    code, out, _ = run(["--gaps", tmp_path / "g.parquet", "--pool", tmp_path / "pool.csv",
                        "--out", tmp_path / "r"], capsys)
    assert code == 0
    assert label_lines(out) == {"007": (1, "yes", "no"), "7": (1, "no", "no")}
