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


def _select_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
    return sel_s, part.astype(np.int64)


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


def block_bounds(n_sources: int, n_targets: int, k: int, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 first_block: int = _FIRST_BLOCK) -> tuple[int, list[tuple[int, int]]]:
    """(target rows per block, [(c0, c1), ...] source blocks): fixed by the pool size only,
    so one file and any sharding of it are searched in exactly the same blocks."""
    tb, sb = block_shape(n_targets, n_sources, k, memory_budget)
    first = min(sb, max(4 * k, first_block))
    starts = [0] + list(range(first, n_sources, sb))
    return tb, [(c0, min(n_sources, c0 + (first if c0 == 0 else sb))) for c0 in starts]


def _col_adjust(metric: str, normalized: bool, blk: np.ndarray) -> np.ndarray | None:
    """Per-source additive (l2) or multiplicative (cosine) score adjustment of a block."""
    if metric == "manhattan" or (metric == "cosine" and normalized):
        return None
    out = np.empty(blk.shape[0], np.float32)
    for r0 in range(0, blk.shape[0], 65536):
        b = blk[r0:r0 + 65536]
        if metric == "cosine":
            nrm = np.sqrt(np.einsum("ij,ij->i", b, b, dtype=np.float64))
            out[r0:r0 + 65536] = np.where(nrm > 0, 1.0 / np.where(nrm > 0, nrm, 1), 0.0)
        else:
            out[r0:r0 + 65536] = -0.5 * np.einsum("ij,ij->i", b, b, dtype=np.float64)
    return out


class _VectorStore:
    """The source rows that are (or were recently) in some target's running top-k, so a
    streamed search can recompute exact distances without a second pass over the pool."""

    def __init__(self, dim: int) -> None:
        self.idx = np.zeros(0, np.int64)
        self.vec = np.zeros((0, dim), np.float32)

    def add_from_block(self, best_i: np.ndarray, c0: int, blk: np.ndarray) -> None:
        c1 = c0 + blk.shape[0]
        sel = best_i[(best_i >= c0) & (best_i < c1)]
        if not sel.size:
            return
        new = np.unique(sel)
        new = new[~np.isin(new, self.idx)]
        if new.size:
            self.idx = np.concatenate([self.idx, new])
            self.vec = np.concatenate([self.vec, np.asarray(blk[new - c0], np.float32)])
        live = np.unique(best_i)
        if self.idx.size > 2 * live.size + 1024:
            keep = np.isin(self.idx, live)
            self.idx, self.vec = self.idx[keep], self.vec[keep]

    def gather(self, ids: np.ndarray) -> np.ndarray:
        order = np.argsort(self.idx, kind="stable")
        pos = order[np.searchsorted(self.idx[order], ids)]
        return self.vec[pos]


def topk_stream(targets: np.ndarray, source, k: int, metric: str = "cosine", *,
                normalized: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                first_block: int = _FIRST_BLOCK, exclude: np.ndarray | None = None,
                progress: Callable[[int], None] | None = None,
                _originals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` over a block source: ``source.n_rows``, ``source.dim`` and
    ``source.blocks(bounds)`` yielding one float32 (c1 - c0, dim) array per (c0, c1) of
    :func:`block_bounds` (e.g. :class:`ParquetShards`, which reads the next block while
    this one is searched). Peak memory: two blocks + the score scratch + T*k candidates,
    whatever the pool size. Same blocks, same arithmetic as the in-memory search, so the
    result is identical to :func:`topk` on the concatenated matrix.
    """
    metric = canonical_metric(metric)
    if k < 1:
        raise ValueError("k must be >= 1")
    tgt = np.ascontiguousarray(targets, dtype=np.float32)
    if tgt.ndim != 2:
        raise ValueError("targets and sources must be 2-D arrays")
    n_t, n_s = tgt.shape[0], int(source.n_rows)
    if n_s and tgt.shape[1] != source.dim:
        raise ValueError(f"dimension mismatch: targets have {tgt.shape[1]}, sources {source.dim}")
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != (n_s,):
            raise ValueError(f"exclude mask has shape {exclude.shape}, expected ({n_s},)")
        n_kept = int(n_s - np.count_nonzero(exclude))
    else:
        n_kept = n_s
    kk = min(k, n_kept)
    if n_t == 0 or kk == 0:
        source.close()
        return np.zeros((n_t, 0), np.int64), np.zeros((n_t, 0), np.float64)
    if metric == "cosine" and not normalized:
        tgt = l2_normalize_(tgt.copy())

    tb, bounds = block_bounds(n_s, n_t, kk, memory_budget, first_block)
    sb = max(c1 - c0 for c0, c1 in bounds)
    best_s = np.full((n_t, kk), -np.inf, np.float32)
    best_i = np.full((n_t, kk), _PAD_INDEX, np.int64)
    score_buf = np.empty(tb * sb, np.float32)
    mask_buf = np.empty(tb * sb, np.bool_)
    store = _VectorStore(tgt.shape[1]) if _originals is None else None

    # The first source block is kept small: it seeds every target's running top-k with a
    # full selection (argpartition); later blocks only touch entries that beat it.
    try:
        for (c0, c1), full_blk in zip(bounds, source.blocks(bounds)):
            if exclude is not None and exclude[c0:c1].any():
                gidx = np.flatnonzero(~exclude[c0:c1]) + c0
                sblk = full_blk[gidx - c0]
            else:
                gidx = None
                sblk = full_blk
            if sblk.shape[0]:
                _search_block(tgt, sblk, c0, gidx, metric, _col_adjust(metric, normalized, sblk),
                              best_s, best_i, kk, tb, score_buf, mask_buf, memory_budget)
            if store is not None:
                store.add_from_block(best_i, c0, full_blk)
            if progress is not None:
                progress(c1 - c0)
    finally:
        source.close()

    # Exact float64 distances for the selected pairs, then the final (distance, index) order.
    dist = np.empty((n_t, kk), np.float64)
    step = max(1, 2**22 // (kk * tgt.shape[1]))  # ~32 MB of float64 gathers per chunk
    for r0 in range(0, n_t, step):
        t64 = np.asarray(targets[r0:r0 + step], dtype=np.float64)
        ids = best_i[r0:r0 + step].ravel()
        rows = _originals[ids] if store is None else store.gather(ids)
        s64 = np.asarray(rows, dtype=np.float64).reshape(t64.shape[0], kk, -1)
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


def _search_block(tgt, sblk, c0, gidx, metric, col_adjust, best_s, best_i, kk, tb,
                  score_buf, mask_buf, memory_budget) -> None:
    """Fold one source block into every target's running top-k. Column j of ``sblk`` is
    source ``c0 + j`` (``gidx[j]`` when the block was thinned by an exclusion)."""
    n_t = tgt.shape[0]
    nc = sblk.shape[0]

    def glob(cols):
        return cols + c0 if gidx is None else gidx[cols]

    for r0 in range(0, n_t, tb):
        r1 = min(n_t, r0 + tb)
        nr = r1 - r0
        scores = score_buf[:nr * nc].reshape(nr, nc)
        if metric == "manhattan":
            _neg_l1_into(scores, tgt[r0:r1], sblk, max(1 << 20, memory_budget // 4))
        else:
            np.matmul(tgt[r0:r1], sblk.T, out=scores)
        if col_adjust is not None:
            if metric == "cosine":
                scores *= col_adjust
            else:
                scores += col_adjust
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
                ns, ni = _select_rows(scores[rows], kk)
                ni = glob(ni)
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
            ni[rr, pos] = glob(cc)
            if select:  # every row has more than kk real candidates
                ns, sel = _select_rows(ns, kk)
                ni = np.take_along_axis(ni, sel, axis=1)
            g = rows + r0
            best_s[g], best_i[g] = _merge(best_s[g], best_i[g], ns, ni, kk)


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


class ParquetShards:
    """The embedding column of one parquet or of a folder of shards, as a block source for
    :func:`topk_stream`: blocks are cut at fixed global row bounds (independent of how the
    pool is sharded) and read by a background thread one block ahead, so reading and
    decoding the next block overlaps the matmul of the current one. ``normalize=True``
    L2-normalises each block's rows (as :func:`l2_normalize_` on the whole matrix would).
    """

    def __init__(self, path, column: str = "embedding", *, normalize: bool = False,
                 batch_rows: int = 8192, prefetch: int = 1) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.paths = shard_paths(path)
        self.column = column
        self.normalize = normalize
        self.batch_rows = batch_rows
        self.prefetch = max(1, prefetch)
        self.n_rows = 0
        self.dim = 0
        self._thread = None
        self._stop = None
        for p in self.paths:
            try:
                pf = pq.ParquetFile(str(p))
            except Exception as exc:
                raise SourceError(f"{p} is not a readable parquet: {exc}") from None
            names = pf.schema_arrow.names
            if column not in names:
                raise SourceError(f"{p} has no embedding column {column!r} (columns: "
                                  f"{', '.join(names)}); set the *_embed_column_name key or "
                                  f"embed it first")
            ftype = pf.schema_arrow.field(column).type
            if not (pa.types.is_list(ftype) or pa.types.is_large_list(ftype)
                    or pa.types.is_fixed_size_list(ftype)):
                raise SourceError(f"column {column!r} of {p} is {ftype}, not a list of floats")
            self.n_rows += pf.metadata.num_rows
        if self.n_rows:
            first = next(self._batches(limit=1))[1]
            self.dim = first.shape[1]

    def _batches(self, limit: int | None = None):
        """(path, float32 (rows, dim) array) per record batch, every shard in order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        seen = 0
        for p in self.paths:
            # pre_buffer=False + a read buffer: pages are streamed, so the transient memory
            # is a few batches whatever the row-group size.
            pf = pq.ParquetFile(str(p), pre_buffer=False, buffer_size=4 << 20)
            for batch in pf.iter_batches(columns=[self.column], batch_size=self.batch_rows,
                                         use_threads=False):
                arr = batch.column(0)
                if len(arr) == 0:
                    continue
                if arr.null_count:
                    raise SourceError(f"{p}: {arr.null_count} rows have no {self.column!r} value")
                if pa.types.is_fixed_size_list(arr.type):
                    lengths = np.full(len(arr), arr.type.list_size)
                else:
                    lengths = np.asarray(arr.value_lengths())
                dim = self.dim or int(lengths[0])
                if dim == 0:
                    raise SourceError(f"{p}: column {self.column!r} holds empty vectors")
                if (lengths != dim).any():
                    raise SourceError(f"{p}: column {self.column!r} has vectors of different "
                                      f"lengths ({dim} and {int(lengths[lengths != dim][0])})")
                values = arr.flatten().to_numpy(zero_copy_only=False)
                yield p, values.reshape(len(arr), dim)
                seen += 1
                if limit is not None and seen >= limit:
                    return

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
            # One pass gives both the finiteness check and the norms: a float64 sum of
            # squares of float32 values is finite iff every value is. The normalisation is
            # l2_normalize_'s arithmetic (row-wise, so the same values bit for bit).
            for r0 in range(0, len(out), 65536):
                blk = out[r0:r0 + 65536]
                sq = np.einsum("ij,ij->i", blk, blk, dtype=np.float64)
                if not np.isfinite(sq).all():
                    where = ", ".join(map(str, dict.fromkeys(shards)))
                    raise SourceError(f"{where}: "
                                      f"column {self.column!r} holds NaN or infinite values")
                if self.normalize:
                    norms = np.sqrt(sq)
                    norms[norms == 0] = 1.0
                    blk /= norms[:, None].astype(out.dtype)
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
