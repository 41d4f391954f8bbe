#!/usr/bin/env python3
"""The docker half of $DS: quote the arguments so the image's entrypoint keeps them whole,
mount the spec read-only, then exec `docker run` (written into the launcher by preflight.py)."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tao_aoi.docker_launch import main  # noqa: E402
raise SystemExit(main())
