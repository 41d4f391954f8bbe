"""Plumbing every hook shares. Standard library only: hooks run on a bare ``python3``.

Contract with Claude Code (SPEC.md section 5): the event arrives as JSON on stdin;
PostToolUse feedback reaches the model only as ``hookSpecificOutput.additionalContext``
JSON on stdout; a hook must never break the session, so every entry point exits 0.

The PostToolUse hooks fire on every Bash/Write call and import this module before they know
whether the call concerns them, so it imports only what that decision needs (``json``):
``pathlib`` and ``traceback`` are imported where they are used.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable  # already loaded by json (re -> functools -> collections)

FAMILY_TOGGLES = {"rca": "RCA_HOOKS", "routing": "ROUTING_HOOKS", "mining": "MINING_HOOKS"}
_OFF_VALUES = {"0", "false", "no", "off"}


def env_on(name: str) -> bool:
    """A switch variable is on unless set to one of 0/false/no/off (any case, spaces ignored)."""
    return os.environ.get(name, "1").strip().lower() not in _OFF_VALUES


def enabled(family: str) -> bool:
    """A family's hooks are on unless its toggle (e.g. ``RCA_HOOKS=0``) turns them off."""
    return env_on(FAMILY_TOGGLES[family])


def data_dir() -> "Path":  # noqa: F821 (pathlib is imported on first use, see above)
    """The plugin's persistent folder: ``$CLAUDE_PLUGIN_DATA``, else ``~/.cache/tao-aoi``."""
    from pathlib import Path

    base = os.environ.get("CLAUDE_PLUGIN_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "tao-aoi")
    return Path(base)


def log_path() -> "Path":  # noqa: F821
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


def log_crash(what: str) -> None:
    """Log the exception being handled, with its traceback, as ``<what> crashed``."""
    import traceback

    log(f"{what} crashed:\n" + traceback.format_exc())


def plugin_manifest(root) -> dict | None:
    """``<root>/.claude-plugin/plugin.json`` as a dict; ``None`` when unreadable or not an object."""
    try:
        with open(os.path.join(root, ".claude-plugin", "plugin.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def emit_context(event: dict, messages: list[str]) -> None:
    """Send feedback to the model in answer to ``event``; prints nothing when there is nothing
    to say. The reply names the incoming ``hook_event_name`` (a failed Bash call arrives as
    ``PostToolUseFailure``): feedback under another event name is silently dropped."""
    messages = [m for m in messages if m]
    if not messages:
        return
    event_name = event.get("hook_event_name")
    if not isinstance(event_name, str) or not event_name:
        event_name = "PostToolUse"
    payload = {"hookSpecificOutput": {"hookEventName": event_name,
                                      "additionalContext": "\n".join(messages)}}
    sys.stdout.write(json.dumps(payload) + "\n")


def guarded(entry: Callable[[dict], object]) -> int:
    """Run a hook body on the stdin event; swallow and log every failure; always return 0."""
    try:
        event = read_event()
        if event is not None:
            entry(event)
    except Exception:
        log_crash("hook")
    return 0
