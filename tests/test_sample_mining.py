"""Sample-aware mining (issue 14 item 2): a VCN dataset CSV pool expanded per lighting,
embedded, combined per sample, mined, written as mined_dataset.csv."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tao_aoi import sample_mining as sm
from tao_aoi.cli import UsageError
from tao_aoi.data_services import image_embeddings, nearest_neighbors

ROOT = Path(__file__).resolve().parents[1]
LIGHTS = ("Red", "Green", "Blue")


def make_dataset(ws: Path, n: int = 12, seed: int = 0):
    """n samples x 3 lightings of 3 looks (look = i % 3) + a train spec."""
    rng = np.random.default_rng(seed)
    looks = [rng.random((16, 16, 3)) for _ in range(3)]
    rows = []
    for i in range(n):
        look = looks[i % 3]
        for li, light in enumerate(LIGHTS):
            img = np.clip(look * (0.6 + 0.2 * li) + rng.normal(0, 0.05, look.shape), 0, 1)
            p = ws / "media" / f"board{i % 4}" / f"C{i}_{light}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255).astype("uint8")).resize((32, 32)).save(p)
        rows.append({"input_path": f"board{i % 4}", "golden_path": f"golden{i % 4}",
                     "label": [" pass", "Missing", "bridge "][i % 3], "object_name": f"C{i}"})
    pd.DataFrame(rows).to_csv(ws / "dataset.csv", index=False)
    spec = ws / "train.yaml"
    spec.write_text("dataset:\n  classify:\n    image_ext: .png\n    input_map:\n"
                    + "".join(f"      {k}: {i}\n" for i, k in enumerate(LIGHTS)))
    return ws / "dataset.csv", spec


def embed(inp: Path, out: Path) -> Path:
    assert image_embeddings.run({"input_parquet": str(inp), "output_parquet": str(out),
                                 "model": "baseline", "model_path": "x", "batch_size": 8,
                                 "num_workers": 0}) == 0
    return out


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "mine_samples.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("how", ["concat", "mean", "first"])
def test_dataset_pool_end_to_end(tmp_path, how):
    csv, spec = make_dataset(tmp_path)
    media = tmp_path / "media"
    p = cli("expand", csv, "--train-spec", spec, "--media-root", media, "--out",
            tmp_path / "pool.parquet", "--check-exists")
    assert p.returncode == 0, p.stderr
    pool = pd.read_parquet(tmp_path / "pool.parquet")
    assert len(pool) == 36 and list(pool["lighting"][:3]) == list(LIGHTS)
    assert pool["filepath"][0] == str(media / "board0" / "C0_Red.png")
    # targets: two samples of the pool, as gap analysis rows (per lighting)
    tgt = pool[pool["object_name"].isin(["C0", "C1"])].drop(columns=["sample"])
    tgt.to_parquet(tmp_path / "targets.parquet", index=False)
    embed(tmp_path / "pool.parquet", tmp_path / "pool_emb.parquet")
    embed(tmp_path / "targets.parquet", tmp_path / "tgt_emb.parquet")
    for name in ("pool", "tgt"):
        p = cli("combine", tmp_path / f"{name}_emb.parquet", "--train-spec", spec,
                "--combine", how, "--out", tmp_path / f"{name}_samples.parquet")
        assert p.returncode == 0, p.stderr
    samples = pq.read_table(tmp_path / "pool_samples.parquet")
    assert samples.num_rows == 12 and set(samples.column("n_lightings").to_pylist()) == {3}
    assert b"tao_aoi.encoder" in samples.schema.metadata
    assert nearest_neighbors.run({
        "source_parquet": str(tmp_path / "pool_samples.parquet"),
        "target_parquet": str(tmp_path / "tgt_samples.parquet"),
        "output_parquet": str(tmp_path / "run" / "mined.parquet"), "topn": 3,
        "knn_metric": "cosine"}) == 0
    p = cli("dataset", "--mined", tmp_path / "run" / "mined.parquet", "--samples",
            tmp_path / "pool_samples.parquet", "--out", tmp_path / "run" / "mined_dataset.csv",
            "--train-spec", spec, "--media-root", media, "--check-exists")
    assert p.returncode == 0, p.stderr
    out = pd.read_csv(tmp_path / "run" / "mined_dataset.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == ["input_path", "golden_path", "label", "object_name"]
    assert set(out["label"]) <= {"PASS", "MISSING", "BRIDGE"}
    assert 0 < len(out) <= 6 and "selectivity: %d/12" % len(out) in p.stdout
    for r in out.itertuples():  # every lighting of every mined sample exists
        for light in LIGHTS:
            assert (media / r.input_path / f"{r.object_name}_{light}.png").is_file()
    # the look-alikes of C0 (look 0: C3, C6, C9) are mined for it
    mined = pd.read_parquet(tmp_path / "run" / "mined.parquet")
    near_c0 = mined[mined["nearest_target"].str.contains("C0_")]["filepath"]
    assert {Path(f).name.split("_")[0] for f in near_c0} <= {"C0", "C3", "C6", "C9"}


def test_combine_mean_and_first_values(tmp_path):
    import pyarrow as pa

    v = np.array([[3, 4], [1, 0], [0, 2], [5, 0]], np.float32)
    t = pa.table({"filepath": ["a/x_Green.png", "a/x_Red.png", "a/y_Blue.png", "a/y_Red.png"],
                  "input_path": ["a"] * 4, "object_name": ["x", "x", "y", "y"],
                  "label": ["pass"] * 4,
                  "embedding": pa.array(list(v), pa.list_(pa.float32()))})
    pq.write_table(t, tmp_path / "e.parquet")
    mean, n = sm.combine(tmp_path / "e.parquet", LIGHTS, ".png", "mean")
    first, _ = sm.combine(tmp_path / "e.parquet", LIGHTS, ".png", "first")
    assert n == 4 and mean.column("filepath").to_pylist() == ["a/x_Red.png", "a/y_Red.png"]
    m = np.array(mean.column("embedding").to_pylist())
    np.testing.assert_allclose(m, [[(1 + 0.6) / 2, 0.8 / 2], [0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(np.array(first.column("embedding").to_pylist()), [[1, 0], [5, 0]])
    cat, _ = sm.combine(tmp_path / "e.parquet", LIGHTS, ".png", "concat")
    np.testing.assert_allclose(np.array(cat.column("embedding").to_pylist()),
                               [[1, 0, 0.6, 0.8, 0, 0], [1, 0, 0, 0, 0, 1]], rtol=1e-6)


def test_errors(tmp_path):
    pd.DataFrame({"filepath": ["a"]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(UsageError, match="not a VCN dataset CSV"):
        sm.read_dataset_csv(tmp_path / "x.csv")
    csv, spec = make_dataset(tmp_path, n=3)
    with pytest.raises(UsageError, match="lighting images are missing"):
        sm.expand(csv, spec, str(tmp_path / "nowhere"), check_exists=True)
    assert sm.is_dataset_csv(csv) and not sm.is_dataset_csv(tmp_path / "x.csv")
