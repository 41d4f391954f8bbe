"""Shared fixtures: a small VCN experiment folder on disk and a way to run the scripts."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIGHTINGS = {"Diffuse": 1, "Coaxial": 0, "Side": 2}  # first lighting = Coaxial (index 0)


def run_script(name: str, *args: str, env: dict | None = None, cwd: str | None = None):
    """Run ``scripts/<name>`` with this interpreter; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def write_inference_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_train_yaml(path: Path, input_map: dict | None = None, image_ext: str = ".jpg") -> Path:
    import yaml

    input_map = dict(LIGHTINGS if input_map is None else input_map)
    doc = {"model": {"classify": {"backbone": "fan_small"}},
           "dataset": {"classify": {"input_map": input_map, "image_ext": image_ext,
                                    "num_input": len(input_map)}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def vcn_experiment(tmp_path):
    """Factory: ``make(rows, images_for=N)`` -> dict of paths for an experiment on disk.

    rows: dicts with input_path, object_name, label, siamese_score (+ extra columns).
    Images (tiny JPEG-named files) exist for every lighting of the first ``images_for`` rows.
    """
    def make(rows, images_for: int = 0, name: str = "exp"):
        exp = tmp_path / name
        csv_path = write_inference_csv(exp / "inference" / "inference.csv", rows)
        train = write_train_yaml(exp / "train.yaml")
        media = tmp_path / f"{name}_media"
        media.mkdir(exist_ok=True)
        for row in rows[:images_for]:
            folder = media / row["input_path"]
            folder.mkdir(parents=True, exist_ok=True)
            for light in LIGHTINGS:
                (folder / f"{row['object_name']}_{light}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
        return {"exp": exp, "inference_dir": csv_path.parent, "csv": csv_path, "train": train,
                "media": media, "results": exp / "rca_results" / "run1"}

    return make
