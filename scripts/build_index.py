#!/usr/bin/env python3
"""Write a static, offline index.html into a results folder (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.html_index import main  # noqa: E402

raise SystemExit(run_cli(main, "build_index.py"))
