#!/usr/bin/env python3
"""Cross-check a gap analysis and add metrics.json & co., after either backend (see --help)."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.gap_completion import main  # noqa: E402
raise SystemExit(run_cli(main, "complete_gap_analysis.py"))
