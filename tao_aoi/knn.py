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

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

# cuML names; "l2" is an alias cuML also accepts for euclidean.
METRICS = {"cosine": "cosine", "euclidean": "euclidean", "l2": "euclidean", "manhattan": "manhattan"}
DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes of scratch for one block of scores
# Scratch bytes per score element: two tiles (one scored while the other is folded) of float32
# scores, bool masks and float32 copies of 1/_SPARSE rows (11), a float32 partition copy on
# the rows that need a full selection, and headroom.
_BYTES_PER_ELEMENT = 20
# A part's entries are found row by row when at most 1/_SPARSE of its rows have any.
_SPARSE = 8
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


# float32 squared norms inside this range are free of overflow and underflow, so their
# rounding is the only error; rows outside it are summed again in float64
_SAFE_SQ = (1e-30, 1e30)


def row_norms(blk: np.ndarray) -> np.ndarray:
    """L2 norm of every row (float64 array; NaN or inf where a value is). Summed in float32,
    a few times cheaper than in float64: a norm is then off by at most (dim/2 + 2) units
    of float32 roundoff, which :class:`_Bound` allows for."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", blk, blk).astype(np.float64)
    odd = ~((sq >= _SAFE_SQ[0]) & (sq <= _SAFE_SQ[1]))
    if odd.any():
        sq[odd] = row_sq_norms(blk[odd])
    return np.sqrt(sq)


def _divide_by_norms(blk: np.ndarray, norms: np.ndarray, out: np.ndarray) -> None:
    """out = blk / norms (one per row); all-zero rows stay zero."""
    norms = np.where(norms == 0, 1.0, norms)
    np.divide(blk, norms[:, None].astype(blk.dtype), out=out)


def l2_normalize_(x: np.ndarray, block_rows: int = _ROWS) -> np.ndarray:
    """Normalise the rows of a float array in place (blockwise: no full-size temporaries).

    All-zero rows stay zero.
    """
    for r0 in range(0, x.shape[0], block_rows):
        blk = x[r0:r0 + block_rows]
        _divide_by_norms(blk, row_norms(blk), blk)
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
    (u = 2^-24). Unit rows normalised with float32 norms (:func:`row_norms`) have lengths
    within (K/2 + 2)u of 1, which moves a cosine by up to (K + 4)u more; the +20 terms and 5%
    cover those 4, the column adjustment and the float64 rounding of the final distances.
    cosine: unit rows, so a constant. manhattan: relative to the L1 sum. euclidean: gamma * (|t| |s| + |s|^2) per pair.
    """

    metric: str
    gamma: float
    t_norm: np.ndarray | None = None  # euclidean: |t| of each target row of the tile
    s_norm: np.ndarray | None = None  # euclidean: |s| of each source column of the tile

    @classmethod
    def of(cls, metric: str, tgt: np.ndarray, col_adjust: np.ndarray | None) -> "_Bound":
        gamma = (2 * tgt.shape[1] + 20) * _U32 * 1.05
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


class _Tile:
    """The scores of target rows x one source block, as column parts that workers fill at the
    same time: part p holds the columns ``cols[p]`` (a C-contiguous (rows, width) array, so a
    part's matmul, compare and ``flatnonzero`` each run as one pass over memory), its mask,
    and room for a copy of 1/_SPARSE of its rows. Views of reused buffers: no fresh pages to
    fault in per part."""

    def __init__(self, bufs: tuple[np.ndarray, np.ndarray, np.ndarray], nr: int, nc: int,
                 n_parts: int) -> None:
        score_buf, mask_buf, row_buf = bufs
        edges = np.linspace(0, nc, max(1, min(n_parts, nc)) + 1).astype(int).tolist()
        self.cols = list(zip(edges[:-1], edges[1:]))
        self.scores, self.masks, self.row_copies = [], [], []
        few = nr // _SPARSE
        for c0, c1 in self.cols:
            a, b = nr * c0, nr * c1  # part p's slice of the flat buffers
            self.scores.append(score_buf[a:b].reshape(nr, c1 - c0))
            self.masks.append(mask_buf[a:b].reshape(nr, c1 - c0))
            self.row_copies.append(row_buf[few * c0:few * c1].reshape(few, c1 - c0))
        self.nc = nc

    @staticmethod
    def buffers(nr: int, nc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flat buffers of a tile of up to nr x nc scores."""
        return (np.empty(nr * nc, np.float32), np.empty(nr * nc, np.bool_),
                np.empty(nr // _SPARSE * nc, np.float32))

    def row_scores(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the whole-block scores of ``rows`` (source columns in order)."""
        return np.concatenate([sc[rows] for sc in self.scores], axis=1)

    def entries(self, p: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(row, column, score) of part p's set mask entries (of ``rows`` only, when given),
        by row then column."""
        m, sc = self.masks[p], self.scores[p]
        if rows is not None:
            m, sc = m[rows], sc[rows]
        w = m.shape[1]
        flat = np.flatnonzero(m)
        rr = flat // w
        return (rr if rows is None else rows[rr]), flat % w + self.cols[p][0], sc.reshape(-1)[flat]


def _score_part(tile: _Tile, p: int, t: np.ndarray, sblk: np.ndarray, thr: np.ndarray, metric: str,
                col_adjust: np.ndarray | None, memory_budget: int, limit: int):
    """One worker's share of a block: part p's scores, then its (row, column, score) entries
    that reach their row's threshold (numpy and BLAS release the GIL). Returns None instead
    when it has more than ``limit`` of them (the rows' floors are still low): its mask is
    then filled and the caller selects row by row."""
    c0, c1 = tile.cols[p]
    sc, m = tile.scores[p], tile.masks[p]
    _block_scores(sc, t, sblk[c0:c1], metric, None if col_adjust is None else col_adjust[c0:c1],
                  memory_budget)
    # past the first blocks few rows gain an entry: a row's maximum (one read-only pass)
    # picks them, and only they are compared entry by entry
    rows = np.flatnonzero(sc.max(axis=1) >= thr)
    if rows.size <= sc.shape[0] // _SPARSE:
        sub = np.take(sc, rows, axis=0, out=tile.row_copies[p][:rows.size])
        flat = np.flatnonzero(np.greater_equal(sub, thr[rows, None], out=m[:rows.size]))
        if flat.size <= limit:
            w = sub.shape[1]
            return rows[flat // w], flat % w + c0, sub.reshape(-1)[flat]
    np.greater_equal(sc, thr[:, None], out=m)
    return None if np.count_nonzero(m) > limit else tile.entries(p)


def _heavy_entries(cands: Candidates, tile: _Tile, rows: np.ndarray, bound: _Bound, r0: int,
                   memory_budget: int) -> tuple[np.ndarray, ...]:
    """Rows with more than k candidates in this block (the first block, an adversarial order):
    their floor from the block's own k best, then their entries against it. In chunks whose
    copies stay within the budget."""
    nc, k = tile.nc, cands.k
    step = max(1, (memory_budget // 4) // max(1, nc * 10))
    found = []
    for h0 in range(0, rows.size, step):
        part = rows[h0:h0 + step]
        full = tile.row_scores(part)
        kth = np.partition(full, nc - k, axis=1)[:, nc - k]
        cands.raise_floor(part + r0, bound.lowest(part, kth))
        flat = np.flatnonzero(full >= bound.threshold(part, cands.floor[part + r0])[:, None])
        found.append((part[flat // nc], flat % nc, full.reshape(-1)[flat]))
    return tuple(np.concatenate(x) for x in zip(*found))


def _block_entries(cands: Candidates, tile: _Tile, found: list, nr: int, bound: _Bound, r0: int,
                   memory_budget: int) -> tuple[np.ndarray, ...]:
    """Every (row, column, score) of the block that can still make its row's k best.
    ``found``: per part, its entries, or None where its mask holds them."""
    counts = sum(np.count_nonzero(tile.masks[p], axis=1) if f is None else np.bincount(f[0], minlength=nr)
                 for p, f in enumerate(found))
    heavy = np.flatnonzero(counts > cands.k) if tile.nc > cands.k else np.zeros(0, np.int64)
    # with heavy rows, the others' entries come from the parts and a heavy row's from
    # _heavy_entries
    light = (counts > 0) & (counts <= cands.k) if heavy.size else counts > 0
    parts = []
    for p, f in enumerate(found):
        if f is None:
            f = tile.entries(p, np.flatnonzero(light))
        elif heavy.size:
            f = tuple(x[light[f[0]]] for x in f)
        parts.append(f)
    if heavy.size:
        parts.append(_heavy_entries(cands, tile, heavy, bound, r0, memory_budget))
    rr, cc, vals = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((cc, rr))
    return rr[order], cc[order], vals[order]


def _gather(cands: Candidates, rr: np.ndarray, cc: np.ndarray, vals: np.ndarray, bound: _Bound,
            r0: int, glob: Callable) -> None:
    """Hand the entries (sorted by row, then column = source index) to the candidates as
    padded (rows, width) arrays."""
    rows, first, cnt = np.unique(rr, return_index=True, return_counts=True)
    slot = np.repeat(np.arange(rows.size), cnt)
    pos = np.arange(rr.size) - first[slot]
    width = int(cnt.max())
    ns = np.full((rows.size, width), -np.inf, np.float32)
    ni = np.full((rows.size, width), _PAD_INDEX, np.int64)
    ne = np.zeros((rows.size, width), np.float64)
    ns[slot, pos], ni[slot, pos] = vals, glob(cc)
    ne[slot, pos] = bound.entry(rr, cc, vals)
    cands.add(rows + r0, ns, ni, ne)


@dataclass(frozen=True)
class _Scoring:
    """One tile (target rows r0.. x a source block) whose parts the workers are scoring."""

    tile: _Tile
    parts: list  # Futures of _score_part
    bound: _Bound
    r0: int
    glob: Callable


def _score_tile(cands: Candidates, t: np.ndarray, r0: int, sblk: np.ndarray, glob: Callable,
                metric: str, col_adjust, bufs: tuple, memory_budget: int,
                workers: "Workers") -> _Scoring:
    """Hand the parts of one tile to the workers; rows are compared with their floors as they
    are now (a floor only rises, so an older one lets more entries through, never fewer)."""
    nr, nc = t.shape[0], sblk.shape[0]
    tile = _Tile(bufs, nr, nc, workers.parts(nc))
    bound = _Bound.of(metric, t, col_adjust)
    thr = bound.threshold(np.arange(nr), cands.floor[r0:r0 + nr])
    # past the first blocks a row gains a few entries per block, if any
    limit = max(1024, 4 * cands.k * nr // len(tile.cols))
    score = partial(_score_part, tile, t=t, sblk=sblk, thr=thr, metric=metric,
                    col_adjust=col_adjust, memory_budget=memory_budget, limit=limit)
    return _Scoring(tile, [workers.submit(score, p) for p in range(len(tile.cols))], bound, r0, glob)


def _fold(cands: Candidates, job: _Scoring, memory_budget: int) -> None:
    """Fold a scored tile into its rows' candidates (waits for its parts)."""
    found = [f.result() for f in job.parts]
    nr = job.tile.scores[0].shape[0]
    rr, cc, vals = _block_entries(cands, job.tile, found, nr, job.bound, job.r0, memory_budget)
    if rr.size:
        _gather(cands, rr, cc, vals, job.bound, job.r0, job.glob)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


class _OneBlasThread:
    """Process-wide: BLAS calls single-threaded while any search holds this (counted, so
    searches running at once in threads nest; the first in sets the limit, the last out
    restores it)."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._users = 0
        self._limits = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                from threadpoolctl import threadpool_limits

                self._limits = threadpool_limits(1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limits.restore_original_limits()
                self._limits = None


_ONE_BLAS_THREAD = _OneBlasThread()


class Workers:
    """The threads a search runs on: each scores parts of blocks with a single-threaded BLAS
    call, and the first free one decodes the next block.

    One BLAS call spread over every core stalls all of them whenever one core is busy with
    something else (a reader thread's decoding), and its waiting threads spin; a separate
    reader thread makes one thread more than cores, and the two pay for sharing them in
    cache misses and switches. Small independent tasks on one pool of a thread per core keep
    every core on useful work.
    """

    PARTS_PER_WORKER = 4  # a worker busy decoding leaves its parts to the others
    MIN_PART_WIDTH = 512  # sources: narrower parts pay more in call overhead than they balance

    def __init__(self, n: int | None = None) -> None:
        self.n = max(1, int(n) if n else cpu_count())
        self._pool = None

    def parts(self, nc: int) -> int:
        """Column parts per block."""
        return max(1, min(self.PARTS_PER_WORKER * self.n, nc // self.MIN_PART_WIDTH)) if self.n > 1 else 1

    def __enter__(self) -> "Workers":
        from concurrent.futures import ThreadPoolExecutor

        if self.n > 1:
            _ONE_BLAS_THREAD.__enter__()
            self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="knn")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            _ONE_BLAS_THREAD.__exit__()

    def submit(self, fn: Callable, *args):
        """``fn(*args)`` as a Future: on a worker, or run now when there is no pool."""
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        from concurrent.futures import Future

        done = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # raised by result(), as from a worker
            done.set_exception(exc)
        return done


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
    compute exact distances without a second pass over the pool. Rows are appended into
    arrays grown by doubling: a block adds a few rows, and copying the whole store for them
    (tens of MB) would cost more than the block's selection."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self._idx = np.zeros(1024, np.int64)
        self._vec = np.zeros((1024, dim), np.float32)

    @property
    def idx(self) -> np.ndarray:
        return self._idx[:self.n]

    @property
    def vec(self) -> np.ndarray:
        return self._vec[:self.n]

    def add_from_block(self, live_i: np.ndarray, c0: int, blk: np.ndarray) -> None:
        c1 = c0 + blk.shape[0]
        new = np.unique(live_i[(live_i >= c0) & (live_i < c1)])
        new = new[~np.isin(new, self.idx)]
        if new.size:
            if self.n + new.size > len(self._idx):
                cap = max(2 * len(self._idx), self.n + new.size)
                self._idx = np.concatenate([self.idx, np.zeros(cap - self.n, np.int64)])
                self._vec = np.concatenate([self.vec, np.zeros((cap - self.n, self._vec.shape[1]), np.float32)])
            self._idx[self.n:self.n + new.size] = new
            self._vec[self.n:self.n + new.size] = blk[new - c0]
            self.n += new.size
        if self.n > 2 * live_i.size + 1024:  # live_i.size bounds the live sources
            self.keep_only(live_i)

    def keep_only(self, live_i: np.ndarray) -> None:
        keep = np.flatnonzero(np.isin(self.idx, live_i))
        self._idx[:keep.size], self._vec[:keep.size] = self._idx[keep], self._vec[keep]
        self.n = keep.size

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
                progress: Callable[[int], None] | None = None, workers: int | None = None,
                stop=None) -> Partial:
    """The candidates of the scoring targets ``tgt`` (float32, unit rows for cosine) among
    ``source`` (rows are sources ``offset ...``). ``k``: the k of the whole search.
    ``workers``: scoring threads (default: the CPUs this process may run on). ``stop``: a
    threading.Event; once set, the search gives up at the next block (_Stopped)."""
    n_t, n_s = tgt.shape[0], int(source.n_rows)
    exclude = _check_exclude(exclude, n_s)
    cands = Candidates(n_t, k)
    tb, bounds = block_bounds(n_s, n_t, k, memory_budget, first_block)
    sb = max((c1 - c0 for c0, c1 in bounds), default=0)
    # two score tiles: the workers fill one while this thread folds the other
    buffers = [_Tile.buffers(tb, sb) for _ in range(2)]
    store = _VectorStore(tgt.shape[1]) if keep_vectors else None
    later: list[Callable[[], None]] = []  # folds of scored tiles and ends of blocks, in order

    def catch_up() -> None:
        while later:
            later.pop(0)()

    def end_block(c0: int, c1: int, blk: np.ndarray) -> None:
        cands.compact()
        if store is not None:
            store.add_from_block(cands.i, c0 + offset, blk)
        if progress is not None:
            progress(c1 - c0)

    try:
        with Workers(workers) as pool:
            blocks = iter(source.blocks(bounds))
            nxt = pool.submit(next, blocks) if bounds else None
            n_tiles = 0
            for n_done, (c0, c1) in enumerate(bounds, start=1):
                full_blk = nxt.result()
                if stop is not None and stop.is_set():
                    raise _Stopped
                # the next block is decoded by the first free worker, queued ahead of this
                # block's scoring parts (one pool for both: no thread waits on a busy core)
                nxt = pool.submit(next, blocks) if n_done < len(bounds) else None
                if exclude is not None and exclude[c0:c1].any():
                    gidx = np.flatnonzero(~exclude[c0:c1]) + c0 + offset
                    sblk = full_blk[gidx - c0 - offset]
                else:
                    gidx, sblk = None, full_blk
                if sblk.shape[0]:
                    glob = (lambda cols, b=c0 + offset: cols + b) if gidx is None else gidx.__getitem__
                    adjust = _col_adjust(metric, normalized, sblk)
                    for r0 in range(0, n_t, tb):
                        t = tgt[r0:r0 + tb]
                        if not np.isfinite(cands.floor[r0:r0 + tb]).all():
                            catch_up()  # rows still without floors: seed them before scoring more
                        job = _score_tile(cands, t, r0, sblk, glob, metric, adjust,
                                          buffers[n_tiles % 2], memory_budget, pool)
                        n_tiles += 1
                        # the previous tile is folded (and its block ended) while the workers
                        # score this one, so they never wait for this thread between tiles
                        catch_up()
                        later.append(partial(_fold, cands, job, memory_budget))
                later.append(partial(end_block, c0, c1, full_blk))
                if not sblk.shape[0]:
                    # no tile to overlap with: end the earlier blocks now, before the next
                    # decode reuses the buffer of the block two back
                    catch_up()
            catch_up()
    finally:
        source.close()
    if store is None:
        return Partial(cands.s, cands.i, cands.e, cands.floor)
    store.keep_only(cands.i)
    return Partial(cands.s, cands.i, cands.e, cands.floor, store.idx.copy(), store.vec.copy())


class _Stopped(Exception):
    """A part's search gave up because another part failed."""


# CPU time of decoding, checking and normalising one float of a parquet list<float> column,
# in floating-point operations of single-core sgemm on the same core (measured here:
# ~10 ns a value against ~89 GFLOP/s). Scoring a row costs 2 x targets x dim operations.
_DECODE_FLOPS_PER_VALUE = 900


def decode_streams(n_targets: int, cores: int) -> int:
    """How many parts of a parquet pool to search at once so that decoding keeps up with
    scoring: each part decodes on one thread at a time, and decoding takes this share of the
    work. One on 2 cores with 1,000 targets; 5 on 16; more with fewer targets."""
    share = _DECODE_FLOPS_PER_VALUE / (_DECODE_FLOPS_PER_VALUE + 2 * max(1, n_targets))
    return max(1, min(cores, round(cores * share)))


def _search_parts(tgt: np.ndarray, sources: list, k: int, metric: str, *, normalized: bool,
                  memory_budget: int, first_block: int, exclude: np.ndarray | None,
                  progress, cores: int) -> list[Partial]:
    """search_part over parts of one pool at once (threads; each part its own decode stream
    and share of the cores and of the memory budget). The first failure stops the others."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock, stop = threading.Lock(), threading.Event()
    base = sources[0].offset  # row indices are relative to the split source's first row

    def tick(n: int) -> None:
        with lock:
            progress(n)

    def one(src) -> Partial:
        a = src.offset - base
        b = a + src.n_rows
        try:
            return search_part(tgt, src, k, metric, normalized=normalized,
                               memory_budget=max(1, memory_budget // len(sources)),
                               first_block=first_block,
                               exclude=None if exclude is None else exclude[a:b], offset=a,
                               progress=None if progress is None else tick,
                               workers=max(1, cores // len(sources)), stop=stop)
        except BaseException:
            stop.set()
            raise

    with _ONE_BLAS_THREAD, ThreadPoolExecutor(len(sources), thread_name_prefix="knn-part") as pool:
        futures = [pool.submit(one, src) for src in sources]
        try:
            errors = [f.exception() for f in futures]
        except BaseException:  # Ctrl-C while waiting: the parts stop at their next block
            stop.set()
            raise
    real = [e for e in errors if e is not None and not isinstance(e, _Stopped)]
    if real:
        raise real[0]
    return [f.result() for f in futures]


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
                progress: Callable[[int], None] | None = None, workers: int | None = None,
                _originals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` over a block source: ``source.n_rows``, ``source.dim`` and
    ``source.blocks(bounds)`` yielding one float32 (c1 - c0, dim) array per (c0, c1) of
    :func:`block_bounds` (e.g. :class:`ParquetShards`; the next block is read while this one
    is searched). Peak memory: three blocks + two score tiles + the candidates (+ the
    source's read buffers), whatever the pool size; the result is identical to :func:`topk` on the whole matrix.
    A source with ``split(n)`` (ParquetShards) is searched as :func:`decode_streams` parts at
    once when one decode stream cannot keep the cores busy (many cores, few targets).
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
    cores = workers or cpu_count()
    split = getattr(source, "split", None)
    sources = split(decode_streams(n_t, cores)) if split is not None else [source]
    if len(sources) == 1:
        parts = [search_part(tgt, source, kk, metric, normalized=normalized,
                             memory_budget=memory_budget, first_block=first_block, exclude=exclude,
                             keep_vectors=_originals is None, progress=progress, workers=cores)]
    else:
        parts = _search_parts(tgt, sources, kk, metric, normalized=normalized,
                              memory_budget=memory_budget, first_block=first_block,
                              exclude=exclude, progress=progress, cores=cores)
    cands = merge(parts, kk)
    if _originals is not None:
        return exact_topk(cands, targets, lambda ids: _originals[ids], metric)
    ids = np.concatenate([p.vector_ids for p in parts])
    vectors = np.concatenate([p.vectors for p in parts])
    return exact_topk(cands, targets, lambda wanted: rows_by_id(ids, vectors, wanted), metric)


def topk(targets: np.ndarray, sources: np.ndarray, k: int, metric: str = "cosine", *,
         normalized: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET,
         first_block: int = _FIRST_BLOCK, exclude: np.ndarray | None = None,
         progress: Callable[[int], None] | None = None,
         workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k neighbours of each target among the sources.

    targets: (T, D), sources: (N, D) float arrays (float32 is used internally; sources
    already float32 and C-contiguous are not copied). ``normalized=True`` promises that
    rows are L2-normalised (cosine skips the per-column rescale). ``progress`` is called
    with the number of source rows finished after each source block. ``first_block`` is
    the width of the first source block (tests shrink it to exercise every path).
    ``workers``: threads (default: one per CPU this process may use); any count gives the
    same result.
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
                       progress=progress, workers=workers, _originals=sources)


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


def check_vector_field(schema, column: str, where) -> None:
    """SourceError unless the Arrow ``schema`` of ``where`` has ``column`` as a list of floats."""
    if column not in schema.names:
        raise SourceError(f"{where} has no embedding column {column!r} (columns: "
                          f"{', '.join(schema.names)}); set the *_embed_column_name key or "
                          f"embed it first")
    ftype = schema.field(column).type
    if not is_vector_type(ftype):
        raise SourceError(f"column {column!r} of {where} is {ftype}, not a list of floats")


def list_array(vectors: np.ndarray, value_type=None, present=None):
    """An Arrow list column from a (rows, dim) array, one list per row, without a Python object
    per element. ``value_type``: the list's value type (default: the array's). ``present``: a
    bool per list; the lists without one (False) are nulls and ``vectors`` holds only the
    others, in order."""
    import pyarrow as pa

    rows, dim = vectors.shape
    values = np.ascontiguousarray(vectors).reshape(-1)
    if value_type is not None:
        values = values.astype(value_type.to_pandas_dtype(), copy=False)
    if present is None:
        return pa.ListArray.from_arrays(pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32)),
                                        pa.array(values))
    present = np.asarray(present, bool)
    if int(present.sum()) != rows:
        raise ValueError(f"{rows} vectors for {int(present.sum())} present lists")
    offsets = np.concatenate([[0], np.cumsum(present * dim)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(~present))


def matrix_of(arr, where, column: str, dim: int = 0) -> np.ndarray:
    """float32 (rows, dim) array of an Arrow list column (all rows the same length; ``dim``,
    when known, is the length every row must have). SourceError names ``where``. A read-only
    view of the Arrow buffer when it holds float32."""
    import pyarrow as pa

    if arr.null_count:
        raise SourceError(f"{where}: {arr.null_count} rows have no {column!r} value")
    n = len(arr)
    # Read from the buffers: on a freshly decoded batch, pyarrow's value_lengths(),
    # offsets.to_numpy() and flatten().to_numpy() each cost ~0.4-1.4 ms (about a third of
    # the decode itself), the buffers a few microseconds.
    if pa.types.is_fixed_size_list(arr.type):
        lengths = np.full(n, arr.type.list_size)
        start = arr.offset * arr.type.list_size
    else:
        width = np.int64 if pa.types.is_large_list(arr.type) else np.int32
        offsets = np.frombuffer(arr.buffers()[1], width, count=n + 1,
                                offset=arr.offset * np.dtype(width).itemsize)
        lengths = np.diff(offsets)
        start = int(offsets[0]) if n else 0
    dim = dim or (int(lengths[0]) if n else 0)
    if n and dim == 0:
        raise SourceError(f"{where}: column {column!r} holds empty vectors")
    if (lengths != dim).any():
        raise SourceError(f"{where}: column {column!r} has vectors of different lengths "
                          f"({dim} and {int(lengths[lengths != dim][0])})")
    values = arr.values.slice(start, n * dim)
    if values.null_count:  # a missing number inside a vector
        raise SourceError(f"{where}: column {column!r} holds NaN or infinite values")
    if pa.types.is_float32(values.type) and n:
        flat = np.frombuffer(values.buffers()[1], np.float32, count=n * dim, offset=values.offset * 4)
    else:
        flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, dim)


def check_finite(blk: np.ndarray, where, column: str) -> np.ndarray:
    """Row norms (:func:`row_norms`) of a float32 block; SourceError on NaN or infinite values
    (a row's norm is finite iff every value is: rows whose float32 sum overflows are summed
    again in float64)."""
    norms = row_norms(blk)
    if not np.isfinite(norms).all():
        raise SourceError(f"{where}: column {column!r} holds NaN or infinite values")
    return norms


class ParquetShards:
    """The embedding column of one parquet or of a folder of shards, as a block source for
    :func:`topk_stream` (which decodes the next block on one of its workers while the others
    score the current one). ``normalize=True`` L2-normalises each block's rows (as
    :func:`l2_normalize_` on the whole matrix would). ``rows=(a, b)``: only the pool's rows
    a..b-1 (a Ray task's part of the pool). ``batch_rows``: rows per decoded Arrow batch;
    batches of a few MB decode faster than large ones (measured: 1,024 rows of 768 floats
    take ~20% less CPU than 8,192) and stay in cache for the check and the normalisation.
    """

    def __init__(self, path, column: str = "embedding", *, normalize: bool = False,
                 batch_rows: int = 1024, rows: tuple[int, int] | None = None) -> None:
        self.paths = path if isinstance(path, list) else shard_paths(path)
        self.column = column
        self.normalize = normalize
        self.batch_rows = batch_rows
        self.meta = [self._open(p) for p in self.paths]  # footers, read once
        self.shard_rows = [m.num_rows for m in self.meta]
        self.drop_behind = _larger_than_half_of_memory(self.paths)
        self.streams = 1
        total = sum(self.shard_rows)
        self.window = (0, total) if rows is None else (int(rows[0]), int(rows[1]))
        self.n_rows = self.window[1] - self.window[0]
        self.dim = 0
        self._reading = None
        if self.n_rows:  # a few rows tell the length of every vector
            self.dim = next(self._batches(limit=1, batch_rows=16, hints=False))[1].shape[1]

    @property
    def offset(self) -> int:
        """The pool row of this source's first row."""
        return self.window[0]

    def split(self, n: int) -> list["ParquetShards"]:
        """This source as up to ``n`` sources over consecutive row ranges (itself when n <= 1)."""
        a, b = self.window
        n = max(1, min(int(n), b - a))
        if n == 1:
            return [self]
        edges = np.linspace(a, b, n + 1).astype(int).tolist()
        parts = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            part = ParquetShards.__new__(ParquetShards)
            part.__dict__.update(self.__dict__)  # same shards, column and checks; own window
            part.window, part.n_rows, part._reading = (lo, hi), hi - lo, None
            part.streams = n  # read at once: they share the memory of direct reads
            parts.append(part)
        return parts

    def _open(self, p):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(str(p))
        except Exception as exc:
            raise SourceError(f"{p} is not a readable parquet: {exc}") from None
        check_vector_field(pf.schema_arrow, self.column, p)
        return pf.metadata

    def _batches(self, limit: int | None = None, batch_rows: int | None = None, hints: bool = True):
        """(path, float32 (rows, dim) array) per record batch of the window, in pool order.
        ``hints``: read ahead from a thread of its own: a pool larger than half of memory
        around the page cache (:class:`_DirectChunks`) where the files allow it, otherwise
        with page-cache hints (:class:`_Readahead`)."""
        import pyarrow.parquet as pq

        plan, start = [], 0  # (path, metadata, row groups, first row of the first, lo, hi)
        a, b = self.window
        for p, meta, n in zip(self.paths, self.meta, self.shard_rows):
            lo, hi = max(a - start, 0), min(b - start, n)
            start += n
            if lo < hi:
                plan.append((p, meta, *_row_groups(meta, lo, hi), lo, hi))
        ahead = None
        if hints:
            chunks = [(p, spans) for p, meta, groups, *_ in plan
                      for spans in _column_ranges(meta, self.column, groups)]
            ahead = (_DirectChunks.open(chunks, _DirectChunks.MAX_CHUNK // self.streams)
                     if self.drop_behind else None) or \
                _Readahead(chunks, self.drop_behind)
        seen, at_group = 0, 0
        try:
            for p, meta, groups, at, lo, hi in plan:
                with contextlib.ExitStack() as shard:
                    pf = None  # the shard's own file: only for row groups not read ahead into memory
                    for g in groups:
                        chunk = ahead.reading(at_group) if ahead is not None else None
                        at_group += 1
                        if chunk is None and pf is None:
                            # pre_buffer=False + a read buffer: pages are streamed, so the
                            # transient memory is a few batches whatever the row-group size
                            pf = shard.enter_context(pq.ParquetFile(str(p), metadata=meta, pre_buffer=False,
                                                                    buffer_size=4 << 20))
                        reader = pf if chunk is None else pq.ParquetFile(chunk, metadata=meta, pre_buffer=False)
                        batches = reader.iter_batches(columns=[self.column], row_groups=[g], use_threads=False,
                                                      batch_size=batch_rows or self.batch_rows)
                        try:
                            for batch in batches:
                                arr = batch.column(0)
                                arr = arr.slice(max(lo - at, 0), max(0, min(hi, at + len(arr)) - max(lo, at)))
                                at += len(batch)
                                if len(arr):
                                    yield p, matrix_of(arr, p, self.column, self.dim)
                                    seen += 1
                                    if limit is not None and seen >= limit:
                                        return
                                if at >= hi:
                                    break
                        finally:
                            batches.close()  # the reader lets go of the chunk's buffer
                            del batches, reader
                            chunk = None
        finally:
            if ahead is not None:
                ahead.close(finished=at_group)

    def blocks(self, bounds):
        """The blocks of ``bounds`` in order, each checked (SourceError on NaN or infinite
        values) and normalised when asked. A block is a view of one of three reused buffers
        (no fresh pages to fault in per block): it stays valid while the next two are read
        (the search folds a block's last tile while the next is scored and the one after
        decoded), not after."""
        bounds = list(bounds)
        it = self._batches()
        pending: np.ndarray | None = None
        ring = [np.empty((max((c1 - c0 for c0, c1 in bounds), default=0), self.dim), np.float32)
                for _ in range(min(len(bounds), 3))]
        self._reading = it
        for b, (c0, c1) in enumerate(bounds):
            out = ring[b % len(ring)][:c1 - c0]
            row = 0
            while row < c1 - c0:
                if pending is None or not len(pending):
                    where, pending = next(it)
                take = min(len(pending), c1 - c0 - row)
                # checked, normalised and copied into the block in one pass over the batch
                # (a batch is a few MB: it is still in cache for the second and third look)
                part, dest = pending[:take], out[row:row + take]
                norms = check_finite(part, where, self.column)
                if self.normalize:
                    _divide_by_norms(part, norms, dest)
                else:
                    dest[...] = part
                pending = pending[take:]
                row += take
            yield out

    def close(self) -> None:
        """End the read in progress, if any (its readahead thread and the files it holds)."""
        if self._reading is not None:
            self._reading.close()
            self._reading = None


def _row_groups(meta, lo: int, hi: int) -> tuple[list[int], int]:
    """The row groups of a parquet (its metadata) holding rows lo..hi-1, and the first one's
    first row."""
    groups, start, first = [], 0, None
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if start + n > lo and start < hi:
            groups.append(g)
            first = start if first is None else first
        start += n
    return groups, (first or 0)


def _leaf_count(arrow_type) -> int:
    """Parquet leaf columns of an Arrow type (a list: its values'; a struct: its fields')."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        return sum(_leaf_count(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_map(arrow_type):
        return _leaf_count(arrow_type.key_type) + _leaf_count(arrow_type.item_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or \
            pa.types.is_fixed_size_list(arrow_type):
        return _leaf_count(arrow_type.value_type)
    return 1


def _column_ranges(meta, column: str, groups: list[int]) -> list[list[tuple[int, int]]]:
    """Per row group of ``groups``: (offset, length) of the bytes of the top-level ``column``
    (its leaf columns follow those of the fields before it; a dotted path cannot tell "a.b"
    from "a")."""
    schema = meta.schema.to_arrow_schema()
    at = schema.get_field_index(column)
    if at < 0:
        return [[] for _ in groups]
    first = sum(_leaf_count(schema.field(i).type) for i in range(at))
    leaves = range(first, first + _leaf_count(schema.field(at).type))
    out = []
    for g in groups:
        spans = []
        for i in leaves:
            c = meta.row_group(g).column(i)
            off = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            spans.append((off, c.total_compressed_size))
        out.append(spans)
    return out


# row groups read ahead of the one being decoded (hints or direct reads)
_READ_AHEAD = 2


class _Readahead:
    """Page-cache hints for row groups read in order, given from a thread of their own
    (posix_fadvise; nothing where it does not exist):

    * WILLNEED on the row group being read and the next ``DEPTH`` (across shards), so the
      disk reads them while this one is decoded. The kernel queues such a read in the
      caller, and blocks it while the disk queue is full: on a worker that would leave a
      core idle;
    * with ``drop_behind``, DONTNEED on a row group's bytes once read. A pool larger than
      memory cannot stay cached anyway; dropping what was read keeps the page cache from
      filling, and a full cache makes the kernel reclaim a page for every page read, which
      cost three times the CPU of the read itself here (a core's worth of time per 500 MB).
    """

    DEPTH = _READ_AHEAD

    def __init__(self, groups: list, drop_behind: bool) -> None:
        import threading

        self.groups, self.drop_behind = groups, drop_behind  # [(path, [(offset, length)])]
        self._cond = threading.Condition()
        self._reading, self._closed = 0, False
        self._thread = None
        if groups and hasattr(os, "posix_fadvise"):
            self._thread = threading.Thread(target=self._run, name="knn-readahead", daemon=True)
            self._thread.start()

    def reading(self, i: int) -> None:
        """The reader starts row group i (those before it are done)."""
        with self._cond:
            self._reading = i
            self._cond.notify()

    def close(self, finished: int) -> None:
        """The reader is done (row groups before ``finished`` were read): drop what is left
        to drop, then stop."""
        with self._cond:
            self._reading, self._closed = finished, True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        fds, last = {}, {}
        for i, (path, _) in enumerate(self.groups):
            last[path] = i
        asked = dropped = 0
        try:
            while True:
                with self._cond:
                    while True:
                        reading, closed = self._reading, self._closed
                        drop = self.drop_behind and dropped < reading
                        ask = not closed and asked < min(len(self.groups), reading + 1 + self.DEPTH)
                        if drop or ask or closed:
                            break
                        self._cond.wait()
                if ask:  # reading ahead first: the reader may be waiting for it
                    self._advise(fds, asked, os.POSIX_FADV_WILLNEED)
                    asked += 1
                elif drop:
                    self._advise(fds, dropped, os.POSIX_FADV_DONTNEED)
                    dropped += 1
                else:
                    return
                done = min(asked, dropped if self.drop_behind else reading)
                for path in [q for q in fds if last[q] < done]:
                    os.close(fds.pop(path))
        finally:
            for fd in fds.values():
                os.close(fd)

    def _advise(self, fds: dict, i: int, advice: int) -> None:
        path, spans = self.groups[i]
        try:
            if path not in fds:
                fds[path] = os.open(path, os.O_RDONLY)
            for off, length in spans:
                os.posix_fadvise(fds[path], off, length, advice)
        except OSError:  # hints only: a file that cannot take them is read all the same
            pass


class _ChunkFile:
    """One column chunk read into memory, as the file pyarrow reads it from. The reader is
    given the file's metadata, so it reads no footer: its reads fall inside the chunk and
    are views of the buffer, not copies. A read outside it (a writer's odd offsets, which
    pyarrow pads for) is served from the file itself."""

    def __init__(self, path: str, size: int, start: int, view: memoryview) -> None:
        self.path, self.size, self.start, self.view, self.pos = path, size, start, view, 0
        self.closed = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> memoryview:
        a = self.pos - self.start
        n = max(0, min(self.size - self.pos if n is None or n < 0 else n, self.size - self.pos))
        if 0 <= a and a + n <= len(self.view):
            out = self.view[a:a + n]
        else:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                out = f.read(n)
        self.pos += len(out)
        return out

    def close(self) -> None:
        self.closed = True


class _DirectChunks:
    """Column chunks read in order around the page cache (O_DIRECT) by a thread of its own,
    ``DEPTH`` ahead of the reader, into buffers reused from chunk to chunk.

    For a pool larger than memory the page cache only costs: the kernel fills, copies and
    drops every page (about a core-second per 1.3 GB here, a tenth of the search's CPU). A
    direct read moves the bytes from the disk into the buffer pyarrow decodes from. Only
    where the files take it (not tmpfs, for one) and a chunk fits ``MAX_CHUNK``;
    :meth:`open` gives None otherwise, and the caller reads through the page cache.
    """

    DEPTH = _READ_AHEAD
    ALIGN = 4096  # O_DIRECT offsets, lengths and buffers: multiples of the block size
    MAX_CHUNK = 256 << 20  # of one read; the parts of a pool searched at once share it

    @classmethod
    def open(cls, groups: list, max_chunk: int | None = None) -> "_DirectChunks | None":
        if not groups or not all(r for _, r in groups) or not hasattr(os, "O_DIRECT") or \
                not hasattr(os, "preadv"):
            return None
        spans = []
        for path, ranges in groups:
            lo = min(off for off, _ in ranges) // cls.ALIGN * cls.ALIGN
            hi = max(off + n for off, n in ranges)
            spans.append((str(path), lo, -(-hi // cls.ALIGN) * cls.ALIGN))
        if max(hi - lo for _, lo, hi in spans) > (cls.MAX_CHUNK if max_chunk is None else max_chunk):
            return None
        import mmap

        first_in_folder = {}
        for path, lo, _ in spans:  # one file per folder: shards of a pool share a file system
            first_in_folder.setdefault(os.path.dirname(path), (path, lo))
        probe = mmap.mmap(-1, cls.ALIGN)
        try:
            for path, lo in first_in_folder.values():
                fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
                try:
                    os.preadv(fd, [probe], lo)
                finally:
                    os.close(fd)
        except OSError:  # no O_DIRECT here
            return None
        finally:
            probe.close()
        return cls(spans)

    def __init__(self, spans: list) -> None:
        import mmap
        import queue
        import threading

        self.spans = spans
        size = max(hi - lo for _, lo, hi in spans)
        self._free = queue.Queue()
        self._buffers = [mmap.mmap(-1, size) for _ in range(min(len(spans), self.DEPTH + 1))]
        for buf in self._buffers:
            self._free.put(buf)
        self._ready = queue.Queue()
        self._stop = threading.Event()
        self._held = None
        self._sizes = {}
        self._thread = threading.Thread(target=self._run, name="knn-direct-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fds = {}
        try:
            for path, lo, hi in self.spans:
                buf = self._free.get()
                if buf is None or self._stop.is_set():
                    return
                try:
                    if path not in fds:
                        for old in list(fds):
                            os.close(fds.pop(old))
                        fds[path] = os.open(path, os.O_RDONLY | os.O_DIRECT)
                        self._sizes[path] = os.fstat(fds[path]).st_size
                    n = 0
                    while n < hi - lo:  # a read may stop short; an unaligned one is the file's end
                        got = os.preadv(fds[path], [memoryview(buf)[n:hi - lo]], lo + n)
                        n += got
                        if got <= 0 or got % self.ALIGN:
                            break
                    self._ready.put((buf, n, None))
                except BaseException as exc:  # the reader raises it (it would wait forever)
                    self._ready.put((buf, 0, exc))
                    return
        finally:
            for fd in fds.values():
                os.close(fd)

    def reading(self, i: int):
        """Row group i's column chunk, as a file for pyarrow (the previous one is done)."""
        import pyarrow as pa

        self._give_back()
        buf, n, exc = self._ready.get()
        self._held = buf
        if exc is not None:
            raise exc
        path, lo, _ = self.spans[i]
        return pa.PythonFile(_ChunkFile(path, self._sizes[path], lo, memoryview(buf)[:n]), mode="r")

    def _give_back(self) -> None:
        if self._held is not None:
            self._free.put(self._held)
            self._held = None

    def close(self, finished: int) -> None:
        self._stop.set()
        self._give_back()
        for _ in self._buffers:  # wake the thread wherever it waits
            self._free.put(None)
        self._thread.join()
        for buf in self._buffers:
            try:
                buf.close()
            except BufferError:  # a view is still alive somewhere: the collector frees it
                pass


def _larger_than_half_of_memory(paths) -> bool:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return sum(os.path.getsize(p) for p in paths) > ram // 2
    except (ValueError, OSError, AttributeError):
        return False


def read_matrix(path, column: str = "embedding") -> np.ndarray:
    """The whole embedding column of one parquet as a float32 (rows, dim) array, checked as
    the streamed search checks its blocks (SourceError; no rows gives a (0, 0) array)."""
    src = ParquetShards([path], column)
    try:
        return next(src.blocks([(0, src.n_rows)]))  # one block: a fresh array of its own
    finally:
        src.close()
