"""Print the nvidia-tao-ds release that matches the data-services image pinned in versions.yaml.

``nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services`` -> ``7.1.0``. Standard library only
(the Makefile runs it before any virtual environment exists).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

VERSIONS = Path(__file__).resolve().parents[2] / "versions.yaml"


def release(text: str) -> str:
    match = re.search(r"^\s*data_services:\s*['\"]?\S+:(\d+\.\d+\.\d+)-data-services['\"]?\s*$",
                      text, re.MULTILINE)
    if not match:
        raise SystemExit(f"release.py: no '<image>:<X.Y.Z>-data-services' pin in {VERSIONS}")
    return match.group(1)


if __name__ == "__main__":
    print(release(VERSIONS.read_text(encoding="utf-8")))
    sys.exit(0)
