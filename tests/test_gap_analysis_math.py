"""The vectorised gap analysis against a plain brute-force oracle (loops over candidates and rows)."""
from __future__ import annotations

import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tao_aoi import gap_analysis as ga

LABELS = ["PASS", " pass", "Pass ", "SHORT", "MISSING", "BRIDGE", "short"]


# ----------------------------------------------------------------------------- oracle

def oracle(scores, labels, min_recall, pinned):
    """Threshold, confusion matrix and candidate counts, computed the slow obvious way."""
    positive = [not (lab.strip().upper() == "PASS") for lab in labels]
    n_pos = sum(positive)
    if n_pos == 0:
        return None
    if pinned is not None:
        candidates = [pinned]
    else:
        candidates = sorted(set(scores)) + [math.nextafter(min(scores), -math.inf)]
    scored = []
    for t in candidates:
        tp = fp = tn = fn = 0
        for s, p in zip(scores, positive):
            pred = s > t
            if pred and p:
                tp += 1
            elif pred and not p:
                fp += 1
            elif not pred and p:
                fn += 1
            else:
                tn += 1
        recall = Fraction(tp, n_pos)
        precision = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else Fraction(0)
        meets = float(recall) >= min_recall - 1e-12
        scored.append((meets, f1, precision, t, (tp, fp, tn, fn), recall))
    meeting = [c for c in scored if c[0]]
    if pinned is not None:
        best = scored[0]
    else:
        best = max(meeting, key=lambda c: (c[1], c[2], c[3]))
    return {"threshold": best[3], "cm": best[4], "f1": best[1], "precision": best[2],
            "recall": best[5], "n_candidates": len(candidates), "n_meeting": len(meeting)}


def oracle_rows(scores, labels, t):
    weak, mis = [], []
    for s, lab in zip(scores, labels):
        if lab.strip().upper() == "PASS":
            weak.append(s - t)
            mis.append(s > t)
        else:
            weak.append(t - s)
            mis.append(not (s > t))
    return weak, mis


def oracle_kept(weak, mis, labels, ip, on, top_k):
    key = lambda i: (-weak[i], ip[i], on[i], i)  # noqa: E731
    if top_k is not None and top_k > 0:
        kept = []
        for lab in sorted(set(labels)):
            rows = sorted((i for i in range(len(labels)) if labels[i] == lab), key=key)
            kept += rows[:top_k]
    else:
        kept = [i for i in range(len(labels)) if mis[i]]
    return sorted(kept, key=key)


# ----------------------------------------------------------------------------- data

@st.composite
def datasets(draw):
    n = draw(st.integers(1, 40))
    pool = draw(st.lists(st.floats(-2, 2, allow_nan=False, width=32).map(lambda x: round(x, 2)),
                         min_size=1, max_size=6))
    scores = draw(st.lists(st.sampled_from(pool) | st.floats(0, 1, allow_nan=False),
                           min_size=n, max_size=n))
    label_pool = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=4, unique=True))
    labels = draw(st.lists(st.sampled_from(label_pool), min_size=n, max_size=n))
    ip = draw(st.lists(st.sampled_from(["a", "b/c", "b"]), min_size=n, max_size=n))
    on = draw(st.lists(st.sampled_from(["001", "002", "010"]), min_size=n, max_size=n))
    min_recall = draw(st.sampled_from([1.0, 0.9, 0.75, 0.5, 1 / 3, 0.01]))
    pinned = draw(st.sampled_from([None, None, None, 0.0, 0.3, 0.5, pool[0]]))
    if pinned is not None and pinned < 0:
        pinned = None
    top_k = draw(st.sampled_from([None, 0, -1, 1, 2, 3, 50]))
    return scores, labels, ip, on, min_recall, pinned, top_k


def encode(labels):
    names = sorted(set(labels))
    pos = {n: i for i, n in enumerate(names)}
    return np.array([pos[x] for x in labels], dtype=np.int32), names


# ----------------------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
def test_matches_brute_force_oracle(data):
    scores, labels, ip, on, min_recall, pinned, top_k = data
    s = np.array(scores, dtype=np.float64)
    positive = np.array([not ga.is_pass_label(x) for x in labels])
    expected = oracle(scores, labels, min_recall, pinned)
    if expected is None:
        with pytest.raises(ga.UnreachableKPI):
            ga.choose_threshold(s, positive, min_recall, pinned)
        return
    got = ga.choose_threshold(s, positive, min_recall, pinned)
    assert got.threshold == expected["threshold"]
    assert (got.tp, got.fp, got.tn, got.fn) == expected["cm"]
    assert got.precision == pytest.approx(float(expected["precision"]), abs=1e-15)
    assert got.recall == pytest.approx(float(expected["recall"]), abs=1e-15)
    assert got.f1 == pytest.approx(float(expected["f1"]), abs=1e-15)
    assert got.n_candidates == expected["n_candidates"]
    assert got.n_candidates_meeting_recall == expected["n_meeting"]
    assert got.threshold_mode == ("pinned" if pinned is not None else "sweep")

    t = got.threshold
    weak, mis = oracle_rows(scores, labels, t)
    w, m = ga.weakness_and_misclassified(s, positive, t)
    assert w.tolist() == weak
    assert m.tolist() == mis

    codes, names = encode(labels)
    groups = ga.group_rows(codes, len(names))
    stats = ga.per_label_stats(w, m, groups, names)
    assert set(stats) == set(labels)
    for lab in set(labels):
        lw = [weak[i] for i in range(len(labels)) if labels[i] == lab]
        assert stats[lab]["total"] == len(lw)
        assert stats[lab]["mean_weakness"] == pytest.approx(statistics.fmean(lw), abs=1e-12)
        assert stats[lab]["median_weakness"] == pytest.approx(statistics.median(lw), abs=1e-12)
        assert stats[lab]["max_weakness"] == max(lw)
        assert stats[lab]["n_misclassified"] == sum(mis[i] for i in range(len(labels)) if labels[i] == lab)

    names_fn = lambda rows: ([ip[i] for i in rows], [on[i] for i in rows])  # noqa: E731
    kept, mode = ga.select_rows(w, m, groups, top_k, names_fn)
    assert mode == ("top_k" if top_k is not None and top_k > 0 else "wrong_side")
    assert kept.tolist() == oracle_kept(weak, mis, labels, ip, on, top_k)


# ----------------------------------------------------------------------------- fixed cases

def test_worked_example_threshold_and_weakness():
    # PASS 0.1 0.2 0.3 0.6 ; NO_PASS 0.4 0.5 0.7 0.8 0.9: at recall 1, t must be < 0.4
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9, 0.4, 0.8])
    pos = np.array([False] * 4 + [True] * 5)
    c = ga.choose_threshold(s, pos, 1.0)
    assert c.threshold == 0.3 and (c.tp, c.fp, c.tn, c.fn) == (5, 1, 3, 0)
    assert c.f1 == pytest.approx(10 / 11)
    w, m = ga.weakness_and_misclassified(s, pos, c.threshold)
    assert m.tolist() == [False, False, False, True] + [False] * 5
    assert w[3] == pytest.approx(0.3) and w[7] == pytest.approx(-0.1)


def test_equal_f1_prefers_higher_precision():
    # NO_PASS 0.4 0.5 0.6 0.7; PASS 0.3 0.45 0.45 0.55 0.55. F1 = 2/3 at t=0.3 (P 1/2),
    # t=0.45 (P 3/5) and t=0.55 (P 1, recall 1/2).
    s = np.array([0.4, 0.5, 0.6, 0.7, 0.3, 0.45, 0.45, 0.55, 0.55])
    pos = np.array([True] * 4 + [False] * 5)
    assert ga.choose_threshold(s, pos, 0.5).threshold == 0.55
    assert ga.choose_threshold(s, pos, 0.75).threshold == 0.45
    assert ga.choose_threshold(s, pos, 1.0).threshold == 0.3


def test_no_pass_exactly_on_pinned_threshold_is_misclassified_with_zero_weakness():
    s = np.array([0.2, 0.5, 0.9])
    pos = np.array([False, True, True])
    c = ga.choose_threshold(s, pos, 1.0, pinned=0.5)
    assert c.recall == 0.5 and not c.recall_target_met and c.n_candidates_meeting_recall == 0
    w, m = ga.weakness_and_misclassified(s, pos, 0.5)
    assert w[1] == 0.0 and bool(m[1]) is True


def test_lowest_candidate_is_just_below_min_score():
    s = np.array([0.3, 0.3, 0.3])
    pos = np.array([True, False, True])
    c = ga.choose_threshold(s, pos, 1.0)
    assert c.threshold == math.nextafter(0.3, -math.inf)
    assert (c.tp, c.fp) == (2, 1) and c.n_candidates == 2


def test_all_pass_is_unreachable():
    with pytest.raises(ga.UnreachableKPI, match="none of them is NO_PASS"):
        ga.choose_threshold(np.array([0.1, 0.2]), np.array([False, False]), 1.0)


def test_precision_zero_when_nothing_predicted_positive():
    # pinned above every score: no predicted NO_PASS -> precision 0, F1 0
    c = ga.choose_threshold(np.array([0.1, 0.2]), np.array([True, False]), 0.5, pinned=0.9)
    assert (c.precision, c.recall, c.f1, c.far) == (0.0, 0.0, 0.0, 0.0)


def test_lighting_order_and_expansion():
    lights = ga.lighting_order({"Diffuse": 1, "Coaxial": 0, "Side": 2})
    assert lights == ["Coaxial", "Diffuse", "Side"]
    paths = ga.expand_filepaths("/data/", ["b1/c"], ["007"], lights, ".jpg")
    assert paths == ["/data/b1/c/007_Coaxial.jpg", "/data/b1/c/007_Diffuse.jpg", "/data/b1/c/007_Side.jpg"]


def test_breakdown_counts_marginal_rows():
    rows = ga.breakdown_rows(np.array([0, 1, 0, 0]), np.array([True, False, False, True]),
                             ["PASS", "SHORT", "UNUSED"])
    assert len(rows) == 2
    assert rows[0] == {"label": "PASS", "count": 3, "percent": 75.0, "misclassified": 2, "marginal": 1}
    assert rows[1]["label"] == "SHORT" and rows[1]["marginal"] == 1
