#!/usr/bin/env python3
"""`make demo`: the AOI loop on a synthetic experiment, offline, on the CPU (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.demo import main  # noqa: E402

raise SystemExit(run_cli(main, "demo.py"))
