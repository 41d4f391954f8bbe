#!/usr/bin/env python3
"""Print a pinned image URI from versions.yaml (see --help)."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.bank import main  # noqa: E402
raise SystemExit(run_cli(main, "resolve_image.py"))
