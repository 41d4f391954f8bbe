"""The skills' recipes on the container path, exactly as documented.

``container_env`` puts the ``docker`` / ``nvidia-smi`` stand-ins first on PATH
(tests/oracle/README.md): the preflight then picks the docker backend by itself and every
``"$DS" ...`` runs NVIDIA's own module the way the image's entrypoint does (arguments
joined and re-split, ``Execution status: PASS|FAIL``, exit 1 on failure). Nothing here
re-implements a recipe: the bash text is read from the skill documents with the same
extractors the demo and the e2e scenarios use.

Cases for the RCA recipe: normal, a workspace path holding a space, an unreachable target
(an all-PASS CSV). Then routing + mining on the container path with a tiny random SigLIP.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tao_aoi.demo.rca import extract_recipe
from tao_aoi.hooks.report_rules import ENCODER_METADATA_KEY, MINING_ARTIFACTS
from tao_aoi.skill_docs import bash_blocks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from harness import fill_recipe  # noqa: E402  (the e2e scenarios' placeholder filler)

CONTAINER_COLUMNS = ["filepath", "label", "siamese_score", "weakness"]
ADDED_COLUMNS = ["input_path", "object_name", "lighting", "misclassified"]
ROUTING_SKILL = ROOT / "skills" / "tao-route-visual-changenet-samples" / "SKILL.md"
MINING_RECIPE = Path("skills/tao-mine-aoi-images/references/reference-invocation.md")

pytestmark = pytest.mark.slow


def _env(container_env: dict, **values) -> dict:
    env = {k: v for k, v in container_env.items() if not k.startswith(("TAO_SKILL_", "DS_"))}
    env.update({"TAO_SKILL_BANK_PATH": str(ROOT), "TAO_SKILL_BANK_PYTHON": sys.executable,
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update({k: str(v) for k, v in values.items()})
    return env


def run_rca(container_env: dict, ws: Path, exp: Path, train: Path, dataset: Path):
    """The RCA recipe block (recipe.md) run by bash; DS_BACKEND_FORCE unset: auto choice."""
    env = _env(container_env, EXP=exp, TRAIN_YAML=train, DATASET=dataset, WORKSPACE=ws)
    proc = subprocess.run(["bash", "-c", extract_recipe(ROOT), "recipe"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=600)
    m = re.search(r"^RCA results dir: (.+)$", proc.stdout, re.M)
    assert m, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, Path(m.group(1).strip())


def _where(proc) -> str:
    return "\n--- stdout\n" + proc.stdout[-4000:] + "\n--- stderr\n" + proc.stderr[-3000:]


def assert_docker_backend(proc) -> None:
    assert "backend: docker" in proc.stderr, _where(proc)
    assert "backend: local" not in proc.stderr + proc.stdout
    assert "docker_launch.py" in proc.stdout  # the echoed DS command


def assert_full_rca(proc, rca: Path) -> None:
    out = proc.stdout
    assert proc.returncode == 0, _where(proc)
    assert_docker_backend(proc)
    assert "Execution status: PASS" in out and "Execution status: FAIL" not in out, _where(proc)
    assert "gap_analysis exit code: 0" in out and "completion exit code: 0" in out
    # what the container wrote, untouched in front, and what the completion step added after it
    cols = pq.read_schema(rca / "kpi_gaps.parquet").names
    assert cols[:4] == CONTAINER_COLUMNS and cols[4:8] == ADDED_COLUMNS, cols
    gaps = pd.read_parquet(rca / "kpi_gaps.parquet")
    assert len(gaps) > 0 and gaps["input_path"].notna().all() and gaps["lighting"].notna().all()
    threshold = (rca / "threshold.txt").read_text(encoding="utf-8")
    assert not threshold.endswith("\n")  # the container's str(float), no newline
    metrics = json.loads((rca / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["recall"] == 1.0 and repr(float(threshold)) == threshold
    assert (rca / "weak_samples_breakdown.txt").is_file()
    assert f"threshold: {threshold} (swept)" in out
    assert "input_path" in out.split("gap_analysis exit code", 1)[1]  # the sanity table
    # the spot check: ten 128x128 first-lighting thumbnails and its json
    pngs = sorted((rca / "rca_images").glob("[0-9][0-9]_*.png"))
    assert len(pngs) == 10, [p.name for p in (rca / "rca_images").iterdir()]
    from PIL import Image
    with Image.open(pngs[0]) as im:
        assert im.size == (128, 128)
    spot = json.loads((rca / "rca_images" / "spot_check.json").read_text(encoding="utf-8"))
    assert len(spot["samples"]) == 10 and all(s["status"] == "ok" for s in spot["samples"])
    draft = (rca / "RCA_Report.draft.md").read_text(encoding="utf-8")
    assert "Visual Spot Check" in draft and threshold in draft


@pytest.fixture(scope="module")
def synth_ws(tmp_path_factory) -> Path:
    from tao_aoi.demo import synth

    ws = tmp_path_factory.mktemp("container") / "my workspace"   # a space on purpose
    synth.generate(ws)
    return ws


def test_rca_recipe_on_container(container_env, tmp_path):
    from tao_aoi.demo import synth

    ws = tmp_path / "ws"
    synth.generate(ws)
    exp = ws / "experiment"
    proc, rca = run_rca(container_env, ws, exp, exp / "train.yaml", ws / "dataset")
    assert " " not in str(rca)
    assert_full_rca(proc, rca)


def test_rca_recipe_on_container_workspace_with_space(container_env, synth_ws):
    exp = synth_ws / "experiment"
    proc, rca = run_rca(container_env, synth_ws, exp, exp / "train.yaml", synth_ws / "dataset")
    assert " " in str(rca)
    assert_full_rca(proc, rca)
    # the container saw the whole path: its own lines name the results dir with the space
    assert f"Threshold written to {rca}/threshold.txt" in proc.stdout, _where(proc)


def test_rca_recipe_on_container_unreachable_target(container_env, vcn_experiment, tmp_path):
    rows = [{"input_path": f"b{i % 2}", "object_name": f"C{i}", "label": "PASS",
             "siamese_score": round(0.1 + 0.05 * i, 3)} for i in range(8)]
    e = vcn_experiment(rows, images_for=8)
    proc, rca = run_rca(container_env, tmp_path, e["exp"], e["train"], e["media"])
    out = proc.stdout
    assert proc.returncode == 1, _where(proc)
    assert_docker_backend(proc)
    assert "No threshold achieves 100% recall on the NO_PASS class." in out, _where(proc)
    assert "Execution status: FAIL" in out and "gap_analysis exit code: 1" in out
    assert "completion exit code: 1" in out and "UNREACHABLE KPI" in out
    assert (rca / "unreachable_kpi.txt").is_file()
    assert "UNREACHABLE KPI" in (rca / "unreachable_kpi.txt").read_text(encoding="utf-8")
    draft = (rca / "RCA_Report.draft.md").read_text(encoding="utf-8")
    assert "unreachable_kpi.txt says:" in draft and "Visual Spot Check" not in draft
    for name in ("kpi_gaps.parquet", "threshold.txt", "metrics.json", "rca_images"):
        assert not (rca / name).exists(), name
    assert "spot check:" not in out


def test_completion_stops_on_drift(container_env, tmp_path):
    """A container result this bank does not reproduce (here: a tampered threshold.txt, as
    another image version would write) stops the recipe before anything is drafted."""
    from tao_aoi.demo import synth

    ws = tmp_path / "ws"
    synth.generate(ws)
    exp = ws / "experiment"
    shim = tmp_path / "bin"
    shim.mkdir()
    real = subprocess.run(["bash", "-c", "command -v docker"], env=container_env,
                          capture_output=True, text=True).stdout.strip()
    (shim / "docker").write_text(
        "#!/bin/bash\n"
        f'"{real}" "$@"; rc=$?\n'
        'for a in "$@"; do case "$a" in results_dir=*) d="${a#results_dir=}"; '
        '[ -f "$d/threshold.txt" ] && printf 0.5 > "$d/threshold.txt";; esac; done\n'
        "exit $rc\n")
    (shim / "docker").chmod(0o755)
    env = dict(container_env, PATH=f"{shim}{os.pathsep}{container_env['PATH']}")
    proc, rca = run_rca(env, ws, exp, exp / "train.yaml", ws / "dataset")
    assert proc.returncode == 1, _where(proc)
    assert "cross-check failed" in proc.stderr and "completion exit code: 1" in proc.stdout
    assert not (rca / "unreachable_kpi.txt").exists()
    assert not (rca / "metrics.json").exists() and not (rca / "RCA_Report.draft.md").exists()


# --------------------------------------------------------------------- routing + mining
@pytest.fixture(scope="module")
def siglip_in_ws(synth_ws, nvidia) -> Path:
    """A tiny random SigLIP saved (with the oracle's transformers 4.x, as the parity tests do)
    inside the workspace: the container sees only the mounted workspace."""
    from conftest_models import build_tiny_models

    return build_tiny_models(synth_ws / "models", python=nvidia.python)["SigLIP"]


def test_routing_and_mining_recipes_on_container(container_env, synth_ws, siglip_in_ws):
    from tao_aoi.demo.mining import make_pool

    exp = synth_ws / "experiment"
    proc, rca = run_rca(container_env, synth_ws, exp, exp / "train.yaml", synth_ws / "dataset")
    assert proc.returncode == 0, _where(proc)
    pool_csv, _ = make_pool(synth_ws)

    # routing: the SKILL.md Run block, placeholders filled the way the e2e scenarios do
    block = fill_recipe(bash_blocks(ROUTING_SKILL)[0], {"RCA": str(rca), "pool.csv": str(pool_csv)})
    route = subprocess.run(["bash", "-c", block + '\necho "ROUTING_OUT=$OUT"'], cwd=synth_ws,
                           env=_env(container_env), capture_output=True, text=True, timeout=300)
    assert route.returncode == 0, _where(route)
    route_dir = Path(re.search(r"^ROUTING_OUT=(.+)$", route.stdout, re.M).group(1).strip())
    summary = (route_dir / "routing_summary.txt").read_text(encoding="utf-8")
    assert "samples" in summary  # the completion's input_path/object_name reached routing
    targets = route_dir / "mining_gaps.parquet"
    assert pq.read_metadata(targets).num_rows > 0

    # mining: the reference invocation, SigLIP through the container
    env = _env(container_env, TARGET_PARQUET=targets, POOL=pool_csv, OUT=route_dir,
               MODEL="SigLIP", MODEL_PATH=siglip_in_ws, TOPN=3, BATCH_SIZE=64,
               WORKSPACE=synth_ws)
    mine = subprocess.run(["bash", "-c", extract_recipe(ROOT, MINING_RECIPE)], cwd=synth_ws,
                          env=env, capture_output=True, text=True, timeout=600)
    out = mine.stdout
    assert mine.returncode == 0, _where(mine)
    assert "backend docker" in out and "backend: docker" in mine.stderr, _where(mine)
    assert out.count("Execution status: PASS") == 3, _where(mine)
    run = Path(re.search(r"^MINING_RUN=(.+)$", out, re.M).group(1).strip())
    for name in MINING_ARTIFACTS:
        assert (run / name).is_file(), name
    # the container's own outputs: filepath only, the 7.1.0 summary without runner lines
    assert pq.read_schema(run / "mined.parquet").names == ["filepath"]
    text = (run / "mining_summary.txt").read_text(encoding="utf-8")
    assert text.startswith("Summary:") and "Local runner:" not in text
    # host-side steps: encoder identity recorded on both embedding parquets, labels joined
    idents = []
    for name in ("target_embeddings.parquet", "source_embeddings.parquet"):
        meta = pq.read_schema(run / name).metadata or {}
        ident = json.loads(meta[ENCODER_METADATA_KEY.encode()])
        assert ident["model"] == "SigLIP" and ident["model_path"] == str(siglip_in_ws)
        assert f"encoder identity recorded on {name} (host step)" in out
        idents.append(ident)
    assert idents[0]["dim"] == idents[1]["dim"] > 0
    assert "mined labels: joined from source_embeddings.parquet" in out
    assert "mined_for_label: not available" in out
    table = out.split("per-label breakdown (", 1)[1]
    assert "mined_with_label" in table.splitlines()[1]


def _tao_shaped(ws: Path) -> Path:
    """The demo experiment as TensorRT inference leaves it: the CSV one level down in
    inference/latest/, the score named output_score, and the image root only in the train
    spec (dataset.classify.infer_dataset.images_dir)."""
    import yaml

    from tao_aoi.demo import synth

    synth.generate(ws)
    exp = ws / "experiment"
    src = exp / "inference" / "inference.csv"
    latest = exp / "inference" / "latest"
    latest.mkdir()
    pd.read_csv(src).rename(columns={"siamese_score": "output_score"}).to_csv(
        latest / "inference.csv", index=False)
    src.unlink()
    train = yaml.safe_load((exp / "train.yaml").read_text(encoding="utf-8"))
    train["dataset"]["classify"]["infer_dataset"] = {"images_dir": str(ws / "dataset")}
    (exp / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False), encoding="utf-8")
    return exp


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_tensorrt_csv_in_latest_with_no_dataset_runs_unchanged(container_env, tmp_path, backend):
    ws = tmp_path / "ws"
    exp = _tao_shaped(ws)
    env = _env(container_env, EXP=exp, TRAIN_YAML=exp / "train.yaml", WORKSPACE=ws,
               DS_BACKEND_FORCE=backend)
    proc = subprocess.run(["bash", "-c", extract_recipe(ROOT), "recipe"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, _where(proc)
    assert f"backend: {backend}" in proc.stderr, _where(proc)
    assert "output_score (TensorRT inference)" in proc.stderr
    assert "infer_dataset.images_dir" in proc.stderr
    rca = Path(re.search(r"^RCA results dir: (.+)$", proc.stdout, re.M).group(1).strip())
    metrics = json.loads((rca / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["inference_csv"] == str(rca / "inference_input" / "inference.csv")
    assert metrics["kpi_media_path"] == str(ws / "dataset") and metrics["missing_images"] == 0
    assert len(list((rca / "rca_images").glob("[0-9][0-9]_*.png"))) == 10
