"""``gap_analysis vcn_aoi``: threshold sweep, weakness ranking, top-K per label, per-lighting expansion.

Reads ``<inference_results_dir>/inference.csv`` and the VCN train YAML, validates everything,
then writes kpi_gaps.parquet, threshold.txt, metrics.json and weak_samples_breakdown.txt into
``results_dir`` all-or-nothing (``atomic.atomic_paths``), or unreachable_kpi.txt and exit 1
when the recall target cannot be met. The math lives in :mod:`tao_aoi.gap_analysis`.
"""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from tao_aoi import atomic
from tao_aoi.cli import RunFailed, UsageError, one_line
from tao_aoi.yaml_files import load_mapping
from tao_aoi.hooks.report_rules import (MARK_MISSING_IMAGES, MARK_UNREACHABLE, MARK_WRONG_SIDE,
                                        RCA_ARTIFACTS, RCA_UNREACHABLE_FILE)

SUMMARY = ("threshold sweep (best F1 at min_recall), signed weakness, top-K weakest per label, "
           "per-lighting expansion -> kpi_gaps.parquet, threshold.txt, metrics.json")
ALIASES = {"inference_csv": "inference_results_dir", "output_dir": "results_dir"}
PANDAS_FREE = True  # numpy + pyarrow only: the runner may keep pandas out of the process

CSV_NAME = "inference.csv"
REQUIRED_COLUMNS = ("input_path", "object_name", "label", "siamese_score")
OUR_COLUMNS = ("filepath", "input_path", "object_name", "lighting", "label", "siamese_score",
               "weakness", "misclassified")
_SHOW_LINES = 5


# ----------------------------------------------------------------------------- validation

def _lines(rows, total: int) -> str:
    shown = ", ".join(str(int(r) + 2) for r in rows[:_SHOW_LINES])
    more = f" and {total - _SHOW_LINES} more" if total > _SHOW_LINES else ""
    return f"line{'s' if total > 1 else ''} {shown}{more}"


def _csv_path(cfg: dict) -> Path:
    d = Path(cfg["inference_results_dir"])
    if d.is_file():
        raise UsageError(f"inference_results_dir={d} is a file; pass the directory that holds "
                         f"{CSV_NAME} (here: inference_results_dir={d.parent})")
    if not d.is_dir():
        raise UsageError(f"inference_results_dir={d} does not exist (it must be the directory that "
                         f"holds {CSV_NAME})")
    path = d / CSV_NAME
    if not path.is_file():
        nested = d / "inference" / CSV_NAME
        hint = f"; did you mean inference_results_dir={nested.parent}?" if nested.is_file() else ""
        raise UsageError(f"no {CSV_NAME} in inference_results_dir={d}{hint}")
    return path


def _read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            header = next(csv.reader(fh), None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} cannot be read as CSV: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise UsageError(f"{path} is empty (no header, no rows)")
    stripped = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in stripped]
    if missing:
        raise UsageError(f"{path} lacks required column(s) {', '.join(missing)} "
                         f"(has: {', '.join(stripped)})")
    return header


def read_inference(path: Path):
    """(Arrow table, scores as float64 numpy, label as one DictionaryArray), fully validated."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _read_header(path)
    wanted = {"input_path": pa.string(), "object_name": pa.string(),
              "label": pa.dictionary(pa.int32(), pa.string()), "siamese_score": pa.float64()}
    # keyed by the header as written (a name may carry spaces; it is stripped after reading)
    types = {raw: wanted[raw.strip()] for raw in header if raw.strip() in wanted}
    read_opts = pacsv.ReadOptions()  # 1 MB blocks: parsed in parallel
    parse_opts = pacsv.ParseOptions()
    try:
        table = pacsv.read_csv(path, read_options=read_opts, parse_options=parse_opts,
                               convert_options=pacsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as exc:
        if "siamese_score" in str(exc) or "conversion error to double" in str(exc):
            _report_bad_scores(path)
        raise UsageError(f"{path} is not a well-formed CSV: {one_line(exc, None)}") from None
    table = table.rename_columns([c.strip() for c in table.column_names])
    if table.num_rows == 0:
        raise UsageError(f"{path} is empty (a header and no rows)")
    scores = float_column(table.column("siamese_score"))
    bad = ~np.isfinite(scores)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise UsageError(f"siamese_score is missing, NaN or infinite on {rows.size} row(s) of {path}: "
                         f"{_lines(rows, rows.size)}")
    label = table.column("label").combine_chunks()
    values = label.dictionary.to_pylist()
    bad_codes = [i for i, v in enumerate(values) if v is None or not v.strip()]
    null_rows = (np.flatnonzero(~np.asarray(label.is_valid())) if label.null_count
                 else np.empty(0, dtype=np.int64))
    if bad_codes or null_rows.size:
        codes = np.asarray(label.indices.fill_null(0))
        rows = np.union1d(np.flatnonzero(np.isin(codes, bad_codes)) if bad_codes else null_rows,
                          null_rows)
        raise UsageError(f"label is empty on {rows.size} row(s) of {path}: {_lines(rows, rows.size)}")
    return table, scores, label


def float_column(col):
    """A float64 ChunkedArray as one numpy array, nulls as NaN, without per-chunk conversions."""
    import numpy as np

    out = np.empty(len(col), dtype=np.float64)
    pos = 0
    for chunk in col.chunks:
        n = len(chunk)
        if n == 0:
            continue
        data = np.frombuffer(chunk.buffers()[1], dtype=np.float64, count=n, offset=chunk.offset * 8)
        out[pos:pos + n] = data
        if chunk.null_count:
            valid = np.asarray(chunk.is_valid())
            out[pos:pos + n][~valid] = np.nan
        pos += n
    return out


def arrow_from_numpy(values):
    """float64 / bool numpy array -> Arrow array over the same bytes.

    (``pa.array(ndarray)`` asks numpy whether the input is a masked array, which imports
    numpy.ma: ~40 ms of a small run.)
    """
    import numpy as np
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), values.size, [None, pa.py_buffer(bits)])
    values = values.astype(np.float64, copy=False)
    return pa.Array.from_buffers(pa.float64(), values.size, [None, pa.py_buffer(values)])


COLUMNAR_ROWS = 20_000  # above this many kept rows, sorting and expansion run in Arrow compute


def _int_array(values):
    import numpy as np
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), values.size, [None, pa.py_buffer(values)])


def _decode(indices, names):
    """Strings ``names[indices]`` as an Arrow string array (built from a dictionary).

    Up to ``COLUMNAR_ROWS`` values element by element: dictionary_decode imports
    pyarrow.compute (~60 ms, the largest import of a small run).
    """
    import numpy as np
    import pyarrow as pa

    idx = np.ascontiguousarray(indices, dtype=np.int32)
    if idx.size <= COLUMNAR_ROWS:
        names = list(names)
        return pa.array([names[i] for i in idx.tolist()], type=pa.string())
    arr = pa.Array.from_buffers(pa.int32(), idx.size, [None, pa.py_buffer(idx)])
    return pa.DictionaryArray.from_arrays(arr, pa.array(list(names), type=pa.string())).dictionary_decode()


def _columnar_order(rows, weakness, ip_col, on_col):
    """Same order as gap_analysis.order_rows, by Arrow's multi-key sort (for millions of rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = np.sort(np.asarray(rows, dtype=np.int64))
    idx = _int_array(rows)
    keys = pa.table({"w": arrow_from_numpy(-weakness[rows] + 0.0),  # + 0.0 turns -0.0 into 0.0
                     "ip": ip_col.take(idx), "on": on_col.take(idx), "i": idx})
    order = pc.sort_indices(keys, sort_keys=[("w", "ascending"), ("ip", "ascending"),
                                             ("on", "ascending"), ("i", "ascending")])
    return rows[np.asarray(order)]


def _columnar_paths(kpi_media_path, ip_col, on_col, rep, light_idx, lightings, image_ext) -> dict:
    """filepath, input_path, object_name of the expanded rows, built in Arrow compute."""
    import pyarrow.compute as pc

    from tao_aoi.gap_analysis import media_root

    import pyarrow as pa

    root = media_root(kpi_media_path)
    suffixes = [f"_{light}{image_ext}" for light in lightings]
    out = {"filepath": [], "input_path": [], "object_name": []}
    step = 2_000_000  # slices keep every string chunk far below Arrow's 2 GiB offset limit
    for lo in range(0, len(rep), step):
        idx = _int_array(rep[lo:lo + step])
        ip_rep, on_rep = ip_col.take(idx).combine_chunks(), on_col.take(idx).combine_chunks()
        suffix = _decode(light_idx[lo:lo + step], suffixes)
        out["filepath"].append(pc.binary_join_element_wise(root + "/", ip_rep, "/", on_rep, suffix, ""))
        out["input_path"].append(ip_rep)
        out["object_name"].append(on_rep)
    return {k: pa.chunked_array(v, type=pa.string()) for k, v in out.items()}


def _images_missing_columnar(filepaths, input_paths, kpi_media_path) -> int:
    """Missing count for many paths: list each folder once, then one set-membership pass."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tao_aoi.gap_analysis import media_root

    root = media_root(kpi_media_path)
    existing = []
    for ip in pc.unique(input_paths).to_pylist():
        folder = f"{root}/{ip}"
        try:
            existing.extend(f"{folder}/{name}" for name in os.listdir(folder or "/"))
        except OSError:
            continue
    if not existing:
        return len(filepaths)
    found = pc.sum(pc.is_in(filepaths, value_set=pa.array(existing, type=pa.string()))).as_py() or 0
    return len(filepaths) - int(found)


class ColumnLookup:
    """Values of a (many-chunk) column at given rows without combining chunks.

    Few rows: element access (no pyarrow.compute import, ~60 ms); many rows: one vectorised take.
    """

    SMALL = 5000

    def __init__(self, col):
        import numpy as np

        self.col = col
        self.starts = np.cumsum([0] + [len(c) for c in col.chunks])

    def values(self, rows) -> list:
        import numpy as np
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64)
        if rows.size > self.SMALL:
            return self.col.take(pa.array(rows)).to_pylist()
        which = np.searchsorted(self.starts, rows, side="right") - 1
        chunks = self.col.chunks
        return [chunks[c][int(r - self.starts[c])].as_py() for c, r in zip(which, rows)]

    def array(self, rows):
        import numpy as np
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64)
        if rows.size > self.SMALL:
            return self.col.take(pa.array(rows))
        return pa.array(self.values(rows), type=self.col.type)

    __call__ = values


def _report_bad_scores(path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    raw = next(h for h in _read_header(path) if h.strip() == "siamese_score")
    col = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=[raw], column_types={raw: pa.string()},
        strings_can_be_null=False)).column(raw).to_pylist()
    bad = []
    for i, text in enumerate(col):
        try:
            v = float(text)
        except (TypeError, ValueError):
            bad.append(i)
            continue
        if v != v or v in (float("inf"), float("-inf")):
            bad.append(i)
    if bad:
        raise UsageError(f"siamese_score is not a finite number on {len(bad)} row(s) of {path}: "
                         f"{_lines(bad, len(bad))} (e.g. {col[bad[0]]!r})")


def read_train_config(path_text: str) -> tuple[list[str], str]:
    from tao_aoi.gap_analysis import lighting_order

    path = Path(path_text)
    if path.is_dir():
        yamls = sorted(p.name for p in path.glob("*.y*ml"))
        raise UsageError(f"train_config={path} is a directory; pass the train YAML itself"
                         + (f" (found: {', '.join(yamls[:5])})" if yamls else ""))
    if not path.is_file():
        raise UsageError(f"train_config={path} does not exist")
    doc = load_mapping(path, "train_config")
    classify = doc.get("dataset", {})
    classify = classify.get("classify") if isinstance(classify, dict) else None
    if not isinstance(classify, dict):
        raise UsageError(f"train_config={path} has no dataset.classify section "
                         f"(need dataset.classify.input_map and dataset.classify.image_ext)")
    input_map = classify.get("input_map")
    if not isinstance(input_map, dict) or not input_map:
        raise UsageError(f"train_config={path}: dataset.classify.input_map must be a non-empty mapping "
                         f"LightName: index, got {input_map!r}")
    bad = [k for k, v in input_map.items() if not isinstance(v, int) or isinstance(v, bool)]
    if bad:
        raise UsageError(f"train_config={path}: dataset.classify.input_map values must be integers; "
                         f"not for {', '.join(map(str, bad))}")
    image_ext = classify.get("image_ext")
    if not isinstance(image_ext, str) or not image_ext.strip():
        raise UsageError(f"train_config={path}: dataset.classify.image_ext is missing or empty "
                         f"(e.g. image_ext: .jpg)")
    return lighting_order({str(k): v for k, v in input_map.items()}), image_ext.strip()


def _check_options(cfg: dict) -> tuple[float, int | None, float | None]:
    min_recall = cfg["min_recall"]
    if isinstance(min_recall, bool) or not isinstance(min_recall, (int, float)) or not (0 < min_recall <= 1):
        raise UsageError(f"min_recall must be a number in (0, 1], got {min_recall!r}")
    top_k = cfg.get("top_k_per_label")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or float(top_k) != int(top_k):
            raise UsageError(f"top_k_per_label must be an integer (or null for the wrong-side filter), "
                             f"got {top_k!r}")
        top_k = int(top_k)
    threshold = cfg.get("threshold", -1.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
        raise UsageError(f"threshold must be a number (negative = sweep), got {threshold!r}")
    pinned = float(threshold) if threshold >= 0 else None
    return float(min_recall), top_k, pinned


def _check_results_dir(cfg: dict) -> Path:
    out = Path(cfg["results_dir"])
    if out.exists() and not out.is_dir():
        raise UsageError(f"results_dir={out} exists and is not a directory")
    return out


# ----------------------------------------------------------------------------- outputs

def _images_missing(filepaths: list[str]) -> int:
    """How many paths do not exist; lists each folder once instead of one stat per file."""
    listing: dict[str, set | None] = {}
    missing = 0
    for fp in filepaths:
        folder, _, name = fp.rpartition("/")
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(folder or "/"))
            except OSError:
                listing[folder] = None
        names = listing[folder]
        if names is None or name not in names:
            missing += 1
    return missing


def _breakdown_text(rows: list[dict], choice, selection_mode: str, top_k, kept: int) -> str:
    sel = (f"top_k (top_k_per_label={top_k})" if selection_mode == "top_k"
           else "wrong_side (misclassified rows only; top_k_per_label not set)")
    width = max([len("label"), len("TOTAL")] + [len(r["label"]) for r in rows])
    lines = ["Weak samples breakdown: kept rows per ground-truth label (before per-lighting expansion)",
             f"threshold: {choice.threshold!r} ({choice.threshold_mode})",
             f"selection: {sel}",
             f"kept rows: {kept}",
             "marginal = kept but on the right side of the threshold",
             "",
             f"{'label':<{width}}  {'count':>8}  {'% of kept':>9}  {'misclassified':>13}  {'marginal':>8}"]
    for r in rows:
        lines.append(f"{r['label']:<{width}}  {r['count']:>8}  {r['percent']:>8.1f}%  "
                     f"{r['misclassified']:>13}  {r['marginal']:>8}")
    tot_mis = sum(r["misclassified"] for r in rows)
    lines.append(f"{'TOTAL':<{width}}  {kept:>8}  {100.0 if kept else 0.0:>8.1f}%  {tot_mis:>13}  "
                 f"{kept - tot_mis:>8}")
    return "\n".join(lines) + "\n"


def _write_unreachable(results_dir: Path, text: str) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in RCA_ARTIFACTS:
        p = results_dir / name
        if p.exists() and p.is_file():
            p.unlink()
    atomic.write_text(results_dir / RCA_UNREACHABLE_FILE, text)


# ----------------------------------------------------------------------------- run

def run(cfg: dict) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tao_aoi import gap_analysis as ga

    # 1. validate ALL input before touching results_dir
    min_recall, top_k, pinned = _check_options(cfg)
    results_dir = _check_results_dir(cfg)
    csv_path = _csv_path(cfg)
    lightings, image_ext = read_train_config(cfg["train_config"])
    kpi_media_path = str(cfg["kpi_media_path"])
    table, scores, label_arr = read_inference(csv_path)

    # 2. compute
    label_names = [str(v) for v in label_arr.dictionary.to_pylist()]
    codes = np.frombuffer(label_arr.indices.buffers()[1], dtype=np.int32, count=len(label_arr),
                          offset=label_arr.indices.offset * 4)  # no nulls: checked on reading
    # unify duplicate dictionary entries (should not happen, but be exact)
    uniq_names = sorted(set(label_names))
    position = {n: i for i, n in enumerate(uniq_names)}
    remap = np.array([position[n] for n in label_names], dtype=np.int32)
    codes = remap[codes]
    label_names = uniq_names
    pass_code = np.array([ga.is_pass_label(n) for n in label_names], dtype=bool)
    positive = ~pass_code[codes]
    n_rows = int(scores.size)
    n_no_pass = int(np.count_nonzero(positive))
    n_pass = n_rows - n_no_pass

    try:
        choice = ga.choose_threshold(scores, positive, min_recall, pinned)
    except ga.UnreachableKPI as exc:
        text = (f"{MARK_UNREACHABLE}: min_recall={min_recall} cannot be met at any threshold.\n"
                f"why: {exc}\n"
                f"rows: {exc.n_rows} (PASS {exc.n_pass}, NO_PASS {exc.n_no_pass})\n"
                f"labels: {', '.join(label_names)}\n"
                f"inference csv: {csv_path}\n"
                f"what to do: check that the CSV holds the defect (NO_PASS) samples of the test set; "
                f"the threshold cannot be chosen and no weak-sample ranking was written.\n")
        _write_unreachable(results_dir, text)
        print(f"{MARK_UNREACHABLE}: {exc}")
        print(f"wrote {results_dir / RCA_UNREACHABLE_FILE}")
        raise RunFailed(f"{MARK_UNREACHABLE}: min_recall={min_recall} not reachable; see "
                        f"{results_dir / RCA_UNREACHABLE_FILE}")

    t = choice.threshold
    weakness, misclassified = ga.weakness_and_misclassified(scores, positive, t)
    groups = ga.group_rows(codes, len(label_names))
    per_label = ga.per_label_stats(weakness, misclassified, groups, label_names)

    ip_col, on_col = table.column("input_path"), table.column("object_name")
    ip_of, on_of = ColumnLookup(ip_col), ColumnLookup(on_col)

    def names(rows):
        return ip_of(rows), on_of(rows)

    def order(rows):
        if rows.size <= COLUMNAR_ROWS:
            return ga.order_rows(rows, weakness, names)
        return _columnar_order(rows, weakness, ip_col, on_col)

    kept, selection_mode = ga.select_rows(weakness, misclassified, groups, top_k, names, order)
    kept_mis = misclassified[kept]
    kept_pos = positive[kept]
    n_lights = len(lightings)
    rep = np.repeat(kept, n_lights)
    light_idx = np.tile(np.arange(n_lights, dtype=np.int32), kept.size)

    others = [c for c in table.column_names if c not in OUR_COLUMNS]
    dropped = [c for c in table.column_names if c in OUR_COLUMNS and c not in REQUIRED_COLUMNS]
    if dropped:
        print(f"notice: inference.csv column(s) {', '.join(dropped)} are replaced by computed columns",
              file=sys.stderr)
    if kept.size <= COLUMNAR_ROWS:
        kept_ip, kept_on = names(kept)
        filepaths = ga.expand_filepaths(kpi_media_path, kept_ip, kept_on, lightings, image_ext)
        text_columns = {
            "filepath": pa.array(filepaths, type=pa.string()),
            "input_path": pa.array([v for v in kept_ip for _ in lightings], type=pa.string()),
            "object_name": pa.array([v for v in kept_on for _ in lightings], type=pa.string()),
        }
        missing_images = _images_missing(filepaths)
    else:
        text_columns = _columnar_paths(kpi_media_path, ip_col, on_col, rep, light_idx, lightings, image_ext)
        missing_images = _images_missing_columnar(text_columns["filepath"], text_columns["input_path"],
                                                  kpi_media_path)
    columns = {
        "filepath": text_columns["filepath"],
        "input_path": text_columns["input_path"],
        "object_name": text_columns["object_name"],
        "lighting": _decode(light_idx, lightings),
        "label": _decode(codes[rep].astype(np.int32), label_names),
        "siamese_score": arrow_from_numpy(scores[rep]),
        "weakness": arrow_from_numpy(weakness[rep]),
        "misclassified": arrow_from_numpy(misclassified[rep]),
    }
    for c in others:
        columns[c] = ColumnLookup(table.column(c)).array(rep)
    gaps = pa.table(columns)
    n_expanded = gaps.num_rows

    breakdown = ga.breakdown_rows(codes[kept], kept_mis, label_names)
    metrics = {
        "threshold": t,
        "threshold_mode": choice.threshold_mode,
        "min_recall": min_recall,
        "top_k_per_label": top_k,
        "selection_mode": selection_mode,
        "precision": choice.precision,
        "recall": choice.recall,
        "f1": choice.f1,
        "far": choice.far,
        "confusion_matrix": choice.confusion_matrix,
        "recall_target_met": choice.recall_target_met,
        "n_rows": n_rows,
        "n_pass": n_pass,
        "n_no_pass": n_no_pass,
        "n_candidates": choice.n_candidates,
        "n_candidates_meeting_recall": choice.n_candidates_meeting_recall,
        "kept_rows": int(kept.size),
        "expanded_rows": int(n_expanded),
        "lightings": lightings,
        "image_ext": image_ext,
        "missing_images": missing_images,
        "per_label": per_label,
    }

    # all four or none (RCA_ARTIFACTS: gaps, threshold, metrics, breakdown): every file is
    # complete before the first rename
    with atomic.atomic_paths(*(results_dir / n for n in RCA_ARTIFACTS)) as (tmp_g, tmp_t, tmp_m, tmp_b):
        pq.write_table(gaps, tmp_g)
        tmp_t.write_text(repr(float(t)) + "\n", encoding="utf-8")
        tmp_m.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        tmp_b.write_text(_breakdown_text(breakdown, choice, selection_mode, top_k, int(kept.size)),
                         encoding="utf-8")
    (results_dir / RCA_UNREACHABLE_FILE).unlink(missing_ok=True)

    # 3. summary on stdout
    kept_no_pass = int(np.count_nonzero(kept_pos))
    print(f"rows: {n_rows} (PASS {n_pass}, NO_PASS {n_no_pass}); lightings: {', '.join(lightings)}")
    if choice.threshold_mode == "sweep":
        print(f"threshold: {t!r} (sweep: best F1 among {choice.n_candidates_meeting_recall} of "
              f"{choice.n_candidates} candidates with recall >= {min_recall})")
    else:
        print(f"threshold: {t!r} (pinned)")
    print(f"precision {choice.precision:.4f}  recall {choice.recall:.4f}  f1 {choice.f1:.4f}  "
          f"far {choice.far:.4f}  (tp {choice.tp}, fp {choice.fp}, tn {choice.tn}, fn {choice.fn})")
    if not choice.recall_target_met:
        print(f"WARNING: the pinned threshold {t!r} gives recall {choice.recall:.6f} < min_recall "
              f"{min_recall}; artifacts written anyway")
    sel = f"top {top_k} per label" if selection_mode == "top_k" else "wrong-side filter"
    per = ", ".join(f"{r['label']} {r['count']}" for r in breakdown) or "none"
    print(f"kept rows ({sel}): {kept.size} -- {per}; NO_PASS kept: {kept_no_pass}")
    if selection_mode == "wrong_side":
        loud = (f"{MARK_WRONG_SIDE}: top_k_per_label is {cfg.get('top_k_per_label')!r}, so only "
                f"misclassified rows were kept ({kept.size} rows, {kept_no_pass} NO_PASS)")
        if kept_no_pass == 0:
            loud += (f" -- ZERO NO_PASS rows kept: at min_recall={min_recall} every NO_PASS score is "
                     f"above the threshold, so this queue holds only PASS false alarms; rerun with "
                     f"top_k_per_label=50")
        print(loud)
        print(loud, file=sys.stderr)
    print(f"expanded rows: {n_expanded} ({kept.size} x {n_lights} lightings)")
    if missing_images:
        print(f"{MARK_MISSING_IMAGES} {missing_images} of {n_expanded} expanded filepaths do not "
              f"exist under kpi_media_path={kpi_media_path}")
    else:
        print(f"images: all {n_expanded} expanded filepaths exist")
    print(f"output: {results_dir.resolve()}")
    return 0
