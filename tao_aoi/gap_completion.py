"""The gap analysis as one result, and the host-side completion step after either backend.

:func:`compute` turns validated inputs into a :class:`GapResult`: the container's artifacts
(rows of ``kpi_gaps.parquet``, ``weak_samples_breakdown.txt``, ``threshold.txt``) and what this
bank adds (per-row ``input_path``/``object_name``/``lighting``/``misclassified`` and the other
CSV columns, ``metrics.json``, ``unreachable_kpi.txt``). The local runner writes all of it at
once. After the container, :func:`complete` recomputes the same result from the same inputs,
cross-checks the container's threshold and kept rows against it (a disagreement means another
image version or CLI drift: stop), and adds what the container does not write.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tao_aoi import gap_analysis as ga
from tao_aoi.cli import RunFailed, UsageError
from tao_aoi.contract import (ADDED_GAPS_COLUMNS, BREAKDOWN_FILE, CONTAINER_GAPS_COLUMNS, GAPS_FILE,
                              METRICS_FILE, THRESHOLD_FILE, UNREACHABLE_FILE)
from tao_aoi.contract import MARK_DEGENERATE, MARK_MISSING_IMAGES, MARK_UNREACHABLE


@dataclass(frozen=True)
class GapResult:
    inputs: object  # GapInputs
    point: ga.OperatingPoint
    weakness: np.ndarray  # every row
    group_codes: np.ndarray  # every row: index into group_names
    group_names: list[str]  # stripped, upper-cased labels
    kept: np.ndarray  # kept rows in output order
    filepaths: list[str]  # kept x lightings
    labels: list[str]  # kept rows' labels, stripped (as the container writes them)
    breakdown: str
    threshold_text: str | None  # None when the threshold was pinned (no threshold.txt)
    curve: ga.Curve | None  # None without rows or without NO_PASS rows
    positive: np.ndarray  # every row: NO_PASS
    missing_images: int | None = None  # among the kept rows' images
    image_coverage: dict | None = None  # over the whole CSV (sampled when large)

    @property
    def n_lightings(self) -> int:
        return len(self.inputs.lightings)

    # cached: the artifacts and the summary of one result all read these (a new result from
    # dataclasses.replace starts with an empty cache)
    @cached_property
    def misclassified(self) -> np.ndarray:
        """Every row: on the wrong side of the threshold by the prediction rule."""
        return (self.inputs.scores > self.point.threshold) != self.positive

    @cached_property
    def tradeoff(self) -> dict:
        """:func:`tradeoff` of this result, computed once for metrics.json and the summary."""
        return tradeoff(self)


def _groups(inputs) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Per row: normalised-label code, the names, and whether the row is NO_PASS."""
    codes, names = ga.group_codes(inputs.label_values)
    rows = codes[inputs.label_codes] if inputs.label_codes.size else inputs.label_codes
    pass_code = np.array([n == "PASS" for n in names], dtype=bool)
    return rows, names, ~pass_code[rows] if rows.size else np.zeros(0, dtype=bool)


def compute(inputs) -> GapResult:
    """The whole analysis; pure (no I/O). Raises ga.UnreachableKPI like the container."""
    group, names, positive = _groups(inputs)
    curve = (ga.threshold_curve(inputs.scores, positive)
             if inputs.n_rows and positive.any() else None)
    if inputs.pinned is None:
        if curve is None:
            raise ga.UnreachableKPI(ga.unreachable_message(inputs.min_recall))
        point = ga.choose_point(curve, inputs.min_recall)
        threshold_text = str(point.threshold)
    else:
        point = ga.pinned_point(inputs.scores, positive, inputs.pinned, inputs.min_recall)
        threshold_text = None
    weak = ga.weakness(inputs.scores, positive, point.threshold)
    kept = ga.top_k_rows(weak, group, inputs.top_k)
    kept_names = [names[c] for c in group[kept]]
    breakdown = ga.breakdown_text(point.threshold, inputs.top_k, inputs.n_rows, kept_names, weak[kept])
    ip, on = inputs.text("input_path", kept), inputs.text("object_name", kept)
    filepaths = ga.expand(range(kept.size), ip, on, inputs.lightings, inputs.image_ext,
                          inputs.kpi_media_path)
    labels = [inputs.label_values[c].strip() for c in inputs.label_codes[kept]]
    return GapResult(inputs, point, weak, group, names, kept, filepaths, labels, breakdown,
                     threshold_text, curve, positive)


# ----------------------------------------------------------------------------- our additions

def _missing(filepaths: Sequence[str], listing: dict | None = None) -> int:
    """How many paths do not exist; lists each folder once instead of one stat per file."""
    listing = {} if listing is None else listing
    missing = 0
    for fp in filepaths:
        folder, _, name = fp.rpartition("/")
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(folder or "."))
            except OSError:
                listing[folder] = None
        names = listing[folder]
        missing += names is None or name not in names
    return missing


IMAGE_SAMPLE = 2000  # samples checked on disk when the CSV is larger (fixed seed: repeatable)
MOSTLY_MISSING = 0.5


def _suggest_root(inputs, rows) -> str | None:
    """A root under which the missing images resolve: the parent of kpi_media_path or one of
    its sub-folders (the usual off-by-one-level mistakes)."""
    root = Path(inputs.kpi_media_path or ".")
    candidates = [root.parent] + sorted(p for p in root.iterdir() if p.is_dir())[:50] \
        if root.is_dir() else [root.parent]
    probes = list(zip(inputs.text("input_path", rows[:20]), inputs.text("object_name", rows[:20])))
    light, ext = inputs.lightings[0], inputs.image_ext
    best, hits = None, 0
    for cand in candidates:
        n = sum(Path(ga.image_path(str(cand), ip, on, light, ext)).exists() for ip, on in probes)
        if n > hits:
            best, hits = str(cand), n
    return best


def image_coverage(inputs) -> dict:
    """Samples of the whole CSV with at least one lighting missing on disk."""
    n = inputs.n_rows
    sampled = n > IMAGE_SAMPLE
    rows = (np.sort(np.random.default_rng(0).choice(n, IMAGE_SAMPLE, replace=False)) if sampled
            else np.arange(n))
    paths = ga.expand(range(rows.size), inputs.text("input_path", rows), inputs.text("object_name", rows),
                      inputs.lightings, inputs.image_ext, inputs.kpi_media_path)
    n_l = len(inputs.lightings)
    listing: dict[str, set | None] = {}
    incomplete = []
    for i in range(rows.size):
        for fp in paths[i * n_l:(i + 1) * n_l]:
            if _missing([fp], listing):
                incomplete.append(int(rows[i]))
                break
    mostly = rows.size > 0 and len(incomplete) > MOSTLY_MISSING * rows.size
    return {"samples_checked": int(rows.size), "samples_incomplete": len(incomplete),
            "sampled": sampled,
            "suggested_root": _suggest_root(inputs, np.asarray(incomplete)) if mostly else None}


def with_image_checks(result: GapResult) -> GapResult:
    return replace(result, missing_images=_missing(result.filepaths),
                   image_coverage=image_coverage(result.inputs))


def mostly_missing(result: GapResult) -> str | None:
    """The stop message when most samples of the CSV have no images under kpi_media_path."""
    cov = result.image_coverage or {}
    if not cov.get("samples_checked") or cov["samples_incomplete"] <= MOSTLY_MISSING * cov["samples_checked"]:
        return None
    hint = (f"; kpi_media_path={cov['suggested_root']} resolves them: rerun with that root"
            if cov.get("suggested_root") else "; check kpi_media_path (DATASET)")
    return (f"{MARK_MISSING_IMAGES} {cov['samples_incomplete']} of {cov['samples_checked']} "
            f"{'sampled ' if cov['sampled'] else ''}samples have images missing under "
            f"kpi_media_path={result.inputs.kpi_media_path!r}{hint}")


def gaps_table(result: GapResult, container=None):
    """``kpi_gaps.parquet``: the container's four columns (``container``, when given, is the
    table the container wrote: its columns are kept as they are), then ours."""
    import pyarrow as pa

    inputs, n_l = result.inputs, result.n_lightings
    rep = np.repeat(result.kept, n_l)
    if container is None:
        cols = {"filepath": pa.array(result.filepaths, pa.string()),
                "label": pa.array([v for v in result.labels for _ in range(n_l)], pa.string()),
                "siamese_score": pa.array(inputs.scores[rep], pa.float64()),
                "weakness": pa.array(result.weakness[rep], pa.float64())}
        if rep.size == 0:  # the container builds an empty frame of object columns: Arrow nulls
            cols = {k: pa.nulls(0) for k in cols}
    else:
        cols = {k: container.column(k) for k in CONTAINER_GAPS_COLUMNS}
    wrong = result.misclassified[rep]
    lightings = [light for _ in range(result.kept.size) for light in inputs.lightings]
    cols["input_path"] = pa.array(np.repeat(inputs.text("input_path", result.kept), n_l).tolist()
                                  if rep.size else [], pa.string())
    cols["object_name"] = pa.array(np.repeat(inputs.text("object_name", result.kept), n_l).tolist()
                                   if rep.size else [], pa.string())
    cols["lighting"] = pa.array(lightings, pa.string())
    cols["misclassified"] = pa.array(wrong, pa.bool_())
    taken = set(CONTAINER_GAPS_COLUMNS) | set(ADDED_GAPS_COLUMNS)
    for name in inputs.table.columns:
        if str(name) not in taken and name not in ("siamese_score", "output_score"):
            cols[str(name)] = pa.array(inputs.table[name].iloc[rep])
    return pa.table(cols)


def metrics(result: GapResult) -> dict:
    inputs, p = result.inputs, result.point
    wrong = result.misclassified
    return {
        "threshold": p.threshold,
        "threshold_mode": p.mode,
        "min_recall": p.min_recall,
        "top_k_per_label": inputs.top_k,
        "selection_mode": "top_k",
        "precision": p.precision, "recall": p.recall, "f1": p.f1, "far": p.far,
        "confusion_matrix": p.confusion_matrix,
        "recall_target_met": p.recall_target_met,
        "inference_csv": str(Path(inputs.csv_path).resolve()),
        "kpi_media_path": inputs.kpi_media_path,
        "n_rows": inputs.n_rows, "n_pass": p.tn + p.fp, "n_no_pass": p.tp + p.fn,
        "n_candidates": p.n_candidates, "n_candidates_meeting_recall": p.n_feasible,
        "kept_rows": int(result.kept.size), "expanded_rows": len(result.filepaths),
        "lightings": list(inputs.lightings), "image_ext": inputs.image_ext,
        "missing_images": result.missing_images,
        "image_coverage": result.image_coverage,
        "per_label": ga.per_label_stats(result.weakness, wrong, result.group_codes, result.group_names),
        **result.tradeoff,
    }


def tradeoff(result: GapResult) -> dict:
    """What the recall target costs: the operating curve, the samples that pin the threshold,
    and whether the chosen point is degenerate (flags most PASS rows)."""
    inputs, p = result.inputs, result.point
    if result.curve is None:
        return {"operating_curve": [], "threshold_pinned_by": [], "relaxed_target": None,
                "degenerate_threshold": False,
                "threshold_readable": ga.describe_threshold(p.threshold, inputs.scores)}
    rows = ga.pinning_rows(inputs.scores, result.positive, result.curve, p)[:20]
    pinned_by = [{"input_path": ip, "object_name": on, "label": inputs.label_values[c],
                  "score": float(inputs.scores[r])}
                 for r, ip, on, c in zip(rows.tolist(), inputs.text("input_path", rows),
                                         inputs.text("object_name", rows), inputs.label_codes[rows])]
    curve = result.curve
    ok = np.flatnonzero(curve.fp < ga.DEGENERATE_FAR * curve.n_neg) if curve.n_neg else []
    # the highest recall any non-degenerate threshold reaches: the cheapest target to relax to
    relaxed = (ga.operating_curve(curve, [float(curve.recall[ok].max())])[0]
               if len(ok) and curve.recall[ok].max() < p.min_recall else None)
    return {"operating_curve": ga.operating_curve(curve, (*ga.RECALL_TARGETS, p.min_recall)),
            "threshold_pinned_by": pinned_by, "relaxed_target": relaxed,
            "degenerate_threshold": bool(ga.is_degenerate(p, inputs.scores, result.positive)),
            "threshold_readable": ga.describe_threshold(p.threshold, inputs.scores)}


def degenerate_warning(m: dict) -> str | None:
    """One line naming the pinning samples and the cheapest relaxed target, or None."""
    if not m.get("degenerate_threshold"):
        return None
    who = ", ".join(f"{r['input_path']}/{r['object_name']} ({r['label']}, score {r['score']:.6g})"
                    for r in m["threshold_pinned_by"][:5]) or "no single sample (the F1 optimum)"
    cm = m["confusion_matrix"]
    better = m.get("relaxed_target")
    hint = (f"; cheapest relaxed target: min_recall={better['min_recall']:.6g} gives threshold "
            f"{better['threshold']:.6g}, recall {better['recall']:.4f}, FAR {better['far']:.3f} "
            f"({better['false_alarms']} false alarms)" if better else "")
    return (f"{MARK_DEGENERATE}: threshold {m['threshold_readable']} flags {cm['fp']} of "
            f"{cm['fp'] + cm['tn']} PASS rows (FAR {m['far']:.3f}); held down by: {who}{hint}")


def metrics_json(result: GapResult) -> str:
    return json.dumps(ga.json_safe(metrics(result)), indent=2, allow_nan=False) + "\n"


def unreachable_text(inputs) -> str:
    _, names, positive = _groups(inputs)
    n_pos = int(np.count_nonzero(positive))
    why = ("the CSV holds no NO_PASS (defect) row, so NO_PASS recall is undefined" if n_pos == 0
           else "no candidate threshold reaches the target")
    return (f"{MARK_UNREACHABLE}: {ga.unreachable_message(inputs.min_recall)}\n"
            f"min_recall: {inputs.min_recall}\n"
            f"rows: {inputs.n_rows} (PASS {inputs.n_rows - n_pos}, NO_PASS {n_pos})\n"
            f"labels: {', '.join(names)}\n"
            f"inference csv: {inputs.csv_path}\n"
            f"why: {why}\n"
            f"what to do: check that the CSV holds the defect samples of the test set, or lower "
            f"min_recall; no threshold was chosen and no weak samples were ranked.\n")


def write_unreachable(inputs, results_dir: Path) -> None:
    from tao_aoi import atomic
    from tao_aoi.data_services.gap_analysis_vcn_aoi import superseded

    with atomic.atomic_paths(results_dir / UNREACHABLE_FILE,
                             remove=superseded(results_dir, (UNREACHABLE_FILE,))) as (tmp,):
        tmp.write_text(unreachable_text(inputs), encoding="utf-8")


def summary(result: GapResult, results_dir: Path) -> str:
    p, inputs = result.point, result.inputs
    how = (f"sweep: best F1 among {p.n_feasible} of {p.n_candidates} candidates with recall >= "
           f"{p.min_recall}" if p.mode == "sweep" else "pinned: used as given, no threshold.txt")
    lines = [f"rows: {inputs.n_rows} (PASS {p.tn + p.fp}, NO_PASS {p.tp + p.fn}); lightings: "
             f"{', '.join(inputs.lightings)}",
             f"threshold: {ga.describe_threshold(p.threshold, inputs.scores)} ({how})",
             f"precision {p.precision:.4f}  recall {p.recall:.4f}  f1 {p.f1:.4f}  far {p.far:.4f}  "
             f"(tp {p.tp}, fp {p.fp}, tn {p.tn}, fn {p.fn})"]
    if p.mode == "pinned" and not p.recall_target_met:
        lines.append(f"note: at the pinned threshold recall is {p.recall:.6f}, below min_recall "
                     f"{p.min_recall} (the container does not check a pinned threshold)")
    warning = degenerate_warning({**result.tradeoff, "confusion_matrix": p.confusion_matrix,
                                  "far": p.far, "min_recall": p.min_recall})
    if warning:
        lines.append(warning)
    lines.append(result.breakdown.rstrip("\n"))
    lines.append(f"expanded rows: {len(result.filepaths)} ({result.kept.size} x "
                 f"{result.n_lightings} lightings)")
    if result.missing_images:
        lines.append(f"{MARK_MISSING_IMAGES} {result.missing_images} of {len(result.filepaths)} "
                     f"expanded filepaths do not exist under kpi_media_path={inputs.kpi_media_path!r}")
    elif result.missing_images == 0:
        lines.append(f"images: all {len(result.filepaths)} expanded filepaths exist")
    cov = result.image_coverage or {}
    if cov.get("samples_incomplete"):
        lines.append(f"{MARK_MISSING_IMAGES} {cov['samples_incomplete']} of {cov['samples_checked']} "
                     f"{'sampled ' if cov['sampled'] else ''}samples of the whole CSV miss at least "
                     f"one lighting image")
    lines.append(f"output: {results_dir.resolve()}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- completion

class Drift(RunFailed):
    """The container wrote something this bank's computation does not reproduce."""


def _drift(what: str) -> Drift:
    return Drift(f"cross-check failed: {what}. The container and this skill bank disagree: a "
                 f"different image version or CLI drift (check versions.yaml and `--cfg=job`); "
                 f"stop and report it")


def _check_rows(result: GapResult, table) -> None:
    """The container's rows against ours. Equal weakness may come out in another order there
    (its sort is unstable), and at a top-K boundary another of the tied rows may be kept; so
    runs of equal weakness are compared as multisets of (group, score)."""
    if table.num_rows != len(result.filepaths):
        raise _drift(f"{GAPS_FILE} has {table.num_rows} rows, expected {len(result.filepaths)}")
    if table.num_rows == 0:
        return
    theirs_w = np.asarray(table.column("weakness").to_numpy(zero_copy_only=False), dtype=np.float64)
    rep = np.repeat(result.kept, result.n_lightings)
    ours_w = result.weakness[rep]
    if not np.array_equal(theirs_w, ours_w):
        raise _drift(f"{GAPS_FILE} weakness values differ from this bank's (first at row "
                     f"{int(np.flatnonzero(theirs_w != ours_w)[0])})")
    ours_fp = result.filepaths
    theirs_fp = table.column("filepath").to_pylist()
    if theirs_fp == ours_fp:
        return
    # rows of equal weakness may hold different scores (t - s rounds), so the group is the key
    theirs_key = sorted(zip(theirs_w.tolist(), map(ga.normalize_label, table.column("label").to_pylist())))
    ours_key = sorted(zip(ours_w.tolist(), (result.group_names[c] for c in result.group_codes[rep])))
    if theirs_key != ours_key:
        raise _drift(f"{GAPS_FILE} keeps other rows than this bank computes")


def _map_container_rows(result: GapResult, table) -> GapResult:
    """Re-point ``result`` at the rows the container kept, in its order (tie order may differ)."""
    inputs, n_l = result.inputs, result.n_lightings
    theirs = table.column("filepath").to_pylist()
    if theirs == result.filepaths:
        return result
    # candidates: every row tied with a kept one in its group
    floor = {}
    for r in result.kept:
        g = result.group_codes[r]
        floor[g] = min(floor.get(g, np.inf), result.weakness[r])
    cand = np.flatnonzero([result.weakness[i] >= floor.get(result.group_codes[i], np.inf)
                           for i in range(inputs.n_rows)])
    paths = ga.expand(range(cand.size), inputs.text("input_path", cand), inputs.text("object_name", cand),
                      inputs.lightings, inputs.image_ext, inputs.kpi_media_path)
    where: dict[str, list[int]] = {}
    for j, fp in enumerate(paths):
        where.setdefault(fp, []).append(int(cand[j // n_l]))
    scores = table.column("siamese_score").to_pylist()
    labels = table.column("label").to_pylist()
    kept = []
    for i in range(0, len(theirs), n_l):
        # the first unused candidate with this image, score and label (duplicated samples)
        rows = where.get(theirs[i], [])
        match = next((r for r in rows if inputs.scores[r] == scores[i]
                      and inputs.label_values[inputs.label_codes[r]].strip() == labels[i]), None)
        if match is None:
            raise _drift(f"{GAPS_FILE} row {i} names no sample this bank would keep with that "
                         f"score and label")
        rows.remove(match)
        kept.append(match)
    kept = np.asarray(kept, dtype=np.int64)
    labels = [inputs.label_values[c].strip() for c in inputs.label_codes[kept]]
    return replace(result, kept=kept, filepaths=theirs, labels=labels)


def _threshold_found(path: Path, results_dir: Path) -> str:
    """threshold.txt's number as written (never its other text: it is quoted in messages);
    'nothing' when absent, UsageError when it is a link out of the results folder."""
    from tao_aoi.paths import PathEscape, read_text_within

    if not (path.is_file() or path.is_symlink()):
        return "nothing"
    try:
        text = read_text_within(path, results_dir, limit=4096, what=THRESHOLD_FILE).strip()
    except PathEscape as exc:
        raise UsageError(str(exc)) from None
    try:
        float(text)
    except ValueError:
        return "no number"
    return text


def complete(cfg: Mapping, images_optional: bool = False) -> int:
    """After ``"$DS" gap_analysis vcn_aoi`` on either backend: cross-check, then add ours."""
    import pyarrow.parquet as pq

    from tao_aoi import atomic
    from tao_aoi.data_services import gap_analysis_vcn_aoi as action
    from tao_aoi.parquet_tools import read_table

    cfg = action.config(cfg)
    inputs = action.load(cfg)
    results_dir = Path(cfg.results_dir)
    atomic.settle(results_dir)  # a set a killed run committed is finished before it is read
    try:
        result = compute(inputs)
    except ga.UnreachableKPI as exc:
        if (results_dir / GAPS_FILE).is_file():
            raise _drift(f"the container wrote {GAPS_FILE}, but no threshold reaches "
                         f"min_recall={inputs.min_recall} here") from None
        write_unreachable(inputs, results_dir)
        print(f"{MARK_UNREACHABLE}: {exc}\nwrote {results_dir / UNREACHABLE_FILE}")
        return 1
    gaps_path = results_dir / GAPS_FILE
    for name in (GAPS_FILE, BREAKDOWN_FILE):
        if not (results_dir / name).is_file() or (results_dir / name).is_symlink():
            raise UsageError(f"{results_dir / name} is missing: run `\"$DS\" gap_analysis vcn_aoi` "
                             f"into results_dir={results_dir} first (did it end with Execution "
                             f"status: PASS?)")
    if result.threshold_text is not None:
        found = _threshold_found(results_dir / THRESHOLD_FILE, results_dir)
        if found != result.threshold_text:
            raise _drift(f"{THRESHOLD_FILE} holds {found}, this bank's sweep gives "
                         f"{result.threshold_text}")
    table = read_table(gaps_path)
    missing = [c for c in CONTAINER_GAPS_COLUMNS if c not in table.column_names]
    if missing:
        raise _drift(f"{GAPS_FILE} lacks column(s) {', '.join(missing)}")
    _check_rows(result, table)
    result = with_image_checks(_map_container_rows(result, table))
    new_table = gaps_table(result, container=table)
    with atomic.atomic_paths(gaps_path, results_dir / METRICS_FILE) as (tmp_g, tmp_m):
        pq.write_table(new_table, tmp_g)
        tmp_m.write_text(metrics_json(result), encoding="utf-8")
    print(f"completion: {GAPS_FILE} and {THRESHOLD_FILE if result.threshold_text else 'the pinned threshold'} "
          f"match this bank's computation; added {', '.join(ADDED_GAPS_COLUMNS)} and {METRICS_FILE}")
    print(summary(result, results_dir))
    stop = None if images_optional else mostly_missing(result)
    if stop:
        raise RunFailed(f"{stop}. Stop here: a spot check and report on missing images would "
                        f"be empty")
    return 0


_DESCRIPTION = """\
Run right after `"$DS" gap_analysis vcn_aoi -e SPEC key=value ...`, with the same spec and
overrides, on either backend. Recomputes the analysis from inference.csv and the train YAML,
checks that the action's threshold.txt and kept rows are what this bank computes (a mismatch
means another image version or CLI drift: exit 1, stop), then adds what the container does not
write: the columns input_path, object_name, lighting, misclassified (and the CSV's other
columns) after the four of kpi_gaps.parquet, metrics.json, and unreachable_kpi.txt (exit 1)
when no threshold reaches min_recall. It also checks the images of the whole CSV on disk
(2,000 sampled samples when larger) and stops (exit 1) when most are missing, naming a root
that would resolve them. Exit 2: bad input, one line."""


def main(argv=None) -> int:
    import argparse

    from tao_aoi import specs
    from tao_aoi.cli import OneLineParser
    from tao_aoi.data_services import gap_analysis_vcn_aoi as action

    parser = OneLineParser(prog="complete_gap_analysis.py", description=_DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-e", "--experiment_spec_file", required=True, metavar="SPEC",
                        help="the spec file the action ran with")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="the same overrides the action ran with")
    parser.add_argument("--images-optional", action="store_true",
                        help="do not stop when most samples have no images under kpi_media_path "
                             "(the images live on another host)")
    args = parser.parse_args(argv)
    cfg = specs.resolve("gap_analysis", "vcn_aoi", args.experiment_spec_file, args.overrides,
                        action.ALIASES)
    return complete(cfg, images_optional=args.images_optional)
