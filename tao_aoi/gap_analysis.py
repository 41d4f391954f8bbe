"""Gap analysis of a VCN Classify inference table: pure computation, no I/O.

What NVIDIA's ``gap_analysis vcn_aoi`` computes (SPEC 2.1, checked against nvidia-tao-ds),
reproduced float for float so the threshold and every written value are the container's:

* a row is PASS when ``str(label).strip().upper() == "PASS"``; every other label is NO_PASS,
  the positive class; predict NO_PASS when ``score > threshold``;
* the curve: one point per candidate (``nextafter(min, -inf)`` then every unique score,
  ascending) with ``prec = tp/(tp+fp)``, ``rec = tp/(tp+fn)``, ``f1 = 2.0*prec*rec/(prec+rec)``
  evaluated in that order, since the winner is a max over these floats;
* the point: among candidates with ``rec >= min_recall - 1e-12``, max of ``(f1, prec, t)``;
* weakness: PASS ``score - t``, NO_PASS ``t - score`` (positive = wrong side);
* top K per stripped upper-cased label from one descending sort by weakness. The container's
  sort leaves equal weakness in an unspecified order; ours keeps CSV row order (stable);
* expansion: one path per kept row and lighting, joined as ``pathlib`` joins them.

The curve is computed once (sort + cumulative counts, O(n log n)) apart from choosing a point
on it, so the operating point for any recall target is one more lookup.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np

from tao_aoi.labels import normalize_label

RECALL_TOLERANCE = 1e-12  # the container's slack on the recall target


class UnreachableKPI(ValueError):
    """No candidate threshold reaches the recall target (the container raises ValueError)."""


class EmptyInference(ValueError):
    """The inference CSV has a header and no rows."""


@dataclass(frozen=True)
class Curve:
    """Every candidate threshold, ascending, with its confusion counts and rates."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    n_pos: int
    n_neg: int


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    mode: str  # "sweep" | "pinned"
    min_recall: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    far: float
    n_candidates: int
    n_feasible: int

    @property
    def confusion_matrix(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}

    @property
    def recall_target_met(self) -> bool:
        return self.n_pos > 0 and self.recall >= self.min_recall - RECALL_TOLERANCE

    @property
    def n_pos(self) -> int:
        return self.tp + self.fn


def _rates(tp: np.ndarray, fp: np.ndarray, n_pos: int):
    """Precision, recall, F1 with the container's expressions (element-wise IEEE, same order)."""
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pred = tp + fp
        precision = np.where(pred > 0, tp / np.where(pred > 0, pred, 1.0), 0.0)
        recall = tp / n_pos if n_pos > 0 else np.zeros_like(tp)
        denom = precision + recall
        f1 = np.where(denom > 0, (2.0 * precision * recall) / np.where(denom > 0, denom, 1.0), 0.0)
    return precision, recall, f1


def threshold_curve(scores: np.ndarray, positive: np.ndarray) -> Curve:
    """All candidate thresholds of a non-empty score column and their counts."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n = int(scores.size)
    if n == 0:
        raise EmptyInference("no rows")
    n_pos = int(np.count_nonzero(positive))
    s_all = np.sort(scores)  # values only: no index order needed, so numpy's fastest sort
    s_pos = np.sort(scores[positive])
    last_of_group = np.empty(n, dtype=bool)
    np.not_equal(s_all[1:], s_all[:-1], out=last_of_group[:-1])
    last_of_group[-1] = True
    uniq = s_all[last_of_group]
    above_all = n - 1 - np.flatnonzero(last_of_group)  # rows with score > u
    above_pos = n_pos - np.searchsorted(s_pos, uniq, side="right")
    thresholds = np.concatenate(([math.nextafter(float(s_all[0]), -math.inf)], uniq))
    tp = np.concatenate(([n_pos], above_pos)).astype(np.int64)
    fp = np.concatenate(([n - n_pos], above_all - above_pos)).astype(np.int64)
    precision, recall, f1 = _rates(tp, fp, n_pos)
    return Curve(thresholds, tp, fp, precision, recall, f1, n_pos, n - n_pos)


def _point(curve: Curve, i: int, mode: str, min_recall: float, n_feasible: int) -> OperatingPoint:
    tp, fp = int(curve.tp[i]), int(curve.fp[i])
    far = fp / curve.n_neg if curve.n_neg else 0.0
    return OperatingPoint(float(curve.thresholds[i]), mode, float(min_recall), tp, fp,
                          curve.n_neg - fp, curve.n_pos - tp, float(curve.precision[i]),
                          float(curve.recall[i]), float(curve.f1[i]), far,
                          int(curve.thresholds.size), n_feasible)


def choose_point(curve: Curve, min_recall: float) -> OperatingPoint:
    """The container's pick: best (f1, precision, threshold) among feasible candidates."""
    feasible = np.flatnonzero(curve.recall >= min_recall - RECALL_TOLERANCE) if curve.n_pos else []
    if len(feasible) == 0:
        raise UnreachableKPI(unreachable_message(min_recall))
    # lexsort: last key is primary; thresholds are unique, so the max is unique
    order = np.lexsort((curve.thresholds[feasible], curve.precision[feasible], curve.f1[feasible]))
    return _point(curve, int(feasible[order[-1]]), "sweep", min_recall, len(feasible))


def unreachable_message(min_recall: float) -> str:
    """The container's error text, word for word."""
    return f"No threshold achieves {min_recall:.0%} recall on the NO_PASS class."


def pinned_point(scores: np.ndarray, positive: np.ndarray, threshold: float,
                 min_recall: float) -> OperatingPoint:
    """Counts and rates at a threshold given by the user (no recall check, like the container)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    flagged = scores > threshold
    tp = np.array([np.count_nonzero(positive & flagged)])
    fp = np.array([np.count_nonzero(~positive & flagged)])
    n_pos = int(np.count_nonzero(positive))
    n_neg = int(scores.size) - n_pos
    precision, recall, f1 = _rates(tp, fp, n_pos)
    curve = Curve(np.array([float(threshold)]), tp, fp, precision, recall, f1, n_pos, n_neg)
    met = n_pos > 0 and recall[0] >= min_recall - RECALL_TOLERANCE
    return _point(curve, 0, "pinned", min_recall, int(met))


def weakness(scores: np.ndarray, positive: np.ndarray, threshold: float) -> np.ndarray:
    """Signed distance to the threshold on the wrong side, as the container computes it."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(positive, threshold - scores, scores - threshold)


def _by_weakness(rows: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """``rows`` in descending weakness, equal weakness in row order (a stable sort's order)."""
    return rows[np.lexsort((rows, -weak[rows]))]


def top_k_rows(weak: np.ndarray, group_codes: np.ndarray, k: int) -> np.ndarray:
    """Row indices kept: what one stable descending sort by weakness followed by the first
    ``k`` of each group gives, in that global order. Computed per group from the k largest
    (plus ties at the boundary), so millions of rows are never sorted whole."""
    weak = np.asarray(weak, dtype=np.float64)
    group_codes = np.asarray(group_codes)
    kept = []
    # each group's rows in their original order, from one stable (radix) sort of the codes
    by_group = np.argsort(group_codes, kind="stable")
    ends = np.cumsum(np.bincount(group_codes)) if group_codes.size else np.zeros(0, np.int64)
    for a, b in zip(np.concatenate([[0], ends[:-1]]), ends):
        if a == b:
            continue
        rows = by_group[a:b]
        if rows.size > k:
            w = weak[rows]
            kth = np.partition(w, rows.size - k)[rows.size - k]
            rows = rows[w >= kth]
        kept.append(_by_weakness(rows, weak)[:k])
    if not kept:
        return np.empty(0, dtype=np.int64)
    return _by_weakness(np.concatenate(kept), weak)


def breakdown_text(threshold: float, top_k: int, n_rows: int, kept_groups: Sequence[str],
                   kept_weakness: np.ndarray) -> str:
    """``weak_samples_breakdown.txt`` exactly as the container writes it (trailing newline)."""
    lines = [f"Weak samples breakdown by label (threshold={threshold}, top_k_per_label={top_k})",
             f"Total KPI samples: {n_rows}",
             f"Total weak samples kept: {len(kept_groups)}",
             ""]
    total = max(len(kept_groups), 1)
    counts: dict[str, list[int]] = {}  # first-appearance order, like groupby(sort=False)
    for name, w in zip(kept_groups, np.asarray(kept_weakness).tolist()):
        c = counts.setdefault(name, [0, 0])
        c[0] += 1
        c[1] += w > 0
    for name, (count, wrong) in counts.items():
        lines.append(f"  {name}: {count} ({100.0 * count / total:.1f}%) \u2014 "
                     f"{wrong} misclassified, {count - wrong} marginal")
    return "\n".join(lines) + "\n"


def image_path(kpi_media_path: str, input_path: str, object_name: str, lighting: str,
               image_ext: str) -> str:
    """One image of one sample, joined as the container joins it (pathlib rules: an absolute
    input_path replaces the root, duplicate and trailing slashes collapse, "" is relative)."""
    return str(PurePosixPath(kpi_media_path) / input_path / f"{object_name}_{lighting}{image_ext}")


def expand(rows: Sequence[int], input_paths: Sequence[str], object_names: Sequence[str],
           lightings: Sequence[str], image_ext: str, kpi_media_path: str) -> list[str]:
    """Filepaths of ``rows`` x ``lightings`` (lightings innermost)."""
    root = PurePosixPath(kpi_media_path)
    bases: dict[str, PurePosixPath] = {}
    out = []
    for r in rows:
        ip = input_paths[r]
        base = bases.get(ip)
        if base is None:
            base = bases[ip] = root / ip
        obj = object_names[r]
        out.extend(str(base / f"{obj}_{light}{image_ext}") for light in lightings)
    return out


def group_codes(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes of the normalised (stripped, upper-cased) label per row, and the names."""
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(normalize_label(v), len(names)) for v in labels),
                        dtype=np.int64, count=len(labels))
    return codes, list(names)


def per_label_stats(weak: np.ndarray, wrong: np.ndarray, codes: np.ndarray,
                    names: Sequence[str]) -> dict:
    """Per normalised label over ALL rows: total, mean/median/max weakness, misclassified."""
    out = {}
    for code, name in enumerate(names):
        w = weak[codes == code]
        if w.size == 0:
            continue
        out[name] = {"total": int(w.size), "mean_weakness": float(w.mean()),
                     "median_weakness": float(np.median(w)), "max_weakness": float(w.max()),
                     "n_misclassified": int(np.count_nonzero(wrong[codes == code]))}
    return out


# ----------------------------------------------------------------------------- the trade-off

RECALL_TARGETS = (1.0, 0.999, 0.995, 0.99, 0.98, 0.95)
DEGENERATE_FAR = 0.5  # a threshold that flags at least half of the PASS rows is no operating point


def operating_curve(curve: Curve, targets: Sequence[float]) -> list[dict]:
    """For each recall target, the threshold the same rule picks and what it costs."""
    out = []
    for r in sorted(set(float(t) for t in targets), reverse=True):
        try:
            p = choose_point(curve, r)
        except UnreachableKPI:
            continue
        out.append({"min_recall": r, "threshold": p.threshold, "recall": p.recall, "far": p.far,
                    "precision": p.precision, "f1": p.f1, "false_alarms": p.fp})
    return out


def pinning_rows(scores: np.ndarray, positive: np.ndarray, curve: Curve,
                 point: OperatingPoint) -> np.ndarray:
    """The NO_PASS rows that hold the threshold down: those at the lowest NO_PASS score above
    it, when the recall target (not F1) decided the point. Removing them would move it up."""
    free = choose_point(curve, 0.0)
    if free.threshold <= point.threshold:
        return np.empty(0, dtype=np.int64)
    above = scores[positive & (scores > point.threshold)]
    if above.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(positive & (scores == above.min()))


def is_degenerate(point: OperatingPoint, scores: np.ndarray, positive: np.ndarray) -> bool:
    """Most PASS rows flagged, or the threshold at or below every PASS score."""
    pass_scores = scores[~positive]
    if pass_scores.size == 0:
        return False
    return point.far >= DEGENERATE_FAR or point.threshold < pass_scores.min()


def describe_threshold(t: float, scores: np.ndarray) -> str:
    """A threshold as a person reads it ("below every score (-5e-324)")."""
    if scores.size and t < scores.min():
        return f"below every score ({t!r})"
    return repr(t)


def json_safe(value):
    """``value`` with every non-finite float (a rate with nothing to count) as ``None``, in
    nested dicts and lists: what the JSON artifacts write for an undefined number."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(x) for k, x in value.items()}
    if isinstance(value, list):
        return [json_safe(x) for x in value]
    return value
