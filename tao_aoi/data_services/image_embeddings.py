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
shards under ``<dir>/<encoder key>/`` (:func:`tao_aoi.encoders.cache_key`: the encoder
identity, device, library versions and a weight-file fingerprint), keyed per image by its
absolute path + size + mtime_ns, or by its content SHA-256 with ``embedding_cache_hash=true``
(renamed or copied images hit too). Cached images are not decoded or encoded; the misses
are embedded in ``batch_size`` chunks of their input order and appended as one new shard
(written atomically; concurrent runs each add their own shard). A rerun over unchanged
images embeds none and writes the same parquet bit for bit. Unreadable images are never
cached. Every run writes ``<output stem>.summary.json`` (``embedded``,
``reused_from_cache``, ``unreadable``, ...).
"""
from __future__ import annotations

import collections
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tao_aoi.cli import RunFailed, UsageError, one_line
from tao_aoi.contract import MARK_MISSING_IMAGES

SUMMARY = ("Encode every filepath of a parquet into an `embedding` column (raw SigLIP/CLIP image features, "
           "as the container writes; or the local-only weight-free baseline).")
ALIASES: dict[str, str] = {}

PREFETCH_BATCHES = 3
SHOW_UNREADABLE = 20


def unreadable_sidecar(output_parquet: str | Path) -> Path:
    out = Path(output_parquet)
    return out.with_name(out.stem + ".unreadable_images.txt")


def _load_one(path, encoder):
    """(preprocessed array, None) or (None, reason). Never raises for a bad image."""
    from PIL import Image, UnidentifiedImageError

    if path is None or (isinstance(path, float) and np.isnan(path)) or str(path).strip() == "":
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


def _batches(paths: list, encoder, batch_size: int, num_workers: int):
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


CACHE_COLUMNS = ("key", "filepath", "embedding")


def summary_json_path(output_parquet: str | Path) -> Path:
    out = Path(output_parquet)
    return out.with_name(out.stem + ".summary.json")


def _image_key(path, content_hash: bool) -> str | None:
    """Cache key of one image (None: cannot stat/read it; it is then embedded, and fails, as
    without a cache)."""
    import hashlib
    import os

    if path is None or (isinstance(path, float) and np.isnan(path)) or str(path).strip() == "":
        return None
    try:
        if content_hash:
            h = hashlib.sha256()
            with open(str(path), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return "sha256:" + h.hexdigest()
        st = os.stat(str(path))
        if not os.path.isfile(str(path)):
            return None
        return f"stat:{os.path.abspath(str(path))}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        return None


class EmbeddingCache:
    """Parquet shards of (key, filepath, embedding float32) under ``root/<encoder key>``."""

    def __init__(self, root: str | Path, encoder, content_hash: bool) -> None:
        from tao_aoi.encoders import cache_identity, cache_key

        self.root = Path(str(root))
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"embedding_cache {self.root} is a file; give a folder")
        self.folder = self.root / cache_key(encoder)
        self.identity = cache_identity(encoder)
        self.content_hash = content_hash

    def lookup(self, keys: list) -> dict[str, np.ndarray]:
        """{key: float32 vector} for the wanted keys present in the cache."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        wanted = {k for k in keys if k is not None}
        found: dict[str, np.ndarray] = {}
        if not wanted or not self.folder.is_dir():
            return found
        import pyarrow as pa

        want_arr = pa.array(sorted(wanted), pa.string())
        for shard in sorted(self.folder.glob("*.parquet")):
            try:
                t = pq.read_table(shard, columns=["key", "embedding"])
            except Exception as exc:
                print(f"notice: embedding cache shard {shard} unreadable ({one_line(exc)}); "
                      f"ignored", file=sys.stderr)
                continue
            t = t.filter(pc.is_in(t.column("key"), value_set=want_arr))
            if not t.num_rows:
                continue
            emb = t.column("embedding").combine_chunks()
            vals = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            vecs = vals.reshape(t.num_rows, -1)
            for k, v in zip(t.column("key").to_pylist(), vecs):
                found.setdefault(k, v)
        return found

    def add(self, keys: list, filepaths: list, vectors: np.ndarray) -> Path | None:
        import os
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq

        from tao_aoi import atomic

        rows = [i for i, k in enumerate(keys) if k is not None]
        if not rows:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        ident = self.folder / "encoder.json"
        if not ident.exists():
            atomic.write_text(ident, json.dumps(self.identity, sort_keys=True, indent=1) + "\n")
        d = vectors.shape[1]
        v = np.ascontiguousarray(vectors[rows], np.float32)
        offsets = pa.array(np.arange(0, (len(rows) + 1) * d, d, dtype=np.int32))
        table = pa.table({"key": pa.array([keys[i] for i in rows], pa.string()),
                          "filepath": pa.array([str(filepaths[i]) for i in rows], pa.string()),
                          "embedding": pa.ListArray.from_arrays(offsets, pa.array(v.reshape(-1)))})
        path = self.folder / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic.atomic_path(path) as tmp:
            pq.write_table(table, str(tmp))
        return path


def _validate(cfg: dict):
    import pyarrow.parquet as pq

    src = Path(str(cfg["input_parquet"]))
    if not src.is_file():
        raise UsageError(f"input_parquet not found: {src}")
    try:
        names = pq.read_schema(src).names
    except Exception as exc:
        raise UsageError(f"input_parquet {src} is not a readable parquet: {one_line(exc)}") from None
    if "filepath" not in names:
        raise UsageError(f"input_parquet {src} has no 'filepath' column (columns: "
                         f"{', '.join(names) or 'none'})")
    out = Path(str(cfg["output_parquet"]))
    if out.resolve() == src.resolve():
        raise UsageError("output_parquet must differ from input_parquet")
    if out.exists() and out.is_dir():
        raise UsageError(f"output_parquet {out} is a directory; give a file path")
    batch_size = int(cfg.get("batch_size", 64))
    if batch_size < 1:
        raise UsageError("batch_size must be >= 1")
    return src, out


def _output_table(src: Path, names: list, vectors: np.ndarray, identity: dict | None):
    """The container's output frame, built the way it builds it (pandas), except that the
    embedding column goes straight from the float32 array to list<double> (the same values
    as the container's Python floats, without a Python object per element)."""
    import pandas as pd
    import pyarrow as pa

    from tao_aoi.encoders import identity_metadata

    # object dtype as in the container's frame (pd.DataFrame(columns=...) + concat): that
    # decides the Arrow type of filepath (string; null when there are no rows).
    frame = pd.DataFrame({"filepath": pd.Series(names, dtype=object)})
    row = "__tao_aoi_row__"
    input_df = pd.read_parquet(src)
    while row in input_df.columns:
        row += "_"
    extra = [c for c in input_df.columns if c not in ("filepath", "embedding")]
    if extra:
        frame[row] = np.arange(len(names), dtype=np.int64)
        frame = frame.merge(input_df[["filepath"] + extra], on="filepath", how="left")
        take = frame.pop(row).to_numpy()
        vectors = vectors[take]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if len(names):
        d = vectors.shape[1]
        offsets = pa.array(np.arange(0, (len(vectors) + 1) * d, d, dtype=np.int32))
        emb = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1).astype(np.float64)))
    else:
        emb = pa.nulls(0)  # the container's empty object column
    table = table.add_column(1, "embedding", emb)
    meta = dict(identity_metadata(identity)) if identity else {}
    return table.replace_schema_metadata(meta or None)


def run(cfg: dict) -> int:
    import pandas as pd
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from tao_aoi import atomic
    from tao_aoi.encoders import load_encoder

    src, out = _validate(cfg)
    batch_size = int(cfg.get("batch_size", 64))
    num_workers = int(cfg.get("num_workers", 4))
    encoder = load_encoder(cfg.get("model", "SigLIP"), cfg.get("model_path"),
                           cfg.get("model_config_path"), cfg.get("device", "auto"))
    if "embedding" in pq.read_schema(src).names:
        print("notice: input_parquet already has an 'embedding' column; it is replaced",
              file=sys.stderr)
    sidecar = unreadable_sidecar(out)
    paths = pd.read_parquet(src, columns=["filepath"])["filepath"].tolist()
    n = len(paths)
    cache_dir = str(cfg.get("embedding_cache") or "").strip()
    from tao_aoi.specs import parse_flag

    content_hash = parse_flag(cfg.get("embedding_cache_hash", False), "embedding_cache_hash")
    cache = EmbeddingCache(cache_dir, encoder, content_hash) if cache_dir else None
    unreadable: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    keys: list = [None] * n
    hits: dict[str, np.ndarray] = {}
    if cache is not None:
        keys = [_image_key(p, content_hash) for p in paths]
        hits = cache.lookup(keys)
    todo = [i for i in range(n) if keys[i] is None or keys[i] not in hits]
    got: dict[int, np.ndarray] = {}   # input row -> vector (misses, embedded now)
    try:
        bar = tqdm(total=n, desc="embedding", unit="img", file=sys.stderr,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        bar.update(n - len(todo))
        todo_paths = [paths[i] for i in todo]
        for b0, results in _batches(todo_paths, encoder, batch_size, num_workers):
            ok = [i for i, (arr, _) in enumerate(results) if arr is not None]
            for i, (arr, why) in enumerate(results):
                if arr is None:
                    unreadable.append((str(todo_paths[b0 + i]), why))
            if ok:
                vecs = np.asarray(
                    encoder.encode_arrays(np.stack([results[i][0] for i in ok])), np.float32)
                for i, v in zip(ok, vecs):
                    got[todo[b0 + i]] = v
            bar.update(len(results))
        bar.close()
        rows = [i for i in range(n) if i in got or (keys[i] is not None and keys[i] in hits)]
        names: list = [paths[i] for i in rows]
        if n and not names:
            raise RunFailed(f"none of the {n} images in {src} could be read "
                            f"(first: {unreadable[0][0]}: {unreadable[0][1]}); see {sidecar}")
        vectors = (np.stack([got[i] if i in got else hits[keys[i]] for i in rows]).astype(np.float32, copy=False)
                   if rows else np.zeros((0, encoder.dim), np.float32))
        if cache is not None and got:
            new = sorted(got)
            # one entry per key (a path listed twice is embedded twice, cached once)
            first = {}
            for i in new:
                first.setdefault(keys[i], i)
            new = [i for i in new if keys[i] is not None and first[keys[i]] == i]
            if new:
                cache.add([keys[i] for i in new], [paths[i] for i in new],
                          np.stack([got[i] for i in new]))
        if len(vectors):
            ident = dict(encoder.identity)
            ident["dim"] = int(vectors.shape[1])
            encoder.identity = ident
        table = _output_table(src, names, vectors, encoder.identity)
        with atomic.atomic_path(out) as tmp:
            pq.write_table(table, str(tmp))
    except BaseException:
        out.unlink(missing_ok=True)
        if unreadable:
            _write_sidecar(sidecar, unreadable)
        raise
    if unreadable:
        _write_sidecar(sidecar, unreadable)
    else:
        sidecar.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    reused = n - len(todo)
    stats = {"rows_in": n, "rows_written": table.num_rows, "embedded": len(got),
             "reused_from_cache": reused, "unreadable": len(unreadable),
             "embedding_cache": str(cache.folder) if cache else None,
             "embedding_cache_key": ("content sha256" if content_hash else "path+size+mtime_ns")
             if cache else None,
             "seconds": round(seconds, 3), "encoder": encoder.identity}
    from tao_aoi import atomic as _atomic

    _atomic.write_text(summary_json_path(out), json.dumps(stats, sort_keys=True, indent=1) + "\n")
    _print_summary(src, out, n, table.num_rows, unreadable, encoder, seconds, sidecar,
                   table.column_names)
    print(f"embedded: {len(got)}")
    print(f"reused_from_cache: {reused}" + (f" (cache {cache.folder})" if cache else " (no embedding_cache)"))
    print(f"summary_json: {summary_json_path(out)}")
    return 0


def _write_sidecar(path: Path, unreadable: list[tuple[str, str]]) -> None:
    from tao_aoi import atomic

    atomic.write_text(path, "".join(f"{p}\t{why}\n" for p, why in unreadable))


def _print_summary(src, out, n, written, unreadable, encoder, seconds, sidecar, columns) -> None:
    lines = [
        "embedding image_embeddings: done",
        f"input_parquet: {src}",
        f"output_parquet: {out}",
        f"rows_in: {n}",
        f"rows_written: {written}",
        f"columns: {', '.join(columns)}",
        f"unreadable_images: {len(unreadable)}",
        f"dim: {encoder.dim}",
        f"encoder: {json.dumps(encoder.identity, sort_keys=True)}",
        f"device: {encoder.device}",
        f"seconds: {seconds:.2f}",
        f"images_per_s: {n / seconds if seconds > 0 else 0.0:.1f}",
    ]
    if unreadable:
        lines.append(f"{MARK_MISSING_IMAGES} {len(unreadable)} of {n} images could not be read; "
                     f"their rows were dropped (full list: {sidecar})")
        for p, why in unreadable[:SHOW_UNREADABLE]:
            lines.append(f"  unreadable: {p} ({why})")
        if len(unreadable) > SHOW_UNREADABLE:
            lines.append(f"  ... and {len(unreadable) - SHOW_UNREADABLE} more in {sidecar}")
    print("\n".join(lines))
