"""Turn a CSV source pool into the parquet the embedding step reads.

The embedding action takes a parquet with a ``filepath`` column; a ``label`` column
makes label-aware mining possible. Users usually hold the pool as a CSV, so this
converts it once, keeping ``filepath`` and ``label`` (or every column with
``--keep-all``), and can count pool files that are not on disk before an hour of
encoding discovers them one batch at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from tao_aoi.cli import OneLineParser, UsageError
from tao_aoi.contract import MARK_MISSING_IMAGES

KEEP = ("filepath", "label")
_NEAR_MISSES = ("file_path", "path", "filename", "file", "image", "image_path", "img_path")


def load_pool_csv(path: Path, keep_all: bool = False):
    """Read and validate the CSV; return the DataFrame to write (filepath first)."""
    from tao_aoi.parquet_tools import column_list, read_csv

    if not path.is_file():
        raise UsageError(f"pool CSV not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        raise UsageError(f"{path.name} is already a parquet; pass it to the embedding step directly")
    df = read_csv(path, "pool CSV", dtype={"filepath": str, "label": str}, keep_default_na=False,
                  na_values=[""])
    df.columns = [str(c).strip() for c in df.columns]
    if "filepath" not in df.columns:
        lower = {c.lower(): c for c in df.columns}
        hint = next((lower[n] for n in _NEAR_MISSES if n in lower), None)
        extra = f"; rename column '{hint}' to 'filepath'" if hint else ""
        raise UsageError(f"pool CSV has no 'filepath' column (columns: "
                         f"{column_list(df.columns)}){extra}")
    blank = df["filepath"].isna() | (df["filepath"].astype(str).str.strip() == "")
    if blank.any():
        first = int(blank.to_numpy().nonzero()[0][0]) + 2  # +1 header, +1 one-based
        raise UsageError(f"{int(blank.sum())} pool rows have an empty filepath "
                         f"(first at CSV line {first}); fix or remove them")
    if df.empty:
        raise UsageError(f"pool CSV has a header but no rows: {path}")
    df["filepath"] = df["filepath"].astype(str).str.strip()
    if keep_all:
        cols = ["filepath"] + [c for c in df.columns if c != "filepath"]
    else:
        cols = [c for c in KEEP if c in df.columns]
    return df[cols].reset_index(drop=True)


def missing_files(filepaths, base_dir: Path) -> list[str]:
    out = []
    for fp in filepaths:
        p = Path(fp)
        if not p.is_absolute():
            p = base_dir / p
        if not p.is_file():
            out.append(fp)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="pool_to_parquet.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert a source-pool CSV into the parquet that `embedding image_embeddings`\n"
            "reads. Keeps filepath and label (the label column enables filter_by_label in\n"
            "mining); --keep-all keeps every column. --check-exists counts pool files that\n"
            "are not on disk (relative paths are resolved against --base-dir)."),
        epilog=(
            "example:\n"
            "  python3 scripts/pool_to_parquet.py /data/pool.csv --out $RUN/source_pool.parquet \\\n"
            "      --check-exists --base-dir $WORKSPACE\n\n"
            "Exit 2 with one line on stderr (nothing written) when the CSV is missing, has no\n"
            "filepath column, or has rows with an empty filepath."))
    p.add_argument("csv", type=Path, help="source pool CSV with a filepath column")
    p.add_argument("--out", required=True, type=Path, help="parquet to write")
    p.add_argument("--keep-all", action="store_true", help="keep every CSV column")
    p.add_argument("--check-exists", action="store_true",
                   help="count filepaths that are not files on disk")
    p.add_argument("--base-dir", type=Path, default=None,
                   help="folder relative filepaths are resolved against "
                        "(default: the current directory, like the data-services run)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tao_aoi.atomic import atomic_path

    args = build_parser().parse_args(argv)
    if args.out.suffix.lower() not in (".parquet", ".pq"):
        raise UsageError(f"--out should end in .parquet, got {args.out}")
    if args.out.exists() and args.out.is_dir():
        raise UsageError(f"--out is a folder: {args.out}")
    df = load_pool_csv(args.csv, keep_all=args.keep_all)
    base = (args.base_dir or Path.cwd()).resolve()
    missing = missing_files(df["filepath"], base) if args.check_exists else None
    with atomic_path(args.out) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)

    labels = (df["label"].dropna().astype(str).value_counts().sort_index().to_dict()
              if "label" in df.columns else None)
    result = {"csv": str(args.csv.resolve()), "out": str(args.out.resolve()),
              "rows": len(df), "columns": list(df.columns),
              "duplicate_filepaths": int(df["filepath"].duplicated().sum()),
              "labels": labels,
              "missing_files": None if missing is None else len(missing),
              "missing_examples": None if missing is None else missing[:5]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"wrote {result['out']}: {len(df)} rows, columns {', '.join(df.columns)}")
        if labels is not None:
            print("labels: " + ", ".join(f"{k}={v}" for k, v in labels.items()))
        if result["duplicate_filepaths"]:
            print(f"note: {result['duplicate_filepaths']} duplicate filepaths kept as rows")
    if labels is None:
        print("note: no 'label' column; filter_by_label=true will have nothing to filter on",
              file=sys.stderr)
    if missing:
        print(f"{MARK_MISSING_IMAGES} {len(missing)} of {len(df)} pool files are not on disk "
              f"(resolved against {base}); e.g. {', '.join(missing[:3])}", file=sys.stderr)
    elif missing is not None and not args.json:
        print(f"all {len(df)} pool files exist (resolved against {base})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from tao_aoi.cli import run_cli
    raise SystemExit(run_cli(main, "pool_to_parquet.py"))
