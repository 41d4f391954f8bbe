"""Shared test helpers for redaction and packaging: a corpus of credential shapes, a planted
transcript / settings / specs, a results folder, and the checks on a finished bundle.

Every value is fake but has the real shape (prefix, alphabet, length) of its kind. Values are
built from a seeded generator so that no file holds a token-looking literal."""
from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

_R = random.Random(9)
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


def rnd(n: int, alphabet: str = ALNUM) -> str:
    # guarantee the three classes, as real keys have them
    core = [_R.choice(string.ascii_uppercase), _R.choice(string.ascii_lowercase), _R.choice(string.digits)]
    core += [_R.choice(alphabet) for _ in range(n - 3)]
    _R.shuffle(core)
    return "".join(core)


def hexs(n: int) -> str:
    return "".join(_R.choice("0123456789abcdef") for _ in range(n))


def _pem(kind: str = "PRIVATE KEY") -> str:
    body = "\n".join(rnd(64, B64) for _ in range(6))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


def _jwt() -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": rnd(12), "iat": 1700000000}).encode()).decode().rstrip("=")
    return f"{head}.{body}.{rnd(43, URLSAFE)}"


@dataclass(frozen=True)
class Shape:
    name: str
    secret: str         # what must never appear (nor its first 16 characters)
    line: str           # how it shows up in a command or a text

    @property
    def probes(self) -> list[str]:
        """The secret and its 16-character prefix, as the bundle check looks for them (PEM:
        every body line)."""
        if "-----BEGIN" in self.secret:
            return [ln for ln in self.secret.splitlines() if ln and "-----" not in ln]
        return [self.secret, self.secret[:16]] if len(self.secret) > 16 else [self.secret]


def corpus() -> list[Shape]:
    """At least 40 distinct credential shapes, each in the context it is usually met in."""
    legacy = base64.b64encode(f"{rnd(26).lower()}:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".encode()).decode()
    s = []

    def add(name, secret, line):
        s.append(Shape(name, secret, line))

    v = "ghp_" + rnd(36); add("github_ghp", v, f"git push https://{v}@github.com/org/repo.git")
    v = "github_pat_" + rnd(22) + "_" + rnd(59); add("github_pat", v, f"export GITHUB_TOKEN={v}")
    v = "gho_" + rnd(36); add("github_gho", v, f"gh auth status shows {v}")
    v = "ghs_" + rnd(36); add("github_ghs", v, f"installation token: {v}")
    v = "ghu_" + rnd(36); add("github_ghu", v, f"user-to-server {v} expired")
    v = "glpat-" + rnd(20, URLSAFE); add("gitlab_pat", v, f"git clone https://oauth2:{v}@gitlab.com/g/p")
    v = "xoxb-" + "1234567890-" + rnd(24); add("slack_bot", v, f"SLACK_BOT={v} python bot.py")
    v = "xoxp-" + "1234567890-1234567890-" + rnd(32); add("slack_user", v, f"the user token is {v}")
    v = "T0ABCDEFG/B0ABCDEFG/" + rnd(24); add("slack_webhook", v, f"curl -X POST https://hooks.slack.com/services/{v}")
    v = "AKIA" + "".join(_R.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    add("aws_key_id", v, f"aws configure set aws_access_key_id {v}")
    v = rnd(40, B64); add("aws_secret", v, f"aws_secret_access_key = {v}")
    v = rnd(300, B64); add("aws_session", v, f"export AWS_SESSION_TOKEN={v}")
    v = _pem("RSA PRIVATE KEY"); add("pem_rsa", v, f"cat id_rsa\n{v}")
    v = _pem("OPENSSH PRIVATE KEY"); add("pem_openssh", v, v)
    v = _pem("EC PRIVATE KEY"); add("pem_ec", v, f"key.pem holds:\n{v}")
    v = _pem("PRIVATE KEY"); add("gcp_sa_private_key", v, json.dumps(
        {"type": "service_account", "project_id": "aoi-prod", "private_key_id": hexs(40),
         "private_key": v, "client_email": "svc@aoi-prod.iam.gserviceaccount.com"}))
    v = hexs(40); add("gcp_private_key_id", v, json.dumps({"type": "service_account", "private_key_id": v}))
    v = _jwt(); add("jwt", v, f"id_token {v}")
    v = rnd(40, URLSAFE); add("bearer", v, f"curl -H 'Authorization: Bearer {v}' https://api.x.io")
    v = base64.b64encode(f"svc:{rnd(18)}".encode()).decode(); add("basic_auth", v, f"Authorization: Basic {v}")
    v = rnd(18); add("database_url", v, f"DATABASE_URL=postgresql://aoi:{v}@db.internal:5432/aoi")
    v = rnd(20); add("pip_index_url", v, f"PIP_INDEX_URL=https://build:{v}@pypi.corp.example/simple")
    v = rnd(24); add("redis_url", v, f"redis-cli -u redis://:{v}@cache:6379/0")
    v = rnd(16); add("mongodb_srv", v, f"mongosh 'mongodb+srv://admin:{v}@cluster0.mongodb.net/test'")
    v = rnd(14) + "!"; add("yaml_password", v, f"password: {v}")
    v = rnd(15); add("flag_password_eq", v, f"mysql --user=aoi --password={v} -h db")
    v = rnd(17); add("flag_password_sp", v, f"psql --password {v} aoi")
    v = rnd(19); add("docker_login_p", v, f"docker login registry.corp -u bot -p {v}")
    v = rnd(21); add("custom_cred", v, f"export AOI_UPLOAD_CRED={v}")
    v = rnd(22); add("custom_token", v, f"AOI_SERVICE_TOKEN='{v}' ./run.sh")
    v = rnd(23); add("custom_secret", v, f'"WEBHOOK_SECRET": "{v}"')
    v = rnd(24); add("custom_key", v, f"LABELSTUDIO_KEY: {v}")
    v = "nvapi-" + rnd(64, URLSAFE); add("ngc_nvapi", v, f"docker login nvcr.io -u '$oauthtoken' -p {v}")
    add("ngc_legacy", legacy, f"ngc config set --apikey {legacy}")
    v = "hf_" + rnd(34); add("hf_token", v, f"huggingface-cli login --token {v}")
    v = "sk-proj-" + rnd(48, URLSAFE); add("openai_proj", v, f"client = OpenAI(api_key='{v}')")
    v = "sk-ant-api03-" + rnd(80, URLSAFE); add("anthropic", v, f"x-api-key: {v}")
    v = "sk_live_" + rnd(24); add("stripe_live", v, f"stripe.api_key = '{v}'")
    v = "AIza" + rnd(35, URLSAFE); add("google_api_key", v, f"maps?key={v}&q=aoi")
    v = "npm_" + rnd(36); add("npm_token", v, f"//registry.npmjs.org/:_authToken={v}")
    v = "SG." + rnd(22, URLSAFE) + "." + rnd(43, URLSAFE); add("sendgrid", v, f"sendgrid key {v}")
    v = "123456789:AA" + rnd(33, URLSAFE); add("telegram", v, f"bot {v} started")
    v = rnd(86, B64) + "=="; add("azure_account_key", v,
                                 f"DefaultEndpointsProtocol=https;AccountName=aoi;AccountKey={v};EndpointSuffix=core.windows.net")
    v = "GOCSPX-" + rnd(28, URLSAFE); add("oauth_client_secret", v, f"client_secret: {v}")
    v = "1//0" + rnd(60, URLSAFE); add("google_refresh", v, json.dumps({"refresh_token": v}))
    v = rnd(16); add("curl_user", v, f"curl -u deploy:{v} https://artifacts.corp/upload")
    v = "dapi" + hexs(32); add("databricks", v, f"databricks token {v}")
    v = rnd(32); add("cookie", v, f"Cookie: sessionid={v}; csrftoken=x")
    v = rnd(48, URLSAFE); add("generic_high_entropy", v, f"use {v} for the upload")
    return s


def escaped_u(text: str) -> str:
    """``json.dumps`` of ``text`` with every character written as a ``\\uXXXX`` escape."""
    return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'


def plant_transcript(path: Path, shapes: list[Shape]) -> Path:
    """A Claude Code style JSONL transcript holding every shape several ways: in a Bash
    command, in a tool result, in assistant text, spelled in ``\\u`` escapes, as a settings
    object (nested env), and one PEM block on raw, split lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    common = {"sessionId": "5f0c2a7e-8d7b-4c1e-9a57-1f2e3d4c5b6a", "cwd": "/work/exp",
              "version": "2.1.0", "gitBranch": "main"}
    for i, shape in enumerate(shapes):
        uid = f"0000{i:04d}-1111-2222-3333-444455556666"
        lines.append(json.dumps({**common, "type": "assistant", "uuid": uid, "message": {
            "id": f"msg_01{i:022d}", "role": "assistant", "content": [
                {"type": "tool_use", "id": f"toolu_01{i:022d}", "name": "Bash",
                 "input": {"command": shape.line, "description": "run"}}]}}))
        lines.append(json.dumps({**common, "type": "user", "toolUseResult": {
            "stdout": f"ok\n{shape.line}\n", "stderr": "", "interrupted": False}}))
        # the same text with every character escaped (\uXXXX), as some writers emit it
        lines.append('{"type":"assistant","message":{"role":"assistant","content":[{"type":"text",'
                     '"text":' + escaped_u(f"note: {shape.line}") + "}]}}")
    env = {"AOI_" + s.name.upper(): s.secret for s in shapes if "\n" not in s.secret}
    lines.append(json.dumps({"type": "user", "toolUseResult": {"file": {
        "filePath": "/work/.claude/settings.local.json",
        "content": json.dumps({"env": env, "apiKeyHelper": "/opt/bin/get-key --profile aoi"}, indent=2)}}}))
    pem = next(s for s in shapes if s.name == "pem_rsa").secret
    text = "\n".join(lines) + "\n" + "raw paste follows\n" + pem + "after the paste\n"
    path.write_text(text, encoding="utf-8")
    return path


def plant_settings(project: Path, shapes: list[Shape]) -> Path:
    """``.claude/settings.json`` and ``settings.local.json`` with secrets in env (known and
    unknown names), apiKeyHelper, nested objects and permission rules."""
    claude = project / ".claude"
    claude.mkdir(parents=True, exist_ok=True)
    by = {s.name: s.secret for s in shapes}
    settings = {
        "apiKeyHelper": "/usr/local/bin/vault read -field=key secret/anthropic",
        "env": {"PIP_INDEX_URL": f"https://build:{by['pip_index_url']}@pypi.corp.example/simple",
                "DATABASE_URL": f"postgresql://aoi:{by['database_url']}@db.internal/aoi",
                "AOI_UPLOAD_CRED": by["custom_cred"], "WEIRD_SETTING": by["custom_key"],
                "HF_TOKEN": by["hf_token"], "PATH": "/usr/local/bin:/usr/bin", "RCA_HOOKS": "1"},
        "permissions": {"allow": ["Bash(python3:*)"], "deny": []},
        "hooks": {"nested": {"env": {"OTHER_THING": by["custom_token"]}}},
    }
    (claude / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    local = {"env": {"AOI_" + s.name.upper(): s.secret for s in shapes}}
    (claude / "settings.local.json").write_text(json.dumps(local), encoding="utf-8")
    return claude


def plant_spec(folder: Path, shapes: list[Shape]) -> Path:
    """A ``*_spec.yaml`` in the results folder with secrets as YAML values, an env block, a
    value on the next line, and a literal PEM block."""
    by = {s.name: s.secret for s in shapes}
    pem = "\n".join("    " + ln for ln in by["pem_ec"].splitlines())
    lines = ["results_dir: /work/exp/rca_results/2026-01-01_000000",
             f"checkpoint: https://user:{by['pip_index_url']}@models.corp/ckpt.pth",
             "env:", f"  MY_OPAQUE: {by['custom_key']}", f"  WANDB_API_KEY: {by['custom_token']}",
             "  CUDA_VISIBLE_DEVICES: '0'",
             "password:", f"  {by['yaml_password']}",
             "tls_key: |", pem]
    lines += [f"note_{i}: {s.line}" for i, s in enumerate(shapes) if "\n" not in s.line]
    path = folder / "secrets_spec.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bundle_texts(folder: Path, config_name: str) -> dict[str, str]:
    """Every file the packaging left beside the report, as text (JSON lines also decoded)."""
    out = {}
    paths = [folder / "claude_session.jsonl", *sorted((folder / config_name).rglob("*"))]
    for p in paths:
        if not p.is_file():
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        decoded = []
        for line in text.splitlines():
            try:
                decoded.append(json.dumps(json.loads(line), ensure_ascii=False))
            except ValueError:
                pass
        out[str(p.relative_to(folder))] = text + "\n" + "\n".join(decoded)
    return out


def leaks(texts: dict[str, str], shapes: list[Shape]) -> list[tuple[str, str]]:
    """(shape name, file) for every secret or 16-character prefix found in the bundle."""
    found = []
    for shape in shapes:
        for probe in shape.probes:
            for rel, text in texts.items():
                if probe in text or probe.replace("/", "\\/") in text:
                    found.append((shape.name, rel))
    return sorted(set(found))
