"""Reading the YAML files users hand us (specs, train configs, versions.yaml).

One place for the failure modes, so every tool reports them the same way: a missing file,
a parse error (folded to one line), or a document that is not a mapping -> ``UsageError``.
PyYAML is imported on first use: ``tao_aoi.bank`` must stay importable on a bare python3.
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def yaml_error_text(exc: Exception) -> str:
    """A YAML error without the lines of the file it quotes (PyYAML's message shows them):
    what is wrong and where, quoted tokens elided."""
    problem = getattr(exc, "problem", None) or str(exc).split("\n", 1)[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return re.sub(r"'[^'\s]{2,}'", "'...'", str(problem)) + where


def load_mapping(path: str | os.PathLike, what: str, empty_ok: bool = False) -> dict:
    """The file's top-level mapping; ``what`` names the file in messages (e.g. "spec file")."""
    from tao_aoi.cli import UsageError, one_line
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid YAML: {one_line(exc, None)}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{what} {path} is not valid YAML: {yaml_error_text(exc)}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} must hold a mapping at the top level, "
                         f"got {type(data).__name__}")
    return data
