"""Exact k-nearest-neighbour search over embedding matrices (numpy + BLAS).

``topk(targets, sources, k, metric)`` returns, for every target row, the ``k`` closest
source rows and their distances. The search is exhaustive (no approximation):

* cosine: similarity = inner product of L2-normalised rows; reported distance = 1 - cos.
* euclidean (alias l2): ranked by ``t.s - |s|^2 / 2`` (same order as Euclidean distance,
  one matmul); reported distance = Euclidean distance (not squared).
* manhattan: L1 distance, computed directly (no matmul form exists), in bounded chunks.

These are cuML's distances, so the action matches the container's neighbour order.

Memory stays bounded whatever the pool size: sources are visited in blocks (and targets
in blocks when there are many), a block of scores is one BLAS matmul, and a running
top-k per target is kept. After the first block only entries that beat a target's
current k-th best are touched, so the selection cost is small next to the matmul.

Ties are deterministic: on equal score the lower source index wins. Reported distances
are recomputed in float64 for the selected pairs, and each row is returned sorted by
(distance, source index).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

# cuML names; "l2" is an alias cuML also accepts for euclidean.
METRICS = {"cosine": "cosine", "euclidean": "euclidean", "l2": "euclidean", "manhattan": "manhattan"}
DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes of scratch for one block of scores
# Scratch bytes per score element: float32 score + bool mask + int64 argpartition indices
# on the rows that need a full selection (+ headroom).
_BYTES_PER_ELEMENT = 20
_PAD_INDEX = np.iinfo(np.int64).max
_FIRST_BLOCK = 4096


def canonical_metric(name: str) -> str:
    key = str(name).strip().lower()
    if key not in METRICS:
        raise ValueError(f"unknown knn metric {name!r}; use one of {', '.join(sorted(METRICS))}")
    return METRICS[key]


def l2_normalize_(x: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """Normalise the rows of a float array in place (blockwise: no full-size temporaries).

    All-zero rows stay zero.
    """
    for r0 in range(0, x.shape[0], block_rows):
        blk = x[r0:r0 + block_rows]
        norms = np.sqrt(np.einsum("ij,ij->i", blk, blk, dtype=np.float64))
        norms[norms == 0] = 1.0
        blk /= norms[:, None].astype(x.dtype)
    return x


def _neg_l1_into(out: np.ndarray, t: np.ndarray, s: np.ndarray, budget: int) -> None:
    """out[i, j] = -sum|t[i] - s[j]| (float32), in source chunks whose (rows, cols, dim)
    difference temporaries stay within ``budget`` bytes."""
    step = max(1, budget // max(1, t.shape[0] * t.shape[1] * 8))
    for c0 in range(0, s.shape[0], step):
        diff = np.abs(t[:, None, :] - s[None, c0:c0 + step, :])
        np.sum(diff, axis=2, out=out[:, c0:c0 + step])
    np.negative(out, out=out)


def block_shape(n_targets: int, n_sources: int, k: int,
                memory_budget: int = DEFAULT_MEMORY_BUDGET) -> tuple[int, int]:
    """(target rows, source rows) per block so that one block's scratch fits the budget."""
    elements = max(1, int(memory_budget) // _BYTES_PER_ELEMENT)
    tb = max(1, min(n_targets, 4096, elements // max(k + 1, 1024)))
    sb = max(k + 1, min(n_sources, elements // tb))
    return tb, sb


def _merge(best_s: np.ndarray, best_i: np.ndarray, new_s: np.ndarray, new_i: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the union of two candidate sets per row, sorted by (-score, index)."""
    s = np.concatenate([best_s, new_s], axis=1)
    i = np.concatenate([best_i, new_i], axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _select_rows(scores: np.ndarray, k: int, col_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic top-k (largest score, then lowest column) of each row; cols > k."""
    m = scores.shape[1]
    part = np.argpartition(scores, m - k, axis=1)[:, m - k:]
    sel_s = np.take_along_axis(scores, part, axis=1)
    kth = sel_s.min(axis=1)
    # A row has a tie straddling the cut when more than k entries reach its k-th score.
    n_ge = np.count_nonzero(scores >= kth[:, None], axis=1)
    for r in np.flatnonzero(n_ge > k):
        row = scores[r]
        cols = np.flatnonzero(row >= kth[r])
        order = np.lexsort((cols, -row[cols]))[:k]
        part[r] = cols[order]
        sel_s[r] = row[cols[order]]
    return sel_s, part.astype(np.int64) + col_offset


def topk(targets: np.ndarray, sources: np.ndarray, k: int, metric: str = "cosine", *,
         normalized: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET,
         first_block: int = _FIRST_BLOCK,
         progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k neighbours of each target among the sources.

    targets: (T, D), sources: (N, D) float arrays (float32 is used internally; sources
    already float32 and C-contiguous are not copied). ``normalized=True`` promises that
    rows are L2-normalised (cosine skips the per-column rescale). ``progress`` is called
    with the number of source rows finished after each source block. ``first_block`` is
    the width of the first source block (tests shrink it to exercise every path).

    Returns (indices int64 (T, min(k, N)), distances float64 (T, min(k, N))), each row
    sorted by (distance, source index).
    """
    metric = canonical_metric(metric)
    if k < 1:
        raise ValueError("k must be >= 1")
    tgt = np.ascontiguousarray(targets, dtype=np.float32)
    src = np.ascontiguousarray(sources, dtype=np.float32)
    if tgt.ndim != 2 or src.ndim != 2:
        raise ValueError("targets and sources must be 2-D arrays")
    if tgt.shape[1] != src.shape[1]:
        raise ValueError(f"dimension mismatch: targets have {tgt.shape[1]}, sources {src.shape[1]}")
    n_t, n_s = tgt.shape[0], src.shape[0]
    kk = min(k, n_s)
    if n_t == 0 or n_s == 0:
        return np.zeros((n_t, 0), np.int64), np.zeros((n_t, 0), np.float64)

    col_adjust: np.ndarray | None = None  # per-source additive (l2) or multiplicative (cosine)
    if metric == "manhattan":
        pass  # scores are computed directly per block
    elif metric == "cosine":
        if not normalized:
            tgt = l2_normalize_(tgt.copy())
            col_adjust = np.empty(n_s, np.float32)
            for r0 in range(0, n_s, 65536):
                blk = src[r0:r0 + 65536]
                nrm = np.sqrt(np.einsum("ij,ij->i", blk, blk, dtype=np.float64))
                col_adjust[r0:r0 + 65536] = np.where(nrm > 0, 1.0 / np.where(nrm > 0, nrm, 1), 0.0)
    else:
        col_adjust = np.empty(n_s, np.float32)
        for r0 in range(0, n_s, 65536):
            blk = src[r0:r0 + 65536]
            col_adjust[r0:r0 + 65536] = -0.5 * np.einsum("ij,ij->i", blk, blk, dtype=np.float64)

    tb, sb = block_shape(n_t, n_s, kk, memory_budget)
    best_s = np.full((n_t, kk), -np.inf, np.float32)
    best_i = np.full((n_t, kk), _PAD_INDEX, np.int64)
    score_buf = np.empty(tb * sb, np.float32)
    mask_buf = np.empty(tb * sb, np.bool_)

    # The first source block is kept small: it seeds every target's running top-k with a
    # full selection (argpartition); later blocks only touch entries that beat it.
    first = min(sb, max(4 * kk, first_block))
    starts = [0] + list(range(first, n_s, sb))
    for c0 in starts:
        c1 = min(n_s, c0 + (first if c0 == 0 else sb))
        sblk = src[c0:c1]
        for r0 in range(0, n_t, tb):
            r1 = min(n_t, r0 + tb)
            nr, nc = r1 - r0, c1 - c0
            scores = score_buf[:nr * nc].reshape(nr, nc)
            if metric == "manhattan":
                _neg_l1_into(scores, tgt[r0:r1], sblk, max(1 << 20, memory_budget // 4))
            else:
                np.matmul(tgt[r0:r1], sblk.T, out=scores)
            if col_adjust is not None:
                if metric == "cosine":
                    scores *= col_adjust[c0:c1]
                else:
                    scores += col_adjust[c0:c1]
            thr = best_s[r0:r1, -1]
            mask = mask_buf[:nr * nc].reshape(nr, nc)
            # Strict '>': every source seen so far has a lower index, so an equal score
            # cannot displace the current k-th entry.
            np.greater(scores, thr[:, None], out=mask)
            counts = np.count_nonzero(mask, axis=1)
            heavy = np.flatnonzero(counts > kk) if nc > kk else np.zeros(0, np.int64)
            light = np.flatnonzero((counts > 0) & ((counts <= kk) if nc > kk else True))
            dense = heavy.size and int(counts[heavy].max()) * 4 > nc
            if dense:
                # Many candidates per row (first block, adversarial order): select on the
                # full rows, in chunks that keep the int64 argpartition scratch in budget.
                step = max(1, (memory_budget // 3) // max(1, nc * 12))
                for h0 in range(0, heavy.size, step):
                    rows = heavy[h0:h0 + step]
                    ns, ni = _select_rows(scores[rows], kk, c0)
                    g = rows + r0
                    best_s[g], best_i[g] = _merge(best_s[g], best_i[g], ns, ni, kk)
            for rows, select in ((light, False), (heavy if not dense else heavy[:0], True)):
                if not rows.size:
                    continue
                # Gather each row's candidates into a padded (rows, width) matrix; nonzero
                # lists them by row, in increasing column (= source index) order.
                rr, cc = np.nonzero(mask[rows])
                cnt = counts[rows]
                row_start = np.concatenate(([0], np.cumsum(cnt)[:-1]))
                pos = np.arange(rr.size) - row_start[rr]
                width = int(cnt.max()) if select else kk
                ns = np.full((rows.size, width), -np.inf, np.float32)
                ni = np.full((rows.size, width), _PAD_INDEX, np.int64)
                ns[rr, pos] = scores[rows[rr], cc]
                ni[rr, pos] = cc + c0
                if select:  # every row has more than kk real candidates
                    ns, sel = _select_rows(ns, kk, 0)
                    ni = np.take_along_axis(ni, sel, axis=1)
                g = rows + r0
                best_s[g], best_i[g] = _merge(best_s[g], best_i[g], ns, ni, kk)
        if progress is not None:
            progress(c1 - c0)

    # Exact float64 distances for the selected pairs, then the final (distance, index) order.
    dist = np.empty((n_t, kk), np.float64)
    step = max(1, 2**22 // (kk * tgt.shape[1]))  # ~32 MB of float64 gathers per chunk
    for r0 in range(0, n_t, step):
        t64 = np.asarray(targets[r0:r0 + step], dtype=np.float64)
        s64 = np.asarray(sources[best_i[r0:r0 + step].ravel()], dtype=np.float64)
        s64 = s64.reshape(t64.shape[0], kk, -1)
        if metric == "cosine":
            tn = np.linalg.norm(t64, axis=1)
            sn = np.linalg.norm(s64, axis=2)
            dots = np.einsum("td,tkd->tk", t64, s64)
            denom = tn[:, None] * sn
            cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
            dist[r0:r0 + step] = 1.0 - np.clip(cos, -1.0, 1.0)
        elif metric == "manhattan":
            dist[r0:r0 + step] = np.abs(t64[:, None, :] - s64).sum(axis=2)
        else:
            dist[r0:r0 + step] = np.sqrt(((t64[:, None, :] - s64) ** 2).sum(axis=2))
    order = np.lexsort((best_i, dist), axis=1)
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(dist, order, axis=1)


def brute_force(targets: np.ndarray, sources: np.ndarray, k: int,
                metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Reference implementation (float64, full distance matrix): for tests and spot checks."""
    metric = canonical_metric(metric)
    t = np.asarray(targets, np.float64)
    s = np.asarray(sources, np.float64)
    if metric == "cosine":
        tn = np.linalg.norm(t, axis=1, keepdims=True)
        sn = np.linalg.norm(s, axis=1, keepdims=True)
        t = np.divide(t, tn, out=np.zeros_like(t), where=tn > 0)
        s = np.divide(s, sn, out=np.zeros_like(s), where=sn > 0)
        d = 1.0 - np.clip(t @ s.T, -1.0, 1.0)
    elif metric == "manhattan":
        d = np.abs(t[:, None, :] - s[None, :, :]).sum(axis=2)
    else:
        d = np.sqrt(np.maximum(((t[:, None, :] - s[None, :, :]) ** 2).sum(axis=2), 0))
    kk = min(k, s.shape[0])
    idx = np.broadcast_to(np.arange(s.shape[0]), d.shape)
    order = np.lexsort((idx, d), axis=1)[:, :kk]
    return order.astype(np.int64), np.take_along_axis(d, order, axis=1)
