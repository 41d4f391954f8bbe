"""Pool-scale mining (issue 14), local runner only: exclusion before search
(``exclude_parquet``), sharded ``source_parquet`` streamed in blocks (same output as one
file), and the streaming k-NN vs the in-memory one and a float64 brute force."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tao_aoi import knn
from tao_aoi.cli import UsageError
from tao_aoi.data_services import nearest_neighbors as action
from tao_aoi.hooks.report_rules import ENCODER_METADATA_KEY

ENC = {"model": "SigLIP", "model_path": "google/siglip-base-patch16-224"}


def write_emb(path: Path, vectors: np.ndarray, filepaths, labels=None) -> Path:
    cols = {"filepath": pa.array(list(filepaths)),
            "embedding": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32()))}
    if labels is not None:
        cols["label"] = pa.array(list(labels))
    table = pa.table(cols).replace_schema_metadata(
        {ENCODER_METADATA_KEY.encode(): json.dumps(dict(ENC, dim=vectors.shape[1])).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=37)
    return path


def pool(seed=0, n_s=400, n_t=9, d=16):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_s, d)).astype(np.float32)
    t = rng.normal(size=(n_t, d)).astype(np.float32)
    return s, t, [f"/pool/s_{i:05d}.jpg" for i in range(n_s)]


def cfg_for(tmp, src, **kw):
    cfg = {"source_parquet": str(src), "target_parquet": str(tmp / "tgt.parquet"),
           "output_parquet": str(tmp / "out" / "mined.parquet"), "topn": 5,
           "knn_metric": "cosine", "filter_by_label": "false", "distance_threshold": -1.0}
    cfg.update(kw)
    return cfg


def mined(cfg):
    assert action.run(cfg) == 0
    return pq.read_table(cfg["output_parquet"])


# ---- knn core -----------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
def test_topk_exclude_equals_brute_force_on_the_kept_rows(metric):
    s, t, _ = pool(1, n_s=500, n_t=7, d=12)
    excl = np.zeros(len(s), bool)
    excl[np.random.default_rng(2).choice(len(s), 200, replace=False)] = True
    idx, dist = knn.topk(t, s, 6, metric, exclude=excl, first_block=8, memory_budget=1 << 14)
    kept = np.flatnonzero(~excl)
    ref_i, ref_d = knn.brute_force(t, s[kept], 6, metric)
    assert (idx == kept[ref_i]).all()
    np.testing.assert_allclose(dist, ref_d, rtol=1e-9, atol=1e-12)
    assert not excl[idx].any()


def test_exclusion_gives_exactly_the_next_nearest():
    s, t, _ = pool(3, n_s=300, n_t=5)
    k = 4
    full_i, _ = knn.brute_force(t, s, 3 * k, "cosine")
    first_i, _ = knn.topk(t, s, k, "cosine")
    assert (first_i == full_i[:, :k]).all()
    excl = np.zeros(len(s), bool)
    excl[first_i.ravel()] = True          # everything the first run mined
    second_i, _ = knn.topk(t, s, k, "cosine", exclude=excl, first_block=16)
    for row in range(len(t)):            # each target's next k that were not mined
        expected = [j for j in full_i[row] if not excl[j]][:k]
        assert second_i[row].tolist() == expected


def test_stream_from_shards_equals_in_memory(tmp_path):
    s, t, fps = pool(4, n_s=1000, n_t=6, d=8)
    one = write_emb(tmp_path / "one.parquet", s, fps)
    for a, b in ((0, 333), (333, 334), (334, 1000)):
        write_emb(tmp_path / "shards" / f"part-{a:05d}.parquet", s[a:b], fps[a:b])
    ref = knn.topk(t, s, 5, "euclidean", first_block=10, memory_budget=1 << 13)
    for src in (one, tmp_path / "shards"):
        got = knn.topk_stream(t, knn.ParquetShards(src, batch_rows=50), 5, "euclidean",
                              first_block=10, memory_budget=1 << 13)
        assert (got[0] == ref[0]).all() and (got[1] == ref[1]).all()


# ---- the action -----------------------------------------------------------------------------

def test_action_exclude_parquet_vs_oracle(tmp_path):
    s, t, fps = pool(5)
    src = write_emb(tmp_path / "src.parquet", s, fps)
    write_emb(tmp_path / "tgt.parquet", t, [f"/kpi/t{i}.jpg" for i in range(len(t))])
    first = mined(cfg_for(tmp_path, src))
    ledger = pd.DataFrame({"filepath": first.column("filepath").to_pylist(),
                           "run_id": "r1", "recorded_at": "2026-01-01T00:00:00Z"})
    ledger.to_parquet(tmp_path / "ledger.parquet", index=False)
    cfg = cfg_for(tmp_path, src, exclude_parquet=str(tmp_path / "ledger.parquet"),
                  output_parquet=str(tmp_path / "out2" / "mined.parquet"))
    second = mined(cfg)
    excl = np.isin(fps, ledger["filepath"])
    kept = np.flatnonzero(~excl)
    ref_i, _ = knn.brute_force(t, s[kept], 5, "cosine")
    expected = list(dict.fromkeys(fps[j] for j in kept[ref_i].ravel()))
    assert second.column("filepath").to_pylist() == expected
    assert not set(expected) & set(ledger["filepath"])
    summary = (tmp_path / "out2" / "mining_summary.txt").read_text()
    assert "Excluded before search: %d of %d" % (excl.sum(), len(s)) in summary
    # the container's lines come first, unchanged
    assert summary.splitlines()[0] == "Summary:" and summary.index("Local runner:") > 0
    # a CSV of filepaths (./ spellings normalised) works the same
    pd.DataFrame({"filepath": ["/pool/./" + p.split("/")[-1] for p in ledger["filepath"]]}).to_csv(
        tmp_path / "ex.csv", index=False)
    cfg["exclude_parquet"] = str(tmp_path / "ex.csv")
    cfg["output_parquet"] = str(tmp_path / "out3" / "mined.parquet")
    assert mined(cfg).column("filepath").to_pylist() == expected


def test_action_exclude_errors(tmp_path):
    s, t, fps = pool(6, n_s=20)
    src = write_emb(tmp_path / "src.parquet", s, fps)
    write_emb(tmp_path / "tgt.parquet", t, [f"/kpi/t{i}.jpg" for i in range(len(t))])
    for bad, msg in ((tmp_path / "nope.parquet", "not found"), (tmp_path, "is a folder")):
        with pytest.raises(UsageError, match=msg):
            action.run(cfg_for(tmp_path, src, exclude_parquet=str(bad)))
    pd.DataFrame({"filepath": fps[:17]}).to_parquet(tmp_path / "most.parquet")
    with pytest.raises(UsageError, match="left after excluding 17"):
        action.run(cfg_for(tmp_path, src, exclude_parquet=str(tmp_path / "most.parquet")))
    # empty value = off (never reads the cwd)
    assert len(mined(cfg_for(tmp_path, src, exclude_parquet=""))) > 0
    assert not (tmp_path / "out" / "mined.parquet").with_name("x").exists()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_action_shards_identical_to_single_file(tmp_path, metric):
    s, t, fps = pool(7, n_s=900, n_t=8)
    labels = [("PASS", "MISSING", None)[i % 3] for i in range(len(s))]
    one = write_emb(tmp_path / "one.parquet", s, fps, labels)
    cuts = [0, 100, 101, 450, 900]
    for a, b in zip(cuts, cuts[1:]):
        write_emb(tmp_path / "shards" / f"pool-{a:04d}.parquet", s[a:b], fps[a:b], labels[a:b])
    write_emb(tmp_path / "tgt.parquet", t, [f"/kpi/t{i}.jpg" for i in range(len(t))],
              ["PASS"] * len(t))
    a = mined(cfg_for(tmp_path, one, knn_metric=metric, filter_by_label="true",
                      output_parquet=str(tmp_path / "a" / "mined.parquet")))
    b = mined(cfg_for(tmp_path, tmp_path / "shards", knn_metric=metric, filter_by_label="true",
                      output_parquet=str(tmp_path / "b" / "mined.parquet")))
    assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
    sa = (tmp_path / "a" / "mining_summary.txt").read_text().splitlines()
    sb = (tmp_path / "b" / "mining_summary.txt").read_text().splitlines()
    assert [x for x in sa if "Seconds" not in x and "Results" not in x and "Source pool" not in x] == \
        [x for x in sb if "Seconds" not in x and "Results" not in x and "Source pool" not in x]
    assert any("(4 shards)" in x for x in sb)


def test_action_shards_must_share_the_encoder(tmp_path):
    s, t, fps = pool(8, n_s=40)
    write_emb(tmp_path / "sh" / "a.parquet", s[:20], fps[:20])
    p = write_emb(tmp_path / "sh" / "b.parquet", s[20:], fps[20:])
    tab = pq.read_table(p)
    pq.write_table(tab.replace_schema_metadata({ENCODER_METADATA_KEY.encode(): json.dumps(
        {"model": "CLIP", "model_path": "x", "dim": 16}).encode()}), p)
    write_emb(tmp_path / "tgt.parquet", t, [f"/kpi/t{i}.jpg" for i in range(len(t))])
    with pytest.raises(UsageError, match="shards disagree"):
        action.run(cfg_for(tmp_path, tmp_path / "sh"))


def test_action_nan_in_a_shard_is_a_usage_error(tmp_path):
    s, t, fps = pool(9, n_s=60)
    s[45, 3] = np.nan
    write_emb(tmp_path / "sh" / "a.parquet", s[:30], fps[:30])
    write_emb(tmp_path / "sh" / "b.parquet", s[30:], fps[30:])
    write_emb(tmp_path / "tgt.parquet", t, [f"/kpi/t{i}.jpg" for i in range(len(t))])
    with pytest.raises(UsageError, match="b.parquet.*NaN or infinite"):
        action.run(cfg_for(tmp_path, tmp_path / "sh", knn_metric="euclidean"))
    assert not (tmp_path / "out" / "mined.parquet").exists()


# ---- the streamed search's workers, reads and buffers ------------------------------------

def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
@pytest.mark.parametrize("order", ["random", "ascending"])
def test_any_worker_count_gives_the_brute_force_answer(metric, order, monkeypatch):
    # "ascending": every block beats the last (every row is heavy in every block, and a
    # block's parts overflow their entry limit); narrow parts: up to 20 per block
    monkeypatch.setattr(knn.Workers, "MIN_PART_WIDTH", 8)
    s, t, _ = pool(11, n_s=1500, n_t=7, d=12)
    if order == "ascending":
        ref_i, _ = knn.brute_force(t[:1], s, len(s), metric)
        s = s[ref_i[0][::-1]].copy()
    want_i, want_d = knn.brute_force(t, s, 6, metric)
    for budget in (1 << 14, 1 << 18):
        for workers in (1, 2, 3, 5):
            got_i, got_d = knn.topk(t, s, 6, metric, first_block=16, memory_budget=budget,
                                    workers=workers)
            assert (got_i == want_i).all(), (budget, workers)
            np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
def test_a_block_whose_parts_select_differently_gives_the_brute_force_answer(metric, monkeypatch):
    # half of the targets lie along one direction, and a run of sources along it sits mid
    # pool: the part holding that run overflows its entry limit (its mask is used, its rows
    # are heavy) while the block's other parts hand over their few entries
    monkeypatch.setattr(knn.Workers, "MIN_PART_WIDTH", 8)
    rng = np.random.default_rng(23)
    d, u = 16, np.eye(16, dtype=np.float32)[0] * 3
    t = rng.standard_normal((64, d)).astype(np.float32)
    t[:32] = u + 0.05 * rng.standard_normal((32, d))
    s = rng.standard_normal((3000, d)).astype(np.float32)
    s[1500:1700] = u + 0.05 * rng.standard_normal((200, d))
    kinds = []
    block_entries = knn._block_entries

    def spy(cands, tile, found, *args):
        kinds.append({f is None for f in found})
        return block_entries(cands, tile, found, *args)

    monkeypatch.setattr(knn, "_block_entries", spy)
    want_i, want_d = knn.brute_force(t, s, 5, metric)
    got_i, got_d = knn.topk(t, s, 5, metric, first_block=16, memory_budget=1 << 19, workers=3)
    assert {True, False} in kinds
    assert (got_i == want_i).all()
    np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=1e-12)


def test_streamed_workers_and_drop_behind_do_not_change_the_answer(tmp_path):
    s, t, fps = pool(12, n_s=900, n_t=5, d=8)
    for a in range(0, 900, 300):
        write_emb(tmp_path / "sh" / f"part-{a:05d}.parquet", s[a:a + 300], fps[a:a + 300])
    ref = knn.topk(t, s, 4, "cosine")
    for workers in (1, 2, 4):
        for drop in (False, True):
            src = knn.ParquetShards(tmp_path / "sh", normalize=True, batch_rows=40)
            src.drop_behind = drop
            got = knn.topk_stream(t, src, 4, "cosine", memory_budget=1 << 13, workers=workers)
            assert (got[0] == ref[0]).all()
            np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-6)


def test_a_search_restores_blas_threads_and_leaves_no_thread_or_file(tmp_path):
    import threading

    s, t, fps = pool(13, n_s=600, n_t=4, d=8)
    s_bad = s.copy()
    s_bad[500, 2] = np.inf
    write_emb(tmp_path / "ok" / "a.parquet", s, fps)
    write_emb(tmp_path / "bad" / "a.parquet", s_bad, fps)
    blas, fds, threads = _blas_threads(), _open_fds(), threading.active_count()
    knn.topk_stream(t, knn.ParquetShards(tmp_path / "ok", batch_rows=50), 3, "euclidean",
                    memory_budget=1 << 13, workers=3)
    with pytest.raises(knn.SourceError, match="NaN or infinite"):
        knn.topk_stream(t, knn.ParquetShards(tmp_path / "bad", batch_rows=50), 3, "euclidean",
                        memory_budget=1 << 13, workers=3)
    assert _blas_threads() == blas
    assert _open_fds() == fds
    assert threading.active_count() == threads


def test_matrix_of_reads_every_arrow_list_layout():
    rows = np.arange(24, dtype=np.float32).reshape(6, 4)
    flat = pa.array(rows.reshape(-1))
    offsets = pa.array(np.arange(0, 25, 4, dtype=np.int32))
    layouts = {
        "list": pa.ListArray.from_arrays(offsets, flat),
        "large_list": pa.LargeListArray.from_arrays(pa.array(np.arange(0, 25, 4)), flat),
        "fixed_size_list": pa.FixedSizeListArray.from_arrays(flat, 4),
        "list<double>": pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1).astype(np.float64))),
    }
    for name, arr in layouts.items():
        assert (knn.matrix_of(arr, "x", "e") == rows).all(), name
        assert (knn.matrix_of(arr.slice(2, 3), "x", "e") == rows[2:5]).all(), name
        assert knn.matrix_of(arr.slice(6, 0), "x", "e", 4).shape == (0, 4), name
    holed = pa.ListArray.from_arrays(offsets, pa.array([1.0] * 13 + [None] + [1.0] * 10, pa.float32()))
    assert (knn.matrix_of(holed.slice(0, 3), "x", "e") == 1).all()  # the hole is in row 3
    with pytest.raises(knn.SourceError, match="x: column 'e' holds NaN or infinite"):
        knn.matrix_of(holed, "x", "e")
    with pytest.raises(knn.SourceError, match="different lengths"):
        knn.matrix_of(pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32())), "x", "e")


def test_list_array_writes_rows_and_null_rows():
    vec = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert knn.list_array(vec).to_pylist() == vec.tolist()
    col = knn.list_array(vec, pa.float64(), present=[False, True, True, False, True])
    assert col.type == pa.list_(pa.float64())
    assert col.to_pylist() == [None, vec[0].tolist(), vec[1].tolist(), None, vec[2].tolist()]
    assert (knn.matrix_of(col.drop_null(), "x", "e") == vec).all()
    assert knn.list_array(np.zeros((0, 0), np.float32), present=[False, False]).to_pylist() == [None, None]
    with pytest.raises(ValueError, match="3 vectors for 2 present lists"):
        knn.list_array(vec, present=[True, False, True])


def test_decode_streams_follow_cores_and_targets():
    assert knn.decode_streams(1000, 2) == 1
    assert knn.decode_streams(1000, 16) == 5
    assert knn.decode_streams(10, 2) == 2 and knn.decode_streams(10, 1) == 1
    assert knn.decode_streams(10**6, 64) == 1


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_pool_searched_in_parts_at_once_gives_the_same_answer(tmp_path, metric):
    # few targets and 6 "cores": the pool is split into parts searched in parallel threads
    s, t, fps = pool(14, n_s=1300, n_t=3, d=8)
    for a in range(0, 1300, 400):
        write_emb(tmp_path / "sh" / f"part-{a:05d}.parquet", s[a:a + 400], fps[a:a + 400])
    excl = np.zeros(len(s), bool)
    excl[::7] = True
    want = knn.brute_force(t, s[~excl], 5, metric)
    kept = np.flatnonzero(~excl)
    blas, seen = _blas_threads(), []
    for workers in (1, 6):
        src = knn.ParquetShards(tmp_path / "sh", normalize=metric == "cosine", batch_rows=30)
        assert len(src.split(knn.decode_streams(3, workers))) == workers
        got = knn.topk_stream(t, src, 5, metric, memory_budget=1 << 12, exclude=excl,
                              workers=workers, progress=seen.append)
        assert (got[0] == kept[want[0]]).all(), workers
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)
    assert sum(seen) == 2 * len(s) and _blas_threads() == blas


def test_a_failing_part_stops_the_others(tmp_path):
    s, t, fps = pool(15, n_s=1200, n_t=2, d=8)
    s[50, 1] = np.nan  # in the first part: the others give up at their next block
    write_emb(tmp_path / "a.parquet", s, fps)
    with pytest.raises(knn.SourceError, match="NaN or infinite"):
        knn.topk_stream(t, knn.ParquetShards(tmp_path / "a.parquet", batch_rows=20), 3,
                        "euclidean", memory_budget=1 << 12, workers=4)


def test_row_norms_in_float32_stay_within_their_bound_and_exact_at_the_extremes():
    rng = np.random.default_rng(16)
    d = 768
    x = rng.standard_normal((300, d)).astype(np.float32) * rng.uniform(1e-3, 1e3, (300, 1)).astype(np.float32)
    exact = np.sqrt(np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64)))
    rel = np.abs(knn.row_norms(x) - exact) / exact
    assert rel.max() <= (d / 2 + 2) * 2.0 ** -24
    # float32 squares overflow (1e20) or underflow (1e-25): summed again in float64
    odd = np.stack([np.full(d, 1e20), np.full(d, 1e-25), np.zeros(d)]).astype(np.float32)
    got = knn.check_finite(odd, "x", "e")
    np.testing.assert_allclose(got[:2], np.sqrt(d) * np.array([1e20, 1e-25]), rtol=1e-6)
    assert got[2] == 0
    unit = knn.l2_normalize_(odd.copy())
    np.testing.assert_allclose(np.linalg.norm(unit[:2].astype(np.float64), axis=1), 1, rtol=1e-6)
    assert not unit[2].any()
    for bad in (np.inf, np.nan):
        odd[1, 5] = bad
        with pytest.raises(knn.SourceError, match="NaN or infinite"):
            knn.check_finite(odd, "x", "e")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_near_ties_at_extreme_scales_give_the_brute_force_answer(tmp_path, metric):
    # sources a hair apart in direction, at scales whose float32 squares overflow or
    # underflow: the float32 norms and the widened bound still rank them exactly
    rng = np.random.default_rng(17)
    d = 64
    base = rng.standard_normal(d)
    s = base + 1e-6 * rng.standard_normal((600, d))
    if metric == "cosine":
        s *= np.repeat([1e-22, 1.0, 1e21], 200)[:, None]
    s = s.astype(np.float32)
    t = (base + 1e-5 * rng.standard_normal((4, d))).astype(np.float32)
    want = knn.brute_force(t, s, 7, metric)
    got = knn.topk(t, s, 7, metric, first_block=16, memory_budget=1 << 15, workers=2)
    assert (got[0] == want[0]).all()
    # a streamed cosine search ranks the unit rows it normalised (float32, as the action
    # hands them over): exact against the brute force over those rows
    write_emb(tmp_path / "p.parquet", s, [f"/p/{i}.jpg" for i in range(len(s))])
    if metric == "cosine":
        t, s = knn.l2_normalize_(t.copy()), knn.l2_normalize_(s.copy())
        want = knn.brute_force(t, s, 7, metric)
    src = knn.ParquetShards(tmp_path / "p.parquet", normalize=metric == "cosine", batch_rows=50)
    got = knn.topk_stream(t, src, 7, metric, normalized=metric == "cosine", first_block=16,
                          memory_budget=1 << 15, workers=2)
    assert (got[0] == want[0]).all()


@pytest.mark.parametrize("drop", [False, True])
def test_readahead_hints_every_row_group_once_across_shards_then_stops(tmp_path, monkeypatch, drop):
    import os
    import threading

    s, t, fps = pool(18, n_s=700, n_t=3, d=8)
    for a in range(0, 700, 250):  # shards of 250 rows, row groups of 37: 21 groups
        write_emb(tmp_path / "sh" / f"part-{a:05d}.parquet", s[a:a + 250], fps[a:a + 250])
    calls, real = [], os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, off, n, advice: (calls.append((os.readlink(f"/proc/self/fd/{fd}"),
                                                                  off, advice)), real(fd, off, n, advice)))
    monkeypatch.setattr(knn._DirectChunks, "open", classmethod(lambda cls, groups, max_chunk=None: None))  # no O_DIRECT
    fds, threads = _open_fds(), threading.active_count()
    src = knn.ParquetShards(tmp_path / "sh", batch_rows=20, rows=(100, 650))  # 2 shards and a bit
    src.drop_behind = drop
    # one worker: one decode stream (few targets on more cores split the pool into parts)
    got = knn.topk_stream(t, src, 3, "euclidean", memory_budget=1 << 12, workers=1)
    assert (got[0] == knn.brute_force(t, s[100:650], 3, "euclidean")[0]).all()  # window rows
    assert _open_fds() == fds and threading.active_count() == threads
    wanted, start = [], 0
    for p, meta in zip(src.paths, src.meta):
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if start < 650 and start + n > 100:  # the row groups holding the window's rows
                wanted += [(str(p), off) for off, _ in knn._column_ranges(meta, "embedding", [g])[0]]
            start += n
    assert len(wanted) == 17  # 5 + 7 + 5
    will = [(p, off) for p, off, adv in calls if adv == os.POSIX_FADV_WILLNEED]
    # in read order, across shards, each once (the last ones are skipped when the reader is
    # done before the hint thread gets to them: hints only)
    assert will and will == wanted[:len(will)]
    dropped = [(p, off) for p, off, adv in calls if adv == os.POSIX_FADV_DONTNEED]
    assert dropped == (wanted if drop else [])


def test_a_pool_larger_than_memory_is_read_around_the_page_cache(tmp_path, monkeypatch):
    import os
    import threading

    s, t, fps = pool(19, n_s=900, n_t=4, d=8)
    for a in range(0, 900, 300):
        write_emb(tmp_path / "sh" / f"part-{a:05d}.parquet", s[a:a + 300], fps[a:a + 300])
    opened, real_open = [], knn._DirectChunks.open.__func__
    monkeypatch.setattr(knn._DirectChunks, "open",
                        classmethod(lambda cls, groups, max_chunk=None:
                                    opened.append(real_open(cls, groups, max_chunk)) or opened[-1]))
    fds, threads = _open_fds(), threading.active_count()
    want = knn.brute_force(t, s, 4, "cosine")
    for rows, workers in (((0, 900), 1), ((0, 900), 2), ((130, 770), 1)):
        src = knn.ParquetShards(tmp_path / "sh", normalize=True, batch_rows=16, rows=rows)
        src.drop_behind = True
        got = knn.topk_stream(t, src, 4, "cosine", memory_budget=1 << 12, workers=workers)
        ref = knn.brute_force(t, s[rows[0]:rows[1]], 4, "cosine") if rows != (0, 900) else want
        assert (got[0] == ref[0]).all(), rows
        np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-6)
    assert opened and all(isinstance(o, knn._DirectChunks) for o in opened)  # O_DIRECT on this disk
    assert all(len(o._buffers) <= o.DEPTH + 1 for o in opened)  # buffers reused, chunk to chunk
    assert _open_fds() == fds and threading.active_count() == threads
    # a file system without O_DIRECT (or chunks over MAX_CHUNK): read through the page cache
    monkeypatch.setattr(os, "O_DIRECT", 0o77777777, raising=False)
    assert real_open(knn._DirectChunks, [(tmp_path / "sh" / "part-00000.parquet", [(4, 100)])]) is None
    monkeypatch.setattr(knn._DirectChunks, "MAX_CHUNK", 10)
    assert real_open(knn._DirectChunks, [(tmp_path / "sh" / "part-00000.parquet", [(4, 100)])]) is None


def test_a_chunk_file_serves_views_inside_and_the_file_outside(tmp_path):
    data = bytes(range(256)) * 64
    (tmp_path / "f.bin").write_bytes(data)
    buf = bytearray(data[4096:8192])
    f = knn._ChunkFile(str(tmp_path / "f.bin"), len(data), 4096, memoryview(buf))
    f.seek(5000)
    inside = f.read(100)
    assert isinstance(inside, memoryview) and bytes(inside) == data[5000:5100] and f.tell() == 5100
    f.seek(8150)
    assert bytes(f.read(100)) == data[8150:8250]  # past the chunk: from the file
    f.seek(-10, 2)
    assert bytes(f.read()) == data[-10:] and f.read(5) == b""


def test_parts_read_at_once_share_the_memory_of_direct_reads(tmp_path, monkeypatch):
    s, t, fps = pool(20, n_s=800, n_t=2, d=8)
    write_emb(tmp_path / "a.parquet", s, fps)
    limits, real_open = [], knn._DirectChunks.open.__func__
    monkeypatch.setattr(knn._DirectChunks, "open", classmethod(
        lambda cls, groups, max_chunk=None: limits.append(max_chunk) or real_open(cls, groups, max_chunk)))
    src = knn.ParquetShards(tmp_path / "a.parquet", batch_rows=16)
    src.drop_behind = True
    got = knn.topk_stream(t, src, 3, "euclidean", memory_budget=1 << 12, workers=4)
    assert (got[0] == knn.brute_force(t, s, 3, "euclidean")[0]).all()
    assert sorted(limits) == [knn._DirectChunks.MAX_CHUNK // 4] * 4  # 4 streams: a quarter each


@pytest.mark.parametrize("workers", [1, 2])
def test_wholly_excluded_blocks_leave_the_other_blocks_intact(tmp_path, workers):
    # a block with nothing left to score has no tile to overlap with: the blocks before it
    # must be ended before the next decode reuses their buffer (a ring of three)
    s, t, fps = pool(21, n_s=1500, n_t=3, d=8)
    write_emb(tmp_path / "a.parquet", s, fps)
    budget, first = 1 << 12, 16
    _, bounds = knn.block_bounds(len(s), len(t), 4, budget, first)
    assert len(bounds) >= 6
    excl = np.zeros(len(s), bool)
    for b in (1, 2, 4):
        excl[bounds[b][0]:bounds[b][1]] = True
    kept = np.flatnonzero(~excl)
    for metric in ("cosine", "euclidean"):
        want = knn.brute_force(t, s[~excl], 4, metric)
        src = knn.ParquetShards(tmp_path / "a.parquet", normalize=metric == "cosine", batch_rows=7)
        got = knn.topk_stream(t, src, 4, metric, memory_budget=budget, first_block=first,
                              exclude=excl, workers=workers)
        assert (got[0] == kept[want[0]]).all(), metric
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)


def test_column_ranges_find_a_dotted_or_nested_column_by_its_own_leaves(tmp_path):
    n = 50
    vec = pa.array([list(np.arange(4, dtype=np.float32) + i) for i in range(n)], pa.list_(pa.float32()))
    table = pa.table({"emb": pa.array(np.arange(n, dtype=np.int64)),
                      "meta": pa.array([{"a": i, "b": [1.0, 2.0]} for i in range(n)]),
                      "emb.v": vec})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=20)
    meta = pq.ParquetFile(tmp_path / "d.parquet").metadata
    rg = meta.row_group(1)
    for name, leaf in (("emb", 0), ("emb.v", 3)):
        c = rg.column(leaf)
        start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
        assert knn._column_ranges(meta, name, [1]) == [[(start, c.total_compressed_size)]]
    assert len(knn._column_ranges(meta, "meta", [1])[0]) == 2 and knn._column_ranges(meta, "nope", [1]) == [[]]
    src = knn.ParquetShards(tmp_path / "d.parquet", "emb.v", batch_rows=8)
    src.drop_behind = True  # direct reads of the right leaf
    got = next(src.blocks([(0, n)]))
    src.close()
    assert (got == np.arange(4, dtype=np.float32) + np.arange(n)[:, None]).all()


def test_a_failing_direct_read_raises_in_the_search_instead_of_hanging(tmp_path, monkeypatch):
    import os
    import threading

    s, t, fps = pool(22, n_s=300, n_t=2, d=8)
    write_emb(tmp_path / "a.parquet", s, fps)
    calls, real = [], os.preadv

    def preadv(fd, bufs, off):  # the probe passes, the reader thread's reads fail
        calls.append(off)
        if len(calls) > 1:
            raise ValueError("simulated read failure")
        return real(fd, bufs, off)

    monkeypatch.setattr(os, "preadv", preadv)
    threads, fds = threading.active_count(), _open_fds()
    src = knn.ParquetShards(tmp_path / "a.parquet", batch_rows=16)
    src.drop_behind = True
    with pytest.raises(ValueError, match="simulated read failure"):
        knn.topk_stream(t, src, 3, "euclidean", memory_budget=1 << 12, workers=1)
    assert threading.active_count() == threads and _open_fds() == fds
