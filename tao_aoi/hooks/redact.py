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
stay. Text is processed line by line (:func:`redact_stream`) so a large transcript never
sits in memory whole; cheap substring tests skip the regexes on lines that cannot match.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Callable, IO

_TAG = "[REDACTED:{}]"

# Token shapes, most specific first (sk-ant- before sk-).
_SHAPES: list[tuple[str, tuple[str, ...], re.Pattern]] = [
    ("ngc_key", ("nvapi-",), re.compile(r"nvapi-[A-Za-z0-9_\-]{16,}")),
    ("anthropic_key", ("sk-ant-",), re.compile(r"sk-ant-[A-Za-z0-9_\-]{16,}")),
    ("openai_key", ("sk-",), re.compile(
        r"(?<![A-Za-z0-9_\-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")),
    ("hf_token", ("hf_",), re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{20,}")),
    ("aws_access_key_id", ("AKIA", "ASIA"), re.compile(
        r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")),
]

# Older NGC API keys: base64 of "<alphanumeric id>:<uuid>" (about 84 characters).
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{56,120}={0,2}(?![A-Za-z0-9+/=])")
_LEGACY_NGC_PLAIN = re.compile(
    rb"[A-Za-z0-9]{8,64}:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# A quoted or bare value, in plain or JSON-escaped form.
_VALUE = (r"(?:\\\"(?P<v1>(?:[^\\\"]|\\[^\"])*?)\\\""      # \"...\"  (inside a JSON string)
          r"|\"(?P<v2>[^\"\\\n]*(?:\\.[^\"\\\n]*)*)\""     # "..."
          r"|'(?P<v3>[^'\n]*)'"                            # '...'
          r"|(?P<v4>[^\s\"'\\;&|,}<>)]+))")                # bare word
_NAME = r"[A-Za-z0-9_.\-]*(?:_TOKEN|_KEY|_SECRET|PASSWORD|PASSWD|APIKEY)\b|\b(?:TOKEN|SECRET)\b"
_ASSIGN = re.compile(
    r"(?P<pre>(?P<q>\\?[\"']?)\b(?:" + _NAME + r")(?P=q)\s*(?:=|:)\s*)" + _VALUE, re.IGNORECASE)
_ASSIGN_HINTS = ("token", "key", "secret", "passw")
_PASSWORD_ARG = re.compile(
    r"(?P<pre>(?:--password|--passwd)(?:=|\s+)|\blogin\b[^\n]*?\s-p\s+)" + _VALUE)
_AUTH = re.compile(
    r"(?P<pre>authorization\\?[\"']?\s*[:=]\s*\\?[\"']?\s*(?:bearer|basic|token)\s+)"
    r"(?P<v4>[A-Za-z0-9._~+/=\-]+)", re.IGNORECASE)


def _legacy_ngc(match: re.Match) -> str:
    text = match.group(0)
    try:
        plain = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return text
    return _TAG.format("ngc_key") if _LEGACY_NGC_PLAIN.fullmatch(plain) else text


def _value_sub(kind: str) -> Callable[[re.Match], str]:
    def sub(match: re.Match) -> str:
        for group in ("v1", "v2", "v3", "v4"):
            value = match.groupdict().get(group)
            if value is not None:
                break
        else:  # pragma: no cover
            return match.group(0)
        if not value or value.startswith("$") or value.startswith("[REDACTED"):
            return match.group(0)
        start, end = match.span(group)
        offset = match.start(0)
        whole = match.group(0)
        return whole[:start - offset] + _TAG.format(kind) + whole[end - offset:]
    return sub


_SECRET_SUB = _value_sub("secret")
_PASSWORD_SUB = _value_sub("password")
_AUTH_SUB = _value_sub("authorization")


def redact_line(line: str) -> str:
    """Return ``line`` with every credential replaced by ``[REDACTED:<kind>]``."""
    for kind, hints, pattern in _SHAPES:
        if any(h in line for h in hints):
            line = pattern.sub(_TAG.format(kind), line)
    lower = line.lower()
    if "authorization" in lower:
        line = _AUTH.sub(_AUTH_SUB, line)
    if any(h in lower for h in _ASSIGN_HINTS):
        line = _ASSIGN.sub(_SECRET_SUB, line)
    if "--passw" in lower or "login" in lower:
        line = _PASSWORD_ARG.sub(_PASSWORD_SUB, line)
    if len(line) >= 56:
        line = _B64_RUN.sub(_legacy_ngc, line)
    return line


def redact_text(text: str) -> str:
    return "".join(redact_line(line) for line in text.splitlines(keepends=True))


def redact_stream(src: IO[str], dst: IO[str]) -> int:
    """Copy ``src`` to ``dst`` line by line, redacted; return the number of lines written."""
    n = 0
    for line in src:
        dst.write(redact_line(line))
        n += 1
    return n
