"""Loading the artifacts a report cites, from its results folder, for the report checks.

Every loader reports what is missing or unusable into ``problems`` (each with what to fix) and
hands back what it could read, or ``None``. Files are read within the results folder only: a
link that leads outside it, or a FIFO, is never read. Standard library only.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import settle
from . import report_rules as rr

# What each parquet artifact must hold: (required columns, must have rows). Text artifacts
# (the other names in ``report_rules.*_ARTIFACTS``) must exist and be non-empty.
_PARQUET_NEEDS = {
    "kpi_gaps.parquet": (("filepath", "label", "siamese_score", "weakness"), True),
    "mining_gaps.parquet": (("filepath",), False),
    "anomalygen_gaps.parquet": (("filepath",), False),
    "target_embeddings.parquet": (("embedding",), True),
    "source_embeddings.parquet": (("embedding",), True),
    "mined.parquet": (("filepath",), False),
}


def read_within(folder: Path, name: str) -> str:
    """A results-folder file's text; never through a link that leads outside the folder
    (``PathEscape``), and never a FIFO or other non-regular file (``OSError``)."""
    from tao_aoi.paths import read_text_within  # standard library only

    return read_text_within(folder / name, folder, what=name)


def _present(folder: Path, name: str, problems: list[str], fix: str) -> bool:
    if (folder / name).is_file():
        return True
    problems.append(f"`{name}` is missing from the results folder{fix}.")
    return False


def text_artifact(folder: Path, name: str, problems: list[str], fix: str) -> str | None:
    from tao_aoi.paths import PathEscape

    if not _present(folder, name, problems, fix):
        return None
    try:
        text = read_within(folder, name)
    except PathEscape:
        problems.append(f"`{name}` is a link that leads outside the results folder; it was "
                        f"not read{fix}.")
        return None
    except OSError:
        problems.append(f"`{name}` cannot be read as a regular file{fix}.")
        return None
    if not text.strip():
        problems.append(f"`{name}` is empty{fix}.")
        return None
    return text


def _parquet_artifact(folder: Path, name: str, problems: list[str], fix: str):
    """The parquet footer (``parquet_meta.ParquetMeta``), checked against ``_PARQUET_NEEDS``."""
    from .parquet_meta import ParquetMetaError, read_meta

    columns, need_rows = _PARQUET_NEEDS[name]
    if not _present(folder, name, problems, fix):
        return None
    try:
        meta = read_meta(folder / name)
    except (OSError, ParquetMetaError) as exc:
        problems.append(f"`{name}` is not a readable parquet file ({exc}){fix}.")
        return None
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        problems.append(f"`{name}` lacks column(s) {', '.join(missing)} (has: "
                        f"{', '.join(meta.columns)}){fix}.")
    if need_rows and meta.num_rows <= 0:
        problems.append(f"`{name}` has no rows{fix}.")
    return meta


def load_artifacts(folder: Path, names: tuple[str, ...], problems: list[str], fix: str) -> dict:
    """Check a run's artifacts in order; name -> parquet footer or file text (None if unusable)."""
    settle(folder)  # a set a killed writer committed is finished before it is judged
    return {name: _parquet_artifact(folder, name, problems, fix) if name.endswith(".parquet")
            else text_artifact(folder, name, problems, fix) for name in names}


# ---------------------------------------------------------------- RCA: threshold and metrics

@dataclass(frozen=True)
class Threshold:
    """The run's operating threshold: its value, its text as the run wrote it, and where."""
    value: float
    printed: str
    source: str


@dataclass(frozen=True)
class RcaRun:
    """The gap analysis behind an RCA report, as far as it could be read."""
    threshold: Threshold | None
    metrics: dict | None


_RCA_FIX = ": rerun `gap_analysis vcn_aoi` into this folder before writing the report"


def load_rca_run(folder: Path, problems: list[str]) -> RcaRun:
    """The gap analysis behind an RCA report: its artifacts checked, threshold and metrics read."""
    artifacts = load_artifacts(folder, rr.RCA_ARTIFACTS, problems, _RCA_FIX)
    # threshold.txt exists only after a sweep; a pinned threshold lives in metrics.json alone
    swept = (folder / rr.THRESHOLD_FILE).exists()
    swept_token = _swept_threshold(folder, problems) if swept else None
    metrics = _metrics(artifacts[rr.METRICS_FILE], problems)
    if metrics is None:
        threshold = _file_threshold(swept_token, pinned=False)
        return RcaRun(threshold, None)
    _check_metrics_fields(metrics, problems)
    pinned = metrics.get("threshold_mode") == "pinned"
    if pinned and isinstance(metrics.get("threshold"), (int, float)):
        # a threshold.txt next to a pinned run is stale (an earlier sweep: the container
        # does not remove it); the pinned value lives in metrics.json alone
        value = float(metrics["threshold"])
        return RcaRun(Threshold(value, repr(value), rr.METRICS_FILE), metrics)
    threshold = _file_threshold(swept_token, pinned)
    if threshold is None and not pinned and not swept:
        problems.append(f"`{rr.THRESHOLD_FILE}` is missing (the threshold was swept){_RCA_FIX}.")
    return RcaRun(threshold, metrics)


def _swept_threshold(folder: Path, problems: list[str]) -> str | None:
    """threshold.txt's one token when it is one finite float, else ``None`` (and a problem)."""
    text = text_artifact(folder, rr.THRESHOLD_FILE, problems, _RCA_FIX)
    if text is None:
        return None
    tokens = text.split()
    try:
        if len(tokens) != 1 or not math.isfinite(float(tokens[0])):
            raise ValueError
    except ValueError:
        # the content is not quoted: a stray file could hold anything
        problems.append(f"`threshold.txt` must hold one finite float (it holds "
                        f"{len(tokens)} token(s), not one finite number){_RCA_FIX}.")
        return None
    return tokens[0]


def _file_threshold(token: str | None, pinned: bool) -> Threshold | None:
    if token is None:
        return None
    value = float(token)
    # a pinned run names metrics.json as the source even when only threshold.txt gives a number
    if pinned:
        return Threshold(value, repr(value), rr.METRICS_FILE)
    return Threshold(value, token, rr.THRESHOLD_FILE)


def _metrics(text: str | None, problems: list[str]) -> dict | None:
    if text is None:
        return None
    try:
        metrics = json.loads(text)
        if not isinstance(metrics, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        problems.append(f"`metrics.json` is not a JSON object ({exc}){_RCA_FIX}.")
        return None
    return metrics


def _check_metrics_fields(metrics: dict, problems: list[str]) -> None:
    bad = [k for k in ("precision", "recall", "f1")
           if not isinstance(metrics.get(k), (int, float)) or isinstance(metrics.get(k), bool)]
    cm = metrics.get("confusion_matrix")
    if not isinstance(cm, dict) or any(not isinstance(cm.get(k), int) for k in ("tp", "fp", "tn", "fn")):
        bad.append("confusion_matrix{tp,fp,tn,fn}")
    if not isinstance(metrics.get("per_label"), dict) or not metrics.get("per_label"):
        bad.append("per_label")
    if bad:
        problems.append(f"`metrics.json` lacks or malforms {', '.join(bad)}{_RCA_FIX}.")


# ---------------------------------------------------------------- RCA: labels, spot check, iteration

def _simple_yaml_value(text: str, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        m = re.search(rf"^\s*{re.escape(key)}\s*:\s*(.+?)\s*$", text, re.M)
        if m:
            value = re.sub(r"\s+#.*$", "", m.group(1)).strip().strip("'\"")
            if value and value not in ("???", "null", "~"):
                return value
    return None


def _csv_labels(csv_path: Path) -> list[str] | None:
    """The distinct non-empty labels of an inference CSV in first-seen order; ``None`` when it
    has no ``label`` column."""
    import csv

    labels: dict[str, None] = {}
    with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if "label" not in header:
            return None
        column = header.index("label")
        for row in reader:
            if column < len(row) and row[column].strip():
                labels.setdefault(row[column].strip())
    return list(labels)


def _inference_csvs(folder: Path, metrics: dict | None, cwd: str | None):
    """Where the run's inference.csv may be: metrics.json's keys, then the spec's, each
    relative to the results folder, then to the working directory."""
    candidates: list[str] = []
    for key in ("inference_results_dir", "inference_csv"):
        value = (metrics or {}).get(key)
        if isinstance(value, str) and value:
            candidates.append(value)
    spec = folder / "vcn_aoi_spec.yaml"
    if spec.is_file():
        value = _simple_yaml_value(spec.read_text(encoding="utf-8", errors="replace"),
                                   ("inference_results_dir", "inference_csv"))
        if value:
            candidates.append(value)
    for value in candidates:
        base = Path(os.path.expandvars(os.path.expanduser(value)))
        roots = [base] if base.is_absolute() else [folder / base, Path(cwd or os.getcwd()) / base]
        for root in roots:
            yield root if root.suffix.lower() == ".csv" else root / "inference.csv"


def ground_truth_labels(folder: Path, metrics: dict | None,
                        cwd: str | None = None) -> tuple[list[str], str]:
    """Labels of the run's inference.csv (as written) and where they came from."""
    for csv_path in _inference_csvs(folder, metrics, cwd):
        if not csv_path.is_file():
            continue
        labels = _csv_labels(csv_path)
        if labels is not None:
            return labels, str(csv_path)
    per_label = (metrics or {}).get("per_label")
    if isinstance(per_label, dict):
        return [str(k) for k in per_label], "metrics.json per_label"
    return [], ""


def spot_check_count(folder: Path) -> int:
    """10, unless the spot check recorded that a class had fewer than 5 weak samples."""
    try:
        picked = json.loads(read_within(folder, f"{rr.RCA_IMAGES_DIR}/{rr.RCA_SPOT_CHECK_JSON}"))
        count = len(picked["samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return rr.RCA_SPOT_CHECK_COUNT
    return count if 0 < count <= rr.RCA_SPOT_CHECK_COUNT else rr.RCA_SPOT_CHECK_COUNT


def iteration_numbers(folder: Path) -> tuple[dict, dict[str, float]]:
    """``(counts, FAR by side)`` from iteration_compare.json; raises ``OSError``/``ValueError``/
    ``KeyError``/``TypeError`` when it is missing or malformed."""
    data = json.loads(read_within(folder, rr.RCA_ITERATION_JSON))
    return data["counts"], {side: float(data[side]["far"]) for side in ("before", "after")}


# ---------------------------------------------------------------- mining

def encoder_identity(meta, name: str, problems: list[str]) -> dict | None:
    """The encoder an embedding parquet was made with (its schema metadata), or a problem."""
    if meta is None:
        return None
    raw = meta.key_value_metadata.get(rr.ENCODER_METADATA_KEY)
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        problems.append(f"`{name}` carries no encoder identity (`{rr.ENCODER_METADATA_KEY}` "
                        "metadata): re-embed it with `embedding image_embeddings` from the shared "
                        "embedding spec.")
        return None
    return value
