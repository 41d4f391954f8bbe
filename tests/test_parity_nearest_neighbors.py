"""`tmm nearest_neighbors`: the local runner against NVIDIA's own module (the release pinned
through versions.yaml, tests/oracle/README.md) on generated inputs.

Zero differences allowed in what the container writes: the `filepath` column of
`output_parquet` (same rows, same order) and `mining_summary.txt` line for line (the runner's
own lines may only follow). `distance_threshold` is not in the pinned release, so it is checked
against a brute-force reading of its rule instead.

Vectors are small integers for euclidean/manhattan (distances are exact in any float width,
so equal distances are real ties, broken by the lower source index on both sides) and
Gaussian for cosine (no two distinct directions land within rounding of each other); exact
copies of rows add ties and duplicated filepaths exercise the dedupe.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tao_aoi.cli import UsageError
from tao_aoi.data_services import cli as ds_cli
from tao_aoi.data_services.nearest_neighbors import SUMMARY_FILE, label_filter_requested

CATEGORY, ACTION = "tmm", "nearest_neighbors"
OUT_REL = "out/mined.parquet"  # relative: "Results saved to" then reads the same on both sides
LABELS = ["pass", " pass", "Pass", "PASS ", "short", "SHORT", "Missing", None]
FLAGS = ["true", "True", "1", "yes", "false", "0", True, False, "no"]


def _write(path: Path, vectors: np.ndarray, filepaths, labels, column: str) -> Path:
    cols = {}
    if filepaths is not None:
        cols["filepath"] = pa.array(filepaths, pa.string())
    cols[column] = pa.array([list(map(float, v)) for v in vectors], pa.list_(pa.float32()))
    if labels is not None:
        cols["label"] = pa.array(labels, pa.string())
    pq.write_table(pa.table(cols), path)
    return path


@st.composite
def experiments(draw, with_threshold: bool = False):
    metric = draw(st.sampled_from(["euclidean", "cosine", "manhattan"]))
    n_s = draw(st.integers(1, 9))
    n_t = draw(st.integers(1, 6))
    dim = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if metric == "cosine":
        src = rng.normal(size=(n_s, dim))
        tgt = rng.normal(size=(n_t, dim))
    else:
        src = rng.integers(-3, 4, size=(n_s, dim)).astype(float)
        tgt = rng.integers(-3, 4, size=(n_t, dim)).astype(float)
    for i in range(1, n_s):  # exact copies: equal distances, order by source index
        if draw(st.booleans()) and draw(st.booleans()):
            src[i] = src[draw(st.integers(0, i - 1))]
    n_paths = draw(st.integers(max(1, n_s - 3), n_s))  # fewer names than rows: duplicates
    src_paths = [f"/pool/img_{rng.integers(0, n_paths)}.jpg" for _ in range(n_s)]
    label_sides = draw(st.sampled_from(["both", "both", "source", "target", "neither"]))
    src_labels = ([draw(st.sampled_from(LABELS)) for _ in range(n_s)]
                  if label_sides in ("both", "source") else None)
    tgt_labels = ([draw(st.sampled_from(LABELS)) for _ in range(n_t)]
                  if label_sides in ("both", "target") else None)
    # topn one past the pool now and then: both sides must refuse it
    topn = draw(st.integers(1, n_s + 1)) if draw(st.integers(0, 9)) == 0 else draw(st.integers(1, n_s))
    return {
        "metric": metric, "src": src, "tgt": tgt, "src_paths": src_paths,
        "tgt_paths": [f"/weak/t_{i}.jpg" for i in range(n_t)] if draw(st.booleans()) else None,
        "src_labels": src_labels, "tgt_labels": tgt_labels, "topn": topn,
        "flag": draw(st.sampled_from(FLAGS)), "flag_as_override": draw(st.booleans()),
        "src_col": draw(st.sampled_from(["embedding", "vec"])),
        "threshold": (draw(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 3.5]))
                      if with_threshold else None),
    }


def _setup(root: Path, exp: dict) -> tuple[Path, list[str]]:
    """Inputs and a spec under ``root``; returns (spec, overrides)."""
    root.mkdir(parents=True, exist_ok=True)
    src = _write(root / "src.parquet", exp["src"], exp["src_paths"], exp["src_labels"], exp["src_col"])
    tgt = _write(root / "tgt.parquet", exp["tgt"], exp["tgt_paths"], exp["tgt_labels"], "embedding")
    spec = {"source_parquet": str(src), "target_parquet": str(tgt), "output_parquet": "???",
            "topn": exp["topn"], "knn_metric": exp["metric"],
            "source_embed_column_name": exp["src_col"]}
    overrides = [f"output_parquet={OUT_REL}"]
    flag = exp["flag"]
    if exp["flag_as_override"]:
        overrides.append(f"filter_by_label={str(flag).lower() if isinstance(flag, bool) else flag}")
    else:
        spec["filter_by_label"] = flag  # safe_dump quotes the strings, bools stay bools
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root / "spec.yaml", overrides


def _run_ours(spec: Path, overrides: list[str], cwd: Path) -> bool:
    """The runner in-process (as `data_services.py tmm nearest_neighbors -e spec ...`)."""
    (cwd / "ours").mkdir(exist_ok=True)
    sink = io.StringIO()
    with contextlib.chdir(cwd / "ours"), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        try:
            return ds_cli.main([CATEGORY, ACTION, "-e", str(spec), *overrides]) == 0
        except UsageError:
            return False


def _artifacts(folder: Path) -> tuple[pd.DataFrame, str]:
    out = folder / OUT_REL
    return pd.read_parquet(out), (out.parent / SUMMARY_FILE).read_text(encoding="utf-8")


def _assert_same(nv_dir: Path, our_dir: Path) -> None:
    nv_df, nv_text = _artifacts(nv_dir)
    our_df, our_text = _artifacts(our_dir)
    assert list(nv_df.columns) == ["filepath"] and our_df.columns[0] == "filepath"
    assert our_df["filepath"].tolist() == nv_df["filepath"].tolist()
    # the container's lines, identical and first; the runner's own lines only after them
    assert our_text.splitlines()[:len(nv_text.splitlines())] == nv_text.splitlines()
    assert our_text.startswith(nv_text)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(exp=experiments())
def test_runner_writes_what_nvidia_writes(nvidia_worker, tmp_path_factory, exp):
    root = tmp_path_factory.mktemp("nn")
    spec, overrides = _setup(root, exp)
    (root / "nv").mkdir()
    nv = nvidia_worker.run(CATEGORY, ACTION, spec, *overrides, cwd=root / "nv")
    ours = _run_ours(spec, overrides, root)
    assert ours == nv["ok"], nv.get("error")
    if not nv["ok"]:  # refused by both: topn beyond the pool; the runner writes nothing
        assert exp["topn"] > len(exp["src"]), nv["error"]
        assert not (root / "ours" / "out").exists()
        return
    _assert_same(root / "nv", root / "ours")


def _brute_force(exp: dict) -> tuple[list, int, int, int]:
    """The rule, read literally: (mined filepaths, pairs after the label filter, pairs
    dropped by distance, label mismatches)."""
    src, tgt = exp["src"], exp["tgt"]
    if exp["metric"] == "cosine":
        cos = (tgt @ src.T) / np.outer(np.linalg.norm(tgt, axis=1), np.linalg.norm(src, axis=1))
        dist = 1.0 - cos
    elif exp["metric"] == "manhattan":
        dist = np.abs(tgt[:, None] - src[None]).sum(axis=2)
    else:
        dist = np.sqrt(((tgt[:, None] - src[None]) ** 2).sum(axis=2))
    on = (label_filter_requested(exp["flag"])[0] and exp["src_labels"] is not None
          and exp["tgt_labels"] is not None)
    kept, mismatches, far = [], 0, 0
    for i in range(len(tgt)):
        for j in sorted(range(len(src)), key=lambda j: (dist[i, j], j))[:exp["topn"]]:
            if on and str(exp["src_labels"][j]).strip().upper() != str(exp["tgt_labels"][i]).strip().upper():
                mismatches += 1
            elif 0 <= exp["threshold"] < dist[i, j]:
                far += 1
            else:
                kept.append(exp["src_paths"][j])
    return list(dict.fromkeys(kept)), len(tgt) * exp["topn"] - mismatches, far, mismatches


def _not_near_threshold(exp: dict) -> bool:
    # a distance within rounding of the threshold has no well-defined side
    src, tgt = exp["src"], exp["tgt"]
    if exp["metric"] != "cosine" or exp["threshold"] < 0:
        return True
    cos = (tgt @ src.T) / np.outer(np.linalg.norm(tgt, axis=1), np.linalg.norm(src, axis=1))
    return bool(np.abs(1.0 - cos - exp["threshold"]).min() > 1e-6)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(exp=experiments(with_threshold=True).filter(lambda e: e["topn"] <= len(e["src"]))
       .filter(_not_near_threshold))
def test_distance_threshold_against_brute_force(tmp_path_factory, exp):
    root = tmp_path_factory.mktemp("nnd")
    spec, overrides = _setup(root, exp)
    overrides.append(f"distance_threshold={exp['threshold']}")
    assert _run_ours(spec, overrides, root)
    df, text = _artifacts(root / "ours")
    mined, after_label, far, _ = _brute_force(exp)
    assert df["filepath"].tolist() == mined
    lines = text.splitlines()
    assert f"  Total candidates: {after_label - far}" in lines
    assert f"  Unique items saved: {len(mined)}" in lines
    dist_line = (f"  Distance filtering: kept {after_label - far}/{after_label} pairs, dropped "
                 f"{far} exceeding threshold {exp['threshold']:.4f}")
    assert (dist_line in lines) == (exp["threshold"] >= 0)


@pytest.mark.parametrize("flag, labels", [("true", "both"), ("yes", "target")])
def test_full_entrypoint_and_cli_agree(nvidia, tmp_path, flag, labels):
    """The image's entrypoint (shlex re-split, Execution status) against our command line."""
    rng = np.random.default_rng(3)
    src = rng.integers(-3, 4, size=(12, 3)).astype(float)
    src[5] = src[2]
    exp = {"metric": "euclidean", "src": src, "tgt": rng.integers(-3, 4, size=(4, 3)).astype(float),
           "src_paths": [f"/pool/img_{i % 9}.jpg" for i in range(12)],
           "tgt_paths": [f"/weak/t_{i}.jpg" for i in range(4)],
           "src_labels": ([" pass", "PASS", "short"] * 4) if labels == "both" else None,
           "tgt_labels": ["Pass", "SHORT ", "pass", "missing"], "topn": 4, "flag": flag,
           "flag_as_override": True, "src_col": "embedding"}
    spec, overrides = _setup(tmp_path, exp)
    (tmp_path / "nv").mkdir()
    (tmp_path / "ours").mkdir()
    proc = nvidia.run(CATEGORY, ACTION, spec, *overrides, cwd=tmp_path / "nv")
    assert proc.returncode == 0 and "Execution status: PASS" in proc.stdout, proc.stdout[-2000:]
    ours = run_script("data_services.py", CATEGORY, ACTION, "-e", str(spec), *overrides,
                      cwd=str(tmp_path / "ours"))
    assert ours.returncode == 0, ours.stderr
    _assert_same(tmp_path / "nv", tmp_path / "ours")
    if labels != "both":  # asked for, impossible: both say so and do not filter
        assert "source" in ours.stderr and "label-filter-noop" in ours.stderr
        assert "Label filtering" not in _artifacts(tmp_path / "ours")[1]
