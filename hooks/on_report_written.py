#!/usr/bin/env python3
"""PostToolUse(Write|Edit|MultiEdit): package and check RCA/Routing/Mining reports."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:
    from tao_aoi.hooks.common import guarded
    from tao_aoi.hooks.report_check import handle
except Exception:  # a broken install must never break the session
    raise SystemExit(0) from None
raise SystemExit(guarded(handle))
