"""Local runner action ``tmm nearest_neighbors``: writes what the container writes.

Every target embedding is queried against all source embeddings for its ``topn`` nearest
neighbours (exact search, :mod:`tao_aoi.knn`, cuML's distances: euclidean not squared,
cosine = 1 - cosine similarity, manhattan = L1). Ties in distance go to the lower source
index (cuML leaves their order unspecified; one deterministic order is promised here).
Then for target i, neighbour j, nearest first:

1. label filter: only when ``filter_by_label`` is on (``str(v).lower()`` is "true", "1" or
   "yes", as in the container) AND both parquets have a ``label`` column; labels are compared
   as ``str(label).strip().upper()`` of the values pandas reads (so a null label is "NONE").
   A mismatching pair is dropped and counted. Requested but a side lacks ``label``: the
   ``WARNING [label-filter-noop]`` marker names the side(s) and nothing is filtered.
2. ``distance_threshold`` (a local-runner key, the semantics of later container releases):
   ``0 <= threshold < distance`` drops the pair.

The kept source filepaths, in that target-major, nearest-first order, deduplicated keeping
the first occurrence, are ``output_parquet``'s ``filepath`` column, row for row the
container's. Columns the project adds follow it: ``label`` (of the source row mined first),
``best_distance`` (closest kept pair of that filepath) and ``nearest_target`` (filepath of
that pair's target; the earliest such pair on equal distances). ``mining_summary.txt``
beside it starts with the container's text line for line; the runner's own lines follow.
Both parquets must record the same encoder (metadata written by ``embedding
image_embeddings``); a mismatch is refused unless ``allow_encoder_mismatch``.

Local-runner additions (the container has none of these):

* ``source_parquet`` may be a folder of parquet shards (``*.parquet``, name order = row
  order). The pool is never loaded whole: it is streamed in fixed blocks (a reader thread
  decodes the next block while the current one is searched) with an exact running top-k,
  so memory depends on the block size, and a pool gives the same result sharded or not.
* ``exclude_parquet``: a parquet or CSV with ``filepath`` (a mined parquet or a mining
  ledger). Source rows whose filepath (``os.path.normpath``) is listed leave the candidate
  set BEFORE the search, so every target still gets its ``topn`` nearest non-excluded
  sources (history-aware mining that does not empty itself).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from tao_aoi.cli import UsageError, one_line
from tao_aoi.labels import normalize_label
from tao_aoi.specs import parse_flag
from tao_aoi import contract as rr
from tao_aoi.contract import MARK_LABEL_FILTER_NOOP

SUMMARY = ("Mine the topn nearest source images of every target embedding, dedupe them and write the "
           "unique filepaths plus mining_summary.txt.")
ALIASES: dict[str, str] = {}

SUMMARY_FILE = "mining_summary.txt"
MINING_METADATA_KEY = "tao_aoi.mining"
MARK_ENCODER_MISMATCH = rr.MARK_ENCODER_MISMATCH
MARK_ENCODER_UNKNOWN = rr.MARK_ENCODER_UNKNOWN


# The container's reading of filter_by_label: on iff str(value).lower() is one of these;
# any other value is off (there is no error), so "on" or " true" are off there too.
FLAG_ON = ("true", "1", "yes")
FLAG_OFF = ("false", "0", "no")


def label_filter_requested(value) -> tuple[bool, str | None]:
    """(on, warning): the container's rule; a warning when a value that is neither a
    usual on nor off spelling is read as off (the container takes it silently)."""
    text = str(value).lower()
    if text in FLAG_ON:
        return True, None
    if text in FLAG_OFF:
        return False, None
    return False, (f"WARNING filter_by_label={value!r} is read as off (the container turns the "
                   f"filter on only for {', '.join(FLAG_ON)}); label filtering is not done")


def summary_path(output_parquet: str | Path) -> Path:
    return Path(output_parquet).with_name(SUMMARY_FILE)


def read_embeddings(path: str | Path, column: str, key: str) -> np.ndarray:
    """The embedding column as a float32 (rows, dim) array, filled row group by row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pre_buffer=False + a read buffer: pages are streamed, so the transient memory is a
    # few batches whatever the row-group size (pre-buffering holds whole column chunks).
    pf = pq.ParquetFile(str(path), pre_buffer=False, buffer_size=4 << 20)
    names = pf.schema_arrow.names
    if column not in names:
        raise UsageError(f"{key} {path} has no embedding column {column!r} (columns: "
                         f"{', '.join(names)}); set the *_embed_column_name key or embed it first")
    ftype = pf.schema_arrow.field(column).type
    if not (pa.types.is_list(ftype) or pa.types.is_large_list(ftype) or pa.types.is_fixed_size_list(ftype)):
        raise UsageError(f"column {column!r} of {path} is {ftype}, not a list of floats")
    n = pf.metadata.num_rows
    out: np.ndarray | None = None
    row = 0
    for batch in pf.iter_batches(columns=[column], batch_size=8192, use_threads=False):
        arr = batch.column(0)
        if arr.null_count:
            raise UsageError(f"{path}: {arr.null_count} rows have no {column!r} value")
        lengths = np.asarray(arr.value_lengths()) if not pa.types.is_fixed_size_list(arr.type) \
            else np.full(len(arr), arr.type.list_size)
        if len(arr) == 0:
            continue
        dim = int(lengths[0])
        if out is None:
            if dim == 0:
                raise UsageError(f"{path}: column {column!r} holds empty vectors")
            out = np.empty((n, dim), np.float32)
        if (lengths != out.shape[1]).any():
            raise UsageError(f"{path}: column {column!r} has vectors of different lengths "
                             f"({out.shape[1]} and {int(lengths[lengths != out.shape[1]][0])})")
        values = arr.flatten().to_numpy(zero_copy_only=False)
        out[row:row + len(arr)] = values.reshape(len(arr), out.shape[1])
        row += len(arr)
    if out is None:
        raise UsageError(f"{key} {path} has no rows")
    if any(not np.isfinite(out[r:r + 65536]).all() for r in range(0, len(out), 65536)):
        raise UsageError(f"{path}: column {column!r} holds NaN or infinite values")
    return out


def _read_columns(path: Path, wanted: tuple[str, ...]) -> dict:
    """The wanted columns present in the parquet (or in every shard of a folder), as pandas
    reads them (the container reads the parquets with pandas, so labels and filepaths are
    those values). Shards are concatenated as Arrow first, so a folder gives the values one
    file with the same rows gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tao_aoi.knn import shard_paths

    shards = shard_paths(path) if path.is_dir() else [path]
    names = [pq.read_schema(str(p)).names for p in shards]
    present = [c for c in wanted if all(c in n for n in names)]
    if not present:
        return {}
    tables = [pq.read_table(str(p), columns=present).replace_schema_metadata(None)
              for p in shards]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
    return {c: table.column(c).to_pandas() for c in present}


def _source_identity(src: Path) -> dict | None:
    """The encoder identity of the pool; a folder's shards must all record the same one."""
    from tao_aoi.encoders import describe, read_encoder_identity, same_encoder
    from tao_aoi.knn import shard_paths

    if not src.is_dir():
        return read_encoder_identity(src)
    shards = shard_paths(src)
    first = read_encoder_identity(shards[0])
    for p in shards[1:]:
        ident = read_encoder_identity(p)
        if (ident is None) != (first is None) or (ident and not same_encoder(first, ident)):
            raise UsageError(f"source shards disagree on the encoder: {shards[0].name} has "
                             f"{describe(first)}, {p.name} has {describe(ident)}; re-embed the "
                             f"pool with one embedding spec")
    return first


def read_exclusions(value) -> tuple[set[str], str]:
    """(normalised filepaths to exclude, source description) from ``exclude_parquet``:
    a parquet or .csv with a ``filepath`` column (a mined parquet or a mining ledger)."""
    import os

    from tao_aoi import ledger

    text = "" if value is None else str(value).strip()
    if not text:
        return set(), ""
    p = Path(text)
    if p.is_dir():
        raise UsageError(f"exclude_parquet {p} is a folder; give a parquet or .csv with a "
                         f"filepath column (a mined parquet or the mining ledger)")
    if not p.is_file():
        raise UsageError(f"exclude_parquet not found: {p}")
    df = ledger.read_mined(p)  # parquet or csv; one-line UsageError without filepath
    return {os.path.normpath(str(v)) for v in df["filepath"]}, str(p)


def _check_encoders(src_id: dict | None, tgt_id: dict | None, dims: tuple[int, int],
                    allow_mismatch: bool, src: Path, tgt: Path) -> tuple[str, list[str]]:
    from tao_aoi.encoders import describe, same_encoder

    warnings: list[str] = []
    if dims[0] != dims[1]:
        raise UsageError(f"embedding sizes differ: source_parquet {src} has dim {dims[0]} "
                         f"({describe(src_id)}), target_parquet {tgt} has dim {dims[1]} "
                         f"({describe(tgt_id)}); embed both with the same embedding spec")
    if src_id is None or tgt_id is None:
        which = " and ".join(k for k, v in (("source_parquet", src_id), ("target_parquet", tgt_id))
                             if v is None)
        warnings.append(f"{MARK_ENCODER_UNKNOWN} {which} records no encoder identity (made by "
                        f"the container or another tool?); cannot verify that both sides used "
                        f"the same encoder -- make sure both came from one embedding spec")
        return "unverified", warnings
    if not same_encoder(src_id, tgt_id):
        msg = (f"source_parquet was embedded with {describe(src_id)} but target_parquet with "
               f"{describe(tgt_id)}; embeddings from different encoders are not comparable")
        if not allow_mismatch:
            raise UsageError(msg + "; re-embed both with the same embedding spec "
                             "(or pass allow_encoder_mismatch=true to force)")
        warnings.append(f"{MARK_ENCODER_MISMATCH} {msg}; continuing because "
                        f"allow_encoder_mismatch=true -- the mined images may be unrelated")
        return "MISMATCH (allowed by allow_encoder_mismatch=true)", warnings
    return "same encoder on both sides", warnings


def _validate(cfg: dict):
    from tao_aoi.knn import canonical_metric

    src = Path(str(cfg["source_parquet"]))
    tgt = Path(str(cfg["target_parquet"]))
    out = Path(str(cfg["output_parquet"]))
    if not (src.is_file() or src.is_dir()):
        raise UsageError(f"source_parquet not found: {src}")
    if not tgt.is_file():
        raise UsageError(f"target_parquet not found: {tgt}")
    if out.resolve() in (src.resolve(), tgt.resolve()):
        raise UsageError("output_parquet must differ from source_parquet and target_parquet")
    if out.is_dir():
        raise UsageError(f"output_parquet {out} is a directory; give a file path")
    topn = int(cfg.get("topn", 5))
    if topn < 1:
        raise UsageError("topn must be >= 1")
    try:
        metric = canonical_metric(cfg.get("knn_metric", "euclidean"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return src, tgt, out, topn, metric


def _filter_pairs(idx, dist, labels: tuple | None, threshold: float):
    """Target-major, nearest-first pairs that survive the filters -> (t, s, d, label mismatches,
    pairs dropped by distance)."""
    n_t, k = idx.shape
    t_idx = np.repeat(np.arange(n_t), k)
    s_idx = idx.ravel()
    d = dist.ravel()
    keep = np.ones(d.size, bool)
    mismatches = 0
    if labels is not None:
        src_key, tgt_key = (np.asarray([normalize_label(v) for v in lab], dtype=object)
                            for lab in labels)
        keep = src_key[s_idx] == tgt_key[t_idx]
        mismatches = int((~keep).sum())
    far = keep & (d > threshold) if threshold >= 0 else np.zeros(d.size, bool)
    keep &= ~far
    return t_idx[keep], s_idx[keep], d[keep], mismatches, int(far.sum())


def _mined_table(t_idx, s_idx, d, src_ids: dict, tgt_ids: dict):
    """The container's ``filepath`` column (kept pairs' filepaths, first occurrence of each),
    then the project's columns."""
    import pandas as pd
    import pyarrow as pa

    paths = src_ids["filepath"].iloc[s_idx].reset_index(drop=True)
    first = ~paths.duplicated(keep="first").to_numpy()
    # Closest kept pair of each filepath; on equal distances the earliest pair (stable sort).
    codes, _ = pd.factorize(paths, use_na_sentinel=False)
    order = np.lexsort((d, codes))  # stable: equal (filepath, distance) keep pair order
    sorted_codes = codes[order]
    starts = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]] if codes.size else np.zeros(0, bool)
    best = np.empty(len(starts) and int(sorted_codes[-1]) + 1, np.int64)
    best[sorted_codes[starts]] = order[starts]
    best_of_row = best[codes[first]]
    cols = {"filepath": pa.Array.from_pandas(paths[first].reset_index(drop=True))}
    if "label" in src_ids:
        cols["label"] = pa.Array.from_pandas(
            src_ids["label"].iloc[s_idx[first]].reset_index(drop=True))
    cols["best_distance"] = pa.array(d[best_of_row].astype(np.float64), pa.float64())
    if "filepath" in tgt_ids:
        cols["nearest_target"] = pa.array(
            [None if v is None else str(v) for v in tgt_ids["filepath"].iloc[t_idx[best_of_row]]],
            pa.string())
    table = pa.table(cols)
    if pa.types.is_null(table.schema.field("filepath").type):
        table = table.set_column(0, "filepath", table.column(0).cast(pa.string()))
    return table, len(paths)


def run(cfg: dict) -> int:
    import pyarrow.parquet as pq

    from tao_aoi import atomic, knn
    from tao_aoi.encoders import describe, identity_metadata, read_encoder_identity

    t0 = time.perf_counter()
    src, tgt, out, topn, metric = _validate(cfg)
    excluded_paths, exclude_src = read_exclusions(cfg.get("exclude_parquet"))
    threshold = float(cfg.get("distance_threshold", -1.0))
    src_col = str(cfg.get("source_embed_column_name", "embedding"))
    tgt_col = str(cfg.get("target_embed_column_name", "embedding"))
    try:
        src_ids = _read_columns(src, ("filepath", "label"))
        tgt_ids = _read_columns(tgt, ("filepath", "label"))
    except Exception as exc:
        raise UsageError(f"cannot read the parquets: {one_line(exc)}") from None
    if "filepath" not in src_ids:
        raise UsageError(f"source_parquet {src} has no 'filepath' column; mined images are "
                         f"reported by filepath")
    try:
        pool = knn.ParquetShards(src, src_col, normalize=(metric == "cosine"))
    except knn.SourceError as exc:
        raise UsageError(f"source_parquet {exc}") from None
    n_s = pool.n_rows
    if n_s == 0:
        raise UsageError(f"source_parquet {src} has no rows")
    if len(src_ids["filepath"]) != n_s:
        raise UsageError(f"source_parquet {src}: {len(src_ids['filepath'])} filepaths but {n_s} "
                         f"embedding rows")
    t_emb = read_embeddings(tgt, tgt_col, "target_parquet")
    n_t = len(t_emb)
    if topn > n_s:
        raise UsageError(f"topn={topn} exceeds the {n_s} source embeddings in {src}; the container "
                         f"fails on this too -- lower topn or grow the pool")
    exclude, n_excluded = None, 0
    if exclude_src:
        import os

        keys = src_ids["filepath"].map(lambda v: os.path.normpath(str(v)))
        exclude = keys.isin(excluded_paths).to_numpy()
        n_excluded = int(exclude.sum())
        if topn > n_s - n_excluded:
            raise UsageError(f"topn={topn} exceeds the {n_s - n_excluded} source embeddings "
                             f"left after excluding {n_excluded} listed in {exclude_src}; "
                             f"lower topn or grow the pool")
    src_identity = _source_identity(src)
    check, warnings = _check_encoders(src_identity, read_encoder_identity(tgt),
                                      (pool.dim, t_emb.shape[1]),
                                      parse_flag(cfg.get("allow_encoder_mismatch", False),
                                                 "allow_encoder_mismatch"), src, tgt)
    requested, flag_warning = label_filter_requested(cfg.get("filter_by_label", "false"))
    if flag_warning:
        warnings.append(flag_warning)
    label_filter = requested and "label" in src_ids and "label" in tgt_ids
    if requested and not label_filter:
        missing = [side for side, ids in (("source", src_ids), ("target", tgt_ids))
                   if "label" not in ids]
        warnings.append(f"{MARK_LABEL_FILTER_NOOP} filter_by_label is on but the 'label' column "
                        f"is missing from: {', '.join(missing)}; mining proceeds WITHOUT label "
                        f"filtering (cross-label pairs may be mined)")
    for w in warnings:
        print(w, file=sys.stderr)

    summary = summary_path(out)
    try:
        if metric == "cosine":
            knn.l2_normalize_(t_emb)
        from tqdm import tqdm

        with tqdm(total=n_s, desc="nearest neighbours", unit="src", unit_scale=True,
                  file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0) as bar:
            try:
                idx, dist = knn.topk_stream(t_emb, pool, topn, metric,
                                            normalized=(metric == "cosine"), exclude=exclude,
                                            progress=bar.update)
            except knn.SourceError as exc:
                raise UsageError(f"source_parquet {exc}") from None
        del t_emb
        labels = (src_ids["label"], tgt_ids["label"]) if label_filter else None
        t_idx, s_idx, d, mismatches, dropped_far = _filter_pairs(idx, dist, labels, threshold)
        table, candidates = _mined_table(t_idx, s_idx, d, src_ids, tgt_ids)
        meta = {MINING_METADATA_KEY.encode(): json.dumps({
                    "topn": topn, "knn_metric": metric, "filter_by_label": label_filter,
                    "distance_threshold": threshold, "source_parquet": str(src),
                    **({"exclude_parquet": exclude_src, "excluded_sources": n_excluded}
                       if exclude_src else {}),
                    "target_parquet": str(tgt)}).encode()}
        if src_identity:
            meta.update(identity_metadata(src_identity))
        table = table.replace_schema_metadata(meta)
        with atomic.atomic_path(out) as tmp:
            pq.write_table(table, str(tmp))
        unique = table.num_rows
        after_label = n_t * topn - mismatches
        # The container's text, line for line (7.1.0, the pinned image) ...
        lines = [
            "Summary:",
            f"  Target queries: {n_t}",
            f"  Similar items per query: {topn}",
            f"  Total candidates: {candidates}",
            f"  Duplicates removed: {candidates - unique}",
            f"  Unique items saved: {unique}",
            f"  Results saved to: {cfg['output_parquet']}",
        ]
        if label_filter:
            lines += [(f"Label filtering: kept {after_label}/{n_t * topn} pairs, "
                       f"dropped {mismatches} mismatches"), ""]
        # ... then what the local runner adds.
        lines += [
            "Local runner:",
            f"  knn_metric: {metric}",
            f"  Source pool: {n_s}" + (f" ({len(knn.shard_paths(src))} shards)"
                                         if src.is_dir() else ""),
            f"  Encoder: {describe(src_identity)} ({check})",
        ]
        searched = n_s - n_excluded
        lines.append(f"  Selectivity: {unique} unique mined of {searched} searched sources "
                     f"({100.0 * unique / searched:.1f}%)")
        if exclude_src:
            lines.append(f"  Excluded before search: {n_excluded} of {n_s} sources "
                         f"listed in {exclude_src} ({len(excluded_paths)} filepaths listed); "
                         f"searched {n_s - n_excluded}")
        if threshold >= 0:
            lines.append(f"  Distance filtering: kept {after_label - dropped_far}/{after_label} "
                         f"pairs, dropped {dropped_far} exceeding threshold {threshold:.4f}")
        if "label" in tgt_ids:
            lines += _per_label_lines(t_idx, table, tgt_ids["label"])
        lines.extend(f"  {w}" for w in warnings)
        lines.append(f"  Seconds: {time.perf_counter() - t0:.2f}")
        atomic.write_text(summary, "\n".join(lines) + "\n")
    except BaseException:
        out.unlink(missing_ok=True)
        summary.unlink(missing_ok=True)
        raise
    print("\n".join(lines))
    print(f"mining_summary: {summary}")
    return 0


def _per_label_lines(t_idx, table, target_labels) -> list[str]:
    """Kept pairs and targets per target label (compared as the label filter compares them),
    so a starved label shows."""
    import pandas as pd

    key = pd.Series([normalize_label(v) for v in target_labels], dtype=object)
    pairs = key.iloc[t_idx].value_counts()
    lines = ["  Per target label: label | targets | pairs kept"]
    for lab, n in sorted(key.value_counts().items()):
        lines.append(f"    {lab} | {n} | {int(pairs.get(lab, 0))}")
    return lines
