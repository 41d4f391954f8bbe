"""Small, deterministic helpers around the gap-analysis parquet.

Three command-line tools sit on top of this module:

* ``scripts/sample_parquet.py``   -- shape, columns, counts per label and the first rows;
* ``scripts/dedupe_first_lighting.py`` -- one row per (input_path, object_name) on the
  first lighting of the train YAML;
* ``scripts/resize_images.py``    -- 128x128 (or any size) square PNG thumbnails.

The spot check (``tao_aoi.spot_check``) and the draft report reuse the same functions.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

from tao_aoi.cli import OneLineParser, UsageError

SAMPLE_KEYS = ("input_path", "object_name")


# --------------------------------------------------------------------------- train YAML
def read_lightings(train_config: str | os.PathLike) -> tuple[list[str], str]:
    """Lighting names in the order the container expands them (the keys of ``input_map`` in
    YAML order, or its items when it is a list; the first lighting first) and image_ext.

    One reader for the whole project: the gap-analysis action's (same checks, same messages).
    """
    from tao_aoi.data_services.gap_analysis_vcn_aoi import read_train_config

    return read_train_config(os.fspath(train_config))


# --------------------------------------------------------------------------- loading
def _load_parquet(path: str | os.PathLike, read, columns_of, required: Iterable[str], what: str):
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    named = "" if what == "parquet" else f"{what} "
    try:
        data = read(path)
    except Exception as exc:  # pyarrow raises many types for a non-parquet file
        raise UsageError(f"cannot read {named}{path} as parquet: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    missing = [c for c in required if c not in columns_of(data)]
    if missing:
        quoted = ", ".join(f"'{c}'" for c in missing)
        raise UsageError(f"{named}{path} has no {quoted} column{'s' if len(missing) > 1 else ''} "
                         f"(columns: {column_list(columns_of(data))})")
    return data


def read_table(path: str | os.PathLike, required: Iterable[str] = (), *, what: str = "parquet",
               columns: list[str] | None = None):
    """A parquet as an Arrow table (only ``columns``, when given); UsageError (one line, no
    cell quoted, ``what`` names the file) when it is missing, not a parquet, or lacks a
    ``required`` column."""
    import pyarrow.parquet as pq

    return _load_parquet(path, lambda p: pq.read_table(p, columns=columns), lambda t: t.column_names,
                         required, what)


def read_parquet(path: str | os.PathLike, required: Iterable[str] = (), *, what: str = "parquet"):
    """:func:`read_table` as a pandas DataFrame (pandas' own parquet reader and dtypes)."""
    import pandas as pd

    return _load_parquet(path, pd.read_parquet, lambda df: df.columns, required, what)


def csv_header(path: str | os.PathLike, what: str = "CSV") -> list[str]:
    """The column names of a CSV (stripped); UsageError when it is not UTF-8 text or repeats a
    name (pandas would silently rename the second one ``name.1``). No cell is ever quoted."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            names = [c.strip() for c in next(csv.reader(fh), [])]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: not CSV text ({type(exc).__name__})") from None
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"{what} {path} repeats column(s) {', '.join(dupes)}: keep one of each")
    return names


_PLAIN_NAME = re.compile(r"[\w .:()\[\]/\-]{1,64}")


def column_list(names: Iterable[object], limit: int = 20) -> str:
    """Column names for a message: the first ``limit`` that look like names. A "header" of
    arbitrary text (a file that is not a table, /proc/self/environ read as a CSV) is never
    quoted: it is counted."""
    names = [str(n) for n in names]
    shown = [n for n in names if _PLAIN_NAME.fullmatch(n)][:limit]
    rest = len(names) - len(shown)
    return ", ".join(shown + ([f"{rest} other(s)"] if rest else [])) or "none"


def read_csv(path: str | os.PathLike, what: str = "CSV", **kwargs):
    """``pandas.read_csv`` with the project's failure modes: UsageError (one line, no cell
    quoted) when the file is missing, empty, not CSV text, or repeats a column name."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    csv_header(path, what)
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise UsageError(f"{what} is empty: {path}") from None
    except Exception as exc:  # ParserError, ValueError (usecols), ...
        raise UsageError(f"cannot read {what} {path}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def lighting_of(df, lightings: Sequence[str], image_ext: str = ""):
    """The lighting of each row: the ``lighting`` column, else parsed from ``filepath``.

    ``filepath`` ends in ``<object_name>_<light><image_ext>``; the parse matches the known
    lighting names so names containing underscores still resolve.
    """
    import pandas as pd

    if "lighting" in df.columns:
        return df["lighting"].astype(str)
    if "filepath" not in df.columns:
        raise UsageError("parquet has neither a 'lighting' nor a 'filepath' column")
    names = sorted(lightings, key=len, reverse=True)
    ext = re.escape(image_ext) if image_ext else r"\.[A-Za-z0-9]+"
    pattern = re.compile(r"_(" + "|".join(re.escape(n) for n in names) + r")" + ext + r"$")

    def parse(fp: str):
        m = pattern.search(os.path.basename(str(fp)))
        return m.group(1) if m else None

    return pd.Series([parse(fp) for fp in df["filepath"]], index=df.index, dtype=object)


def dedupe_first_lighting(df, lightings: Sequence[str], image_ext: str = ""):
    """One row per (input_path, object_name): the row on the earliest lighting available.

    When the same sample occurs more than once on that lighting (a duplicated CSV row),
    the weakest one (highest weakness) wins. Output is sorted by weakness descending,
    then input_path and object_name, so ties are broken the same way on every run.
    """
    missing = [c for c in SAMPLE_KEYS if c not in df.columns]
    if missing:
        raise UsageError(f"parquet lacks column(s) {', '.join(missing)} needed to dedupe "
                         "per sample")
    rank = {name: i for i, name in enumerate(lightings)}
    work = df.copy()
    light = lighting_of(work, lightings, image_ext)
    work["_light_rank"] = [rank.get(x, len(rank)) if x is not None else len(rank) + 1
                           for x in light]
    sort_cols = ["_light_rank"]
    ascending = [True]
    if "weakness" in work.columns:
        sort_cols.append("weakness")
        ascending.append(False)
    work = work.sort_values(sort_cols + list(SAMPLE_KEYS), ascending=ascending + [True, True],
                            kind="mergesort")
    work = work.drop_duplicates(subset=list(SAMPLE_KEYS), keep="first")
    work = work.drop(columns=["_light_rank"])
    return sort_by_weakness(work)


def sort_by_weakness(df):
    if "weakness" not in df.columns:
        return df.sort_values(list(SAMPLE_KEYS), kind="mergesort").reset_index(drop=True)
    return df.sort_values(["weakness", *SAMPLE_KEYS], ascending=[False, True, True],
                          kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- describe
def describe(df, head: int = 10, by: str | None = "label", sort: str | None = None,
             columns: Sequence[str] | None = None) -> dict:
    """A JSON-able summary: shape, columns and dtypes, counts per ``by`` column, head rows."""
    if columns:
        unknown = [c for c in columns if c not in df.columns]
        if unknown:
            raise UsageError(f"unknown column(s): {', '.join(unknown)}; available: "
                             f"{', '.join(map(str, df.columns))}")
    if by and by not in df.columns:
        raise UsageError(f"--by {by}: no such column; available: {', '.join(map(str, df.columns))}")
    if sort:
        if sort not in df.columns:
            raise UsageError(f"--sort {sort}: no such column")
        df = df.sort_values(sort, ascending=False, kind="mergesort")
    out = {
        "rows": int(len(df)),
        "columns": [{"name": str(c), "dtype": str(df[c].dtype)} for c in df.columns],
    }
    if by:
        counts = df[by].astype(str).value_counts(sort=False)
        out["counts_by"] = by
        out["counts"] = {str(k): int(v) for k, v in sorted(counts.items(),
                                                            key=lambda kv: (-kv[1], kv[0]))}
    shown = df[list(columns)] if columns else df
    shown = shown.head(max(head, 0))
    out["head"] = json.loads(shown.to_json(orient="records", default_handler=str))
    return out


def _format_describe(path: Path, info: dict) -> str:
    lines = [f"{path}: {info['rows']} rows x {len(info['columns'])} columns"]
    lines.append("columns: " + ", ".join(f"{c['name']} ({c['dtype']})" for c in info["columns"]))
    if "counts" in info:
        lines.append(f"rows per {info['counts_by']}:")
        width = max((len(k) for k in info["counts"]), default=0)
        for k, v in info["counts"].items():
            lines.append(f"  {k:<{width}}  {v}")
    if info["head"]:
        import pandas as pd

        lines.append(f"first {len(info['head'])} rows:")
        with pd.option_context("display.width", 200, "display.max_columns", 50,
                               "display.max_colwidth", 60):
            lines.append(pd.DataFrame(info["head"]).to_string(index=False))
    return "\n".join(lines)


# --------------------------------------------------------------------------- images
def square_thumbnail(src: str | os.PathLike, dest: str | os.PathLike, size: int = 128) -> None:
    """Resize keeping aspect ratio, pad to a ``size`` x ``size`` square, write PNG atomically.

    Raises ``OSError`` (missing / unreadable file) for the caller to report.
    """
    save_png(square_image(src, size), dest)


def save_png(image, dest: str | os.PathLike) -> None:
    from tao_aoi.atomic import atomic_path

    with atomic_path(dest) as tmp:
        image.save(tmp, format="PNG")


def square_image(src: str | os.PathLike, size: int = 128):
    """``src`` resized keeping its aspect ratio and padded to a ``size`` x ``size`` RGB square.

    Raises ``OSError`` (missing / unreadable file) or Pillow's errors for an undecodable one.
    """
    from PIL import Image

    with Image.open(src) as im:
        im.load()
        im = im.convert("RGB")
        w, h = im.size
        if w <= 0 or h <= 0:
            raise OSError(f"empty image: {src}")
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        im = im.resize((nw, nh), Image.LANCZOS)
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(im, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def resize_many(sources: Sequence[str], out_dir: str | os.PathLike, size: int = 128) -> list[dict]:
    out_dir = Path(out_dir)
    results = []
    used: set[str] = set()
    for src in sources:
        stem = Path(src).stem or "image"
        name = f"{stem}.png"
        n = 2
        while name in used:  # same stem from two folders: keep both
            name = f"{stem}_{n}.png"
            n += 1
        used.add(name)
        dest = out_dir / name
        try:
            image = square_image(src, size)
        except Exception as exc:  # unreadable is a reported outcome, not a crash
            results.append({"source": str(src), "thumbnail": None,
                            "status": f"unreadable: {type(exc).__name__}: {exc}"})
            continue
        save_png(image, dest)  # a write error is the output folder's: it stops the run
        results.append({"source": str(src), "thumbnail": str(dest), "status": "ok"})
    return results


# --------------------------------------------------------------------------- CLIs
def sample_main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="sample_parquet.py", formatter_class=argparse.RawDescriptionHelpFormatter, empty_ok=("by",),
        description="Look inside a parquet without writing code: row count, columns and "
                    "dtypes, rows per label and the first rows.",
        epilog="example:\n  sample_parquet.py $RCA/kpi_gaps.parquet --head 5 --by label "
               "--sort weakness --columns filepath label weakness")
    p.add_argument("parquet", help="parquet file to read")
    p.add_argument("--head", type=int, default=10, help="rows to show (default 10)")
    p.add_argument("--by", default="label",
                   help="column to count rows by (default label; '' to skip)")
    p.add_argument("--sort", default=None,
                   help="sort descending by this column before taking the head (e.g. weakness)")
    p.add_argument("--columns", nargs="+", default=None, help="only show these columns")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = p.parse_args(argv)
    if args.head < 0:
        raise UsageError("--head must be >= 0")
    df = read_parquet(args.parquet)
    by = args.by if args.by and (args.by in df.columns or args.by != "label") else None
    info = describe(df, head=args.head, by=by, sort=args.sort, columns=args.columns)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_format_describe(Path(args.parquet), info))
    return 0


def dedupe_main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="dedupe_first_lighting.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Collapse a per-lighting gaps parquet to one row per (input_path, "
                    "object_name), keeping the row on the FIRST lighting (first key of "
                    "dataset.classify.input_map, the container's order). Uses the 'lighting' column; parses the "
                    "file name only when that column is absent.",
        epilog="example:\n  dedupe_first_lighting.py $RCA/kpi_gaps.parquet --train-config "
               "$EXP/train.yaml --out $RCA/kpi_gaps_first_lighting.parquet")
    p.add_argument("parquet", help="kpi_gaps.parquet (one row per sample x lighting)")
    p.add_argument("--train-config", required=True, help="VCN train YAML with input_map")
    p.add_argument("--out", required=True, help="parquet to write")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.resolve() == Path(args.parquet).resolve():
        raise UsageError("--out must differ from the input parquet")
    lightings, ext = read_lightings(args.train_config)
    df = read_parquet(args.parquet, required=SAMPLE_KEYS)
    deduped = dedupe_first_lighting(df, lightings, ext)
    from tao_aoi.atomic import atomic_path

    with atomic_path(out) as tmp:
        deduped.to_parquet(tmp, index=False)
    summary = {"input_rows": int(len(df)), "output_rows": int(len(deduped)),
               "first_lighting": lightings[0], "out": str(out)}
    if "label" in deduped.columns:
        summary["rows_per_label"] = {str(k): int(v) for k, v in
                                     deduped["label"].astype(str).value_counts().sort_index().items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['input_rows']} rows -> {summary['output_rows']} samples "
              f"(first lighting: {summary['first_lighting']}) -> {out}")
        for k, v in summary.get("rows_per_label", {}).items():
            print(f"  {k}: {v}")
    return 0


def resize_main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="resize_images.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write square PNG thumbnails (aspect ratio kept, padded with black) for "
                    "embedding images in a report. Unreadable files are listed, not fatal; "
                    "the exit code is 1 when any image could not be read.",
        epilog="example:\n  resize_images.py data/a/C1_Top.jpg data/b/R7_Top.jpg "
               "--out-dir $RCA/rca_images --size 128")
    p.add_argument("sources", nargs="+", help="image files")
    p.add_argument("--out-dir", required=True, help="folder for the PNG thumbnails")
    p.add_argument("--size", type=int, default=128, help="square side in pixels (default 128)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    args = p.parse_args(argv)
    if args.size < 8 or args.size > 4096:
        raise UsageError("--size must be between 8 and 4096")
    from tao_aoi.paths import check_writable

    check_writable(args.out_dir, "--out-dir", folder=True)
    results = resize_many(args.sources, args.out_dir, args.size)
    bad = [r for r in results if r["status"] != "ok"]
    if args.json:
        print(json.dumps({"results": results, "ok": len(results) - len(bad),
                          "unreadable": len(bad)}, indent=2))
    else:
        for r in results:
            print(f"{r['status']:<10} {r['source']} -> {r['thumbnail'] or '-'}"
                  if r["status"] == "ok" else f"UNREADABLE {r['source']} ({r['status']})")
        print(f"{len(results) - len(bad)} written, {len(bad)} unreadable")
    if bad:
        print(f"{len(bad)} image(s) could not be read", file=sys.stderr)
    return 1 if bad else 0
