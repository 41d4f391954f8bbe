"""Demo stage 4: the next iteration, and what changed.

A "retrained" model is simulated on the same test set: samples routed to mining last round
and most misclassified ones score better, a few others drift. The RCA recipe runs again on
that experiment, then ``scripts/compare_iterations.py`` answers which misses are fixed, which
remain and what regressed, and the results page is rebuilt. Nothing is opened; the paths of
the ``index.html`` pages are printed.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np

from tao_aoi.cli import RunFailed
from tao_aoi.demo import DemoContext


def _retrained_csv(src: Path, dest: Path, threshold: float, seed: int) -> None:
    """Scores of a model that learnt from last round: most wrong-side samples move across the
    threshold, a few correct ones drift over it (regressions)."""
    import pandas as pd

    df = pd.read_csv(src)
    rng = np.random.default_rng(seed + 1)
    defect = df["label"].astype(str).str.strip().str.upper() != "PASS"
    score = df["siamese_score"].to_numpy(dtype=float)
    wrong = np.where(defect, score <= threshold, score > threshold)
    fix = wrong & (rng.random(len(df)) < 0.85)
    score = np.where(fix & defect, np.maximum(score, threshold) + 0.2, score)
    score = np.where(fix & ~defect, np.minimum(score, threshold) * 0.5, score)
    drift = ~wrong & (rng.random(len(df)) < 0.02)
    score = np.where(drift, np.clip(1.0 - score, 0.001, 0.999), score)
    df["siamese_score"] = np.round(np.clip(score, 0.0005, 0.9995), 6)
    dest.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest, index=False)


def run_stage(ctx: DemoContext) -> None:
    import json

    from tao_aoi.demo import rca

    if ctx.rca_dir is None:
        raise RunFailed("the iteration stage needs the first RCA run")
    before = ctx.rca_dir
    threshold = json.loads((before / "metrics.json").read_text(encoding="utf-8"))["threshold"]
    exp2 = ctx.workspace / "experiment_iter2"
    exp2.mkdir()
    shutil.copy2(ctx.train_yaml, exp2 / "train.yaml")
    _retrained_csv(ctx.experiment_dir / "inference" / "inference.csv",
                   exp2 / "inference" / "inference.csv", threshold, ctx.seed)
    ctx2 = replace(ctx, experiment_dir=exp2, train_yaml=exp2 / "train.yaml", summary=[])
    recipe = rca.run_recipe(ctx2)
    if recipe["returncode"] != 0 or recipe["rca_dir"] is None:
        raise RunFailed(f"the second RCA run failed (exit {recipe['returncode']}): "
                        f"{recipe['stderr'][-500:]}")
    after = recipe["rca_dir"]
    proc = subprocess.run([ctx.python, str(ctx.bank_root / "scripts" / "compare_iterations.py"),
                           str(before), str(after)], env=ctx.env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunFailed(f"compare_iterations.py failed: {proc.stderr.strip()[-500:]}")
    summary = json.loads((after / "iteration_compare.json").read_text(encoding="utf-8"))
    counts = {k: len(summary.get(k, [])) for k in ("fixed", "regressed", "still_misclassified")}
    print(f"== next iteration: {counts['fixed']} fixed, {counts['regressed']} regressed, "
          f"{counts['still_misclassified']} still misclassified "
          f"({after / 'iteration_compare.md'})")
    from tao_aoi import html_index

    pages = html_index.refresh(after) + html_index.refresh(before)
    ctx.summary += [f"second iteration: {after}",
                    f"comparison:       {after / 'iteration_compare.md'}"]
    ctx.summary += [f"index.html:       {p}" for p in dict.fromkeys(pages)]
