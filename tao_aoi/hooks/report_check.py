"""PostToolUse(Write|Edit|MultiEdit) on a report: package the run, then check the report.

Triggered only when the written file's name is one of ``report_rules.REPORT_FILES``. The report
is read from disk (the tool already wrote it), so Write, Edit and MultiEdit look the same.
Packaging (``packaging.package``) runs first and whatever the check finds, so a problem in the
report -- or a crash in the check -- never leaves a run without its provenance bundle.

The check compares the report with the artifacts in its folder and lists every problem, each
with what to fix. Rules (sections, words, artifact names, verdicts) come from ``report_rules``.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from . import report_rules as rr
from .common import emit_context, enabled, log_crash  # already loaded by the entry point

_FENCE = re.compile(r"^\s*(```|~~~)")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w])")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_IMG_TAG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)
_IMAGE_EXT = (".png", ".jpg", ".jpeg")
_ROUTING_LINE = re.compile(r"^\s*(?P<label>[^:\n]+?)\s*:\s*(?P<count>\d+)\s*\(\s*mining\s*=\s*"
                           r"(?P<mining>yes|no)\s*,\s*anomalygen\s*=\s*(?P<ag>yes|no)\s*\)", re.I | re.M)


# ---------------------------------------------------------------- markdown helpers

def _norm(name: str) -> str:
    name = name.strip().strip("#").strip()
    name = re.sub(r"^(?:\d+(?:\.\d+)*[.):]?|[A-Za-z][.)])\s+", "", name)
    name = re.sub(r"[*_`\-]+", " ", name.lower())
    return " ".join(name.split())


def split_sections(text: str) -> list[tuple[str, str, str]]:
    """``(normalised name, heading line, body)`` for every ``## `` heading outside code fences."""
    sections: list[tuple[str, str, list[str]]] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and re.match(r"^#{1,2}\s", line):
            if line.startswith("## "):
                sections.append((_norm(line[3:]), line.strip(), []))
            else:
                sections.append(("", line.strip(), []))  # a level-1 heading ends a section
            continue
        if sections:
            sections[-1][2].append(line)
    return [(n, h, "\n".join(body)) for n, h, body in sections]


def _heading_matches(norm: str, name: str) -> bool:
    want = _norm(name)
    return norm == want or (norm.startswith(want) and not norm[len(want)].isalnum())


def find_sections(text: str, names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Bodies of the required sections by name, plus problems (missing, out of order)."""
    sections = split_sections(text)
    found: dict[str, str] = {}
    positions: list[int] = []
    problems: list[str] = []
    for number, name in enumerate(names, 1):
        for index, (norm, _, body) in enumerate(sections):
            if norm and _heading_matches(norm, name):
                found[name] = body
                positions.append(index)
                break
        else:
            problems.append(f"section `## {number}. {name}` is missing: add it as a level-2 heading.")
    if positions != sorted(positions):
        problems.append("sections are out of order: use " + ", ".join(
            f"{n}. {name}" for n, name in enumerate(names, 1)) + ".")
    return found, problems


def tables(body: str) -> list[list[list[str]]]:
    """Markdown pipe tables in ``body``: a list of rows (header first), separator row dropped."""
    result: list[list[list[str]]] = []
    block: list[str] = []
    for line in body.splitlines() + [""]:
        if line.strip().startswith("|"):
            block.append(line.strip())
            continue
        if len(block) >= 2 and re.fullmatch(r"\|?[\s:|-]+\|?", block[1]) and "-" in block[1]:
            rows = [block[0]] + block[2:]
            result.append([_cells(row) for row in rows])
        block = []
    return result


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)]


def _mentions(text: str, label: str) -> bool:
    pattern = r"(?<![A-Za-z0-9_])" + re.escape(label.strip()) + r"(?![A-Za-z0-9_])"
    return re.search(pattern, text, re.I) is not None


def _uncovered(body: str, labels: list[str]) -> list[str]:
    """The labels no table cell of the section names (no part of its prose, when it has no table)."""
    found = tables(body)
    if not found:
        return [label for label in labels if not _mentions(body, label)]
    cells = [cell.replace("\\_", "_") for table in found for row in table for cell in row]
    return [label for label in labels if not any(_mentions(cell, label) for cell in cells)]


# ---------------------------------------------------------------- artifact helpers

def _parquet(folder: Path, name: str, problems: list[str], columns: tuple[str, ...],
             need_rows: bool, fix: str):
    from .parquet_meta import ParquetMetaError, read_meta

    path = folder / name
    if not path.is_file():
        problems.append(f"`{name}` is missing from the results folder{fix}.")
        return None
    try:
        meta = read_meta(path)
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


def _read_within(folder: Path, name: str) -> str:
    """A results-folder file's text; never through a link that leads outside the folder
    (``PathEscape``), and never a FIFO or other non-regular file (``OSError``)."""
    from tao_aoi.paths import read_text_within  # standard library only

    return read_text_within(folder / name, folder, what=name)


def _text_file(folder: Path, name: str, problems: list[str], fix: str) -> str | None:
    from tao_aoi.paths import PathEscape

    path = folder / name
    if not path.is_file():
        problems.append(f"`{name}` is missing from the results folder{fix}.")
        return None
    try:
        text = _read_within(folder, name)
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


def _check_artifacts(folder: Path, names: tuple[str, ...], problems: list[str], fix: str) -> dict:
    """Check a run's artifacts in order; name -> parquet footer or file text (None if unusable)."""
    found: dict = {}
    for name in names:
        if name.endswith(".parquet"):
            columns, need_rows = _PARQUET_NEEDS[name]
            found[name] = _parquet(folder, name, problems, columns, need_rows, fix)
        else:
            found[name] = _text_file(folder, name, problems, fix)
    return found


def _words(text: str, limits: tuple[int, int], report: str, problems: list[str]) -> None:
    n = rr.count_words(text)
    low, high = limits
    if n < low:
        problems.append(f"{report} has {n} words; write at least {low} (target {low}-{high}).")
    elif n > high:
        problems.append(f"{report} has {n} words; cut it to at most {high} (target {low}-{high}).")


def _simple_yaml_value(text: str, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        m = re.search(rf"^\s*{re.escape(key)}\s*:\s*(.+?)\s*$", text, re.M)
        if m:
            value = re.sub(r"\s+#.*$", "", m.group(1)).strip().strip("'\"")
            if value and value not in ("???", "null", "~"):
                return value
    return None


def ground_truth_labels(folder: Path, metrics: dict | None,
                        cwd: str | None = None) -> tuple[list[str], str]:
    """Labels of the run's inference.csv (as written) and where they came from."""
    import csv

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
            csv_path = root if root.suffix.lower() == ".csv" else root / "inference.csv"
            if not csv_path.is_file():
                continue
            labels: dict[str, None] = {}
            with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
                reader = csv.reader(fh)
                header = [h.strip() for h in next(reader, [])]
                if "label" not in header:
                    continue
                column = header.index("label")
                for row in reader:
                    if column < len(row) and row[column].strip():
                        labels.setdefault(row[column].strip())
            return list(labels), str(csv_path)
    per_label = (metrics or {}).get("per_label")
    if isinstance(per_label, dict):
        return [str(k) for k in per_label], "metrics.json per_label"
    return [], ""


# ---------------------------------------------------------------- RCA

def _check_rca_artifacts(folder: Path, problems: list[str]) -> tuple[float | None, dict | None]:
    fix = ": rerun `gap_analysis vcn_aoi` into this folder before writing the report"
    artifacts = _check_artifacts(folder, rr.RCA_ARTIFACTS, problems, fix)
    threshold = None
    # threshold.txt exists only after a sweep; a pinned threshold lives in metrics.json alone
    path = folder / rr.THRESHOLD_FILE
    text = _text_file(folder, rr.THRESHOLD_FILE, problems, fix) if path.exists() else None
    if text is not None:
        tokens = text.split()
        try:
            if len(tokens) != 1:
                raise ValueError
            threshold = float(tokens[0])
            if not math.isfinite(threshold):
                raise ValueError
        except ValueError:
            threshold = None
            # the content is not quoted: a stray file could hold anything
            problems.append(f"`threshold.txt` must hold one finite float (it holds "
                            f"{len(tokens)} token(s), not one finite number){fix}.")
    metrics = None
    text = artifacts["metrics.json"]
    if text is not None:
        try:
            metrics = json.loads(text)
            if not isinstance(metrics, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            metrics = None
            problems.append(f"`metrics.json` is not a JSON object ({exc}){fix}.")
    if metrics is not None:
        bad = [k for k in ("precision", "recall", "f1")
               if not isinstance(metrics.get(k), (int, float)) or isinstance(metrics.get(k), bool)]
        cm = metrics.get("confusion_matrix")
        if not isinstance(cm, dict) or any(not isinstance(cm.get(k), int) for k in ("tp", "fp", "tn", "fn")):
            bad.append("confusion_matrix{tp,fp,tn,fn}")
        if not isinstance(metrics.get("per_label"), dict) or not metrics.get("per_label"):
            bad.append("per_label")
        if bad:
            problems.append(f"`metrics.json` lacks or malforms {', '.join(bad)}{fix}.")
        pinned = metrics.get("threshold_mode") == "pinned"
        if pinned and isinstance(metrics.get("threshold"), (int, float)):
            # a threshold.txt next to a pinned run is stale (an earlier sweep: the container
            # does not remove it); the pinned value lives in metrics.json alone
            threshold = float(metrics["threshold"])
        elif threshold is None and not pinned and not path.exists():
            problems.append(f"`{rr.THRESHOLD_FILE}` is missing (the threshold was swept){fix}.")
    return threshold, metrics


def _threshold_source(metrics: dict | None) -> str:
    pinned = isinstance(metrics, dict) and metrics.get("threshold_mode") == "pinned"
    return "metrics.json" if pinned else rr.THRESHOLD_FILE


_THRESHOLD_WORD = re.compile(r"\bthreshold\b(?!\.txt)", re.I)
_STATED = re.compile(r"[^\d\n|]{0,40}?(?<![\w.])([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)(?![\w])")


def _threshold_text(folder: Path, metrics: dict | None) -> str | None:
    """The threshold as printed: threshold.txt after a sweep, metrics.json for a pinned run."""
    if isinstance(metrics, dict) and metrics.get("threshold_mode") == "pinned":
        value = metrics.get("threshold")
        return repr(float(value)) if isinstance(value, (int, float)) else None
    try:
        text = _read_within(folder, rr.THRESHOLD_FILE).strip()
    except (OSError, ValueError):
        return None
    return text if len(text.split()) == 1 else None


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
                m = _NUMBER.search(row[1].replace("*", ""))
                if m:
                    found.append(m.group(0))
    prose = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("|"))
    prose = prose.replace("*", "").replace("`", "")
    for m in _THRESHOLD_WORD.finditer(prose):
        n = _STATED.match(prose, m.end())
        if n:
            found.append(n.group(1))
    return found


def _check_threshold(found: dict[str, str], threshold: float, problems: list[str],
                     source: str = rr.THRESHOLD_FILE, printed: str | None = None) -> None:
    printed = printed if printed is not None else repr(threshold)
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


_CELL_NAMES = {"tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN"}
_LABELLED = re.compile(r"\b(TP|FP|TN|FN)\b\s*(?:\([^)]*\))?\s*[=:]?\s*([\d,]+)\b", re.I)


def _int(text: str) -> int | None:
    m = re.fullmatch(r"\s*\**\s*([\d,]+)\s*\**\s*", text)
    return int(m.group(1).replace(",", "")) if m else None


def confusion_cells(cm_tables: list[list[list[str]]]) -> dict[str, list[int]]:
    """Every value the tables give for each cell (tp/fp/tn/fn): "TP = 57" / "TP 57" cells,
    a "| TP | 57 |" row, a TP/FP/TN/FN header over a row of numbers, or a 2x2 matrix with
    Actual/Predicted NO_PASS/PASS headers holding bare numbers."""
    seen: dict[str, list[int]] = {k: [] for k in _CELL_NAMES}
    for table in cm_tables:
        header = [c.replace("*", "").strip().lower() for c in table[0]]
        for row in table:
            for i, cell in enumerate(row):
                plain = cell.replace("*", "").replace("`", "")
                for m in _LABELLED.finditer(plain):
                    seen[m.group(1).lower()].append(int(m.group(2).replace(",", "")))
                key = plain.strip().lower()
                if key in _CELL_NAMES and i + 1 < len(row) and row is not table[0]:
                    v = _int(row[i + 1])
                    if v is not None:
                        seen[key].append(v)
        cols = {i: h for i, h in enumerate(header) if h in _CELL_NAMES}
        for row in table[1:]:
            for i, key in cols.items():
                v = _int(row[i]) if i < len(row) else None
                if v is not None:
                    seen[key].append(v)

        def side(text: str) -> str | None:
            t = text.lower().replace("_", " ").replace("-", " ")
            if re.search(r"\bno pass\b|\bnopass\b|\bdefect", t):
                return "neg_pass"  # the NO_PASS (positive) side
            if re.search(r"\bpass\b", t):
                return "pass"
            return None
        if any("pred" in h for h in header):
            for row in table[1:]:
                if not row or "actual" not in row[0].lower() and "true" not in row[0].lower():
                    continue
                actual = side(row[0])
                for i, h in enumerate(header):
                    pred = side(h) if "pred" in h else None
                    v = _int(row[i]) if i < len(row) else None
                    if actual and pred and v is not None:
                        cell = {("neg_pass", "neg_pass"): "tp", ("neg_pass", "pass"): "fn",
                                ("pass", "neg_pass"): "fp", ("pass", "pass"): "tn"}[(actual, pred)]
                        seen[cell].append(v)
    return seen


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


def _label_key(cell: str, keys: dict[str, str]) -> str | None:
    text = cell.replace("\\_", "_").replace("`", "").replace("*", "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return keys.get(text) or keys.get(text.strip().upper())


def _check_per_label_counts(body: str, per_label: dict, problems: list[str]) -> None:
    """Rows / misclassified counts per label in the Per-Label Breakdown against metrics.json."""
    keys: dict[str, str] = {}
    for k in per_label:
        keys.setdefault(str(k), str(k))
        keys.setdefault(str(k).strip().upper(), str(k))
    columns = (("total", re.compile(r"^(rows|total|count|n|samples in csv|rows in csv)$")),
               ("n_misclassified", re.compile(r"^(misclassified|n misclassified|wrong side|errors|"
                                              r"misclassified rows|wrong)$")))
    for table in tables(body):
        header = [" ".join(c.replace("*", "").replace("_", " ").lower().split()) for c in table[0]]
        wanted = [(i, field) for i, h in enumerate(header) for field, rx in columns if rx.match(h)]
        if not wanted:
            continue
        for row in table[1:]:
            key = _label_key(row[0], keys) if row else None
            stats = per_label.get(key) if key is not None else None
            if not isinstance(stats, dict):
                continue
            for i, field in wanted:
                v = _int(row[i]) if i < len(row) else None
                want = stats.get(field)
                if v is not None and isinstance(want, int) and v != want:
                    problems.append(f"Per-Label Breakdown: {key} {table[0][i].strip()} is {v}, but "
                                    f"metrics.json per_label[{key!r}].{field} is {want}.")


def _link_targets(text: str) -> list[str]:
    from urllib.parse import unquote

    targets = [m.group(1) for m in _LINK.finditer(text)] + [m.group(1) for m in _IMG_TAG.finditer(text)]
    return [unquote(t) for t in targets]


def _is_local(target: str) -> bool:
    return not (re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.I) or target.startswith("#"))


def _check_links(folder: Path, text: str, problems: list[str]) -> list[str]:
    targets = _link_targets(text)
    broken = []
    for target in targets:
        path = target.split("#", 1)[0]
        if not path or not _is_local(target) or os.path.isabs(path):
            continue
        if not (folder / path).exists() and path not in broken:
            broken.append(path)
    if broken:
        problems.append("broken link(s): " + ", ".join(f"`{b}`" for b in broken[:10])
                        + " -- point each link at a file that exists, relative to the report.")
    return targets


def _expected_image_count(img_dir: Path) -> int:
    """10, unless the spot check recorded that a class had fewer than 5 weak samples."""
    try:
        picked = json.loads(_read_within(img_dir.parent, f"{rr.RCA_IMAGES_DIR}/{rr.RCA_SPOT_CHECK_JSON}"))
        count = len(picked["samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return rr.RCA_SPOT_CHECK_COUNT
    return count if 0 < count <= rr.RCA_SPOT_CHECK_COUNT else rr.RCA_SPOT_CHECK_COUNT


def _check_images(folder: Path, targets: list[str], problems: list[str]) -> None:
    img_dir = folder / rr.RCA_IMAGES_DIR
    want = _expected_image_count(img_dir)
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
    linked = set()
    for target in targets:
        path = os.path.normpath(target.split("#", 1)[0])
        if os.path.isabs(path):
            try:
                path = os.path.relpath(path, folder)
            except ValueError:
                continue
        linked.add(path)
    unlinked = [n for n in images if os.path.join(rr.RCA_IMAGES_DIR, n) not in linked]
    if unlinked:
        problems.append("image(s) not linked from the report: " + ", ".join(
            f"`{rr.RCA_IMAGES_DIR}/{n}`" for n in unlinked[:10])
            + f" -- link each one in the Visual Spot Check table (`![...]({rr.RCA_IMAGES_DIR}/<file>)`).")


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


def check_rca(folder: Path, text: str, cwd: str | None = None) -> list[str]:
    problems: list[str] = []
    unreachable = folder / rr.RCA_UNREACHABLE_FILE
    if unreachable.is_file():
        quoted = _text_file(folder, rr.RCA_UNREACHABLE_FILE, problems, "")
        found, section_problems = find_sections(text, rr.RCA_UNREACHABLE_SECTIONS)
        problems += section_problems
        body = found.get("Unreachable KPI")
        if body is not None and quoted:
            lines = [" ".join(ln.split()) for ln in quoted.splitlines() if len(ln.strip()) >= 12]
            flat = " ".join(body.replace(">", " ").split())
            if lines and not any(ln in flat for ln in lines) and rr.RCA_UNREACHABLE_FILE not in body:
                problems.append(f"Unreachable KPI does not quote `{rr.RCA_UNREACHABLE_FILE}`: "
                                "paste its explanation (as a quote block) into that section.")
        if any(_heading_matches(n, "Visual Spot Check") for n, _, _ in split_sections(text)):
            problems.append("the recall target is unreachable: drop the Visual Spot Check section "
                            "(the abridged report skips it).")
        actions = found.get("Recommended Actions")
        if actions is not None and not re.search(r"retrain|relabel|re-label|re-train", actions, re.I):
            problems.append("Recommended Actions of the abridged report must recommend retraining "
                            "or relabeling.")
        _check_links(folder, text, problems)
        return problems

    threshold, metrics = _check_rca_artifacts(folder, problems)
    found, section_problems = find_sections(text, rr.RCA_SECTIONS)
    problems += section_problems

    body = found.get("Threshold Selection")
    if body is not None:
        cm_tables = tables(body)
        if not cm_tables:
            problems.append("Threshold Selection has no confusion-matrix table: add one with "
                            "TP, FP, TN, FN from metrics.json.")
        elif metrics and isinstance(metrics.get("confusion_matrix"), dict):
            _check_confusion(cm_tables, metrics["confusion_matrix"], problems)
    if threshold is not None:
        _check_threshold(found, threshold, problems, _threshold_source(metrics),
                         _threshold_text(folder, metrics))

    body = found.get("Per-Label Breakdown")
    if body is not None:
        if not tables(body):
            problems.append("Per-Label Breakdown has no table: add one row per ground-truth label.")
        labels, source = ground_truth_labels(folder, metrics, cwd)
        missing = _uncovered(body, labels)
        if missing:
            problems.append("Per-Label Breakdown misses label(s) " + ", ".join(
                f"`{m}`" for m in missing[:20]) + f" (from {source}): add a row for each.")
        if metrics and isinstance(metrics.get("per_label"), dict):
            _check_per_label_counts(body, metrics["per_label"], problems)

    _check_iteration(folder, text, problems)
    targets = _check_links(folder, text, problems)
    _check_images(folder, targets, problems)
    body = found.get("Visual Spot Check")
    if body is not None:
        _check_verdicts(body, problems)
    _words(text, rr.RCA_WORDS, "RCA_Report.md", problems)
    return problems


def _check_iteration(folder: Path, text: str, problems: list[str]) -> None:
    """The optional "Change Since Last Iteration" section: its counts and FAR values must be
    those of iteration_compare.json."""
    bodies = [b for norm, _, b in split_sections(text) if norm and _heading_matches(norm, rr.RCA_ITERATION_SECTION)]
    if not bodies:
        return
    fix = (f": run `scripts/compare_iterations.py <previous rca_results/<ts>> {folder}` and take "
           f"the numbers from `iteration_compare.md`")
    try:
        data = json.loads(_read_within(folder, rr.RCA_ITERATION_JSON))
        counts = data["counts"]
        far = {side: float(data[side]["far"]) for side in ("before", "after")}
    except (OSError, ValueError, KeyError, TypeError):
        problems.append(f"{rr.RCA_ITERATION_SECTION}: `{rr.RCA_ITERATION_JSON}` is missing or "
                        f"malformed{fix}.")
        return
    values = []
    for m in _NUMBER.finditer(bodies[0]):
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


# ---------------------------------------------------------------- routing

def check_routing(folder: Path, text: str) -> list[str]:
    problems: list[str] = []
    fix = ": rerun `scripts/route_samples.py` into this folder"
    summary = _check_artifacts(folder, rr.ROUTING_ARTIFACTS, problems, fix)["routing_summary.txt"]
    found, section_problems = find_sections(text, rr.ROUTING_SECTIONS)
    problems += section_problems
    if summary is None:
        return problems
    routes = [(m.group("label").strip(), m.group("mining").lower(), m.group("ag").lower())
              for m in _ROUTING_LINE.finditer(summary)]
    body = found.get("Per-Label Routing Decisions")
    if body is not None:
        missing = _uncovered(body, [label for label, _, _ in routes])
        if missing:
            problems.append("Per-Label Routing Decisions misses label(s) " + ", ".join(
                f"`{m}`" for m in missing[:20]) + " from routing_summary.txt: add a row for each.")
    body = found.get("Dropped Labels")
    if body is not None:
        dropped = [label for label, mining, ag in routes if mining == "no" and ag == "no"]
        if dropped:
            missing = [label for label in dropped if not _mentions(body, label)]
            if missing:
                problems.append("Dropped Labels must list every label routed to neither module; "
                                "missing " + ", ".join(f"`{m}`" for m in missing[:20]) + ".")
        elif not re.search(r"\bnone\b|\bno labels?\b", body, re.I):
            problems.append("Dropped Labels: routing_summary.txt drops no label; say \"none\".")
    return problems


# ---------------------------------------------------------------- mining

def _encoder(meta, name: str, problems: list[str]) -> dict | None:
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


def check_mining(folder: Path, text: str) -> list[str]:
    problems: list[str] = []
    fix = ": rerun that mining step into this folder"
    artifacts = _check_artifacts(folder, rr.MINING_ARTIFACTS, problems, fix)
    enc_t = _encoder(artifacts["target_embeddings.parquet"], "target_embeddings.parquet", problems)
    enc_s = _encoder(artifacts["source_embeddings.parquet"], "source_embeddings.parquet", problems)
    if enc_t is not None and enc_s is not None:
        differ = [k for k in ("model", "model_path", "dim") if enc_t.get(k) != enc_s.get(k)]
        if differ:
            detail = "; ".join(f"{k}: target {enc_t.get(k)!r} vs source {enc_s.get(k)!r}" for k in differ)
            problems.append(f"the two embedding parquets come from different encoders ({detail}): "
                            "re-embed both from the same embedding_spec.yaml and rerun the k-NN; "
                            "mined neighbours across encoders are meaningless.")
    problems += find_sections(text, rr.MINING_SECTIONS)[1]
    _words(text, rr.MINING_WORDS, "Mining_Report.md", problems)
    return problems


# ---------------------------------------------------------------- hook

def check_report(path: Path, family: str, text: str | None = None, cwd: str | None = None) -> list[str]:
    if text is None:
        text = path.read_text(encoding="utf-8", errors="replace")
    folder = path.parent
    if family == "rca":
        return check_rca(folder, text, cwd)
    if family == "routing":
        return check_routing(folder, text)
    return check_mining(folder, text)


def report_target(event: dict) -> tuple[Path, str] | None:
    """The report path and family when the event wrote one of our reports, else ``None``."""
    if event.get("tool_name") not in ("Write", "Edit", "MultiEdit"):
        return None
    file_path = (event.get("tool_input") or {}).get("file_path")
    if not isinstance(file_path, str) or not file_path:
        return None
    family = rr.REPORT_FILES.get(os.path.basename(file_path))
    if family is None:
        return None
    path = Path(file_path)
    if not path.is_absolute():
        path = Path(event.get("cwd") or os.getcwd()) / path
    return path, family


def handle(event: dict) -> None:
    """Hook body for ``hooks/on_report_written.py``: package first, then check."""
    target = report_target(event)
    if target is None:
        return
    path, family = target
    if not enabled(family):
        return
    messages: list[str] = []
    try:
        from .packaging import package

        messages += package(path, family, event)
    except Exception as exc:
        log_crash("packaging")
        messages.append(f"- packaging of {rr.CONFIG_DIRS[family]}/ failed ({exc!r}); see the hook "
                        "log and rewrite the report to retry.")
    problems: list[str] = []
    try:
        if path.is_file():
            problems = check_report(path, family, cwd=event.get("cwd"))
    except Exception as exc:
        log_crash("report check")
        problems = [f"the report check crashed ({exc!r}); see the hook log."]
    if problems:
        messages = [f"tao-aoi check of {path.name}: {len(problems)} problem(s); fix each, then "
                    "rewrite the report (the check and packaging run again):"] + [
            f"- {p}" for p in problems] + messages
    emit_context(event, messages)
