"""End-to-end tests that drive the real Claude Code binary (a package, so that its
``conftest.py`` is ``e2e.conftest`` and never shadows ``tests/conftest.py``)."""
