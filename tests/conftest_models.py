"""Tiny random SigLIP / CLIP models of the real architectures (no download), shared by the
encoder, action and parity tests. Import the fixtures into a test module to use them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def build_tiny_models(root: Path, python: str = sys.executable) -> dict[str, Path]:
    """Save one tiny CLIP and one tiny SigLIP (weights + full processor) under ``root`` with
    ``python``'s transformers: the parity tests build them with the oracle's transformers
    4.x, so NVIDIA's loaders read files of their own version and transformers 5.x has to
    read older files, as it does with real Hub snapshots."""
    models = {"SigLIP": root / "siglip", "CLIP": root / "clip"}
    code = ("import sys; from tao_aoi.encoders import save_random_model\n"
            "save_random_model('SigLIP', sys.argv[1])\n"
            "save_random_model('CLIP', sys.argv[2], projection_dim=24)\n")
    subprocess.run([python, "-c", code, str(models["SigLIP"]), str(models["CLIP"])], check=True,
                   cwd=str(REPO), capture_output=True, timeout=300)
    return models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))
