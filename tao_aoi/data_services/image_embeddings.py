"""Local runner action ``embedding image_embeddings``.

Writes what the data-services container writes (SPEC 2.2), checked against NVIDIA's module
by tests/test_parity_embeddings.py: ``filepath``, ``embedding`` (list<double>: the model's
float32 ``get_image_features`` as is, NOT L2-normalised), then every other input column
left-merged on ``filepath`` exactly as pandas does it in the container -- rows in input
order; a filepath listed k times gives k*k rows; the column types pandas gives (e.g. an
integer column with nulls becomes double); an empty input gives an empty output whose
``filepath``/``embedding`` columns have Arrow type null. Relative paths are taken from the
current working directory, as inside the container with ``-w $W``. Images are batched in
``batch_size`` chunks of the input order, as in the container, so the vectors are the same
bit for bit on the same library versions.

Additive (the container has neither): the encoder identity (JSON) goes into the Arrow
schema metadata under ``tao_aoi.encoder`` so ``tmm nearest_neighbors`` can refuse parquets
embedded with different encoders; images that cannot be read (missing file, not an image,
truncated) are listed by path in the summary and in ``<output stem>.unreadable_images.txt``
beside the output and their rows dropped, where the container stops at the first one. If
no image at all can be read the run fails (exit 1). Not written: the ``pandas`` schema
metadata that ``DataFrame.to_parquet`` adds (the data read back is the same). The
``baseline`` model is local-only (not a container ``model`` value).

Decoding and preprocessing run in ``num_workers`` threads, a few batches ahead of the
encoder, so disk/JPEG work overlaps the forward pass.

Embedding cache (local runner, ``embedding_cache=<dir>``): vectors are kept in parquet
shards under ``<dir>/<encoder key>/`` (:func:`tao_aoi.encoders.identity_key` of the encoder
identity, device, library versions and a weight-file fingerprint), keyed per image by its
absolute path + size + mtime_ns, or by its content SHA-256 with ``embedding_cache_hash=true``
(renamed or copied images hit too). Cached images are not decoded or encoded; the misses
are embedded in ``batch_size`` chunks of their input order and appended as one new shard
(written atomically; concurrent runs each add their own shard). A rerun over unchanged
images embeds none and writes the same parquet bit for bit. Unreadable images are never
cached. Every run writes ``<output stem>.summary.json`` (``embedded``,
``reused_from_cache``, ``unreadable``, ...); the output parquet, the summary JSON and the
unreadable list are written as one set (all or nothing).

``engine=ray`` (local runner): the misses go to Ray Data (:mod:`tao_aoi.ray_engine`), the same
``batch_size`` chunks encoded by an actor pool, and come back as parquet shards; the cache is
read before and filled after the Ray stage, on this machine. Same output as ``engine=local``.

Stages: :func:`load` (validate, read the input once, load the encoder) -> :func:`embed` (the
only step that reads images: cache lookup + encoder, locally or on Ray) -> :func:`compute`
(pure: output table, counts) -> :func:`write`; :func:`run` chains them.
"""
from __future__ import annotations

import collections
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from tao_aoi import atomic, knn, specs
from tao_aoi.cli import RunFailed, UsageError, one_line
from tao_aoi.contract import MARK_MISSING_IMAGES
from tao_aoi.parquet_tools import read_parquet

SUMMARY = ("Encode every filepath of a parquet into an `embedding` column (raw SigLIP/CLIP image features, "
           "as the container writes; or the local-only weight-free baseline).")
ALIASES: dict[str, str] = {}

PREFETCH_BATCHES = 3
SHOW_UNREADABLE = 20


def config(cfg: Mapping) -> specs.ActionConfig:
    return specs.make_config("embedding", "image_embeddings", cfg)


def unreadable_sidecar(output_parquet: str | Path) -> Path:
    out = Path(output_parquet)
    return out.with_name(out.stem + ".unreadable_images.txt")


def summary_json_path(output_parquet: str | Path) -> Path:
    out = Path(output_parquet)
    return out.with_name(out.stem + ".summary.json")


def is_blank_path(path) -> bool:
    return path is None or (isinstance(path, float) and np.isnan(path)) or str(path).strip() == ""


# ----------------------------------------------------------------------------- images -> vectors

def _load_one(path, encoder):
    """(preprocessed array, None) or (None, reason). Never raises for a bad image."""
    from PIL import Image, UnidentifiedImageError

    if is_blank_path(path):
        return None, "empty filepath"
    try:
        with Image.open(str(path)) as im:
            im.load()
            return encoder.preprocess(im), None
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "is a directory"
    except UnidentifiedImageError:
        return None, "not a readable image"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return None, f"{type(exc).__name__}: {one_line(exc)}"


def decoded_batches(paths: list, encoder, batch_size: int, num_workers: int):
    """Yield (start, [(array|None, reason|None), ...]) batch by batch, decoding ahead."""
    n = len(paths)
    if num_workers <= 0:
        for b0 in range(0, n, batch_size):
            yield b0, [_load_one(p, encoder) for p in paths[b0:b0 + batch_size]]
        return
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="decode") as pool:
        pending: collections.deque[tuple[int, list[Future]]] = collections.deque()
        next_start = 0

        def submit_next() -> None:
            nonlocal next_start
            if next_start < n:
                chunk = paths[next_start:next_start + batch_size]
                pending.append((next_start, [pool.submit(_load_one, p, encoder) for p in chunk]))
                next_start += batch_size

        for _ in range(PREFETCH_BATCHES):
            submit_next()
        while pending:
            b0, futures = pending.popleft()
            submit_next()
            yield b0, [f.result() for f in futures]


def encode_decoded(encoder, results: list) -> tuple[list[int], np.ndarray, list[tuple[int, str]]]:
    """One batch through the encoder: (positions encoded, their float32 vectors, [(position,
    why) unreadable]). The readable images of a batch are encoded together, in order."""
    ok = [i for i, (arr, _) in enumerate(results) if arr is not None]
    bad = [(i, why) for i, (arr, why) in enumerate(results) if arr is None]
    if not ok:
        return ok, np.zeros((0, 0), np.float32), bad
    vecs = np.asarray(encoder.encode_arrays(np.stack([results[i][0] for i in ok])), np.float32)
    return ok, vecs, bad


def _embed_local(encoder, paths: list, batch_size: int, num_workers: int, done: int):
    """({position: vector}, [(position, why)]) for ``paths``, on this machine."""
    from tqdm import tqdm

    got: dict[int, np.ndarray] = {}
    bad: list[tuple[int, str]] = []
    with tqdm(total=len(paths) + done, initial=done, desc="embedding", unit="img", file=sys.stderr,
              mininterval=1.0 if sys.stderr.isatty() else 30.0) as bar:
        for b0, results in decoded_batches(paths, encoder, batch_size, num_workers):
            ok, vecs, why = encode_decoded(encoder, results)
            got.update((b0 + i, v) for i, v in zip(ok, vecs))
            bad.extend((b0 + i, w) for i, w in why)
            bar.update(len(results))
    return got, bad


# ----------------------------------------------------------------------------- cache

def _image_key(path, content_hash: bool) -> str | None:
    """Cache key of one image (None: cannot stat/read it; it is then embedded, and fails, as
    without a cache)."""
    import hashlib
    import os
    import stat

    if is_blank_path(path):
        return None
    try:
        if content_hash:
            h = hashlib.sha256()
            with open(str(path), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return "sha256:" + h.hexdigest()
        st = os.stat(str(path))
        if not stat.S_ISREG(st.st_mode):
            return None
        return f"stat:{os.path.abspath(str(path))}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        return None


@dataclass(frozen=True)
class EncoderInfo:
    """What the output and the cache record of the encoder that made the vectors (with
    engine=ray: the actors' device, not this process's)."""

    identity: dict
    device: str

    @property
    def dim(self) -> int:
        return int(self.identity["dim"])


class EmbeddingCache:
    """Parquet shards of (key, filepath, embedding float32) under ``root/<encoder key>``."""

    def __init__(self, root: str | Path, encoder, content_hash: bool) -> None:
        from tao_aoi.encoders import cache_identity, identity_key

        self.root = check_cache_root(root)
        self.identity = cache_identity(encoder)  # walks and stats the weight files: once
        self.folder = self.root / identity_key(self.identity)
        self.content_hash = content_hash

    def lookup(self, keys: list) -> dict[str, np.ndarray]:
        """{key: float32 vector} for the wanted keys present in the cache."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        wanted = {k for k in keys if k is not None}
        found: dict[str, np.ndarray] = {}
        if not wanted or not self.folder.is_dir():
            return found
        want_arr = pa.array(sorted(wanted), pa.string())
        for shard in sorted(self.folder.glob("*.parquet")):
            try:
                t = pq.read_table(shard, columns=["key", "embedding"])
                t = t.filter(pc.is_in(t.column("key"), value_set=want_arr))
                vecs = knn.matrix_of(t.column("embedding").combine_chunks(), shard, "embedding")
            except Exception as exc:
                print(f"notice: embedding cache shard {shard} unreadable ({one_line(exc)}); "
                      f"ignored", file=sys.stderr)
                continue
            for k, v in zip(t.column("key").to_pylist(), vecs):
                found.setdefault(k, v)
        return found

    def add(self, keys: list, filepaths: list, vectors: np.ndarray) -> Path | None:
        import os
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq

        if not keys:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        ident = self.folder / "encoder.json"
        if not ident.exists():
            atomic.write_text(ident, json.dumps(self.identity, sort_keys=True, indent=1) + "\n")
        table = pa.table({"key": pa.array(keys, pa.string()),
                          "filepath": pa.array([str(f) for f in filepaths], pa.string()),
                          "embedding": knn.list_array(np.ascontiguousarray(vectors, np.float32))})
        path = self.folder / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic.atomic_path(path) as tmp:
            pq.write_table(table, str(tmp))
        return path


def check_cache_root(root) -> Path:
    path = Path(str(root))
    if path.exists() and not path.is_dir():
        raise UsageError(f"embedding_cache {path} is a file; give a folder")
    return path


# ----------------------------------------------------------------------------- load

@dataclass(frozen=True)
class Inputs:
    src: Path
    out: Path
    frame: Any  # pandas DataFrame: the input parquet, read once, as the container reads it
    paths: list  # its filepath column
    encoder: Any  # tao_aoi.encoders.Encoder (engine=ray: a CPU copy, for its identity)
    cfg: specs.ActionConfig


def load(cfg: Mapping) -> Inputs:
    """Validate every input before anything is written; UsageError names the first problem."""
    from tao_aoi.encoders import load_encoder

    cfg = config(cfg)
    if cfg.engine == "ray":
        from tao_aoi import ray_engine

        ray_engine.require()
    src = Path(cfg.input_parquet)
    frame = read_parquet(src, required=["filepath"], what="input_parquet")
    out = Path(cfg.output_parquet)
    if out.resolve() == src.resolve():
        raise UsageError("output_parquet must differ from input_parquet")
    from tao_aoi.paths import check_writable

    check_writable(out, "output_parquet")  # now, not after an hour of encoding
    # engine=ray: the actors pick their device; this copy only names the encoder
    device = "cpu" if cfg.engine == "ray" else cfg.device
    encoder = load_encoder(cfg.model, cfg.model_path, cfg.model_config_path, device)
    if cfg.embedding_cache.strip():
        check_cache_root(cfg.embedding_cache.strip())
    return Inputs(src, out, frame, frame["filepath"].tolist(), encoder, cfg)


# ----------------------------------------------------------------------------- embed

@dataclass(frozen=True)
class Embedded:
    keys: list  # cache key per input row (None: no cache or no key)
    hits: dict  # key -> cached vector
    got: dict  # input row -> vector embedded now
    unreadable: list  # [(filepath, why)] in input order
    reused: int  # rows whose vector came from the cache
    info: EncoderInfo
    cache: EmbeddingCache | None
    seconds: float
    engine_note: str


def embed(inputs: Inputs) -> Embedded:
    """Vectors for every input row: from the cache, else from the encoder (here or on Ray)."""
    cfg = inputs.cfg
    t0 = time.perf_counter()
    if cfg.engine != "ray":
        info = EncoderInfo(inputs.encoder.identity, inputs.encoder.device)

        def local(paths: list, done: int):
            got, bad = _embed_local(inputs.encoder, paths, cfg.batch_size, cfg.num_workers, done)
            return got, bad, ""

        return _embed_misses(inputs, info, local, t0)
    from tao_aoi import ray_engine

    with ray_engine.connect(cfg.ray_address) as ray:
        shape = ray_engine.actor_shape(ray, cfg.model, cfg.device)
        identity = dict(inputs.encoder.identity)
        if "device" in identity:
            identity["device"] = shape.device
        work = inputs.out.with_name(f".{inputs.out.stem}.ray-shards")

        def on_ray(paths: list, done: int):
            return ray_engine.embed(ray, shape, paths, cfg, work)

        return _embed_misses(inputs, EncoderInfo(identity, shape.device), on_ray, t0)


def _embed_misses(inputs: Inputs, info: EncoderInfo, embed_paths: Callable, t0: float) -> Embedded:
    cfg, paths = inputs.cfg, inputs.paths
    root = cfg.embedding_cache.strip()
    cache = EmbeddingCache(root, info, cfg.embedding_cache_hash) if root else None
    keys: list = [None] * len(paths)
    hits: dict[str, np.ndarray] = {}
    if cache is not None:
        keys = [_image_key(p, cfg.embedding_cache_hash) for p in paths]
        hits = cache.lookup(keys)
    todo = [i for i in range(len(paths)) if keys[i] is None or keys[i] not in hits]
    got_at, bad_at, note = embed_paths([paths[i] for i in todo], len(paths) - len(todo))
    got = {todo[p]: v for p, v in got_at.items()}
    unreadable = [(str(paths[todo[p]]), why) for p, why in sorted(bad_at)]
    return Embedded(keys, hits, got, unreadable, len(paths) - len(todo), info, cache,
                    time.perf_counter() - t0, note)


# ----------------------------------------------------------------------------- compute

@dataclass(frozen=True)
class Result:
    table: Any  # pyarrow Table: output_parquet
    stats: dict  # <output stem>.summary.json
    unreadable: list
    identity: dict
    cache: EmbeddingCache | None
    cache_new: tuple  # (keys, filepaths, vectors) to add to the cache
    src: Path
    out: Path
    device: str
    engine_note: str


def _output_table(frame, names: list, vectors: np.ndarray, identity: dict | None):
    """The container's output frame, built the way it builds it (pandas), except that the
    embedding column goes straight from the float32 array to list<double> (the same values
    as the container's Python floats, without a Python object per element)."""
    import pandas as pd
    import pyarrow as pa

    from tao_aoi.encoders import identity_metadata

    # object dtype as in the container's frame (pd.DataFrame(columns=...) + concat): that
    # decides the Arrow type of filepath (string; null when there are no rows).
    out = pd.DataFrame({"filepath": pd.Series(names, dtype=object)})
    row = "__tao_aoi_row__"
    while row in frame.columns:
        row += "_"
    extra = [c for c in frame.columns if c not in ("filepath", "embedding")]
    if extra:
        out[row] = np.arange(len(names), dtype=np.int64)
        out = out.merge(frame[["filepath"] + extra], on="filepath", how="left")
        vectors = vectors[out.pop(row).to_numpy()]
    table = pa.Table.from_pandas(out, preserve_index=False)
    # no rows: the container's empty object column
    emb = knn.list_array(vectors, pa.float64()) if len(names) else pa.nulls(0)
    table = table.add_column(1, "embedding", emb)
    meta = dict(identity_metadata(identity)) if identity else {}
    return table.replace_schema_metadata(meta or None)


def _cache_new(embedded: Embedded, paths: list) -> tuple:
    """The vectors embedded now, one per cache key (a path listed twice is embedded twice,
    cached once)."""
    if embedded.cache is None:
        return (), (), None
    first: dict[str, int] = {}
    for i in sorted(embedded.got):
        if embedded.keys[i] is not None:
            first.setdefault(embedded.keys[i], i)
    rows = sorted(first.values())
    if not rows:
        return (), (), None
    return (tuple(embedded.keys[i] for i in rows), tuple(paths[i] for i in rows),
            np.stack([embedded.got[i] for i in rows]))


def compute(inputs: Inputs, embedded: Embedded) -> Result:
    """The output table and the counts (pure). RunFailed when no image could be read."""
    paths, n = inputs.paths, len(inputs.paths)
    rows = [i for i in range(n) if i in embedded.got or
            (embedded.keys[i] is not None and embedded.keys[i] in embedded.hits)]
    if n and not rows:
        bad = embedded.unreadable
        raise RunFailed(f"none of the {n} images in {inputs.src} could be read "
                        f"(first: {bad[0][0]}: {bad[0][1]}); see {unreadable_sidecar(inputs.out)}")
    vectors = (np.stack([embedded.got[i] if i in embedded.got else embedded.hits[embedded.keys[i]]
                         for i in rows]).astype(np.float32, copy=False)
               if rows else np.zeros((0, embedded.info.dim), np.float32))
    identity = dict(embedded.info.identity)
    if len(vectors):
        identity["dim"] = int(vectors.shape[1])
    table = _output_table(inputs.frame, [paths[i] for i in rows], vectors, identity)
    cache = embedded.cache
    stats = {"rows_in": n, "rows_written": table.num_rows, "embedded": len(embedded.got),
             "reused_from_cache": embedded.reused,
             "unreadable": len(embedded.unreadable),
             "embedding_cache": str(cache.folder) if cache else None,
             "embedding_cache_key": ("content sha256" if cache.content_hash else "path+size+mtime_ns")
             if cache else None,
             "engine": inputs.cfg.engine,
             "seconds": round(embedded.seconds, 3), "encoder": identity}
    return Result(table, stats, list(embedded.unreadable), identity, cache, _cache_new(embedded, paths),
                  inputs.src, inputs.out, embedded.info.device, embedded.engine_note)


# ----------------------------------------------------------------------------- write

def _sidecar_text(unreadable: list) -> str:
    return "".join(f"{p}\t{why}\n" for p, why in unreadable)


def write(result: Result) -> None:
    """New vectors into the cache, then output_parquet, <stem>.summary.json and (when images
    were unreadable) <stem>.unreadable_images.txt as one set; an older run's list of
    unreadable images goes in the same commit when this run has none."""
    import pyarrow.parquet as pq

    keys, filepaths, vectors = result.cache_new
    if keys:
        result.cache.add(list(keys), list(filepaths), vectors)
    sidecar = unreadable_sidecar(result.out)
    dests = [result.out, summary_json_path(result.out)] + ([sidecar] if result.unreadable else [])
    with atomic.atomic_paths(*dests, remove=[] if result.unreadable else [sidecar]) as tmps:
        pq.write_table(result.table, str(tmps[0]))
        tmps[1].write_text(json.dumps(result.stats, sort_keys=True, indent=1) + "\n", encoding="utf-8")
        if result.unreadable:
            tmps[2].write_text(_sidecar_text(result.unreadable), encoding="utf-8")


def summary(result: Result) -> str:
    n, stats, unreadable = result.stats["rows_in"], result.stats, result.unreadable
    seconds, sidecar = stats["seconds"], unreadable_sidecar(result.out)
    lines = [
        "embedding image_embeddings: done",
        f"input_parquet: {result.src}",
        f"output_parquet: {result.out}",
        f"rows_in: {n}",
        f"rows_written: {stats['rows_written']}",
        f"columns: {', '.join(result.table.column_names)}",
        f"unreadable_images: {len(unreadable)}",
        f"dim: {result.identity['dim']}",
        f"encoder: {json.dumps(result.identity, sort_keys=True)}",
        f"device: {result.device}",
        f"seconds: {seconds:.2f}",
        f"images_per_s: {n / seconds if seconds > 0 else 0.0:.1f}",
    ]
    if result.engine_note:
        lines.append(f"engine: {result.engine_note}")
    if unreadable:
        lines.append(f"{MARK_MISSING_IMAGES} {len(unreadable)} of {n} images could not be read; "
                     f"their rows were dropped (full list: {sidecar})")
        lines += [f"  unreadable: {p} ({why})" for p, why in unreadable[:SHOW_UNREADABLE]]
        if len(unreadable) > SHOW_UNREADABLE:
            lines.append(f"  ... and {len(unreadable) - SHOW_UNREADABLE} more in {sidecar}")
    cache = stats["embedding_cache"]
    lines += [f"embedded: {stats['embedded']}",
              f"reused_from_cache: {stats['reused_from_cache']}"
              + (f" (cache {cache})" if cache else " (no embedding_cache)"),
              f"summary_json: {summary_json_path(result.out)}"]
    return "\n".join(lines)


def run(cfg: Mapping) -> int:
    inputs = load(cfg)
    if "embedding" in inputs.frame.columns:
        print("notice: input_parquet already has an 'embedding' column; it is replaced",
              file=sys.stderr)
    embedded = None
    try:
        embedded = embed(inputs)
        result = compute(inputs, embedded)
        write(result)
    except BaseException:
        # a failed run leaves no stale output to be taken as this run's; the list of
        # unreadable images is what explains the failure
        stale = [inputs.out, summary_json_path(inputs.out)]
        if embedded is not None and embedded.unreadable:
            with atomic.atomic_paths(unreadable_sidecar(inputs.out), remove=stale) as (tmp,):
                tmp.write_text(_sidecar_text(embedded.unreadable), encoding="utf-8")
        else:
            for path in stale:
                path.unlink(missing_ok=True)
        raise
    print(summary(result))
    return 0
