"""The RCA report check (``RCA_Report.md``): sections, numbers, links, spot-check images.

Two shapes: the full report of a run that reached its recall target, and the abridged one of a
run that wrote ``unreachable_kpi.txt``. Standard library only.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import report_rules as rr
from .report_artifacts import (ground_truth_labels, iteration_numbers, load_rca_run,
                               spot_check_count, text_artifact)
from .report_markdown import (NUMBER, check_words, find_sections, is_local, link_targets,
                              section_bodies, tables, uncovered)
from .report_rca_numbers import check_per_label_counts, check_threshold, check_threshold_selection

_IMAGE_EXT = (".png", ".jpg", ".jpeg")


def check_rca(folder: Path, text: str, cwd: str | None = None) -> list[str]:
    problems: list[str] = []
    if (folder / rr.RCA_UNREACHABLE_FILE).is_file():
        _check_unreachable(folder, text, problems)
        return problems
    run = load_rca_run(folder, problems)
    found, section_problems = find_sections(text, rr.RCA_SECTIONS)
    problems += section_problems
    check_threshold_selection(found.get("Threshold Selection"), run.metrics, problems)
    if run.threshold is not None:
        check_threshold(found, run.threshold, problems)
    body = found.get("Per-Label Breakdown")
    if body is not None:
        _check_per_label(body, folder, run.metrics, cwd, problems)
    _check_iteration(folder, text, problems)
    targets = _check_links(folder, text, problems)
    _check_images(folder, targets, problems)
    body = found.get("Visual Spot Check")
    if body is not None:
        _check_verdicts(body, problems)
    check_words(text, rr.RCA_WORDS, "RCA_Report.md", problems)
    return problems


def _check_unreachable(folder: Path, text: str, problems: list[str]) -> None:
    """The abridged report: it quotes unreachable_kpi.txt, skips the spot check, and
    recommends retraining or relabeling."""
    quoted = text_artifact(folder, rr.RCA_UNREACHABLE_FILE, problems, "")
    found, section_problems = find_sections(text, rr.RCA_UNREACHABLE_SECTIONS)
    problems += section_problems
    body = found.get("Unreachable KPI")
    if body is not None and quoted:
        lines = [" ".join(ln.split()) for ln in quoted.splitlines() if len(ln.strip()) >= 12]
        flat = " ".join(body.replace(">", " ").split())
        if lines and not any(ln in flat for ln in lines) and rr.RCA_UNREACHABLE_FILE not in body:
            problems.append(f"Unreachable KPI does not quote `{rr.RCA_UNREACHABLE_FILE}`: "
                            "paste its explanation (as a quote block) into that section.")
    if section_bodies(text, "Visual Spot Check"):
        problems.append("the recall target is unreachable: drop the Visual Spot Check section "
                        "(the abridged report skips it).")
    actions = found.get("Recommended Actions")
    if actions is not None and not re.search(r"retrain|relabel|re-label|re-train", actions, re.I):
        problems.append("Recommended Actions of the abridged report must recommend retraining "
                        "or relabeling.")
    _check_links(folder, text, problems)


def _check_per_label(body: str, folder: Path, metrics: dict | None, cwd: str | None,
                     problems: list[str]) -> None:
    """A table with a row for every ground-truth label, its counts those of metrics.json."""
    if not tables(body):
        problems.append("Per-Label Breakdown has no table: add one row per ground-truth label.")
    labels, source = ground_truth_labels(folder, metrics, cwd)
    missing = uncovered(body, labels)
    if missing:
        problems.append("Per-Label Breakdown misses label(s) " + ", ".join(
            f"`{m}`" for m in missing[:20]) + f" (from {source}): add a row for each.")
    if metrics and isinstance(metrics.get("per_label"), dict):
        check_per_label_counts(body, metrics["per_label"], problems)


def _check_links(folder: Path, text: str, problems: list[str]) -> list[str]:
    targets = link_targets(text)
    broken = []
    for target in targets:
        path = target.split("#", 1)[0]
        if not path or not is_local(target) or os.path.isabs(path):
            continue
        if not (folder / path).exists() and path not in broken:
            broken.append(path)
    if broken:
        problems.append("broken link(s): " + ", ".join(f"`{b}`" for b in broken[:10])
                        + " -- point each link at a file that exists, relative to the report.")
    return targets


def _check_images(folder: Path, targets: list[str], problems: list[str]) -> None:
    img_dir = folder / rr.RCA_IMAGES_DIR
    want = spot_check_count(folder)
    if not img_dir.is_dir():
        problems.append(f"`{rr.RCA_IMAGES_DIR}/` is missing: run the visual spot check "
                        f"(scripts/spot_check.py) to copy the {want} images there.")
        return
    # the overview sheet is not one of the per-sample copies (panels live in a subfolder)
    images = sorted(p.name for p in img_dir.iterdir()
                    if p.suffix.lower() in _IMAGE_EXT and p.is_file()
                    and p.name != rr.RCA_SPOT_CHECK_SHEET)
    if len(images) != want:
        problems.append(f"`{rr.RCA_IMAGES_DIR}/` holds {len(images)} image(s), expected {want} "
                        "(5 weakest PASS + 5 weakest NO_PASS, first lighting, as picked by "
                        "scripts/spot_check.py): rerun the spot check.")
    linked = _linked_paths(folder, targets)
    unlinked = [n for n in images if os.path.join(rr.RCA_IMAGES_DIR, n) not in linked]
    if unlinked:
        problems.append("image(s) not linked from the report: " + ", ".join(
            f"`{rr.RCA_IMAGES_DIR}/{n}`" for n in unlinked[:10])
            + f" -- link each one in the Visual Spot Check table (`![...]({rr.RCA_IMAGES_DIR}/<file>)`).")


def _linked_paths(folder: Path, targets: list[str]) -> set[str]:
    """Link targets as normalised paths relative to the results folder."""
    linked = set()
    for target in targets:
        path = os.path.normpath(target.split("#", 1)[0])
        if os.path.isabs(path):
            try:
                path = os.path.relpath(path, folder)
            except ValueError:
                continue
        linked.add(path)
    return linked


def _check_verdicts(body: str, problems: list[str]) -> None:
    candidates = [t for t in tables(body) if any("verdict" in c.lower() for c in t[0])]
    if not candidates:
        problems.append("Visual Spot Check has no table with a Verdict column: one row per sample "
                        f"with its image link and a verdict ({', '.join(rr.VERDICTS)}).")
        return
    bad = []
    for table in candidates:
        column = next(i for i, c in enumerate(table[0]) if "verdict" in c.lower())
        for number, row in enumerate(table[1:], 1):
            cell = row[column].lower() if column < len(row) else ""
            if not any(v in cell for v in rr.VERDICTS):
                bad.append(str(number))
    if bad:
        problems.append(f"Visual Spot Check row(s) {', '.join(bad)} have an empty or unknown "
                        f"Verdict: give each one of {', '.join(rr.VERDICTS)}.")


def _check_iteration(folder: Path, text: str, problems: list[str]) -> None:
    """The optional "Change Since Last Iteration" section: its counts and FAR values must be
    those of iteration_compare.json."""
    bodies = section_bodies(text, rr.RCA_ITERATION_SECTION)
    if not bodies:
        return
    fix = (f": run `scripts/compare_iterations.py <previous rca_results/<ts>> {folder}` and take "
           f"the numbers from `iteration_compare.md`")
    try:
        counts, far = iteration_numbers(folder)
    except (OSError, ValueError, KeyError, TypeError):
        problems.append(f"{rr.RCA_ITERATION_SECTION}: `{rr.RCA_ITERATION_JSON}` is missing or "
                        f"malformed{fix}.")
        return
    values = []
    for m in NUMBER.finditer(bodies[0]):
        try:
            values.append(float(m.group(0)))
        except ValueError:
            pass
    for key in ("fixed", "regressed", "still_misclassified"):
        if int(counts.get(key, -1)) not in values:
            problems.append(f"{rr.RCA_ITERATION_SECTION} does not state the number of "
                            f"{key.replace('_', ' ')} samples ({counts.get(key)}, from "
                            f"`{rr.RCA_ITERATION_JSON}`){fix}.")
    for side, value in far.items():
        if not any(abs(v - value) <= 5e-5 + 1e-12 for v in values):
            problems.append(f"{rr.RCA_ITERATION_SECTION} does not state the FAR {side} "
                            f"({value:.4f}, from `{rr.RCA_ITERATION_JSON}`){fix}.")
