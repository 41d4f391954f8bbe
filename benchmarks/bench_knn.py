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

  4. with --sharded: the streamed search (tao_aoi.knn.topk_stream over ParquetShards, what
     the action does) over a pool written here as parquet shards (generated shard by
     shard, never whole in memory), in a child process: wall seconds and peak RSS, next
     to the two floors measured in the same run: the sgemm floor (all of the search's
     matmuls run alone, back to back, the faster of one all-core BLAS call and one
     single-threaded call per core at once; their short-burst peak rate is printed too)
     and the disk-read floor (the shard files read sequentially, page cache dropped for
     them first with posix_fadvise). The page cache is dropped for the shards again
     before the search, so both read from disk.
       python3 benchmarks/bench_knn.py --sharded --sources 10000000 --workdir /work/tmp

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


def drop_cache(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_floor_s(paths, chunk=16 << 20) -> tuple[float, int]:
    """Seconds to read the files sequentially (bytes read)."""
    buf = bytearray(chunk)
    total = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                total += n
    return time.perf_counter() - t0, total


class _Matmuls:
    """The search's matmul shape: a target tile x a source block, either as one numpy matmul
    over every core (BLAS threads) or split in column parts over one single-threaded BLAS
    call per core at once (as the search runs it)."""

    def __init__(self, n_targets: int, n_sources: int, dim: int, topn: int, budget: int) -> None:
        self.tb, self.sb = knn.block_shape(n_targets, n_sources, topn, budget)
        rng = np.random.default_rng(5)
        self.t = rng.standard_normal((min(self.tb, n_targets), dim), dtype=np.float32)
        self.s = rng.standard_normal((self.sb, dim), dtype=np.float32)
        self.out = np.empty((self.t.shape[0], self.sb), np.float32)
        self.cores = len(os.sched_getaffinity(0))
        n = 4 * self.cores
        self.parts = [np.empty((self.t.shape[0], -(-self.sb // n) + 1), np.float32) for _ in range(n)]

    def one_call(self, width: int) -> None:
        np.matmul(self.t, self.s[:width].T, out=self.out[:, :width])

    def in_parts(self, pool, width: int) -> None:
        edges = np.linspace(0, width, len(self.parts) + 1).astype(int)

        def part(i):
            c0, c1 = edges[i], edges[i + 1]
            np.matmul(self.t, self.s[c0:c1].T, out=self.parts[i][:, :c1 - c0])

        list(pool.map(part, range(len(self.parts))))


def sgemm_floor_s(n_targets: int, n_sources: int, dim: int, topn: int, budget: int,
                  reps: int = 5) -> dict:
    """Seconds the pool's matmuls take on this machine, two ways:

    * ``sgemm_floor_s``: all of them (every target tile x every source block of the search),
      run back to back and alone, the faster way of the two below. This is the floor: a
      shared machine does not keep its short-burst rate for the minutes a large pool takes
      (measured here: 176 GFLOP/s best of five 0.3 s bursts, 147 sustained over 30 s);
    * ``sgemm_burst_s``: the block shape timed alone, best of ``reps`` short runs each way,
      scaled to the pool (the machine's peak rate; a search cannot keep it either).
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    mm = _Matmuls(n_targets, n_sources, dim, topn, budget)

    def best_of(run) -> float:
        run()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        return best

    flops = 2 * n_targets * n_sources * dim
    one = best_of(lambda: mm.one_call(mm.sb))
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(mm.cores) as pool:
        parted = best_of(lambda: mm.in_parts(pool, mm.sb))
        burst = min(one, parted)
        burst_s = flops / (2 * mm.t.shape[0] * mm.sb * dim / burst)
        _, bounds = knn.block_bounds(n_sources, n_targets, topn, budget)
        t0 = time.perf_counter()
        for _ in range(0, n_targets, mm.tb):
            for c0, c1 in bounds:
                if parted <= one:
                    mm.in_parts(pool, c1 - c0)
                else:
                    with threadpool_limits(mm.cores, user_api="blas"):
                        mm.one_call(c1 - c0)
        floor_s = time.perf_counter() - t0
    return {"sgemm_floor_s": round(floor_s, 2), "sgemm_gflops": round(flops / floor_s / 1e9, 1),
            "sgemm_burst_s": round(burst_s, 2), "sgemm_burst_gflops": round(flops / burst_s / 1e9, 1)}


def write_shards(folder: Path, n: int, d: int, shard_rows: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = random_unit(rng, min(n, shard_rows), d)  # shard i: base * a random sign per dim
    paths = []
    for i, r0 in enumerate(range(0, n, shard_rows)):
        rows = min(shard_rows, n - r0)
        vec = base[:rows] * (rng.integers(0, 2, d) * 2 - 1).astype(np.float32) if i else base[:rows]
        p = folder / f"pool-{i:05d}.parquet"
        write_parquet(p, vec, f"s{i:05d}")
        paths.append(p)
        del vec
    return paths


_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from tao_aoi import knn
folder, n_t, d, k, budget = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
tgt = knn.l2_normalize_(np.random.default_rng(1).standard_normal((n_t, d), dtype=np.float32))
t0 = time.perf_counter()
idx, dist = knn.topk_stream(tgt, knn.ParquetShards(folder, normalize=True), k, "cosine",
                            normalized=True, memory_budget=budget)
wall = time.perf_counter() - t0
np.save(sys.argv[7], idx)
# VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's peak across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "peak_rss_gb": int(hwm) / 2**20,
                  "cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime}))
"""


def sharded(args) -> dict:
    import shutil

    root = Path(tempfile.mkdtemp(prefix="bench_knn_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        paths = write_shards(root / "pool", args.sources, args.dim, args.shard_rows)
        write_s = time.perf_counter() - t0
        disk_bytes = sum(p.stat().st_size for p in paths)
        drop_cache(paths)
        read_s, _ = read_floor_s(paths)
        drop_cache(paths)
        gemm = sgemm_floor_s(args.targets, args.sources, args.dim, args.topn, args.budget_mb * 2**20)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(root / "pool"),
                               str(args.targets), str(args.dim), str(args.topn),
                               str(args.budget_mb * 2**20), str(root / "idx.npy")],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        floor = max(gemm["sgemm_floor_s"], read_s)
        result = {
            "mode": "sharded", "machine_cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "targets": args.targets, "sources": args.sources, "dim": args.dim, "topn": args.topn,
            "shards": len(paths), "pool_on_disk_gb": round(disk_bytes / 1e9, 2),
            "write_s": round(write_s, 1),
            "disk_read_floor_s": round(read_s, 2),
            "disk_read_gb_per_s": round(disk_bytes / read_s / 1e9, 2),
            **gemm,
            "stream_wall_s": round(child["wall_s"], 2),
            "stream_peak_rss_gb": round(child["peak_rss_gb"], 2),
            "stream_cpu_user_s": round(child["cpu_user_s"], 1),
            "stream_cpu_sys_s": round(child["cpu_sys_s"], 1),
            "stream_over_floor": round(child["wall_s"] / floor, 2),
            "stream_over_burst_floor": round(child["wall_s"] / max(gemm["sgemm_burst_s"], read_s), 2),
        }
        if args.check:
            # spot check: a few targets against float64 brute force, shard by shard
            idx = np.load(root / "idx.npy")
            tgt = knn.l2_normalize_(np.random.default_rng(1).standard_normal(
                (args.targets, args.dim), dtype=np.float32))
            sample = np.random.default_rng(2).choice(args.targets, min(args.check, args.targets), replace=False)
            best_d = np.full((len(sample), 0), np.inf)
            best_i = np.zeros((len(sample), 0), np.int64)
            t64 = tgt[sample].astype(np.float64)
            src = knn.ParquetShards(root / "pool")
            bounds = [(r0, min(src.n_rows, r0 + 200_000)) for r0 in range(0, src.n_rows, 200_000)]
            for (c0, c1), blk in zip(bounds, src.blocks(bounds)):
                s64 = blk.astype(np.float64)
                s64 /= np.linalg.norm(s64, axis=1, keepdims=True)
                dd = 1.0 - t64 @ s64.T
                d_all = np.concatenate([best_d, dd], axis=1)
                i_all = np.concatenate([best_i, np.broadcast_to(np.arange(c0, c1), dd.shape)], axis=1)
                order = np.lexsort((i_all, d_all), axis=1)[:, :args.topn]
                best_d = np.take_along_axis(d_all, order, axis=1)
                best_i = np.take_along_axis(i_all, order, axis=1)
            src.close()
            result["spot_check_targets"] = int(len(sample))
            result["spot_check_agreement"] = float((best_i == idx[sample]).mean())
        return result
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


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
    ap.add_argument("--sharded", action="store_true",
                    help="stream a pool written as parquet shards on disk (see above)")
    ap.add_argument("--shard-rows", type=int, default=500_000)
    ap.add_argument("--keep", action="store_true", help="keep the --sharded pool on disk")
    args = ap.parse_args()
    if args.sharded:
        result = sharded(args)
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k}: {v}")
        return 0 if result.get("spot_check_agreement", 1.0) == 1.0 else 1

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    src = random_unit(rng, args.sources, args.dim)
    tgt = random_unit(rng, args.targets, args.dim)
    gen_s = time.perf_counter() - t0
    rss_data = peak_rss_gb()

    gemm = sgemm_floor_s(args.targets, args.sources, args.dim, args.topn, args.budget_mb * 2**20)
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
        **gemm,
        "knn_over_sgemm_floor": round(knn_s / gemm["sgemm_floor_s"], 2),
        "knn_over_sgemm_burst": round(knn_s / gemm["sgemm_burst_s"], 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
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
