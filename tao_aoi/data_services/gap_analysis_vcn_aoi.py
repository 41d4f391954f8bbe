"""``gap_analysis vcn_aoi``: the container's artifacts, plus ours, from one computation.

load (validate everything, read ``inference.csv`` as the container reads it) -> compute (pure:
:mod:`tao_aoi.gap_analysis`) -> write. Container artifacts: ``kpi_gaps.parquet``,
``weak_samples_breakdown.txt`` and, when the threshold was swept, ``threshold.txt``. Our
additions (:mod:`tao_aoi.gap_completion`, the same code the completion step runs after the
container): extra columns after the container's four, ``metrics.json``, and
``unreachable_kpi.txt`` with exit 1 when no threshold reaches ``min_recall``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tao_aoi import atomic, specs
from tao_aoi.cli import RunFailed, UsageError, one_line
from tao_aoi.contract import (GAP_RUN_ARTIFACTS, BREAKDOWN_FILE, GAPS_FILE, METRICS_FILE, THRESHOLD_FILE,
                              UNREACHABLE_FILE)
from tao_aoi.yaml_files import load_mapping

SUMMARY = ("threshold sweep (best F1 at min_recall), signed weakness, top-K weakest per label, "
           "per-lighting expansion -> kpi_gaps.parquet, weak_samples_breakdown.txt, threshold.txt "
           "(+ metrics.json)")
ALIASES = {"inference_csv": "inference_results_dir", "output_dir": "results_dir"}

CSV_NAME = "inference.csv"
REQUIRED_COLUMNS = ("input_path", "object_name", "label", "siamese_score")
# TAO's PyTorch inference names the score siamese_score; TensorRT inference (tao-deploy) output_score
SCORE_COLUMNS = ("siamese_score", "output_score")
_SHOW_LINES = 5


@dataclass(frozen=True)
class GapInputs:
    """Everything the computation needs, validated. Text columns stay pandas Series: only the
    kept rows are turned into strings (``str(value)``, as the container does)."""

    csv_path: Path
    table: Any  # pandas DataFrame, read as the container reads it
    scores: np.ndarray
    label_codes: np.ndarray  # index into label_values
    label_values: list[str]  # distinct labels as written (str of the value)
    lightings: list[str]
    image_ext: str
    kpi_media_path: str
    min_recall: float
    top_k: int
    pinned: float | None

    @property
    def n_rows(self) -> int:
        return int(self.scores.size)

    def text(self, column: str, rows) -> list[str]:
        return [str(v) for v in self.table[column].iloc[np.asarray(rows, dtype=np.int64)].tolist()]


# ----------------------------------------------------------------------------- load

def _lines(rows, total: int) -> str:
    shown = ", ".join(str(int(r) + 2) for r in rows[:_SHOW_LINES])
    more = f" and {total - _SHOW_LINES} more" if total > _SHOW_LINES else ""
    return f"line{'s' if total > 1 else ''} {shown}{more}"


def csv_path(inference_results_dir: str) -> Path:
    """``<dir>/inference.csv``, read directly inside the folder as the container does."""
    d = Path(inference_results_dir)
    if d.is_file():
        raise UsageError(f"inference_results_dir={d} is a file; pass the directory that holds "
                         f"{CSV_NAME} (here: inference_results_dir={d.parent})")
    if not d.is_dir():
        raise UsageError(f"inference_results_dir={d} does not exist (it must be the directory that "
                         f"holds {CSV_NAME})")
    path = d / CSV_NAME
    if not path.is_file():
        nested = sorted(p.parent for p in d.glob(f"*/{CSV_NAME}"))
        hint = f"; found one in {nested[0]}: pass inference_results_dir={nested[0]}" if nested else ""
        raise UsageError(f"no {CSV_NAME} directly in inference_results_dir={d}{hint}")
    return path


def _read_csv(path: Path):
    import pandas as pd

    try:
        # the container's call (pandas' own parser and type inference); Arrow-backed columns
        # keep memory low without changing what is parsed
        return pd.read_csv(path, dtype_backend="pyarrow")
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path} is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not a well-formed CSV: {one_line(exc, 160)}") from None


def score_column(names: list[str], path: Path) -> str:
    """Which column holds the score; both present is ambiguous and refused."""
    found = [c for c in SCORE_COLUMNS if c in names]
    if len(found) > 1:
        raise UsageError(f"{path} has both {' and '.join(found)}: keep the one column that holds "
                         f"the model's score")
    return found[0] if found else "siamese_score"


def _check_columns(df, path: Path, score: str) -> None:
    names = [str(c) for c in df.columns]
    required = [score if c == "siamese_score" else c for c in REQUIRED_COLUMNS]
    dupes = sorted({c for c in names if c.split(".")[0] in required and "." in c})
    missing = [c for c in required if c not in names]
    if missing:
        spaced = [c for c in names if c.strip() in missing]
        hint = (f"; column name(s) {', '.join(repr(c) for c in spaced)} carry spaces the container "
                f"would not match" if spaced else "")
        raise UsageError(f"{path} lacks required column(s) {', '.join(missing)}{hint}")
    if dupes:
        raise UsageError(f"{path} repeats column(s) {', '.join(d.split('.')[0] for d in dupes)}")


def _scores(df, path: Path, score: str) -> np.ndarray:
    import pandas as pd

    col = df[score]
    if len(col) == 0:
        return np.empty(0, dtype=np.float64)
    if not (pd.api.types.is_float_dtype(col.dtype) or pd.api.types.is_integer_dtype(col.dtype)):
        as_num = pd.to_numeric(col.astype("string[pyarrow]"), errors="coerce")
        bad = np.flatnonzero(as_num.isna().to_numpy())
        raise UsageError(f"{score} is not a number on {bad.size} row(s) of {path}: "
                         f"{_lines(bad, bad.size)}")
    scores = col.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise UsageError(f"{score} is missing, NaN or infinite on {bad.size} row(s) of {path}: "
                         f"{_lines(bad, bad.size)}")
    return scores


def _no_missing(df, column: str, path: Path) -> None:
    """pandas reads an empty cell as missing; the container would write it as 'nan'."""
    bad = np.flatnonzero(df[column].isna().to_numpy())
    if bad.size:
        raise UsageError(f"{column} is empty on {bad.size} row(s) of {path}: {_lines(bad, bad.size)}")


def read_inference(path: Path):
    """(DataFrame, scores, label codes, distinct labels) of an inference CSV, validated."""
    import pandas as pd

    df = _read_csv(path)
    score = score_column([str(c) for c in df.columns], path)
    if score == "output_score":
        print(f"notice: {path.name} names the score output_score (TensorRT inference); it is read "
              f"as siamese_score", file=sys.stderr)
    _check_columns(df, path, score)
    scores = _scores(df, path, score)
    for column in ("label", "input_path", "object_name"):
        _no_missing(df, column, path)
    codes, uniques = pd.factorize(df["label"])
    values = [str(v) for v in list(uniques)]
    blank = [i for i, v in enumerate(values) if not v.strip()]
    if blank:
        bad = np.flatnonzero(np.isin(codes, blank))
        raise UsageError(f"label is blank on {bad.size} row(s) of {path}: {_lines(bad, bad.size)}")
    return df, scores, np.asarray(codes, dtype=np.int64), values


def _name(value: Any, what: str, path: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"train_config={path}: {what} must be a name, got a {type(value).__name__}")
    text = str(value)
    # a '/' or '..' in a name would put images outside kpi_media_path/input_path
    if "/" in text or "\\" in text or text in ("", ".", ".."):
        raise UsageError(f"train_config={path}: {what} {text!r} is not a plain file-name part")
    return text


def read_train_config(path_text: str) -> tuple[list[str], str]:
    """Lightings (the keys of ``dataset.classify.input_map`` in YAML order, or its items when it
    is a list, as the container iterates it) and ``image_ext``."""
    path = Path(path_text)
    if path.is_dir():
        raise UsageError(f"train_config={path} is a directory; pass the train YAML itself")
    doc = load_mapping(path, "train_config")
    classify = doc.get("dataset")
    classify = classify.get("classify") if isinstance(classify, dict) else None
    if not isinstance(classify, dict):
        raise UsageError(f"train_config={path} has no dataset.classify section "
                         f"(need dataset.classify.input_map and dataset.classify.image_ext)")
    input_map = classify.get("input_map")
    if not isinstance(input_map, (dict, list)) or not input_map:
        raise UsageError(f"train_config={path}: dataset.classify.input_map must be a non-empty "
                         f"mapping (LightName: index) or list of lighting names")
    lightings = [_name(k, "lighting", path) for k in input_map]
    ext = classify.get("image_ext")
    if not isinstance(ext, str) or not ext:
        raise UsageError(f"train_config={path}: dataset.classify.image_ext is missing or empty "
                         f"(e.g. image_ext: .jpg)")
    if "/" in ext or "\\" in ext:
        raise UsageError(f"train_config={path}: image_ext {ext!r} holds a path separator")
    return lightings, ext


def config(cfg: Mapping) -> specs.ActionConfig:
    return specs.make_config("gap_analysis", "vcn_aoi", cfg)


def _options(cfg: specs.ActionConfig) -> tuple[float, int, float | None]:
    # finite and in range: the schema validation (specs.validate) refused anything else
    return cfg.min_recall, cfg.top_k_per_label, (cfg.threshold if cfg.threshold >= 0 else None)


def load(cfg: Mapping) -> GapInputs:
    """Validate every input before anything is written; UsageError names the first problem."""
    cfg = config(cfg)
    min_recall, top_k, pinned = _options(cfg)
    out = Path(cfg.results_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"results_dir={out} exists and is not a directory")
    path = csv_path(cfg.inference_results_dir)
    lightings, image_ext = read_train_config(cfg.train_config)
    df, scores, codes, values = read_inference(path)
    if scores.size == 0 and pinned is None:
        raise UsageError(f"{path} has a header and no rows (the container: 'Inference CSV at {path} "
                         f"contains no rows.')")
    return GapInputs(path, df, scores, codes, values, lightings, image_ext,
                     cfg.kpi_media_path, min_recall, top_k, pinned)


# ----------------------------------------------------------------------------- write

def superseded(results_dir: Path, keep: tuple[str, ...]) -> list[Path]:
    """Artifacts of an earlier run that the new set does not rewrite: removed in the same commit,
    so a pinned-threshold run never sits beside an old threshold.txt."""
    return [results_dir / name for name in GAP_RUN_ARTIFACTS if name not in keep]


def write(result, results_dir: Path) -> None:
    """All of the run's artifacts or none (every file complete before the first rename)."""
    import pyarrow.parquet as pq

    from tao_aoi import gap_completion

    results_dir.mkdir(parents=True, exist_ok=True)
    names = [GAPS_FILE, BREAKDOWN_FILE, METRICS_FILE]
    if result.threshold_text is not None:
        names.append(THRESHOLD_FILE)
    table = gap_completion.gaps_table(result)
    with atomic.atomic_paths(*(results_dir / n for n in names),
                             remove=superseded(results_dir, tuple(names))) as tmps:
        files = dict(zip(names, tmps))
        pq.write_table(table, files[GAPS_FILE])
        files[BREAKDOWN_FILE].write_text(result.breakdown, encoding="utf-8")
        files[METRICS_FILE].write_text(gap_completion.metrics_json(result), encoding="utf-8")
        if THRESHOLD_FILE in files:
            files[THRESHOLD_FILE].write_text(result.threshold_text, encoding="utf-8")


def run(cfg: Mapping) -> int:
    from tao_aoi import gap_analysis as ga
    from tao_aoi import gap_completion

    cfg = config(cfg)
    inputs = load(cfg)
    results_dir = Path(cfg.results_dir)
    try:
        result = gap_completion.compute(inputs)
    except ga.UnreachableKPI as exc:
        print(f"ValueError: {exc}")  # the container's text, so agents and hooks read one thing
        gap_completion.write_unreachable(inputs, results_dir)
        raise RunFailed(f"{exc} See {results_dir / UNREACHABLE_FILE}") from None
    result = gap_completion.with_image_checks(result)
    write(result, results_dir)
    print(gap_completion.summary(result, results_dir))
    sys.stdout.flush()
    return 0
