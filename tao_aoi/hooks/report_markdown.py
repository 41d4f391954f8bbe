"""Reading a report's Markdown: sections, pipe tables, links, labels and numbers in the text.

Shared by the per-family report checks (``report_rca``, ``report_routing``, ``report_mining``).
Standard library only, no file access.
"""
from __future__ import annotations

import re

from . import report_rules as rr

_FENCE = re.compile(r"^\s*(```|~~~)")
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w])")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_IMG_TAG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)


def _norm(name: str) -> str:
    name = name.strip().strip("#").strip()
    name = re.sub(r"^(?:\d+(?:\.\d+)*[.):]?|[A-Za-z][.)])\s+", "", name)
    name = re.sub(r"[*_`\-]+", " ", name.lower())
    return " ".join(name.split())


def split_sections(text: str) -> list[tuple[str, str, str]]:
    """``(normalised name, heading line, body)`` for every ``## `` heading outside code fences."""
    sections: list[tuple[str, str, list[str]]] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and re.match(r"^#{1,2}\s", line):
            if line.startswith("## "):
                sections.append((_norm(line[3:]), line.strip(), []))
            else:
                sections.append(("", line.strip(), []))  # a level-1 heading ends a section
            continue
        if sections:
            sections[-1][2].append(line)
    return [(n, h, "\n".join(body)) for n, h, body in sections]


def heading_matches(norm: str, name: str) -> bool:
    want = _norm(name)
    return norm == want or (norm.startswith(want) and not norm[len(want)].isalnum())


def section_bodies(text: str, name: str) -> list[str]:
    """The bodies of every section headed ``name`` (numbering and emphasis ignored)."""
    return [body for norm, _, body in split_sections(text) if norm and heading_matches(norm, name)]


def find_sections(text: str, names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Bodies of the required sections by name, plus problems (missing, out of order)."""
    sections = split_sections(text)
    found: dict[str, str] = {}
    positions: list[int] = []
    problems: list[str] = []
    for number, name in enumerate(names, 1):
        for index, (norm, _, body) in enumerate(sections):
            if norm and heading_matches(norm, name):
                found[name] = body
                positions.append(index)
                break
        else:
            problems.append(f"section `## {number}. {name}` is missing: add it as a level-2 heading.")
    if positions != sorted(positions):
        problems.append("sections are out of order: use " + ", ".join(
            f"{n}. {name}" for n, name in enumerate(names, 1)) + ".")
    return found, problems


def tables(body: str) -> list[list[list[str]]]:
    """Markdown pipe tables in ``body``: a list of rows (header first), separator row dropped."""
    result: list[list[list[str]]] = []
    block: list[str] = []
    for line in body.splitlines() + [""]:
        if line.strip().startswith("|"):
            block.append(line.strip())
            continue
        if len(block) >= 2 and re.fullmatch(r"\|?[\s:|-]+\|?", block[1]) and "-" in block[1]:
            rows = [block[0]] + block[2:]
            result.append([_cells(row) for row in rows])
        block = []
    return result


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)]


def cell_int(text: str) -> int | None:
    """A table cell that holds one count (``57``, ``**1,204**``), else ``None``."""
    m = re.fullmatch(r"\s*\**\s*([\d,]+)\s*\**\s*", text)
    return int(m.group(1).replace(",", "")) if m else None


def mentions(text: str, label: str) -> bool:
    pattern = r"(?<![A-Za-z0-9_])" + re.escape(label.strip()) + r"(?![A-Za-z0-9_])"
    return re.search(pattern, text, re.I) is not None


def uncovered(body: str, labels: list[str]) -> list[str]:
    """The labels no table cell of the section names (no part of its prose, when it has no table)."""
    found = tables(body)
    if not found:
        return [label for label in labels if not mentions(body, label)]
    cells = [cell.replace("\\_", "_") for table in found for row in table for cell in row]
    return [label for label in labels if not any(mentions(cell, label) for cell in cells)]


def link_targets(text: str) -> list[str]:
    """Every Markdown link / image target and ``<img src>``, percent-decoded."""
    from urllib.parse import unquote

    targets = [m.group(1) for m in _LINK.finditer(text)] + [m.group(1) for m in _IMG_TAG.finditer(text)]
    return [unquote(t) for t in targets]


def is_local(target: str) -> bool:
    return not (re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.I) or target.startswith("#"))


def check_words(text: str, limits: tuple[int, int], report: str, problems: list[str]) -> None:
    n = rr.count_words(text)
    low, high = limits
    if n < low:
        problems.append(f"{report} has {n} words; write at least {low} (target {low}-{high}).")
    elif n > high:
        problems.append(f"{report} has {n} words; cut it to at most {high} (target {low}-{high}).")
