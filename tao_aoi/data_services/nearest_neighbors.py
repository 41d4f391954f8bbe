"""Local runner action ``tmm nearest_neighbors``.

For each target embedding, the ``topn`` closest source embeddings (exact search,
:mod:`tao_aoi.knn`). Then, in this order:

1. ``filter_by_label`` true: keep only pairs whose labels match (stripped, upper-cased;
   an empty/null label matches nothing). The filter runs on the found pairs, so a target
   keeps at most ``topn`` same-label neighbours. Without a ``label`` column on either side
   the filter is skipped with the ``WARNING [label-filter-noop]`` marker.
2. ``distance_threshold`` >= 0: drop pairs farther apart than it.
3. Dedupe across targets by source ``filepath``.

``output_parquet``: one row per unique mined source, columns ``filepath``, ``label`` (from
the source, when it has one), ``best_distance`` (closest target), ``n_targets`` (how many
targets picked it) and ``nearest_target`` (filepath of that closest target, when the
target parquet has filepaths); sorted by best_distance. ``mining_summary.txt`` beside it
holds the counts. Both parquets must record the same encoder (metadata written by
``embedding image_embeddings``); a mismatch is refused unless ``allow_encoder_mismatch``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from tao_aoi.cli import UsageError, one_line
from tao_aoi.hooks import report_rules as rr
from tao_aoi.hooks.report_rules import MARK_LABEL_FILTER_NOOP
from tao_aoi.labels import normalize_label

SUMMARY = "Mine the topn nearest source images of every target embedding, dedupe them and write the unique filepaths plus mining_summary.txt."
ALIASES: dict[str, str] = {}

SUMMARY_FILE = "mining_summary.txt"
MINING_METADATA_KEY = "tao_aoi.mining"
MARK_ENCODER_MISMATCH = rr.MARK_ENCODER_MISMATCH
MARK_ENCODER_UNKNOWN = rr.MARK_ENCODER_UNKNOWN


def parse_flag(value, key: str = "filter_by_label") -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none", "null"):
        return False
    raise UsageError(f"{key}={value!r}: use true or false")


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


def _read_columns(path: Path, wanted: tuple[str, ...]) -> dict[str, list]:
    import pyarrow.parquet as pq

    names = pq.read_schema(str(path)).names
    present = [c for c in wanted if c in names]
    if not present:
        return {}
    table = pq.read_table(str(path), columns=present)
    return {c: table.column(c).to_pylist() for c in present}


def _label_codes(source_labels: list, target_labels: list) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of the stripped, upper-cased labels of both sides; -1 = no label."""
    import pandas as pd

    both = pd.Series(list(source_labels) + list(target_labels), dtype=object)
    text = both.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                    else (normalize_label(v) or None))
    codes, _ = pd.factorize(text, use_na_sentinel=True)
    n = len(source_labels)
    return codes[:n], codes[n:]


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
    for key, p in (("source_parquet", src), ("target_parquet", tgt)):
        if not p.is_file():
            raise UsageError(f"{key} not found: {p}")
    if out.resolve() in (src.resolve(), tgt.resolve()):
        raise UsageError("output_parquet must differ from source_parquet and target_parquet")
    if out.is_dir():
        raise UsageError(f"output_parquet {out} is a directory; give a file path")
    topn = int(cfg.get("topn", 5))
    if topn < 1:
        raise UsageError("topn must be >= 1")
    try:
        metric = canonical_metric(cfg.get("knn_metric", "cosine"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    label_filter = parse_flag(cfg.get("filter_by_label", "false"))
    return src, tgt, out, topn, metric, label_filter


def run(cfg: dict) -> int:
    import pyarrow.parquet as pq

    from tao_aoi import atomic, knn
    from tao_aoi.encoders import describe, identity_metadata, read_encoder_identity

    t0 = time.perf_counter()
    src, tgt, out, topn, metric, label_filter = _validate(cfg)
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
    if any(p is None or str(p) == "" for p in src_ids["filepath"]):
        raise UsageError(f"source_parquet {src} has rows without a filepath")
    s_emb = read_embeddings(src, src_col, "source_parquet")
    t_emb = read_embeddings(tgt, tgt_col, "target_parquet")
    src_identity = read_encoder_identity(src)
    check, warnings = _check_encoders(src_identity, read_encoder_identity(tgt),
                                      (s_emb.shape[1], t_emb.shape[1]),
                                      parse_flag(cfg.get("allow_encoder_mismatch", False),
                                                 "allow_encoder_mismatch"), src, tgt)
    label_note = "off"
    if label_filter:
        missing = [k for k, ids in (("source_parquet", src_ids), ("target_parquet", tgt_ids))
                   if "label" not in ids]
        if missing:
            label_note = f"requested but SKIPPED: no 'label' column in {' and '.join(missing)}"
            warnings.append(f"{MARK_LABEL_FILTER_NOOP} filter_by_label=true but "
                            f"{' and '.join(missing)} has no 'label' column; mining proceeds "
                            f"WITHOUT label filtering (cross-label pairs may be mined)")
            label_filter = False
        else:
            label_note = "on (labels compared stripped and upper-cased)"
    for w in warnings:
        print(w, file=sys.stderr)

    summary = summary_path(out)
    try:
        if metric == "cosine":
            knn.l2_normalize_(s_emb)
            knn.l2_normalize_(t_emb)
        from tqdm import tqdm

        with tqdm(total=len(s_emb), desc="nearest neighbours", unit="src", unit_scale=True,
                  file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0) as bar:
            idx, dist = knn.topk(t_emb, s_emb, topn, metric, normalized=(metric == "cosine"),
                                 progress=bar.update)
        del s_emb, t_emb
        n_t, kk = idx.shape
        t_idx = np.repeat(np.arange(n_t), kk)
        s_idx = idx.ravel()
        d = dist.ravel()
        pairs_found = int(d.size)
        keep = np.ones(pairs_found, bool)
        kept_label = dropped_label = None
        if label_filter:
            s_code, t_code = _label_codes(src_ids["label"], tgt_ids["label"])
            a, b = s_code[s_idx], t_code[t_idx]
            same = (a >= 0) & (a == b)
            keep &= same
            kept_label, dropped_label = int(same.sum()), int((~same).sum())
        dropped_dist = 0
        if threshold >= 0:
            far = keep & (d > threshold)
            dropped_dist = int(far.sum())
            keep &= ~far
        t_idx, s_idx, d = t_idx[keep], s_idx[keep], d[keep]
        mined, per_label = _dedupe(t_idx, s_idx, d, src_ids, tgt_ids)
        table = _mined_table(mined, src_ids, tgt_ids)
        meta = {MINING_METADATA_KEY.encode(): json.dumps({
                    "topn": topn, "knn_metric": metric, "filter_by_label": label_filter,
                    "distance_threshold": threshold, "source_parquet": str(src),
                    "target_parquet": str(tgt)}).encode()}
        if src_identity:
            meta.update(identity_metadata(src_identity))
        table = table.replace_schema_metadata(meta)
        with atomic.atomic_path(out) as tmp:
            pq.write_table(table, str(tmp))
        n_s = len(src_ids["filepath"])
        lines = [
            "tmm nearest_neighbors (local runner)",
            f"source_parquet: {src}",
            f"target_parquet: {tgt}",
            f"output_parquet: {out}",
            f"encoder: {describe(src_identity)}",
            f"encoder_check: {check}",
            f"knn_metric: {metric} (distance = {'1 - cosine similarity' if metric == 'cosine' else 'Euclidean'})",
            f"topn: {topn}",
            f"queries: {n_t}",
            f"pool_size: {n_s}",
            f"neighbours_requested: {topn * n_t} (topn x queries)",
            f"pairs_found: {pairs_found}",
            f"label_filter: {label_note}",
        ]
        if kept_label is not None:
            lines += [f"pairs_kept_by_label: {kept_label}", f"pairs_dropped_by_label: {dropped_label}"]
        lines += [
            f"distance_threshold: {'off' if threshold < 0 else threshold}",
            f"pairs_dropped_by_distance: {dropped_dist}",
            f"pairs_kept: {int(d.size)}",
            f"duplicates_removed: {int(d.size) - len(mined)}",
            f"unique_mined: {len(mined)}",
        ]
        if topn * n_t > n_s:
            lines.append(f"note: topn x queries ({topn * n_t}) exceeds the pool ({n_s}); that is "
                         f"normal -- the real mined count is {len(mined)}")
        if per_label:
            lines.append("per_target_label: label | targets | pairs_kept | unique_mined")
            for lab, (nt, npairs, nu) in sorted(per_label.items()):
                lines.append(f"  {lab} | {nt} | {npairs} | {nu}")
        lines.extend(w for w in warnings)
        lines.append(f"seconds: {time.perf_counter() - t0:.2f}")
        atomic.write_text(summary, "\n".join(lines) + "\n")
    except BaseException:
        out.unlink(missing_ok=True)
        summary.unlink(missing_ok=True)
        raise
    print("\n".join(lines))
    print(f"mining_summary: {summary}")
    return 0


def _dedupe(t_idx, s_idx, d, src_ids, tgt_ids):
    """Unique sources by filepath -> DataFrame (s_idx, best_distance, n_targets, t_idx);
    plus per-target-label counts {label: (targets, pairs kept, unique mined)}."""
    import pandas as pd

    paths = np.asarray([str(p) for p in src_ids["filepath"]], dtype=object)
    pairs = pd.DataFrame({"t": t_idx, "s": s_idx, "d": d, "path": paths[s_idx]})
    # (distance, source index, target index) order: the first row of a group is its best pair.
    pairs = pairs.sort_values(["d", "s", "t"], kind="mergesort")
    grouped = pairs.groupby("path", sort=False)
    mined = grouped.agg(s=("s", "first"), best_distance=("d", "first"),
                        n_targets=("t", "nunique"), t=("t", "first"))
    mined = mined.sort_values(["best_distance", "s"], kind="mergesort")
    per_label: dict[str, tuple[int, int, int]] = {}
    if "label" in tgt_ids:
        # Grouped as the label filter compares them, so "pass" and "PASS" are one row.
        t_lab = pd.Series(["(none)" if v is None else normalize_label(v)
                           for v in tgt_ids["label"]], dtype=object)
        pairs["tlabel"] = t_lab.to_numpy()[pairs["t"].to_numpy()]
        counts = t_lab.value_counts()
        kept = pairs.groupby("tlabel")["path"].agg(["size", "nunique"])
        for lab, n in counts.items():
            row = kept.loc[lab] if lab in kept.index else None
            per_label[str(lab)] = (int(n), int(row["size"]) if row is not None else 0,
                                   int(row["nunique"]) if row is not None else 0)
    return mined, per_label


def _mined_table(mined, src_ids, tgt_ids):
    import pyarrow as pa

    s = mined["s"].to_numpy()
    cols = {"filepath": pa.array([str(p) for p in mined.index], pa.string())}
    if "label" in src_ids:
        labels = src_ids["label"]
        arr = pa.array([labels[i] for i in s])
        cols["label"] = arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr
    cols["best_distance"] = pa.array(mined["best_distance"].to_numpy(np.float64), pa.float64())
    cols["n_targets"] = pa.array(mined["n_targets"].to_numpy(np.int64), pa.int64())
    if "filepath" in tgt_ids:
        tp = tgt_ids["filepath"]
        cols["nearest_target"] = pa.array([None if tp[i] is None else str(tp[i])
                                           for i in mined["t"].to_numpy()], pa.string())
    return pa.table(cols)
