#!/usr/bin/env python3
"""Benchmark `embedding image_embeddings` end to end: JPEG files on disk -> parquet.

Writes N synthetic JPEGs, a parquet listing them, then runs the action (decode in worker
threads, preprocess, encode, write) and reports images/s, the device and peak RSS.

Encoders measured (no weights can be downloaded on the build machine):
  * a randomly initialised SigLIP of the real architecture, built locally:
    --arch tiny (hidden 32, 2 layers, 32 px) or --arch base (siglip-base-patch16-224
    shapes: hidden 768, 12 layers, 224 px, patch 16: realistic compute, random weights);
  * the weight-free baseline encoder;
  * --model-path <HF id or snapshot dir> for real weights (e.g. on a GPU box).
Examples:
  python3 benchmarks/bench_embeddings.py --images 256
  flock /tmp/heavy.lock python3 benchmarks/bench_embeddings.py --arch base --images 128
  python3 benchmarks/bench_embeddings.py --model-path google/siglip-base-patch16-224 --images 2000
  python3 benchmarks/bench_embeddings.py --images 512 --cache    # + cache cold/warm runs
  python3 benchmarks/bench_embeddings.py --images 512 --ray      # + engine=ray on a local Ray

--ray: every encoder also runs with engine=ray on a Ray started here with all CPUs (GPUs when
present), the same images, and checks the output is byte-identical to engine=local. Ray's
time includes starting the actor pool (one encoder load per actor) for the run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tao_aoi.data_services import image_embeddings  # noqa: E402

ARCHS = {"tiny": dict(hidden=32, layers=2, heads=2, image_size=32, patch=8),
         "base": dict(hidden=768, layers=12, heads=12, image_size=224, patch=16)}


def make_jpegs(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    base = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype("uint8")
    paths = []
    for i in range(n):
        # smooth-ish content so JPEG sizes are realistic, different per image
        im = Image.fromarray(np.roll(base, i, axis=1)).resize(size, Image.BILINEAR)
        p = folder / f"img_{i:05d}.jpg"
        im.save(p, quality=90)
        paths.append(str(p))
    return paths


def run_case(name: str, cfg: dict, n: int) -> dict:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        image_embeddings.run(cfg)
    wall = time.perf_counter() - t0  # includes model loading
    summary = dict(line.split(": ", 1) for line in out.getvalue().splitlines() if ": " in line)
    row = {"encoder": name, "engine": cfg.get("engine", "local"), "device": summary.get("device"),
           "dim": int(summary["dim"]), "images": n, "batch_size": cfg["batch_size"],
           "num_workers": cfg["num_workers"], "encode_s": float(summary["seconds"]),
           "images_per_s": float(summary["images_per_s"]), "wall_with_model_load_s": round(wall, 2)}
    if "engine" in summary:
        row["how"] = summary["engine"]
    return row


def start_ray() -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="warning")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", default="256x256", help="JPEG size WxH")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="tiny", help="random SigLIP shape")
    ap.add_argument("--model", choices=["SigLIP", "CLIP"], default="SigLIP",
                    help="family of --model-path")
    ap.add_argument("--model-path", help="real weights: HF id (cached) or snapshot folder")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cache", action="store_true",
                    help="also time embedding_cache: a cold run, then a warm rerun (embeds none)")
    ap.add_argument("--ray", action="store_true",
                    help="also run every encoder with engine=ray on a local Ray (all CPUs)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    results = []
    with tempfile.TemporaryDirectory() as wd:
        wd = Path(wd)
        paths = make_jpegs(wd / "imgs", args.images, (w, h))
        import pandas as pd

        pd.DataFrame({"filepath": paths, "label": ["PASS"] * len(paths)}).to_parquet(wd / "in.parquet")
        base_cfg = {"input_parquet": str(wd / "in.parquet"), "model_config_path": None,
                    "batch_size": args.batch_size, "num_workers": args.num_workers,
                    "device": args.device}
        if args.model_path:
            cases = [(f"{args.model} {args.model_path}", args.model, args.model_path)]
        else:
            from tao_aoi.encoders import save_random_model

            folder = save_random_model("SigLIP", wd / "siglip", **ARCHS[args.arch])
            cases = [(f"SigLIP random-{args.arch}", "SigLIP", str(folder))]
        if not args.skip_baseline:
            cases.append(("baseline", "baseline", "unused"))
        if args.ray:
            start_ray()
        for i, (name, model, path) in enumerate(cases):
            cfg = dict(base_cfg, model=model, model_path=path, output_parquet=str(wd / f"out{i}.parquet"))
            results.append(run_case(name, cfg, args.images))
            if args.ray:
                out = wd / f"out{i}_ray.parquet"
                r = run_case(name, dict(cfg, engine="ray", output_parquet=str(out)), args.images)
                r["identical_to_local"] = out.read_bytes() == Path(cfg["output_parquet"]).read_bytes()
                results.append(r)
            if args.cache:
                # embedding_cache: a cold run (embeds all, fills the cache), then a warm rerun
                for phase in ("cold", "warm"):
                    out = wd / f"out{i}_cache_{phase}.parquet"
                    c = dict(cfg, output_parquet=str(out), embedding_cache=str(wd / "cache"))
                    r = run_case(f"{name} cache-{phase}", c, args.images)
                    stats = json.loads(image_embeddings.summary_json_path(out).read_text())
                    r.update(embedded=stats["embedded"], reused_from_cache=stats["reused_from_cache"])
                    if phase == "warm":
                        r["identical_to_uncached"] = out.read_bytes() == Path(cfg["output_parquet"]).read_bytes()
                    results.append(r)
    if args.ray:
        import ray

        ray.shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    meta = {"cpus": os.cpu_count(), "jpeg_size": args.size, "peak_rss_gb": round(peak, 2)}
    if args.json:
        print(json.dumps({"machine": meta, "results": results}))
    else:
        print(" ".join(f"{k}={v}" for k, v in meta.items()))
        for r in results:
            print(" ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
