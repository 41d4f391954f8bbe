"""Gap analysis of a VCN Classify inference table: pure computation, no I/O.

Semantics (SPEC 2.1, matching NVIDIA's host-side analyzer):

* a row is PASS when ``label.strip().upper() == "PASS"``; every other label is NO_PASS,
  the positive class;
* predict NO_PASS when ``score > threshold`` (strict);
* sweep candidates: every unique score plus ``nextafter(min_score, -inf)``; keep those
  whose NO_PASS recall >= ``min_recall - 1e-12``; best F1, ties -> higher precision ->
  higher threshold;
* signed weakness: PASS ``score - t``, NO_PASS ``t - score`` (positive = wrong side);
  misclassified follows the prediction rule (a NO_PASS row exactly at t is misclassified
  with weakness 0);
* selection: top K per label as written (weakness desc, then input_path, object_name),
  or, without K, the wrong-side filter (misclassified rows only).

The sweep sorts once and counts with cumulative sums: O(n log n) overall, never one pass
over the rows per candidate threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tao_aoi.labels import is_pass_label  # noqa: F401  (the PASS rule, re-exported)

RECALL_TOLERANCE = 1e-12


@dataclass
class ThresholdChoice:
    threshold: float
    threshold_mode: str  # "sweep" | "pinned"
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
    n_candidates_meeting_recall: int
    recall_target_met: bool

    @property
    def confusion_matrix(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


class UnreachableKPI(Exception):
    """No candidate threshold reaches the recall target (for example: no NO_PASS rows)."""

    def __init__(self, message: str, n_rows: int, n_pass: int, n_no_pass: int):
        super().__init__(message)
        self.n_rows, self.n_pass, self.n_no_pass = n_rows, n_pass, n_no_pass


def _rates(tp, fp, n_pos: int, n_neg: int):
    """Precision, recall, F1 and FAR for arrays (or scalars) of tp/fp counts.

    F1 is computed as 2tp / (2tp + fp + fn): the same value as 2pr/(p+r), but one correctly
    rounded division of integers, so mathematically equal F1s compare equal (exact ties).
    """
    tp = np.asarray(tp, dtype=np.int64)
    fp = np.asarray(fp, dtype=np.int64)
    fn = n_pos - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        pred = tp + fp
        precision = np.where(pred > 0, tp / np.where(pred > 0, pred, 1), 0.0)
        recall = tp / n_pos if n_pos > 0 else np.zeros(tp.shape)
        denom = 2 * tp + fp + fn
        f1 = np.where((tp > 0) & (denom > 0), 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        far = fp / n_neg if n_neg > 0 else np.zeros(tp.shape)
    return precision, recall, f1, far


def choose_threshold(scores: np.ndarray, positive: np.ndarray, min_recall: float,
                     pinned: float | None = None) -> ThresholdChoice:
    """Pick the threshold (sweep) or score a pinned one. Raises UnreachableKPI."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n = int(scores.size)
    n_pos = int(np.count_nonzero(positive))
    n_neg = n - n_pos
    if n == 0:
        raise ValueError("no rows")
    if n_pos == 0:
        raise UnreachableKPI(
            f"the CSV has {n} rows and none of them is NO_PASS (every label is PASS), so NO_PASS "
            f"recall is undefined and no threshold can reach min_recall={min_recall}; the best "
            f"achievable recall is 0 of 0 NO_PASS rows", n, n_neg, n_pos)
    target = float(min_recall) - RECALL_TOLERANCE

    if pinned is not None:
        t = float(pinned)
        tp = int(np.count_nonzero(positive & (scores > t)))
        fp = int(np.count_nonzero(~positive & (scores > t)))
        p, r, f, a = (float(x) for x in _rates(tp, fp, n_pos, n_neg))
        met = r >= target
        return ThresholdChoice(t, "pinned", float(min_recall), tp, fp, n_neg - fp, n_pos - tp,
                               p, r, f, a, 1, int(met), bool(met))

    # Sort once: all scores, and the NO_PASS scores (for the positives above each candidate).
    s_all = np.sort(scores)
    s_pos = np.sort(scores[positive])
    last_of_group = np.empty(n, dtype=bool)
    np.not_equal(s_all[1:], s_all[:-1], out=last_of_group[:-1])
    last_of_group[-1] = True
    uniq = s_all[last_of_group]
    # rows with score > u  =  n - (index of the last row equal to u) - 1
    above_all = n - 1 - np.flatnonzero(last_of_group)
    above_pos = n_pos - np.searchsorted(s_pos, uniq, side="right")
    below_min = np.nextafter(s_all[0], -np.inf)
    thresholds = np.concatenate(([below_min], uniq))
    tp = np.concatenate(([n_pos], above_pos)).astype(np.int64)
    fp = np.concatenate(([n_neg], above_all - above_pos)).astype(np.int64)
    precision, recall, f1, far = _rates(tp, fp, n_pos, n_neg)
    meets = recall >= target
    idx = np.flatnonzero(meets)
    if idx.size == 0:  # cannot happen with n_pos > 0 (the lowest candidate has recall 1)
        best_r = float(recall.max())
        raise UnreachableKPI(f"no candidate threshold reaches min_recall={min_recall}; the best "
                             f"achievable NO_PASS recall is {best_r!r}", n, n_neg, n_pos)
    # best F1, then higher precision, then higher threshold (lexsort: last key is primary)
    order = np.lexsort((thresholds[idx], precision[idx], f1[idx]))
    b = int(idx[order[-1]])
    t_tp, t_fp = int(tp[b]), int(fp[b])
    return ThresholdChoice(float(thresholds[b]), "sweep", float(min_recall), t_tp, t_fp,
                           n_neg - t_fp, n_pos - t_tp, float(precision[b]), float(recall[b]),
                           float(f1[b]), float(far[b]), int(thresholds.size), int(idx.size), True)


def weakness_and_misclassified(scores: np.ndarray, positive: np.ndarray,
                               threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed weakness (positive = wrong side) and the misclassified flag (prediction rule)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    diff = scores - threshold
    weakness = np.where(positive, -diff, diff)
    predicted_pos = scores > threshold
    misclassified = predicted_pos != positive
    return weakness, misclassified


def group_rows(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Row indices of each code 0..n_groups-1 (ascending row order within a group)."""
    codes = np.asarray(codes)
    small = codes.astype(np.int16 if n_groups < 32000 else np.int32, copy=False)
    order = np.argsort(small, kind="stable")  # radix sort for 16-bit codes: O(n)
    counts = np.bincount(codes, minlength=n_groups)
    return np.split(order, np.cumsum(counts)[:-1])


def per_label_stats(weakness: np.ndarray, misclassified: np.ndarray,
                    groups: Sequence[np.ndarray], names: Sequence[str]) -> dict:
    """Per label as written, over ALL rows: total, mean/median/max weakness, n_misclassified."""
    out = {}
    for name, rows in zip(names, groups):
        if rows.size == 0:
            continue
        w = weakness[rows]
        out[str(name)] = {
            "total": int(rows.size),
            "mean_weakness": float(w.mean()),
            "median_weakness": median(w),
            "max_weakness": float(w.max()),
            "n_misclassified": int(np.count_nonzero(misclassified[rows])),
        }
    return out


def median(values: np.ndarray) -> float:
    """Median by partition (what np.median computes, without np.median importing numpy.ma)."""
    m = values.size
    half = m // 2
    if m % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, [half - 1, half])
    return float((part[half - 1] + part[half]) / 2)


KeyFn = Callable[[np.ndarray], tuple[Sequence[str], Sequence[str]]]


def order_rows(rows: np.ndarray, weakness: np.ndarray, names: KeyFn) -> np.ndarray:
    """``rows`` sorted by weakness desc, then input_path, object_name, then row index."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size <= 1:
        return rows
    rows = np.sort(rows)  # row index is the final tie-break (stable sorts below keep it)
    ip, on = names(rows)
    ip = np.asarray(ip, dtype=object)
    on = np.asarray(on, dtype=object)
    keys = (on, ip, -weakness[rows])
    return rows[np.lexsort(keys)]


def select_rows(weakness: np.ndarray, misclassified: np.ndarray, groups: Sequence[np.ndarray],
                top_k: int | None, names: KeyFn,
                order: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """Indices of the kept rows, in output order (weakness desc, input_path, object_name).

    ``top_k`` > 0: the K weakest per label (group). Otherwise the wrong-side filter.
    ``order`` may replace :func:`order_rows` (same contract; e.g. a columnar sort for millions
    of rows). Returns (indices, selection_mode).
    """
    if order is None:
        def order(rows):
            return order_rows(rows, weakness, names)
    if top_k is not None and top_k > 0:
        picked = []
        for rows in groups:
            if rows.size == 0:
                continue
            if rows.size > top_k:
                w = weakness[rows]
                kth = np.partition(w, rows.size - top_k)[rows.size - top_k]
                rows = rows[w >= kth]  # the K largest plus any ties at the boundary
            picked.append(order(rows)[:top_k])
        kept = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
        return order(kept), "top_k"
    kept = np.flatnonzero(misclassified)
    return order(kept), "wrong_side"


def lighting_order(input_map: dict) -> list[str]:
    """Lighting names by index (the first lighting is the smallest index)."""
    return [name for name, _ in sorted(input_map.items(), key=lambda kv: kv[1])]


def media_root(kpi_media_path: str) -> str:
    """kpi_media_path without trailing slashes ("" for "/"), so "{root}/{input_path}" is clean."""
    return str(kpi_media_path).rstrip("/")


def expand_filepaths(kpi_media_path: str, input_paths: Sequence[str], object_names: Sequence[str],
                     lightings: Sequence[str], image_ext: str) -> list[str]:
    """One path per (row, lighting), lightings innermost, in the given order."""
    root = media_root(kpi_media_path)
    return [f"{root}/{ip}/{on}_{light}{image_ext}"
            for ip, on in zip(input_paths, object_names) for light in lightings]


def breakdown_rows(kept_codes: np.ndarray, kept_misclassified: np.ndarray,
                   names: Sequence[str]) -> list[dict]:
    """Per label of the kept rows: count, percent of kept, misclassified, marginal.

    ``kept_codes`` index ``names``; rows are ordered by count desc, then label.
    """
    kept_codes = np.asarray(kept_codes, dtype=np.int64)
    total = int(kept_codes.size)
    counts = np.bincount(kept_codes, minlength=len(names))
    mis = np.bincount(kept_codes, weights=np.asarray(kept_misclassified, dtype=np.float64),
                      minlength=len(names))
    rows = []
    for code in sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], str(names[c]))):
        count, n_mis = int(counts[code]), int(round(mis[code]))
        rows.append({"label": str(names[code]), "count": count,
                     "percent": 100.0 * count / total if total else 0.0,
                     "misclassified": n_mis, "marginal": count - n_mis})
    return rows
