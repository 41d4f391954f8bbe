"""scripts/resolve_image.py: the pinned URI, and a one-line exit 2 for every bad versions.yaml."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_script

KEY = "images.tao_toolkit.data_services"
PINNED = "nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services"


def resolve(*args: str, bank: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TAO_SKILL_BANK_PATH"}
    if bank is not None:
        env["TAO_SKILL_BANK_PATH"] = str(bank)
    return run_script("resolve_image.py", *args, env=env, cwd="/")


def bank_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "versions.yaml").write_text(text)
    return tmp_path


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("resolve_image.py: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_pinned_data_services_image():
    proc = resolve(KEY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == PINNED + "\n"
    data = yaml.safe_load((REPO / "versions.yaml").read_text())
    assert data["images"]["tao_toolkit"]["data_services"] == PINNED


def test_default_key_is_data_services_image():
    assert resolve().stdout.strip() == PINNED


def test_bank_override_is_honoured(tmp_path):
    bank = bank_with(tmp_path, "images:\n  tao_toolkit:\n    data_services: reg.example/x/ds:1.2.3\n")
    proc = resolve(KEY, bank=bank)
    assert proc.returncode == 0 and proc.stdout.strip() == "reg.example/x/ds:1.2.3"


def test_digest_pin_is_accepted(tmp_path):
    uri = "nvcr.io/nvidia/tao/tao-toolkit@sha256:" + "a" * 64
    bank = bank_with(tmp_path, f"images:\n  tao_toolkit:\n    data_services: '{uri}'\n")
    assert resolve(KEY, bank=bank).stdout.strip() == uri


def test_missing_versions_file(tmp_path):
    assert_one_line_error(resolve(KEY, bank=tmp_path), "versions.yaml not found", str(tmp_path))


def test_missing_key_names_key_and_siblings(tmp_path):
    bank = bank_with(tmp_path, "images:\n  tao_toolkit:\n    data_services: a/b:1\n    train: a/c:2\n")
    proc = resolve("images.tao_toolkit.gap", bank=bank)
    assert_one_line_error(proc, "images.tao_toolkit.gap", "'gap'", "data_services, train")


def test_missing_top_level_key(tmp_path):
    bank = bank_with(tmp_path, "other: 1\n")
    assert_one_line_error(resolve(KEY, bank=bank), "'images'", "top level", "other")


@pytest.mark.parametrize("leaf, shape", [("[a, b]", "list"), ("3", "int"),
                                         ("{x: y}", "mapping"), ("null", "NoneType")])
def test_non_string_leaf(tmp_path, leaf, shape):
    bank = bank_with(tmp_path, f"images:\n  tao_toolkit:\n    data_services: {leaf}\n")
    assert_one_line_error(resolve(KEY, bank=bank), KEY, shape)


@pytest.mark.parametrize("uri, why", [
    ("nvcr.io/nvidia/tao/tao-toolkit:latest", ":latest"),
    ("nvcr.io/nvidia/tao/tao-toolkit", "no tag"),
    ("registry.local:5000/tao-toolkit", "no tag"),   # a port is not a tag
    ("nvcr.io/nvidia/tao/tao-toolkit:", "empty tag"),
])
def test_unpinned_images_are_refused(tmp_path, uri, why):
    bank = bank_with(tmp_path, f"images:\n  tao_toolkit:\n    data_services: '{uri}'\n")
    assert_one_line_error(resolve(KEY, bank=bank), uri, why)


def test_invalid_yaml_is_one_line(tmp_path):
    bank = bank_with(tmp_path, "images: [unclosed\n  tao: {\n")
    assert_one_line_error(resolve(KEY, bank=bank), "not valid YAML")


def test_help_teaches_with_an_example():
    proc = resolve("--help")
    assert proc.returncode == 0
    assert "example" in proc.stdout and KEY in proc.stdout and "TAO_SKILL_BANK_PATH" in proc.stdout
