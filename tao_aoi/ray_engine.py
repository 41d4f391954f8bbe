"""``engine=ray`` of the local runner: the same two actions spread over a Ray cluster.

Ray is an optional extra (``pip install 'tao-aoi[ray]'``), imported only here and only when
``engine=ray`` is asked for; without it that request is a one-line error (exit 2).

* ``embedding image_embeddings``: the images still to embed (after the embedding cache, which
  stays on the driver) are cut into the very ``batch_size`` chunks the local engine encodes;
  Ray Data runs them through ``map_batches`` over an actor pool (each actor loads the encoder
  once; one GPU per actor when the cluster has GPUs, else one CPU per actor) and writes the
  vectors as parquet shards, which the driver reads back in input order. Same chunks, same
  encoder code, so the same floats as ``engine=local``.
* ``tmm nearest_neighbors``: one Ray task per source shard (large shards are cut in row
  ranges, :func:`pieces`) computes its exact partial candidates
  (:func:`tao_aoi.knn.search_part`); the driver merges them and ranks them in float64
  (:func:`tao_aoi.knn.merge`): the same neighbours, in the same order, as ``engine=local``.

What scales with nodes: embedding throughput with the number of actors (GPUs); the k-NN with
the number of shards searched at once. The merge, the output files and the embedding cache
stay on the driver. Every node must see the images, the parquets and the output folder under
the same paths (the shards are written beside the output).

``ray_address``: empty = ``$RAY_ADDRESS`` when set (Ray's own convention), else a local Ray
for this run (stopped afterwards); ``auto`` = the cluster started with ``ray start --head`` on
this machine; ``ray://host:10001`` = a remote cluster (e.g. the KubeRay head service). A
process already connected to Ray (a notebook, a test) keeps its connection; the address is
then not used.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tao_aoi import knn
from tao_aoi.cli import UsageError, one_line

INSTALL_HINT = "pip install 'tao-aoi[ray]'"
PACKAGE_DIR = Path(__file__).resolve().parent
# A k-NN task gets at least this many source rows: fewer would cost more in task start-up
# and in candidates to merge than the search itself (tests lower it to get many tasks).
MIN_ROWS_PER_TASK = 65536
TASKS_PER_CPU = 2
BLOCKS_PER_ACTOR = 4
# chunks an actor encodes at a call: it decodes the next while one is encoded; its output
# (CHUNKS_PER_CALL x batch_size vectors) is what Ray Data moves at once
CHUNKS_PER_CALL = 4


def require():
    """The ``ray`` module, or UsageError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"engine=ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def connect(address: str):
    """Ray for one run: the caller's connection if there is one, else a local Ray (empty
    address) or the cluster at ``address``; what this opens, it closes."""
    ray = require()
    if ray.is_initialized():
        yield ray
        return
    common = dict(log_to_driver=False, logging_level=logging.WARNING)
    address = address.strip() or os.environ.get("RAY_ADDRESS", "").strip()
    _check_reachable(address)
    try:
        if address:
            # the cluster's workers import tao_aoi from this copy, whatever they have installed
            ray.init(address=address, runtime_env={"py_modules": [str(PACKAGE_DIR)]}, **common)
        else:
            ray.init(include_dashboard=False, **common)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"ray_address={address!r}: cannot start or reach Ray ({one_line(exc)})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """A host:port cluster address that nothing answers on: Ray itself would retry for minutes."""
    import socket

    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError) as exc:
        raise UsageError(f"ray_address={address!r}: nothing answers there ({one_line(exc)}); "
                         f"use auto, ray://<head>:10001 or the head's <ip>:6379") from None


def _cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised (RayTaskError wraps it)."""
    return getattr(exc, "cause", None) or exc


# ----------------------------------------------------------------------------- k-NN

@dataclass(frozen=True)
class Piece:
    path: str
    rows: tuple[int, int]  # rows of that file
    offset: int  # pool row of its first row


def pieces(pool, n_cpus: int) -> list[Piece]:
    """One piece per shard, shards larger than the per-task size cut in row ranges (about
    TASKS_PER_CPU tasks per CPU, so a slow node does not hold the merge up alone)."""
    per_task = max(MIN_ROWS_PER_TASK, math.ceil(pool.n_rows / max(1, TASKS_PER_CPU * n_cpus)))
    out, offset = [], 0
    for path, n in zip(pool.paths, pool.shard_rows):
        for lo in range(0, n, per_task):
            out.append(Piece(str(path), (lo, min(n, lo + per_task)), offset + lo))
        offset += n
    return out


def _search_piece(tgt, piece: Piece, column: str, normalize: bool, k: int, metric: str,
                  exclude: np.ndarray | None) -> knn.Partial:
    source = knn.ParquetShards([Path(piece.path)], column, normalize=normalize, rows=piece.rows)
    source.streams = knn.cpu_count()  # a task per CPU may read at once: they share the direct-read memory
    # one scoring thread: Ray runs one task per CPU it reserved (num_cpus=1)
    return knn.search_part(tgt, source, k, metric, normalized=normalize, exclude=exclude,
                           offset=piece.offset, workers=1)


def nearest(targets: np.ndarray, pool, k: int, metric: str, *, exclude: np.ndarray | None,
            address: str, progress=None) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`tao_aoi.knn.topk_stream` of ``pool`` (a ParquetShards), as Ray tasks:
    (indices, distances, a line saying how it ran)."""
    normalize = metric == "cosine"
    tgt = knn.prepare_targets(targets, metric, normalized=normalize)
    kk = min(k, knn.kept_count(pool.n_rows, exclude))
    with connect(address) as ray:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        parts_of = pieces(pool, cpus)
        task = ray.remote(_search_piece)
        tgt_ref = ray.put(tgt)
        pending = {task.remote(tgt_ref, p, pool.column, normalize, kk, metric,
                               None if exclude is None else exclude[p.offset:p.offset + p.rows[1] - p.rows[0]]): p
                   for p in parts_of}
        parts = _collect(ray, pending, progress)
    cands = knn.merge(parts, kk)
    ids = np.concatenate([p.vector_ids for p in parts])
    vecs = np.concatenate([p.vectors for p in parts])
    idx, dist = knn.exact_topk(cands, targets, lambda wanted: knn.rows_by_id(ids, vecs, wanted), metric)
    note = (f"ray ({len(parts_of)} tasks over {len(pool.paths)} shard(s) on {cpus} CPU(s); "
            f"exact merge on the driver)")
    return idx, dist, note


def _collect(ray, pending: dict, progress) -> list[knn.Partial]:
    """Task results in pool order, reporting rows as tasks finish; a task's SourceError
    (NaN, a bad shard) comes out as itself."""
    order = list(pending)
    done: dict = {}
    waiting = list(pending)
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            done[ready[0]] = ray.get(ready[0])
            if progress is not None:
                piece = pending[ready[0]]
                progress(piece.rows[1] - piece.rows[0])
    except Exception as exc:
        for ref in waiting:
            ray.cancel(ref)
        cause = _cause(exc)
        if isinstance(cause, knn.SourceError):
            raise knn.SourceError(str(cause)) from None
        raise
    return [done[ref] for ref in order]


# ----------------------------------------------------------------------------- embedding

@dataclass(frozen=True)
class ActorShape:
    device: str  # what each actor encodes on
    actors: int
    gpus_per_actor: int


def actor_shape(ray, model: str, device: str) -> ActorShape:
    """GPU actors (one GPU each) when the cluster has GPUs and the model uses torch, else
    one CPU actor per CPU."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    if str(model).lower() == "baseline" or device == "cpu":
        return ActorShape("cpu", cpus, 0)
    if device == "cuda" and not gpus:
        raise UsageError("device=cuda but the Ray cluster has no GPU; use device=auto or device=cpu")
    return ActorShape("cuda", gpus, 1) if gpus else ActorShape("cpu", cpus, 0)


class EncodeChunks:
    """A Ray Data actor: loads the encoder once, then encodes a few chunks of image paths at a
    call (one chunk = one local-engine batch, so the batches are the local engine's) into
    (row, embedding, reason) rows, decoding the next chunk while one is encoded."""

    def __init__(self, model: str, model_path, model_config_path, device: str, num_workers: int,
                 batch_size: int) -> None:
        from tao_aoi.encoders import load_encoder

        self.encoder = load_encoder(model, model_path, model_config_path, device)
        self.num_workers = num_workers
        self.batch_size = batch_size

    def __call__(self, batch):
        import pyarrow as pa

        from tao_aoi.data_services.image_embeddings import decoded_batches, encode_decoded

        # every chunk but the pool's last holds batch_size paths: with that one put last
        # (Ray Data may bundle rows of blocks in any order), the batches fall on the chunks
        chunks = sorted(zip(batch.column("rows").to_pylist(), batch.column("paths").to_pylist()),
                        key=lambda chunk: len(chunk[0]) < self.batch_size)
        positions = [r for rows, _ in chunks for r in rows]
        paths = [p for _, chunk in chunks for p in chunk]
        good, vecs, bad, reasons = [], [], [], []
        for b0, results in decoded_batches(paths, self.encoder, self.batch_size, self.num_workers):
            ok, v, failed = encode_decoded(self.encoder, results)
            good += [positions[b0 + i] for i in ok]
            if ok:
                vecs.append(v)
            bad += [positions[b0 + i] for i, _ in failed]
            reasons += [why for _, why in failed]
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32)
        emb = knn.list_array(vectors, pa.float32(), present=[True] * len(good) + [False] * len(bad))
        return pa.table({"row": pa.array(good + bad, pa.int64()), "embedding": emb,
                         "reason": pa.array([None] * len(good) + reasons, pa.string())})


def _plan(paths: list, batch_size: int, blocks: int) -> list:
    """The chunks of ``paths`` (batch_size each, in order) as Arrow tables, one per block."""
    import pyarrow as pa

    chunks = [list(range(b0, min(len(paths), b0 + batch_size))) for b0 in range(0, len(paths), batch_size)]
    per_block = max(1, math.ceil(len(chunks) / max(1, blocks)))
    # workers do not share this process's working directory: relative paths are made absolute
    # against it, as the local engine reads them
    from tao_aoi.data_services.image_embeddings import is_blank_path

    text = [None if is_blank_path(p) else os.path.join(os.getcwd(), str(p)) for p in paths]
    return [pa.table({"rows": pa.array(group, pa.list_(pa.int64())),
                      "paths": pa.array([[text[i] for i in c] for c in group], pa.list_(pa.string()))})
            for group in (chunks[g:g + per_block] for g in range(0, len(chunks), per_block))]


def embed(ray, shape: ActorShape, paths: list, cfg, work: Path):
    """({position: vector}, [(position, why)], a line saying how it ran) for ``paths``.
    ``work``: a folder for the shards (removed afterwards), beside the output."""
    import pyarrow.parquet as pq
    import ray.data

    if not paths:
        return {}, [], "ray (nothing to embed)"
    tables = _plan(paths, cfg.batch_size, shape.actors * BLOCKS_PER_ACTOR)
    actors = min(shape.actors, sum(t.num_rows for t in tables))
    shard_dir = work / uuid.uuid4().hex[:12]
    with warnings.catch_warnings():  # Ray Data warns about its own deprecated defaults here
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ds = ray.data.from_arrow(tables).map_batches(
            EncodeChunks, batch_size=CHUNKS_PER_CALL, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs=dict(model=cfg.model, model_path=cfg.model_path,
                                       model_config_path=cfg.model_config_path, device=shape.device,
                                       num_workers=cfg.num_workers, batch_size=cfg.batch_size),
            num_cpus=1, num_gpus=shape.gpus_per_actor)
        # the writers take no CPU: the actors hold them all, and a writer only moves bytes
        ds.write_parquet(str(shard_dir), ray_remote_args={"num_cpus": 0})
        table = pq.read_table(str(shard_dir))
    except Exception as exc:
        cause = _cause(exc)
        if isinstance(cause, UsageError):
            raise UsageError(str(cause)) from None
        raise
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.rmdir()
    got, bad = _read_back(table)
    kind = f"{shape.actors} GPU actor(s)" if shape.gpus_per_actor else f"{actors} CPU actor(s)"
    return got, bad, f"ray (map_batches over {kind}, {len(tables)} block(s) of chunks)"


def _read_back(table) -> tuple[dict, list]:
    import pyarrow as pa

    table = table.sort_by("row")
    rows = table.column("row").to_numpy()
    ok = table.column("reason").is_null().to_numpy(zero_copy_only=False)
    emb = table.column("embedding").combine_chunks().filter(pa.array(ok))
    vecs = knn.matrix_of(emb, "ray shards", "embedding") if len(emb) else np.zeros((0, 0), np.float32)
    got = dict(zip(rows[ok].tolist(), vecs))
    reasons = table.column("reason").to_pylist()
    bad = [(int(r), reasons[j]) for j, r in enumerate(rows) if not ok[j]]
    return got, bad
