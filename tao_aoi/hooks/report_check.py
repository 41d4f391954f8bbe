"""PostToolUse(Write|Edit|MultiEdit) on a report: package the run, then check the report.

Triggered only when the written file's name is one of ``report_rules.REPORT_FILES``. The report
is read from disk (the tool already wrote it), so Write, Edit and MultiEdit look the same.
Packaging (``packaging.package``) runs first and whatever the check finds, so a problem in the
report -- or a crash in the check -- never leaves a run without its provenance bundle.

The check compares the report with the artifacts in its folder and lists every problem, each
with what to fix: one checker module per family (``report_rca``, ``report_routing``,
``report_mining``) over the Markdown reader (``report_markdown``) and the artifact loaders
(``report_artifacts``). Rules (sections, words, artifact names, verdicts) come from
``report_rules``.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import report_rules as rr
from .common import emit_context, enabled, log_crash  # already loaded by the entry point


def check_report(path: Path, family: str, text: str | None = None, cwd: str | None = None) -> list[str]:
    if text is None:
        text = path.read_text(encoding="utf-8", errors="replace")
    folder = path.parent
    # imported here: most Write events are not reports and never pay for the checkers
    if family == "rca":
        from .report_rca import check_rca

        return check_rca(folder, text, cwd)
    if family == "routing":
        from .report_routing import check_routing

        return check_routing(folder, text)
    from .report_mining import check_mining

    return check_mining(folder, text)


def report_target(event: dict) -> tuple[Path, str] | None:
    """The report path and family when the event wrote one of our reports, else ``None``."""
    if event.get("tool_name") not in ("Write", "Edit", "MultiEdit"):
        return None
    file_path = (event.get("tool_input") or {}).get("file_path")
    if not isinstance(file_path, str) or not file_path:
        return None
    family = rr.REPORT_FILES.get(os.path.basename(file_path))
    if family is None:
        return None
    path = Path(file_path)
    if not path.is_absolute():
        path = Path(event.get("cwd") or os.getcwd()) / path
    return path, family


def handle(event: dict) -> None:
    """Hook body for ``hooks/on_report_written.py``: package first, then check."""
    target = report_target(event)
    if target is None:
        return
    path, family = target
    if not enabled(family):
        return
    messages: list[str] = []
    try:
        from .packaging import package

        messages += package(path, family, event)
    except Exception as exc:
        log_crash("packaging")
        messages.append(f"- packaging of {rr.CONFIG_DIRS[family]}/ failed ({exc!r}); see the hook "
                        "log and rewrite the report to retry.")
    problems: list[str] = []
    try:
        if path.is_file():
            problems = check_report(path, family, cwd=event.get("cwd"))
    except Exception as exc:
        log_crash("report check")
        problems = [f"the report check crashed ({exc!r}); see the hook log."]
    if problems:
        messages = [f"tao-aoi check of {path.name}: {len(problems)} problem(s); fix each, then "
                    "rewrite the report (the check and packaging run again):"] + [
            f"- {p}" for p in problems] + messages
    emit_context(event, messages)
