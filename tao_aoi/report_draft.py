"""Render ``RCA_Report.draft.md``: every number-bearing part of the RCA report, pre-filled.

The agent keeps the tables, replaces each ``<!-- AGENT: <id> | <what to write> -->``
placeholder with its own judgement, fills the spot-check Verdict column and saves the
result as ``RCA_Report.md`` (the write that triggers the report-check and packaging hooks).
This module never writes ``RCA_Report.md`` itself.

Reads from the results dir: metrics.json, threshold.txt, kpi_gaps.parquet,
weak_samples_breakdown.txt, rca_images/spot_check.json and unreachable_kpi.txt (which
switches to the abridged 4-section variant). Writes RCA_Report.draft.md and, when there are
scores to plot, score_distribution.png.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
from pathlib import Path
from typing import Sequence

from tao_aoi import atomic
from tao_aoi.cli import OneLineParser, UsageError, one_line
from tao_aoi import contract as rr
from tao_aoi.labels import is_pass_label, label_keys, normalize_label
from tao_aoi.parquet_tools import SAMPLE_KEYS, dedupe_first_lighting, read_parquet, sort_by_weakness
from tao_aoi.spot_check import label_cell

DRAFT_NAME = "RCA_Report.draft.md"
PLOT_NAME = "score_distribution.png"
TOP_ROWS_PER_LABEL = 3
PLACEHOLDER_FMT = "<!-- AGENT: {id} | {text} -->"


def placeholder(pid: str, text: str) -> str:
    return PLACEHOLDER_FMT.format(id=pid, text=text)


def _heading(n: int, name: str) -> str:
    return f"## {n}. {name}"


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "-"
    return f"{v:.{digits}f}"


def _pct(num, den) -> str:
    return "-" if not den else f"{100.0 * num / den:.1f}%"


# --------------------------------------------------------------------------- loading
class Artifacts:
    """What the gap-analysis run left in its results folder (anything may be absent)."""

    def __init__(self, results_dir: Path):
        self.dir = results_dir
        self.metrics = self._json("metrics.json")
        self.threshold_text = self._text("threshold.txt", str.strip)
        if self.threshold_text is not None and not _is_number(self.threshold_text):
            raise UsageError(f"{results_dir / 'threshold.txt'} does not hold a threshold (a number): "
                             "rerun the gap analysis")
        self.breakdown = self._text("weak_samples_breakdown.txt", str.rstrip)
        self.unreachable = self._text(rr.RCA_UNREACHABLE_FILE, str.rstrip)
        self.spot = self._json(f"{rr.RCA_IMAGES_DIR}/{rr.RCA_SPOT_CHECK_JSON}")
        gaps = self._inside("kpi_gaps.parquet")
        self.gaps = read_parquet(gaps) if gaps is not None else None

    def _inside(self, rel: str) -> Path | None:
        """``rel`` in the folder (None when absent); UsageError when a link leads out of it."""
        from tao_aoi.paths import PathEscape, resolve_within

        p = self.dir / rel
        if not (p.is_file() or p.is_symlink()):
            return None
        try:
            resolve_within(p, self.dir, rel)
        except PathEscape as exc:
            raise UsageError(str(exc)) from None
        return p

    def _text(self, rel: str, trim) -> str | None:
        p = self._inside(rel)
        return None if p is None else trim(p.read_text(encoding="utf-8", errors="replace"))

    def _json(self, rel: str) -> dict | None:
        """A JSON object of the folder; UsageError for anything else (a list, NaN, bad JSON)."""
        text = self._text(rel, str.strip)
        if text is None:
            return None

        def no_constant(name: str):
            raise ValueError(f"{name} is not a JSON number")

        try:
            doc = json.loads(text, parse_constant=no_constant)
        except ValueError as exc:
            raise UsageError(f"{self.dir / rel} is not valid JSON: {one_line(exc)}") from None
        if not isinstance(doc, dict):
            raise UsageError(f"{self.dir / rel} is not a JSON object (a {type(doc).__name__})")
        return doc

    @functools.cached_property
    def samples(self):
        """kpi_gaps collapsed to one row per sample on the first lighting (lightings from metrics)."""
        if self.gaps is None or not set(SAMPLE_KEYS) <= set(self.gaps.columns):
            return self.gaps
        lightings = list((self.metrics or {}).get("lightings") or [])
        if not lightings and "lighting" in self.gaps.columns:
            lightings = list(dict.fromkeys(self.gaps["lighting"].astype(str)))
        return dedupe_first_lighting(self.gaps, lightings, (self.metrics or {}).get("image_ext") or "")

    @property
    def threshold_shown(self):
        """The threshold as a person reads it: threshold.txt's text (full precision), or
        metrics.json's threshold_readable when it says more ("below every score (-5e-324)")."""
        plain = self.threshold
        readable = (self.metrics or {}).get("threshold_readable")
        if isinstance(readable, str) and plain is not None and readable != plain \
                and not readable.replace(".", "", 1).lstrip("-").isdigit():
            return readable if plain in readable else f"{readable} = {plain}"
        return plain

    @property
    def threshold(self):
        if self.threshold_text is not None:
            return self.threshold_text
        t = (self.metrics or {}).get("threshold")
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise UsageError(f"{self.dir / 'metrics.json'}: threshold is not a number")
        return repr(float(t))


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _read_scores(inference_dir: str | None):
    """(label, siamese_score) of the full inference CSV, or None when not given."""
    if not inference_dir:
        return None
    from tao_aoi.data_services.gap_analysis_vcn_aoi import read_inference

    path = Path(inference_dir)
    if path.is_dir():
        path = path / "inference.csv"
    if not path.is_file():
        raise UsageError(f"inference CSV not found: {path}")
    df, scores, _, _ = read_inference(path)  # the gap analysis' own checks and messages
    return df[["label"]].assign(siamese_score=scores)


# --------------------------------------------------------------------------- plot
MAX_STRIPS = 12


def _strips(labels, ok) -> tuple[object, list[str]]:
    """The label of each row (the rarest NO_PASS labels merged into one strip past
    ``MAX_STRIPS``) and the strips in order: PASS first, then by row count."""
    counts = labels[ok].value_counts()
    order = sorted(counts.index, key=lambda k: (not is_pass_label(k), -counts[k], k))
    if len(order) > MAX_STRIPS:
        keep = set(order[:MAX_STRIPS - 1])
        labels = labels.where(labels.isin(keep), "OTHER NO_PASS")
        order = order[:MAX_STRIPS - 1] + ["OTHER NO_PASS"]
    return labels, order


def _other_thresholds(threshold: float | None, curve: list | None) -> list[tuple[float, object]]:
    """(threshold, min_recall) of the operating curve's points other than the chosen one."""
    marks: list[tuple[float, object]] = []
    for point in curve or []:
        t = point.get("threshold")
        if isinstance(t, (int, float)) and math.isfinite(t) and \
                (threshold is None or t != threshold) and t not in [m[0] for m in marks]:
            marks.append((float(t), point.get("min_recall")))
    return marks


def _score_bins(scores, thresholds: list):
    """60 shared bins over every score and every threshold drawn."""
    import numpy as np

    lo, hi = float(np.nanmin(scores)), float(np.nanmax(scores))
    for t in thresholds:
        if t is not None:
            lo, hi = min(lo, t), max(hi, t)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, 61)


def _draw_strip(ax, name: str, values, n: int, bins, threshold: float | None, marks: list) -> None:
    import matplotlib.ticker

    colour = "tab:blue" if is_pass_label(name) else "tab:red"
    ax.hist(values, bins=bins, color=colour, alpha=0.75, log=True)
    ax.set_ylim(bottom=0.7)
    ax.set_ylabel(f"{name}\n(n={n})", rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2)
    for t, _ in marks:
        ax.axvline(t, color="0.45", linestyle=":", linewidth=1.0)


def _legend(top, threshold: float | None, marks: list, n_strips: int) -> None:
    if threshold is not None:
        top.plot([], [], color="black", linestyle="--", label=f"chosen threshold {threshold:.6g}")
    if marks:
        top.plot([], [], color="0.45", linestyle=":", label="min_recall " + ", ".join(
            f"{r:g} -> {t:.4g}" if isinstance(r, (int, float)) else f"{t:.4g}" for t, r in marks))
    if threshold is not None or marks:
        top.legend(loc="upper center", bbox_to_anchor=(0.5, 1.9 if n_strips > 1 else 1.5), ncol=2,
                   fontsize=7, frameon=False)


def plot_scores(scores_df, threshold: float | None, dest: Path, title_note: str,
                curve: list | None = None) -> None:
    """One strip per (normalised) label, log-scaled counts on shared bins, the chosen threshold
    (dashed) and the operating curve's other candidate thresholds (dotted, by recall target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tao_aoi.atomic import atomic_path

    scores = scores_df["siamese_score"].astype(float).to_numpy()
    ok = np.isfinite(scores)
    labels, order = _strips(label_keys(scores_df["label"]), ok)
    marks = _other_thresholds(threshold, curve)
    bins = _score_bins(scores, [threshold] + [m[0] for m in marks])
    n = len(order)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.0 + 0.85 * n), dpi=100, sharex=True,
                             squeeze=False)
    lab = labels.to_numpy()
    for ax, name in zip(axes[:, 0], order):
        sel = ok & (lab == name)
        _draw_strip(ax, name, scores[sel], int(sel.sum()), bins, threshold, marks)
    _legend(axes[0, 0], threshold, marks, n)
    axes[-1, 0].set_xlabel("siamese_score (NO_PASS predicted when score > threshold); counts log-scaled")
    fig.suptitle(f"Score distribution per label ({title_note})", fontsize=9)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------- sections
def _metrics_table(m: dict, threshold: str | None) -> list[str]:
    cm = m.get("confusion_matrix") or {}
    lines = [
        "| Metric | Value |", "|---|---|",
        f"| Threshold | {threshold if threshold is not None else '-'} ({m.get('threshold_mode', '-')}) |",
        f"| NO_PASS recall | {_f(m.get('recall'))} (target {m.get('min_recall', '-')}) |",
        f"| Precision | {_f(m.get('precision'))} |",
        f"| F1 | {_f(m.get('f1'))} |",
        f"| FAR (false-alarm rate) | {_f(m.get('far'))} |",
        f"| Rows in CSV | {m.get('n_rows', '-')} (PASS {m.get('n_pass', '-')}, "
        f"NO_PASS {m.get('n_no_pass', '-')}) |",
    ]
    lines += ["", "Confusion matrix (NO_PASS is the positive class):", "",
              "| | Predicted NO_PASS | Predicted PASS |", "|---|---|---|",
              f"| Actual NO_PASS | TP = {cm.get('tp', '-')} | FN = {cm.get('fn', '-')} |",
              f"| Actual PASS | FP = {cm.get('fp', '-')} | TN = {cm.get('tn', '-')} |"]
    return lines


def _weakness_table(samples) -> list[str]:
    lines = ["| Label | Kept samples | Min | P25 | Median | P75 | Max | Wrong side |",
             "|---|---|---|---|---|---|---|---|"]
    # groups as the container forms them (and metrics.json per_label keys): stripped, upper-cased
    for label, grp in samples.groupby(label_keys(samples["label"]), sort=True):
        w = grp["weakness"].astype(float)
        wrong = int(grp["misclassified"].astype(bool).sum()) if "misclassified" in grp \
            else int((w > 0).sum())
        q = w.quantile([0.25, 0.5, 0.75])
        lines.append(f"| {label_cell(label)} | {len(grp)} | {_f(w.min())} | {_f(q[0.25])} | {_f(q[0.5])} | "
                     f"{_f(q[0.75])} | {_f(w.max())} | {wrong} |")
    return lines


def _topk_table(samples, per_label: int) -> list[str]:
    lines = ["| Rank | Label | Sample (input_path/object_name) | Score | Weakness | Side |",
             "|---|---|---|---|---|---|"]
    shown = (samples.groupby(label_keys(samples["label"]), sort=False,
                             group_keys=False).head(per_label))
    shown = sort_by_weakness(shown)
    for i, rec in enumerate(shown.to_dict(orient="records"), 1):
        wrong = bool(rec["misclassified"]) if "misclassified" in rec else float(rec["weakness"]) > 0
        lines.append(f"| {i} | {label_cell(rec['label'])} | {rec['input_path']}/{rec['object_name']} | "
                     f"{_f(rec['siamese_score'])} | {_f(rec['weakness'])} | "
                     f"{'wrong' if wrong else 'right'} |")
    return lines


def _per_label_table(m: dict, samples) -> list[str]:
    kept = {}
    if samples is not None and "label" in samples.columns:
        kept = label_keys(samples["label"]).value_counts().to_dict()
    lines = ["| Label | Class | Rows | Misclassified | Error rate | Mean weakness | "
             "Median weakness | Max weakness | Kept samples |",
             "|---|---|---|---|---|---|---|---|---|"]
    per_label = m.get("per_label") or {}
    order = sorted(per_label, key=lambda k: (not is_pass_label(k), str(k)))
    for label in order:
        s = per_label[label] or {}
        total = s.get("total", 0)
        nmis = s.get("n_misclassified", 0)
        lines.append(f"| {label_cell(label)} | {'PASS' if is_pass_label(label) else 'NO_PASS'} | {total} | {nmis} | "
                     f"{_pct(nmis, total)} | {_f(s.get('mean_weakness'))} | "
                     f"{_f(s.get('median_weakness'))} | {_f(s.get('max_weakness'))} | "
                     f"{kept.get(normalize_label(str(label)), 0)} |")
    return lines


def _spot_table(spot: dict | None) -> list[str]:
    from tao_aoi.spot_check import markdown_table

    if not spot or not spot.get("samples"):
        return ["No spot check found (rca_images/spot_check.json is missing): run "
                "`scripts/spot_check.py` and re-draft."]
    lines = markdown_table(spot, verdicts=True).splitlines()
    for note in spot.get("notes") or []:
        lines += ["", f"Note: {note}"]
    return lines


def _fmt_thr(t) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return repr(float(t)) if abs(t) < 1e-4 and t != 0 else f"{float(t):.6g}"


def _curve_table(curve: list, chosen: float | None) -> list[str]:
    lines = ["| Recall target | Threshold | Recall | FAR | False alarms | Precision |",
             "|---|---|---|---|---|---|"]
    for c in curve:
        mark = " (chosen)" if chosen is not None and c.get("threshold") == chosen else ""
        lines.append(f"| {c.get('min_recall'):g} | {_fmt_thr(c.get('threshold'))}{mark} | "
                     f"{_f(c.get('recall'))} | {_f(c.get('far'))} | {c.get('false_alarms', '-')} | "
                     f"{_f(c.get('precision'))} |")
    return lines


def degenerate_lead(m: dict, threshold_shown: str | None) -> list[str]:
    """The Verdict's first paragraph when metrics.json flags a degenerate threshold."""
    if not m.get("degenerate_threshold"):
        return []
    cm = m.get("confusion_matrix") or {}
    fp, tn = cm.get("fp", 0), cm.get("tn", 0)
    pinned = m.get("threshold_pinned_by") or []
    who = "; ".join(f"`{r['input_path']}/{r['object_name']}` ({r['label']}, score "
                    f"{r['score']:.6g})" for r in pinned[:5])
    more = f" and {len(pinned) - 5} more" if len(pinned) > 5 else ""
    out = [f"**Degenerate threshold.** For min_recall = {m.get('min_recall')} the threshold is "
           f"{threshold_shown}: it flags {fp} of {fp + tn} PASS rows as NO_PASS (FAR "
           f"{_f(m.get('far'))}, {fp} false alarms), so at this operating point the model "
           "filters nothing. "
           + (f"It is held down by {len(pinned)} NO_PASS sample(s): {who}{more}; removing or "
              "relabelling them (after a look at the images) would move the threshold up."
              if pinned else "No single sample holds it down (the F1 optimum sits there)."), ""]
    relaxed = m.get("relaxed_target")
    if relaxed:
        out += [f"Cheapest relaxed target: min_recall = {relaxed['min_recall']:.6g} gives "
                f"threshold {_fmt_thr(relaxed['threshold'])}, recall {_f(relaxed['recall'])}, "
                f"FAR {_f(relaxed['far'])} ({relaxed['false_alarms']} false alarms).", ""]
    curve = m.get("operating_curve") or []
    if curve:
        out += ["What each recall target would cost (same selection rule, metrics.json "
                "operating_curve):", ""] + _curve_table(curve, m.get("threshold")) + [""]
    return out


def render(art: Artifacts, scores_note: str | None, per_label_rows: int = TOP_ROWS_PER_LABEL,
           plot_written: bool = False) -> str:
    name = art.dir.parent.parent.name if art.dir.parent.name == "rca_results" else art.dir.name
    out = [f"# RCA Report: VCN gap analysis of {name}", "",
           f"Results folder: `{art.dir}`", "",
           "<!-- Draft from draft_report.py: tables hold the run's numbers. Replace every "
           "AGENT placeholder, fill the Verdict column, save as RCA_Report.md. -->", ""]
    if art.unreachable is not None:
        return "\n".join(out + _render_unreachable(art)) + "\n"
    m = art.metrics
    if m is None:
        raise UsageError(f"{art.dir}/metrics.json is missing: run the gap analysis first")
    samples = art.samples
    out += _verdict_section(art, m)
    out += _threshold_section(art, m, scores_note, plot_written)
    out += _weakness_section(art, samples)
    out += _topk_section(m, samples, per_label_rows)
    out += _spot_section(art)
    vi = rr.RCA_SECTIONS
    out += [_heading(6, vi[5]), "",
            "Statistics over the full inference CSV (metrics.json per_label); "
            "kept samples come from kpi_gaps.parquet.", ""]
    out += _per_label_table(m, samples) + [""]
    out += [placeholder("per-label", "one or two sentences per label that needs attention."), ""]
    out += [_heading(7, vi[6]), "",
            placeholder("actions", "numbered, concrete actions: relabel the rows the spot check "
                        "found mislabeled, route the weak labels to augmentation/mining, "
                        "retrain, re-run this analysis."), ""]
    return "\n".join(out)


def _verdict_section(art: Artifacts, m: dict) -> list[str]:
    out = [_heading(1, rr.RCA_SECTIONS[0]), ""] + degenerate_lead(m, art.threshold_shown)
    return out + [
        placeholder("verdict", "2-4 sentences: is the model usable at this threshold, "
                    "what dominates the errors (FP vs FN, which labels), and whether the spot "
                    "check points at data or model problems."), "",
        f"At threshold {art.threshold_shown} the model reaches NO_PASS recall {_f(m.get('recall'))}"
        f" with precision {_f(m.get('precision'))} and FAR {_f(m.get('far'))} over "
        f"{m.get('n_rows', '-')} rows.", ""]


def _threshold_section(art: Artifacts, m: dict, scores_note: str | None,
                       plot_written: bool) -> list[str]:
    cands = m.get("n_candidates")
    meet = m.get("n_candidates_meeting_recall")
    mode = m.get("threshold_mode", "sweep")
    how = (f"Mode `{mode}`: {cands} candidate thresholds were tried, {meet} of them keep "
           f"NO_PASS recall at or above min_recall = {m.get('min_recall')}; the best F1 among "
           "them was chosen (ties: higher precision, then higher threshold)."
           if mode == "sweep" else
           f"Mode `{mode}`: the threshold was fixed by the caller, no sweep was run.")
    out = [_heading(2, rr.RCA_SECTIONS[1]), "", how, ""] + _metrics_table(m, art.threshold_shown) + [""]
    # a degenerate threshold already shows the curve in the Verdict
    if m.get("operating_curve") and not m.get("degenerate_threshold"):
        out += ["What each recall target would cost (same rule; metrics.json operating_curve):",
                ""] + _curve_table(m["operating_curve"], m.get("threshold")) + [""]
    if plot_written:
        out += [f"![Score distribution per label with the threshold]({PLOT_NAME})", "",
                f"Histogram of {scores_note}, one strip per label, counts log-scaled; dashed "
                "line = chosen threshold, dotted = the other recall targets' thresholds.", ""]
    return out + [placeholder("threshold", "explain what the operating point costs: how many PASS "
                              "rows are false alarms, and where the two score populations overlap."), ""]


def _weakness_section(art: Artifacts, samples) -> list[str]:
    out = [_heading(3, rr.RCA_SECTIONS[2]), ""]
    if samples is not None and len(samples):
        out += ["Signed weakness of the kept samples (one per input_path/object_name, first "
                "lighting); positive = wrong side of the threshold, value = margin.", ""]
        out += _weakness_table(samples) + [""]
    else:
        out += ["kpi_gaps.parquet holds no rows.", ""]
    if art.breakdown:
        out += ["weak_samples_breakdown.txt:", "", "```text", art.breakdown, "```", ""]
    return out + [placeholder("weakness", "which labels sit furthest on the wrong side, and which "
                              "are only marginal (right side, small margin)."), ""]


def _topk_section(m: dict, samples, per_label_rows: int) -> list[str]:
    out = [_heading(4, rr.RCA_SECTIONS[3]), ""]
    topk = m.get("top_k_per_label")
    out += [f"Selection `{m.get('selection_mode', '-')}` with top_k_per_label = {topk}: "
            f"{m.get('kept_rows', '-')} samples kept, {m.get('expanded_rows', '-')} rows after "
            f"expansion over {len(m.get('lightings') or [])} lightings "
            f"({', '.join(m.get('lightings') or [])}). The table shows the "
            f"{per_label_rows} weakest samples of each label, one row per sample.", ""]
    if samples is not None and len(samples):
        out += _topk_table(samples, per_label_rows) + [""]
    return out + [placeholder("topk", "what the weakest samples have in common (same boards, same "
                              "components, score clusters)."), ""]


def _spot_section(art: Artifacts) -> list[str]:
    out = [_heading(5, rr.RCA_SECTIONS[4]), ""]
    if art.spot and art.spot.get("first_lighting"):
        out += [f"Five weakest PASS and five weakest NO_PASS samples, first lighting "
                f"`{art.spot['first_lighting']}`, thumbnails 128x128 in `rca_images/`.", ""]
        sheet = art.spot.get("sheet") or {}
        if sheet.get("image") and (art.dir / sheet["image"]).is_file():
            lay = art.spot.get("layout") or {}
            out += [f"![Spot-check sheet: every lighting of each sample"
                    f"{' beside its golden' if lay.get('golden') else ''}]({sheet['image']})", "",
                    f"Overview sheet: each sample's lightings as {lay.get('how', 'one row')}"
                    + ("; the golden's lightings beside them" if lay.get("golden") else "")
                    + ". Per-sample panels are in `rca_images/samples/`.", ""]
    out += _spot_table(art.spot) + [""]
    return out + [placeholder("spot-check", "view each image, write one verdict per row ("
                              + ", ".join(rr.VERDICTS) + ") and summarise what you saw."), ""]


def _render_unreachable(art: Artifacts) -> list[str]:
    s = rr.RCA_UNREACHABLE_SECTIONS
    m = art.metrics or {}
    out = [_heading(1, s[0]), "",
           placeholder("verdict", "state plainly that no threshold reaches the recall target, "
                       "so the model cannot meet the KPI at any operating point."), "",
           _heading(2, s[1]), ""]
    if m:
        out += [f"Target min_recall = {m.get('min_recall', '-')}; {m.get('n_candidates', '-')} "
                f"candidate thresholds tried, {m.get('n_candidates_meeting_recall', 0)} meet it.",
                ""]
    out += ["No threshold was chosen: the recall target cannot be met.", "",
            _heading(3, s[2]), "", "unreachable_kpi.txt says:", ""]
    out += ["> " + line if line else ">" for line in art.unreachable.splitlines()] + [""]
    out += ["The weakness ranking and the visual spot check were skipped.", "",
            _heading(4, s[3]), "",
            placeholder("actions", "one recommendation: retrain (more or better NO_PASS data) or "
                        "relabel (if the labels are wrong); nothing else."), ""]
    return out


# --------------------------------------------------------------------------- driver
def draft(results_dir: str | os.PathLike, inference_dir: str | None = None,
          per_label_rows: int = TOP_ROWS_PER_LABEL, plot: bool = True) -> dict:
    results = Path(results_dir)
    if not results.is_dir():
        raise UsageError(f"results dir not found: {results}")
    atomic.settle(results)  # finish a set a killed run committed before reading it
    art = Artifacts(results)
    if art.unreachable is None and art.metrics is None:
        raise UsageError(f"{results} holds neither metrics.json nor {rr.RCA_UNREACHABLE_FILE}: "
                         "run the gap analysis first")
    scores = _read_scores(inference_dir)
    note = "every row of the inference CSV"
    if scores is None:
        scores = art.samples
        note = "the kept samples only (pass --inference-dir for the full CSV)"
    plot_written = False
    if plot and art.unreachable is None and scores is not None and len(scores):
        thr = art.threshold
        plot_scores(scores, float(thr) if thr is not None else None, results / PLOT_NAME, note,
                    (art.metrics or {}).get("operating_curve"))
        plot_written = True
    text = render(art, note, per_label_rows, plot_written)
    from tao_aoi.atomic import write_text

    dest = results / DRAFT_NAME
    write_text(dest, text)
    return {"draft": str(dest), "plot": str(results / PLOT_NAME) if plot_written else None,
            "variant": "unreachable" if art.unreachable is not None else "full",
            "words": rr.count_words(text),
            "placeholders": text.count("<!-- AGENT:")}


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="draft_report.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pre-fill the RCA report from a gap-analysis results folder: metrics, "
                    "confusion matrix, threshold, score histogram (score_distribution.png), "
                    "weakness quantiles, top-K table, spot-check table and per-label "
                    "breakdown, with <!-- AGENT: ... --> placeholders for your judgement. "
                    f"Writes {DRAFT_NAME}; you write RCA_Report.md from it. When "
                    f"{rr.RCA_UNREACHABLE_FILE} exists it drafts the abridged variant.",
        epilog="example:\n  draft_report.py \"$RCA\" --inference-dir \"$EXP/inference\"")
    p.add_argument("results_dir", help="gap-analysis results dir")
    p.add_argument("--inference-dir", default=None,
                   help="dir holding inference.csv: histogram over every row (else kept rows)")
    p.add_argument("--rows-per-label", type=int, default=TOP_ROWS_PER_LABEL,
                   help=f"rows per label in the top-K table (default {TOP_ROWS_PER_LABEL})")
    p.add_argument("--no-plot", action="store_true", help="skip score_distribution.png")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    args = p.parse_args(argv)
    if args.rows_per_label < 1:
        raise UsageError("--rows-per-label must be >= 1")
    info = draft(args.results_dir, args.inference_dir, args.rows_per_label, not args.no_plot)
    from tao_aoi import html_index

    # the offline results page, always in step with the artifacts it shows
    info["index_html"] = str(html_index.refresh(Path(args.results_dir))[0])
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"draft ({info['variant']}): {info['draft']}  [{info['words']} words, "
              f"{info['placeholders']} AGENT placeholders]")
        if info["plot"]:
            print(f"plot: {info['plot']}")
        print(f"index.html: {info['index_html']}")
        lo, hi = rr.RCA_WORDS
        print(f"Next: replace the placeholders, fill the Verdict column, and write "
              f"RCA_Report.md ({lo}-{hi} words) last.")
    return 0
