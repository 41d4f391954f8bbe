"""Packaging beside a written report: the bundle, the redacted transcript, symlinks, re-packaging."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from test_hook_redact import SECRETS
from test_hook_report_check import (REPO, check, hook_env, make_mining_run, make_rca_run,
                                    make_routing_run, rca_report, run_hook, write_event,
                                    write_rca_report)

from tao_aoi.hooks import report_rules as rr


@pytest.fixture(autouse=True)
def claude_config_dir(tmp_path, monkeypatch):
    """Transcripts must live under the Claude Code projects folder (or the session's working
    tree): point CLAUDE_CONFIG_DIR at a throwaway one (the hook env copies os.environ)."""
    config = tmp_path / "claude-config"
    (config / "projects" / "-proj").mkdir(parents=True)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    return config


def fake_transcript(path: Path) -> Path:
    """A Claude Code style JSONL transcript with every kind of secret we promise to redact,
    written as ``<CLAUDE_CONFIG_DIR>/projects/-proj/<path.name>`` (returned)."""
    import base64

    path = Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects" / "-proj" / path.name

    legacy = base64.b64encode(b"abcd1234efgh5678ijkl9012mn:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b").decode()
    records = [
        {"type": "user", "message": {"role": "user", "content": f"my NGC key is {SECRETS[0]}"}},
        {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash", "input": {
            "command": f"export NGC_API_KEY={legacy}\nexport HF_TOKEN={SECRETS[2]}\n"
                       f"export OPENAI_API_KEY={SECRETS[3]}\nexport X_API_KEY={SECRETS[9]}"}}]}},
        {"type": "user", "toolUseResult": {"stdout": json.dumps(
            {"HF_TOKEN": "hf_" + "Z" * 30, "ANTHROPIC_API_KEY": SECRETS[5], "proj": SECRETS[4],
             "DB_PASSWORD": "pw-" + SECRETS[9]}), "stderr": ""}},
        {"type": "assistant", "message": {"content": [{"type": "text", "text":
            f"aws_access_key_id={SECRETS[6]} aws_secret_access_key={SECRETS[8]} sts {SECRETS[7]}"}]}},
        {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash", "input": {
            "command": f"curl -H \"Authorization: Bearer {SECRETS[9]}x\" https://x"}}]}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_rca_bundle_contents_and_manifest(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    project = tmp_path / "project"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "settings.json").write_text(json.dumps({"env": {"HF_TOKEN": SECRETS[2]}}))
    (project / ".claude" / "settings.local.json").write_text(json.dumps({"env": {"MY_SECRET": "abcdef123"}}))
    transcript = fake_transcript(tmp_path / "session.jsonl")
    assert check(report, tmp_path, transcript, CLAUDE_PROJECT_DIR=str(project)) == ""

    config = folder / "rca_config"
    skill = config / rr.SKILLS["rca"]
    for rel in ("versions.yaml", ".claude-plugin/plugin.json", "hooks/hooks.json",
                "specs/vcn_aoi_spec.yaml", "project_settings/settings.json",
                "project_settings/settings.local.json", "manifest.json"):
        assert (config / rel).is_file(), rel
    if (REPO / "skills" / rr.SKILLS["rca"] / "SKILL.md").exists():
        assert (skill / "SKILL.md").read_bytes() == (REPO / "skills" / rr.SKILLS["rca"] / "SKILL.md").read_bytes()
    manifest = json.loads((config / "manifest.json").read_text())
    plugin = json.loads((REPO / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["plugin"] == {"name": plugin["name"], "version": plugin["version"]}
    assert manifest["session_id"] == "sess-0001"
    assert manifest["report"] == str(report)
    assert manifest["created_at"].endswith("Z")
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(config).as_posix() for p in config.rglob("*")
               if p.is_file() and p.name != "manifest.json"}
    assert set(listed) == on_disk
    for rel, entry in listed.items():
        data = (config / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    session = folder / rr.SESSION_FILE
    assert manifest["transcript"]["sha256"] == hashlib.sha256(session.read_bytes()).hexdigest()

    # no secret survives, neither in the transcript copy nor in the bundle; JSON lines stay JSON
    text = session.read_text() + all_text(config)
    for secret in SECRETS + ["hf_" + "Z" * 30, "abcdef123"]:
        assert secret not in text, secret
    assert all(json.loads(line) for line in session.read_text().splitlines())
    assert len(session.read_text().splitlines()) == 5
    assert "[REDACTED:" in session.read_text()


def test_repackaging_replaces_in_place_without_stale_files(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    transcript = fake_transcript(tmp_path / "s.jsonl")
    check(report, tmp_path, transcript)
    stale = folder / "rca_config" / "stale.txt"
    stale.write_text("old")
    (folder / "vcn_aoi_spec.yaml").rename(folder / "other_spec.yaml")
    with open(transcript, "a") as fh:
        fh.write(json.dumps({"type": "user", "message": "one more line"}) + "\n")
    check(report, tmp_path, transcript)
    assert not stale.exists()
    assert not (folder / "rca_config" / "specs" / "vcn_aoi_spec.yaml").exists()
    assert (folder / "rca_config" / "specs" / "other_spec.yaml").is_file()
    assert len((folder / rr.SESSION_FILE).read_text().splitlines()) == 6
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_symlinks_out_of_the_results_folder_are_not_followed(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private_spec.yaml").write_text("password: hunter2-outside\n")
    (outside / "target.jsonl").write_text('{"secret": "outside-transcript"}\n')
    (folder / "evil_spec.yaml").symlink_to(outside / "private_spec.yaml")
    (folder / "inner_spec.yaml").symlink_to(folder / "vcn_aoi_spec.yaml")     # inside: fine
    link_transcript = tmp_path / "link.jsonl"
    link_transcript.symlink_to(outside / "target.jsonl")
    out = check(report, tmp_path, link_transcript)
    assert "claude_session.jsonl not written: transcript_path is a symbolic link" in out
    assert not (folder / rr.SESSION_FILE).exists()
    config = folder / "rca_config"
    assert not (config / "specs" / "evil_spec.yaml").exists()
    assert (config / "specs" / "inner_spec.yaml").is_file()
    assert "hunter2" not in all_text(config)
    manifest = json.loads((config / "manifest.json").read_text())
    assert any(s["path"].endswith("evil_spec.yaml") for s in manifest["skipped"])


def test_unavailable_transcript_keeps_the_earlier_copy(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    check(report, tmp_path, fake_transcript(tmp_path / "s.jsonl"))
    before = (folder / rr.SESSION_FILE).read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "s.jsonl")
    assert "transcript_path is a symbolic link" in check(report, tmp_path, link)
    assert (folder / rr.SESSION_FILE).read_bytes() == before
    manifest = json.loads((folder / "rca_config" / "manifest.json").read_text())
    assert manifest["transcript"]["kept_previous_copy"] is True
    assert manifest["transcript"]["sha256"] == hashlib.sha256(before).hexdigest()


def test_symlinked_bundle_and_session_are_replaced_not_written_through(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "keep.txt").write_text("untouched")
    victim_file = tmp_path / "victim.jsonl"
    victim_file.write_text("original\n")
    (folder / "rca_config").symlink_to(victim_dir, target_is_directory=True)
    (folder / rr.SESSION_FILE).symlink_to(victim_file)
    check(report, tmp_path, fake_transcript(tmp_path / "s.jsonl"))
    assert not (folder / "rca_config").is_symlink() and (folder / "rca_config" / "manifest.json").is_file()
    assert not (folder / rr.SESSION_FILE).is_symlink()
    assert sorted(p.name for p in victim_dir.iterdir()) == ["keep.txt"]
    assert victim_file.read_text() == "original\n"


def test_symlinked_report_is_refused(tmp_path):
    folder = make_rca_run(tmp_path)
    real = tmp_path / "elsewhere.md"
    real.write_text(rca_report())
    (folder / "RCA_Report.md").unlink()
    (folder / "RCA_Report.md").symlink_to(real)
    out = check(folder / "RCA_Report.md", tmp_path, fake_transcript(tmp_path / "s.jsonl"))
    assert "not packaged" in out and "symbolic link" in out
    assert not (folder / "rca_config").exists()


def test_results_folder_reached_through_a_symlinked_parent(tmp_path):
    folder = make_rca_run(tmp_path, name="real exp")
    alias = tmp_path / "alias exp"
    alias.symlink_to(tmp_path / "real exp", target_is_directory=True)
    report = alias / folder.relative_to(tmp_path / "real exp") / "RCA_Report.md"
    assert check(report, tmp_path, fake_transcript(tmp_path / "s.jsonl")) == ""
    assert (folder / "rca_config" / "manifest.json").is_file()
    assert (folder / rr.SESSION_FILE).is_file()


def test_packaging_runs_even_when_the_check_fails(tmp_path):
    folder = make_rca_run(tmp_path)
    for name in ("metrics.json", "threshold.txt", "kpi_gaps.parquet"):
        (folder / name).unlink()
    report = write_rca_report(folder, "# nothing useful\n")
    out = check(report, tmp_path, fake_transcript(tmp_path / "s.jsonl"))
    assert "problem(s)" in out
    assert (folder / "rca_config" / "manifest.json").is_file()
    assert (folder / rr.SESSION_FILE).is_file()


def test_routing_and_mining_bundles(tmp_path):
    transcript = fake_transcript(tmp_path / "s.jsonl")
    routing = make_routing_run(tmp_path)
    check(routing / "Routing_Report.md", tmp_path, transcript)
    assert (routing / "routing_config" / "manifest.json").is_file()
    mining = make_mining_run(tmp_path)
    check(mining / "Mining_Report.md", tmp_path, transcript)
    specs = sorted(p.name for p in (mining / "mining_config" / "specs").iterdir())
    assert specs == ["embedding_spec.yaml", "mining_spec.yaml"]
    manifest = json.loads((mining / "mining_config" / "manifest.json").read_text())
    assert manifest["family"] == "mining" and manifest["skill"] == rr.SKILLS["mining"]


def test_plugin_root_falls_back_to_the_checkout(tmp_path):
    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    env = hook_env(tmp_path)
    env.pop("CLAUDE_PLUGIN_ROOT")
    rc, out, _ = run_hook("on_report_written.py", write_event(report), env)
    assert rc == 0 and out == ""
    manifest = json.loads((folder / "rca_config" / "manifest.json").read_text())
    assert os.path.realpath(manifest["plugin_root"]) == os.path.realpath(REPO)
    assert (folder / "rca_config" / "hooks" / "hooks.json").is_file()
