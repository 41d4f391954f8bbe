#!/usr/bin/env python3
"""Write a data-services spec YAML validated against the action's schema (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.data_services.cli import write_spec_main  # noqa: E402

raise SystemExit(run_cli(write_spec_main, "write_spec.py"))
