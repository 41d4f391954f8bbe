#!/usr/bin/env python3
"""Per-sample mining: mean of the lighting embeddings vs the first lighting, on planted
look-alikes (synthetic embeddings, exact k-NN; no images, no encoder).

Model: a sample has a content vector z (unit, --dim). Lighting l shows it as
normalise(R_l z + sigma * noise_l): R_l is a fixed random rotation per lighting (the
lightings look different but show the same part) and every lighting image has its own
noise. For each of --targets weak target samples, --planted pool samples are look-alikes
(content normalise(z_t + tau * delta)); the rest of the pool (--pool samples) is random
content. Each pool/target sample is combined with tao_aoi.sample_mining.combine (the code
the skill runs) as ``mean`` and as ``first``, then mined with tao_aoi.knn.topk (cosine,
topn = --planted). Printed: recall of the planted look-alikes, and selectivity (unique
mined samples / pool samples) per method and noise level.

Scenario ``onelight`` (--scenario): the defect shows in one lighting only (the last);
the other lightings of a look-alike are random content. ``--lightings shared``: every
lighting shows z in one embedding space (R_l = I), the friendliest case for ``mean``.
Methods: concat (default of the skill), mean, first (see tao_aoi/sample_mining.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tao_aoi import knn, sample_mining  # noqa: E402

LIGHTS = ["L0", "L1", "L2", "L3"]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write(path: Path, views: np.ndarray, prefix: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, n_l, d = views.shape
    fp, ip, obj = [], [], []
    for i in range(n):
        for light in LIGHTS[:n_l]:
            fp.append(f"/m/{prefix}/C{i}_{light}.png")
            ip.append(prefix)
            obj.append(f"C{i}")
    pq.write_table(pa.table({"filepath": fp, "input_path": ip, "object_name": obj,
                             "label": ["X"] * len(fp),
                             "embedding": pa.array(list(views.reshape(-1, d)), pa.list_(pa.float32()))}),
                   path)


def run(args, sigma: float, rng) -> dict:
    d, n_l = args.dim, len(LIGHTS)
    if args.lightings == "rotated":   # each lighting its own random rotation of the content
        rot = [np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32) for _ in range(n_l)]
    else:                             # one embedding space for every lighting
        rot = [np.eye(d, dtype=np.float32)] * n_l

    def views(z):
        out = np.stack([unit(z @ r.T + sigma * rng.standard_normal(z.shape).astype(np.float32) / np.sqrt(d))
                        for r in rot], axis=1)
        return out

    zt = unit(rng.standard_normal((args.targets, d))).astype(np.float32)
    planted = unit(np.repeat(zt, args.planted, 0) + args.tau * unit(
        rng.standard_normal((args.targets * args.planted, d)))).astype(np.float32)
    rest = unit(rng.standard_normal((args.pool - len(planted), d))).astype(np.float32)
    zs = np.concatenate([planted, rest])
    perm = rng.permutation(len(zs))
    zs = zs[perm]
    owner = np.full(len(zs), -1)
    owner[np.argsort(perm)[:len(planted)]] = np.repeat(np.arange(args.targets), args.planted)
    tv, sv = views(zt), views(zs)
    if args.scenario == "onelight":  # look-alikes share content in the last lighting only
        pl = owner >= 0
        noise_z = unit(rng.standard_normal((int(pl.sum()), d))).astype(np.float32)
        for li in range(n_l - 1):
            noise = rng.standard_normal(noise_z.shape).astype(np.float32) / np.sqrt(d)
            sv[pl, li] = unit(noise_z @ rot[li].T + sigma * noise)
    out = {}
    with tempfile.TemporaryDirectory() as wd:
        wd = Path(wd)
        write(wd / "t.parquet", tv, "t")
        write(wd / "s.parquet", sv, "s")
        for how in sample_mining.COMBINE:
            t_tab, _ = sample_mining.combine(wd / "t.parquet", LIGHTS, ".png", how)
            s_tab, _ = sample_mining.combine(wd / "s.parquet", LIGHTS, ".png", how)
            t = np.asarray(t_tab.column("embedding").to_pylist(), np.float32)
            s = np.asarray(s_tab.column("embedding").to_pylist(), np.float32)
            idx, _ = knn.topk(t, s, args.planted, "cosine")
            hit = owner[idx] == np.arange(args.targets)[:, None]
            out[how] = {"recall": round(float(hit.sum()) / (args.targets * args.planted), 4),
                        "selectivity": round(len(np.unique(idx)) / args.pool, 5)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--planted", type=int, default=5)
    ap.add_argument("--pool", type=int, default=5000, help="pool samples (x4 lighting images)")
    ap.add_argument("--tau", type=float, default=0.6, help="look-alike spread around the target")
    ap.add_argument("--sigmas", default="0.5,1.0,1.5,2.0", help="per-lighting noise levels")
    ap.add_argument("--scenario", default="all", choices=("all", "onelight"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lightings", default="rotated", choices=("rotated", "shared"),
                    help="rotated: lighting l shows R_l z (R_l random); shared: R_l = I")
    args = ap.parse_args()
    rows = []
    for sigma in map(float, args.sigmas.split(",")):
        res = run(args, sigma, np.random.default_rng(args.seed))
        flat = {f"{h}_{k}": v for h, r in res.items() for k, v in r.items()}
        rows.append({"scenario": args.scenario, "lightings": args.lightings, "sigma": sigma, **flat})
        print(json.dumps(rows[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
