"""Did the retrain fix the gaps? Join two gap analyses per sample (issue 12).

``scripts/compare_iterations.py BEFORE_RCA AFTER_RCA [--out DIR]``: BEFORE_RCA and AFTER_RCA
are two gap-analysis results folders (``<exp>/rca_results/<ts>/``). Each folder's
``metrics.json`` names the inference CSV its run read (``inference_csv``) and the threshold
it chose; both CSVs are read again (validated like the gap analysis reads them) and every
sample, keyed by ``(input_path, object_name)``, present in both is put in one bucket:

* ``fixed``: misclassified before, right after;
* ``regressed``: right before, misclassified after;
* ``still_misclassified``: misclassified in both;

each run judged by its OWN threshold and its OWN label (a sample relabeled between the two
iterations is judged by the label each CSV gives it; those are listed under ``relabeled``).
Misclassified is the gap analysis' rule: PASS iff ``label.strip().upper() == "PASS"``, predict
NO_PASS iff ``score > threshold``.

Also: ``before`` / ``after`` metrics (threshold, recall, far, f1, precision and the confusion
matrix over the whole CSV, computed exactly as the gap analysis computes them), the new model
at the OLD threshold, the same three on the shared samples only, per-label deltas, the samples
present in one CSV only (counted; listed in ``iteration_only_in_one.csv``) and, when last
round's routing left a ``mining_gaps.parquet`` (``BEFORE_RCA/routing_results/<ts>/``, the
newest, or ``--routed``), whether the samples sent to mining improved.

Decisions:

* a ``(input_path, object_name)`` key that occurs more than once in one CSV is refused (exit
  2): a per-sample join cannot say which of the rows is "the" sample; dedupe the CSV first;
* no shared sample at all (different experiments) is refused (exit 2);
* the CSV is checked against the run's ``metrics.json`` (row count and confusion matrix at the
  run's threshold): a CSV overwritten since the gap analysis is refused (exit 2);
* the two folders may be the same experiment re-run; the same folder twice is refused.

Writes, all or nothing, into ``--out`` (default AFTER_RCA): ``iteration_compare.json``,
``iteration_compare.md`` (the report section "Change Since Last Iteration"),
``iteration_compare.png`` and ``iteration_only_in_one.csv``.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from tao_aoi import atomic
from tao_aoi import gap_analysis as ga
from tao_aoi.cli import UsageError, one_line
from tao_aoi.contract import (BREAKDOWN_FILE, GAPS_FILE, METRICS_FILE, RCA_ITERATION_JSON,
                              RCA_ITERATION_SECTION, ROUTING_ARTIFACTS, UNREACHABLE_FILE)
from tao_aoi.labels import normalize_label

JSON_NAME = RCA_ITERATION_JSON
MD_NAME = "iteration_compare.md"
PLOT_NAME = "iteration_compare.png"
ONLY_IN_ONE_NAME = "iteration_only_in_one.csv"
OUTPUT_NAMES = (JSON_NAME, MD_NAME, PLOT_NAME, ONLY_IN_ONE_NAME)
SECTION_TITLE = RCA_ITERATION_SECTION
ROUTING_DIR = "routing_results"
MINING_GAPS = ROUTING_ARTIFACTS[0]
KEYS = ("input_path", "object_name")
METRIC_KEYS = ("threshold", "recall", "far", "f1", "precision")
MD_LIST_ROWS = 10  # rows of each sample list shown in the Markdown (the JSON has them all)
_SHOW = 3


# ----------------------------------------------------------------------------- load

@dataclass(frozen=True)
class Run:
    """One gap-analysis run: its folder, threshold and the rows of its inference CSV."""

    folder: Path
    csv_path: Path
    threshold: float
    metrics: dict
    input_path: list[str]
    object_name: list[str]
    label: list[str]          # as written in the CSV (str of the value)
    scores: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.scores.size)

    @cached_property
    def norm(self) -> list[str]:
        return [normalize_label(v) for v in self.label]

    @cached_property
    def positive(self) -> np.ndarray:
        return np.array([n != "PASS" for n in self.norm], dtype=bool)

    @cached_property
    def wrong(self) -> np.ndarray:
        return (self.scores > self.threshold) != self.positive

    @cached_property
    def weakness(self) -> np.ndarray:
        return ga.weakness(self.scores, self.positive, self.threshold)

    @cached_property
    def own_metrics(self) -> dict:
        """The gap analysis' numbers over the whole CSV at the run's own threshold."""
        return _metrics(self.scores, self.positive, self.threshold)


def _keys_text(keys: Sequence[tuple[str, str]]) -> str:
    shown = ", ".join(f"{ip}/{on}" for ip, on in keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def _read_metrics(folder: Path, role: str) -> dict:
    if not folder.is_dir():
        raise UsageError(f"{role} {folder} is not a folder (pass a gap-analysis results folder, "
                         f"<exp>/rca_results/<ts>/)")
    if (folder / UNREACHABLE_FILE).is_file() and not (folder / METRICS_FILE).is_file():
        raise UsageError(f"{role} {folder} holds {UNREACHABLE_FILE}: that run chose no threshold, "
                         f"so its samples cannot be judged; compare a run that reached its KPI")
    missing = [n for n in (METRICS_FILE, GAPS_FILE, BREAKDOWN_FILE) if not (folder / n).is_file()]
    if missing:
        raise UsageError(f"{role} {folder} is not a gap-analysis result (no {', '.join(missing)}); "
                         f"pass the <exp>/rca_results/<ts>/ folder the gap analysis wrote")
    try:
        m = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{role} {folder / METRICS_FILE} is not readable JSON: "
                         f"{one_line(exc, 120)}") from None
    if not isinstance(m, dict):
        raise UsageError(f"{role} {folder / METRICS_FILE} is not a JSON object")
    t = m.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(float(t)):
        raise UsageError(f"{role} {folder / METRICS_FILE} has no finite threshold "
                         f"(threshold={t!r}); rerun the gap analysis")
    if not isinstance(m.get("inference_csv"), str) or not m["inference_csv"]:
        raise UsageError(f"{role} {folder / METRICS_FILE} does not name its inference_csv "
                         f"(written by an older bank?); rerun the gap analysis, or pass "
                         f"--{role}-csv")
    return m


def _check_against_metrics(run: Run, role: str) -> None:
    """The CSV must still be the one the run read: same rows, same confusion matrix."""
    m = run.metrics
    where = f"{role} {run.csv_path}"
    n = m.get("n_rows")
    if isinstance(n, int) and n != run.n_rows:
        raise UsageError(f"{where} has {run.n_rows} rows but the gap analysis in {run.folder} read "
                         f"{n}: the CSV changed since that run; rerun its gap analysis")
    cm = m.get("confusion_matrix")
    if isinstance(cm, dict) and run.n_rows:
        mine = run.own_metrics["confusion_matrix"]
        if any(isinstance(cm.get(k), int) and cm[k] != mine[k] for k in mine):
            raise UsageError(f"{where} gives confusion matrix {mine} at threshold {run.threshold!r} "
                             f"but {run.folder / METRICS_FILE} says {cm}: the CSV changed since "
                             f"that run; rerun its gap analysis")


def _texts(series) -> list[str]:
    """``str(value)`` of every cell, as the gap analysis writes them (Arrow-backed columns are
    converted in one call: iterating them cell by cell is slow on large CSVs)."""
    import pyarrow as pa

    try:
        values = pa.array(series).to_pylist()
    except (pa.ArrowException, TypeError, ValueError):
        values = series.tolist()
    return [v if isinstance(v, str) else str(v) for v in values]


def load_run(folder: str | Path, role: str, csv_override: str | Path | None = None) -> Run:
    """Validate a results folder and read the inference CSV its run read."""
    from tao_aoi.data_services.gap_analysis_vcn_aoi import read_inference

    folder = Path(folder)
    atomic.settle(folder)  # finish a set a killed run committed before reading it
    m = _read_metrics(folder, role)
    path = Path(csv_override) if csv_override else Path(m["inference_csv"])
    if not path.is_file():
        hint = "" if csv_override else f" (moved? pass --{role}-csv PATH)"
        raise UsageError(f"{role} inference CSV {path} named by {folder / METRICS_FILE} does not "
                         f"exist{hint}")
    df, scores, _, _ = read_inference(path)
    run = Run(folder, path, float(m["threshold"]), m, _texts(df["input_path"]),
              _texts(df["object_name"]), _texts(df["label"]), np.asarray(scores, dtype=np.float64))
    _check_against_metrics(run, role)
    import pandas as pd

    keys = pd.DataFrame({"i": run.input_path, "o": run.object_name})
    repeated = keys[keys.duplicated(keep="first")].drop_duplicates()
    dupes = list(zip(repeated["i"].tolist(), repeated["o"].tolist()))
    if dupes:
        raise UsageError(f"{role} {path} repeats {len(dupes)} (input_path, object_name) key(s): "
                         f"{_keys_text(dupes)}; a per-sample comparison needs one row per sample "
                         f"(dedupe the CSV and rerun its gap analysis)")
    return run


def find_routed(before_folder: Path) -> Path | None:
    """The newest ``routing_results/<ts>/mining_gaps.parquet`` under the BEFORE folder."""
    root = before_folder / ROUTING_DIR
    if not root.is_dir():
        return None
    found = sorted(p for p in root.glob(f"*/{MINING_GAPS}") if p.is_file())
    return found[-1] if found else None


def load_routed(path: str | Path) -> list[tuple[str, str]]:
    """Distinct (input_path, object_name) keys of a routing parquet, in first-seen order."""
    from tao_aoi.parquet_tools import read_parquet

    df = read_parquet(path, required=KEYS)
    keys = zip((str(v) for v in df["input_path"].tolist()),
               (str(v) for v in df["object_name"].tolist()))
    return list(dict.fromkeys(keys))


# ----------------------------------------------------------------------------- compute (pure)

def _metrics(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """The gap analysis' numbers at a threshold (same expressions, float for float)."""
    if scores.size == 0:
        return {"threshold": float(threshold), "recall": None, "far": None, "f1": None,
                "precision": None, "confusion_matrix": {"tp": 0, "fp": 0, "tn": 0, "fn": 0},
                "n_rows": 0}
    p = ga.pinned_point(scores, positive, threshold, 1.0)
    return {"threshold": float(threshold), "recall": p.recall, "far": p.far, "f1": p.f1,
            "precision": p.precision, "confusion_matrix": p.confusion_matrix,
            "n_rows": int(scores.size)}


def _delta(a, b):
    return None if a is None or b is None else b - a


def _status(wrong_before: bool, wrong_after: bool) -> str | None:
    """Which bucket a shared sample falls in; None when it is right in both runs."""
    return ("still_misclassified" if wrong_before and wrong_after else "fixed" if wrong_before
            else "regressed" if wrong_after else None)


class _Join:
    """The two runs' rows joined by (input_path, object_name)."""

    def __init__(self, before: Run, after: Run):
        self.before, self.after = before, after
        self.b_index = {k: i for i, k in enumerate(zip(before.input_path, before.object_name))}
        self.a_index = {k: i for i, k in enumerate(zip(after.input_path, after.object_name))}
        self.shared = [k for k in self.a_index if k in self.b_index]  # after-CSV order
        if not self.shared:
            raise UsageError(f"no sample (input_path, object_name) is in both {before.csv_path} "
                             f"and {after.csv_path}: different experiments? compare two "
                             f"iterations of the same test set")
        self.bi = np.array([self.b_index[k] for k in self.shared], dtype=np.int64)
        self.ai = np.array([self.a_index[k] for k in self.shared], dtype=np.int64)

    def sample(self, k, i: int, j: int) -> dict:
        return {"input_path": k[0], "object_name": k[1], "label": self.after.label[j],
                "score_before": float(self.before.scores[i]),
                "score_after": float(self.after.scores[j])}

    def buckets(self) -> tuple[dict[str, list], list[dict], dict[str, dict[str, int]]]:
        """(fixed / regressed / still_misclassified samples, worst first; relabeled samples;
        label -> bucket counts, by the label after)."""
        before, after = self.before, self.after
        buckets: dict[str, list] = {"fixed": [], "regressed": [], "still_misclassified": []}
        order_key: dict[str, list] = {name: [] for name in buckets}
        relabeled = []
        moves_by_label: dict[str, dict[str, int]] = {}
        for k, i, j in zip(self.shared, self.bi.tolist(), self.ai.tolist()):
            if before.norm[i] != after.norm[j]:
                relabeled.append({"input_path": k[0], "object_name": k[1],
                                  "label_before": before.label[i], "label_after": after.label[j]})
            name = _status(bool(before.wrong[i]), bool(after.wrong[j]))
            if name is None:
                continue
            buckets[name].append(self.sample(k, i, j))
            # worst first: fixed by how wrong it was, the others by how wrong it is now
            weak = before.weakness[i] if name == "fixed" else after.weakness[j]
            order_key[name].append((-weak, k))
            moves = moves_by_label.setdefault(after.norm[j], {n: 0 for n in buckets})
            moves[name] += 1
        for name, rows in buckets.items():
            order = sorted(range(len(rows)), key=lambda r: order_key[name][r])
            buckets[name] = [rows[r] for r in order]
        return buckets, relabeled, moves_by_label

    def only_in_one(self) -> tuple[list, list, list[dict]]:
        """(keys only before, keys only after, their rows for iteration_only_in_one.csv)."""
        only_before = [k for k in self.b_index if k not in self.a_index]
        only_after = [k for k in self.a_index if k not in self.b_index]

        def rows(run: Run, index: dict, keys, side: str) -> list[dict]:
            return [{"side": side, "input_path": k[0], "object_name": k[1],
                     "label": run.label[index[k]], "score": float(run.scores[index[k]]),
                     "misclassified": bool(run.wrong[index[k]])} for k in keys]
        return only_before, only_after, (rows(self.before, self.b_index, only_before, "before")
                                         + rows(self.after, self.a_index, only_after, "after"))


def _per_label(before: Run, after: Run, moves_by_label: dict[str, dict[str, int]]) -> dict:
    """Per normalised label: rows and misclassified rows in each run, and the bucket counts."""
    per_label = {}
    no_moves = {n: 0 for n in ("fixed", "regressed", "still_misclassified")}
    b_names, a_names = np.array(before.norm, dtype=object), np.array(after.norm, dtype=object)
    for name in sorted(set(before.norm) | set(after.norm)):
        in_b, in_a = b_names == name, a_names == name
        tb, ta = int(in_b.sum()), int(in_a.sum())
        mb, ma = int((in_b & before.wrong).sum()), int((in_a & after.wrong).sum())
        per_label[name] = {
            "total_before": tb, "total_after": ta,
            "misclassified_before": mb, "misclassified_after": ma,
            "delta_misclassified": ma - mb,
            "error_rate_before": mb / tb if tb else None,
            "error_rate_after": ma / ta if ta else None,
            **moves_by_label.get(name, no_moves),
        }
    return per_label


def compare(before: Run, after: Run, routed: list[tuple[str, str]] | None = None,
            routed_source: str | None = None) -> dict:
    """Everything ``iteration_compare.json`` holds. Raises UsageError when nothing is shared."""
    join = _Join(before, after)
    bi, ai = join.bi, join.ai
    buckets, relabeled, moves_by_label = join.buckets()
    old_t = before.threshold
    on_shared = {
        "before": _metrics(before.scores[bi], before.positive[bi], before.threshold),
        "after": _metrics(after.scores[ai], after.positive[ai], after.threshold),
        "after_at_before_threshold": _metrics(after.scores[ai], after.positive[ai], old_t),
    }
    only_before, only_after, only = join.only_in_one()
    summary = (*METRIC_KEYS, "confusion_matrix", "n_rows")
    result = {
        "before_rca": str(before.folder.resolve()),
        "after_rca": str(after.folder.resolve()),
        "before_csv": str(before.csv_path.resolve()),
        "after_csv": str(after.csv_path.resolve()),
        "rule": "PASS iff label.strip().upper() == 'PASS'; predict NO_PASS iff score > threshold; "
                "each run judged by its own threshold and its own label",
        "before": {k: before.own_metrics[k] for k in summary},
        "after": {k: after.own_metrics[k] for k in summary},
        "after_at_before_threshold": _metrics(after.scores, after.positive, old_t),
        "delta": {k: _delta(before.own_metrics[k], after.own_metrics[k]) for k in METRIC_KEYS},
        "on_shared_samples": on_shared,
        "counts": {"shared": len(join.shared), "fixed": len(buckets["fixed"]),
                   "regressed": len(buckets["regressed"]),
                   "still_misclassified": len(buckets["still_misclassified"]),
                   "relabeled": len(relabeled),
                   "only_in_before": len(only_before), "only_in_after": len(only_after)},
        **buckets,
        "relabeled": relabeled,
        "per_label": _per_label(before, after, moves_by_label),
        "only_in_one": {"only_in_before": len(only_before), "only_in_after": len(only_after),
                        "file": ONLY_IN_ONE_NAME},
        "routed_to_mining": _routed(join, routed, routed_source),
    }
    return {"result": result, "only_rows": only, "plot": _plot_data(before, after, bi, ai)}


def _routed(join: _Join, routed: list[tuple[str, str]] | None, source: str | None) -> dict:
    if routed is None:
        return {"available": False, "source": None,
                "reason": f"no {ROUTING_DIR}/<ts>/{MINING_GAPS} under the BEFORE folder and no "
                          f"--routed given"}
    before, after = join.before, join.after
    samples = []
    missing = 0
    for k in routed:
        if k not in join.b_index or k not in join.a_index:
            missing += 1
            continue
        i, j = join.b_index[k], join.a_index[k]
        status = _status(bool(before.wrong[i]), bool(after.wrong[j])) or "right_both"
        samples.append({**join.sample(k, i, j),
                        "weakness_before": float(before.weakness[i]),
                        "weakness_after": float(after.weakness[j]), "status": status})
    n = len(samples)
    count = {s: sum(1 for r in samples if r["status"] == s)
             for s in ("fixed", "regressed", "still_misclassified", "right_both")}
    mean_b = sum(r["weakness_before"] for r in samples) / n if n else None
    mean_a = sum(r["weakness_after"] for r in samples) / n if n else None
    lower = sum(1 for r in samples if r["weakness_after"] < r["weakness_before"])
    mis_b = count["fixed"] + count["still_misclassified"]
    mis_a = count["regressed"] + count["still_misclassified"]
    return {"available": True, "source": source, "routed": len(routed),
            "in_both": n, "not_in_both": missing, **count,
            "misclassified_before": mis_b, "misclassified_after": mis_a,
            "weakness_lower_after": lower,
            "mean_weakness_before": mean_b, "mean_weakness_after": mean_a,
            # improved: fewer of them misclassified, or as many but further from the wrong side
            "improved": bool(n) and (mis_a < mis_b or (mis_a == mis_b and mean_a < mean_b)),
            "samples": samples}


def _plot_data(before: Run, after: Run, bi: np.ndarray, ai: np.ndarray) -> dict:
    return {"x": before.scores[bi], "y": after.scores[ai],
            "label": [after.norm[j] for j in ai.tolist()],
            "wrong_before": before.wrong[bi], "wrong_after": after.wrong[ai],
            "t_before": before.threshold, "t_after": after.threshold}


# ----------------------------------------------------------------------------- render

def _f(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{float(x):.{digits}f}"


def _signed(x, digits: int = 4) -> str:
    return "-" if x is None else f"{float(x):+.{digits}f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: dict, heading: str = "##") -> str:
    """The report section; every number is the JSON's, formatted with 4 decimals."""
    c = result["counts"]
    lines = [f"{heading} {SECTION_TITLE}", ""]
    lines.append(
        f"Compared with the previous gap analysis (`{result['before_rca']}`), each run judged by "
        f"its own threshold: of the {c['shared']} samples in both inference CSVs, "
        f"**{c['fixed']} fixed**, **{c['regressed']} regressed** and "
        f"**{c['still_misclassified']} still misclassified**"
        + (f"; {c['relabeled']} were relabeled between the two" if c["relabeled"] else "")
        + f". {c['only_in_before']} samples are only in the previous CSV and "
          f"{c['only_in_after']} only in the new one (listed in `{ONLY_IN_ONE_NAME}`).")
    lines += _metrics_rows(result) + _per_label_rows(result) + _sample_lists(result)
    lines += ["", _routed_line(result["routed_to_mining"])]
    lines += ["", f"![Score before vs after per sample]({PLOT_NAME})", ""]
    return "\n".join(lines)


def _metrics_rows(result: dict) -> list[str]:
    b, a, o = result["before"], result["after"], result["after_at_before_threshold"]
    lines = ["", "| Metric | Before | After | After at the old threshold | Change (after - before) |",
             "|---|---|---|---|---|"]
    for k in METRIC_KEYS:
        d = 6 if k == "threshold" else 4
        lines.append(f"| {k} | {_f(b[k], d)} | {_f(a[k], d)} | {_f(o[k], d)} | "
                     f"{_signed(result['delta'][k], d)} |")
    cmb, cma, cmo = b["confusion_matrix"], a["confusion_matrix"], o["confusion_matrix"]
    for k in ("tp", "fp", "tn", "fn"):
        lines.append(f"| {k} | {cmb[k]} | {cma[k]} | {cmo[k]} | {cma[k] - cmb[k]:+d} |")
    return lines


def _per_label_rows(result: dict) -> list[str]:
    lines = ["", "| Label | Misclassified before | Misclassified after | Change | Fixed | "
             "Regressed | Still misclassified |", "|---|---|---|---|---|---|---|"]
    for name, r in result["per_label"].items():
        lines.append(f"| {_cell(name)} | {r['misclassified_before']} / {r['total_before']} | "
                     f"{r['misclassified_after']} / {r['total_after']} | "
                     f"{r['delta_misclassified']:+d} | {r['fixed']} | {r['regressed']} | "
                     f"{r['still_misclassified']} |")
    return lines


def _sample_lists(result: dict) -> list[str]:
    """The first ``MD_LIST_ROWS`` samples of each non-empty bucket."""
    lines: list[str] = []
    for name, title in (("fixed", "Fixed"), ("regressed", "Regressed"),
                        ("still_misclassified", "Still misclassified")):
        rows = result[name]
        if not rows:
            continue
        more = (f" (first {MD_LIST_ROWS} of {len(rows)}; all in `{JSON_NAME}`)"
                if len(rows) > MD_LIST_ROWS else "")
        lines += ["", f"{title}{more}:", "", "| Sample | Label | Score before | Score after |",
                  "|---|---|---|---|"]
        for r in rows[:MD_LIST_ROWS]:
            lines.append(f"| `{_cell(r['input_path'])}/{_cell(r['object_name'])}` | "
                         f"{_cell(r['label'])} | {_f(r['score_before'])} | {_f(r['score_after'])} |")
    return lines


def _routed_line(rt: dict) -> str:
    if not rt["available"]:
        return f"Samples routed to mining last round: not known ({rt['reason']})."
    verdict = "improved" if rt["improved"] else "did not improve"
    return (f"Samples routed to mining last round (`{rt['source']}`): {rt['routed']} routed, "
            f"{rt['in_both']} in both CSVs; they **{verdict}**: misclassified "
            f"{rt['misclassified_before']} -> {rt['misclassified_after']} ({rt['fixed']} fixed, "
            f"{rt['regressed']} regressed, {rt['still_misclassified']} still misclassified), "
            f"mean weakness {_f(rt['mean_weakness_before'])} -> {_f(rt['mean_weakness_after'])}, "
            f"{rt['weakness_lower_after']} of {rt['in_both']} further from the wrong side.")


def plot(data: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    labels = np.asarray(data["label"], dtype=object)
    names = list(dict.fromkeys(sorted(labels.tolist(), key=lambda s: (s != "PASS", s))))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(9.5, 6.5), dpi=110)
    wb, wa = np.asarray(data["wrong_before"], bool), np.asarray(data["wrong_after"], bool)
    for n, name in enumerate(names):
        sel = labels == name
        ax.scatter(x[sel], y[sel], s=14, color=cmap(n % cmap.N), alpha=0.75, label=name,
                   linewidths=0, rasterized=True)
    for mask, marker, colour, text in ((wb & ~wa, "o", "green", "fixed"),
                                       (~wb & wa, "o", "red", "regressed"),
                                       (wb & wa, "s", "black", "still misclassified")):
        if mask.any():
            ax.scatter(x[mask], y[mask], s=60, facecolors="none", edgecolors=colour,
                       marker=marker, linewidths=1.2, label=f"{text} ({int(mask.sum())})",
                       rasterized=True)
    ax.axvline(data["t_before"], color="grey", linestyle="--", linewidth=1,
               label=f"threshold before {data['t_before']:.4g}")
    ax.axhline(data["t_after"], color="purple", linestyle=":", linewidth=1.2,
               label=f"threshold after {data['t_after']:.4g}")
    ax.set_xlabel("score before (previous model)")
    ax.set_ylabel("score after (new model)")
    ax.set_title("Per-sample score, previous vs new model")
    # outside the axes: loc="best" scans every point, minutes on a large test set
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    fig.savefig(dest, format="png")
    plt.close(fig)


def write(out: Path, computed: dict) -> list[Path]:
    """All four files or none."""
    from tao_aoi import atomic

    result = computed["result"]
    dests = [out / n for n in OUTPUT_NAMES]
    with atomic.atomic_paths(*dests) as (tj, tm, tp, tc):
        tj.write_text(json.dumps(ga.json_safe(result), indent=2, allow_nan=False) + "\n",
                      encoding="utf-8")
        tm.write_text(markdown(result), encoding="utf-8")
        plot(computed["plot"], tp)
        with open(tc, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["side", "input_path", "object_name", "label",
                                               "score", "misclassified"])
            w.writeheader()
            w.writerows(computed["only_rows"])
    return dests


# ----------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from tao_aoi.cli import OneLineParser

    p = OneLineParser(
        prog="compare_iterations.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare two gap analyses of the same test set (previous model, new model) "
                    "per sample: fixed, regressed, still misclassified, metrics before/after "
                    "and the new model at the old threshold, per-label deltas, samples in one "
                    "CSV only, and whether last round's mining-routed samples improved.",
        epilog="example:\n  python3 scripts/compare_iterations.py exp_v1/rca_results/2025-01-10_101500 "
               "exp_v2/rca_results/2025-02-01_090000\n\nwrites iteration_compare.json, "
               "iteration_compare.md (section 'Change Since Last Iteration'), "
               "iteration_compare.png and iteration_only_in_one.csv into --out.")
    p.add_argument("before", help="previous iteration's results folder (<exp>/rca_results/<ts>/)")
    p.add_argument("after", help="new iteration's results folder (<exp>/rca_results/<ts>/)")
    p.add_argument("--out", help="folder to write into (default: AFTER)")
    p.add_argument("--routed", help="mining_gaps.parquet of last round's routing (default: the "
                                    f"newest BEFORE/{ROUTING_DIR}/<ts>/{MINING_GAPS}, if any)")
    p.add_argument("--before-csv", help="the previous inference CSV, when it moved since its run")
    p.add_argument("--after-csv", help="the new inference CSV, when it moved since its run")
    args = p.parse_args(argv)

    before_dir, after_dir = Path(args.before), Path(args.after)
    if before_dir.exists() and after_dir.exists() and before_dir.resolve() == after_dir.resolve():
        raise UsageError(f"BEFORE and AFTER are the same folder ({before_dir}); pass the previous "
                         f"and the new iteration's results")
    out = Path(args.out) if args.out else after_dir
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    before = load_run(before_dir, "before", args.before_csv)
    after = load_run(after_dir, "after", args.after_csv)
    routed_path = Path(args.routed) if args.routed else find_routed(before_dir)
    if args.routed and not routed_path.is_file():
        raise UsageError(f"--routed {routed_path} does not exist")
    routed = load_routed(routed_path) if routed_path else None
    computed = compare(before, after, routed, str(routed_path) if routed_path else None)
    dests = write(out, computed)
    _print_summary(computed["result"])
    for d in dests:
        print(f"wrote {d}")
    return 0


def _print_summary(result: dict) -> None:
    c, b, a = result["counts"], result["before"], result["after"]
    print(f"shared samples: {c['shared']}; fixed {c['fixed']}, regressed {c['regressed']}, "
          f"still misclassified {c['still_misclassified']}; only in before {c['only_in_before']}, "
          f"only in after {c['only_in_after']}")
    print(f"threshold {b['threshold']:.6g} -> {a['threshold']:.6g}; recall {_f(b['recall'])} -> "
          f"{_f(a['recall'])}; FAR {_f(b['far'])} -> {_f(a['far'])}; F1 {_f(b['f1'])} -> "
          f"{_f(a['f1'])}")
