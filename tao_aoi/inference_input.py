"""Real TAO experiments as they are laid out: find ``inference.csv``, hand either backend a CSV
it reads, and default the image root from the train spec.

* TAO writes ``<results_dir>/inference/inference.csv``; runs kept side by side often sit one
  level down (``inference/latest/`` or a single run folder). The container reads
  ``<inference_results_dir>/inference.csv`` and nothing else, so the folder is found here.
* TensorRT inference (tao-deploy) names the score ``output_score``; the container only knows
  ``siamese_score``. Then a copy with that one header cell renamed goes into the results folder
  (the rows are copied as bytes) and both backends read the copy.
* ``kpi_media_path`` defaults to the train spec's ``dataset.classify.infer_dataset.images_dir``.
"""
from __future__ import annotations

import csv
import shlex
import sys
from pathlib import Path

from tao_aoi.cli import UsageError

CSV_NAME = "inference.csv"
PREPARED_DIR = "inference_input"


def locate(path_text: str) -> Path:
    """The folder that holds ``inference.csv``: the path itself, its ``inference/``, then one
    level below either (``latest/`` first, else a single run folder)."""
    path = Path(path_text)
    if path.is_file():
        if path.name != CSV_NAME:
            raise UsageError(f"{path} is not named {CSV_NAME}: the container reads "
                             f"<folder>/{CSV_NAME}; rename it or pass its folder")
        return path.parent
    if not path.is_dir():
        raise UsageError(f"{path} does not exist")
    for base in (path, path / "inference"):
        if (base / CSV_NAME).is_file():
            return base
    for base in (path, path / "inference"):
        if (base / "latest" / CSV_NAME).is_file():
            return base / "latest"
        runs = sorted(p.parent for p in base.glob(f"*/{CSV_NAME}")) if base.is_dir() else []
        if len(runs) == 1:
            return runs[0]
        if len(runs) > 1:
            raise UsageError(f"{len(runs)} run folders under {base} hold {CSV_NAME} "
                             f"({', '.join(p.name for p in runs[:5])}): pass the one to analyse")
    raise UsageError(f"no {CSV_NAME} in {path}, {path / 'inference'} or one level below them")


def header(csv_path: Path) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        try:
            names = next(csv.reader(fh), [])
        except (csv.Error, UnicodeDecodeError):
            raise UsageError(f"{csv_path} is not a readable CSV") from None
    if not names:
        raise UsageError(f"{csv_path} is empty (no header)")
    return names


def prepare(infer_dir: Path, results_dir: Path) -> tuple[Path, str]:
    """(folder to hand the action, score column found). Copies the CSV with ``output_score``
    renamed to ``siamese_score`` when TensorRT named it so."""
    from tao_aoi import atomic

    from tao_aoi.data_services.gap_analysis_vcn_aoi import score_column

    src = infer_dir / CSV_NAME
    cols = header(src)
    score = score_column(cols, src)
    if score != "output_score":
        return infer_dir, score
    dest = results_dir / PREPARED_DIR / CSV_NAME
    with open(src, "rb") as fh:
        first = fh.readline()
        rest_at = fh.tell()
    import io

    ending = "\r\n" if first.endswith(b"\r\n") else "\n"
    line = io.StringIO()
    csv.writer(line, lineterminator=ending).writerow(
        ["siamese_score" if c == "output_score" else c for c in cols])
    renamed = line.getvalue().encode("utf-8")
    with atomic.atomic_path(dest) as tmp, open(src, "rb") as fh, open(tmp, "wb") as out:
        fh.seek(rest_at)
        out.write(renamed)
        while chunk := fh.read(1 << 20):
            out.write(chunk)
    return dest.parent, "output_score"


def images_dir(train_config: str) -> str | None:
    from tao_aoi.yaml_files import load_mapping

    doc = load_mapping(train_config, "train_config")
    node = doc
    for key in ("dataset", "classify", "infer_dataset", "images_dir"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, str) and node else None


_DESCRIPTION = """\
Find inference.csv in a TAO experiment and print shell assignments for the recipe:
INFER_DIR (the folder to pass as inference_results_dir; a copy with output_score renamed to
siamese_score inside --results when TensorRT wrote the CSV) and DATASET (kpi_media_path: the
value given, else the train spec's dataset.classify.infer_dataset.images_dir). Notices go to
stderr. Exit 2 with one line when nothing usable is found."""


def main(argv=None) -> int:
    import argparse

    from tao_aoi.cli import OneLineParser

    parser = OneLineParser(prog="locate_inference.py", description=_DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="the experiment folder, its inference/ folder, or the CSV")
    parser.add_argument("--train-config", required=True, help="the VCN train YAML")
    parser.add_argument("--results", required=True, help="this run's results folder")
    parser.add_argument("--dataset", default="", help="kpi_media_path if the user gave one")
    args = parser.parse_args(argv)
    found = locate(args.path)
    # every input is read before prepare() may write the renamed copy into --results
    dataset = args.dataset or images_dir(args.train_config) or ""
    infer_dir, score = prepare(found, Path(args.results))
    if found != Path(args.path):
        print(f"notice: using {found / CSV_NAME}", file=sys.stderr)
    if score == "output_score":
        print(f"notice: the score column is output_score (TensorRT inference); both backends read "
              f"{infer_dir / CSV_NAME}, where it is named siamese_score", file=sys.stderr)
    if not args.dataset:
        print(f"notice: kpi_media_path not given; using the train spec's "
              f"dataset.classify.infer_dataset.images_dir: {dataset!r}" if dataset else
              "notice: kpi_media_path not given and the train spec names no "
              "infer_dataset.images_dir: input_path is used as is", file=sys.stderr)
    print(f"INFER_DIR={shlex.quote(str(infer_dir))}")
    print(f"DATASET={shlex.quote(dataset)}")
    return 0
