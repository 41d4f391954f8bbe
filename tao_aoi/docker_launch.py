"""The docker side of ``$DS``: make a data-services command line survive the image's entrypoint.

Standard library only (the generated launcher runs it before docker starts).

The image's entrypoint does not hand its arguments to the action as they came. It builds ONE
string ``python <script> --config-path <realpath of the spec's folder> --config-name <spec file
name> <arguments joined by spaces>`` and splits it again with ``shlex.split``; then Hydra parses
every ``key=value`` with its own override grammar. So, before docker starts:

- every override value that is not plain text (a space, a quote, ``,[]{}=\\``, ``$``, any
  non-ASCII character, leading/trailing blanks, ...) is written as a Hydra quoted string
  (``key='...'``, always a string) and the whole argument is shell-quoted, so the re-split gives
  back that one token and Hydra gives back the original value; plain values (numbers, booleans,
  space-free paths) go through unchanged, so Hydra types them as it always does;
- a value that is already one Hydra quoted string without escapes (``key='/data/my run'``) is
  taken as meant (the local runner reads it the same way);
- the spec file's folder is mounted read-only at the fixed, space-free ``/tao_aoi/spec`` and the
  entrypoint gets ``-e /tao_aoi/spec/<file name>``, so ``--config-path`` holds no space whatever
  the workspace is called;
- whatever cannot be made safe is refused with one line naming it, exit 2, docker never started.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Sequence

PROG = "ds_launcher"
SPEC_MOUNT = "/tao_aoi/spec"
DOCKER_RUN = ("docker", "run", "--gpus", "all", "--rm", "--ipc=host")
SPEC_OPTS = ("-e", "--experiment_spec_file")

# Values Hydra reads unquoted exactly as the local runner does (numbers, booleans, null,
# space-free paths) and that shlex keeps as they are.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:+\-%@]*", re.ASCII)
# Override keys: Hydra's append/force/delete prefixes, dotted names.
_KEY = re.compile(r"(?:\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*", re.ASCII)
# A value already written as one Hydra quoted string, with nothing to unescape inside.
_PREQUOTED = re.compile(r"'[^'\\]*'|\"[^\"\\]*\"")
# Interpolations the quoted form keeps (Hydra resolves ${...} inside quoted strings too).
_INTERPOLATION = re.compile(r"\$\{[A-Za-z0-9_.:/\-]+\}", re.ASCII)
# A spec file name the entrypoint can put unquoted into its command string.
_SPEC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-@%]*", re.ASCII)
# Flags (``--cfg=job``, ``-h``) must already survive the re-split untouched.
_PLAIN_FLAG = re.compile(r"-[A-Za-z0-9_./:+\-=%@]*", re.ASCII)
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:+\-%@]+", re.ASCII)


class Unsafe(ValueError):
    """An argument that cannot be passed through the entrypoint intact (message: one line)."""


def _one_line(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii") if ("\n" in text or "\r" in text) else text


def hydra_quote(value: str) -> str:
    """``value`` as a Hydra single-quoted string: Hydra's parser returns ``value`` unchanged.

    Inside quotes Hydra treats a backslash as an escape only before a quote or at the end of
    the string, so only those runs of backslashes are doubled, and ``'`` becomes ``\\'``.
    """
    out = []
    i, n = 0, len(value)
    while i < n:
        if value[i] == "\\":
            j = i
            while j < n and value[j] == "\\":
                j += 1
            run = value[i:j]
            out.append(run * 2 if (j == n or value[j] == "'") else run)
            i = j
        elif value[i] == "'":
            out.append("\\'")
            i += 1
        else:
            out.append(value[i])
            i += 1
    return "'" + "".join(out) + "'"


def quote_override(token: str) -> str:
    """One ``key=value`` as the argument to hand to docker (raises :class:`Unsafe`).

    ``shlex.split(" ".join(args))`` gives back one token per argument, and Hydra's override
    parser reads that token as ``key`` = the original value.
    """
    key, sep, value = token.partition("=")
    if not sep:
        raise Unsafe(f"argument '{_one_line(token)}' is not key=value")
    if not _KEY.fullmatch(key):
        raise Unsafe(f"override key '{_one_line(key)}' is not a plain key name")
    if "\x00" in value:
        raise Unsafe(f"override {key}: the value holds a NUL character")
    if _PLAIN_VALUE.fullmatch(value) or _PREQUOTED.fullmatch(value):
        text = f"{key}={value}"
    else:
        if "${" in value and _INTERPOLATION.sub("", value).count("${"):
            raise Unsafe(f"override {key}: '${{' in the value is not a plain ${{name}} "
                         "interpolation, so Hydra cannot read it back as written")
        text = f"{key}={hydra_quote(value)}"
    return shlex.quote(text)


def quote_arg(token: str) -> str:
    """Any argument after the spec: flags must be plain, everything else is an override."""
    if token.startswith("-"):
        if _PLAIN_FLAG.fullmatch(token):
            return token
        raise Unsafe(f"option '{_one_line(token)}' would be cut apart by the container's "
                     "entrypoint")
    return quote_override(token)


def spec_mount(spec: str, cwd: str | None = None) -> tuple[str, str]:
    """(host folder to mount read-only, spec file name) for ``-e <spec>``."""
    path = os.path.join(cwd or os.getcwd(), os.path.expanduser(spec))
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise Unsafe(f"experiment spec file was not found at {path} (-e): check the path")
    folder, name = os.path.split(real)
    if not _SPEC_NAME.fullmatch(name):
        raise Unsafe(f"spec file name '{_one_line(name)}' holds characters the container's "
                     "entrypoint cannot pass (use letters, digits, '_', '-', '.')")
    if ":" in folder:
        raise Unsafe(f"the spec file's folder {folder} holds ':', which docker -v cannot mount")
    return folder, name


def build(workspace: str, image: str, args: Sequence[str], cwd: str | None = None) -> list[str]:
    """The full docker argv for ``$DS <category> <action> -e <spec> key=value ...``."""
    w = str(workspace)
    head = [*DOCKER_RUN, "-v", f"{w}:{w}", "-w", w]
    words: list[str] = []   # category, action: the entrypoint's own argparse reads them
    rest: list[str] = []
    mounts: list[str] = []
    i = 0
    args = list(args)
    while i < len(args):
        tok = args[i]
        spec = None
        if tok in SPEC_OPTS:
            if i + 1 >= len(args):
                raise Unsafe(f"{tok} needs the spec file path")
            spec, i = args[i + 1], i + 2
        elif tok.startswith("--experiment_spec_file="):
            spec, i = tok.split("=", 1)[1], i + 1
        if spec is not None:
            folder, name = spec_mount(spec, cwd)
            if mounts:
                raise Unsafe("-e is given twice")
            mounts = ["-v", f"{folder}:{SPEC_MOUNT}:ro"]
            rest += ["-e", f"{SPEC_MOUNT}/{name}"]
            continue
        if len(words) < 2 and not tok.startswith("-") and "=" not in tok:
            if not _PLAIN_WORD.fullmatch(tok):
                raise Unsafe(f"'{_one_line(tok)}' is not a data-services category or action")
            words.append(tok)
        else:
            rest.append(quote_arg(tok))
        i += 1
    # No --user: the image has no passwd entry for host uids (getpwuid KeyError).
    return [*head, *mounts, image, *words, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    """``docker_launch.py --workspace W --image IMAGE -- <category> <action> ...``: exec docker."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sep = argv.index("--")
        opts, args = argv[:sep], argv[sep + 1:]
        values = dict(zip(opts[::2], opts[1::2]))
        workspace, image = values["--workspace"], values["--image"]
    except (ValueError, KeyError):
        print(f"{PROG}: error: usage: docker_launch.py --workspace W --image IMAGE -- ARGS",
              file=sys.stderr)
        return 2
    try:
        cmd = build(workspace, image, args)
    except Unsafe as exc:
        print(f"{PROG}: error: {exc}; docker was not started", file=sys.stderr)
        return 2
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"{PROG}: error: cannot run docker: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return 0  # not reached
