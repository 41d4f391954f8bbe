"""SessionStart: export the bank path and Python for later Bash calls, brief the model.

Writes ``export TAO_SKILL_BANK_PATH=...`` and ``export TAO_SKILL_BANK_PYTHON=...`` to
``$CLAUDE_ENV_FILE`` (idempotent), starts the bank's venv install in the background when
needed, and prints a short context block (stdout reaches the model). Never waits on
an install; runs no process at all when docker is not on PATH. Standard library only.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path

from tao_aoi import backend
from tao_aoi.bank import BANK_ENV, resolve_image
from tao_aoi.hooks import venv
from tao_aoi.hooks.common import log, log_crash, plugin_manifest, read_event
from tao_aoi.hooks.report_rules import SKILLS

CREDENTIAL_NAMES = ("NGC_API_KEY", "NGC_CLI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_CREDENTIAL_PATTERN = re.compile(r".+_(TOKEN|API_KEY)$")
SKILL_PURPOSE = {"rca": "gap analysis / RCA of a VCN inference CSV -> RCA_Report.md",
                 "routing": "route weak samples to mining or AnomalyGen -> Routing_Report.md",
                 "mining": "mine look-alike real images (embed + k-NN) -> Mining_Report.md"}
TOOL_CALL = '"${TAO_SKILL_BANK_PYTHON:-python3}" "$TAO_SKILL_BANK_PATH/scripts/<tool>.py"'


def plugin_root() -> Path:
    given = os.environ.get("CLAUDE_PLUGIN_ROOT", "").strip()
    return Path(given).resolve() if given else Path(__file__).resolve().parents[2]


def credential_names(environ=None) -> list[str]:
    """Names (never values) of credential variables that are set and non-empty."""
    environ = os.environ if environ is None else environ
    return sorted(name for name, value in environ.items()
                  if value and (name in CREDENTIAL_NAMES or _CREDENTIAL_PATTERN.fullmatch(name)))


def append_exports(env_file: Path, values: dict[str, str]) -> list[str]:
    """Append ``export NAME=value`` lines not already present; return the lines written."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    env_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        present = set(env_file.read_text(encoding="utf-8").splitlines())
    except FileNotFoundError:
        present = set()
    new = [line for line in lines if line not in present]
    if new:
        with open(env_file, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in new))
    return new


def backend_summary(root: Path) -> str:
    """The backend a preflight would pick, found cheaply; no process when docker is absent."""
    failed = backend.path_checks()
    if failed:
        return f"local ({failed[0].reason})"
    if importlib.util.find_spec("yaml") is None:
        return ("undecided: docker and nvidia-smi are on PATH; scripts/preflight.py decides "
                "(this python3 has no PyYAML to read versions.yaml)")
    try:  # resolve_image needs PyYAML, present as just checked
        image = resolve_image(root=root)
    except Exception as exc:
        return f"undecided: {exc}"
    decision = backend.decide(backend.probe(image, timeout=3.0))
    return f"{decision.backend} ({decision.reason})"


def context_block(root: Path, env: venv.EnvState, backend_line: str, creds: list[str],
                  exports_note: str) -> str:
    info = plugin_manifest(root) or {}
    name = info.get("name", "tao-aoi")
    skills = "\n".join(f"  - {name}:{SKILLS[fam]} ({SKILL_PURPOSE[fam]})" for fam in SKILLS)
    lines = [
        f"[{name} {info.get('version', 'unknown')}] TAO Visual ChangeNet AOI skill bank at {root}",
        f"Python env: {env.detail}",
        f"Data-services backend: {backend_line}",
        "Credentials set (names only): " + (", ".join(creds) if creds else "none"),
        "Skills:",
        skills,
        f"Call the bank's tools as {TOOL_CALL} (each has --help). Before a data-services run, "
        'eval "$("${TAO_SKILL_BANK_PYTHON:-python3}" "$TAO_SKILL_BANK_PATH/scripts/preflight.py" '
        '--paths <every input and output> --shell)" sets $DS and prints the backend.',
    ]
    if exports_note:
        lines.append(exports_note)
    return "\n".join(lines)


def run(event: dict) -> str:
    root = plugin_root()
    env = venv.ensure(root)
    values = {BANK_ENV: str(root), venv.PYTHON_ENV: env.python}
    env_file = os.environ.get("CLAUDE_ENV_FILE", "").strip()
    note = ""
    if env_file:
        append_exports(Path(env_file), values)
    else:
        note = ("CLAUDE_ENV_FILE is not set: export these in each Bash call: "
                + "; ".join(f"export {k}={shlex.quote(v)}" for k, v in values.items()))
    try:
        backend_line = backend_summary(root)
    except Exception as exc:
        backend_line = f"undecided ({type(exc).__name__}); scripts/preflight.py decides"
    text = context_block(root, env, backend_line, credential_names(), note)
    log(f"session_start: python env {env.state}; backend {backend_line}; "
        f"session {event.get('session_id', '?')}")
    return text


def main() -> int:
    try:
        event = read_event()  # None for malformed stdin; the session still gets its env
        print(run(event or {}), flush=True)
    except Exception:
        log_crash("session_start")
    return 0
