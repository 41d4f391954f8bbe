"""`embedding image_embeddings embedding_cache=<dir>` (local runner, issue 14): a rerun over
the same images embeds none and writes the same parquet bit for bit; hit/miss counts in
<output stem>.summary.json; stat keys vs content-hash keys; unreadable images never cached."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest_models import tiny_models  # noqa: F401  (fixture)
from test_embedding_action import cfg_for, make_images, write_input

from tao_aoi.data_services import image_embeddings as action


def run(inp, out, cache, **kw):
    assert action.run(cfg_for(inp, out, embedding_cache=str(cache), **kw)) == 0
    return json.loads(action.summary_json_path(out).read_text())


def same_parquet(a: Path, b: Path) -> bool:
    ta, tb = pq.read_table(a), pq.read_table(b)
    return ta.equals(tb) and ta.schema.metadata == tb.schema.metadata and \
        a.read_bytes() == b.read_bytes()


def test_second_run_embeds_none_and_is_identical(tmp_path):
    paths = make_images(tmp_path / "imgs", 11)
    inp = write_input(tmp_path / "in.parquet", paths + [str(tmp_path / "missing.jpg")])
    cache = tmp_path / "cache"
    plain = tmp_path / "plain.parquet"
    assert action.run(cfg_for(inp, plain)) == 0
    s0 = json.loads(action.summary_json_path(plain).read_text())
    assert (s0["embedded"], s0["reused_from_cache"], s0["unreadable"]) == (11, 0, 1)
    s1 = run(inp, tmp_path / "a.parquet", cache)
    assert (s1["embedded"], s1["reused_from_cache"], s1["unreadable"]) == (11, 0, 1)
    s2 = run(inp, tmp_path / "b.parquet", cache)
    assert (s2["embedded"], s2["reused_from_cache"], s2["unreadable"]) == (0, 11, 1)
    assert same_parquet(plain, tmp_path / "a.parquet")
    assert same_parquet(tmp_path / "a.parquet", tmp_path / "b.parquet")
    shards = list(Path(s1["embedding_cache"]).glob("*.parquet"))
    assert len(shards) == 1 and pq.read_table(shards[0]).num_rows == 11  # missing not cached
    # a changed image (new mtime) is a miss; the others still hit
    os.utime(paths[3], ns=(1, 1))
    s3 = run(inp, tmp_path / "c.parquet", cache)
    assert (s3["embedded"], s3["reused_from_cache"]) == (1, 10)
    assert same_parquet(tmp_path / "a.parquet", tmp_path / "c.parquet")


def test_content_hash_key_survives_a_copy(tmp_path):
    paths = make_images(tmp_path / "imgs", 6)
    cache = tmp_path / "cache"
    run(write_input(tmp_path / "in.parquet", paths), tmp_path / "a.parquet", cache,
        embedding_cache_hash=True)
    shutil.copytree(tmp_path / "imgs", tmp_path / "copy")
    moved = [p.replace(str(tmp_path / "imgs"), str(tmp_path / "copy")) for p in paths]
    inp2 = write_input(tmp_path / "in2.parquet", moved)
    s = run(inp2, tmp_path / "b.parquet", cache, embedding_cache_hash=True)
    assert (s["embedded"], s["reused_from_cache"]) == (0, 6)
    s = run(inp2, tmp_path / "c.parquet", cache)  # stat keys: new paths miss
    assert (s["embedded"], s["reused_from_cache"]) == (6, 0)
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.column("embedding").equals(b.column("embedding"))


def test_cache_is_per_encoder(tmp_path, tiny_models):  # noqa: F811
    paths = make_images(tmp_path / "imgs", 5)
    inp = write_input(tmp_path / "in.parquet", paths)
    cache = tmp_path / "cache"
    kw = dict(model="SigLIP", model_path=str(tiny_models["SigLIP"]), device="cpu")
    plain = tmp_path / "plain.parquet"
    assert action.run(cfg_for(inp, plain, **kw)) == 0
    s1 = run(inp, tmp_path / "a.parquet", cache, **kw)
    s2 = run(inp, tmp_path / "b.parquet", cache, **kw)
    assert (s1["embedded"], s2["embedded"], s2["reused_from_cache"]) == (5, 0, 5)
    assert same_parquet(plain, tmp_path / "b.parquet")
    # another encoder never reads these vectors
    s3 = run(inp, tmp_path / "c.parquet", cache)  # baseline
    assert (s3["embedded"], s3["reused_from_cache"]) == (5, 0)
    assert s3["embedding_cache"] != s1["embedding_cache"]
    kw.update(model="CLIP", model_path=str(tiny_models["CLIP"]))
    s4 = run(inp, tmp_path / "d.parquet", cache, **kw)
    assert (s4["embedded"], s4["reused_from_cache"]) == (5, 0)


def test_cache_path_that_is_a_file_is_refused(tmp_path):
    from tao_aoi.cli import UsageError

    paths = make_images(tmp_path / "imgs", 2)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        action.run(cfg_for(write_input(tmp_path / "in.parquet", paths), tmp_path / "o.parquet",
                           embedding_cache=str(tmp_path / "f")))
