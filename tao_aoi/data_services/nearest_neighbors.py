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
Both are written as one set (all or nothing). Both parquets must record the same encoder
(metadata written by ``embedding image_embeddings``); a mismatch is refused unless
``allow_encoder_mismatch``.

Local-runner additions (the container has none of these):

* ``source_parquet`` may be a folder of parquet shards (``*.parquet``, name order = row
  order). The pool is never loaded whole: it is streamed in fixed blocks (one thread per
  core; the first free one decodes the next block while the others score the current one)
  with an exact running top-k, so memory depends on the block size, and a pool gives the
  same result sharded or not.
* ``exclude_parquet``: a parquet or CSV with ``filepath`` (a mined parquet or a mining
  ledger). Source rows whose filepath (``os.path.normpath``) is listed leave the candidate
  set BEFORE the search, so every target still gets its ``topn`` nearest non-excluded
  sources (history-aware mining that does not empty itself).
* ``engine=ray`` (``ray_address``: empty starts a local Ray, ``auto`` or ``ray://host:10001``
  joins a cluster): each shard (large ones cut in row ranges) is searched by one Ray task,
  the partial candidates are merged exactly on the driver (:mod:`tao_aoi.ray_engine`); the
  output is identical to ``engine=local``.

Stages: :func:`load` (validate and open everything) -> :func:`search` (the k-NN, the only
step that reads the pool; the engine choice) -> :func:`compute` (pure: filters, table,
summary text) -> :func:`write`; :func:`run` chains them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tao_aoi import atomic, knn, specs
from tao_aoi import contract as rr
from tao_aoi.cli import UsageError, one_line
from tao_aoi.contract import MARK_LABEL_FILTER_NOOP
from tao_aoi.labels import normalize_label

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


def config(cfg: Mapping) -> specs.ActionConfig:
    return specs.make_config("tmm", "nearest_neighbors", cfg)


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
    """The embedding column of one parquet as a float32 (rows, dim) array; UsageError names
    ``key`` (the config key the file came from)."""
    try:
        out = knn.read_matrix(path, column)
    except knn.SourceError as exc:
        raise UsageError(f"{key} {exc}") from None
    if not len(out):
        raise UsageError(f"{key} {path} has no rows")
    return out


# ----------------------------------------------------------------------------- load

@dataclass(frozen=True)
class Inputs:
    """Everything validated; the pool stays on disk (``pool`` reads it block by block)."""

    src: Path
    tgt: Path
    out: Path
    output_text: str  # output_parquet as given: the container prints it so
    topn: int
    metric: str
    threshold: float
    engine: str
    ray_address: str
    pool: Any  # knn.ParquetShards
    targets: np.ndarray  # float32, unit rows for cosine
    src_ids: dict  # filepath (and label) as pandas reads them
    tgt_ids: dict
    exclude: np.ndarray | None
    exclude_src: str
    excluded_listed: int
    src_identity: dict | None
    encoder_check: str
    label_filter: bool
    warnings: tuple[str, ...]
    started: float

    @property
    def n_excluded(self) -> int:
        return 0 if self.exclude is None else int(self.exclude.sum())


def _read_columns(path: Path, wanted: tuple[str, ...]) -> dict:
    """The wanted columns present in the parquet (or in every shard of a folder), as pandas
    reads them (the container reads the parquets with pandas, so labels and filepaths are
    those values). Shards are concatenated as Arrow first, so a folder gives the values one
    file with the same rows gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = knn.shard_paths(path)
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

    shards = knn.shard_paths(src)
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


def _paths(cfg) -> tuple[Path, Path, Path]:
    src, tgt, out = Path(cfg.source_parquet), Path(cfg.target_parquet), Path(cfg.output_parquet)
    if not (src.is_file() or src.is_dir()):
        raise UsageError(f"source_parquet not found: {src}")
    if not tgt.is_file():
        raise UsageError(f"target_parquet not found: {tgt}")
    if out.resolve() in (src.resolve(), tgt.resolve()):
        raise UsageError("output_parquet must differ from source_parquet and target_parquet")
    from tao_aoi.paths import check_writable

    check_writable(out, "output_parquet")  # now, not after the search
    return src, tgt, out


def _open_pool(src: Path, column: str, metric: str, n_paths: int):
    try:
        pool = knn.ParquetShards(src, column, normalize=(metric == "cosine"))
    except knn.SourceError as exc:
        raise UsageError(f"source_parquet {exc}") from None
    if pool.n_rows == 0:
        raise UsageError(f"source_parquet {src} has no rows")
    if n_paths != pool.n_rows:
        raise UsageError(f"source_parquet {src}: {n_paths} filepaths but {pool.n_rows} "
                         f"embedding rows")
    return pool


def _exclusion_mask(src_ids: dict, listed: set[str], exclude_src: str, topn: int, n_s: int):
    if not exclude_src:
        return None
    keys = src_ids["filepath"].map(lambda v: os.path.normpath(str(v)))
    exclude = keys.isin(listed).to_numpy()
    n_excluded = int(exclude.sum())
    if topn > n_s - n_excluded:
        raise UsageError(f"topn={topn} exceeds the {n_s - n_excluded} source embeddings "
                         f"left after excluding {n_excluded} listed in {exclude_src}; "
                         f"lower topn or grow the pool")
    return exclude


def _label_filter(cfg, src_ids: dict, tgt_ids: dict, warnings: list[str]) -> bool:
    requested, flag_warning = label_filter_requested(cfg.filter_by_label)
    if flag_warning:
        warnings.append(flag_warning)
    on = requested and "label" in src_ids and "label" in tgt_ids
    if requested and not on:
        missing = [side for side, ids in (("source", src_ids), ("target", tgt_ids))
                   if "label" not in ids]
        warnings.append(f"{MARK_LABEL_FILTER_NOOP} filter_by_label is on but the 'label' column "
                        f"is missing from: {', '.join(missing)}; mining proceeds WITHOUT label "
                        f"filtering (cross-label pairs may be mined)")
    return on


def load(cfg: Mapping) -> Inputs:
    """Validate every input before anything is written; UsageError names the first problem."""
    from tao_aoi.encoders import read_encoder_identity

    started = time.perf_counter()
    cfg = config(cfg)
    if cfg.engine == "ray":
        from tao_aoi import ray_engine

        ray_engine.require()
    src, tgt, out = _paths(cfg)
    metric = knn.canonical_metric(cfg.knn_metric)
    listed, exclude_src = read_exclusions(cfg.exclude_parquet)
    try:
        src_ids = _read_columns(src, ("filepath", "label"))
        tgt_ids = _read_columns(tgt, ("filepath", "label"))
    except Exception as exc:
        raise UsageError(f"cannot read the parquets: {one_line(exc)}") from None
    if "filepath" not in src_ids:
        raise UsageError(f"source_parquet {src} has no 'filepath' column; mined images are "
                         f"reported by filepath")
    pool = _open_pool(src, cfg.source_embed_column_name, metric, len(src_ids["filepath"]))
    targets = read_embeddings(tgt, cfg.target_embed_column_name, "target_parquet")
    if cfg.topn > pool.n_rows:
        raise UsageError(f"topn={cfg.topn} exceeds the {pool.n_rows} source embeddings in {src}; the "
                         f"container fails on this too -- lower topn or grow the pool")
    exclude = _exclusion_mask(src_ids, listed, exclude_src, cfg.topn, pool.n_rows)
    src_identity = _source_identity(src)
    check, warnings = _check_encoders(src_identity, read_encoder_identity(tgt),
                                      (pool.dim, targets.shape[1]), cfg.allow_encoder_mismatch,
                                      src, tgt)
    label_filter = _label_filter(cfg, src_ids, tgt_ids, warnings)
    if metric == "cosine":
        knn.l2_normalize_(targets)
    return Inputs(src, tgt, out, cfg.output_parquet, cfg.topn, metric, cfg.distance_threshold,
                  cfg.engine, cfg.ray_address, pool, targets, src_ids, tgt_ids, exclude,
                  exclude_src, len(listed), src_identity, check, label_filter, tuple(warnings),
                  started)


# ----------------------------------------------------------------------------- search

@dataclass(frozen=True)
class Neighbours:
    idx: np.ndarray  # (targets, topn) source rows, nearest first
    dist: np.ndarray
    finished: float  # time.perf_counter() when the search ended
    engine_note: str  # "" for the local engine


def search(inputs: Inputs) -> Neighbours:
    """The k-NN of every target: streamed on this machine, or as Ray tasks (engine=ray)."""
    from tqdm import tqdm

    with tqdm(total=inputs.pool.n_rows, desc="nearest neighbours", unit="src", unit_scale=True,
              file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0) as bar:
        try:
            if inputs.engine == "ray":
                from tao_aoi import ray_engine

                idx, dist, note = ray_engine.nearest(
                    inputs.targets, inputs.pool, inputs.topn, inputs.metric, exclude=inputs.exclude,
                    address=inputs.ray_address, progress=bar.update)
            else:
                idx, dist = knn.topk_stream(inputs.targets, inputs.pool, inputs.topn, inputs.metric,
                                            normalized=(inputs.metric == "cosine"),
                                            exclude=inputs.exclude, progress=bar.update)
                note = ""
        except knn.SourceError as exc:
            raise UsageError(f"source_parquet {exc}") from None
    return Neighbours(idx, dist, time.perf_counter(), note)


# ----------------------------------------------------------------------------- compute

@dataclass(frozen=True)
class Result:
    table: Any  # pyarrow Table: output_parquet
    text: str  # mining_summary.txt
    out: Path

    @property
    def summary_file(self) -> Path:
        return summary_path(self.out)


def _filter_pairs(idx, dist, keys: tuple | None, threshold: float):
    """Target-major, nearest-first pairs that survive the filters -> (t, s, d, label mismatches,
    pairs dropped by distance). ``keys``: normalised (source, target) labels, or None."""
    n_t, k = idx.shape
    t_idx = np.repeat(np.arange(n_t), k)
    s_idx = idx.ravel()
    d = dist.ravel()
    keep = np.ones(d.size, bool)
    mismatches = 0
    if keys is not None:
        keep = keys[0][s_idx] == keys[1][t_idx]
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


def _metadata(inputs: Inputs) -> dict[bytes, bytes]:
    from tao_aoi.encoders import identity_metadata

    meta = {MINING_METADATA_KEY.encode(): json.dumps({
        "topn": inputs.topn, "knn_metric": inputs.metric, "filter_by_label": inputs.label_filter,
        "distance_threshold": inputs.threshold, "source_parquet": str(inputs.src),
        **({"exclude_parquet": inputs.exclude_src, "excluded_sources": inputs.n_excluded}
           if inputs.exclude_src else {}),
        "target_parquet": str(inputs.tgt)}).encode()}
    if inputs.src_identity:
        meta.update(identity_metadata(inputs.src_identity))
    return meta


def _container_lines(inputs: Inputs, candidates: int, unique: int, mismatches: int) -> list[str]:
    """The container's text, line for line (7.1.0, the pinned image)."""
    n_t, topn = len(inputs.targets), inputs.topn
    lines = [
        "Summary:",
        f"  Target queries: {n_t}",
        f"  Similar items per query: {topn}",
        f"  Total candidates: {candidates}",
        f"  Duplicates removed: {candidates - unique}",
        f"  Unique items saved: {unique}",
        f"  Results saved to: {inputs.output_text}",
    ]
    if inputs.label_filter:
        lines += [(f"Label filtering: kept {n_t * topn - mismatches}/{n_t * topn} pairs, "
                   f"dropped {mismatches} mismatches"), ""]
    return lines


def _runner_lines(inputs: Inputs, unique: int, after_label: int, dropped_far: int) -> list[str]:
    from tao_aoi.encoders import describe

    n_s, n_excluded = inputs.pool.n_rows, inputs.n_excluded
    lines = [
        "Local runner:",
        f"  knn_metric: {inputs.metric}",
        f"  Source pool: {n_s}" + (f" ({len(inputs.pool.paths)} shards)" if inputs.src.is_dir() else ""),
        f"  Encoder: {describe(inputs.src_identity)} ({inputs.encoder_check})",
        f"  Selectivity: {unique} unique mined of {n_s - n_excluded} searched sources "
        f"({100.0 * unique / (n_s - n_excluded):.1f}%)",
    ]
    if inputs.exclude_src:
        lines.append(f"  Excluded before search: {n_excluded} of {n_s} sources listed in "
                     f"{inputs.exclude_src} ({inputs.excluded_listed} filepaths listed); "
                     f"searched {n_s - n_excluded}")
    if inputs.threshold >= 0:
        lines.append(f"  Distance filtering: kept {after_label - dropped_far}/{after_label} "
                     f"pairs, dropped {dropped_far} exceeding threshold {inputs.threshold:.4f}")
    return lines


def _per_label_lines(t_idx, target_keys: np.ndarray) -> list[str]:
    """Kept pairs and targets per target label (compared as the label filter compares them),
    so a starved label shows."""
    import pandas as pd

    key = pd.Series(target_keys, dtype=object)
    pairs = key.iloc[t_idx].value_counts()
    lines = ["  Per target label: label | targets | pairs kept"]
    for lab, n in sorted(key.value_counts().items()):
        lines.append(f"    {lab} | {n} | {int(pairs.get(lab, 0))}")
    return lines


def _label_keys(ids: dict) -> np.ndarray | None:
    if "label" not in ids:
        return None
    return np.asarray([normalize_label(v) for v in ids["label"]], dtype=object)


def compute(inputs: Inputs, found: Neighbours) -> Result:
    """The mined table and the summary text (pure: no I/O)."""
    src_keys, tgt_keys = _label_keys(inputs.src_ids), _label_keys(inputs.tgt_ids)
    keys = (src_keys, tgt_keys) if inputs.label_filter else None
    t_idx, s_idx, d, mismatches, dropped_far = _filter_pairs(found.idx, found.dist, keys,
                                                             inputs.threshold)
    table, candidates = _mined_table(t_idx, s_idx, d, inputs.src_ids, inputs.tgt_ids)
    table = table.replace_schema_metadata(_metadata(inputs))
    unique = table.num_rows
    after_label = len(inputs.targets) * inputs.topn - mismatches
    lines = _container_lines(inputs, candidates, unique, mismatches)
    lines += _runner_lines(inputs, unique, after_label, dropped_far)
    if found.engine_note:
        lines.append(f"  Engine: {found.engine_note}")
    if tgt_keys is not None:
        lines += _per_label_lines(t_idx, tgt_keys)
    lines.extend(f"  {w}" for w in inputs.warnings)
    lines.append(f"  Seconds: {found.finished - inputs.started:.2f}")
    return Result(table, "\n".join(lines) + "\n", inputs.out)


# ----------------------------------------------------------------------------- write

def write(result: Result) -> None:
    """output_parquet and mining_summary.txt, as one set (both or neither)."""
    import pyarrow.parquet as pq

    with atomic.atomic_paths(result.out, result.summary_file) as (parquet_tmp, text_tmp):
        pq.write_table(result.table, str(parquet_tmp))
        text_tmp.write_text(result.text, encoding="utf-8")


def summary(result: Result) -> str:
    return result.text + f"mining_summary: {result.summary_file}"


def run(cfg: Mapping) -> int:
    inputs = load(cfg)
    for w in inputs.warnings:
        print(w, file=sys.stderr)
    try:
        result = compute(inputs, search(inputs))
        write(result)
    except BaseException:
        # a failed run leaves no stale artifacts of an earlier one to be taken as this run's
        inputs.out.unlink(missing_ok=True)
        summary_path(inputs.out).unlink(missing_ok=True)
        raise
    print(summary(result))
    return 0
