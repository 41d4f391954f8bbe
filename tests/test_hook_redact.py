"""Credential redaction: every shape we promise to mask, in plain and JSON-escaped form."""
from __future__ import annotations

import base64
import io
import json

import pytest

from tao_aoi.hooks.redact import redact_line, redact_stream, redact_text

NVAPI = "nvapi-Qw3rTy8uIoP1aSdFgHjKlZxCvBnM0987654321abcdEFGH"
LEGACY_NGC = base64.b64encode(b"k9s8d7f6g5h4j3k2l1q0w9e8r7:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b").decode()
HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
OPENAI = "sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJuvwxyz0123456789"
OPENAI_PROJ = "sk-proj-AbCdEfGhIjKlMnOpQrSt_UvWxYz-0123456789abcdef"
ANTHROPIC = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-abcdefAA"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_STS = "ASIAY34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PLAIN = "s3cr3t-Plain-Value-77"

SECRETS = [NVAPI, LEGACY_NGC, HF, OPENAI, OPENAI_PROJ, ANTHROPIC, AWS_ID, AWS_STS, AWS_SECRET, PLAIN]

CASES = [
    (f"docker login nvcr.io -u '$oauthtoken' -p {NVAPI}", NVAPI, "ngc_key"),
    (f"ngc config set --apikey {LEGACY_NGC}", LEGACY_NGC, "ngc_key"),
    (f"huggingface-cli login --token {HF}", HF, "hf_token"),
    (f"OPENAI key {OPENAI} in text", OPENAI, "openai_key"),
    (f"key={OPENAI_PROJ}", OPENAI_PROJ, "openai_key"),
    (f"client = Anthropic(api_key='{ANTHROPIC}')", ANTHROPIC, "anthropic_key"),
    (f"aws_access_key_id = {AWS_ID}", AWS_ID, "aws_access_key_id"),
    (f"creds {AWS_STS}", AWS_STS, "aws_access_key_id"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "secret"),
    (f"export MY_SERVICE_TOKEN={PLAIN}", PLAIN, "secret"),
    (f"DB_PASSWORD='{PLAIN}' psql", PLAIN, "secret"),
    (f"export X_API_KEY=\"{PLAIN}\"", PLAIN, "secret"),
    (f"WANDB_SECRET: {PLAIN}", PLAIN, "secret"),
    (f"curl -H 'Authorization: Bearer {PLAIN}' https://api", PLAIN, "authorization"),
    (f"Authorization: Basic {PLAIN}", PLAIN, "authorization"),
    (f"docker login -u me --password {PLAIN} nvcr.io", PLAIN, "password"),
]


@pytest.mark.parametrize("line,secret,kind", CASES)
def test_each_shape_is_masked(line, secret, kind):
    out = redact_line(line)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out


@pytest.mark.parametrize("line,secret,kind", CASES)
def test_json_escaped_transcript_form(line, secret, kind):
    # Transcript lines are JSON: the command sits inside a string, quotes escaped, newlines as \n
    record = json.dumps({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "name": "Bash", "input": {"command": line + "\necho done"}}]}})
    out = redact_line(record)
    assert secret not in out
    json.loads(out)  # still valid JSON


def test_json_objects_inside_strings():
    # an unknown name in an env mapping cannot be judged: its value is masked too (#9)
    inner = json.dumps({"env": {"HF_TOKEN": PLAIN, "NGC_API_KEY": PLAIN, "OTHER": "mask-me",
                                "PATH": "/usr/bin:/bin"}, "note": "keep-me"})
    record = json.dumps({"toolUseResult": {"stdout": inner}})
    out = redact_line(record)
    assert PLAIN not in out and "mask-me" not in out and "keep-me" in out
    env = json.loads(json.loads(out)["toolUseResult"]["stdout"])["env"]
    assert env == {"HF_TOKEN": "[REDACTED:secret]", "NGC_API_KEY": "[REDACTED:secret]",
                   "OTHER": "[REDACTED:env_value]", "PATH": "/usr/bin:/bin"}


def test_harmless_text_is_kept():
    lines = ["NGC_API_KEY=$NGC_API_KEY docker run --rm image",
             'export HF_TOKEN="${HF_TOKEN}"',
             '{"usage": {"input_tokens": 1234, "output_tokens": 56, "cache_read_input_tokens": 7}}',
             "top_k_per_label=50 min_recall=1.0 key: value",
             "sk-learn is not a key; hf_hub is a module; the image is ASIA-PACIFIC",
             "iVBORw0KGgo" + "A" * 500]
    for line in lines:
        assert redact_line(line) == line


def test_stream_redacts_every_line_and_keeps_line_endings():
    text = "".join(f"{c[0]}\r\n" if i % 2 else f"{c[0]}\n" for i, c in enumerate(CASES))
    src = io.BytesIO(text.encode() + b"caf\xe9 not utf-8 HF_TOKEN=abcdef123\n")
    dst = io.BytesIO()
    assert redact_stream(src, dst) == len(CASES) + 1
    raw = dst.getvalue()
    assert raw.endswith(b"caf\xe9 not utf-8 HF_TOKEN=[REDACTED:secret]\n")  # odd bytes pass through
    out = raw.decode("utf-8", "replace")
    assert not any(s in out for s in SECRETS)
    assert out.count("\r\n") == len(CASES) // 2
    assert redact_text(out) == out  # idempotent


def test_block_size_does_not_change_the_result():
    text = "".join(json.dumps({"command": c[0]}) + "\n" for c in CASES) + "tail without newline " + HF
    whole = io.BytesIO()
    redact_stream(io.BytesIO(text.encode()), whole, block=1 << 20)
    for block in (1, 7, 64, 333):
        out = io.BytesIO()
        assert redact_stream(io.BytesIO(text.encode()), out, block=block) == len(CASES) + 1
        assert out.getvalue() == whole.getvalue()
    assert not any(s in whole.getvalue().decode() for s in SECRETS)
