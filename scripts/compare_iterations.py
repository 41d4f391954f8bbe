#!/usr/bin/env python3
"""Compare two gap analyses per sample: fixed, regressed, still misclassified (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.iteration_compare import main  # noqa: E402

raise SystemExit(run_cli(main, "compare_iterations.py"))
