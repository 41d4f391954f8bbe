"""`embedding image_embeddings` (local runner): output layout, encoder metadata,
unreadable images, failure modes (parity with the container: test_parity_embeddings.py); through run(cfg) and through scripts/data_services.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tao_aoi.cli import RunFailed, UsageError
from tao_aoi.data_services import image_embeddings as action
from tao_aoi.encoders import BASELINE_DIM, load_encoder
from tao_aoi.hooks.report_rules import ENCODER_METADATA_KEY, MARK_BACKEND, MARK_MISSING_IMAGES
from conftest import run_script


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}.jpg"
        Image.fromarray((rng.random((24 + i, 32, 3)) * 255).astype("uint8")).save(p, quality=90)
        paths.append(str(p))
    return paths


def write_input(path: Path, filepaths: list[str]) -> Path:
    n = len(filepaths)
    table = pa.table({
        "label": pa.array([["PASS", "SHORT", "MISSING"][i % 3] for i in range(n)]),
        "filepath": pa.array(filepaths),
        "weakness": pa.array(np.linspace(-1, 1, n)),
        "count": pa.array(np.arange(n, dtype=np.int16)),
    })
    pq.write_table(table, path)
    return path


def cfg_for(inp, out, **kw):
    cfg = {"input_parquet": str(inp), "output_parquet": str(out), "model": "baseline",
           "model_path": "google/siglip-base-patch16-224", "model_config_path": None,
           "batch_size": 4, "device": "auto", "num_workers": 2}
    cfg.update(kw)
    return cfg


def test_output_layout_metadata_and_values(tmp_path, capsys):
    paths = make_images(tmp_path / "imgs", 9)
    inp = write_input(tmp_path / "in.parquet", paths)
    out = tmp_path / "res" / "emb.parquet"
    assert action.run(cfg_for(inp, out)) == 0
    table = pq.read_table(out)
    src = pq.read_table(inp)
    assert table.column_names == ["filepath", "embedding", "label", "weakness", "count"]
    # list<double>: the container writes the float32 features as Python floats
    assert table.schema.field("embedding").type == pa.list_(pa.float64())
    for col in src.column_names:  # every input column's values, merged on filepath
        assert table.column(col).to_pylist() == src.column(col).to_pylist()
    ident = json.loads(table.schema.metadata[ENCODER_METADATA_KEY.encode()])
    assert ident["model"] == "baseline" and ident["dim"] == BASELINE_DIM and "model_path" in ident
    emb = np.array(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # baseline only
    direct = load_encoder("baseline").encode([Image.open(p) for p in paths])
    np.testing.assert_allclose(emb, direct, atol=1e-6)
    text = capsys.readouterr().out
    assert "columns: filepath, embedding, label, weakness, count" in text
    assert "rows_written: 9" in text and f"dim: {BASELINE_DIM}" in text and "images_per_s:" in text
    assert MARK_MISSING_IMAGES not in text
    assert not action.unreadable_sidecar(out).exists()


def test_unreadable_images_are_reported_by_path_and_dropped(tmp_path, capsys):
    paths = make_images(tmp_path / "imgs", 5)
    corrupt = tmp_path / "imgs" / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    truncated = tmp_path / "imgs" / "truncated.jpg"
    truncated.write_bytes(Path(paths[0]).read_bytes()[:200])
    missing = str(tmp_path / "imgs" / "missing.jpg")
    all_paths = paths[:2] + [str(corrupt), missing] + paths[2:] + [str(truncated)]
    inp = write_input(tmp_path / "in.parquet", all_paths)
    out = tmp_path / "emb.parquet"
    assert action.run(cfg_for(inp, out, batch_size=3)) == 0
    df = pd.read_parquet(out)
    assert df["filepath"].tolist() == paths  # order kept, bad rows dropped
    # the carried columns stay aligned with their own rows
    src = pd.read_parquet(inp).set_index("filepath")
    assert (df.set_index("filepath")["weakness"] == src.loc[paths, "weakness"]).all()
    text = capsys.readouterr().out
    assert MARK_MISSING_IMAGES in text and "3 of 8 images could not be read" in text
    for p in (str(corrupt), missing, str(truncated)):
        assert p in text
    sidecar = action.unreadable_sidecar(out).read_text().splitlines()
    assert [line.split("\t")[0] for line in sidecar] == [str(corrupt), missing, str(truncated)]
    assert "file not found" in sidecar[1]
    # a clean re-run removes the stale list
    write_input(inp, paths)
    action.run(cfg_for(inp, out))
    assert not action.unreadable_sidecar(out).exists()


def test_all_images_unreadable_fails_and_leaves_no_output(tmp_path):
    inp = write_input(tmp_path / "in.parquet", [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    out = tmp_path / "emb.parquet"
    out.write_bytes(b"stale output of an earlier run")
    with pytest.raises(RunFailed, match="none of the 2 images"):
        action.run(cfg_for(inp, out))
    assert not out.exists()
    assert len(action.unreadable_sidecar(out).read_text().splitlines()) == 2


def test_missing_filepath_column_is_a_usage_error(tmp_path):
    inp = tmp_path / "in.parquet"
    pd.DataFrame({"path": ["x.jpg"]}).to_parquet(inp)
    out = tmp_path / "emb.parquet"
    with pytest.raises(UsageError, match=r"input_parquet .*in.parquet has no 'filepath' column \(columns: path\)"):
        action.run(cfg_for(inp, out))
    assert not out.exists()


def test_tiny_siglip_pipeline_equals_direct_encoding(tmp_path, tiny_models):
    model_dir = tiny_models["SigLIP"]
    paths = make_images(tmp_path / "imgs", 11)
    inp = write_input(tmp_path / "in.parquet", paths)
    runs = {}
    for bs, workers in ((1, 0), (4, 3), (64, 2)):
        out = tmp_path / f"emb_{bs}.parquet"
        action.run(cfg_for(inp, out, model="SigLIP", model_path=str(model_dir),
                           batch_size=bs, num_workers=workers, device="cpu"))
        runs[bs] = np.array(pd.read_parquet(out)["embedding"].tolist(), np.float32)
        ident = json.loads(pq.read_schema(out).metadata[ENCODER_METADATA_KEY.encode()])
        assert ident["model"] == "SigLIP" and ident["dim"] == 32
        assert ident["model_path"] == str(model_dir.resolve())
    direct = load_encoder("SigLIP", str(model_dir)).encode([Image.open(p) for p in paths])
    for emb in runs.values():
        np.testing.assert_allclose(emb, direct, atol=1e-5)
    # the batch the container would use (64 >= 11 images) gives the very same floats
    np.testing.assert_array_equal(runs[64], direct)


def test_empty_input_gives_an_empty_output_as_the_container_does(tmp_path, capsys):
    inp = write_input(tmp_path / "in.parquet", [])
    out = tmp_path / "emb.parquet"
    assert action.run(cfg_for(inp, out)) == 0
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.column_names == ["filepath", "embedding", "label", "weakness", "count"]
    # the container's empty object columns come out as Arrow null
    assert table.schema.field("embedding").type == pa.null()


def test_duplicate_filepaths_multiply_rows_as_the_containers_merge_does(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    inp = write_input(tmp_path / "in.parquet", [paths[0], paths[1], paths[0]])
    out = tmp_path / "emb.parquet"
    action.run(cfg_for(inp, out))
    df = pd.read_parquet(out)
    # left merge on filepath: each of the 2 encoded rows of paths[0] meets its 2 input rows
    assert df["filepath"].tolist() == [paths[0], paths[0], paths[1], paths[0], paths[0]]
    assert df["label"].tolist() == ["PASS", "MISSING", "SHORT", "PASS", "MISSING"]


def write_spec(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_cli_runs_from_spec_and_overrides(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    inp = write_input(tmp_path / "in.parquet", paths)
    spec = write_spec(tmp_path / "embedding_spec.yaml", model="baseline", batch_size=2,
                      model_path="unused", input_parquet="???", output_parquet="???")
    out = tmp_path / "res" / "emb.parquet"
    r = run_script("data_services.py", "embedding", "image_embeddings", "-e", spec,
                   f"input_parquet={inp}", f"output_parquet={out}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"{MARK_BACKEND} local")
    assert pq.read_table(out).num_rows == 4


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    inp = tmp_path / "in.parquet"
    pd.DataFrame({"file": ["x.jpg"]}).to_parquet(inp)
    spec = write_spec(tmp_path / "spec.yaml", model="baseline", model_path="unused")
    out = tmp_path / "emb.parquet"
    r = run_script("data_services.py", "embedding", "image_embeddings", "-e", spec,
                   f"input_parquet={inp}", f"output_parquet={out}")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "'filepath'" in errors[0]
    assert not out.exists()


def test_cli_uncached_hub_model_is_refused_not_replaced(tmp_path):
    pytest.importorskip("transformers")
    import os

    paths = make_images(tmp_path / "imgs", 2)
    inp = write_input(tmp_path / "in.parquet", paths)
    spec = write_spec(tmp_path / "spec.yaml", model="SigLIP",
                      model_path="google/siglip-base-patch16-224")
    out = tmp_path / "emb.parquet"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    r = run_script("data_services.py", "embedding", "image_embeddings", "-e", spec,
                   f"input_parquet={inp}", f"output_parquet={out}", env=env)
    assert r.returncode == 2
    assert "not in the local Hugging Face cache" in r.stderr
    assert not out.exists()
