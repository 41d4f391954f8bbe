"""`tmm nearest_neighbors` (local runner): mined rows vs a brute-force oracle, label
filtering (on and no-op), distance threshold, dedupe, encoder checks, summary file.
Row for row parity with NVIDIA's module: tests/test_parity_nearest_neighbors.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_script

from tao_aoi import knn
from tao_aoi.cli import UsageError
from tao_aoi.data_services import nearest_neighbors as action
from tao_aoi.hooks.report_rules import (
    ENCODER_METADATA_KEY,
    MARK_BACKEND,
    MARK_LABEL_FILTER_NOOP,
)

ENC = {"model": "SigLIP", "model_path": "google/siglip-base-patch16-224", "dim": 8}


def write_emb(path: Path, vectors: np.ndarray, prefix: str, labels=None, identity=ENC,
              column="embedding", filepaths=None) -> Path:
    n, d = vectors.shape
    cols = {"filepath": pa.array(filepaths or [f"/pool/{prefix}_{i:04d}.jpg" for i in range(n)]),
            column: pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32()))}
    if labels is not None:
        cols["label"] = pa.array(labels)
    table = pa.table(cols)
    if identity is not None:
        table = table.replace_schema_metadata(
            {ENCODER_METADATA_KEY.encode(): json.dumps(dict(identity, dim=d)).encode()})
    pq.write_table(table, path)
    return path


def data(seed=0, n_s=300, n_t=12, d=8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_s, d)).astype(np.float32), rng.normal(size=(n_t, d)).astype(np.float32)


def cfg_for(tmp_path, **kw):
    cfg = {"source_parquet": str(tmp_path / "src.parquet"), "target_parquet": str(tmp_path / "tgt.parquet"),
           "output_parquet": str(tmp_path / "mining" / "mined.parquet"), "topn": 5,
           "knn_metric": "cosine", "source_embed_column_name": "embedding",
           "target_embed_column_name": "embedding", "filter_by_label": "false",
           "distance_threshold": -1.0, "allow_encoder_mismatch": False}
    cfg.update(kw)
    return cfg


def summary_of(cfg) -> dict:
    out = {}
    for line in action.summary_path(cfg["output_parquet"]).read_text().splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep:
            out[key] = value
    return out


def container_order(idx, prefix="s") -> list[str]:
    """Target-major, nearest-first filepaths, first occurrence kept (the container's rows)."""
    return list(dict.fromkeys(f"/pool/{prefix}_{j:04d}.jpg" for j in idx.ravel()))


@pytest.mark.parametrize("metric", ["cosine", "l2", "euclidean", "manhattan"])
def test_mined_rows_match_brute_force(tmp_path, metric):
    s, t = data()
    write_emb(tmp_path / "src.parquet", s, "s")
    write_emb(tmp_path / "tgt.parquet", t, "t")
    cfg = cfg_for(tmp_path, knn_metric=metric, topn=7)
    assert action.run(cfg) == 0
    mined = pd.read_parquet(cfg["output_parquet"])
    o_idx, o_dist = knn.brute_force(t, s, 7, metric)
    assert list(mined["filepath"]) == container_order(o_idx)
    assert list(mined.columns) == ["filepath", "best_distance", "nearest_target"]
    for _, row in mined.iterrows():
        j = int(row["filepath"][-8:-4])
        hits = np.argwhere(o_idx == j)
        best = min(o_dist[r, c] for r, c in hits)
        assert row["best_distance"] == pytest.approx(best, abs=1e-6)
        ti = min(hits.tolist(), key=lambda rc: (o_dist[rc[0], rc[1]], rc[0]))[0]
        assert row["nearest_target"] == f"/pool/t_{ti:04d}.jpg"
    meta = pq.read_schema(cfg["output_parquet"]).metadata
    assert json.loads(meta[ENCODER_METADATA_KEY.encode()])["model"] == "SigLIP"
    assert json.loads(meta[action.MINING_METADATA_KEY.encode()])["topn"] == 7
    summ = summary_of(cfg)
    assert summ["Target queries"] == "12" and summ["Source pool"] == "300"
    assert summ["Similar items per query"] == "7" and summ["Total candidates"] == "84"
    assert int(summ["Duplicates removed"]) == 84 - len(mined)
    assert summ["Unique items saved"] == str(len(mined))
    assert summ["Results saved to"] == cfg["output_parquet"]


def test_label_filter_keeps_only_same_label_pairs(tmp_path, capsys):
    s, t = data(1)
    s_lab = [["SHORT", "pass", "Missing "][i % 3] for i in range(len(s))]
    t_lab = [["short", "PASS", "MISSING", None][i % 4] for i in range(len(t))]
    write_emb(tmp_path / "src.parquet", s, "s", labels=s_lab)
    write_emb(tmp_path / "tgt.parquet", t, "t", labels=t_lab)
    cfg = cfg_for(tmp_path, filter_by_label="TRUE", topn=6)
    action.run(cfg)
    mined = pd.read_parquet(cfg["output_parquet"])
    o_idx, _ = knn.brute_force(t, s, 6, "cosine")
    kept = []
    dropped = 0
    for r in range(len(t)):
        for j in o_idx[r]:
            # a null label reads as "NONE" (str of pandas' None), which no source label is
            if s_lab[j].strip().upper() == str(t_lab[r]).strip().upper():
                kept.append(f"/pool/s_{j:04d}.jpg")
            else:
                dropped += 1
    assert list(mined["filepath"]) == list(dict.fromkeys(kept))
    assert "label" in mined.columns  # the source label travels with the mined path
    text = action.summary_path(cfg["output_parquet"]).read_text()
    assert f"\nLabel filtering: kept {72 - dropped}/72 pairs, dropped {dropped} mismatches\n\n" in text
    assert MARK_LABEL_FILTER_NOOP not in capsys.readouterr().err


@pytest.mark.parametrize("flag", [True, "true", "True"])
def test_label_filter_without_label_column_warns_and_does_not_filter(tmp_path, capsys, flag):
    s, t = data(2)
    write_emb(tmp_path / "src.parquet", s, "s", labels=["A"] * len(s))
    write_emb(tmp_path / "tgt.parquet", t, "t")  # no label column
    cfg = cfg_for(tmp_path, filter_by_label=flag)
    action.run(cfg)
    captured = capsys.readouterr()
    assert MARK_LABEL_FILTER_NOOP in captured.err and "missing from: target;" in captured.err
    assert MARK_LABEL_FILTER_NOOP in action.summary_path(cfg["output_parquet"]).read_text()
    o_idx, _ = knn.brute_force(t, s, 5, "cosine")
    assert len(pd.read_parquet(cfg["output_parquet"])) == len(set(o_idx.ravel()))


def test_distance_threshold_drops_far_pairs(tmp_path):
    s, t = data(3)
    write_emb(tmp_path / "src.parquet", s, "s")
    write_emb(tmp_path / "tgt.parquet", t, "t")
    o_idx, o_dist = knn.brute_force(t, s, 5, "cosine")
    thr = float(np.median(o_dist))
    cfg = cfg_for(tmp_path, distance_threshold=thr)
    action.run(cfg)
    mined = pd.read_parquet(cfg["output_parquet"])
    assert list(mined["filepath"]) == container_order(o_idx[o_dist <= thr])
    assert (mined["best_distance"] <= thr).all()
    far = int((o_dist > thr).sum())
    assert summary_of(cfg)["Distance filtering"] == (f"kept {60 - far}/60 pairs, dropped {far} "
                                                     f"exceeding threshold {thr:.4f}")


def test_dedupe_across_targets_keeps_first_occurrence(tmp_path):
    rng = np.random.default_rng(4)
    s = rng.normal(size=(4, 8)).astype(np.float32)
    t = np.repeat(s[:1], 3, axis=0) + 0.01 * rng.normal(size=(3, 8)).astype(np.float32)
    # duplicate source filepath: one image listed twice in the pool
    fps = ["/pool/a.jpg", "/pool/b.jpg", "/pool/a.jpg", "/pool/c.jpg"]
    write_emb(tmp_path / "src.parquet", s, "s", filepaths=fps)
    write_emb(tmp_path / "tgt.parquet", t, "t")
    cfg = cfg_for(tmp_path, topn=4)
    action.run(cfg)
    mined = pd.read_parquet(cfg["output_parquet"])
    o_idx, _ = knn.brute_force(t, s, 4, "cosine")
    assert list(mined["filepath"]) == list(dict.fromkeys(fps[j] for j in o_idx.ravel()))
    assert mined.iloc[0]["filepath"] == "/pool/a.jpg"
    summ = summary_of(cfg)
    assert summ["Total candidates"] == "12" and summ["Unique items saved"] == "3"
    assert summ["Duplicates removed"] == "9"


def test_topn_beyond_pool_is_refused(tmp_path):
    # The container fails here too (cuML cannot return more neighbours than sources).
    s, t = data(4, n_s=4)
    write_emb(tmp_path / "src.parquet", s, "s")
    write_emb(tmp_path / "tgt.parquet", t, "t")
    cfg = cfg_for(tmp_path, topn=5)
    with pytest.raises(UsageError, match="topn=5 exceeds the 4 source embeddings"):
        action.run(cfg)
    assert not Path(cfg["output_parquet"]).exists()


def test_mismatched_encoders_are_refused_naming_both(tmp_path):
    s, t = data(5)
    write_emb(tmp_path / "src.parquet", s, "s")
    clip = {"model": "CLIP", "model_path": "openai/clip-vit-base-patch32"}
    write_emb(tmp_path / "tgt.parquet", t, "t", identity=clip)
    cfg = cfg_for(tmp_path)
    with pytest.raises(UsageError) as err:
        action.run(cfg)
    msg = str(err.value)
    assert "SigLIP google/siglip-base-patch16-224" in msg and "CLIP openai/clip-vit-base-patch32" in msg
    assert not Path(cfg["output_parquet"]).exists()


def test_mismatch_allowed_is_loud(tmp_path, capsys):
    s, t = data(5)
    write_emb(tmp_path / "src.parquet", s, "s")
    write_emb(tmp_path / "tgt.parquet", t, "t", identity={"model": "CLIP", "model_path": "x"})
    cfg = cfg_for(tmp_path, allow_encoder_mismatch=True)
    action.run(cfg)
    assert action.MARK_ENCODER_MISMATCH in capsys.readouterr().err
    assert "MISMATCH" in summary_of(cfg)["Encoder"]


def test_dimension_mismatch_is_always_an_error(tmp_path):
    s, _ = data(6)
    write_emb(tmp_path / "src.parquet", s, "s")
    write_emb(tmp_path / "tgt.parquet", np.ones((3, 4), np.float32), "t", identity=None)
    with pytest.raises(UsageError, match="dim 8 .* dim 4"):
        action.run(cfg_for(tmp_path, allow_encoder_mismatch=True))


def test_missing_metadata_warns_and_proceeds(tmp_path, capsys):
    s, t = data(7)
    write_emb(tmp_path / "src.parquet", s, "s", identity=None)  # e.g. written by the container
    write_emb(tmp_path / "tgt.parquet", t, "t")
    cfg = cfg_for(tmp_path)
    assert action.run(cfg) == 0
    err = capsys.readouterr().err
    assert action.MARK_ENCODER_UNKNOWN in err and "source_parquet" in err
    assert summary_of(cfg)["Encoder"].endswith("(unverified)")


def test_embedding_column_names(tmp_path):
    s, t = data(8)
    write_emb(tmp_path / "src.parquet", s, "s", column="vec")
    write_emb(tmp_path / "tgt.parquet", t, "t")
    with pytest.raises(UsageError, match="no embedding column 'embedding'.*vec"):
        action.run(cfg_for(tmp_path))
    cfg = cfg_for(tmp_path, source_embed_column_name="vec")
    assert action.run(cfg) == 0


def test_unusual_filter_value_is_off_with_a_warning(tmp_path, capsys):
    # The container reads anything but true/1/yes as off; the runner does too, and says so.
    s, t = data(9)
    write_emb(tmp_path / "src.parquet", s, "s", labels=["A", "B"] * 150)
    write_emb(tmp_path / "tgt.parquet", t, "t", labels=["A"] * 12)
    cfg = cfg_for(tmp_path, filter_by_label="on")
    assert action.run(cfg) == 0
    assert "filter_by_label='on' is read as off" in capsys.readouterr().err
    assert "Label filtering" not in action.summary_path(cfg["output_parquet"]).read_text()


def test_cli_end_to_end_with_spec(tmp_path):
    s, t = data(10)
    write_emb(tmp_path / "src.parquet", s, "s", labels=["A", "B"] * 150)
    write_emb(tmp_path / "tgt.parquet", t, "t", labels=["A"] * 12)
    spec = tmp_path / "mining_spec.yaml"
    spec.write_text(yaml.safe_dump({"topn": 3, "knn_metric": "cosine", "filter_by_label": "false",
                                    "source_parquet": "???", "target_parquet": "???",
                                    "output_parquet": "???"}))
    out = tmp_path / "res" / "mined.parquet"
    r = run_script("data_services.py", "tmm", "nearest_neighbors", "-e", spec,
                   f"source_parquet={tmp_path / 'src.parquet'}",
                   f"target_parquet={tmp_path / 'tgt.parquet'}", f"output_parquet={out}",
                   "filter_by_label=true", "knn_metric=euclidean")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"{MARK_BACKEND} local")
    mined = pd.read_parquet(out)
    assert set(mined["label"]) == {"A"}
    assert (out.parent / "mining_summary.txt").is_file()
    r = run_script("data_services.py", "tmm", "nearest_neighbors", "-e", spec,
                   f"source_parquet={tmp_path / 'src.parquet'}",
                   f"target_parquet={tmp_path / 'nope.parquet'}", f"output_parquet={out}")
    assert r.returncode == 2 and "target_parquet not found" in r.stderr
