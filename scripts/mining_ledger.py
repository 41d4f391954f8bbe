#!/usr/bin/env python3
"""Filter mined images against a ledger of earlier runs, or record a run in it (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.ledger import main  # noqa: E402

raise SystemExit(run_cli(main, "mining_ledger.py"))
