"""Mask credentials in text before it is copied next to a report (standard library only).

Every match becomes ``[REDACTED:<kind>]``. The rules err on the side of masking: a
provenance bundle is shared with people who must never see a key. They cover

* token shapes: NGC ``nvapi-...`` keys and the older base64 NGC keys (they decode to
  ``<id>:<uuid>``), Hugging Face ``hf_...``, OpenAI ``sk-...`` / ``sk-proj-...``,
  Anthropic ``sk-ant-...``, AWS access key ids ``AKIA...`` / ``ASIA...``;
* assignments whose name ends in ``_TOKEN``, ``_KEY``, ``_SECRET``, or holds ``PASSWORD``
  (``export HF_TOKEN=...``, ``NGC_API_KEY: ...``, ``"HF_TOKEN": "..."``), also in the
  JSON-escaped form found inside transcript strings (``\\"HF_TOKEN\\": \\"...\\"``,
  ``...=value\\n``), plus ``aws_secret_access_key`` values and ``--password`` arguments;
* ``Authorization: Bearer|Basic|Token ...`` headers.

Values that are variable references (``$NGC_API_KEY``, ``${HF_TOKEN}``) are not secrets and
stay. Work is done on bytes, line by line (:func:`redact_stream`), so a large transcript never
sits in memory whole and odd encodings pass through untouched. Speed (a 50 MB transcript must
take well under 2 s): cheap substring tests skip each regex on lines that cannot match, the
assignment rule is anchored on its keyword (the name is checked in Python, walking back), and
base64 runs are found on a translated copy of the line in one linear pass.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import IO, Callable

_TAG = "[REDACTED:{}]"

# Token shapes, most specific first (sk-ant- before sk-): (kind, lower-case needles, pattern)
_SHAPES: list[tuple[bytes, tuple[bytes, ...], re.Pattern]] = [
    (b"ngc_key", (b"nvapi-",), re.compile(rb"nvapi-[A-Za-z0-9_\-]{16,}")),
    (b"anthropic_key", (b"sk-",), re.compile(rb"sk-ant-[A-Za-z0-9_\-]{16,}")),
    (b"openai_key", (b"sk-",), re.compile(
        rb"(?<![A-Za-z0-9_\-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")),
    (b"hf_token", (b"hf_",), re.compile(rb"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{20,}")),
    (b"aws_access_key_id", (b"akia", b"asia"), re.compile(
        rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")),
]

# Older NGC API keys: base64 of "<alphanumeric id>:<uuid>" (about 84 characters).
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_MASK = bytes(ord("a") if c in _B64_ALPHABET else ord(" ") for c in range(256))
_B64_MIN, _B64_MAX = 56, 120
_LEGACY_NGC_PLAIN = re.compile(
    rb"[A-Za-z0-9]{8,64}:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# A quoted or bare value, in plain or JSON-escaped form; ``g`` prefixes the group names.
def _value(g: str) -> bytes:
    return (rb"(?:\\\"(?P<%s1>(?:[^\\\"\n]|\\[^\"\n])*?)\\\""      # \"...\"  (inside a JSON string)
            rb"|\"(?P<%s2>[^\"\\\n]*(?:\\.[^\"\\\n]*)*)\""      # "..."
            rb"|'(?P<%s3>[^'\n]*)'"                             # '...'
            rb"|(?P<%s4>[^\s\"'\\;&|,}<>)]+))") % ((g.encode(),) * 4)


_VALUE = _value("v")
# Anchored on the keyword; the full name (walking back) is judged by _secret_name.
_ASSIGN = re.compile(rb"(?:token|key|secret|passwd|password)(?![A-Za-z0-9_])(?P<q>\\?[\"']?)"
                     rb"[ \t]*(?:=|:)[ \t]*" + _VALUE, re.IGNORECASE)
_ASSIGN_HINTS = (b"token", b"key", b"secret", b"passw")
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_PASSWORD_ARG = re.compile(
    rb"(?<=--)passw(?:or)?d(?:=|[ \t]+)" + _VALUE
    + rb"|(?<![A-Za-z0-9_])login\b[^\n]*?[ \t]-p[ \t]+" + _value("w"))
_AUTH = re.compile(
    rb"authorization\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?[ \t]*(?:bearer|basic|token)[ \t]+"
    rb"(?P<v4>[A-Za-z0-9._~+/=\-]+)", re.IGNORECASE)


def _secret_name(name: bytes) -> bool:
    upper = name.upper().lstrip(b"-.")
    return (upper.endswith((b"_TOKEN", b"_KEY", b"_SECRET", b"APIKEY"))
            or b"PASSWORD" in upper or b"PASSWD" in upper
            or upper in (b"TOKEN", b"SECRET", b"PASSWORD", b"PASSWD"))


def _value_span(match: re.Match) -> tuple[int, int] | None:
    groups = match.groupdict()
    for group in ("v1", "v2", "v3", "v4", "w1", "w2", "w3", "w4"):
        if groups.get(group) is not None:
            value = groups[group]
            if not value or value.startswith((b"$", b"[REDACTED")):
                return None
            return match.span(group)
    return None


def _positions(lower: bytes, needles: tuple[bytes, ...], cache: dict) -> list[int]:
    found = set()
    for needle in needles:
        if needle not in cache:     # several rules share a needle: scan for it once
            hits, pos = [], lower.find(needle)
            while pos >= 0:
                hits.append(pos)
                pos = lower.find(needle, pos + 1)
            cache[needle] = hits
        found.update(cache[needle])
    return sorted(found)


def _apply(data: bytes, cache: dict, needles: tuple[bytes, ...], pattern: re.Pattern,
           kind: bytes, value_only: bool = False,
           accept: Callable[[bytes, re.Match], bool] | None = None) -> bytes:
    """Replace the matches of ``pattern`` that start where a needle occurs in ``lower``.

    Anchoring every rule on its literal needle keeps the cost to a few substring scans: a
    regex search tried at every position of a long transcript line costs many times more."""
    out, last = [], 0
    tag = b"[REDACTED:" + kind + b"]"
    for pos in _positions(cache["lower"], needles, cache):
        if pos < last:
            continue
        match = pattern.match(data, pos)
        if match is None or (accept is not None and not accept(data, match)):
            continue
        span = _value_span(match) if value_only else match.span()
        if span is None or span[0] < last:
            continue
        out += [data[last:span[0]], tag]
        last = span[1]
    if not out:
        return data
    out.append(data[last:])
    data = b"".join(out)
    cache.clear()                   # positions moved: rescan the new text
    cache["lower"] = data.lower()
    return data


def _assignment_name_ok(line: bytes, match: re.Match) -> bool:
    start = match.start()
    while start > 0 and line[start - 1] in _NAME_CHARS:
        start -= 1
    return _secret_name(line[start:match.start("q")])


def _legacy_ngc(data: bytes) -> bytes:
    # Runs of base64 characters show up as runs of "a" in the mask; bytes.find walks them in C.
    mask = data.translate(_B64_MASK)
    run = b"a" * _B64_MIN
    out, last = [], 0
    start = mask.find(run)
    while start >= 0:
        end = mask.find(b" ", start)
        end = len(mask) if end < 0 else end
        if end - start <= _B64_MAX:
            pad = end
            while pad < len(data) and pad - end < 2 and data[pad] == 61:   # '=' padding
                pad += 1
            try:
                plain = base64.b64decode(data[start:pad] + b"=" * (-(pad - start) % 4), validate=True)
            except (binascii.Error, ValueError):
                plain = b""
            if _LEGACY_NGC_PLAIN.fullmatch(plain):
                out += [data[last:start], b"[REDACTED:ngc_key]"]
                last = pad
        start = mask.find(run, end)
    if not out:
        return data
    out.append(data[last:])
    return b"".join(out)


def redact_bytes(data: bytes) -> bytes:
    """Return ``data`` (one line or a block of whole lines) with every credential replaced.

    No rule matches across a newline, so a block gives the same result as its lines one by one."""
    cache = {"lower": data.lower()}
    for kind, needles, pattern in _SHAPES:
        data = _apply(data, cache, needles, pattern, kind)
    data = _apply(data, cache, (b"authorization",), _AUTH, b"authorization", True)
    data = _apply(data, cache, _ASSIGN_HINTS, _ASSIGN, b"secret", True, _assignment_name_ok)
    data = _apply(data, cache, (b"passw", b"login"), _PASSWORD_ARG, b"password", True)
    if len(data) >= _B64_MIN:
        data = _legacy_ngc(data)
    return data


def redact_line(line: str) -> str:
    """Text form of :func:`redact_bytes` (undecodable bytes survive via surrogateescape)."""
    return redact_bytes(line.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def redact_text(text: str) -> str:
    return "".join(redact_line(line) for line in text.splitlines(keepends=True))


def redact_stream(src: IO[bytes], dst: IO[bytes], block: int = 1 << 20) -> int:
    """Copy binary ``src`` to binary ``dst`` redacted, in blocks of whole lines (memory stays
    bounded by ``block`` plus the longest line); return the number of lines."""
    lines = 0
    carry = b""
    while True:
        chunk = src.read(block)
        if not chunk:
            break
        chunk = carry + chunk
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:              # no line end yet: keep reading
            carry = chunk
            continue
        carry = chunk[cut:]
        body = chunk[:cut]
        lines += body.count(b"\n")
        dst.write(redact_bytes(body))
    if carry:
        lines += 1
        dst.write(redact_bytes(carry))
    return lines
