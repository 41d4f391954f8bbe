"""Visual spot check of the gap analysis: the 5 weakest PASS and 5 weakest NO_PASS samples.

Selection (deterministic):
1. collapse ``kpi_gaps.parquet`` to one row per (input_path, object_name) on the first
   lighting (the first key of ``input_map``, the container's expansion order) --
   ``parquet_tools.dedupe_first_lighting``;
2. split by the binary rule (label stripped + upper-cased == PASS);
3. in each class sort by weakness descending, ties by input_path then object_name; take 5.

What it writes under ``<results>/rca_images/``:

* ``NN_<LABEL>_<object>.png``: the first lighting as a 128x128 PNG (aspect kept, padded),
  the copy the report links; a missing or unreadable image gets a grey ``..._NO-IMAGE.png``
  stand-in (never a crash).
* ``samples/NN_<LABEL>_<object>.png``: one panel per sample showing what VCN compares:
  every lighting of the sample laid out as the train spec's ``dataset.classify.grid_map``
  (``{x: columns, y: rows}``; a single row when absent, when ``concat_type`` is ``linear``
  or when the grid holds fewer cells than lightings), tiles placed by their ``input_map``
  index when the indices are 0..N-1 (else in key order), and -- when kpi_gaps.parquet has a
  ``golden_path`` column -- the golden's lightings in the same layout beside them.
  Captioned with rank, label, score, weakness, side of the threshold and a verdict slot.
* ``spot_check_sheet.png``: all panels on one sheet (PASS left, NO_PASS right; at most
  ``SHEET_MAX_W`` px wide) for the agent to read in one call.
* ``spot_check.json``: what was picked; each sample carries ``lightings`` (the N lighting
  image paths), ``golden`` (the golden's folder, or null without ``golden_path``),
  ``golden_lightings``, ``panel``, ``tiles`` and ``missing_tiles``.

Golden image rule (chosen here, as TAO VCN classify datasets lay goldens out): the golden of
a sample is ``<kpi_media_path>/<golden_path>/<object_name>_<light><image_ext>`` -- the same
rule as the sample's own image with ``golden_path`` in place of ``input_path``.
``kpi_media_path`` is recovered from the sample's filepath (which ends in
``<input_path>/<object_name>_<light><ext>``), else from ``vcn_aoi_spec.yaml``.

Missing or unreadable images become labelled stand-in tiles and are counted. The spot check
refuses (exit 2, one line) to write through an ``rca_images`` (or ``rca_images/samples``)
symlink that leads outside the results folder.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

from tao_aoi import atomic
from tao_aoi.cli import OneLineParser, UsageError
from tao_aoi import contract as rr
from tao_aoi.labels import is_pass_label, normalize_label
from tao_aoi.paths import PathEscape, resolve_within
from tao_aoi.parquet_tools import (dedupe_first_lighting, lighting_of, read_lightings,
                                   read_parquet, save_png, square_thumbnail)

PER_CLASS = 5
THUMB_SIZE = 128
SPOT_CHECK_JSON = rr.RCA_SPOT_CHECK_JSON
SHEET_NAME = rr.RCA_SPOT_CHECK_SHEET
PANELS_DIR = rr.RCA_SPOT_CHECK_PANELS
REQUIRED = ("filepath", "input_path", "object_name", "label", "siamese_score", "weakness")

# panel geometry (pixels)
PAD = 6            # panel border
GAP = 2            # between tiles of one grid
GROUP_GAP = 14     # between the sample grid and the golden grid
CAPTION_H = 38     # two caption lines
HEADER_H = 16      # "sample" / "golden" over each grid
MIN_PANEL_W = 380  # room for the caption
SHEET_MAX_W = 2000
SHEET_MARGIN = 8
SHEET_TITLE_H = 26
SHEET_TILE_MAX = 128
SHEET_TILE_MIN = 40
PANEL_TILE_MAX = 224
VERDICT_SLOT = "verdict: ________________"


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


def _text(x) -> str | None:
    """A CSV cell as text; None for empty / NaN."""
    if x is None:
        return None
    if isinstance(x, float) and math.isnan(x):
        return None
    s = str(x).strip()
    return s or None


# --------------------------------------------------------------------------- layout
def read_layout(train_config: str | os.PathLike | None) -> dict:
    """``grid_map``, ``concat_type`` and the ``input_map`` indices of the train spec (all may be
    absent). Never raises: a layout problem only changes how tiles are drawn."""
    out = {"grid_map": None, "concat_type": None, "input_map": None, "source": None}
    if not train_config:
        return out
    try:
        import yaml

        doc = yaml.safe_load(Path(train_config).read_text(encoding="utf-8")) or {}
        classify = (doc.get("dataset") or {}).get("classify") or {}
    except Exception:
        return out
    gm = classify.get("grid_map")
    if isinstance(gm, dict):
        try:
            x, y = int(gm.get("x")), int(gm.get("y"))
            if x > 0 and y > 0:
                out["grid_map"] = {"x": x, "y": y}
        except (TypeError, ValueError):
            pass
    if isinstance(classify.get("concat_type"), str):
        out["concat_type"] = classify["concat_type"]
    if isinstance(classify.get("input_map"), dict):
        out["input_map"] = {str(k): v for k, v in classify["input_map"].items()}
    out["source"] = str(train_config)
    return out


def grid_for(lightings: Sequence[str], layout: dict) -> tuple[int, int, list[str | None], str]:
    """(columns, rows, lighting per cell in row-major order, how the layout was chosen)."""
    n = len(lightings)
    order: list[str | None] = list(lightings)
    imap = layout.get("input_map") or {}
    idx = [imap.get(name) for name in lightings]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in idx) and \
            sorted(idx) == list(range(n)):
        order = [None] * n
        for name, i in zip(lightings, idx):
            order[i] = name
    gm = layout.get("grid_map")
    if gm and (layout.get("concat_type") or "grid") != "linear":
        cols, rows = gm["x"], gm["y"]
        if cols * rows >= n:
            order += [None] * (cols * rows - n)
            return cols, rows, order, f"grid_map x={cols}, y={rows}"
        return n, 1, order, (f"one row (grid_map x={cols}, y={rows} holds fewer than {n} "
                             "lightings)")
    why = "one row (concat_type linear)" if gm else "one row (no grid_map in the train spec)"
    return n, 1, order, why


def _media_root(filepath: str, input_path: str, object_name: str, light: str, ext: str,
                fallback: str | None) -> str | None:
    tail = os.path.join(str(input_path), f"{object_name}_{light}{ext}")
    fp = str(filepath)
    if ext and fp.endswith(tail):
        return fp[:-len(tail)]
    return fallback


def _spec_values(results: Path, keys: Sequence[str]) -> dict[str, str | None]:
    """The non-empty string values of ``keys`` in the run's vcn_aoi_spec.yaml (parsed once);
    ``None`` for each key when the spec is absent or unreadable."""
    found: dict[str, str | None] = dict.fromkeys(keys)
    spec = results / "vcn_aoi_spec.yaml"
    if not spec.is_file():
        return found
    try:
        import yaml

        doc = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
        values = {key: doc.get(key) for key in keys}
    except Exception:
        return found
    return {key: str(value) if isinstance(value, str) and value.strip() else None
            for key, value in values.items()}


# --------------------------------------------------------------------------- drawing
_FONTS: dict[int, object] = {}


def _font(size: int):
    from PIL import ImageFont

    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except (TypeError, OSError, AttributeError):
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


class _Images:
    """Loaded source images (reduced once), or why they could not be loaded."""

    def __init__(self):
        self.cache: dict[str, object] = {}

    def get(self, path: str | None):
        from PIL import Image

        if path is None:
            return "no golden"
        if path not in self.cache:
            if not os.path.isfile(path):
                self.cache[path] = "missing"
            else:
                try:
                    with Image.open(path) as im:
                        im.load()
                        im = im.convert("RGB")
                        im.thumbnail((PANEL_TILE_MAX, PANEL_TILE_MAX), Image.LANCZOS)
                        self.cache[path] = im
                except Exception as exc:
                    self.cache[path] = f"unreadable ({type(exc).__name__})"
        return self.cache[path]


def _tile(img, size: int, name: str | None):
    """A ``size`` square: the image fitted and padded, or a stand-in; the lighting name on top."""
    from PIL import Image, ImageDraw

    if isinstance(img, str):
        tile = Image.new("RGB", (size, size), (90, 90, 90))
        d = ImageDraw.Draw(tile)
        d.line([(0, 0), (size - 1, size - 1)], fill=(170, 50, 50), width=2)
        d.line([(0, size - 1), (size - 1, 0)], fill=(170, 50, 50), width=2)
        word = img.split(" (")[0].upper()
        f = _font(11)
        w = d.textlength(word, font=f)
        d.rectangle([(size - w) / 2 - 3, size / 2 - 8, (size + w) / 2 + 3, size / 2 + 8],
                    fill=(40, 40, 40))
        d.text(((size - w) / 2, size / 2 - 7), word, fill=(255, 255, 255), font=f)
    else:
        tile = Image.new("RGB", (size, size), (0, 0, 0))
        w, h = img.size
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        tile.paste(img.resize((nw, nh), Image.LANCZOS), ((size - nw) // 2, (size - nh) // 2))
    if name:
        d = ImageDraw.Draw(tile)
        f = _font(10)
        label = _fit(d, name, f, size - 6)
        d.rectangle([0, 0, d.textlength(label, font=f) + 5, 13], fill=(0, 0, 0))
        d.text((2, 1), label, fill=(255, 255, 0), font=f)
    return tile


def panel_size(cols: int, rows: int, golden: bool, tile: int) -> tuple[int, int]:
    gw = cols * tile + (cols - 1) * GAP
    gh = rows * tile + (rows - 1) * GAP
    width = PAD + gw + ((GROUP_GAP + gw) if golden else 0) + PAD
    return max(width, MIN_PANEL_W), CAPTION_H + HEADER_H + gh + PAD


def _tile_for(cols: int, golden: bool, width: int, cap: int) -> int:
    across = cols * (2 if golden else 1)
    fixed = 2 * PAD + (cols - 1) * GAP * (2 if golden else 1) + (GROUP_GAP if golden else 0)
    return max(8, min(cap, (width - fixed) // across))


def render_panel(sample: dict, layout: tuple, golden: bool, tile: int, images: _Images):
    """One sample: caption, the sample's lightings in the grid, the golden's beside them."""
    from PIL import Image, ImageDraw

    cols, rows, order, _ = layout
    width, height = panel_size(cols, rows, golden, tile)
    cls_colour = (40, 90, 190) if sample["class"] == "PASS" else (190, 50, 40)
    im = Image.new("RGB", (width, height), (245, 245, 245))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, width - 1, height - 1], outline=cls_colour, width=2)
    d.rectangle([2, 2, width - 3, CAPTION_H - 2], fill=cls_colour)
    f1, f2 = _font(13), _font(12)
    score = "-" if sample["siamese_score"] is None else f"{sample['siamese_score']:.4f}"
    weak = "-" if sample["weakness"] is None else f"{sample['weakness']:+.4f}"
    side = "WRONG side" if sample["misclassified"] else "right side"
    label = sample["label"].strip() or repr(sample["label"])
    line1 = f"#{sample['rank']:02d} {label}  score {score}  weakness {weak} ({side})"
    d.text((PAD, 4), _fit(d, line1, f1, width - 2 * PAD), fill=(255, 255, 255), font=f1)
    vw = d.textlength(VERDICT_SLOT, font=f2)
    where = _fit(d, f"{sample['input_path']}/{sample['object_name']}", f2, width - 3 * PAD - vw)
    d.text((PAD, 20), where, fill=(235, 235, 235), font=f2)
    d.text((width - PAD - vw, 20), VERDICT_SLOT, fill=(255, 255, 255), font=f2)
    gw = cols * tile + (cols - 1) * GAP
    groups = [("sample", sample["_paths"])]
    if golden:
        groups.append(("golden" if sample["golden"] else "golden (none for this sample)",
                       sample["_golden_paths"]))
    missing = 0
    x0 = PAD
    for title, paths in groups:
        d.text((x0, CAPTION_H + 1), _fit(d, title, f2, gw), fill=(30, 30, 30), font=f2)
        for i, light in enumerate(order):
            if light is None:
                continue
            img = images.get(paths.get(light) if paths is not None else None)
            if isinstance(img, str):
                missing += 1
            r, c = divmod(i, cols)
            im.paste(_tile(img, tile, light),
                     (x0 + c * (tile + GAP), CAPTION_H + HEADER_H + r * (tile + GAP)))
        x0 += gw + GROUP_GAP
    return im, missing


def render_sheet(samples: list[dict], panels: list, layout: tuple, golden: bool, tile: int):
    """All panels: PASS in the left column, NO_PASS in the right (one column if too wide)."""
    from PIL import Image, ImageDraw

    cols, rows, _, how = layout
    pw, ph = panel_size(cols, rows, golden, tile)
    two = 2 * pw + 3 * SHEET_MARGIN <= SHEET_MAX_W
    if two:
        left = [p for s, p in zip(samples, panels) if s["class"] == "PASS"]
        right = [p for s, p in zip(samples, panels) if s["class"] != "PASS"]
        cells = [(0, i, p) for i, p in enumerate(left)] + [(1, i, p) for i, p in enumerate(right)]
        n_cols, n_rows = 2, max(len(left), len(right), 1)
    else:
        cells = [(0, i, p) for i, p in enumerate(panels)]
        n_cols, n_rows = 1, max(len(panels), 1)
    width = n_cols * pw + (n_cols + 1) * SHEET_MARGIN
    height = SHEET_TITLE_H + n_rows * ph + (n_rows + 1) * SHEET_MARGIN
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    title = ("Spot check: " + ("left = weakest PASS, right = weakest NO_PASS" if two else
                               "weakest PASS, then weakest NO_PASS")
             + f"; sample lightings as {how}" + ("; golden beside" if golden else ""))
    d.text((SHEET_MARGIN, 6), _fit(d, title, _font(14), width - 2 * SHEET_MARGIN),
           fill=(0, 0, 0), font=_font(14))
    for c, r, p in cells:
        sheet.paste(p, (SHEET_MARGIN + c * (pw + SHEET_MARGIN),
                        SHEET_TITLE_H + SHEET_MARGIN + r * (ph + SHEET_MARGIN)))
    return sheet, {"columns": n_cols, "rows": n_rows, "panel_size": [pw, ph]}


# --------------------------------------------------------------------------- safety
def check_output_dirs(results_dir: str | os.PathLike) -> None:
    """Refuse an rca_images (or rca_images/samples) that resolves outside the results folder."""
    results = Path(results_dir)
    for rel in (rr.RCA_IMAGES_DIR, f"{rr.RCA_IMAGES_DIR}/{PANELS_DIR}"):
        p = results / rel
        if not (p.is_symlink() or p.exists()):
            continue
        try:
            target = resolve_within(p, results, "output folder")
        except PathEscape as exc:
            raise UsageError(f"{exc} (outside the results folder): refusing to write there; "
                             "remove the link and rerun") from None
        if not target.is_dir():
            raise UsageError(f"{p} exists and is not a folder")


# --------------------------------------------------------------------------- main work
class _Run:
    """What one spot check reads: kpi_gaps.parquet, the layout, where each image lies."""

    def __init__(self, results_dir: Path, lightings: Sequence[str], image_ext: str,
                 train_config: str | os.PathLike | None):
        self.df = read_parquet(results_dir / "kpi_gaps.parquet", required=REQUIRED)
        self.lightings = list(lightings)
        if not image_ext:
            image_ext = Path(str(self.df["filepath"].iloc[0])).suffix if len(self.df) else ""
        self.image_ext = image_ext
        spec = _spec_values(results_dir, ("train_config", "kpi_media_path"))
        if train_config is None:
            train_config = spec["train_config"]
        self.layout = grid_for(self.lightings, read_layout(train_config))
        self.has_golden = "golden_path" in self.df.columns
        self.spec_root = spec["kpi_media_path"]
        self.groups = self._image_paths()

    def _image_paths(self) -> dict:
        """(input_path, object_name) -> lighting -> filepath, as kpi_gaps.parquet lists them."""
        df = self.df
        light_col = lighting_of(df, self.lightings, self.image_ext)
        groups: dict = {}
        for ip, obj, light, fp in zip(df["input_path"].astype(str), df["object_name"].astype(str),
                                      light_col, df["filepath"].astype(str)):
            if light is not None:
                groups.setdefault((ip, obj), {}).setdefault(str(light), fp)
        return groups


def _sample_paths(groups: dict, rec: dict, lightings: Sequence[str], ext: str,
                  spec_root: str | None) -> tuple[dict, str | None]:
    """lighting -> image path of one sample, and the media root its paths sit under."""
    key = (str(rec["input_path"]), str(rec["object_name"]))
    paths = dict(groups.get(key, {}))
    root = None
    for light, fp in paths.items():
        root = _media_root(fp, key[0], key[1], light, ext, None)
        if root is not None:
            break
    if root is None:
        root = spec_root
    for light in lightings:
        if light not in paths:
            base = root if root is not None else ""
            paths[light] = os.path.join(base, key[0], f"{key[1]}_{light}{ext}")
    return {light: paths[light] for light in lightings}, root


def _sample(run: _Run, rank: int, cls: str, rec: dict) -> dict:
    """One picked sample as spot_check.json lists it; ``image`` and ``status`` are set when
    its thumbnail is written, ``_paths`` / ``_golden_paths`` are for drawing only."""
    lightings, ext = run.lightings, run.image_ext
    name = f"{rank:02d}_{_safe(normalize_label(rec['label']))}_{_safe(rec['object_name'])}.png"
    weakness = _float(rec["weakness"])
    paths, root = _sample_paths(run.groups, rec, lightings, ext, run.spec_root)
    golden_dir = _text(rec.get("golden_path")) if run.has_golden else None
    golden_paths = None
    if golden_dir is not None:
        golden_dir = os.path.join(root or "", golden_dir)
        golden_paths = {light: os.path.join(golden_dir, f"{rec['object_name']}_{light}{ext}")
                        for light in lightings}
    return {
        "rank": rank, "class": cls, "label": str(rec["label"]),
        "input_path": str(rec["input_path"]), "object_name": str(rec["object_name"]),
        "lighting": str(rec.get("lighting", "")) if rec.get("lighting") is not None else "",
        "siamese_score": _float(rec["siamese_score"]), "weakness": weakness,
        "misclassified": bool(rec["misclassified"]) if "misclassified" in rec
        else (weakness is not None and weakness > 0),
        "source": str(rec["filepath"]), "image": f"{rr.RCA_IMAGES_DIR}/{name}", "status": "ok",
        "verdict": "",
        "lightings": [paths[light] for light in lightings],
        "golden": golden_dir,
        "golden_lightings": ([golden_paths[light] for light in lightings]
                             if golden_paths else None),
        "panel": f"{rr.RCA_IMAGES_DIR}/{PANELS_DIR}/{name}",
        "tiles": len(lightings) * (2 if run.has_golden else 1),
        "_paths": paths, "_golden_paths": golden_paths,
    }


def _image_dir(results_dir: Path) -> Path:
    """rca_images/ and its samples/ folder, created inside the results folder; the previous
    spot check's images removed. Returns where rca_images really is."""
    from tao_aoi.paths import PathEscape, ensure_dir_within

    img_dir = results_dir / rr.RCA_IMAGES_DIR
    try:  # every component checked before it is created: nothing goes through a link out
        # write where the checked path really is, not through the name again
        img_dir = ensure_dir_within(img_dir, results_dir, "rca_images")
        _remove_previous(img_dir)
        ensure_dir_within(img_dir / PANELS_DIR, results_dir, "rca_images/samples")
    except PathEscape as exc:
        raise UsageError(f"{exc}: refusing to write there; remove the link and rerun") from None
    return img_dir


def _write_thumbnail(sample: dict, results_dir: Path, img_dir: Path, size: int) -> None:
    """The sample's first lighting as a thumbnail, or a labelled stand-in (status says why)."""
    src, name = sample["source"], Path(sample["image"]).name
    if not os.path.exists(src):
        sample["status"] = "missing"
    else:
        try:
            square_thumbnail(src, img_dir / name, size)
        except Exception as exc:
            sample["status"] = f"unreadable ({type(exc).__name__})"
    if sample["status"] != "ok":
        # a labelled stand-in keeps the table complete (one linked image per row)
        sample["image"] = f"{rr.RCA_IMAGES_DIR}/{name[:-4]}_NO-IMAGE.png"
        _placeholder(results_dir / sample["image"], size, sample["status"])


def _write_panels(samples: list[dict], layout: tuple, golden: bool, results_dir: Path,
                  img_dir: Path) -> dict:
    """Panels (large tiles) and the one-call sheet (small tiles), from the same loaded
    images; sets each sample's ``missing_tiles``. Returns spot_check.json's ``sheet``."""
    cols = layout[0]
    images = _Images()
    panel_tile = _tile_for(cols, golden, SHEET_MAX_W, PANEL_TILE_MAX)
    sheet_tile = _tile_for(cols, golden, (SHEET_MAX_W - 3 * SHEET_MARGIN) // 2, SHEET_TILE_MAX)
    if sheet_tile < 64:
        sheet_tile = _tile_for(cols, golden, SHEET_MAX_W - 2 * SHEET_MARGIN, SHEET_TILE_MAX)
    sheet_tile = max(sheet_tile, min(SHEET_TILE_MIN, panel_tile))
    small = []
    for s in samples:
        big, missing = render_panel(s, layout, golden, panel_tile, images)
        save_png(big, results_dir / s["panel"])
        small.append(render_panel(s, layout, golden, sheet_tile, images)[0])
        s["missing_tiles"] = missing
    sheet, geometry = render_sheet(samples, small, layout, golden, sheet_tile)
    save_png(sheet, img_dir / SHEET_NAME)
    return {"image": f"{rr.RCA_IMAGES_DIR}/{SHEET_NAME}", "width": sheet.width,
            "height": sheet.height, "tile": sheet_tile, "panel_tile": panel_tile, **geometry}


def _notes(samples: list[dict], per_class: int) -> list[str]:
    """Short classes and stand-in images, each a line for the agent."""
    notes = []
    for cls in ("PASS", "NO_PASS"):
        taken = sum(s["class"] == cls for s in samples)
        if taken < per_class:
            notes.append(f"only {taken} {cls} sample(s) in kpi_gaps.parquet "
                         f"(wanted {per_class}); took what exists")
    bad = [s for s in samples if s["status"] != "ok"]
    if bad:
        notes.append(f"{rr.MARK_MISSING_IMAGES} {len(bad)} spot-check image(s) could not be "
                     "read: " + ", ".join(f"{s['source']} ({s['status']})" for s in bad))
    n_missing = sum(s["missing_tiles"] for s in samples)
    n_tiles = sum(s["tiles"] for s in samples)
    if n_missing:
        notes.append(f"{rr.MARK_MISSING_IMAGES} {n_missing} of {n_tiles} sheet tiles are "
                     "stand-ins (missing or unreadable lighting/golden images): "
                     + ", ".join(f"#{s['rank']:02d} {s['missing_tiles']}" for s in samples
                                 if s["missing_tiles"]))
    return notes


def run_spot_check(results_dir: str | os.PathLike, lightings: Sequence[str], image_ext: str = "",
                   per_class: int = PER_CLASS, size: int = THUMB_SIZE,
                   train_config: str | os.PathLike | None = None) -> dict:
    """Pick the samples, write thumbnails, panels, the sheet and spot_check.json; return the
    JSON document."""
    results_dir = Path(results_dir)
    check_output_dirs(results_dir)
    atomic.settle(results_dir)  # finish a set a killed run committed before reading it
    run = _Run(results_dir, lightings, image_ext, train_config)
    pass_rows, no_pass_rows = pick(run.df, run.lightings, run.image_ext, per_class)
    img_dir = _image_dir(results_dir)
    samples = []
    for cls, rows in (("PASS", pass_rows), ("NO_PASS", no_pass_rows)):
        for rec in rows.to_dict(orient="records"):
            samples.append(_sample(run, len(samples) + 1, cls, rec))
            _write_thumbnail(samples[-1], results_dir, img_dir, size)
    sheet = _write_panels(samples, run.layout, run.has_golden, results_dir, img_dir)
    for s in samples:
        del s["_paths"], s["_golden_paths"]
    layout = run.layout
    doc = {"first_lighting": run.lightings[0] if run.lightings else None,
           "per_class": per_class, "size": size,
           "layout": {"columns": layout[0], "rows": layout[1], "cells": layout[2],
                      "how": layout[3], "golden": run.has_golden,
                      "golden_rule": "<kpi_media_path>/<golden_path>/<object_name>_<light><image_ext>"},
           "sheet": sheet, "missing_tiles": sum(s["missing_tiles"] for s in samples),
           "samples": samples, "notes": _notes(samples, per_class)}
    from tao_aoi.atomic import write_text

    write_text(img_dir / SPOT_CHECK_JSON, json.dumps(doc, indent=2) + "\n")
    return doc


def _placeholder(dest: Path, size: int, status: str) -> None:
    """A grey tile with a cross and the status word, for an image that could not be shown."""
    save_png(_tile(status, size, None), dest)


def _remove_previous(img_dir: Path) -> None:
    """Delete images a previous spot check wrote (only those it listed), so none go stale."""
    old = img_dir / SPOT_CHECK_JSON
    if not old.is_file():
        return
    try:
        prev = json.loads(old.read_text(encoding="utf-8"))
    except Exception:
        return
    for s in prev.get("samples", []):
        for key, folder in (("image", img_dir), ("panel", img_dir / PANELS_DIR)):
            image = s.get(key)
            if isinstance(image, str) and "/" in image:
                target = folder / Path(image).name
                if target.is_file() and not target.is_symlink():
                    target.unlink()
    sheet = img_dir / SHEET_NAME
    if sheet.is_file() and not sheet.is_symlink():
        sheet.unlink()


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
    p = OneLineParser(
        prog="spot_check.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pick the 5 weakest PASS and 5 weakest NO_PASS samples from "
                    "<results_dir>/kpi_gaps.parquet (one per input_path/object_name, first "
                    "lighting), write 128x128 PNG thumbnails into <results_dir>/rca_images/, one "
                    "panel per sample (every lighting in the train spec's grid_map, the golden "
                    "beside it when kpi_gaps.parquet has golden_path) under rca_images/samples/, "
                    "the overview rca_images/spot_check_sheet.png, and rca_images/spot_check.json; "
                    "print the table to fill with verdicts (mislabeled, edge case, data "
                    "quality, systematic).",
        epilog="example:\n  spot_check.py \"$RCA\" --train-config \"$TRAIN_YAML\"\n"
               "Without --train-config the lighting order comes from metrics.json.")
    p.add_argument("results_dir", help="gap-analysis results dir (holds kpi_gaps.parquet)")
    p.add_argument("--train-config", default=None,
                   help="VCN train YAML (dataset.classify.input_map decides the first lighting, "
                        "grid_map the panel layout)")
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
    doc = run_spot_check(results, lightings, ext, args.per_class, args.size,
                         train_config=args.train_config)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_summary(doc, results, len(lightings))
    for note in doc["notes"]:
        print(note)
    return 0


def _print_summary(doc: dict, results: Path, n_lightings: int) -> None:
    """What was picked, where the sheet is, and the table to fill with verdicts."""
    print(f"spot check: {sum(s['class'] == 'PASS' for s in doc['samples'])} PASS + "
          f"{sum(s['class'] == 'NO_PASS' for s in doc['samples'])} NO_PASS samples, "
          f"first lighting {doc['first_lighting']}, thumbnails in "
          f"{results / rr.RCA_IMAGES_DIR}")
    lay = doc["layout"]
    print(f"sheet: {results / doc['sheet']['image']} ({doc['sheet']['width']}x"
          f"{doc['sheet']['height']} px; {len(doc['samples'])} samples, each "
          f"{n_lightings} lightings as {lay['how']}"
          + (", golden beside" if lay["golden"] else ", no golden_path column") + ")")
    print(markdown_table(doc))
    print("View the sheet first (one Read call); open a sample's panel "
          f"(rca_images/{PANELS_DIR}/NN_*.png) or a single image only where the sheet is "
          "not enough. Give each row one verdict: " + ", ".join(rr.VERDICTS) + ".")


def _lightings_from_metrics(results: Path) -> tuple[list[str], str]:
    metrics = results / "metrics.json"
    try:
        m = json.loads(metrics.read_text(encoding="utf-8"))
        lightings = [str(x) for x in m["lightings"]]
        ext = str(m.get("image_ext") or "")
        # a '/' or '..' would point the image paths outside kpi_media_path/input_path
        if not lightings or any("/" in x or "\\" in x or x in ("", ".", "..") for x in lightings) \
                or "/" in ext or "\\" in ext:
            raise ValueError
        return lightings, ext
    except Exception:
        raise UsageError(f"no --train-config given and {metrics} has no 'lightings' list of "
                         "plain names; pass --train-config") from None
