"""Local runner action ``embedding image_embeddings``.

Reads ``input_parquet`` (needs a ``filepath`` column; relative paths are taken from the
current working directory, as inside the container with ``-w $W``), encodes every image
and writes ``output_parquet`` with columns ``filepath``, ``embedding`` (list<float32>,
L2-normalised) and every other input column verbatim. The encoder identity (JSON) goes
into the Arrow schema metadata under ``tao_aoi.encoder`` so ``tmm nearest_neighbors`` can
refuse parquets embedded with different encoders.

Images that cannot be read (missing file, not an image, truncated) are listed by path in
the summary and in ``<output stem>.unreadable_images.txt`` beside the output; their rows
are dropped and counted. If no image at all can be read the run fails (exit 1).

Decoding and preprocessing run in ``num_workers`` threads, a few batches ahead of the
encoder, so disk/JPEG work overlaps the forward pass. Rows are written in row groups as
they are encoded, so memory does not grow with the pool size.
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
from tao_aoi.hooks.report_rules import MARK_MISSING_IMAGES

SUMMARY = "Encode every filepath of a parquet into an L2-normalised `embedding` column (SigLIP, CLIP or the weight-free baseline)."
ALIASES: dict[str, str] = {}

ROW_GROUP_ROWS = 8192
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


def _validate(cfg: dict):
    import pyarrow.parquet as pq

    src = Path(str(cfg["input_parquet"]))
    if not src.is_file():
        raise UsageError(f"input_parquet not found: {src}")
    try:
        table = pq.read_table(src)
    except Exception as exc:
        raise UsageError(f"input_parquet {src} is not a readable parquet: {one_line(exc)}") from None
    if "filepath" not in table.column_names:
        raise UsageError(f"input_parquet {src} has no 'filepath' column (columns: "
                         f"{', '.join(table.column_names) or 'none'})")
    if table.num_rows == 0:
        raise UsageError(f"input_parquet {src} has no rows")
    out = Path(str(cfg["output_parquet"]))
    if out.resolve() == src.resolve():
        raise UsageError("output_parquet must differ from input_parquet")
    if out.exists() and out.is_dir():
        raise UsageError(f"output_parquet {out} is a directory; give a file path")
    batch_size = int(cfg.get("batch_size", 64))
    if batch_size < 1:
        raise UsageError("batch_size must be >= 1")
    return src, out, table


def _output_schema(table, identity: dict):
    import pyarrow as pa

    from tao_aoi.encoders import identity_metadata

    fields = [table.schema.field("filepath"), pa.field("embedding", pa.list_(pa.float32()))]
    fields += [f for f in table.schema if f.name not in ("filepath", "embedding")]
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    meta.update(identity_metadata(identity))
    return pa.schema(fields, metadata=meta)


def _chunk_table(table, rows: np.ndarray, vectors: np.ndarray, schema):
    import pyarrow as pa

    sub = table.take(pa.array(rows, pa.int64()))
    d = vectors.shape[1]
    offsets = pa.array(np.arange(0, (len(rows) + 1) * d, d, dtype=np.int32))
    emb = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))
    cols = [sub.column("filepath").combine_chunks(), emb]
    cols += [sub.column(f.name).combine_chunks() for f in schema if f.name not in ("filepath", "embedding")]
    return pa.Table.from_arrays(cols, schema=schema)


def run(cfg: dict) -> int:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from tao_aoi import atomic
    from tao_aoi.encoders import load_encoder

    src, out, table = _validate(cfg)
    batch_size = int(cfg.get("batch_size", 64))
    num_workers = int(cfg.get("num_workers", 4))
    encoder = load_encoder(cfg.get("model", "SigLIP"), cfg.get("model_path"),
                           cfg.get("model_config_path"), cfg.get("device", "auto"))
    if "embedding" in table.column_names:
        print("notice: input_parquet already has an 'embedding' column; it is replaced",
              file=sys.stderr)
    sidecar = unreadable_sidecar(out)
    paths = table.column("filepath").to_pylist()
    n = len(paths)
    unreadable: list[tuple[str, str]] = []
    written = 0
    t0 = time.perf_counter()
    writer = None
    schema = None
    try:
        with atomic.atomic_path(out) as tmp:
            pend_rows: list[np.ndarray] = []
            pend_vecs: list[np.ndarray] = []
            pend_n = 0

            def flush() -> None:
                nonlocal writer, schema, pend_n, written
                if not pend_n:
                    return
                rows = np.concatenate(pend_rows)
                vecs = np.concatenate(pend_vecs)
                if writer is None:
                    ident = dict(encoder.identity)
                    ident["dim"] = int(vecs.shape[1])
                    encoder.identity = ident
                    schema = _output_schema(table, ident)
                    writer = pq.ParquetWriter(str(tmp), schema)
                writer.write_table(_chunk_table(table, rows, vecs, schema))
                written += len(rows)
                pend_rows.clear()
                pend_vecs.clear()
                pend_n = 0

            bar = tqdm(total=n, desc="embedding", unit="img", file=sys.stderr,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0)
            for b0, results in _batches(paths, encoder, batch_size, num_workers):
                ok = [i for i, (arr, _) in enumerate(results) if arr is not None]
                for i, (arr, why) in enumerate(results):
                    if arr is None:
                        unreadable.append((str(paths[b0 + i]), why))
                if ok:
                    vecs = encoder.encode_arrays(np.stack([results[i][0] for i in ok]))
                    pend_rows.append(np.asarray(ok, np.int64) + b0)
                    pend_vecs.append(np.asarray(vecs, np.float32))
                    pend_n += len(ok)
                    if pend_n >= ROW_GROUP_ROWS:
                        flush()
                bar.update(len(results))
            bar.close()
            flush()
            if writer is None:
                raise RunFailed(f"none of the {n} images in {src} could be read "
                                f"(first: {unreadable[0][0]}: {unreadable[0][1]}); see {sidecar}")
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            writer.close()
        out.unlink(missing_ok=True)
        if unreadable:
            _write_sidecar(sidecar, unreadable)
        raise
    if unreadable:
        _write_sidecar(sidecar, unreadable)
    else:
        sidecar.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    _print_summary(src, out, n, written, unreadable, encoder, seconds, sidecar, schema.names)
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
