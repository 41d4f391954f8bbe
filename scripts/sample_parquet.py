#!/usr/bin/env python3
"""Shape, columns, rows per label and head of a parquet (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.parquet_tools import sample_main as main  # noqa: E402

raise SystemExit(run_cli(main, "sample_parquet.py"))
