#!/usr/bin/env python3
"""Sample-aware mining: expand a VCN dataset CSV per lighting, combine lighting embeddings
per sample, write mined_dataset.csv (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.sample_mining import main  # noqa: E402

raise SystemExit(run_cli(main, "mine_samples.py"))
