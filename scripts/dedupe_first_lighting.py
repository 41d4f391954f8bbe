#!/usr/bin/env python3
"""One row per (input_path, object_name) on the first lighting (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.parquet_tools import dedupe_main as main  # noqa: E402

raise SystemExit(run_cli(main, "dedupe_first_lighting.py"))
