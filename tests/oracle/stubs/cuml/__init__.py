"""Test-only CPU stand-in for ``cuml`` (only ``cuml.neighbors`` is used)."""
from . import neighbors  # noqa: F401
