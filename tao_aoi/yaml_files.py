"""Reading the YAML files users hand us (specs, train configs, versions.yaml).

One place for the failure modes, so every tool reports them the same way: a missing file,
a parse error (folded to one line), or a document that is not a mapping -> ``UsageError``.
PyYAML is imported on first use: ``tao_aoi.bank`` must stay importable on a bare python3.
"""
from __future__ import annotations

import os
from pathlib import Path


def load_mapping(path: str | os.PathLike, what: str, empty_ok: bool = False) -> dict:
    """The file's top-level mapping; ``what`` names the file in messages (e.g. "spec file")."""
    from tao_aoi.cli import UsageError, one_line
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path} is not valid YAML: {one_line(exc, None)}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} must hold a mapping at the top level, "
                         f"got {type(data).__name__}")
    return data
