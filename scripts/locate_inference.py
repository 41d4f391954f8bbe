#!/usr/bin/env python3
"""Find inference.csv in a TAO experiment, for either backend (see --help)."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.inference_input import main  # noqa: E402
raise SystemExit(run_cli(main, "locate_inference.py"))
