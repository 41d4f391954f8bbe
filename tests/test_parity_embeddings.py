"""Parity of `embedding image_embeddings` with NVIDIA's own module (nvidia-tao-ds, the release
of the pinned image) on tiny random CLIP and SigLIP models: both run under the oracle
interpreter (the same transformers 4.x / torch / pandas), on generated inputs, and must
write the same columns, rows, order, column types and embedding floats (exactly).

Known, stated differences, all in schema metadata only: NVIDIA's file carries pandas'
metadata (``pandas`` key), ours carries the encoder identity (``tao_aoi.encoder``)."""
from __future__ import annotations

import json
import os
import random
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from conftest import REPO, oracle_python
from conftest_models import build_tiny_models

N_CASES = 24
MODES = ["RGB", "RGBA", "L", "P", "LA", "CMYK", "1"]
# Our runner in one long-lived process under the oracle interpreter, through the same CLI
# path as scripts/data_services.py (spec <- overrides, schema checks): start-up once.
DRIVER = """
import contextlib, io, json, os, sys
from tao_aoi.data_services.cli import main
for line in sys.stdin:
    job = json.loads(line)
    os.chdir(job["cwd"])
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(job["argv"])
    except BaseException as exc:
        rc, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"rc": rc, "stderr": err.getvalue()[-2000:]}), flush=True)
"""


@pytest.fixture(scope="session")
def oracle_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("oracle_models"), oracle_python())


@pytest.fixture(scope="session")
def our_runner_on_oracle_libs():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([oracle_python(), "-c", DRIVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=str(REPO), env=env, bufsize=1)

    def run(spec, overrides, cwd):
        argv = ["embedding", "image_embeddings", "-e", str(spec), *overrides]
        proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd)}) + "\n")
        line = proc.stdout.readline()
        if not line:
            pytest.fail("our runner's driver process died")
        return json.loads(line)

    yield run
    proc.stdin.close()
    proc.wait(timeout=30)


def make_case(root, seed: int) -> dict:
    """A generated experiment: images of assorted modes and sizes, extra columns of assorted
    types (nulls included), duplicate and relative filepaths, 0..9 rows, batch size 1..7."""
    rng = random.Random(seed)
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    n_images = 0 if seed == 0 else rng.randint(1, 6)
    names = []
    for i in range(n_images):
        h, w = rng.randint(5, 70), rng.randint(5, 70)
        arr = np.random.default_rng(seed * 100 + i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        mode = rng.choice(MODES)
        # JPEG holds RGB, L and CMYK (the only way to store CMYK here); PNG the rest
        ext = ".jpg" if mode == "CMYK" or (mode in ("RGB", "L") and rng.random() < 0.5) else ".png"
        Image.fromarray(arr).convert(mode).save(imgs / f"im{i}{ext}")
        names.append(f"im{i}{ext}")
    relative = rng.random() < 0.3  # relative to the working directory, as with `-w $W`
    paths = [f"imgs/{n}" if relative else str(imgs / n) for n in names]
    rows = list(paths)
    if rows and rng.random() < 0.4:
        rows += rng.choices(paths, k=rng.randint(1, 3))  # duplicates: the merge multiplies
        rng.shuffle(rows)
    n = len(rows)
    columns = {"filepath": pa.array(rows, pa.string())}
    extras = {
        "label": lambda: pa.array([rng.choice(["PASS", "short", " Missing ", None]) for _ in range(n)]),
        "score": lambda: pa.array([rng.random() for _ in range(n)], pa.float64()),
        "count": lambda: pa.array([rng.choice([1, 2, None]) for _ in range(n)], pa.int64()),
        "small": lambda: pa.array(list(range(n)), pa.int16()),
        "flag": lambda: pa.array([rng.random() < 0.5 for _ in range(n)], pa.bool_()),
        "embedding": lambda: pa.array([[0.5, 1.5]] * n, pa.list_(pa.float32())),  # replaced
    }
    for name in rng.sample(sorted(extras), rng.randint(0, len(extras))):
        columns[name] = extras[name]()
    order = list(columns)
    rng.shuffle(order)  # filepath need not come first
    pq.write_table(pa.table({k: columns[k] for k in order}), root / "in.parquet")
    model = rng.choice(["CLIP", "SigLIP"])
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump({"input_parquet": "???", "output_parquet": "???", "model": model,
                                    "model_path": "???", "batch_size": rng.randint(1, 7)}))
    return {"root": root, "spec": spec, "model": model}


def overrides(case, model_dir, out_name):
    return [f"input_parquet={case['root'] / 'in.parquet'}",
            f"output_parquet={case['root'] / out_name}", f"model_path={model_dir}"]


def assert_same_output(ours_path, theirs_path):
    ours, theirs = pq.read_table(ours_path), pq.read_table(theirs_path)
    assert ours.column_names == theirs.column_names
    assert ours.num_rows == theirs.num_rows
    for name in theirs.column_names:
        assert ours.schema.field(name).type == theirs.schema.field(name).type, name
        if name == "embedding" and theirs.num_rows:
            a = np.array(ours.column(name).to_pylist(), np.float64)
            b = np.array(theirs.column(name).to_pylist(), np.float64)
            np.testing.assert_array_equal(a, b)  # bit for bit: same batches, same libraries
        else:
            assert ours.column(name).to_pylist() == theirs.column(name).to_pylist(), name
    assert b"tao_aoi.encoder" in (ours.schema.metadata or {})  # ours: additive identity


@pytest.mark.parametrize("seed", range(N_CASES))
def test_runner_writes_what_nvidias_module_writes(seed, tmp_path, oracle_models, nvidia_worker,
                                                  our_runner_on_oracle_libs):
    case = make_case(tmp_path, seed)
    model_dir = oracle_models[case["model"]]
    theirs = nvidia_worker.run("embedding", "image_embeddings", case["spec"],
                               *overrides(case, model_dir, "theirs.parquet"), cwd=tmp_path)
    assert theirs["ok"], theirs["error"]
    ours = our_runner_on_oracle_libs(case["spec"], overrides(case, model_dir, "ours.parquet"),
                                     tmp_path)
    assert ours["rc"] == 0, ours["stderr"]
    assert_same_output(tmp_path / "ours.parquet", tmp_path / "theirs.parquet")


@pytest.mark.parametrize("model", ["CLIP", "SigLIP"])
def test_transformers_5_vectors_match_nvidias(model, tmp_path, oracle_models, nvidia_worker):
    # Our runner under this interpreter (transformers 5.x, where NVIDIA's module cannot run)
    # on models saved by transformers 4.x: the same vectors, not unit length.
    import transformers

    from tao_aoi.data_services import image_embeddings as action

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("this interpreter has transformers 4.x: the parity cases already cover it")
    case = make_case(tmp_path, 1000 + (model == "SigLIP"))
    spec = yaml.safe_load(case["spec"].read_text())
    case["spec"].write_text(yaml.safe_dump(dict(spec, model=model)))
    theirs = nvidia_worker.run("embedding", "image_embeddings", case["spec"],
                               *overrides(case, oracle_models[model], "theirs.parquet"), cwd=tmp_path)
    assert theirs["ok"], theirs["error"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        action.run({"input_parquet": str(tmp_path / "in.parquet"), "output_parquet": str(tmp_path / "ours.parquet"),
                    "model": model, "model_path": str(oracle_models[model]), "batch_size": spec["batch_size"],
                    "device": "cpu", "num_workers": 2})
    finally:
        os.chdir(cwd)
    ours, ref = pq.read_table(tmp_path / "ours.parquet"), pq.read_table(tmp_path / "theirs.parquet")
    assert ours.column_names == ref.column_names and ours.num_rows == ref.num_rows > 0
    a = np.array(ours.column("embedding").to_pylist())
    b = np.array(ref.column("embedding").to_pylist())
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(na, nb, atol=1e-4)
    assert np.abs(nb - 1).min() > 1e-2  # raw features: the container does not normalise
    np.testing.assert_allclose((a * b).sum(axis=1) / (na * nb), 1.0, atol=1e-6)
