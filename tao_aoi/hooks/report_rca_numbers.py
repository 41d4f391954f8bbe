"""The numbers an RCA report copies from its run: threshold, confusion matrix, per-label counts.

Each check finds where the report states a number (table cells, prose) and compares it with
the run's own value (``report_artifacts``). Standard library only.
"""
from __future__ import annotations

import math
import re

from tao_aoi.labels import normalize_label

from .report_artifacts import Threshold
from .report_markdown import NUMBER, cell_int, tables

_THRESHOLD_WORD = re.compile(r"\bthreshold\b(?!\.txt)", re.I)
_STATED = re.compile(r"[^\d\n|]{0,40}?(?<![\w.])([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)(?![\w])")
_CELL_NAMES = {"tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN"}
_LABELLED = re.compile(r"\b(TP|FP|TN|FN)\b\s*(?:\([^)]*\))?\s*[=:]?\s*([\d,]+)\b", re.I)
# (actual side, predicted side) -> confusion-matrix cell; NO_PASS is the positive class
_MATRIX_CELL = {("neg_pass", "neg_pass"): "tp", ("neg_pass", "pass"): "fn",
                ("pass", "neg_pass"): "fp", ("pass", "pass"): "tn"}
_PER_LABEL_COLUMNS = (
    ("total", re.compile(r"^(rows|total|count|n|samples in csv|rows in csv)$")),
    ("n_misclassified", re.compile(r"^(misclassified|n misclassified|wrong side|errors|"
                                   r"misclassified rows|wrong)$")))


# ---------------------------------------------------------------- threshold

def _decimals(text: str) -> int | None:
    """Decimals printed in a plain number, None for scientific notation."""
    t = text.lstrip("+-")
    if "e" in t.lower():
        return None
    return len(t.split(".", 1)[1]) if "." in t else 0


def same_threshold(stated: str, printed: str) -> bool:
    """Does ``stated`` (a number in the report) say the threshold ``printed`` (threshold.txt's
    text) to its precision? Plain numbers: the report must give at least min(4, the file's
    decimals) decimals, and the file's value rounded to the report's decimals must equal it.
    Scientific notation (e.g. -5e-324) on either side: the same value to 5 significant digits."""
    try:
        s, p = float(stated), float(printed)
    except ValueError:
        return False
    if not (math.isfinite(s) and math.isfinite(p)):
        return False
    ds, dp = _decimals(stated), _decimals(printed)
    if ds is None or dp is None:
        return s == p or abs(s - p) <= 5e-5 * max(abs(s), abs(p))
    if ds < min(4, dp):
        return False
    from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

    q = Decimal(1).scaleb(-ds)
    exact, want = Decimal(printed), Decimal(stated)
    return any(exact.quantize(q, rounding=r) == want for r in (ROUND_HALF_UP, ROUND_HALF_EVEN))


def stated_thresholds(body: str) -> list[str]:
    """The numbers the section gives AS the threshold: the value cell of a table row whose
    first cell names the threshold, and the first number after the word "threshold" in
    prose (up to 40 characters on, e.g. "threshold is below every score (-5e-324)")."""
    found: list[str] = []
    for table in tables(body):
        for row in table[1:]:
            if row and re.match(r"^\W*(chosen\s+)?threshold\b", row[0], re.I) and len(row) > 1:
                m = NUMBER.search(row[1].replace("*", ""))
                if m:
                    found.append(m.group(0))
    prose = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("|"))
    prose = prose.replace("*", "").replace("`", "")
    for m in _THRESHOLD_WORD.finditer(prose):
        n = _STATED.match(prose, m.end())
        if n:
            found.append(n.group(1))
    return found


def check_threshold(found: dict[str, str], threshold: Threshold, problems: list[str]) -> None:
    """Verdict and Threshold Selection must both state the run's threshold."""
    printed, source = threshold.printed, threshold.source
    for name in ("Verdict", "Threshold Selection"):
        body = found.get(name)
        if body is None:
            continue
        stated = stated_thresholds(body)
        if any(same_threshold(v, printed) for v in stated):
            continue
        if stated:
            problems.append(f"{name} does not state the threshold from {source} ({printed}): "
                            f"it gives {stated[0]}; write {printed} (at least "
                            f"{min(4, _decimals(printed) or 4)} decimals, rounded correctly).")
        else:
            problems.append(f"{name} does not state the threshold from {source} "
                            f"({printed}): write \"threshold {printed}\".")


# ---------------------------------------------------------------- confusion matrix

def _matrix_side(text: str) -> str | None:
    """Which class a 2x2 matrix header names: ``neg_pass`` (NO_PASS), ``pass`` or neither."""
    t = text.lower().replace("_", " ").replace("-", " ")
    if re.search(r"\bno pass\b|\bnopass\b|\bdefect", t):
        return "neg_pass"
    if re.search(r"\bpass\b", t):
        return "pass"
    return None


def _named_cells(table: list[list[str]], seen: dict[str, list[int]]) -> None:
    """"TP = 57" / "TP 57" cells, "| TP | 57 |" rows, and a TP/FP/TN/FN header over numbers."""
    header = [c.replace("*", "").strip().lower() for c in table[0]]
    for row in table:
        for i, cell in enumerate(row):
            plain = cell.replace("*", "").replace("`", "")
            for m in _LABELLED.finditer(plain):
                seen[m.group(1).lower()].append(int(m.group(2).replace(",", "")))
            key = plain.strip().lower()
            if key in _CELL_NAMES and i + 1 < len(row) and row is not table[0]:
                v = cell_int(row[i + 1])
                if v is not None:
                    seen[key].append(v)
    cols = {i: h for i, h in enumerate(header) if h in _CELL_NAMES}
    for row in table[1:]:
        for i, key in cols.items():
            v = cell_int(row[i]) if i < len(row) else None
            if v is not None:
                seen[key].append(v)


def _matrix_cells(table: list[list[str]], seen: dict[str, list[int]]) -> None:
    """A 2x2 matrix: Actual/True rows under Predicted columns, bare numbers inside."""
    header = [c.replace("*", "").strip().lower() for c in table[0]]
    if not any("pred" in h for h in header):
        return
    for row in table[1:]:
        if not row or "actual" not in row[0].lower() and "true" not in row[0].lower():
            continue
        actual = _matrix_side(row[0])
        for i, h in enumerate(header):
            pred = _matrix_side(h) if "pred" in h else None
            v = cell_int(row[i]) if i < len(row) else None
            if actual and pred and v is not None:
                seen[_MATRIX_CELL[(actual, pred)]].append(v)


def confusion_cells(cm_tables: list[list[list[str]]]) -> dict[str, list[int]]:
    """Every value the tables give for each cell (tp/fp/tn/fn): "TP = 57" / "TP 57" cells,
    a "| TP | 57 |" row, a TP/FP/TN/FN header over a row of numbers, or a 2x2 matrix with
    Actual/Predicted NO_PASS/PASS headers holding bare numbers."""
    seen: dict[str, list[int]] = {k: [] for k in _CELL_NAMES}
    for table in cm_tables:
        _named_cells(table, seen)
        _matrix_cells(table, seen)
    return seen


def check_threshold_selection(body: str | None, metrics: dict | None, problems: list[str]) -> None:
    """Threshold Selection needs a confusion-matrix table whose cells are metrics.json's."""
    if body is None:
        return
    cm_tables = tables(body)
    if not cm_tables:
        problems.append("Threshold Selection has no confusion-matrix table: add one with "
                        "TP, FP, TN, FN from metrics.json.")
    elif metrics and isinstance(metrics.get("confusion_matrix"), dict):
        _check_confusion(cm_tables, metrics["confusion_matrix"], problems)


def _check_confusion(cm_tables, cm: dict, problems: list[str]) -> None:
    seen = confusion_cells(cm_tables)
    for key, name in _CELL_NAMES.items():
        want = cm.get(key)
        if not isinstance(want, int):
            continue
        got = seen[key]
        if not got:
            problems.append(f"the confusion-matrix table in Threshold Selection has no {name} "
                            f"cell: write \"{name} = {want}\" (metrics.json {key}={want}).")
        elif any(v != want for v in got):
            wrong = next(v for v in got if v != want)
            problems.append(f"confusion-matrix cell {name} is {wrong} in Threshold Selection, but "
                            f"metrics.json has {key}={want}: copy the counts.")


# ---------------------------------------------------------------- per-label counts

def _label_key(cell: str, keys: dict[str, str]) -> str | None:
    text = cell.replace("\\_", "_").replace("`", "").replace("*", "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return keys.get(text) or keys.get(normalize_label(text))


def check_per_label_counts(body: str, per_label: dict, problems: list[str]) -> None:
    """Rows / misclassified counts per label in the Per-Label Breakdown against metrics.json."""
    keys: dict[str, str] = {}
    for k in per_label:
        keys.setdefault(str(k), str(k))
        keys.setdefault(normalize_label(k), str(k))
    for table in tables(body):
        header = [" ".join(c.replace("*", "").replace("_", " ").lower().split()) for c in table[0]]
        wanted = [(i, field) for i, h in enumerate(header)
                  for field, rx in _PER_LABEL_COLUMNS if rx.match(h)]
        if not wanted:
            continue
        for row in table[1:]:
            key = _label_key(row[0], keys) if row else None
            stats = per_label.get(key) if key is not None else None
            if not isinstance(stats, dict):
                continue
            for i, field in wanted:
                v = cell_int(row[i]) if i < len(row) else None
                want = stats.get(field)
                if v is not None and isinstance(want, int) and v != want:
                    problems.append(f"Per-Label Breakdown: {key} {table[0][i].strip()} is {v}, but "
                                    f"metrics.json per_label[{key!r}].{field} is {want}.")
