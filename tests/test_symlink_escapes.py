"""Issue #9: nothing outside its allowed root is read or written through a link (whole path,
every component), and no error or hook message quotes a file's contents."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tao_aoi.hooks import packaging
from tao_aoi.paths import (PathEscape, ensure_dir_within, open_regular_within, output_file_within,
                           read_text_within, resolve_within)

REPO = Path(__file__).resolve().parents[1]
SHADOW = "root:$6$NOT-A-REAL-HASH-outside-content:19000:0:99999:7:::"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder standing in for /etc: what must never be read or written."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "shadow").write_text(SHADOW + "\n")
    (out / "session.jsonl").write_text(json.dumps({"type": "user", "secret": SHADOW}) + "\n")
    return out


# ---------------------------------------------------------------- tao_aoi.paths

def test_intermediate_symlinked_folder_is_caught(tmp_path, outside):
    root = tmp_path / "results"
    root.mkdir()
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscape) as err:
        resolve_within(root / "sub" / "shadow", root)
    assert "symbolic link" in str(err.value) and SHADOW not in str(err.value)
    with pytest.raises(PathEscape):
        read_text_within(root / "sub" / "shadow", root)
    with pytest.raises(PathEscape):
        open_regular_within(root / "sub" / ".." / "sub" / "shadow", root)


def test_final_symlink_out_is_refused_inside_is_fine(tmp_path, outside):
    root = tmp_path / "results"
    root.mkdir()
    (root / "threshold.txt").symlink_to(outside / "shadow")
    with pytest.raises(PathEscape) as err:
        read_text_within(root / "threshold.txt", root)
    assert SHADOW not in str(err.value)
    (root / "real.txt").write_text("0.5\n")
    (root / "alias.txt").symlink_to(root / "real.txt")
    assert read_text_within(root / "alias.txt", root) == "0.5\n"


def test_not_a_regular_file(tmp_path):
    root = tmp_path / "results"
    (root / "dir").mkdir(parents=True)
    os.mkfifo(root / "fifo")
    for name in ("dir", "fifo"):          # a FIFO must not block the reader
        with pytest.raises(OSError):
            read_text_within(root / name, root)


def test_rca_images_symlink_out_is_refused(tmp_path, outside):
    root = tmp_path / "results"
    root.mkdir()
    (root / "rca_images").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscape):
        ensure_dir_within(root / "rca_images", root)
    with pytest.raises(PathEscape):
        ensure_dir_within(root / "rca_images" / "deeper", root)
    assert sorted(p.name for p in outside.iterdir()) == ["session.jsonl", "shadow"]
    with pytest.raises(PathEscape):
        output_file_within(root / "rca_images" / "x.png", root)
    # a fresh folder, or a link that stays inside, is fine
    (root / "inside_target").mkdir()
    (root / "thumbs").symlink_to(root / "inside_target", target_is_directory=True)
    assert ensure_dir_within(root / "thumbs" / "a", root) == (root / "inside_target" / "a").resolve()
    assert ensure_dir_within(root / "new" / "b", root).is_dir()
    (root / "out.png").symlink_to(outside / "shadow")
    with pytest.raises(PathEscape):
        output_file_within(root / "out.png", root)
    assert output_file_within(root / "fresh.png", root) == root.resolve() / "fresh.png"


# ---------------------------------------------------------------- packaging

@pytest.fixture
def run(tmp_path, monkeypatch):
    config = tmp_path / "claude-config"
    (config / "projects" / "-w").mkdir(parents=True)
    project = tmp_path / "project"
    folder = project / "exp" / "run1"
    folder.mkdir(parents=True)
    (folder / "RCA_Report.md").write_text("# RCA\n")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    monkeypatch.setenv("CLAUDE_PLUGIN_ROOT", str(REPO))
    monkeypatch.setenv("CLAUDE_PLUGIN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TAO_AOI_DETECT_SECRETS", "0")
    monkeypatch.delenv("CLAUDE_PROJECT_DIR", raising=False)

    def package(transcript) -> tuple[list[str], dict]:
        event = {"session_id": "s", "transcript_path": str(transcript), "cwd": str(project)}
        out = packaging.package(folder / "RCA_Report.md", "rca", event)
        manifest = json.loads((folder / "rca_config" / "manifest.json").read_text())
        return out, manifest
    return config / "projects" / "-w", project, folder, package


def _assert_refused(out, manifest, folder, why):
    assert not (folder / "claude_session.jsonl").exists()
    assert manifest["transcript"]["copied"] is False
    assert why in manifest["transcript"]["reason"], manifest["transcript"]["reason"]
    text = json.dumps(manifest) + "\n".join(out)
    assert SHADOW not in text and "NOT-A-REAL-HASH" not in text
    assert "NOT-A-REAL-HASH" not in "".join(p.read_text(errors="replace") for p in folder.rglob("*")
                                             if p.is_file())


def test_transcript_through_a_symlinked_folder(run, outside):
    projects, _, folder, package = run
    (projects / "evil").symlink_to(outside, target_is_directory=True)
    out, manifest = package(projects / "evil" / "session.jsonl")
    _assert_refused(out, manifest, folder, "inside the Claude Code projects folder")
    out, manifest = package(projects / "evil" / "shadow")
    _assert_refused(out, manifest, folder, "inside the Claude Code projects folder")


def test_transcript_outside_every_allowed_root(run, outside):
    _, _, folder, package = run
    out, manifest = package(outside / "session.jsonl")
    _assert_refused(out, manifest, folder, "inside the Claude Code projects folder")
    out, manifest = package("relative/session.jsonl")
    _assert_refused(out, manifest, folder, "not an absolute path")


def test_transcript_that_is_not_jsonl(run, outside):
    projects, _, folder, package = run
    (projects / "copied.jsonl").write_text((outside / "shadow").read_text())
    out, manifest = package(projects / "copied.jsonl")
    _assert_refused(out, manifest, folder, "does not look like a JSONL")


def test_transcript_that_is_a_fifo_or_a_folder(run):
    projects, _, folder, package = run
    os.mkfifo(projects / "fifo.jsonl")
    (projects / "dir.jsonl").mkdir()
    for name in ("fifo.jsonl", "dir.jsonl"):
        out, manifest = package(projects / name)
        _assert_refused(out, manifest, folder, "not a readable regular file")


def test_transcript_in_the_working_tree_is_accepted(run):
    _, project, folder, package = run
    t = project / ".sessions" / "s.jsonl"
    t.parent.mkdir()
    t.write_text(json.dumps({"type": "user", "message": "hi"}) + "\n")
    out, manifest = package(t)
    assert out == [] and manifest["transcript"]["copied"] is True
    assert (folder / "claude_session.jsonl").is_file()


def test_settings_and_specs_through_links_are_skipped(run, outside):
    projects, project, folder, package = run
    (project / ".claude").symlink_to(outside, target_is_directory=True)
    (outside / "settings.json").write_text(json.dumps({"env": {"X": SHADOW}}))
    (folder / "evil_spec.yaml").symlink_to(outside / "shadow")
    (folder / "specs_dir").symlink_to(outside, target_is_directory=True)
    t = projects / "s.jsonl"
    t.write_text(json.dumps({"type": "user"}) + "\n")
    out, manifest = package(t)
    config = folder / "rca_config"
    assert not (config / "project_settings").exists()
    assert not (config / "specs" / "evil_spec.yaml").exists()
    skipped = [s["path"] for s in manifest["skipped"]]
    assert any(p.endswith("settings.json") for p in skipped)
    assert any(p.endswith("evil_spec.yaml") for p in skipped)
    assert SHADOW not in json.dumps(manifest)


def test_threshold_symlinked_outside_is_not_echoed(tmp_path, outside):
    from test_hook_report_check import check, make_rca_run, rca_report, write_rca_report

    folder = make_rca_run(tmp_path)
    report = write_rca_report(folder, rca_report())
    (folder / "threshold.txt").unlink()
    (folder / "threshold.txt").symlink_to(outside / "shadow")
    out = check(report, tmp_path)
    assert "NOT-A-REAL-HASH" not in out and "root:" not in out
