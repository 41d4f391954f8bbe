#!/usr/bin/env python3
"""Convert a source-pool CSV into a parquet for the embedding step (see --help)."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.pool import main  # noqa: E402
raise SystemExit(run_cli(main, "pool_to_parquet.py"))
