#!/usr/bin/env python3
"""Visual spot check: 5 weakest PASS + 5 weakest NO_PASS; thumbnails, per-sample panels (all
lightings in grid_map layout, golden beside) and rca_images/spot_check_sheet.png (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.spot_check import main  # noqa: E402

raise SystemExit(run_cli(main, "spot_check.py"))
