"""Which ``<category> <action>`` pairs the local runner knows, and where their code lives.

An action module exposes ``SUMMARY: str``, ``ALIASES: dict[str, str]`` (old key -> new key)
and ``run(cfg: dict) -> int``. Modules are imported only when asked for, so a broken or
missing module affects only its own action.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from tao_aoi.cli import UsageError

ACTIONS: dict[tuple[str, str], str] = {
    ("gap_analysis", "vcn_aoi"): "tao_aoi.data_services.gap_analysis_vcn_aoi",
    ("embedding", "image_embeddings"): "tao_aoi.data_services.image_embeddings",
    ("tmm", "nearest_neighbors"): "tao_aoi.data_services.nearest_neighbors",
}


def categories() -> list[str]:
    return sorted({c for c, _ in ACTIONS})


def actions_of(category: str) -> list[str]:
    return sorted(a for c, a in ACTIONS if c == category)


def listing() -> str:
    return ", ".join(f"{c} {a}" for c, a in sorted(ACTIONS))


def check(category: str | None, action: str | None) -> tuple[str, str]:
    """UsageError listing the valid choices when the pair is unknown."""
    if not category:
        raise UsageError(f"missing <category> <action>; valid: {listing()}")
    if category not in categories():
        raise UsageError(f"unknown category '{category}'; valid categories: {', '.join(categories())} "
                         f"(actions: {listing()})")
    if not action:
        raise UsageError(f"missing action for '{category}'; valid: {', '.join(actions_of(category))}")
    if (category, action) not in ACTIONS:
        raise UsageError(f"unknown action '{action}' for category '{category}'; valid: "
                         f"{', '.join(actions_of(category))}")
    return category, action


def load(category: str, action: str) -> ModuleType:
    """Import the action module; UsageError (naming the module) when it cannot be imported."""
    check(category, action)
    name = ACTIONS[(category, action)]
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise UsageError(f"action '{category} {action}' is not available here: cannot import {name} "
                         f"({exc})") from None
    for attr in ("SUMMARY", "ALIASES", "run"):
        if not hasattr(module, attr):
            raise UsageError(f"action module {name} lacks '{attr}'")
    return module


def aliases(category: str, action: str) -> dict[str, str]:
    """The action's old key names (old -> new); none when its module cannot be imported here
    (the schema alone is enough to write a spec or show the keys)."""
    try:
        return dict(load(category, action).ALIASES)
    except UsageError:
        return {}


def summary(category: str, action: str) -> str:
    """One line describing the action (or why it is unavailable), for --help."""
    try:
        return str(load(category, action).SUMMARY)
    except UsageError:
        return f"(unavailable: {ACTIONS[(category, action)]} cannot be imported here)"
