"""The vectorised gap analysis against a plain brute-force oracle (loops over candidates and rows).

The oracle follows NVIDIA's ``gap_analysis vcn_aoi`` rules (SPEC 2.1), written out the slow
obvious way and independently of :mod:`tao_aoi.gap_analysis`: one loop per candidate, the
container's float expressions for precision/recall/F1 (``2.0*prec*rec/(prec+rec)``; the winner
is a max over these floats, so they must be the container's, not exact fractions), groups by
the stripped upper-cased label, one stable descending sort by weakness (ties in CSV row order)
then the first K of each group.
"""
from __future__ import annotations

import math
import statistics
from fractions import Fraction
from pathlib import PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tao_aoi import gap_analysis as ga

LABELS = ["PASS", " pass", "Pass ", "SHORT", "MISSING", "BRIDGE", "short", " Short "]


def norm(label: str) -> str:
    return label.strip().upper()


# ----------------------------------------------------------------------------- oracle

def oracle(scores, labels, min_recall, pinned):
    """Threshold, confusion matrix, rates and candidate counts, computed the slow obvious way.
    None when the container raises (no candidate reaches min_recall)."""
    positive = [norm(lab) != "PASS" for lab in labels]
    n_pos = sum(positive)
    if pinned is not None:
        candidates = [pinned]
    else:
        candidates = [math.nextafter(min(scores), -math.inf)] + sorted(set(scores))
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
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = (2.0 * prec * rec) / (prec + rec) if prec + rec else 0.0
        exact_p = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
        exact_r = Fraction(tp, n_pos) if n_pos else Fraction(0)
        exact_f1 = 2 * exact_p * exact_r / (exact_p + exact_r) if exact_p + exact_r else Fraction(0)
        meets = (tp + fn) > 0 and rec >= min_recall - 1e-12
        scored.append({"meets": meets, "f1": f1, "precision": prec, "recall": rec, "threshold": t,
                       "cm": (tp, fp, tn, fn), "exact_f1": exact_f1})
    meeting = [c for c in scored if c["meets"]]
    if pinned is not None:
        best = scored[0]  # used as given: no recall check
    elif not meeting:
        return None
    else:
        best = max(meeting, key=lambda c: (c["f1"], c["precision"], c["threshold"]))
    return {**best, "n_candidates": len(candidates), "n_meeting": len(meeting)}


def oracle_rows(scores, labels, t):
    weak, mis = [], []
    for s, lab in zip(scores, labels):
        if norm(lab) == "PASS":
            weak.append(s - t)
            mis.append(s > t)
        else:
            weak.append(t - s)
            mis.append(not (s > t))
    return weak, mis


def oracle_kept(weak, labels, top_k):
    """One stable descending sort by weakness, then the first K per normalised label."""
    order = sorted(range(len(labels)), key=lambda i: -weak[i])  # sorted() is stable
    seen: dict[str, int] = {}
    kept = []
    for i in order:
        g = norm(labels[i])
        if seen.get(g, 0) < top_k:
            kept.append(i)
        seen[g] = seen.get(g, 0) + 1
    return kept


def oracle_breakdown(t, top_k, n_rows, kept, weak, labels):
    """The container's weak_samples_breakdown.txt (groups in first-appearance order)."""
    groups: dict[str, list[int]] = {}
    for i in kept:
        groups.setdefault(norm(labels[i]), []).append(i)
    lines = [f"Weak samples breakdown by label (threshold={t}, top_k_per_label={top_k})",
             f"Total KPI samples: {n_rows}", f"Total weak samples kept: {len(kept)}", ""]
    for name, rows in groups.items():
        wrong = sum(1 for i in rows if weak[i] > 0)
        pct = 100.0 * len(rows) / max(len(kept), 1)
        lines.append(f"  {name}: {len(rows)} ({pct:.1f}%) \u2014 {wrong} misclassified, "
                     f"{len(rows) - wrong} marginal")
    return "\n".join(lines) + "\n"


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
    ip = draw(st.lists(st.sampled_from(["a", "b/c", "b", "/abs/d", "e/"]), min_size=n, max_size=n))
    on = draw(st.lists(st.sampled_from(["001", "002", "010"]), min_size=n, max_size=n))
    min_recall = draw(st.sampled_from([1.0, 0.9, 0.75, 0.5, 1 / 3, 0.01, 0.0]))
    pinned = draw(st.sampled_from([None, None, None, 0.0, 0.3, 0.5, pool[0]]))
    if pinned is not None and pinned < 0:
        pinned = None
    top_k = draw(st.sampled_from([1, 2, 3, 50]))
    root = draw(st.sampled_from(["", "/m", "/m/", "rel//x"]))
    return scores, labels, ip, on, min_recall, pinned, top_k, root


def operating_point(s, positive, min_recall, pinned):
    if pinned is not None:
        return ga.pinned_point(s, positive, pinned, min_recall)
    return ga.choose_point(ga.threshold_curve(s, positive), min_recall)


# ----------------------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
def test_matches_brute_force_oracle(data):
    scores, labels, ip, on, min_recall, pinned, top_k, root = data
    s = np.array(scores, dtype=np.float64)
    positive = np.array([norm(x) != "PASS" for x in labels])
    expected = oracle(scores, labels, min_recall, pinned)
    if expected is None:
        with pytest.raises(ga.UnreachableKPI, match="No threshold achieves"):
            operating_point(s, positive, min_recall, pinned)
        return
    got = operating_point(s, positive, min_recall, pinned)
    assert got.threshold == expected["threshold"]
    assert (got.tp, got.fp, got.tn, got.fn) == expected["cm"]
    # the container's floats, bit for bit (they decide the winner) ...
    assert (got.precision, got.recall, got.f1) == (expected["precision"], expected["recall"],
                                                   expected["f1"])
    # ... which are the exact rates up to rounding
    assert got.f1 == pytest.approx(float(expected["exact_f1"]), abs=1e-15)
    assert got.mode == ("pinned" if pinned is not None else "sweep")
    assert got.n_candidates == expected["n_candidates"]
    if pinned is None:
        assert got.n_feasible == expected["n_meeting"]

    t = got.threshold
    weak, mis = oracle_rows(scores, labels, t)
    w = ga.weakness(s, positive, t)
    assert w.tolist() == weak
    assert (((s > t) != positive).tolist()) == mis

    codes, names = ga.group_codes(labels)
    assert names == list(dict.fromkeys(norm(x) for x in labels))
    assert [names[c] for c in codes] == [norm(x) for x in labels]
    stats = ga.per_label_stats(w, np.array(mis), codes, names)
    assert set(stats) == {norm(x) for x in labels}
    for lab in stats:
        rows = [i for i in range(len(labels)) if norm(labels[i]) == lab]
        lw = [weak[i] for i in rows]
        assert stats[lab]["total"] == len(lw)
        assert stats[lab]["mean_weakness"] == pytest.approx(statistics.fmean(lw), abs=1e-12)
        assert stats[lab]["median_weakness"] == pytest.approx(statistics.median(lw), abs=1e-12)
        assert stats[lab]["max_weakness"] == max(lw)
        assert stats[lab]["n_misclassified"] == sum(mis[i] for i in rows)

    kept = ga.top_k_rows(w, codes, top_k)
    assert kept.tolist() == oracle_kept(weak, labels, top_k)
    assert ga.breakdown_text(t, top_k, len(scores), [names[c] for c in codes[kept]], w[kept]) == \
        oracle_breakdown(t, top_k, len(scores), kept.tolist(), weak, labels)

    lights = ["Diffuse", "Coaxial"]
    paths = ga.expand(kept.tolist(), ip, on, lights, ".jpg", root)
    assert paths == [str(PurePosixPath(root) / ip[i] / f"{on[i]}_{light}.jpg")
                     for i in kept.tolist() for light in lights]


# ----------------------------------------------------------------------------- fixed cases

def test_worked_example_threshold_and_weakness():
    # PASS 0.1 0.2 0.3 0.6 ; NO_PASS 0.4 0.5 0.7 0.9 0.8: at recall 1, t must be < 0.4
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9, 0.4, 0.8])
    pos = np.array([False] * 4 + [True] * 5)
    c = ga.choose_point(ga.threshold_curve(s, pos), 1.0)
    assert c.threshold == 0.3 and (c.tp, c.fp, c.tn, c.fn) == (5, 1, 3, 0)
    assert c.f1 == (2.0 * (5 / 6) * 1.0) / (5 / 6 + 1.0)
    w = ga.weakness(s, pos, c.threshold)
    assert ((s > c.threshold) != pos).tolist() == [False, False, False, True] + [False] * 5
    assert w[3] == pytest.approx(0.3) and w[7] == pytest.approx(-0.1)


def test_equal_exact_f1_is_decided_by_the_container_floats():
    # NO_PASS 0.4 0.5 0.6 0.7; PASS 0.3 0.45 0.45 0.55 0.55. Exactly, F1 = 2/3 at t=0.3 (P 1/2),
    # t=0.45 (P 3/5) and t=0.55 (P 1, recall 1/2). In the container's floats t=0.45 gives
    # 0.6666666666666665 and the other two 0.6666666666666666, so at recall >= 0.75 the
    # container picks t=0.3 (exact arithmetic would pick the higher precision, 0.45).
    s = np.array([0.4, 0.5, 0.6, 0.7, 0.3, 0.45, 0.45, 0.55, 0.55])
    pos = np.array([True] * 4 + [False] * 5)
    curve = ga.threshold_curve(s, pos)
    assert ga.choose_point(curve, 0.5).threshold == 0.55  # equal float F1: higher precision
    assert ga.choose_point(curve, 0.75).threshold == 0.3
    assert ga.choose_point(curve, 1.0).threshold == 0.3


def test_no_pass_exactly_on_pinned_threshold_is_misclassified_with_zero_weakness():
    s = np.array([0.2, 0.5, 0.9])
    pos = np.array([False, True, True])
    c = ga.pinned_point(s, pos, 0.5, 1.0)  # used as given: no recall check
    assert c.threshold == 0.5 and c.mode == "pinned"
    assert c.recall == 0.5 and not c.recall_target_met
    w = ga.weakness(s, pos, 0.5)
    assert w[1] == 0.0 and bool((s > 0.5)[1] != pos[1]) is True


def test_lowest_candidate_is_just_below_min_score():
    s = np.array([0.3, 0.3, 0.3])
    pos = np.array([True, False, True])
    c = ga.choose_point(ga.threshold_curve(s, pos), 1.0)
    assert c.threshold == math.nextafter(0.3, -math.inf)
    assert (c.tp, c.fp) == (2, 1) and c.n_candidates == 2


def test_min_recall_zero_is_the_free_f1_optimum():
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.05])
    pos = np.array([False, False, False, True, True, True])
    curve = ga.threshold_curve(s, pos)
    c = ga.choose_point(curve, 0.0)
    assert c.threshold == 0.3 and (c.tp, c.fp, c.fn) == (2, 0, 1)
    assert ga.choose_point(curve, 1.0).threshold == math.nextafter(0.05, -math.inf)


def test_all_pass_is_unreachable_with_the_container_text():
    curve = ga.threshold_curve(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ga.UnreachableKPI) as exc:
        ga.choose_point(curve, 1.0)
    assert str(exc.value) == "No threshold achieves 100% recall on the NO_PASS class."


def test_precision_zero_when_nothing_predicted_positive():
    # pinned above every score: no predicted NO_PASS -> precision 0, F1 0
    c = ga.pinned_point(np.array([0.1, 0.2]), np.array([True, False]), 0.9, 0.5)
    assert (c.precision, c.recall, c.f1, c.far) == (0.0, 0.0, 0.0, 0.0)


def test_expansion_follows_pathlib_rules_and_the_given_lighting_order():
    lights = ["Diffuse", "Coaxial", "Side"]  # YAML key order, not the index values
    assert ga.expand([0], ["b1/c"], ["007"], lights, ".jpg", "/data/") == [
        "/data/b1/c/007_Diffuse.jpg", "/data/b1/c/007_Coaxial.jpg", "/data/b1/c/007_Side.jpg"]
    assert ga.image_path("/data", "/abs/c", "7", "A", ".png") == "/abs/c/7_A.png"
    assert ga.image_path("", "b//c/", "7", "A", ".png") == "b/c/7_A.png"
    assert ga.image_path("/m//n/", "", "7", "A", ".png") == "/m/n/7_A.png"


def test_top_k_groups_by_normalised_label_in_one_sorted_order():
    weak = np.array([0.1, 0.5, 0.5, -0.2, 0.3, 0.5])
    codes, names = ga.group_codes(["pass", " PASS", "Short", "SHORT ", "short", "PASS"])
    assert names == ["PASS", "SHORT"]
    # sorted: 1(.5 P) 2(.5 S) 5(.5 P) 4(.3 S) 0(.1 P) 3(-.2 S); ties keep row order
    assert ga.top_k_rows(weak, codes, 2).tolist() == [1, 2, 5, 4]
    assert ga.top_k_rows(weak, codes, 1).tolist() == [1, 2]


def test_breakdown_counts_marginal_rows():
    text = ga.breakdown_text(0.3, 2, 9, ["PASS", "SHORT", "PASS", "PASS"],
                             np.array([0.3, -0.1, 0.0, 0.2]))
    assert text == ("Weak samples breakdown by label (threshold=0.3, top_k_per_label=2)\n"
                    "Total KPI samples: 9\nTotal weak samples kept: 4\n\n"
                    "  PASS: 3 (75.0%) \u2014 2 misclassified, 1 marginal\n"
                    "  SHORT: 1 (25.0%) \u2014 0 misclassified, 1 marginal\n")
