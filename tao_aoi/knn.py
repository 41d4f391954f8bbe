"""Exact k-nearest-neighbour search over embedding matrices (numpy + BLAS).

``topk(targets, sources, k, metric)`` returns, for every target row, the ``k`` closest
source rows and their distances. The search is exhaustive (no approximation):

* cosine: similarity = inner product of L2-normalised rows; reported distance = 1 - cos.
* euclidean (alias l2): ranked by ``t.s - |s|^2 / 2`` (same order as Euclidean distance,
  one matmul); reported distance = Euclidean distance (not squared).
* manhattan: L1 distance, computed directly (no matmul form exists), in bounded chunks.

These are cuML's distances, so the action matches the container's neighbour order.

Memory stays bounded whatever the pool size: sources are visited in blocks (and targets
in blocks when there are many), a block of scores is one float32 BLAS matmul, and a running
candidate list per target is kept. After the first block only entries that can still make a
target's top k are touched, so the selection cost is small next to the matmul.

Exact, whatever BLAS does: float32 scores are rounded differently by another thread count,
block shape or CPU (OpenBLAS gives the same pair different last bits), so they only
pre-select. A source stays a candidate while its score plus its rounding bound reaches a floor
under the k-th best exact score; the final k are chosen by float64 distance, equal distances
going to the lower source index. Partial searches over parts of a pool (shards, Ray tasks)
therefore merge into exactly what one search over the whole pool gives (:func:`merge`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# cuML names; "l2" is an alias cuML also accepts for euclidean.
METRICS = {"cosine": "cosine", "euclidean": "euclidean", "l2": "euclidean", "manhattan": "manhattan"}
DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes of scratch for one block of scores
# Scratch bytes per score element: float32 score + bool mask + a float32 partition copy on the
# rows that need a full selection (+ headroom).
_BYTES_PER_ELEMENT = 20
_PAD_INDEX = np.iinfo(np.int64).max
_FIRST_BLOCK = 4096
_U32 = 2.0 ** -24  # float32 unit roundoff
_ROWS = 65536  # rows per chunk of the row-wise passes (norms, checks)


def canonical_metric(name: str) -> str:
    key = str(name).strip().lower()
    if key not in METRICS:
        raise ValueError(f"unknown knn metric {name!r}; use one of {', '.join(sorted(METRICS))}")
    return METRICS[key]


def row_sq_norms(blk: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row, accumulated in float64."""
    return np.einsum("ij,ij->i", blk, blk, dtype=np.float64)


def _divide_by_norms_(blk: np.ndarray, sq: np.ndarray) -> None:
    norms = np.sqrt(sq)
    norms[norms == 0] = 1.0
    blk /= norms[:, None].astype(blk.dtype)


def l2_normalize_(x: np.ndarray, block_rows: int = _ROWS) -> np.ndarray:
    """Normalise the rows of a float array in place (blockwise: no full-size temporaries).

    All-zero rows stay zero.
    """
    for r0 in range(0, x.shape[0], block_rows):
        blk = x[r0:r0 + block_rows]
        _divide_by_norms_(blk, row_sq_norms(blk))
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


def block_bounds(n_sources: int, n_targets: int, k: int, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 first_block: int = _FIRST_BLOCK) -> tuple[int, list[tuple[int, int]]]:
    """(target rows per block, [(c0, c1), ...] source blocks). The first block is kept small:
    it seeds every target's candidates with a full selection; later blocks only touch
    entries that beat them."""
    tb, sb = block_shape(n_targets, n_sources, k, memory_budget)
    first = min(sb, max(4 * k, first_block))
    starts = [0] + list(range(first, n_sources, sb))
    return tb, [(c0, min(n_sources, c0 + (first if c0 == 0 else sb))) for c0 in starts]


def _col_adjust(metric: str, normalized: bool, blk: np.ndarray) -> np.ndarray | None:
    """Per-source additive (l2: -|s|^2/2) or multiplicative (cosine: 1/|s|) score adjustment."""
    if metric == "manhattan" or (metric == "cosine" and normalized):
        return None
    out = np.empty(blk.shape[0], np.float32)
    for r0 in range(0, blk.shape[0], _ROWS):
        sq = row_sq_norms(blk[r0:r0 + _ROWS])
        if metric == "cosine":
            nrm = np.sqrt(sq)
            out[r0:r0 + _ROWS] = np.where(nrm > 0, 1.0 / np.where(nrm > 0, nrm, 1), 0.0)
        else:
            out[r0:r0 + _ROWS] = -0.5 * sq
    return out


# ----------------------------------------------------------------------------- rounding bounds

@dataclass(frozen=True)
class _Bound:
    """Bound on |float32 score - exact score| for one tile (target rows x source block).

    A dot product of K float32 terms, in any summation order, is off by at most K*u*sum|t_i s_i|
    (u = 2^-24); the +16 terms and 5% cover the normalisation, the column adjustment and the
    float64 rounding of the final distances. cosine: unit rows, so a constant. manhattan:
    relative to the L1 sum. euclidean: gamma * (|t| |s| + |s|^2) per pair.
    """

    metric: str
    gamma: float
    t_norm: np.ndarray | None = None  # euclidean: |t| of each target row of the tile
    s_norm: np.ndarray | None = None  # euclidean: |s| of each source column of the tile

    @classmethod
    def of(cls, metric: str, tgt: np.ndarray, col_adjust: np.ndarray | None) -> "_Bound":
        gamma = (tgt.shape[1] + 16) * _U32 * 1.05
        if metric != "euclidean":
            return cls(metric, gamma)
        return cls(metric, gamma, np.sqrt(row_sq_norms(tgt)),
                   np.sqrt(-2.0 * col_adjust.astype(np.float64)))

    def entry(self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Bound of each (row, col) entry with the given float32 scores."""
        if self.metric == "cosine":
            return np.full(scores.shape, self.gamma)
        if self.metric == "manhattan":
            return self.gamma * 1.01 * np.abs(scores.astype(np.float64))
        s = self.s_norm[cols]
        return self.gamma * (self.t_norm[rows] * s + s * s)

    def lowest(self, rows: np.ndarray, kth: np.ndarray) -> np.ndarray:
        """A lower bound on the exact scores of entries scoring at least ``kth`` (float32)."""
        kth = kth.astype(np.float64)
        if self.metric == "cosine":
            return kth - self.gamma
        if self.metric == "manhattan":  # scores are <= 0: s - g|s| grows with s
            return kth - self.gamma * 1.01 * np.abs(kth)
        smax = float(self.s_norm.max(initial=0.0))
        return kth - self.gamma * (self.t_norm[rows] * smax + smax * smax)

    def threshold(self, rows: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """float32 per row: every entry whose score plus bound reaches ``floor`` scores at least this."""
        if self.metric == "cosine":
            thr = floor - self.gamma
        elif self.metric == "manhattan":
            thr = floor / (1.0 - self.gamma * 1.01)
        else:
            smax = float(self.s_norm.max(initial=0.0))
            thr = floor - self.gamma * (self.t_norm[rows] * smax + smax * smax)
        out = thr.astype(np.float32)
        return np.where(out > thr, np.nextafter(out, np.float32(-np.inf)), out)


# ----------------------------------------------------------------------------- candidates

class Candidates:
    """Per target row: every source that can still be among its k nearest, best float32 score
    first (equal scores: lower index first), padded with -inf / ``_PAD_INDEX``; ``floor`` is a
    lower bound on the k-th best exact score (the k best scores less their bounds)."""

    def __init__(self, n_t: int, k: int) -> None:
        self.k = k
        self.s = np.full((n_t, k), -np.inf, np.float32)
        self.i = np.full((n_t, k), _PAD_INDEX, np.int64)
        self.e = np.zeros((n_t, k), np.float64)
        self.floor = np.full(n_t, -np.inf)

    def raise_floor(self, rows: np.ndarray, low: np.ndarray) -> None:
        self.floor[rows] = np.maximum(self.floor[rows], low)

    def add(self, rows: np.ndarray, s: np.ndarray, i: np.ndarray, e: np.ndarray) -> None:
        """Fold (len(rows), w) new entries into the given rows, dropping what cannot win."""
        s = np.concatenate([self.s[rows], s], axis=1)
        i = np.concatenate([self.i[rows], i], axis=1)
        e = np.concatenate([self.e[rows], e], axis=1)
        order = np.lexsort((i, -s), axis=1)
        s, i, e = (np.take_along_axis(a, order, axis=1) for a in (s, i, e))
        low = (s[:, :self.k].astype(np.float64) - e[:, :self.k]).min(axis=1)
        self.raise_floor(rows, low)
        keep = s.astype(np.float64) + e >= self.floor[rows][:, None]
        pos = np.argsort(~keep, axis=1, kind="stable")  # kept first, order kept
        width = max(self.k, int(keep.sum(axis=1).max(initial=0)))
        s, i, e, kept = (np.take_along_axis(a, pos[:, :width], axis=1) for a in (s, i, e, keep))
        s[~kept], i[~kept], e[~kept] = -np.inf, _PAD_INDEX, 0.0
        self._put(rows, s, i, e)

    def _put(self, rows, s, i, e) -> None:
        width = self.s.shape[1]
        if s.shape[1] > width:
            extra = s.shape[1] - width
            self.s = np.pad(self.s, ((0, 0), (0, extra)), constant_values=-np.inf)
            self.i = np.pad(self.i, ((0, 0), (0, extra)), constant_values=_PAD_INDEX)
            self.e = np.pad(self.e, ((0, 0), (0, extra)))
        w = s.shape[1]
        self.s[rows, :w], self.i[rows, :w], self.e[rows, :w] = s, i, e
        self.s[rows, w:], self.i[rows, w:], self.e[rows, w:] = -np.inf, _PAD_INDEX, 0.0

    def compact(self) -> None:
        """Drop the all-padding columns at the right (kept entries are a prefix of each row)."""
        width = max(self.k, int((self.i != _PAD_INDEX).sum(axis=1).max(initial=0)))
        self.s, self.i, self.e = self.s[:, :width], self.i[:, :width], self.e[:, :width]


# ----------------------------------------------------------------------------- one block

def _block_scores(out: np.ndarray, tgt: np.ndarray, sblk: np.ndarray, metric: str,
                  col_adjust: np.ndarray | None, memory_budget: int) -> None:
    if metric == "manhattan":
        _neg_l1_into(out, tgt, sblk, max(1 << 20, memory_budget // 4))
    else:
        np.matmul(tgt, sblk.T, out=out)
    if col_adjust is not None:
        if metric == "cosine":
            out *= col_adjust
        else:
            out += col_adjust


def _raise_floors(cands: Candidates, rows: np.ndarray, scores: np.ndarray, mask: np.ndarray,
                  counts: np.ndarray, bound: _Bound, r0: int, memory_budget: int) -> None:
    """Rows with more than k candidates in this block (the first block, an adversarial order):
    their floor from the block's own k best, then their mask again against it. In chunks whose
    partition copy stays within the budget."""
    nc, k = scores.shape[1], cands.k
    step = max(1, (memory_budget // 4) // max(1, nc * 10))
    for h0 in range(0, rows.size, step):
        part = rows[h0:h0 + step]
        sub = scores[part]
        sub.partition(nc - k, axis=1)
        cands.raise_floor(part + r0, bound.lowest(part, sub[:, nc - k]))
        thr = bound.threshold(part, cands.floor[part + r0])
        mask[part] = scores[part] >= thr[:, None]
        counts[part] = np.count_nonzero(mask[part], axis=1)


def _gather(cands: Candidates, rows: np.ndarray, mask: np.ndarray, counts: np.ndarray,
            scores: np.ndarray, bound: _Bound, r0: int, glob: Callable) -> None:
    """Hand the masked entries of ``rows`` to the candidates as padded (rows, width) arrays;
    nonzero lists them by row, in increasing column (= source index) order."""
    rr, cc = np.nonzero(mask[rows])
    cnt = counts[rows]
    pos = np.arange(rr.size) - np.concatenate(([0], np.cumsum(cnt)[:-1]))[rr]
    width = int(cnt.max())
    ns = np.full((rows.size, width), -np.inf, np.float32)
    ni = np.full((rows.size, width), _PAD_INDEX, np.int64)
    ne = np.zeros((rows.size, width), np.float64)
    vals = scores[rows[rr], cc]
    ns[rr, pos], ni[rr, pos] = vals, glob(cc)
    ne[rr, pos] = bound.entry(rows[rr], cc, vals)
    cands.add(rows + r0, ns, ni, ne)


def _search_block(cands: Candidates, tgt: np.ndarray, sblk: np.ndarray, glob: Callable,
                  metric: str, col_adjust, tb: int, score_buf, mask_buf, memory_budget: int) -> None:
    """Fold one source block into every target's candidates; ``glob`` maps block columns to
    source indices."""
    nc = sblk.shape[0]
    for r0 in range(0, tgt.shape[0], tb):
        t = tgt[r0:r0 + tb]
        nr = t.shape[0]
        rows_all = np.arange(nr)
        scores = score_buf[:nr * nc].reshape(nr, nc)
        _block_scores(scores, t, sblk, metric, col_adjust, memory_budget)
        bound = _Bound.of(metric, t, col_adjust)
        mask = mask_buf[:nr * nc].reshape(nr, nc)
        np.greater_equal(scores, bound.threshold(rows_all, cands.floor[r0:r0 + nr])[:, None], out=mask)
        counts = np.count_nonzero(mask, axis=1)
        heavy = np.flatnonzero(counts > cands.k) if nc > cands.k else np.zeros(0, np.int64)
        if heavy.size:
            _raise_floors(cands, heavy, scores, mask, counts, bound, r0, memory_budget)
        rows = np.flatnonzero(counts)
        if rows.size:
            _gather(cands, rows, mask, counts, scores, bound, r0, glob)


# ----------------------------------------------------------------------------- whole searches

class ArraySource:
    """An in-memory source matrix as a block source (blocks are views, no copies)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.n_rows, self.dim = array.shape

    def blocks(self, bounds):
        for c0, c1 in bounds:
            yield self.array[c0:c1]

    def close(self) -> None:
        pass


class _VectorStore:
    """The source rows that are (or were recently) candidates, so a streamed search can
    compute exact distances without a second pass over the pool."""

    def __init__(self, dim: int) -> None:
        self.idx = np.zeros(0, np.int64)
        self.vec = np.zeros((0, dim), np.float32)

    def add_from_block(self, live_i: np.ndarray, c0: int, blk: np.ndarray) -> None:
        c1 = c0 + blk.shape[0]
        sel = live_i[(live_i >= c0) & (live_i < c1)]
        if sel.size:
            new = np.unique(sel)
            new = new[~np.isin(new, self.idx)]
            if new.size:
                self.idx = np.concatenate([self.idx, new])
                self.vec = np.concatenate([self.vec, np.asarray(blk[new - c0], np.float32)])
        live = np.unique(live_i)
        if self.idx.size > 2 * live.size + 1024:
            keep = np.isin(self.idx, live)
            self.idx, self.vec = self.idx[keep], self.vec[keep]

    def keep_only(self, live_i: np.ndarray) -> None:
        keep = np.isin(self.idx, live_i)
        self.idx, self.vec = self.idx[keep], self.vec[keep]

    def gather(self, ids: np.ndarray) -> np.ndarray:
        return rows_by_id(self.idx, self.vec, ids)


def rows_by_id(ids: np.ndarray, vectors: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The rows of ``vectors`` (row r holds source ``ids[r]``) for the sources ``wanted``."""
    order = np.argsort(ids, kind="stable")
    return vectors[order[np.searchsorted(ids[order], wanted)]]


@dataclass(frozen=True)
class Partial:
    """What a search over part of a pool hands to :func:`merge`: its candidates (global source
    indices) and, for a streamed part, the vectors of those candidates."""

    s: np.ndarray
    i: np.ndarray
    e: np.ndarray
    floor: np.ndarray
    vector_ids: np.ndarray | None = None
    vectors: np.ndarray | None = None


def _check_exclude(exclude, n_s: int) -> np.ndarray | None:
    if exclude is None:
        return None
    exclude = np.asarray(exclude, bool)
    if exclude.shape != (n_s,):
        raise ValueError(f"exclude mask has shape {exclude.shape}, expected ({n_s},)")
    return exclude


def search_part(tgt: np.ndarray, source, k: int, metric: str, *, normalized: bool,
                memory_budget: int = DEFAULT_MEMORY_BUDGET, first_block: int = _FIRST_BLOCK,
                exclude: np.ndarray | None = None, offset: int = 0, keep_vectors: bool = True,
                progress: Callable[[int], None] | None = None) -> Partial:
    """The candidates of the scoring targets ``tgt`` (float32, unit rows for cosine) among
    ``source`` (rows are sources ``offset ...``). ``k``: the k of the whole search."""
    n_t, n_s = tgt.shape[0], int(source.n_rows)
    exclude = _check_exclude(exclude, n_s)
    cands = Candidates(n_t, k)
    tb, bounds = block_bounds(n_s, n_t, k, memory_budget, first_block)
    sb = max((c1 - c0 for c0, c1 in bounds), default=0)
    score_buf, mask_buf = np.empty(tb * sb, np.float32), np.empty(tb * sb, np.bool_)
    store = _VectorStore(tgt.shape[1]) if keep_vectors else None
    try:
        for (c0, c1), full_blk in zip(bounds, source.blocks(bounds)):
            if exclude is not None and exclude[c0:c1].any():
                gidx = np.flatnonzero(~exclude[c0:c1]) + c0 + offset
                sblk = full_blk[gidx - c0 - offset]
            else:
                gidx, sblk = None, full_blk
            if sblk.shape[0]:
                glob = (lambda cols, b=c0 + offset: cols + b) if gidx is None else gidx.__getitem__
                _search_block(cands, tgt, sblk, glob, metric, _col_adjust(metric, normalized, sblk),
                              tb, score_buf, mask_buf, memory_budget)
                cands.compact()
            if store is not None:
                store.add_from_block(cands.i, c0 + offset, full_blk)
            if progress is not None:
                progress(c1 - c0)
    finally:
        source.close()
    if store is None:
        return Partial(cands.s, cands.i, cands.e, cands.floor)
    store.keep_only(cands.i)
    return Partial(cands.s, cands.i, cands.e, cands.floor, store.idx, store.vec)


def merge(parts: list[Partial], k: int) -> Candidates:
    """The candidates of the whole pool from those of its parts (any split of the pool)."""
    n_t = parts[0].s.shape[0]
    cands = Candidates(n_t, k)
    for p in parts:
        cands.raise_floor(np.arange(n_t), p.floor)
    rows = np.arange(n_t)
    cands.add(rows, *(np.concatenate([getattr(p, a) for p in parts], axis=1) for a in ("s", "i", "e")))
    cands.compact()
    return cands


def exact_topk(cands: Candidates, targets: np.ndarray, rows_of: Callable[[np.ndarray], np.ndarray],
               metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The final k per target: float64 distances of every candidate (``rows_of(ids)`` gives
    their vectors), sorted by (distance, source index)."""
    n_t, width = cands.i.shape
    dist = np.full((n_t, width), np.inf)
    step = max(1, 2**22 // (width * targets.shape[1]))  # ~32 MB of float64 gathers per chunk
    for r0 in range(0, n_t, step):
        ids = cands.i[r0:r0 + step]
        real = ids != _PAD_INDEX
        t64 = np.asarray(targets[r0:r0 + step], dtype=np.float64)
        s64 = np.zeros(ids.shape + (targets.shape[1],), np.float64)
        s64[real] = np.asarray(rows_of(ids[real]), dtype=np.float64)
        dist[r0:r0 + step] = np.where(real, pair_distances(t64, s64, metric), np.inf)
    order = np.lexsort((cands.i, dist), axis=1)[:, :cands.k]
    return np.take_along_axis(cands.i, order, axis=1), np.take_along_axis(dist, order, axis=1)


def pair_distances(t64: np.ndarray, s64: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances of t64 (T, D) to s64 (T, W, D); each pair's value depends on that
    pair only (not on T or W), so every split of a search gets the same numbers."""
    if metric == "cosine":
        tn = np.linalg.norm(t64, axis=1)
        sn = np.linalg.norm(s64, axis=2)
        dots = np.einsum("td,tkd->tk", t64, s64)
        denom = tn[:, None] * sn
        cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        return 1.0 - np.clip(cos, -1.0, 1.0)
    if metric == "manhattan":
        return np.abs(t64[:, None, :] - s64).sum(axis=2)
    return np.sqrt(((t64[:, None, :] - s64) ** 2).sum(axis=2))


def prepare_targets(targets: np.ndarray, metric: str, normalized: bool) -> np.ndarray:
    """The float32 targets the scores are computed with (unit rows for cosine)."""
    tgt = np.ascontiguousarray(targets, dtype=np.float32)
    if tgt.ndim != 2:
        raise ValueError("targets and sources must be 2-D arrays")
    if metric == "cosine" and not normalized:
        tgt = l2_normalize_(tgt.copy())
    return tgt


def kept_count(n_s: int, exclude) -> int:
    exclude = _check_exclude(exclude, n_s)
    return n_s if exclude is None else int(n_s - np.count_nonzero(exclude))


def topk_stream(targets: np.ndarray, source, k: int, metric: str = "cosine", *,
                normalized: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                first_block: int = _FIRST_BLOCK, exclude: np.ndarray | None = None,
                progress: Callable[[int], None] | None = None,
                _originals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` over a block source: ``source.n_rows``, ``source.dim`` and
    ``source.blocks(bounds)`` yielding one float32 (c1 - c0, dim) array per (c0, c1) of
    :func:`block_bounds` (e.g. :class:`ParquetShards`, which reads the next block while
    this one is searched). Peak memory: two blocks + the score scratch + the candidates,
    whatever the pool size; the result is identical to :func:`topk` on the whole matrix.
    """
    metric = canonical_metric(metric)
    if k < 1:
        raise ValueError("k must be >= 1")
    tgt = prepare_targets(targets, metric, normalized)
    n_t, n_s = tgt.shape[0], int(source.n_rows)
    if n_s and tgt.shape[1] != source.dim:
        raise ValueError(f"dimension mismatch: targets have {tgt.shape[1]}, sources {source.dim}")
    kk = min(k, kept_count(n_s, exclude))
    if n_t == 0 or kk == 0:
        source.close()
        return np.zeros((n_t, 0), np.int64), np.zeros((n_t, 0), np.float64)
    part = search_part(tgt, source, kk, metric, normalized=normalized, memory_budget=memory_budget,
                       first_block=first_block, exclude=exclude, keep_vectors=_originals is None,
                       progress=progress)
    cands = merge([part], kk)
    if _originals is not None:
        return exact_topk(cands, targets, lambda ids: _originals[ids], metric)
    return exact_topk(cands, targets, lambda ids: rows_by_id(part.vector_ids, part.vectors, ids), metric)


def topk(targets: np.ndarray, sources: np.ndarray, k: int, metric: str = "cosine", *,
         normalized: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET,
         first_block: int = _FIRST_BLOCK, exclude: np.ndarray | None = None,
         progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k neighbours of each target among the sources.

    targets: (T, D), sources: (N, D) float arrays (float32 is used internally; sources
    already float32 and C-contiguous are not copied). ``normalized=True`` promises that
    rows are L2-normalised (cosine skips the per-column rescale). ``progress`` is called
    with the number of source rows finished after each source block. ``first_block`` is
    the width of the first source block (tests shrink it to exercise every path).
    ``exclude``: optional bool (N,) mask; excluded sources are never candidates (the
    search runs over the others, so each target still gets its k nearest kept sources).

    Returns (indices int64 (T, min(k, N)), distances float64 (T, min(k, N))), each row
    sorted by (distance, source index). Indices are rows of ``sources``.
    """
    src = np.ascontiguousarray(sources, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError("targets and sources must be 2-D arrays")
    return topk_stream(targets, ArraySource(src), k, metric, normalized=normalized,
                       memory_budget=memory_budget, first_block=first_block, exclude=exclude,
                       progress=progress, _originals=sources)


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


# ----------------------------------------------------------------------------- parquet

class SourceError(ValueError):
    """A source parquet that cannot be searched (message names the file and the problem)."""


def shard_paths(path) -> list:
    """One parquet file, or the ``*.parquet`` files of a folder in name order (the pool's
    row order is the shards' rows in that order)."""
    from pathlib import Path

    p = Path(str(path))
    if p.is_dir():
        shards = sorted(q for q in p.iterdir() if q.suffix == ".parquet" and q.is_file()
                        and not q.name.startswith((".", "_")))
        if not shards:
            raise SourceError(f"{p} is a folder without *.parquet shards")
        return shards
    if p.is_file():
        return [p]
    raise SourceError(f"not found: {p}")


def is_vector_type(arrow_type) -> bool:
    import pyarrow as pa

    return (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
            or pa.types.is_fixed_size_list(arrow_type))


def list_array(vectors: np.ndarray, value_type=None):
    """An Arrow list column from a (rows, dim) array, one list per row, without a Python object
    per element. ``value_type``: the list's value type (default: the array's)."""
    import pyarrow as pa

    rows, dim = vectors.shape
    offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
    values = np.ascontiguousarray(vectors).reshape(-1)
    if value_type is not None:
        values = values.astype(value_type.to_pandas_dtype(), copy=False)
    return pa.ListArray.from_arrays(offsets, pa.array(values))


def matrix_of(arr, where, column: str, dim: int = 0) -> np.ndarray:
    """float32 (rows, dim) array of an Arrow list column (all rows the same length; ``dim``,
    when known, is the length every row must have). SourceError names ``where``."""
    import pyarrow as pa

    if arr.null_count:
        raise SourceError(f"{where}: {arr.null_count} rows have no {column!r} value")
    if pa.types.is_fixed_size_list(arr.type):
        lengths = np.full(len(arr), arr.type.list_size)
    else:
        lengths = np.asarray(arr.value_lengths())
    dim = dim or (int(lengths[0]) if len(arr) else 0)
    if len(arr) and dim == 0:
        raise SourceError(f"{where}: column {column!r} holds empty vectors")
    if (lengths != dim).any():
        raise SourceError(f"{where}: column {column!r} has vectors of different lengths "
                          f"({dim} and {int(lengths[lengths != dim][0])})")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(arr), dim).astype(np.float32, copy=False)


def check_finite(blk: np.ndarray, where, column: str) -> np.ndarray:
    """Squared row norms (float64) of a float32 block; SourceError on NaN or infinite values
    (a float64 sum of squares of float32 values is finite iff every value is)."""
    sq = row_sq_norms(blk)
    if not np.isfinite(sq).all():
        raise SourceError(f"{where}: column {column!r} holds NaN or infinite values")
    return sq


class ParquetShards:
    """The embedding column of one parquet or of a folder of shards, as a block source for
    :func:`topk_stream`: blocks are read by a background thread one block ahead, so reading
    and decoding the next block overlaps the matmul of the current one. ``normalize=True``
    L2-normalises each block's rows (as :func:`l2_normalize_` on the whole matrix would).
    ``rows=(a, b)``: only the pool's rows a..b-1 (a Ray task's part of the pool).
    """

    def __init__(self, path, column: str = "embedding", *, normalize: bool = False,
                 batch_rows: int = 8192, prefetch: int = 1, rows: tuple[int, int] | None = None) -> None:
        self.paths = path if isinstance(path, list) else shard_paths(path)
        self.column = column
        self.normalize = normalize
        self.batch_rows = batch_rows
        self.prefetch = max(1, prefetch)
        self.shard_rows = [self._open(p) for p in self.paths]
        total = sum(self.shard_rows)
        self.window = (0, total) if rows is None else (int(rows[0]), int(rows[1]))
        self.n_rows = self.window[1] - self.window[0]
        self.dim = 0
        self._thread = None
        self._stop = None
        if self.n_rows:
            self.dim = next(self._batches(limit=1))[1].shape[1]

    def _open(self, p) -> int:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(str(p))
        except Exception as exc:
            raise SourceError(f"{p} is not a readable parquet: {exc}") from None
        names = pf.schema_arrow.names
        if self.column not in names:
            raise SourceError(f"{p} has no embedding column {self.column!r} (columns: "
                              f"{', '.join(names)}); set the *_embed_column_name key or "
                              f"embed it first")
        ftype = pf.schema_arrow.field(self.column).type
        if not is_vector_type(ftype):
            raise SourceError(f"column {self.column!r} of {p} is {ftype}, not a list of floats")
        return pf.metadata.num_rows

    def _batches(self, limit: int | None = None):
        """(path, float32 (rows, dim) array) per record batch of the window, in pool order."""
        import pyarrow.parquet as pq

        seen, start = 0, 0
        a, b = self.window
        for p, n in zip(self.paths, self.shard_rows):
            lo, hi = max(a - start, 0), min(b - start, n)
            start += n
            if lo >= hi:
                continue
            # pre_buffer=False + a read buffer: pages are streamed, so the transient memory
            # is a few batches whatever the row-group size.
            pf = pq.ParquetFile(str(p), pre_buffer=False, buffer_size=4 << 20)
            groups, first = _row_groups(pf, lo, hi)
            at = first
            for batch in pf.iter_batches(columns=[self.column], batch_size=self.batch_rows,
                                         row_groups=groups, use_threads=False):
                arr = batch.column(0).slice(max(lo - at, 0), max(0, min(hi, at + len(batch)) - max(lo, at)))
                at += len(batch)
                if len(arr):
                    yield p, matrix_of(arr, p, self.column, self.dim)
                    seen += 1
                    if limit is not None and seen >= limit:
                        return
                if at >= hi:
                    break

    def _fill(self, bounds, put) -> None:
        it = self._batches()
        pending: np.ndarray | None = None
        # A ring of reused block buffers (no fresh pages to fault in per block): one being
        # searched, ``prefetch`` queued, one being filled, one spare.
        ring = [np.empty((max((c1 - c0 for c0, c1 in bounds), default=0), self.dim), np.float32)
                for _ in range(min(len(bounds), self.prefetch + 3))]
        for b, (c0, c1) in enumerate(bounds):
            out = ring[b % len(ring)][:c1 - c0]
            row = 0
            shards = []
            while row < c1 - c0:
                if pending is None or not len(pending):
                    p, pending = next(it)
                    shards.append(p)
                take = min(len(pending), c1 - c0 - row)
                out[row:row + take] = pending[:take]
                pending = pending[take:]
                row += take
            where = ", ".join(map(str, dict.fromkeys(shards)))
            for r0 in range(0, len(out), _ROWS):
                blk = out[r0:r0 + _ROWS]
                sq = check_finite(blk, where, self.column)
                if self.normalize:
                    _divide_by_norms_(blk, sq)
            if not put(out):
                return
        # the consumer holds views of the ring; it must not be reused after this point

    def blocks(self, bounds):
        """Yield the blocks of ``bounds`` in order, read ahead by a background thread."""
        import queue
        import threading

        bounds = list(bounds)
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        self._stop = stop

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                self._fill(bounds, put)
            except BaseException as exc:  # handed to the consumer
                put(exc)

        self._thread = threading.Thread(target=work, name="knn-reader", daemon=True)
        self._thread.start()
        for _ in bounds:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _row_groups(pf, lo: int, hi: int) -> tuple[list[int], int]:
    """The row groups of a parquet file holding rows lo..hi-1, and the first one's first row."""
    groups, start, first = [], 0, None
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if start + n > lo and start < hi:
            groups.append(g)
            first = start if first is None else first
        start += n
    return groups, (first or 0)


def read_matrix(path, column: str = "embedding") -> np.ndarray:
    """The whole embedding column of one parquet as a float32 (rows, dim) array, checked as
    the streamed search checks its blocks (SourceError; no rows gives a (0, 0) array)."""
    src = ParquetShards([path], column)
    out = np.empty((src.n_rows, src.dim), np.float32)
    row = 0
    for _, blk in src._batches():
        out[row:row + len(blk)] = blk
        row += len(blk)
    for r0 in range(0, len(out), _ROWS):
        check_finite(out[r0:r0 + _ROWS], path, column)
    return out
