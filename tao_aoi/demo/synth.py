"""A small, deterministic, synthetic VCN Classify experiment for the demo and the tests.

Layout written under ``workspace``::

    experiment/inference/inference.csv   input_path, golden_path, object_name, label,
                                         siamese_score, + an extra column (as TAO writes it)
    experiment/train.yaml                dataset.classify as a TAO VCN Classify spec: input_map
                                         (4 lightings), num_input, concat_type: grid,
                                         grid_map {x: 2, y: 2}, image_ext,
                                         infer_dataset.images_dir (= dataset/)
    dataset/<input_path>/<object>_<light>.jpg           96x96 renders, one per lighting
    dataset/golden/<input_path>/<object>_<light>.jpg    the sample's golden (a good part),
                                         i.e. <images_dir>/<golden_path>/<object>_<light>.jpg

Scores are drawn so that PASS and NO_PASS overlap (a realistic, imperfect model), a few
rows are deliberately mislabeled (the picture disagrees with the label), and one
component is photographed badly (dark frame). Everything comes from ``numpy``'s seeded
generator and Pillow drawing calls, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tao_aoi.labels import normalize_label

# Written in this order on purpose: the container expands lightings in the YAML key order
# (Angle first), not by index (Top is index 0, the first cell of the 2x2 grid).
INPUT_MAP = {"Angle": 1, "UV": 2, "Top": 0, "Side": 3}
GRID_MAP = {"x": 2, "y": 2}
IMAGE_EXT = ".jpg"
DEFECTS = ("MISSING", "BRIDGE", "EXCESS_SOLDER", "SHIFT", "TOMBSTONE")
# label -> (count, score mean, score sd): SHIFT and TOMBSTONE sit close to the PASS cloud.
POPULATION = {"PASS": (260, 0.22, 0.10), "MISSING": (45, 0.80, 0.08),
              "BRIDGE": (40, 0.70, 0.10), "EXCESS_SOLDER": (35, 0.62, 0.11),
              "SHIFT": (35, 0.50, 0.12), "TOMBSTONE": (30, 0.58, 0.12)}
SIZE = 96
# (tint multiplier, brightness offset) per lighting
LIGHT_LOOK = {"Top": ((1.0, 1.0, 1.0), 0), "Angle": ((0.85, 0.95, 1.1), -25),
              "UV": ((0.7, 0.6, 1.25), -10), "Side": ((1.1, 0.95, 0.8), -15)}


@dataclass
class SynthInfo:
    csv_path: Path
    train_yaml: Path
    dataset_dir: Path
    rows: int
    images: int
    mislabeled: list  # (input_path, object_name, written label, what the image shows)


def draw_component(kind: str, light: str, rng: np.random.Generator, dark: bool = False) -> bytes:
    from PIL import Image, ImageDraw, ImageFilter

    board = (28, 96, 52)
    im = Image.new("RGB", (SIZE, SIZE), board)
    d = ImageDraw.Draw(im)
    # silkscreen outline and the two copper pads
    d.rectangle([20, 30, 76, 66], outline=(220, 220, 210), width=1)
    pad = (196, 160, 92)
    d.rectangle([14, 38, 30, 58], fill=pad)
    d.rectangle([66, 38, 82, 58], fill=pad)
    body = (45, 40, 38)
    cap = (205, 205, 200)
    jitter = int(rng.integers(-2, 3))
    if kind == "MISSING":
        pass  # bare pads, nothing mounted
    elif kind == "SHIFT":
        dx, dy = 11 + jitter, 9
        d.rectangle([28 + dx, 40 + dy, 68 + dx, 56 + dy], fill=body)
    elif kind == "TOMBSTONE":
        # part standing up on one pad: short tall body, the other pad bare
        d.rectangle([22, 18, 34, 58], fill=body)
        d.rectangle([22, 18, 34, 24], fill=cap)
    else:
        d.rectangle([28, 40 + jitter, 68, 56 + jitter], fill=body)
        d.rectangle([28, 40 + jitter, 34, 56 + jitter], fill=cap)
        d.rectangle([62, 40 + jitter, 68, 56 + jitter], fill=cap)
    solder = (232, 232, 236)
    if kind == "BRIDGE":
        d.rectangle([24, 60, 72, 66], fill=solder)  # solder joining both pads
    elif kind == "EXCESS_SOLDER":
        for cx in (18, 78):
            r = 9 + int(rng.integers(0, 3))
            d.ellipse([cx - r, 48 - r, cx + r, 48 + r], fill=solder)
    else:
        d.ellipse([15, 54, 29, 60], fill=(210, 210, 215))
        d.ellipse([67, 54, 81, 60], fill=(210, 210, 215))
    arr = np.asarray(im, dtype=np.float32)
    mult, offset = LIGHT_LOOK[light]
    arr = arr * np.array(mult, dtype=np.float32) + offset
    # horizontal shading gradient so lightings differ in more than hue
    arr += np.linspace(-18, 18, SIZE, dtype=np.float32)[None, :, None] * (1 if light != "Top" else 0.3)
    arr += rng.normal(0, 4.0, arr.shape).astype(np.float32)
    if dark:
        arr = arr * 0.22
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _rows(rng: np.random.Generator) -> list[dict]:
    """One row per component (scores drawn per label), with the planted mistakes, shuffled."""
    rows = []
    counter = 0
    for label, (count, mean, sd) in POPULATION.items():
        for _ in range(count):
            counter += 1
            board = f"board_{(counter * 7) % 12 + 1:02d}"
            prefix = {"PASS": "C", "MISSING": "R", "BRIDGE": "U", "EXCESS_SOLDER": "C",
                      "SHIFT": "R", "TOMBSTONE": "C"}[label]
            obj = f"{prefix}{counter}"
            score = float(np.clip(rng.normal(mean, sd), 0.001, 0.999))
            panel = f"{board}/panel_{counter % 3 + 1}"
            rows.append({"input_path": panel, "golden_path": f"golden/{panel}", "object_name": obj,
                         "label": label, "siamese_score": round(score, 6), "shows": label,
                         "dark": False})
    # Deliberate mistakes: images that show a defect but are labelled PASS (high score),
    # and one MISSING label on a perfectly good part (lowish score). One dark frame.
    idx_pass = [i for i, r in enumerate(rows) if r["label"] == "PASS"]
    for i, shows, score in ((idx_pass[3], "BRIDGE", 0.83), (idx_pass[11], "MISSING", 0.91),
                            (idx_pass[29], "EXCESS_SOLDER", 0.77)):
        rows[i].update(shows=shows, siamese_score=score)
    idx_missing = [i for i, r in enumerate(rows) if r["label"] == "MISSING"]
    rows[idx_missing[5]].update(shows="PASS", siamese_score=0.31)
    rows[idx_pass[17]].update(dark=True, siamese_score=0.69)
    # Realistic CSV: lower-case/space variants of PASS occur in hand-edited files.
    rows[idx_pass[40]]["label"] = "pass"
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _write_images(rows: list[dict], data: Path, rng: np.random.Generator) -> int:
    """Every lighting of every sample and of its golden; returns how many files."""
    n_images = 0
    golden_renders: dict = {}
    for r in rows:
        folder = data / r["input_path"]
        folder.mkdir(parents=True, exist_ok=True)
        golden = data / r["golden_path"]
        golden.mkdir(parents=True, exist_ok=True)
        for light in INPUT_MAP:
            (folder / f"{r['object_name']}_{light}{IMAGE_EXT}").write_bytes(
                draw_component(r["shows"], light, rng, r["dark"]))
            # one golden render per (board panel, lighting), as a real golden board is shared
            key = (r["golden_path"], light)
            if key not in golden_renders:
                golden_renders[key] = draw_component("PASS", light, rng)
            (golden / f"{r['object_name']}_{light}{IMAGE_EXT}").write_bytes(golden_renders[key])
            n_images += 2
    return n_images


def _write_csv(rows: list[dict], csv_path: Path) -> None:
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["input_path", "golden_path", "object_name", "label", "siamese_score",
                    "board_side"])
        for r in rows:
            w.writerow([r["input_path"], r["golden_path"], r["object_name"], r["label"],
                        r["siamese_score"],
                        "top" if int(r["object_name"][1:]) % 2 else "bottom"])


def _write_train_yaml(train_yaml: Path, csv_path: Path, data: Path) -> None:
    map_lines = "".join(f"      {k}: {v}\n" for k, v in INPUT_MAP.items())
    train_yaml.write_text(
        "# Synthetic VCN Classify train config (demo), shaped like a TAO experiment spec.\n"
        "# The skill bank reads dataset.classify only.\n"
        "model:\n  backbone:\n    type: synthetic\n  classify:\n    train_margin_euclid: 2.0\n"
        "dataset:\n  classify:\n"
        f"    infer_dataset:\n      csv_path: {csv_path}\n      images_dir: {data}\n"
        f"    image_ext: {IMAGE_EXT}\n    image_width: {SIZE}\n    image_height: {SIZE}\n"
        f"    num_input: {len(INPUT_MAP)}\n    concat_type: grid\n"
        f"    grid_map:\n      x: {GRID_MAP['x']}\n      y: {GRID_MAP['y']}\n"
        "    input_map:\n" + map_lines +
        "train:\n  num_epochs: 1\n", encoding="utf-8")


def generate(workspace: str | Path, seed: int = 7) -> SynthInfo:
    """Write the synthetic experiment under ``workspace`` and return where things are."""
    ws = Path(workspace)
    rng = np.random.default_rng(seed)
    exp = ws / "experiment"
    data = ws / "dataset"
    (exp / "inference").mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    rows = _rows(rng)
    n_images = _write_images(rows, data, rng)
    csv_path = exp / "inference" / "inference.csv"
    _write_csv(rows, csv_path)
    train_yaml = exp / "train.yaml"
    _write_train_yaml(train_yaml, csv_path, data)
    mislabeled = [(r["input_path"], r["object_name"], r["label"], r["shows"])
                  for r in rows if r["shows"] != normalize_label(r["label"])]
    return SynthInfo(csv_path, train_yaml, data, len(rows), n_images, mislabeled)
