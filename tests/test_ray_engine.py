"""engine=ray (issue 14 item 5): both actions on Ray give what engine=local gives, byte for byte,
on a local Ray with 2 CPUs and on a simulated cluster of 2 nodes x 1 CPU reached through
``ray_address``; Ray leaves no process behind; without Ray, engine=ray is a one-line error.

Ray starts once per mode (module-scoped fixture); every Ray process of a mode carries that
mode's RAY_TMPDIR, which is how the teardown finds leftovers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_script
from test_embedding_action import cfg_for, make_images, write_input
from test_mining_exclusion_shards import write_emb

from tao_aoi import ray_engine
from tao_aoi.data_services import image_embeddings as emb_action
from tao_aoi.data_services import nearest_neighbors as nn_action
from tao_aoi.hooks.report_rules import ENCODER_METADATA_KEY

COUNTS = ("rows_in", "rows_written", "embedded", "reused_from_cache", "unreadable")


def ray_processes(tmpdir: Path) -> list[int]:
    """Live processes (not zombies) started with RAY_TMPDIR=tmpdir."""
    marker = f"RAY_TMPDIR={tmpdir}".encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if ") Z " in (proc / "stat").read_text() or marker not in (proc / "environ").read_bytes():
                continue
        except OSError:
            continue
        found.append(int(proc.name))
    return found


def assert_no_ray_left(tmpdir: Path, wait_s: float = 30.0) -> None:
    deadline = time.monotonic() + wait_s
    while (left := ray_processes(tmpdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # fail, but leave the machine clean
        os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left behind: {left}"


def ray_env_vars(tmpdir: Path) -> dict:
    return {"RAY_TMPDIR": str(tmpdir), "RAY_USAGE_STATS_ENABLED": "0"}


# ----------------------------------------------------------------------------- k-NN data

def knn_case(root: Path, integer: bool, seed: int = 0) -> Path:
    """A pool of 3 shards with exact copies across shards (ties the merge must order by
    source index), targets, a ledger; returns the folder."""
    rng = np.random.default_rng(seed)
    n_s, n_t, d = 420, 9, 12
    if integer:  # exact arithmetic: many equal distances
        s = rng.integers(-2, 3, size=(n_s, d)).astype(np.float32)
        t = rng.integers(-2, 3, size=(n_t, d)).astype(np.float32)
    else:
        s = rng.normal(size=(n_s, d)).astype(np.float32)
        t = rng.normal(size=(n_t, d)).astype(np.float32)
    for j in range(0, n_s, 7):
        s[(j * 13 + 101) % n_s] = s[j]
    s[200:230] = t[0] + 0.01  # a cluster of copies nearest to target 0, across a shard cut
    fps = [f"/pool/img_{i:05d}.jpg" for i in range(n_s)]
    labels = [("PASS", "MISSING", "SHORT")[i % 3] for i in range(n_s)]
    for a, b in ((0, 190), (190, 215), (215, n_s)):
        write_emb(root / "shards" / f"part-{a:05d}.parquet", s[a:b], fps[a:b], labels[a:b])
    write_emb(root / "tgt.parquet", t, [f"/kpi/t{i}.jpg" for i in range(n_t)],
              [("PASS", "MISSING", "SHORT")[i % 3] for i in range(n_t)])
    pd.DataFrame({"filepath": fps[5:400:11]}).to_parquet(root / "ledger.parquet", index=False)
    return root


KNN_CONFIGS = [
    dict(knn_metric="cosine", topn=7, exclude="ledger.parquet", filter_by_label="true"),
    dict(knn_metric="euclidean", topn=12, integer=True),
    dict(knn_metric="manhattan", topn=5, integer=True, distance_threshold=9.0,
         exclude="ledger.parquet"),
]


def run_knn(root: Path, out: str, conf: dict, **extra) -> tuple[bytes, list[str]]:
    cfg = {"source_parquet": str(root / "shards"), "target_parquet": str(root / "tgt.parquet"),
           "output_parquet": str(root / out / "mined.parquet"), "topn": conf["topn"],
           "knn_metric": conf["knn_metric"], "filter_by_label": conf.get("filter_by_label", "false"),
           "distance_threshold": conf.get("distance_threshold", -1.0),
           "exclude_parquet": str(root / conf["exclude"]) if conf.get("exclude") else ""}
    cfg.update(extra)
    assert nn_action.run(cfg) == 0
    text = nn_action.summary_path(cfg["output_parquet"]).read_text().splitlines()
    return (Path(cfg["output_parquet"]).read_bytes(),
            [x for x in text if not any(m in x for m in ("Seconds:", "Engine:", "Results saved to:"))])


# ----------------------------------------------------------------------------- without a cluster

def test_an_actor_encodes_the_local_engines_batches_whatever_the_order_of_its_chunks(tmp_path):
    paths = make_images(tmp_path / "imgs", 10)
    paths.insert(5, str(tmp_path / "missing.jpg"))  # 11 paths: chunks of 4, 4 and 3
    actor = ray_engine.EncodeChunks("baseline", None, None, "cpu", num_workers=2, batch_size=4)
    seen = []
    encode = actor.encoder.encode_arrays
    actor.encoder.encode_arrays = lambda arrays: seen.append(len(arrays)) or encode(arrays)
    chunks = [list(range(b0, min(11, b0 + 4))) for b0 in (8, 0, 4)]  # the short one first
    out = actor(pa.table({"rows": pa.array(chunks, pa.list_(pa.int64())),
                          "paths": pa.array([[paths[i] for i in c] for c in chunks], pa.list_(pa.string()))}))
    got = dict(zip(out.column("row").to_pylist(), out.column("embedding").to_pylist()))
    assert sorted(seen) == [3, 3, 4]  # each chunk one batch: 4 + (4 less the missing) + 3
    want, bad = emb_action._embed_local(actor.encoder, paths, 4, 2, 0)
    assert [p for p, _ in bad] == [5] and got[5] is None
    assert out.column("reason").to_pylist()[out.column("row").to_pylist().index(5)] == bad[0][1]
    for pos, vec in want.items():
        assert np.array_equal(np.asarray(got[pos], np.float32), vec), pos


def test_engine_ray_without_ray_installed_is_one_line_exit_2(tmp_path):
    # a `ray` that cannot be imported, first on the path: the package and engine=local still work
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "noray"))
    paths = make_images(tmp_path / "imgs", 3)
    inp = write_input(tmp_path / "in.parquet", paths)
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: baseline\nmodel_path: unused\n")
    out = tmp_path / "emb.parquet"
    args = ("data_services.py", "embedding", "image_embeddings", "-e", spec,
            f"input_parquet={inp}", f"output_parquet={out}")
    r = run_script(*args, "engine=ray", env=env)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "pip install 'tao-aoi[ray]'" in errors[0], r.stderr
    assert not out.exists()
    assert run_script(*args, env=env).returncode == 0  # engine=local needs no Ray
    knn_case(tmp_path / "k", integer=False)
    (tmp_path / "k" / "spec.yaml").write_text("topn: 3\n")
    r = run_script("data_services.py", "tmm", "nearest_neighbors", "-e", tmp_path / "k" / "spec.yaml",
                   f"source_parquet={tmp_path / 'k' / 'shards'}",
                   f"target_parquet={tmp_path / 'k' / 'tgt.parquet'}",
                   f"output_parquet={tmp_path / 'k' / 'm.parquet'}", "engine=ray", env=env)
    assert r.returncode == 2 and "pip install 'tao-aoi[ray]'" in r.stderr


def test_unreachable_ray_address_is_one_line_exit_2(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = knn_case(tmp_path, integer=False)
    (root / "spec.yaml").write_text("topn: 3\n")
    out = root / "m" / "mined.parquet"
    r = run_script("data_services.py", "tmm", "nearest_neighbors", "-e", root / "spec.yaml",
                   f"source_parquet={root / 'shards'}", f"target_parquet={root / 'tgt.parquet'}",
                   f"output_parquet={out}", "engine=ray", f"ray_address=127.0.0.1:{port}",
                   env=dict(os.environ, **ray_env_vars(tmp_path)))
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "nothing answers there" in errors[0]
    assert not out.exists()


def test_engine_keys_stay_out_of_written_specs(tmp_path):
    import yaml

    for category, action in (("embedding", "image_embeddings"), ("tmm", "nearest_neighbors")):
        out = tmp_path / f"{action}.yaml"
        r = run_script("write_spec.py", category, action, "--out", out, "--workspace", tmp_path,
                       *(["model=CLIP", "model_path=x"] if category == "embedding" else []))
        assert r.returncode == 0, r.stderr
        assert not {"engine", "ray_address"} & set(yaml.safe_load(out.read_text()))


def test_cli_starts_its_own_ray_and_leaves_nothing(tmp_path_factory):
    """The command a user types: data_services.py ... engine=ray starts a local Ray, uses it,
    stops it; no Ray process of it survives the command."""
    root = knn_case(tmp_path_factory.mktemp("cli"), integer=False, seed=3)
    ray_tmp = tmp_path_factory.mktemp("rc")
    spec = root / "spec.yaml"
    spec.write_text("topn: 6\nknn_metric: cosine\n")
    common = ("data_services.py", "tmm", "nearest_neighbors", "-e", spec,
              f"source_parquet={root / 'shards'}", f"target_parquet={root / 'tgt.parquet'}")
    env = dict(os.environ, **ray_env_vars(ray_tmp))
    r = run_script(*common, f"output_parquet={root / 'ray' / 'm.parquet'}", "engine=ray", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Engine: ray (" in r.stdout
    assert_no_ray_left(ray_tmp)
    r = run_script(*common, f"output_parquet={root / 'local' / 'm.parquet'}")
    assert r.returncode == 0, r.stderr
    assert (root / "ray" / "m.parquet").read_bytes() == (root / "local" / "m.parquet").read_bytes()


# ----------------------------------------------------------------------------- on Ray

BOTH = pytest.mark.parametrize("ray_address", ["local-2cpu", "cluster-2x1"], indirect=True)
LOCAL = pytest.mark.parametrize("ray_address", ["local-2cpu"], indirect=True)


@pytest.fixture(scope="module")
def ray_address(request, tmp_path_factory):
    """"" with a local Ray of 2 CPUs already running in this process (the action uses it), or
    the address of a 2-node cluster (the action connects and disconnects on every run)."""
    import ray

    tmp = tmp_path_factory.mktemp("r")  # short: Ray's socket paths must fit in 107 characters
    saved = {k: os.environ.get(k) for k in ray_env_vars(tmp)}
    os.environ.update(ray_env_vars(tmp))
    cluster = None
    try:
        if request.param == "local-2cpu":
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp))
            yield ""
        else:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True,
                              head_node_args={"num_cpus": 1, "include_dashboard": False})
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            yield cluster.address
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert_no_ray_left(tmp)


def same_run(a: Path, b: Path) -> None:
    """Same output parquet (bytes), same unreadable list, same counts."""
    assert a.read_bytes() == b.read_bytes()
    sa, sb = (json.loads(emb_action.summary_json_path(p).read_text()) for p in (a, b))
    assert {k: sa[k] for k in COUNTS} == {k: sb[k] for k in COUNTS}
    ua, ub = (emb_action.unreadable_sidecar(p) for p in (a, b))
    assert ua.exists() == ub.exists() and (not ua.exists() or ua.read_text() == ub.read_text())


@LOCAL  # the cache does not care how many nodes there are; the other tests run on both
def test_embedding_baseline_and_cache_around_the_ray_stage(ray_address, tmp_path, capsys, monkeypatch):
    paths = make_images(tmp_path / "imgs", 13)
    # unreadable rows (missing, empty), a path listed twice (the container's merge multiplies
    # its rows) and a relative one (from the working directory, which Ray workers do not share)
    monkeypatch.chdir(tmp_path)
    listed = paths[:4] + [str(tmp_path / "missing.jpg"), ""] + paths[4:] + [paths[2], "imgs/img_005.jpg"]
    inp = write_input(tmp_path / "in.parquet", listed)
    ray_kw = dict(engine="ray", ray_address=ray_address)
    assert emb_action.run(cfg_for(inp, tmp_path / "local.parquet", batch_size=4)) == 0
    cache = str(tmp_path / "cache")
    # cold cache: Ray embeds everything, the driver fills the cache afterwards
    assert emb_action.run(cfg_for(inp, tmp_path / "ray.parquet", batch_size=4,
                                  embedding_cache=cache, **ray_kw)) == 0
    assert "engine: ray (map_batches over" in capsys.readouterr().out
    same_run(tmp_path / "local.parquet", tmp_path / "ray.parquet")
    stats = json.loads(emb_action.summary_json_path(tmp_path / "ray.parquet").read_text())
    assert (stats["embedded"], stats["reused_from_cache"], stats["unreadable"]) == (15, 0, 2)
    assert stats["engine"] == "ray"
    # the same keys from either engine: local reads what Ray put, Ray reads before its stage
    for name, kw in (("local_warm", {}), ("ray_warm", ray_kw)):
        out = tmp_path / f"{name}.parquet"
        assert emb_action.run(cfg_for(inp, out, batch_size=4, embedding_cache=cache, **kw)) == 0
        s = json.loads(emb_action.summary_json_path(out).read_text())
        assert (s["embedded"], s["reused_from_cache"], s["unreadable"]) == (0, 15, 2)
        assert out.read_bytes() == (tmp_path / "local.parquet").read_bytes()
    assert not list(tmp_path.glob(".*ray-shards*"))  # the shards are assembled, then removed


@BOTH
def test_embedding_tiny_siglip_identical_to_local(ray_address, tmp_path, tiny_models):
    paths = make_images(tmp_path / "imgs", 11)
    inp = write_input(tmp_path / "in.parquet", paths)
    kw = dict(model="SigLIP", model_path=str(tiny_models["SigLIP"]), device="auto", batch_size=4,
              num_workers=2)
    assert emb_action.run(cfg_for(inp, tmp_path / "local.parquet", **kw)) == 0
    assert emb_action.run(cfg_for(inp, tmp_path / "ray.parquet", engine="ray",
                                  ray_address=ray_address, **kw)) == 0
    same_run(tmp_path / "local.parquet", tmp_path / "ray.parquet")
    ident = json.loads(pq.read_schema(tmp_path / "ray.parquet").metadata[ENCODER_METADATA_KEY.encode()])
    assert ident["model"] == "SigLIP" and ident["device"] == "cpu"


@BOTH
@pytest.mark.parametrize("conf", KNN_CONFIGS, ids=lambda c: c["knn_metric"])
def test_nearest_neighbors_identical_to_local(ray_address, tmp_path, monkeypatch, conf):
    root = knn_case(tmp_path, conf.get("integer", False))
    monkeypatch.setattr(ray_engine, "MIN_ROWS_PER_TASK", 40)  # several tasks per shard
    local = run_knn(root, "local", conf)
    ray_run = run_knn(root, "ray", conf, engine="ray", ray_address=ray_address)
    assert ray_run == local
    text = (root / "ray" / "mining_summary.txt").read_text()
    assert "Engine: ray (" in text and "tasks over 3 shard(s)" in text
    tasks = int(text.split("Engine: ray (")[1].split(" tasks")[0])
    assert tasks > 3  # shards were cut: several partial searches per shard merged


@BOTH
def test_nearest_neighbors_ray_reports_a_bad_shard_as_usage_error(ray_address, tmp_path):
    from tao_aoi.cli import UsageError

    root = knn_case(tmp_path, integer=False)
    shard = root / "shards" / "part-00215.parquet"
    t = pq.read_table(shard)
    vals = t.column("embedding").to_pylist()
    vals[3][1] = float("nan")
    pq.write_table(t.set_column(1, "embedding", pa.array(vals, pa.list_(pa.float32())))
                   .replace_schema_metadata(t.schema.metadata), shard)
    with pytest.raises(UsageError, match="part-00215.parquet.*NaN or infinite"):
        run_knn(root, "ray", KNN_CONFIGS[0], engine="ray", ray_address=ray_address)
    assert not (root / "ray" / "mined.parquet").exists()


def test_repo_layout_for_ray():
    text = (REPO / "pyproject.toml").read_text()
    assert 'ray = ["ray[data,client]>=2.9"]' in text
    assert "[test,embeddings,ray]" in (REPO / "Makefile").read_text()
    assert subprocess.run([sys.executable, "-c", "import tao_aoi.ray_engine, sys; "
                           "sys.exit('ray' in sys.modules)"], cwd=str(REPO)).returncode == 0
