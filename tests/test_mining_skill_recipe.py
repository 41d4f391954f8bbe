"""The mining skill's reference recipe, run for real on a tiny target set and pool.

The first fenced bash block of ``references/reference-invocation.md`` is what the agent
pastes; these tests run exactly that text with the local runner and the weight-free
``baseline`` encoder, then check the artifacts a report would be written from.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tao_aoi.skill_docs import bash_blocks
from tao_aoi.hooks.report_rules import (ENCODER_METADATA_KEY, MARK_LABEL_FILTER_NOOP,
                                        MINING_ARTIFACTS)

ROOT = Path(__file__).resolve().parents[1]
SKILL = ROOT / "skills" / "tao-mine-aoi-images"
RECIPE = SKILL / "references" / "reference-invocation.md"
LABELS = ("PASS", "MISSING", "BRIDGE")

_NEEDED = [ROOT / "scripts" / n for n in ("data_services.py", "write_spec.py", "preflight.py",
                                          "sample_parquet.py", "pool_to_parquet.py")]
_MODULES = ["tao_aoi.data_services.image_embeddings", "tao_aoi.data_services.nearest_neighbors"]


def _missing_parts() -> list[str]:
    missing = [str(p.relative_to(ROOT)) for p in _NEEDED if not p.is_file()]
    missing += [m for m in _MODULES if importlib.util.find_spec(m) is None]
    return missing


needs_runner = pytest.mark.skipif(
    bool(_missing_parts()),
    reason="local data-services runner not complete yet (missing: "
           + ", ".join(_missing_parts()) + ")")


def first_bash_block() -> str:
    blocks = bash_blocks(RECIPE)
    assert blocks, "reference-invocation.md has no ```bash block"
    return blocks[0]


def test_recipe_block_is_first_and_env_driven():
    text = RECIPE.read_text()
    first_fence = re.search(r"^```(\w*)", text, re.M)
    assert first_fence and first_fence.group(1) == "bash"
    block = first_bash_block()
    for var in ("TARGET_PARQUET", "POOL", "OUT"):
        assert f'{var}="${{{var}:?' in block, var
    for var, default in (("MODEL", "SigLIP"), ("MODEL_PATH", "google/siglip-base-patch16-224"),
                         ("TOPN", "5"), ("FILTER_BY_LABEL", "false"), ("BATCH_SIZE", "64")):
        assert f'{var}="${{{var}:-{default}}}"' in block, var
    assert "DS_BACKEND_FORCE" in block and "date +%Y-%m-%d_%H%M%S" in block
    # both embedding steps read the one embedding spec
    assert block.count('image_embeddings -e "$RUN/embedding_spec.yaml"') == 2
    assert "--user" not in block


def _draw(path: Path, label: str, seed: int) -> None:
    """The demo's own component renderer (one JPEG per label kind, seeded)."""
    import numpy as np

    from tao_aoi.demo.synth import draw_component

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(draw_component(label, "Top", np.random.default_rng(seed)))


def make_inputs(ws: Path, pool_label: bool = True, n_targets: int = 2, n_pool: int = 6,
                target_labels=LABELS):
    targets, pool = [], []
    for li, label in enumerate(LABELS):
        for i in range(n_targets if label in target_labels else 0):
            p = ws / "kpi" / f"{label}_{i}.jpg"
            _draw(p, label, li * 10 + i)
            targets.append({"filepath": str(p), "label": label.lower() if i else label,
                            "weakness": 0.1 * i, "input_path": f"b{i}", "object_name": f"{label}{i}"})
        for i in range(n_pool):
            p = ws / "pool" / f"{label}_{i}.jpg"
            _draw(p, label, li * 10 + i + 3)
            pool.append({"filepath": f"pool/{label}_{i}.jpg", "label": label})
    pd.DataFrame(targets).to_parquet(ws / "mining_gaps.parquet", index=False)
    pool_df = pd.DataFrame(pool)
    if not pool_label:
        pool_df = pool_df.drop(columns="label")
    pool_df.to_csv(ws / "pool.csv", index=False)
    return pd.DataFrame(targets), pool_df


def run_recipe(ws: Path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAO_", "DS_"))}
    env.update({"TAO_SKILL_BANK_PATH": str(ROOT), "TAO_SKILL_BANK_PYTHON": sys.executable,
                "DS_BACKEND_FORCE": "local", "MODEL": "baseline", "WORKSPACE": str(ws),
                "TARGET_PARQUET": str(ws / "mining_gaps.parquet"), "POOL": str(ws / "pool.csv"),
                "OUT": str(ws / "exp"), "BATCH_SIZE": "4"})
    env.update({k: str(v) for k, v in env_extra.items()})
    block = first_bash_block()
    return subprocess.run(["bash", "-c", block], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=600)


def breakdown(stdout: str) -> dict[str, dict[str, int]]:
    """The per-label table the recipe prints, as {label: {column: count}}."""
    lines = stdout.split("per-label breakdown (", 1)[1].splitlines()[1:]
    header = lines[0].split()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != len(header) + 1 or not all(p.isdigit() for p in parts[1:]):
            break
        rows[parts[0]] = dict(zip(header, map(int, parts[1:])))
    return rows


def run_dir(ws: Path) -> Path:
    runs = sorted((ws / "exp" / "mining_results").iterdir())
    assert len(runs) == 1
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{6}", runs[0].name)
    return runs[0]


@needs_runner
@pytest.mark.slow
def test_recipe_end_to_end_baseline(tmp_path):
    targets, pool = make_inputs(tmp_path)
    proc = run_recipe(tmp_path, TOPN=3)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = run_dir(tmp_path)
    for name in (*MINING_ARTIFACTS, "embedding_spec.yaml", "mining_spec.yaml", "source_pool.parquet"):
        assert (run / name).is_file(), name
    assert f"MINING_RUN={run}" in proc.stdout

    te = pq.read_table(run / "target_embeddings.parquet")
    se = pq.read_table(run / "source_embeddings.parquet")
    assert te.num_rows == len(targets) and se.num_rows == len(pool)
    assert "embedding" in te.column_names and "weakness" in te.column_names
    enc_t = json.loads(te.schema.metadata[ENCODER_METADATA_KEY.encode()])
    enc_s = json.loads(se.schema.metadata[ENCODER_METADATA_KEY.encode()])
    assert enc_t["model"] == enc_s["model"] == "baseline" and enc_t["dim"] == enc_s["dim"]

    mined = pd.read_parquet(run / "mined.parquet")
    assert mined["filepath"].is_unique
    assert set(mined["filepath"]) <= set(pool["filepath"])
    assert 3 <= len(mined) <= 3 * len(targets)
    # the spec keeps filter_by_label a string, as the container schema types it
    assert "filter_by_label: 'false'" in (run / "mining_spec.yaml").read_text()
    table = breakdown(proc.stdout)
    assert table["PASS"]["targets"] == 2  # 'pass' and 'PASS' counted together
    assert sum(r["mined_for_label"] for r in table.values()) == len(mined)
    assert sum(r["mined_with_label"] for r in table.values()) == len(mined)


@needs_runner
@pytest.mark.slow
def test_recipe_label_filter_keeps_same_label_pairs(tmp_path):
    # targets only PASS and BRIDGE; the pool also holds MISSING, which must never be mined
    make_inputs(tmp_path, target_labels=("PASS", "BRIDGE"))
    proc = run_recipe(tmp_path, TOPN=4, FILTER_BY_LABEL="true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    mined = pd.read_parquet(run_dir(tmp_path) / "mined.parquet")
    from_name = {fp.split("/")[-1].split("_")[0] for fp in mined["filepath"]}
    assert from_name == {"PASS", "BRIDGE"}
    if "label" in mined.columns:
        assert set(mined["label"]) == {"PASS", "BRIDGE"}
    assert MARK_LABEL_FILTER_NOOP not in proc.stdout + proc.stderr
    table = breakdown(proc.stdout)
    assert set(table) == {"PASS", "BRIDGE"}  # no MISSING row: MISSING had no targets
    assert all(row["cross_label"] == 0 for row in table.values())


@needs_runner
@pytest.mark.slow
def test_recipe_ledger_mines_only_novel_images(tmp_path):
    import time

    make_inputs(tmp_path)
    ledger = tmp_path / "ledger.parquet"
    first = run_recipe(tmp_path, LEDGER=ledger, TOPN=2)
    assert first.returncode == 0, first.stderr[-3000:]
    run1 = run_dir(tmp_path)
    novel1 = pd.read_parquet(run1 / "novel.parquet")
    assert len(novel1) == len(pd.read_parquet(run1 / "mined.parquet")) > 0
    blocks = bash_blocks(RECIPE)
    record = [b for b in blocks[1:] if 'mining_ledger.py" record' in b]
    assert len(record) == 1, "the recipe documents the record step in its own block"
    env = {"TAO_SKILL_BANK_PATH": str(ROOT), "TAO_SKILL_BANK_PYTHON": sys.executable,
           "LEDGER": str(ledger), "RUN": str(run1), "PATH": os.environ["PATH"]}
    rec = subprocess.run(["bash", "-c", record[0]], env=env, capture_output=True, text=True)
    assert rec.returncode == 0, rec.stderr
    time.sleep(1.1)  # the run folder is named by the second
    second = run_recipe(tmp_path, LEDGER=ledger, TOPN=2)
    assert second.returncode == 0, second.stderr[-3000:]
    run2 = sorted((tmp_path / "exp" / "mining_results").iterdir())[-1]
    assert run2 != run1
    # same targets, same pool: the local runner excludes the ledger BEFORE the search, so
    # the second iteration mines the next-nearest images, none of them mined before
    mined2 = pd.read_parquet(run2 / "mined.parquet")
    novel2 = pd.read_parquet(run2 / "novel.parquet")
    assert len(mined2) > 0 and len(novel2) == len(mined2)
    assert not set(mined2["filepath"]) & set(novel1["filepath"])
    assert "Excluded before search: %d of" % len(novel1) in (run2 / "mining_summary.txt").read_text()
    assert "ledger-no-new" not in second.stderr


@needs_runner
def test_recipe_bad_ledger_is_one_line_error(tmp_path):
    make_inputs(tmp_path, n_targets=1, n_pool=2)
    (tmp_path / "ledger_dir").mkdir()
    proc = run_recipe(tmp_path, LEDGER=tmp_path / "ledger_dir")
    assert proc.returncode == 2 and "is a folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    (tmp_path / "bad.parquet").write_text("not a parquet")
    proc = run_recipe(tmp_path, LEDGER=tmp_path / "bad.parquet")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("LEDGER: cannot read ledger")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "exp" / "mining_results").exists() or not any(
        (r / "target_embeddings.parquet").exists()
        for r in (tmp_path / "exp" / "mining_results").iterdir())


@needs_runner
@pytest.mark.slow
def test_recipe_surfaces_label_filter_noop(tmp_path):
    make_inputs(tmp_path, pool_label=False)
    proc = run_recipe(tmp_path, FILTER_BY_LABEL="true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert MARK_LABEL_FILTER_NOOP in proc.stdout + proc.stderr
    table = breakdown(proc.stdout)
    # the targets still have labels, so mined images are credited to the target they serve
    assert set(table) == set(LABELS) and "mined_with_label" not in proc.stdout
    assert sum(row["mined_for_label"] for row in table.values()) == len(
        pd.read_parquet(run_dir(tmp_path) / "mined.parquet"))


def test_recipe_refuses_missing_inputs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAO_", "DS_"))}
    env.update({"TAO_SKILL_BANK_PATH": str(ROOT), "POOL": "x", "OUT": str(tmp_path / "o")})
    proc = subprocess.run(["bash", "-c", first_bash_block()], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "TARGET_PARQUET" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_demo_pool_is_deterministic_and_routable(tmp_path):
    """The demo's synthetic pool: same seed, same bytes; a CSV pool_to_parquet accepts."""
    from tao_aoi.demo.mining import POOL_COUNTS, make_pool

    csv_a, counts = make_pool(tmp_path / "a", seed=3)
    csv_b, _ = make_pool(tmp_path / "b", seed=3)
    assert counts == POOL_COUNTS and "TOMBSTONE" not in counts  # routing has a label to surface
    a, b = pd.read_csv(csv_a), pd.read_csv(csv_b)
    assert list(a.columns) == ["filepath", "label"] and len(a) == sum(POOL_COUNTS.values())
    assert a.equals(b)
    for fp in a["filepath"][::37]:
        assert (tmp_path / "a" / fp).read_bytes() == (tmp_path / "b" / fp).read_bytes()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "pool_to_parquet.py"), str(csv_a),
                           "--out", str(tmp_path / "p.parquet"), "--check-exists",
                           "--base-dir", str(tmp_path / "a"), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["missing_files"] == 0


@needs_runner
@pytest.mark.slow
def test_recipe_dataset_csv_pool_writes_mined_dataset(tmp_path):
    """A VCN dataset CSV as the pool: mined per sample, mined_dataset.csv rows resolve to an
    image for every lighting; a second iteration with the ledger mines new samples."""
    import time

    from test_sample_mining import LIGHTS, make_dataset

    csv, spec = make_dataset(tmp_path, n=15)
    media = tmp_path / "media"
    pool = pd.read_csv(csv)
    targets = []
    for r in pool.iloc[:2].itertuples():
        for light in LIGHTS:
            targets.append({"filepath": str(media / r.input_path / f"{r.object_name}_{light}.png"),
                            "input_path": r.input_path, "object_name": r.object_name,
                            "label": r.label, "weakness": 0.5})
    pd.DataFrame(targets).to_parquet(tmp_path / "mining_gaps.parquet", index=False)
    ledger = tmp_path / "ledger.parquet"
    env = dict(POOL=csv, TRAIN_SPEC=spec, MEDIA_ROOT=media, TOPN=3, LEDGER=ledger)
    proc = run_recipe(tmp_path, **env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run1 = run_dir(tmp_path)
    assert pq.read_table(run1 / "source_samples.parquet").num_rows == 15
    out = pd.read_csv(run1 / "mined_dataset.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == ["input_path", "golden_path", "label", "object_name"]
    assert 0 < len(out) <= 6 and set(out["label"]) <= {"PASS", "MISSING", "BRIDGE"}
    for r in out.itertuples():
        for light in LIGHTS:
            assert (media / r.input_path / f"{r.object_name}_{light}.png").is_file()
    assert re.search(r"selectivity: \d+/15 pool samples mined", proc.stdout)
    blocks = bash_blocks(RECIPE)
    record = [b for b in blocks[1:] if 'mining_ledger.py" record' in b][0]
    rec = subprocess.run(["bash", "-c", record], capture_output=True, text=True, env={
        "TAO_SKILL_BANK_PATH": str(ROOT), "TAO_SKILL_BANK_PYTHON": sys.executable,
        "LEDGER": str(ledger), "RUN": str(run1), "PATH": os.environ["PATH"]})
    assert rec.returncode == 0, rec.stderr
    time.sleep(1.1)
    proc = run_recipe(tmp_path, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run2 = sorted((tmp_path / "exp" / "mining_results").iterdir())[-1]
    out2 = pd.read_csv(run2 / "mined_dataset.csv", dtype=str, keep_default_na=False)
    assert len(out2) > 0
    assert not set(zip(out2.input_path, out2.object_name)) & set(zip(out.input_path, out.object_name))
