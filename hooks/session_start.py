#!/usr/bin/env python3
"""SessionStart hook: bank path + Python env exports, short context for the model. Always exits 0."""
import sys
from pathlib import Path

try:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tao_aoi.hooks.session_start import main
    main()
except Exception:  # a broken hook must never break the session
    pass
raise SystemExit(0)
