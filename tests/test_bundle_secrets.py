"""Issue #9: no credential of a corpus of 40+ shapes survives packaging, in any bundle file;
ordinary text (hashes, UUIDs, file names, numbers, paths) is left alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secret_fixtures import (bundle_texts, corpus, leaks, plant_settings, plant_spec,
                             plant_transcript)
from tao_aoi.hooks import packaging
from tao_aoi.hooks.redact import Redactor, redact_line

REPO = Path(__file__).resolve().parents[1]
SHAPES = corpus()


def test_corpus_has_forty_distinct_shapes():
    assert len(SHAPES) >= 40
    assert len({s.name for s in SHAPES}) == len(SHAPES)
    assert len({s.secret for s in SHAPES}) == len(SHAPES)


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A results folder with a report and a spec, a project with settings, a transcript under
    CLAUDE_CONFIG_DIR/projects, every one of them holding the whole corpus."""
    config = tmp_path / "claude-config"
    transcript = plant_transcript(config / "projects" / "-work" / "sess.jsonl", SHAPES)
    project = tmp_path / "project"
    plant_settings(project, SHAPES)
    folder = project / "exp" / "rca_results" / "run1"
    folder.mkdir(parents=True)
    plant_spec(folder, SHAPES)
    (folder / "RCA_Report.md").write_text("# RCA\n")
    for key, value in {"CLAUDE_CONFIG_DIR": str(config), "CLAUDE_PROJECT_DIR": str(project),
                       "CLAUDE_PLUGIN_ROOT": str(REPO),
                       "CLAUDE_PLUGIN_DATA": str(tmp_path / "data")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TAO_SKILL_BANK_PYTHON", raising=False)
    event = {"session_id": "s1", "transcript_path": str(transcript), "cwd": str(project),
             "hook_event_name": "PostToolUse", "tool_name": "Write",
             "tool_input": {"file_path": str(folder / "RCA_Report.md")}}
    return folder, event


def _check_bundle(folder: Path) -> dict:
    texts = bundle_texts(folder, "rca_config")
    assert "claude_session.jsonl" in texts
    assert {"rca_config/project_settings/settings.json", "rca_config/project_settings/settings.local.json",
            "rca_config/specs/secrets_spec.yaml"} <= set(texts)
    assert leaks(texts, SHAPES) == []
    everything = "\n".join(texts.values())
    assert "vault read" not in everything and "get-key --profile" not in everything  # apiKeyHelper
    for line in (folder / "claude_session.jsonl").read_text().splitlines():
        if line.startswith("{"):
            json.loads(line)                                     # JSON lines stay JSON
    manifest = json.loads((folder / "rca_config" / "manifest.json").read_text())
    per_file = {f["path"]: f["redactions"] for f in manifest["files"]}
    assert sum(per_file["specs/secrets_spec.yaml"].values()) >= 40
    assert sum(per_file["project_settings/settings.local.json"].values()) >= 40
    assert sum(manifest["transcript"]["redactions"].values()) >= 3 * 40
    assert all(isinstance(n, int) and n > 0 for c in per_file.values() for n in c.values())
    return manifest


def test_builtin_rules_alone_leave_no_secret(planted, monkeypatch):
    folder, event = planted
    monkeypatch.setenv("TAO_AOI_DETECT_SECRETS", "0")
    assert packaging.package(folder / "RCA_Report.md", "rca", event) == []
    manifest = _check_bundle(folder)
    assert manifest["redaction"]["engines"]["builtin"]["mode"] == "conservative"
    assert manifest["redaction"]["engines"]["detect_secrets"]["ran"] is False


def test_with_detect_secrets_in_the_plugin_environment(planted, monkeypatch):
    pytest.importorskip("detect_secrets")
    folder, event = planted
    monkeypatch.setenv("TAO_SKILL_BANK_PYTHON", sys.executable)
    assert packaging.package(folder / "RCA_Report.md", "rca", event) == []
    manifest = _check_bundle(folder)
    engines = manifest["redaction"]["engines"]
    assert engines["builtin"]["mode"] == "standard"
    assert engines["detect_secrets"]["ran"] is True, engines


def test_hook_on_bare_python_dash_S(planted, tmp_path):
    """The real hook entry point on ``python3 -S`` (no site-packages): stdlib path only."""
    folder, event = planted
    env = dict(os.environ, TAO_AOI_DETECT_SECRETS="0")
    proc = subprocess.run([sys.executable, "-S", str(REPO / "hooks" / "on_report_written.py")],
                          input=json.dumps(event), capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_bundle(folder)
    assert leaks({"stdout": proc.stdout, "stderr": proc.stderr}, SHAPES) == []


ORDINARY = [
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 kpi_gaps.parquet",
    "commit 3f2a9c1e7b4d5a6f8e9d0c1b2a3f4e5d6c7b8a90 (HEAD -> main)",
    "session 5f0c2a7e-8d7b-4c1e-9a57-1f2e3d4c5b6a uuid 0b6c1c9e-1f43-4c0e-8d8a-2a7f5e3b9c11",
    "/data/AOI_Line3/Cam2/IMG_20240101_123456_Coaxial.jpg and C:/aoi/exp12/rca_results/kpi_gaps.parquet",
    "/work/exp/rca_results/2026-01-01_000000/mining_results/2026-01-02_101010/mined.parquet",
    "threshold 0.4375 recall 0.998 precision 0.731 n=12345 -1e-05 3.14159 1,234,567",
    "nvcr.io/nvidia/tao/tao-toolkit:6.0.0-pyt siglip-so400m-patch14-384 openai/clip-vit-base-patch32",
    "python3 scripts/gap_analysis.py --inference inference.csv --threshold -1 --top-k 50 --min-recall 1.0",
    "max_tokens=4096 input_tokens: 1234 output_tokens: 56 tokenizer=bert-base-uncased",
    "sort_key=lambda r: r['score']  primary_key: filepath  key: value  top_k_per_label=50",
    "PASS = label stripped and upper-cased; NO_PASS: 45 PASS: 1200",
    "eval \"$(\"${TAO_SKILL_BANK_PYTHON:-python3}\" \"$TAO_SKILL_BANK_PATH/scripts/preflight.py\" --shell)\"",
    "export NGC_API_KEY=$NGC_API_KEY; export HF_TOKEN=\"${HF_TOKEN}\"",
    "msg_01XyZaBcDeFgHiJkLmNoPqRs toolu_01AbCdEfGhIjKlMnOpQrStUv req_011CABCdefGHIjklMNOpqrst",
    "ModelCheckpoint(dirpath='checkpoints', filename='vcn_epoch_009_step_001230')",
    "https://github.com/NVIDIA/tao_tutorials/blob/main/notebooks/tao_launcher_starter_kit/README.md",
    "git@github.com:org/repo.git and http://localhost:8080/api/v1/items?id=42&page=3",
    "iVBORw0KGgo" + "A" * 500,
]


@pytest.mark.parametrize("conservative", [True, False])
def test_ordinary_text_is_not_masked(conservative):
    changed = [line for line in ORDINARY if Redactor(conservative).line(line) != line]
    assert changed == []
    record = json.dumps({"type": "user", "message": {"content": "\n".join(ORDINARY)}})
    assert redact_line(record) == record


def test_plugin_docs_are_copied_unchanged(planted, monkeypatch):
    """The skill folders and plugin files are real prose and commands: zero masks in them."""
    folder, event = planted
    monkeypatch.setenv("TAO_AOI_DETECT_SECRETS", "0")
    packaging.package(folder / "RCA_Report.md", "rca", event)
    manifest = json.loads((folder / "rca_config" / "manifest.json").read_text())
    masked = {f["path"]: f["redactions"] for f in manifest["files"]
              if f["redactions"] and not f["path"].startswith(("specs/", "project_settings/"))}
    assert masked == {}
