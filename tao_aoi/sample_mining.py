"""Sample-aware mining: a TAO VCN dataset CSV as the source pool, mined per sample, and a
training-ready ``mined_dataset.csv`` (local tooling around ``tmm nearest_neighbors``).

A VCN sample is one (input_path, object_name) seen under N lightings: the train spec's
``dataset.classify.input_map`` keys, in YAML order, each an image
``<media_root>/<input_path>/<object_name>_<light><image_ext>`` (joined as the container
joins them, :func:`tao_aoi.gap_analysis.expand`). Mining per file would return single
lightings, which training cannot use, and counts a sample once per lighting.

Three steps (``scripts/mine_samples.py``):

1. ``expand``: dataset CSV (input_path, golden_path, label, object_name) -> one parquet
   row per (sample, lighting) with ``filepath`` (what ``embedding image_embeddings``
   reads; it carries the other columns through).
2. ``combine``: a per-lighting embedding parquet -> one row per sample. ``--combine mean``:
   the mean of the sample's L2-normalised lighting embeddings (every lighting
   votes); ``--combine first``: the embedding of the sample's earliest available
   lighting; ``--combine concat`` (default): the L2-normalised lighting embeddings side by
   side in train-spec order (a missing lighting is a zero slot), so the cosine between two
   samples is the mean of their per-lighting cosines: every lighting votes, lighting 1 is
   compared with lighting 1 only (no cross-lighting terms), at N times the k-NN cost.
   ``benchmarks/bench_sample_mining.py`` measures the three on planted look-alikes.
   ``filepath`` is the first lighting's image, so
   ``tmm nearest_neighbors`` runs unchanged on two combined parquets (targets and pool)
   and mines samples. Targets (``mining_gaps.parquet`` rows: input_path, object_name)
   combine the same way.
3. ``dataset``: mined.parquet + the combined pool -> ``mined_dataset.csv``: the mined
   samples as VCN dataset rows (input_path, golden_path, label, object_name; label
   normalised: stripped, upper-cased), in mining order; plus the selectivity (mined
   samples / pool samples). Every row is checked to resolve to an image for every
   lighting (``--check-exists``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tao_aoi import knn
from tao_aoi.cli import UsageError

PROG = "mine_samples.py"
from tao_aoi.parquet_tools import SAMPLE_KEYS, read_parquet, read_table  # noqa: E402  (one sample)
DATASET_COLUMNS = ("input_path", "golden_path", "label", "object_name")
COMBINE_METADATA_KEY = "tao_aoi.sample_combine"
COMBINE = ("concat", "mean", "first")


def _lightings(train_spec) -> tuple[list[str], str]:
    from tao_aoi.parquet_tools import read_lightings

    if not train_spec or not Path(str(train_spec)).is_file():
        raise UsageError(f"train spec not found: {train_spec} (needed for the lightings: "
                         f"dataset.classify.input_map)")
    return read_lightings(train_spec)


def read_dataset_csv(path) -> "object":
    from tao_aoi.parquet_tools import read_csv

    p = Path(str(path))
    df = read_csv(p, "dataset CSV", dtype=str, keep_default_na=False)
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("input_path", "label", "object_name") if c not in df.columns]
    if missing:
        raise UsageError(f"{p} is not a VCN dataset CSV: missing column(s) {', '.join(missing)} "
                         f"(expected {', '.join(DATASET_COLUMNS)})")
    if "golden_path" not in df.columns:
        df["golden_path"] = ""
    return df


def is_dataset_csv(path) -> bool:
    """True when a CSV's header has input_path and object_name (a VCN dataset CSV)."""
    try:
        with open(path, newline="") as f:
            header = [c.strip() for c in f.readline().strip().split(",")]
    except OSError:
        return False
    return "input_path" in header and "object_name" in header


def _require_images(files: list[str], what: str, hint: str = "") -> None:
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UsageError(f"{len(missing)} of {len(files)} {what} are missing (first: {missing[0]}){hint}")


def expand(csv, train_spec, media_root: str, check_exists: bool = False):
    """Per-lighting rows of a dataset CSV: filepath, the dataset columns, lighting, sample."""
    import pandas as pd

    from tao_aoi.gap_analysis import expand as expand_paths

    df = read_dataset_csv(csv)
    lightings, ext = _lightings(train_spec)
    n = len(df)
    files = expand_paths(range(n), df["input_path"].tolist(), df["object_name"].tolist(),
                         lightings, ext, media_root)
    rep = np.repeat(np.arange(n), len(lightings))
    out = pd.DataFrame({"filepath": files})
    for c in DATASET_COLUMNS:
        out[c] = df[c].to_numpy()[rep]
    out["lighting"] = np.tile(np.asarray(lightings, dtype=object), n)
    out["sample"] = rep.astype(np.int64)
    if check_exists:
        _require_images(files, "lighting images", "; check media_root and the train spec")
    return out, lightings, ext


def _combined_vector(vec: np.ndarray, idx: np.ndarray, ranks: np.ndarray, how: str,
                     n_lightings: int) -> np.ndarray:
    """One sample's embedding from its lighting rows ``idx`` (lighting order)."""
    if how == "first":
        return vec[idx[0]]
    if how == "concat":
        # lighting slots in train-spec order; a missing lighting is a zero slot
        d = vec.shape[1]
        v = np.zeros(n_lightings * d)
        for r, rk in zip(idx, ranks):
            if rk < n_lightings and not v[rk * d:(rk + 1) * d].any():
                n = np.linalg.norm(vec[r])
                v[rk * d:(rk + 1) * d] = vec[r] / (n if n > 0 else 1)
        return v
    v = vec[idx]
    nrm = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(nrm > 0, nrm, 1)).mean(axis=0)


def _by_sample(df, lightings: Sequence[str], image_ext: str):
    """(rows sorted by sample, then lighting, then row; the lighting of each input row).
    Sample order = first appearance of (input_path, object_name)."""
    import pandas as pd

    from tao_aoi.parquet_tools import lighting_of

    rank = {name: i for i, name in enumerate(lightings)}
    light = lighting_of(df, lightings, image_ext)
    df["_rank"] = [rank.get(x, len(rank)) if x is not None else len(rank) + 1 for x in light]
    df["_row"] = np.arange(len(df))
    key = df["input_path"].astype(str) + "\0" + df["object_name"].astype(str)
    df["_sample"] = pd.factorize(key)[0]
    return df.sort_values(["_sample", "_rank", "_row"], kind="mergesort"), light


def combine(emb_parquet, lightings: Sequence[str], image_ext: str, how: str = "concat"):
    """(Arrow table: one row per sample, number of lighting rows used)."""
    import pandas as pd
    import pyarrow as pa

    if how not in COMBINE:
        raise UsageError(f"--combine {how!r}: use {', '.join(COMBINE)}")
    p = Path(str(emb_parquet))
    if not p.is_file():
        raise UsageError(f"embedding parquet not found: {p}")
    table = read_table(p)
    names = table.column_names
    missing = [c for c in ("filepath", *SAMPLE_KEYS) if c not in names]
    if missing:
        raise UsageError(f"{p} lacks column(s) {', '.join(missing)}: per-sample mining needs "
                         f"the sample columns next to each lighting's filepath")
    vec = _embedding_matrix(table, p).astype(np.float64)
    df, light = _by_sample(table.select([c for c in names if c != "embedding"]).to_pandas(),
                           lightings, image_ext)
    rows, out_vec = [], []
    for _, g in df.groupby("_sample", sort=True):
        idx = g["_row"].to_numpy()
        out_vec.append(_combined_vector(vec, idx, g["_rank"].to_numpy(), how, len(lightings)))
        r = g.iloc[0]
        rows.append({"filepath": r["filepath"], "input_path": r["input_path"],
                     "object_name": r["object_name"],
                     "golden_path": r["golden_path"] if "golden_path" in g.columns else "",
                     "label": r["label"] if "label" in g.columns else None,
                     "n_lightings": int(len(g)),
                     "lightings": ",".join(str(x) for x in light.iloc[idx] if x is not None)})
    frame = pd.DataFrame(rows)
    if "label" not in names:
        frame = frame.drop(columns="label")
    arr = np.asarray(out_vec, np.float32) if out_vec else np.zeros((0, vec.shape[1]), np.float32)
    out = pa.Table.from_pandas(frame, preserve_index=False)
    out = out.add_column(1, "embedding", knn.list_array(arr))
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if not k.startswith(b"pandas")}
    meta[COMBINE_METADATA_KEY.encode()] = json.dumps(
        {"combine": how, "lightings": list(lightings), "source": str(p)}).encode()
    return out.replace_schema_metadata(meta), len(df)


def _embedding_matrix(table, path: Path) -> np.ndarray:
    """The embedding column of an already read table, checked as the k-NN checks it."""
    try:
        knn.check_vector_field(table.schema, "embedding", f"embedding parquet {path}")
        vec = knn.matrix_of(table.column("embedding").combine_chunks(), path, "embedding")
        knn.check_finite(vec, path, "embedding")
    except knn.SourceError as exc:
        raise UsageError(str(exc)) from None
    if not len(vec):
        raise UsageError(f"embedding parquet {path} has no rows")
    return vec


def mined_dataset(mined_parquet, samples_parquet, check_exists: bool = False,
                  lightings: Sequence[str] = (), image_ext: str = "", media_root: str = ""):
    """(DataFrame of VCN dataset rows for the mined samples, stats dict)."""
    import pandas as pd

    from tao_aoi.gap_analysis import expand as expand_paths
    from tao_aoi.labels import normalize_label

    mined = read_parquet(mined_parquet, required=["filepath"])[["filepath"]]
    wanted = ["filepath", "input_path", "golden_path", "label", "object_name"]
    samples = read_parquet(samples_parquet, required=wanted)[wanted]
    by_fp = samples.drop_duplicates("filepath").set_index("filepath")
    unknown = [f for f in mined["filepath"] if f not in by_fp.index]
    if unknown:
        raise UsageError(f"{len(unknown)} mined filepaths are not samples of {samples_parquet} "
                         f"(first: {unknown[0]}); mine with the combined pool parquet")
    rows = by_fp.loc[mined["filepath"].tolist()].reset_index(drop=True)
    out = pd.DataFrame({
        "input_path": rows["input_path"].astype(str),
        "golden_path": rows["golden_path"].fillna("").astype(str),
        "label": rows["label"].map(normalize_label),
        "object_name": rows["object_name"].astype(str),
    }).drop_duplicates(["input_path", "object_name"], keep="first").reset_index(drop=True)
    if check_exists and lightings:
        files = expand_paths(range(len(out)), out["input_path"].tolist(),
                             out["object_name"].tolist(), lightings, image_ext, media_root)
        _require_images(files, "lighting images of the mined samples")
    pool = samples[["input_path", "object_name"]].drop_duplicates()
    stats = {"mined_samples": int(len(out)), "pool_samples": int(len(pool)),
             "selectivity": round(len(out) / len(pool), 4) if len(pool) else None,
             "mined_by_label": {str(k): int(v) for k, v in out["label"].value_counts().sort_index().items()}}
    return out, stats


def _parser():
    from tao_aoi.cli import OneLineParser

    ap = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    e = sub.add_parser("expand", help="dataset CSV -> per-lighting pool parquet")
    e.add_argument("csv")
    e.add_argument("--train-spec", required=True)
    e.add_argument("--media-root", default="", help="root of input_path (the kpi_media_path role)")
    e.add_argument("--out", required=True)
    e.add_argument("--check-exists", action="store_true")
    c = sub.add_parser("combine", help="per-lighting embeddings -> one embedding per sample")
    c.add_argument("embeddings")
    c.add_argument("--train-spec", required=True)
    c.add_argument("--combine", default="concat", choices=COMBINE)
    c.add_argument("--out", required=True)
    d = sub.add_parser("dataset", help="mined.parquet -> mined_dataset.csv (VCN rows)")
    d.add_argument("--mined", required=True)
    d.add_argument("--samples", required=True, help="the combined pool parquet that was mined")
    d.add_argument("--out", required=True)
    d.add_argument("--train-spec", help="with --check-exists: the lightings to check")
    d.add_argument("--media-root", default="")
    d.add_argument("--check-exists", action="store_true")
    return ap


def _write_parquet(table, dest: str) -> None:
    import pyarrow.parquet as pq

    from tao_aoi import atomic

    with atomic.atomic_path(Path(dest)) as tmp:
        pq.write_table(table, str(tmp))


def _expand_command(args) -> None:
    import pyarrow as pa

    df, lightings, ext = expand(args.csv, args.train_spec, args.media_root, args.check_exists)
    _write_parquet(pa.Table.from_pandas(df, preserve_index=False), args.out)
    print(f"expanded {df['sample'].nunique()} samples x {len(lightings)} lightings "
          f"({', '.join(lightings)}) = {len(df)} images -> {args.out}")


def _combine_command(args) -> None:
    lightings, ext = _lightings(args.train_spec)
    table, n_rows = combine(args.embeddings, lightings, ext, args.combine)
    _write_parquet(table, args.out)
    partial = int(sum(1 for n in table.column("n_lightings").to_pylist() if n < len(lightings)))
    print(f"combined {n_rows} lighting embeddings into {table.num_rows} samples "
          f"(--combine {args.combine}; {partial} samples with fewer than {len(lightings)} "
          f"lightings) -> {args.out}")


def _dataset_command(args) -> None:
    from tao_aoi import atomic

    lightings, ext = _lightings(args.train_spec) if args.train_spec else ([], "")
    out, stats = mined_dataset(args.mined, args.samples, args.check_exists, lightings, ext,
                               args.media_root)
    atomic.write_text(Path(args.out), out.to_csv(index=False))
    print(f"mined_dataset: {args.out} ({stats['mined_samples']} samples)")
    print(f"selectivity: {stats['mined_samples']}/{stats['pool_samples']} pool samples mined "
          f"({100 * (stats['selectivity'] or 0):.1f}%)")
    print("mined_by_label: " + json.dumps(stats["mined_by_label"], sort_keys=True))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    {"expand": _expand_command, "combine": _combine_command, "dataset": _dataset_command}[args.command](args)
    return 0
