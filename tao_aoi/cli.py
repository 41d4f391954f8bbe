"""Shared command-line conventions for every script in ``scripts/``.

One rule for all tools: bad input is a ``UsageError`` -> one line on stderr, exit 2,
nothing written. A run that completes but cannot meet its goal raises ``RunFailed``
-> exit 1 (for example an unreachable recall target).
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Sequence


class UsageError(Exception):
    """Bad input or bad invocation: exit 2 with a one-line message."""

    exit_code = 2


class RunFailed(Exception):
    """The run finished its checks but could not produce the requested result: exit 1."""

    exit_code = 1


def one_line(exc: object, limit: int | None = 200) -> str:
    """An exception's text on one line, cut at ``limit`` characters (None: whole) for messages."""
    return " ".join(str(exc).split())[:limit]


def fail_line(prog: str, message: str) -> str:
    # Single line whatever the message holds, so callers and hooks can grep it.
    return f"{prog}: error: {one_line(message, None)}"


def os_error_text(exc: OSError) -> str:
    """What went wrong with which path, without the errno prefix: names paths, never contents."""
    if not exc.strerror:
        return str(exc)
    if isinstance(exc, FileExistsError) and exc.filename and not os.path.isdir(exc.filename):
        return f"{exc.filename} exists and is not a folder"  # mkdir(parents=True) met a file
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror


def run_cli(main: Callable[[Sequence[str] | None], int | None], prog: str,
            argv: Sequence[str] | None = None) -> int:
    """Call ``main`` and turn the project's exceptions into exit codes and one-line errors.

    An ``OSError`` that reaches here is a path the user gave that cannot be read or written
    (missing, a folder, read-only, under /proc, its parent a file): bad input, exit 2."""
    try:
        code = main(argv)
    except (UsageError, RunFailed) as exc:
        print(fail_line(prog, str(exc)), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(fail_line(prog, os_error_text(exc)), file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print(fail_line(prog, "interrupted"), file=sys.stderr)
        return 130
    return int(code or 0)


@functools.lru_cache(maxsize=None)
def _one_line_parser():
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        """argparse whose errors are the project's one-line UsageError (exit 2), not usage text.

        An empty value ("") is refused unless the argument's default is "" or its dest is in
        ``empty_ok``: for a path, "" would silently mean the current folder."""

        def __init__(self, *args, empty_ok: Sequence[str] = (), **kwargs):
            super().__init__(*args, **kwargs)
            self.empty_ok = frozenset(empty_ok)

        def error(self, message: str):  # noqa: D401 - argparse's hook
            raise UsageError(message)

        def _get_value(self, action, arg_string):
            if arg_string == "" and action.default != "" and action.dest not in self.empty_ok:
                raise argparse.ArgumentError(action, "must not be empty")
            return super()._get_value(action, arg_string)

    return OneLineParser


def __getattr__(name: str):
    # argparse is imported only by the tools that build a parser
    if name == "OneLineParser":
        return _one_line_parser()
    raise AttributeError(name)
