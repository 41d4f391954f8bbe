#!/usr/bin/env python3
"""Benchmark the exact k-NN used by `tmm nearest_neighbors`.

Default problem: 1,000 targets x 1,000,000 sources x 768-d, cosine, exact top-5
(random unit vectors). Measures:
  1. tao_aoi.knn.topk on in-memory arrays: wall seconds and peak RSS of this process;
  2. a correctness spot check: for a sample of targets, the exact float64 top-k over ALL
     sources (computed blockwise here) must equal the returned neighbours;
  3. with --action: the whole `tmm nearest_neighbors` action on parquets (written here,
     uncompressed list<float32>), run as `scripts/data_services.py` in a child process:
     wall seconds and the child's peak RSS.

Heavy (about 3 GB of sources in memory): on a shared machine run it under a lock:
  flock /tmp/heavy.lock python3 benchmarks/bench_knn.py --action
Smaller smoke run:
  python3 benchmarks/bench_knn.py --sources 100000 --targets 200
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tao_aoi import knn  # noqa: E402


def peak_rss_gb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def random_unit(rng, n, d, block=100_000) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for r0 in range(0, n, block):
        out[r0:r0 + block] = rng.standard_normal((min(block, n - r0), d), dtype=np.float32)
    return knn.l2_normalize_(out)


def exact_topk_float64(t: np.ndarray, s: np.ndarray, k: int, block=50_000) -> np.ndarray:
    """Cosine top-k by float64 arithmetic, blockwise over sources (independent of knn.topk)."""
    t64 = t.astype(np.float64)
    t64 /= np.linalg.norm(t64, axis=1, keepdims=True)
    best_d = np.full((len(t), 0), np.inf)
    best_i = np.zeros((len(t), 0), np.int64)
    for c0 in range(0, len(s), block):
        s64 = s[c0:c0 + block].astype(np.float64)
        s64 /= np.linalg.norm(s64, axis=1, keepdims=True)
        d = 1.0 - t64 @ s64.T
        d_all = np.concatenate([best_d, d], axis=1)
        i_all = np.concatenate([best_i, np.broadcast_to(np.arange(c0, c0 + len(s64)), d.shape)], axis=1)
        order = np.lexsort((i_all, d_all), axis=1)[:, :k]
        best_d = np.take_along_axis(d_all, order, axis=1)
        best_i = np.take_along_axis(i_all, order, axis=1)
    return best_i


def write_parquet(path: Path, vectors: np.ndarray, prefix: str, block=50_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tao_aoi.hooks.report_rules import ENCODER_METADATA_KEY

    d = vectors.shape[1]
    schema = pa.schema([("filepath", pa.string()), ("embedding", pa.list_(pa.float32()))],
                       metadata={ENCODER_METADATA_KEY.encode(): json.dumps(
                           {"model": "bench", "model_path": "random", "dim": d}).encode()})
    with pq.ParquetWriter(str(path), schema, compression="none") as w:
        for r0 in range(0, len(vectors), block):
            blk = vectors[r0:r0 + block]
            offsets = pa.array(np.arange(0, (len(blk) + 1) * d, d, dtype=np.int32))
            emb = pa.ListArray.from_arrays(offsets, pa.array(blk.reshape(-1)))
            fp = pa.array([f"/pool/{prefix}_{i:07d}.jpg" for i in range(r0, r0 + len(blk))])
            w.write_table(pa.Table.from_arrays([fp, emb], schema=schema))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--sources", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--topn", type=int, default=5)
    ap.add_argument("--budget-mb", type=int, default=knn.DEFAULT_MEMORY_BUDGET // 2**20)
    ap.add_argument("--check", type=int, default=20, help="targets in the brute-force spot check")
    ap.add_argument("--action", action="store_true", help="also time the action on parquets")
    ap.add_argument("--workdir", help="where the parquets go (default: a temp dir, removed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    src = random_unit(rng, args.sources, args.dim)
    tgt = random_unit(rng, args.targets, args.dim)
    gen_s = time.perf_counter() - t0
    rss_data = peak_rss_gb()

    t0 = time.perf_counter()
    idx, dist = knn.topk(tgt, src, args.topn, "cosine", normalized=True,
                         memory_budget=args.budget_mb * 2**20)
    knn_s = time.perf_counter() - t0
    rss_knn = peak_rss_gb()

    sample = np.random.default_rng(1).choice(args.targets, size=min(args.check, args.targets), replace=False)
    ref = exact_topk_float64(tgt[sample], src, args.topn)
    agree = float((ref == idx[sample]).mean())

    result = {
        "machine_cpus": os.cpu_count(), "targets": args.targets, "sources": args.sources,
        "dim": args.dim, "topn": args.topn, "budget_mb": args.budget_mb,
        "data_gen_s": round(gen_s, 2), "knn_wall_s": round(knn_s, 2),
        "knn_matmul_gflops": round(2 * args.targets * args.sources * args.dim / knn_s / 1e9, 1),
        "peak_rss_gb_after_data": round(rss_data, 2), "peak_rss_gb_knn": round(rss_knn, 2),
        "spot_check_targets": int(len(sample)), "spot_check_agreement": agree,
    }
    if args.action:
        with tempfile.TemporaryDirectory(dir=args.workdir) as wd:
            wd = Path(wd)
            write_parquet(wd / "src.parquet", src, "s")
            write_parquet(wd / "tgt.parquet", tgt, "t")
            del src, tgt
            spec = wd / "mining_spec.yaml"
            spec.write_text(f"topn: {args.topn}\nknn_metric: cosine\n")
            cmd = [sys.executable, str(REPO / "scripts" / "data_services.py"), "tmm", "nearest_neighbors",
                   "-e", str(spec), f"source_parquet={wd / 'src.parquet'}",
                   f"target_parquet={wd / 'tgt.parquet'}", f"output_parquet={wd / 'mined.parquet'}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            result["action_wall_s"] = round(time.perf_counter() - t0, 2)
            result["action_peak_rss_gb"] = round(peak_rss_gb(resource.RUSAGE_CHILDREN), 2)
            result["action_rc"] = proc.returncode
            if proc.returncode:
                result["action_stderr"] = proc.stderr[-500:]
            import pandas as pd

            mined = pd.read_parquet(wd / "mined.parquet") if proc.returncode == 0 else None
            if mined is not None:
                expected = {f"/pool/s_{j:07d}.jpg" for j in idx.ravel()}
                result["action_unique_mined"] = int(len(mined))
                result["action_matches_knn"] = set(mined["filepath"]) == expected
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0 if agree == 1.0 and result.get("action_rc", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
