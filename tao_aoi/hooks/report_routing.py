"""The routing report check (``Routing_Report.md``) against routing_summary.txt.

Standard library only.
"""
from __future__ import annotations

import re
from pathlib import Path

from . import report_rules as rr
from .report_artifacts import load_artifacts
from .report_markdown import find_sections, mentions, uncovered

# One decision line of routing_summary.txt: "<label>: <count> (mining=yes, anomalygen=no)"
_ROUTING_LINE = re.compile(r"^\s*(?P<label>[^:\n]+?)\s*:\s*(?P<count>\d+)\s*\(\s*mining\s*=\s*"
                           r"(?P<mining>yes|no)\s*,\s*anomalygen\s*=\s*(?P<ag>yes|no)\s*\)", re.I | re.M)


def check_routing(folder: Path, text: str) -> list[str]:
    problems: list[str] = []
    fix = ": rerun `scripts/route_samples.py` into this folder"
    summary = load_artifacts(folder, rr.ROUTING_ARTIFACTS, problems, fix)["routing_summary.txt"]
    found, section_problems = find_sections(text, rr.ROUTING_SECTIONS)
    problems += section_problems
    if summary is None:
        return problems
    routes = [(m.group("label").strip(), m.group("mining").lower(), m.group("ag").lower())
              for m in _ROUTING_LINE.finditer(summary)]
    body = found.get("Per-Label Routing Decisions")
    if body is not None:
        missing = uncovered(body, [label for label, _, _ in routes])
        if missing:
            problems.append("Per-Label Routing Decisions misses label(s) " + ", ".join(
                f"`{m}`" for m in missing[:20]) + " from routing_summary.txt: add a row for each.")
    body = found.get("Dropped Labels")
    if body is not None:
        _check_dropped(body, [label for label, mining, ag in routes if mining == "no" and ag == "no"],
                       problems)
    return problems


def _check_dropped(body: str, dropped: list[str], problems: list[str]) -> None:
    """Dropped Labels names every label routed to neither module, or says "none"."""
    if dropped:
        missing = [label for label in dropped if not mentions(body, label)]
        if missing:
            problems.append("Dropped Labels must list every label routed to neither module; "
                            "missing " + ", ".join(f"`{m}`" for m in missing[:20]) + ".")
    elif not re.search(r"\bnone\b|\bno labels?\b", body, re.I):
        problems.append("Dropped Labels: routing_summary.txt drops no label; say \"none\".")
