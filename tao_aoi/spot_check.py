"""Visual spot check of the gap analysis: the 5 weakest PASS and 5 weakest NO_PASS samples.

Selection (deterministic):
1. collapse ``kpi_gaps.parquet`` to one row per (input_path, object_name) on the first
   lighting (the first key of ``input_map``, the container's expansion order) --
   ``parquet_tools.dedupe_first_lighting``;
2. split by the binary rule (label stripped + upper-cased == PASS);
3. in each class sort by weakness descending, ties by input_path then object_name; take 5.

Each picked image becomes a 128x128 PNG (aspect kept, padded) in ``<results>/rca_images/``
named ``NN_<LABEL>_<object>.png``; a missing or unreadable image is never a crash: its
row keeps the status and links a grey ``..._NO-IMAGE.png`` stand-in tile. ``rca_images/spot_check.json`` feeds the draft report.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

from tao_aoi.cli import UsageError
from tao_aoi.hooks import report_rules as rr
from tao_aoi.labels import is_pass_label, normalize_label
from tao_aoi.parquet_tools import (dedupe_first_lighting, read_lightings, read_parquet,
                                   square_thumbnail)

PER_CLASS = 5
THUMB_SIZE = 128
SPOT_CHECK_JSON = rr.RCA_SPOT_CHECK_JSON
REQUIRED = ("filepath", "input_path", "object_name", "label", "siamese_score", "weakness")


def _safe(text: str, limit: int = 40) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"
    return cleaned[:limit]


def pick(df, lightings: Sequence[str], image_ext: str = "", per_class: int = PER_CLASS):
    """Return (pass_rows, no_pass_rows) as DataFrames of at most ``per_class`` samples each."""
    samples = dedupe_first_lighting(df, lightings, image_ext)
    mask = samples["label"].map(is_pass_label)
    return (samples[mask].head(per_class).reset_index(drop=True),
            samples[~mask].head(per_class).reset_index(drop=True))


def _float(x):
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def run_spot_check(results_dir: str | os.PathLike, lightings: Sequence[str], image_ext: str = "",
                   per_class: int = PER_CLASS, size: int = THUMB_SIZE) -> dict:
    """Pick the samples, write thumbnails and spot_check.json; return the JSON document."""
    results_dir = Path(results_dir)
    df = read_parquet(results_dir / "kpi_gaps.parquet", required=REQUIRED)
    pass_rows, no_pass_rows = pick(df, lightings, image_ext, per_class)
    img_dir = results_dir / rr.RCA_IMAGES_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous(img_dir)

    samples = []
    n = 0
    for cls, rows in (("PASS", pass_rows), ("NO_PASS", no_pass_rows)):
        for rec in rows.to_dict(orient="records"):
            n += 1
            name = f"{n:02d}_{_safe(normalize_label(rec['label']))}_{_safe(rec['object_name'])}.png"
            src = str(rec["filepath"])
            status, image = "ok", f"{rr.RCA_IMAGES_DIR}/{name}"
            if not os.path.exists(src):
                status = "missing"
            else:
                try:
                    square_thumbnail(src, img_dir / name, size)
                except Exception as exc:
                    status = f"unreadable ({type(exc).__name__})"
            if status != "ok":
                # a labelled stand-in keeps the table complete (one linked image per row)
                name = name[:-4] + "_NO-IMAGE.png"
                image = f"{rr.RCA_IMAGES_DIR}/{name}"
                _placeholder(img_dir / name, size, status)
            weakness = _float(rec["weakness"])
            samples.append({
                "rank": n, "class": cls, "label": str(rec["label"]),
                "input_path": str(rec["input_path"]), "object_name": str(rec["object_name"]),
                "lighting": str(rec.get("lighting", "")) if rec.get("lighting") is not None else "",
                "siamese_score": _float(rec["siamese_score"]), "weakness": weakness,
                "misclassified": bool(rec["misclassified"]) if "misclassified" in rec
                else (weakness is not None and weakness > 0),
                "source": src, "image": image, "status": status, "verdict": "",
            })
    notes = []
    for cls, rows in (("PASS", pass_rows), ("NO_PASS", no_pass_rows)):
        if len(rows) < per_class:
            notes.append(f"only {len(rows)} {cls} sample(s) in kpi_gaps.parquet "
                         f"(wanted {per_class}); took what exists")
    bad = [s for s in samples if s["status"] != "ok"]
    if bad:
        notes.append(f"{rr.MARK_MISSING_IMAGES} {len(bad)} spot-check image(s) could not be "
                     "read: " + ", ".join(f"{s['source']} ({s['status']})" for s in bad))
    doc = {"first_lighting": lightings[0] if lightings else None, "per_class": per_class,
           "size": size, "samples": samples, "notes": notes}
    from tao_aoi.atomic import write_text

    write_text(img_dir / SPOT_CHECK_JSON, json.dumps(doc, indent=2) + "\n")
    return doc


def _placeholder(dest: Path, size: int, status: str) -> None:
    """A grey tile with a cross and the status word, for an image that could not be shown."""
    from PIL import Image, ImageDraw

    from tao_aoi.atomic import atomic_path

    im = Image.new("RGB", (size, size), (90, 90, 90))
    d = ImageDraw.Draw(im)
    d.line([(0, 0), (size - 1, size - 1)], fill=(160, 40, 40), width=3)
    d.line([(0, size - 1), (size - 1, 0)], fill=(160, 40, 40), width=3)
    d.text((6, size // 2 - 6), status.split(" ")[0].upper(), fill=(255, 255, 255))
    with atomic_path(dest) as tmp:
        im.save(tmp, format="PNG")


def _remove_previous(img_dir: Path) -> None:
    """Delete thumbnails a previous spot check wrote (only those it listed), so none go stale."""
    old = img_dir / SPOT_CHECK_JSON
    if not old.is_file():
        return
    try:
        prev = json.loads(old.read_text(encoding="utf-8"))
    except Exception:
        return
    for s in prev.get("samples", []):
        image = s.get("image")
        if image and "/" in image:
            target = img_dir / Path(image).name
            if target.is_file():
                target.unlink()


def label_cell(label: object) -> str:
    """A label for a markdown cell; surrounding spaces (which markdown would hide) are quoted."""
    text = str(label)
    return repr(text) if text != text.strip() or not text else text


def fmt_num(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(doc: dict, verdicts: bool = True) -> str:
    """The spot-check table: one row per sample, image link, an (empty) Verdict column."""
    head = "| # | Image | Label | Sample | Score | Weakness | Side |"
    rule = "|---|---|---|---|---|---|---|"
    if verdicts:
        head += " Verdict |"
        rule += "---|"
    lines = [head, rule]
    for s in doc["samples"]:
        img = f"![{s['rank']:02d}]({s['image']})" if s["image"] else ""
        if s["status"] != "ok":
            img += f" {s['status']}: `{s['source']}`"
        side = "wrong" if s["misclassified"] else "right"
        row = (f"| {s['rank']} | {img} | {label_cell(s['label'])} | {s['input_path']}/{s['object_name']} | "
               f"{fmt_num(s['siamese_score'])} | {fmt_num(s['weakness'])} | {side} |")
        if verdicts:
            row += f" {s.get('verdict', '')} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="spot_check.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pick the 5 weakest PASS and 5 weakest NO_PASS samples from "
                    "<results_dir>/kpi_gaps.parquet (one per input_path/object_name, first "
                    "lighting), write 128x128 PNG thumbnails into <results_dir>/rca_images/ and "
                    "print the table to fill with verdicts (mislabeled, edge case, data "
                    "quality, systematic). Also writes rca_images/spot_check.json.",
        epilog="example:\n  spot_check.py \"$RCA\" --train-config \"$TRAIN_YAML\"\n"
               "Without --train-config the lighting order comes from metrics.json.")
    p.add_argument("results_dir", help="gap-analysis results dir (holds kpi_gaps.parquet)")
    p.add_argument("--train-config", default=None,
                   help="VCN train YAML (dataset.classify.input_map decides the first lighting)")
    p.add_argument("--per-class", type=int, default=PER_CLASS, help="samples per class (default 5)")
    p.add_argument("--size", type=int, default=THUMB_SIZE, help="thumbnail side (default 128)")
    p.add_argument("--json", action="store_true", help="print spot_check.json instead of the table")
    args = p.parse_args(argv)
    results = Path(args.results_dir)
    if not results.is_dir():
        raise UsageError(f"results dir not found: {results}")
    if (results / rr.RCA_UNREACHABLE_FILE).exists():
        raise UsageError(f"{rr.RCA_UNREACHABLE_FILE} exists in {results}: the KPI is "
                         "unreachable, skip the spot check and write the abridged report")
    if args.per_class < 1 or not 8 <= args.size <= 4096:
        raise UsageError("--per-class must be >= 1 and --size between 8 and 4096")
    if args.train_config:
        lightings, ext = read_lightings(args.train_config)
    else:
        lightings, ext = _lightings_from_metrics(results)
    doc = run_spot_check(results, lightings, ext, args.per_class, args.size)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"spot check: {sum(s['class'] == 'PASS' for s in doc['samples'])} PASS + "
              f"{sum(s['class'] == 'NO_PASS' for s in doc['samples'])} NO_PASS samples, "
              f"first lighting {doc['first_lighting']}, thumbnails in "
              f"{results / rr.RCA_IMAGES_DIR}")
        print(markdown_table(doc))
        print("View each image (Read tool) and give each row one verdict: "
              + ", ".join(rr.VERDICTS) + ".")
    for note in doc["notes"]:
        print(note)
    return 0


def _lightings_from_metrics(results: Path) -> tuple[list[str], str]:
    metrics = results / "metrics.json"
    try:
        m = json.loads(metrics.read_text(encoding="utf-8"))
        lightings = [str(x) for x in m["lightings"]]
        if not lightings:
            raise ValueError
        return lightings, str(m.get("image_ext") or "")
    except Exception:
        raise UsageError(f"no --train-config given and {metrics} has no 'lightings' list; "
                         "pass --train-config")
