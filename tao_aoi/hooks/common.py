"""Plumbing every hook shares. Standard library only: hooks run on a bare ``python3``.

Contract with Claude Code (SPEC.md section 5): the event arrives as JSON on stdin;
PostToolUse feedback reaches the model only as ``hookSpecificOutput.additionalContext``
JSON on stdout; a hook must never break the session, so every entry point exits 0.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

FAMILY_TOGGLES = {"rca": "RCA_HOOKS", "routing": "ROUTING_HOOKS", "mining": "MINING_HOOKS"}
_OFF_VALUES = {"0", "false", "no", "off"}


def enabled(family: str) -> bool:
    """A family's hooks are on unless its toggle (e.g. ``RCA_HOOKS=0``) turns them off."""
    value = os.environ.get(FAMILY_TOGGLES[family], "1").strip().lower()
    return value not in _OFF_VALUES


def data_dir() -> Path:
    """The plugin's persistent folder: ``$CLAUDE_PLUGIN_DATA``, else ``~/.cache/tao-aoi``."""
    base = os.environ.get("CLAUDE_PLUGIN_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "tao-aoi")
    return Path(base)


def log_path() -> Path:
    return data_dir() / "hooks.log"


def log(message: str) -> None:
    """Append one line to the hook log; logging must never raise."""
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")
    except Exception:
        pass


def read_event(stream=None) -> dict | None:
    """Parse the hook's stdin; ``None`` (and a log line) on anything that is not a JSON object."""
    stream = stream if stream is not None else sys.stdin
    try:
        raw = stream.read()
        event = json.loads(raw)
    except Exception as exc:  # bad stdin is Claude Code's problem, never the session's
        log(f"unreadable hook stdin: {exc!r}")
        return None
    if not isinstance(event, dict):
        log(f"hook stdin is not a JSON object: {type(event).__name__}")
        return None
    return event


def emit_context(event_name: str, messages: list[str]) -> None:
    """Send feedback to the model; prints nothing when there is nothing to say."""
    messages = [m for m in messages if m]
    if not messages:
        return
    payload = {"hookSpecificOutput": {"hookEventName": event_name,
                                      "additionalContext": "\n".join(messages)}}
    sys.stdout.write(json.dumps(payload) + "\n")


def guarded(entry: Callable[[dict], Any]) -> int:
    """Run a hook body on the stdin event; swallow and log every failure; always return 0."""
    try:
        event = read_event()
        if event is not None:
            entry(event)
    except Exception:
        log("hook crashed:\n" + traceback.format_exc())
    return 0
