"""Exact k-NN (tao_aoi.knn) against a float64 brute-force oracle."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tao_aoi import knn


def _check_against_oracle(t, s, k, metric, idx, dist, tol=1e-5):
    """The result is a correct top-k: each reported distance is the true distance of that
    pair, rows are sorted, and no source left out is closer than the k-th kept one."""
    o_idx, o_dist = knn.brute_force(t, s, s.shape[0], metric)  # full ranking
    kk = min(k, s.shape[0])
    assert idx.shape == dist.shape == (t.shape[0], kk)
    full = np.empty((t.shape[0], s.shape[0]))
    np.put_along_axis(full, o_idx, o_dist, axis=1)
    for r in range(t.shape[0]):
        assert len(set(idx[r])) == kk
        np.testing.assert_allclose(dist[r], full[r, idx[r]], atol=tol)
        assert np.all(np.diff(dist[r]) >= -tol)
        left_out = np.setdiff1d(np.arange(s.shape[0]), idx[r])
        if left_out.size:
            assert full[r, left_out].min() >= dist[r, -1] - tol


@pytest.mark.parametrize("metric", ["cosine", "l2", "manhattan"])
@pytest.mark.parametrize("budget", [200, 10_000, 10**8])  # tiny budgets force many blocks
def test_matches_brute_force_on_random_data(metric, budget):
    rng = np.random.default_rng(1)
    t = rng.normal(size=(37, 12)).astype(np.float32)
    s = rng.normal(size=(503, 12)).astype(np.float32)
    idx, dist = knn.topk(t, s, 6, metric, memory_budget=budget)
    o_idx, o_dist = knn.brute_force(t, s, 6, metric)
    np.testing.assert_array_equal(idx, o_idx)  # continuous data: no near-ties
    np.testing.assert_allclose(dist, o_dist, atol=1e-6)


@pytest.mark.parametrize("order", ["random", "increasing", "decreasing"])
def test_multi_block_paths(order):
    # Many blocks after a small first block: the sparse candidate path (random order),
    # and the dense path when every block beats the last (sources sorted by similarity).
    rng = np.random.default_rng(7)
    t = rng.normal(size=(30, 16)).astype(np.float32)
    s = rng.normal(size=(6000, 16)).astype(np.float32)
    if order != "random":
        sim = (knn.l2_normalize_(s.copy()) @ knn.l2_normalize_(t.copy())[0])
        s = s[np.argsort(sim if order == "increasing" else -sim, kind="stable")]
    for metric in ("cosine", "l2", "manhattan"):
        idx, dist = knn.topk(t, s, 8, metric, memory_budget=30 * 1000 * 20, first_block=64)
        o_idx, o_dist = knn.brute_force(t, s, 8, metric)
        np.testing.assert_array_equal(idx, o_idx)
        np.testing.assert_allclose(dist, o_dist, atol=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_t=st.integers(1, 9), n_s=st.integers(1, 60), d=st.integers(1, 6), k=st.integers(1, 70),
       metric=st.sampled_from(["cosine", "l2", "euclidean", "manhattan"]), budget=st.sampled_from([40, 400, 10**7]),
       seed=st.integers(0, 2**31 - 1), integer=st.booleans(), first=st.sampled_from([1, 8, 4096]))
def test_property_against_oracle(n_t, n_s, d, k, metric, budget, seed, integer, first):
    rng = np.random.default_rng(seed)
    if integer:  # small integers: many exact ties and duplicate vectors
        t = rng.integers(-2, 3, size=(n_t, d)).astype(np.float32)
        s = rng.integers(-2, 3, size=(n_s, d)).astype(np.float32)
    else:
        t = rng.normal(size=(n_t, d)).astype(np.float32)
        s = rng.normal(size=(n_s, d)).astype(np.float32)
    idx, dist = knn.topk(t, s, k, metric, memory_budget=budget, first_block=first)
    _check_against_oracle(t, s, k, metric, idx, dist)
    if integer and metric != "cosine":
        # Small-integer L2 arithmetic is exact in float32, so ties are exact and the
        # lower-index rule must reproduce the oracle's (distance, index) order exactly.
        o_idx, _ = knn.brute_force(t, s, k, metric)
        np.testing.assert_array_equal(idx, o_idx)


@pytest.mark.parametrize("metric", ["cosine", "l2", "manhattan"])
@pytest.mark.parametrize("budget", [60, 10**7])
def test_ties_go_to_the_lower_source_index(metric, budget):
    # Sources 3, 5 and 9 are the same vector as the target (exact distance 0); 0 and 7 are
    # another identical pair. Exactly representable values: no rounding differences.
    s = np.zeros((12, 4), np.float32)
    s[:, 3] = 1.0
    for j in (3, 5, 9):
        s[j] = [1, 0, 0, 0]
    s[0] = s[7] = [0, 1, 0, 0]
    t = np.array([[1, 0, 0, 0]], np.float32)
    idx, dist = knn.topk(t, s, 2, metric, memory_budget=budget)
    assert idx.tolist() == [[3, 5]]
    np.testing.assert_allclose(dist, [[0.0, 0.0]], atol=1e-12)
    idx4, _ = knn.topk(t, s, 4, metric, memory_budget=budget)
    assert idx4[0, :3].tolist() == [3, 5, 9]
    assert idx4[0, 3] == 0  # next tier: 0, 7 and the e3 rows tie; lowest index wins


def test_topn_larger_than_pool_returns_whole_pool_sorted():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(4, 5)).astype(np.float32)
    s = rng.normal(size=(3, 5)).astype(np.float32)
    idx, dist = knn.topk(t, s, 10, "cosine")
    assert idx.shape == (4, 3)
    for r in range(4):
        assert sorted(idx[r]) == [0, 1, 2]
        assert np.all(np.diff(dist[r]) >= 0)


def test_distances_are_one_minus_cosine_and_euclidean():
    t = np.array([[3.0, 4.0]], np.float32)
    s = np.array([[3.0, 4.0], [4.0, -3.0], [-6.0, -8.0]], np.float32)
    _, dc = knn.topk(t, s, 3, "cosine")
    np.testing.assert_allclose(dc[0], [0.0, 1.0, 2.0], atol=1e-7)
    ie, de = knn.topk(t, s, 3, "l2")
    assert ie[0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(de[0], [0.0, np.sqrt(50.0), 15.0], atol=1e-6)


def test_unnormalised_cosine_equals_normalised():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(6, 8)).astype(np.float32) * 7
    s = rng.normal(size=(80, 8)).astype(np.float32) * rng.uniform(0.1, 9, size=(80, 1)).astype(np.float32)
    a = knn.topk(t, s, 4, "cosine", memory_budget=500)
    tn, sn = knn.l2_normalize_(t.copy()), knn.l2_normalize_(s.copy())
    b = knn.topk(tn, sn, 4, "cosine", normalized=True, memory_budget=500)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_zero_vectors_do_not_crash_cosine():
    t = np.zeros((1, 3), np.float32)
    s = np.array([[1, 0, 0], [0, 0, 0]], np.float32)
    idx, dist = knn.topk(t, s, 2, "cosine")
    np.testing.assert_allclose(dist, [[1.0, 1.0]])
    assert idx.tolist() == [[0, 1]]


def test_bad_arguments():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="dimension mismatch"):
        knn.topk(a, np.zeros((2, 4), np.float32), 1)
    with pytest.raises(ValueError, match="unknown knn metric"):
        knn.topk(a, a, 1, "chebyshev")
    with pytest.raises(ValueError):
        knn.topk(a, a, 0)


def test_block_shape_respects_budget():
    tb, sb = knn.block_shape(1000, 1_000_000, 5, 512 * 2**20)
    assert tb * sb * 20 <= 512 * 2**20
    assert tb == 1000 and sb > 1000
