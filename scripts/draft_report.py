#!/usr/bin/env python3
"""Pre-fill RCA_Report.draft.md from a gap-analysis results folder (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tao_aoi.cli import run_cli  # noqa: E402
from tao_aoi.report_draft import main  # noqa: E402

raise SystemExit(run_cli(main, "draft_report.py"))
