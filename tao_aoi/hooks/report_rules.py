"""Report rules for the hooks: the names live in :mod:`tao_aoi.contract` (one place for each
fact); this module keeps the hooks' own import path. Standard library only.
"""
from __future__ import annotations

from tao_aoi.contract import *  # noqa: F401,F403
