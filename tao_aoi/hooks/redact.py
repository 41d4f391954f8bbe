"""Mask credentials in text before it is copied next to a report (standard library only).

Every masked value becomes ``[REDACTED:<rule>]``; a :class:`Redactor` counts the masks per
rule (the bundle manifest records those counts, never a value). The rules err on the side of
masking: a provenance bundle is shared with people who must never see a key.

What is judged, in this order, on every piece of text:

* **JSON is judged decoded.** A transcript line (or a settings file) that parses as JSON is
  walked: every string is judged after ``\\uXXXX`` and ``\\n`` escapes are decoded (so a PEM
  block whose newlines are JSON-escaped, or a key spelled in ``\\u`` escapes, is seen as it
  is), the value of a key with a secret-like name (``*_TOKEN``, ``*_KEY``, ``*_SECRET``,
  ``*_CRED``, ``password``, ``apiKeyHelper``, ``DATABASE_URL``, ``private_key``...) is masked
  whole, every value of an ``env`` mapping whose name is not known to be harmless is masked
  whole (``env_value``), and a string that itself holds JSON is walked the same way. A line
  that changed is written back as compact JSON; an unchanged line is copied byte for byte.
* **Token shapes**: PEM private keys (whole block, also unterminated), JWTs, GitHub
  ``ghp_/gho_/ghu_/ghs_/ghr_/github_pat_``, GitLab, Slack ``xox*`` and webhooks, AWS key ids,
  Google API / OAuth keys, Stripe, npm, PyPI, SendGrid, Twilio, Mailgun, DigitalOcean,
  Shopify, Databricks, Telegram, NGC ``nvapi-`` and legacy base64 NGC keys, Hugging Face,
  OpenAI, Anthropic.
* **Places**: ``user:password@`` in any URL, ``Authorization:`` / ``Bearer`` headers,
  ``curl -u user:pass``, ``NAME=value`` / ``NAME: value`` / ``"NAME": "value"`` (also
  JSON-escaped, also with the value on the next, indented line) and ``--name value`` /
  ``--name=value`` flags whose name is secret-like, ``docker login ... -p value``, and
  ``env:`` blocks of YAML files.
* **Entropy**: a long run of base64/base62 characters with upper case, lower case and digits
  and a high Shannon entropy (not hex: sha256 digests stay; not a UUID; not a path).
  In the conservative mode (``Redactor(conservative=True)``, used when the plugin's Python
  environment with ``detect-secrets`` is not ready) shorter runs are masked too.

Values that are variable references (``$NGC_API_KEY``, ``${HF_TOKEN}``) or placeholders are
not secrets and stay. Values found once are remembered (``Redactor.known``) and masked
wherever they appear again in the same bundle.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections import Counter
from typing import IO

TAG = "[REDACTED:{}]"
_TAG_PREFIX = "[REDACTED"

# ---------------------------------------------------------------- token shapes (kind, regex)
# Each pattern starts with its literal prefix (the regex engine then scans for it at C speed);
# the "not inside a longer word" test is a look-behind placed after that prefix.
_B = r"(?<![A-Za-z0-9_-]%s)"


def _word(prefix: str, rest: str) -> str:
    return re.escape(prefix) + _B % re.escape(prefix) + rest


# An AWS access key id: 20 characters, one of these prefixes first.
_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "A3T")

_SHAPES: list[tuple[str, tuple[str, ...], str]] = [   # (kind, case-sensitive needles, regex)
    ("private_key", ("PRIVATE KEY",),   # the whole block; unterminated: to the end of its string
     r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----[^\x00]*?(?:-----END[ A-Z0-9]*-----|(?=\n\x00)|\Z)"),
    ("jwt", ("eyJ",), _word("eyJ", r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    *[("github_token", (p,), _word(p, r"[A-Za-z0-9]{20,}")) for p in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")],
    ("github_token", ("github_pat_",), _word("github_pat_", r"[A-Za-z0-9_]{20,}")),
    *[("gitlab_token", (p,), _word(p, r"[A-Za-z0-9_-]{20,}")) for p in ("glpat-", "glptt-", "gldt-", "glrt-")],
    ("slack_token", ("xox",), r"xox(?<![A-Za-z0-9_-]xox)[abposre]-[A-Za-z0-9-]{10,}"),
    ("slack_webhook", ("hooks.slack.com",), r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    *[("aws_access_key_id", (p,), re.escape(p) + r"(?<![A-Z0-9]%s)[A-Z0-9]{%d}(?![A-Z0-9])" % (p, 20 - len(p)))
      for p in _AWS_PREFIXES],
    ("google_api_key", ("AIza",), _word("AIza", r"[0-9A-Za-z_-]{35}")),
    ("google_oauth", ("ya29.",), _word("ya29.", r"[0-9A-Za-z_-]{20,}")),
    ("google_oauth", ("GOCSPX-",), _word("GOCSPX-", r"[0-9A-Za-z_-]{20,}")),
    ("google_oauth", ("1//0",), _word("1//0", r"[0-9A-Za-z_-]{30,}")),
    *[("stripe_key", (n,), r"(?:sk|rk|pk)%s(?<![A-Za-z0-9][a-z]{2}%s)[0-9A-Za-z]{16,}" % (n, n))
      for n in ("_live_", "_test_")],
    ("npm_token", ("npm_",), _word("npm_", r"[A-Za-z0-9]{36}")),
    ("pypi_token", ("pypi-AgE",), _word("pypi-AgE", r"[A-Za-z0-9_-]{40,}")),
    ("sendgrid_key", ("SG.",), _word("SG.", r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")),
    ("twilio_key", ("SK",), _word("SK", r"[0-9a-fA-F]{32}(?![0-9a-fA-F])")),
    ("mailgun_key", ("key-",), _word("key-", r"[0-9a-zA-Z]{32}")),
    ("digitalocean_token", ("_v1_",), r"do[opr]_v1_(?<![A-Za-z0-9]do._v1_)[a-f0-9]{64}"),
    ("shopify_token", ("shp",), r"shp(?<![A-Za-z0-9]shp)(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    ("databricks_token", ("dapi",), _word("dapi", r"[a-f0-9]{32}")),
    ("telegram_token", (":AA",), r"(?<![0-9])[0-9]{8,10}:AA[A-Za-z0-9_-]{33}"),
    ("ngc_key", ("nvapi-",), r"nvapi-[A-Za-z0-9_-]{16,}"),
    ("anthropic_key", ("sk-ant-",), r"sk-ant-[A-Za-z0-9_-]{16,}"),
    ("openai_key", ("sk-",), _word("sk-", r"(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("hf_token", ("hf_",), _word("hf_", r"[A-Za-z0-9]{20,}")),
]
_SHAPE_RULES = [(kind, needles, re.compile(p, re.S)) for kind, needles, p in _SHAPES]
_PEM_RULE = _SHAPE_RULES[0]                 # spans lines and spaces: judged on the whole text
# What a shape's regex cannot match without, beyond its needles: "." of a JWT, "-" of a Slack
# token, "_" of a Shopify token (no mask tag can supply them: see TAG and the rule names).
_EXTRA_REQUIRED = {"jwt": ".", "slack_token": "-", "shopify_token": "_"}
_RARE = "_-.:/"


def _required(kind: str, needles: tuple[str, ...]) -> frozenset:
    chars = {c for c in _RARE if all(c in n for n in needles)}
    return frozenset(chars | set(_EXTRA_REQUIRED.get(kind, "")))


# (kind, regex) of the shapes that match inside one run of _RUN_CHARS (all but the PEM block)
_RUN_SHAPE_RULES = [(kind, pattern) for kind, _, pattern in _SHAPE_RULES[1:]]
# needle -> indexes of the run shape rules it triggers; AWS key ids share one regex gate (their
# whole shape, look-arounds left out) instead of nine substring scans
_AWS = "aws_access_key_id"
_AWS_GATE = re.compile("|".join(r"%s[A-Z0-9]{%d}" % (re.escape(p), 20 - len(p)) for p in _AWS_PREFIXES))
_AWS_RULES = tuple(i for i, (kind, _) in enumerate(_RUN_SHAPE_RULES) if kind == _AWS)
_RULES_OF: dict[str, list[int]] = {}
_NEEDS: dict[str, frozenset] = {}
for _i, (_kind, _needles, _) in enumerate(_SHAPE_RULES[1:]):
    if _kind != _AWS:
        for _n in _needles:
            _RULES_OF.setdefault(_n, []).append(_i)
            _NEEDS[_n] = _required(_kind, _needles)
# the needles worth a scan, for each set of rare characters the text holds
_NEEDLES_FOR = {}
for _mask_bits in range(1 << len(_RARE)):
    _have = frozenset(c for j, c in enumerate(_RARE) if _mask_bits >> j & 1)
    _NEEDLES_FOR[_have] = tuple(n for n in _RULES_OF if _NEEDS[n] <= _have)

# ---------------------------------------------------------------- runs (the fast path)
# Every shape but the PEM block, the entropy rule and the Bearer value consume only these
# characters, and every look-around they use tests a class inside this set: so they match
# inside one maximal run of these characters and behave the same on the run cut out (a
# character outside the set is, to them, the same as the end of the string). The long runs
# are found at C speed (bytes.translate to a skeleton, then bytes.find of "w" * n); the rules
# then run once over the long runs joined by a space (which none of them consumes) instead of
# over the whole text: ordinary prose and code has few runs of 12+ such characters.
_RUN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:+=~"
_SKELETON = bytes(0x77 if chr(b) in _RUN_CHARS else 0x20 for b in range(256))
_MIN_RUN = 12               # the shortest run a run rule needs (a Bearer value)
_SHAPE_MIN_RUN = 15         # the shortest shape match (xox?- + 10)


def _long_runs(text: str, n: int = _MIN_RUN) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of _RUN_CHARS at least ``n`` characters long."""
    # "ascii"/"replace" writes one byte per character (any other character becomes "?"),
    # so positions in the skeleton are positions in ``text``
    skel = text.encode("ascii", "replace").translate(_SKELETON)
    needle = b"w" * n
    runs = []
    pos = skel.find(needle)
    while pos >= 0:                 # the first hit after a space is where a run starts
        end = skel.find(b" ", pos + n)
        if end < 0:
            runs.append((pos, len(skel)))
            break
        runs.append((pos, end))
        pos = skel.find(needle, end)
    return runs

# A quoted or bare value, in plain or JSON-escaped form.
_VALUE = (r"(?:\\\"(?P<v1>(?:[^\\\"\n]|\\[^\"\n])*?)\\\""   # \"...\"  (inside a JSON string)
          r"|\"(?P<v2>[^\"\\\n]*(?:\\.[^\"\\\n]*)*)\""     # "..."
          r"|'(?P<v3>[^'\n]*)'"                            # '...'
          r"|(?P<v4>[^\s\"'\\;&|,}<>)\]{\[(][^\s\"'\\;&|,}<>)\]]*))")   # not an object/list
_VGROUPS = ("v1", "v2", "v3", "v4")

# URL rules are anchored on "://" (any scheme, also a scheme-less "//user:pass@" after "=")
_URL_PASSWORD = re.compile(r"//[^\s/:@'\"\\<>]*:(?P<v4>[^\s@'\"\\<>/]+)@")
_URL_USER_TOKEN = re.compile(r"//(?P<v4>[A-Za-z0-9_\-.~]{20,})@")
_AUTH = re.compile(r"(?i)(?<![A-Za-z0-9_])authorization\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?[ \t]*"
                   r"(?:(?:bearer|basic|token|digest|apikey)[ \t]+)?"
                   r"(?!(?:bearer|basic|token|digest|apikey)[ \t])(?P<v4>[A-Za-z0-9._~+/=\-]{6,})")
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9_])(?:bearer|token)[ \t]+(?P<v4>(?=[A-Za-z0-9._~+/=\-]*[0-9])"
                     r"[A-Za-z0-9._~+/=\-]{12,})")
_CURL_USER = re.compile(r"(?<![\w-])(?:-u|--user)[ \t=]+\\?[\"']?[^\s:\"'\\]+:(?P<v4>[^\s\"'\\]+)")
_LOGIN_P = re.compile(r"(?<![A-Za-z0-9_])login\b[^\n]*?[ \t]-p[ \t]+" + _VALUE)
_FLAG = re.compile(r"(?<![\w-])--(?P<name>[A-Za-z][A-Za-z0-9_\-]*)(?:=|[ \t]+)" + _VALUE)
# Anchored on the keyword (possessive name tail: no backtracking inside long runs); the
# full name is found by walking back over name characters and judged by _secret_name.
_ASSIGN = re.compile(
    r"(?:tok|key|secret|pass|pwd|cred|auth|dsn|database_url|connection_?string|cookie|private)"
    r"[A-Za-z0-9_.\-]*+(?P<q>\\?[\"']?)[ \t]*(?P<sep>=|:)[ \t]*(?:\r?\n[ \t]+(?=\S))?" + _VALUE, re.I)
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ASSIGN_START = re.compile(_ASSIGN.pattern[:_ASSIGN.pattern.index(")") + 1], re.I)  # the keyword
_NAME_SKELETON = bytes(0x77 if chr(b) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789_.-" else 0x20 for b in range(256))
_NAME_RUN = re.compile(r"[A-Za-z0-9_.\-]*")
_ASSIGN_HINTS = ("tok", "key", "secret", "pass", "pwd", "cred", "auth", "dsn", "database_url",
                 "connection", "cookie", "private")   # the alternatives _ASSIGN starts with
_RUN = re.compile(r"(?<![A-Za-z0-9+/=_\-.])[A-Za-z0-9+/_\-]{%d,}={0,2}(?![A-Za-z0-9+/=_\-])")
_LEGACY_NGC_PLAIN = re.compile(
    rb"[A-Za-z0-9]{8,64}:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGIT = re.compile(r"[0-9]")
_SEP = "\n\x00\n"          # joins the strings of one JSON line; no rule matches across it
_KNOWN_MAX = 4096           # values remembered for the whole bundle (a PEM block fits)
_RUN_MAX = 4096             # a longer base64 run is data (an image), not a credential
_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]+")
_BENIGN_PREFIXES = ("msg_", "toolu_", "srvtoolu_", "req_", "call_", "chatcmpl-", "file_")
_PEM_BEGIN = re.compile(r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END[ A-Z0-9]*-----")
_YAML_ENV = re.compile(r"^(?P<ind>[ \t]*)(?:-[ \t]+)?(?:env|environment|extraEnv|environmentVariables"
                       r"|env_vars|envs)[ \t]*:[ \t]*(?:#.*)?$", re.I)
_YAML_ENV_ITEM = re.compile(r"^(?P<ind>[ \t]*)(?:-[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*[:=][ \t]*"
                            + _VALUE)

_PLACE_RULES = [      # (pattern, kind, needles in the lower-cased text, judge the name)
    (_URL_PASSWORD, "url_password", ("//",), False),
    (_URL_USER_TOKEN, "url_password", ("//",), False),
    (_AUTH, "authorization", ("authorization",), False),
    (_BEARER, "authorization", ("bearer", "token"), False),
    (_CURL_USER, "password", ("-u", "--user"), False),
    (_LOGIN_P, "password", ("login",), False),
    (_FLAG, "password", ("--",), True),
    (_ASSIGN, "secret", _ASSIGN_HINTS, True),
]


# What each place rule's regex cannot match without (substring tests on the text as it is, at
# C speed; ``runs``: the text has a run of _RUN_CHARS of _MIN_RUN or more). A rule whose gate
# fails cannot match, so it is not tried; when the gate passes the rule runs as always.
_PLACE_GATES = [
    lambda t, runs: "@" in t and ":" in t and "//" in t,           # //user:pass@
    lambda t, runs: "@" in t and "//" in t,                        # //token@
    lambda t, runs: ":" in t or "=" in t,                          # authorization: / =
    lambda t, runs: runs and (" " in t or "\t" in t),              # bearer|token <12+ run>
    lambda t, runs: ":" in t and "-u" in t,                        # -u / --user name:pass
    lambda t, runs: "-" in t and "-p" in t,                        # login ... -p value
    lambda t, runs: "-" in t and "--" in t,                        # --name value
    lambda t, runs: ":" in t or "=" in t,                          # name = value / name: value
]

# ---------------------------------------------------------------- names
_SECRET_PARTS = frozenset({
    "TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PWD", "PASSPHRASE", "CRED",
    "CREDS", "CREDENTIAL", "CREDENTIALS", "APIKEY", "AUTH", "COOKIE", "DSN", "PRIVATEKEY",
    "ACCESSKEY", "SECRETKEY", "ACCOUNTKEY", "SIGNINGKEY", "AUTHTOKEN", "ACCESSTOKEN"})
_SECRET_SUFFIXES = ("_KEY", "APIKEY", "ACCESSKEY", "SECRETKEY", "ACCOUNTKEY", "PRIVATEKEY",
                    "TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEYHELPER", "_CRED", "_CREDS",
                    "CREDENTIALS", "PASSPHRASE")
_SECRET_NAMES = frozenset({"DATABASE_URL", "DB_URL", "CONNECTION_STRING", "CONNECTIONSTRING",
                           "SQLALCHEMY_DATABASE_URI", "REDIS_URL", "MONGO_URL", "MONGODB_URI",
                           "SENTRY_DSN", "APIKEYHELPER"})
# Names that look secret-like but hold no secret (JSON keys of transcripts, code, configs).
_HARMLESS_NAMES = frozenset({
    "KEY", "KEYS", "SORT_KEY", "PRIMARY_KEY", "FOREIGN_KEY", "CACHE_KEY", "GROUP_KEY",
    "PARTITION_KEY", "DICT_KEY", "MAP_KEY", "KEY_COLUMN", "KEY_PATH", "KEY_FILE", "KEYFILE",
    "TOKENIZER", "TOKENS", "MAX_TOKENS", "INPUT_TOKENS", "OUTPUT_TOKENS", "AUTHOR", "AUTHORS",
    "PASS_RATE", "PASSED", "PASSES", "BYPASS", "PASSTHROUGH", "TOKEN_TYPE", "TOKEN_COUNT",
    "KEY_ID", "PUBLIC_KEY", "PUBKEY", "PASS_AT_K", "AUTH_TYPE", "AUTH_METHOD"})
# Environment variables that never hold a secret (their values still go through every rule).
SAFE_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TERM", "SHELL",
    "TZ", "TMPDIR", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "RCA_HOOKS", "ROUTING_HOOKS", "MINING_HOOKS", "TAO_SKILL_BANK_PATH", "TAO_SKILL_BANK_PYTHON",
    "TAO_AOI_BOOTSTRAP", "TAO_AOI_EXTRAS", "CLAUDE_PLUGIN_ROOT", "CLAUDE_PLUGIN_DATA",
    "CLAUDE_PROJECT_DIR", "CLAUDE_CONFIG_DIR", "MAX_THINKING_TOKENS", "BASH_DEFAULT_TIMEOUT_MS",
    "BASH_MAX_TIMEOUT_MS", "DISABLE_TELEMETRY", "DISABLE_AUTOUPDATER", "NODE_ENV", "DEBUG",
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DOCKER_HOST", "NO_PROXY", "no_proxy"})
_ENV_KEYS = frozenset({"env", "environment", "extraenv", "environmentvariables", "env_vars", "envs"})
_TRIVIAL = re.compile(r"(?i)(?:[01]|true|false|yes|no|on|off|none|null|-?\d{1,6})")
# JSON keys of a transcript whose string values are identifiers or signatures, not credentials:
# they skip the entropy rule only (shapes, URLs and names still apply).
_ID_KEYS = frozenset({"uuid", "parentUuid", "sessionId", "session_id", "requestId", "id",
                      "tool_use_id", "message_id", "leafUuid", "signature", "sha256", "sha",
                      "hash", "digest", "etag", "checksum", "timestamp", "logicalParentUuid"})


@functools.lru_cache(maxsize=16384)
def _secret_name(name: str) -> bool:
    upper = name.upper().replace("-", "_").strip("_.\"'\\")
    upper = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip("-_.\"'\\")).upper().replace("-", "_") \
        if any(c.islower() for c in name) and any(c.isupper() for c in name) else upper
    if not upper or upper in _HARMLESS_NAMES or upper.split(".")[-1] in _HARMLESS_NAMES:
        return False
    flat = upper.replace("_", "").replace(".", "")
    if upper in _SECRET_NAMES or flat in _SECRET_NAMES:
        return True
    parts = set(re.split(r"[_.]+", upper))
    if parts & _SECRET_PARTS:
        return True
    return upper.endswith(_SECRET_SUFFIXES) or flat.endswith(
        ("APIKEY", "ACCESSKEY", "SECRETKEY", "PRIVATEKEY", "ACCOUNTKEY", "TOKEN", "SECRET",
         "PASSWORD", "KEYHELPER")) or "PRIVATEKEY" in flat


def _assign_positions(text: str) -> set[int] | None:
    """Where _ASSIGN can match, found from its separators: for each "=" / ":", the name run
    before it (past blanks, a quote, a backslash) and the first keyword in that run (the
    keyword scan would try the same run at each keyword and get the same name and value).
    None when the keyword scan is the cheaper way (many separators) or the text is not ASCII
    (case-insensitive matching of a few non-ASCII letters)."""
    if not text.isascii():
        return None
    budget = (len(text) + 1600) // 160       # separators worth judging one by one
    positions: set[int] = set()
    skel = None
    for sep in ("=", ":"):
        s = text.find(sep)
        while s >= 0:
            budget -= 1
            if budget < 0:
                return None
            j = s
            while j > 0 and text[j - 1] in " \t":
                j -= 1
            if j > 0 and text[j - 1] in "\"'":
                j -= 1
            if j > 0 and text[j - 1] == "\\":
                j -= 1
            if j > 0 and text[j - 1] in _NAME_CHARS:
                lim = max(0, j - 128)
                start = j - _NAME_RUN.match(text[lim:j][::-1]).end()
                if start == lim and lim > 0:       # a longer name: find where it starts
                    if skel is None:
                        skel = text.encode("ascii").translate(_NAME_SKELETON)
                    start = skel.rfind(b" ", 0, j) + 1
                m = _ASSIGN_START.search(text, start, j)
                if m is not None:
                    positions.add(m.start())
            s = text.find(sep, s + 1)
    return positions


def _placeholder(value: str) -> bool:
    v = value.strip()
    return (not v or v.startswith(("$", _TAG_PREFIX, "<", "%", "{{")) or v in ("***", "...", "xxx")
            or bool(_TRIVIAL.fullmatch(v)))


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _legacy_ngc(run: str) -> bool:
    try:
        plain = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(_LEGACY_NGC_PLAIN.fullmatch(plain))


class ValueMask:
    """Masks given values, and their JSON-escaped forms, wherever they occur; each value as
    ``[REDACTED:<its rule>]``. Every value must be 8 characters or more (the probes)."""

    def __init__(self, rules: dict[str, str]):
        forms: dict[str, str] = {}
        for value, rule in rules.items():
            forms[value] = rule
            forms.setdefault(json.dumps(value)[1:-1], rule)
        self._rules = forms
        self._pattern = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))))
        self._probes = {f[:8] for f in forms}

    def may_hold(self, text: str) -> bool:
        """False when no value (nor its JSON-escaped form) can occur in ``text``."""
        return any(p in text for p in self._probes)

    def sub(self, text: str, counts: Counter) -> str:
        """``text`` with every value masked; ``counts[rule]`` grows by one per mask."""
        def repl(m: re.Match) -> str:
            rule = self._rules[m.group()]
            counts[rule] += 1
            return TAG.format(rule)
        return self._pattern.sub(repl, text)


def line_blocks(src: IO[bytes], block: int = 1 << 20):
    """Blocks of about ``block`` bytes read from ``src``, each made of whole lines (the last
    may lack its end): memory stays bounded by ``block`` plus the longest line."""
    carry = b""
    while True:
        chunk = src.read(block)
        if not chunk:
            if carry:
                yield carry
            return
        chunk = carry + chunk
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            carry = chunk
            continue
        carry = chunk[cut:]
        yield chunk[:cut]


class Redactor:
    """Redacts texts of one bundle; ``counts[rule]`` says how many values each rule masked.

    ``conservative`` (the plugin environment with detect-secrets is not ready): the entropy
    rule masks runs from 20 characters on instead of 32, so more is masked, never less."""

    def __init__(self, conservative: bool = True, known: set[str] | None = None):
        self.conservative = conservative
        self.counts: Counter = Counter()
        # shared between the redactors of one bundle: a value found in one file is masked in all
        self.known: set[str] = known if known is not None else set()
        self._run = _RUN.pattern % (20 if conservative else 32)
        self._run_re = re.compile(self._run)
        self._known_mask: ValueMask | None = None
        self._known_size = -1

    # ------------------------------------------------------------ helpers
    def _mask(self, kind: str, value: str = "") -> str:
        if 56 <= len(value) <= 124 and _legacy_ngc(value.rstrip("=")):
            kind = "ngc_key"        # an old NGC key found by a place rule keeps its own name
        self.counts[kind] += 1
        if 8 <= len(value) <= _KNOWN_MAX and "[REDACTED" not in value:
            self.known.add(value)
        return TAG.format(kind)

    def _sub_value(self, text: str, pattern: re.Pattern, kind: str, needles: tuple[str, ...],
                   name_check: bool = False, low: str | None = None) -> str:
        """Mask the value group of ``pattern`` matched where one of ``needles`` occurs (in the
        lower-cased text): a few substring scans instead of a regex tried at every position."""
        positions = _assign_positions(text) if pattern is _ASSIGN else None
        if positions is None:
            low = text.lower() if low is None else low
            positions = set()
            for needle in needles:
                pos = low.find(needle)
                while pos >= 0:
                    positions.add(pos)
                    pos = low.find(needle, pos + 1)
        if not positions:
            return text
        out, last = [], 0
        for pos in sorted(positions):
            if pos < last:
                continue
            m = pattern.match(text, pos)
            if m is None:
                continue
            if name_check:
                if "name" in m.groupdict():
                    name = m.group("name")
                else:
                    start = m.start()
                    while start > 0 and text[start - 1] in _NAME_CHARS:
                        start -= 1
                    name = text[start:m.start("q")]
                if not _secret_name(name):
                    continue
            group = next((g for g in _VGROUPS if m.groupdict().get(g) is not None), None)
            if group is None:
                continue
            value = m.group(group)
            if _placeholder(value) or m.start(group) < last:
                continue
            out += [text[last:m.start(group)], self._mask(kind, value)]
            last = m.end(group)
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _shapes(self, text: str, runs: list[tuple[int, int]]) -> str:
        if "PRIVATE KEY" in text:
            kind, _, pattern = _PEM_RULE
            new = pattern.sub(lambda m, k=kind: self._mask(k, m.group()), text)
            if new != text:
                text = new
                runs = _long_runs(text)
        runs = [r for r in runs if r[1] - r[0] >= _SHAPE_MIN_RUN]
        return self._on_runs(text, runs, self._run_shapes) if runs else text

    def _run_shapes(self, text: str) -> str:
        # substring tests (C speed) on the text as it came decide whether a rule's regex runs
        # at all: first the rare characters a rule needs (one memchr each), then its needles
        have = frozenset(c for c in _RARE if c in text)
        todo = {i for n in _NEEDLES_FOR[have] if n in text for i in _RULES_OF[n]}
        if "A" in text and _AWS_GATE.search(text) is not None:
            todo.update(_AWS_RULES)
        for i in sorted(todo):
            kind, pattern = _RUN_SHAPE_RULES[i]
            text = pattern.sub(lambda m, k=kind: self._mask(k, m.group()), text)
        return text

    @staticmethod
    def _on_runs(text: str, runs: list[tuple[int, int]], judge) -> str:
        """``judge`` applied to the runs of ``text`` (cut out, joined by a space, judged in one
        call, put back). Only for rules that match inside one run (see _RUN_CHARS)."""
        parts = [text[a:b] for a, b in runs]
        joined = parts[0] if len(parts) == 1 else " ".join(parts)
        new = judge(joined)
        if new == joined:
            return text
        pieces = new.split(" ")
        if len(pieces) != len(parts):        # never expected: no rule consumes a space
            pieces = [judge(p) for p in parts]
        out, last = [], 0
        for (a, b), old, piece in zip(runs, parts, pieces):
            if piece != old:
                out += [text[last:a], piece]
                last = b
        out.append(text[last:])
        return "".join(out)

    def _entropy_runs(self, text: str) -> str:
        limit = 3.5 if self.conservative else 4.0

        def repl(m: re.Match) -> str:
            run = m.group()
            if len(run) > _RUN_MAX:
                return run
            core = run.rstrip("=")
            # cheap tests first (C speed): upper, lower and a digit, else not a key
            if core.isalpha() or core.lower() == core or core.upper() == core \
                    or _DIGIT.search(core) is None:
                return run
            if len(core) >= 56 and _legacy_ngc(core):
                return self._mask("ngc_key", run)
            if (run.startswith(_BENIGN_PREFIXES) or _HEX.fullmatch(core) or _UUID.search(core)
                    or run.startswith(("/", "-", "_")) or "__" in run):
                return run
            # paths and dotted names: every segment a short word
            segments = re.split(r"[/_\-]+", core)
            if len(segments) >= 3 and max(map(len, segments)) < 16 and len(core) < 64:
                return run
            if _entropy(core) < limit:
                return run
            return self._mask("high_entropy", run)
        return self._run_re.sub(repl, text)

    def may_hold_known(self, text: str) -> bool:
        """False when no value of ``known`` (nor its JSON-escaped form) can occur in ``text``."""
        if not self.known:
            return False
        if self._known_size != len(self.known):
            self._known_mask = ValueMask(dict.fromkeys(self.known, "known_value"))
            self._known_size = len(self.known)
        return self._known_mask.may_hold(text)

    def known_values(self, text: str) -> str:
        """``text`` with every value of ``known`` masked (``counts["known_value"]``)."""
        if not self.may_hold_known(text):
            return text
        return self._known_mask.sub(text, self.counts)

    # ------------------------------------------------------------ text
    def text(self, text: str, skip_entropy: bool = False) -> str:
        """Redact free text (one line or many)."""
        if len(text) < 6:
            return text
        runs = _long_runs(text)
        new = self._shapes(text, runs)
        if new is not text:
            text, runs = new, _long_runs(new)
        # each rule needs the lower-cased text again only after an earlier rule changed it
        low = None
        for (pattern, kind, needles, name_check), gate in zip(_PLACE_RULES, _PLACE_GATES):
            if not gate(text, runs):
                continue
            if low is None and pattern is not _ASSIGN:     # _ASSIGN mostly starts at its "="
                low = text.lower()
            new = self._sub_value(text, pattern, kind, needles, name_check, low)
            if new is not text:
                text, low, runs = new, None, _long_runs(new)
        if "\n" in text and ":" in text:
            if low is None:
                low = text.lower()
            if "env" in low:
                new = self._yaml_env(text)
                if new != text:
                    text, runs = new, _long_runs(new)
        if not skip_entropy:
            n = 20 if self.conservative else 32
            long_runs = [r for r in runs if r[1] - r[0] >= n]
            if long_runs:
                text = self._on_runs(text, long_runs, self._entropy_runs)
        return self.known_values(text)

    def _yaml_env(self, text: str) -> str:
        lines = text.splitlines(keepends=True)
        env_indent = None
        for i, line in enumerate(lines):
            stripped = line.strip()
            if env_indent is not None:
                indent = len(line) - len(line.lstrip(" \t"))
                if stripped and indent <= env_indent and not stripped.startswith("-"):
                    env_indent = None
                elif stripped and indent <= env_indent and stripped.startswith("-") and indent < env_indent:
                    env_indent = None
            if env_indent is not None and stripped:
                m = _YAML_ENV_ITEM.match(line)
                if m and m.group("name").upper() not in SAFE_ENV:
                    group = next((g for g in _VGROUPS if m.group(g) is not None), None)
                    if group and not _placeholder(m.group(group)):
                        lines[i] = (line[:m.start(group)] + self._mask("env_value", m.group(group))
                                    + line[m.end(group):])
            m = _YAML_ENV.match(line)
            if m:
                env_indent = len(m.group("ind"))
        return "".join(lines)

    # ------------------------------------------------------------ JSON
    def _walk(self, obj, key: str | None = None, in_env: bool = False):
        """Judge a decoded JSON value: names and env mappings here, free text in one pass.

        The strings to judge as free text are joined (with a separator no rule crosses) and
        redacted together, then put back: one pass of each rule per line, not per string."""
        slots: list[tuple[object, object]] = []
        obj = self._collect(obj, key, in_env, slots)
        if slots:
            parts = [c[k] for c, k in slots]
            joined = _SEP.join(parts)
            new = self.text(joined)
            if new is not joined and new != joined:
                pieces = new.split(_SEP)
                if len(pieces) != len(parts):        # never expected: judge one by one
                    pieces = [self.text(p) for p in parts]
                for (container, k), piece in zip(slots, pieces):
                    container[k] = piece
        return obj

    def _collect(self, obj, key, in_env, slots):
        if isinstance(obj, dict):
            env = key is not None and key.lower() in _ENV_KEYS
            items = obj.items()
        elif isinstance(obj, list):
            env = in_env
            items = enumerate(obj)
        else:
            return self._judge_str(obj, key, in_env) if isinstance(obj, str) else obj
        for k, v in list(items):
            name = k if isinstance(k, str) else key
            if isinstance(v, str):
                new = self._judge_str(v, name, env)
                if new is not None:
                    obj[k] = new
                elif name not in _ID_KEYS:
                    slots.append((obj, k))
            elif isinstance(v, (dict, list)):
                self._collect(v, name, env, slots)
        return obj

    def _judge_str(self, value: str, key, in_env: bool) -> str | None:
        """The new value when the key alone decides (or the string holds JSON); else None."""
        if key is not None and _secret_name(key) and not _placeholder(value):
            return self._mask("secret", value)
        if in_env and key is not None and key.upper() not in SAFE_ENV and not _placeholder(value):
            return self._mask("env_value", value)
        if value[:1] in ("{", "[") or value[:2] in (" {", "\n{"):
            stripped = value.strip()
            if stripped[-1:] in ("}", "]"):
                try:
                    inner = json.loads(stripped)
                except ValueError:
                    return None
                if isinstance(inner, (dict, list)):
                    before = sum(self.counts.values())
                    new = self._walk(inner)
                    if sum(self.counts.values()) != before:
                        return json.dumps(new, ensure_ascii=False)
        return None

    def json_text(self, text: str) -> str | None:
        """``text`` redacted as a JSON document (compact when changed); None if not JSON."""
        stripped = text.strip()
        if not stripped or stripped[0] not in "{[":
            return None
        try:
            obj = json.loads(stripped)
        except ValueError:
            return None
        before = sum(self.counts.values())
        new = self._walk(obj)
        if sum(self.counts.values()) == before:
            return text
        if isinstance(new, str):
            return json.dumps(new, ensure_ascii=False)
        return json.dumps(new, ensure_ascii=False, separators=(",", ":"))

    def line(self, line: str) -> str:
        """One transcript line (with or without its line end)."""
        body = line.rstrip("\r\n")
        end = line[len(body):]
        as_json = self.json_text(body)
        if as_json is not None:
            if as_json is body:
                return line
            # what the walk may have missed in escaped form is seen on the serialized text
            return self.text(as_json, skip_entropy=True) + end
        return self.text(body) + end

    def document(self, text: str, json_doc: bool = False) -> str:
        """A whole file (settings, spec, config): JSON walked when it parses, else free text."""
        if json_doc or text.lstrip()[:1] in ("{", "["):
            as_json = self.json_text(text)
            if as_json is not None:
                if as_json is text:
                    return self.text(text, skip_entropy=True) if self.known else text
                return self.text(json.dumps(json.loads(as_json), ensure_ascii=False, indent=2) + "\n",
                                 skip_entropy=True)
        return self.text(text)

    def stream(self, src: IO[bytes], dst: IO[bytes], block: int = 1 << 20) -> int:
        """Copy binary ``src`` to ``dst`` redacted line by line (memory bounded by ``block``
        plus the longest line); a private-key block spread over raw lines is masked whole.
        Returns the number of lines."""
        lines = 0
        in_pem = False
        for body in line_blocks(src, block):
            outs = []                   # one write per block
            for raw in body.splitlines(keepends=True):
                lines += 1
                text = raw.decode("utf-8", "surrogateescape")
                if in_pem:
                    end = _PEM_END.search(text)
                    if end is None:
                        tail = text[len(text.rstrip("\r\n")):]
                        outs.append((TAG.format("private_key") + tail).encode())
                        continue
                    in_pem = False
                    text = TAG.format("private_key") + text[end.end():]
                out = self.line(text)
                begin = _PEM_BEGIN.search(out)
                if begin is not None and not _PEM_END.search(out, begin.end()):
                    in_pem = True
                    tail = out[len(out.rstrip("\r\n")):]
                    out = out[:begin.start()] + self._mask("private_key") + tail
                if out is text or out == text:
                    outs.append(raw)                # unchanged: the bytes as they came
                else:
                    outs.append(out.encode("utf-8", "surrogateescape"))
            dst.write(b"".join(outs))
        return lines


# ---------------------------------------------------------------- module-level API
def redact_line(line: str, conservative: bool = True) -> str:
    return Redactor(conservative).line(line)


def redact_bytes(data: bytes, conservative: bool = True) -> bytes:
    """``data`` (one line or a block of whole lines) with every credential replaced."""
    r = Redactor(conservative)
    return "".join(r.line(ln) for ln in data.decode("utf-8", "surrogateescape")
                   .splitlines(keepends=True)).encode("utf-8", "surrogateescape")


def redact_text(text: str, conservative: bool = True) -> str:
    """A whole text: JSON lines judged decoded, the rest as free text."""
    r = Redactor(conservative)
    if text.lstrip()[:1] in ("{", "[") and r.json_text(text) is not None:
        return r.document(text)
    lines = text.splitlines(keepends=True)
    if lines and all(ln.lstrip()[:1] in ("{", "[") for ln in lines if ln.strip()):
        return "".join(r.line(ln) for ln in lines)
    return r.text(text)


def redact_stream(src: IO[bytes], dst: IO[bytes], block: int = 1 << 20,
                  redactor: Redactor | None = None) -> int:
    return (redactor or Redactor()).stream(src, dst, block)
