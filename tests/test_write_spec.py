"""scripts/write_spec.py: validated, atomic spec files that the runner accepts."""
from __future__ import annotations

import pytest
import yaml

from tao_aoi import specs
from tao_aoi.cli import UsageError
from conftest import run_script


def test_writes_a_spec_the_runner_accepts(tmp_path):
    out = tmp_path / "ws" / "rca" / "vcn_aoi_spec.yaml"
    res = run_script("write_spec.py", "gap_analysis", "vcn_aoi", "--out", out, "--workspace", tmp_path / "ws",
                     "inference_results_dir=/e/inference", "train_config=/e/train.yaml", "min_recall=1",
                     "top_k_per_label=20")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    doc = yaml.safe_load(out.read_text())
    assert list(doc) == ["inference_results_dir", "train_config", "kpi_media_path", "results_dir",
                         "min_recall", "top_k_per_label", "threshold"]
    assert doc["kpi_media_path"] == "" and doc["min_recall"] == 1.0 and doc["top_k_per_label"] == 20
    res = run_script("data_services.py", "gap_analysis", "vcn_aoi", "-e", out, "--cfg=job",
                     "kpi_media_path=/m", "results_dir=/r")
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["kpi_media_path"] == "/m"


@pytest.mark.parametrize("args, needle", [
    (["bogus=1"], "unknown key(s) 'bogus'"),
    (["top_k_per_label=2.5"], "top_k_per_label: expected an integer"),
    (["top_k_per_label=0"], "top_k_per_label: 0 is out of range"),
    (["top_k_per_label=null"], "top_k_per_label: expected an integer, got None"),
    (["min_recall=abc"], "min_recall: expected a number"),
    (["--out", "{tmp}/elsewhere/spec.yaml"], "outside the workspace"),
])
def test_refusals_exit_2_and_write_nothing(tmp_path, args, needle):
    ws = tmp_path / "ws"
    ws.mkdir()
    out = ws / "spec.yaml"
    argv = ["gap_analysis", "vcn_aoi", "--workspace", ws]
    argv += [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        argv += ["--out", out]
    res = run_script("write_spec.py", *argv)
    assert res.returncode == 2
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "elsewhere").exists()


def test_symlink_escape_is_refused(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "link").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="outside the workspace"):
        specs.write_spec("gap_analysis", "vcn_aoi", {}, ws / "link" / "x.yaml", workspace=ws)


def test_old_names_are_written_under_new_names(tmp_path, capsys):
    path = specs.write_spec("gap_analysis", "vcn_aoi", {"output_dir": "/o"}, tmp_path / "s.yaml",
                            aliases={"output_dir": "results_dir"})
    assert yaml.safe_load(path.read_text())["results_dir"] == "/o"
    assert "old name" in capsys.readouterr().err


def test_local_only_keys_stay_out_of_specs_unless_given(tmp_path):
    # The container rejects keys its schema lacks; one spec must drive either backend.
    out = tmp_path / "embedding_spec.yaml"
    proc = run_script("write_spec.py", "embedding", "image_embeddings", "--out", str(out),
                      "--workspace", str(tmp_path), "model=CLIP", "model_path=openai/clip-vit-base-patch32")
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load(out.read_text())
    local_only = [k for k, p in specs.load_schema("embedding", "image_embeddings")["properties"].items()
                  if p.get("x-local-only")]
    assert local_only and not set(local_only) & set(spec)
    assert spec["model"] == "CLIP" and spec["batch_size"] == 64
    proc = run_script("write_spec.py", "tmm", "nearest_neighbors", "--out", str(tmp_path / "m.yaml"),
                      "--workspace", str(tmp_path), "allow_encoder_mismatch=true")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["allow_encoder_mismatch"] is True


@pytest.mark.parametrize("given", ["false", "true", "False"])
def test_filter_by_label_is_written_as_the_string_the_container_reads(tmp_path, given):
    out = tmp_path / "mining_spec.yaml"
    proc = run_script("write_spec.py", "tmm", "nearest_neighbors", "--out", str(out),
                      "--workspace", str(tmp_path), f"filter_by_label={given}")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(out.read_text())["filter_by_label"] == given
    assert f"filter_by_label: '{given}'" in out.read_text()
