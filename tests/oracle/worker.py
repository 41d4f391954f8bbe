"""Test-only: NVIDIA's entry modules in one long-lived process, for property tests.

Run with the oracle interpreter and ``stubs/`` on PYTHONPATH. Reads one JSON job per line on
stdin: ``{"category", "action", "spec", "overrides": [...], "cwd", "stable_sort"}``; composes
the config as Hydra does for the module (schema <- spec file <- overrides) and calls the
module's ``main`` with it; answers one JSON line ``{"ok": bool, "error": "Type: message"}``.
Whole command lines (shlex re-split, ``Execution status``) are covered by entrypoint.py.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import sys
import traceback

from entrypoint import PACKAGES

SCHEMAS = {
    ("gap_analysis", "vcn_aoi"): ("nvidia_tao_ds.config.rcca.gap_analysis.vcn_aoi", "GapAnalysisConfig"),
    ("tmm", "nearest_neighbors"): ("nvidia_tao_ds.config.mining.tmm.nearest_neighbors",
                                   "NearestNeighborsConfig"),
    ("embedding", "image_embeddings"): ("nvidia_tao_ds.config.mining.embedding.image_embeddings",
                                        "ImageEmbeddingsConfig"),
}


def compose(category: str, action: str, spec: str, overrides: list[str]):
    from omegaconf import OmegaConf

    from hydra.core.override_parser.overrides_parser import OverridesParser

    mod, name = SCHEMAS[(category, action)]
    cfg = OmegaConf.merge(OmegaConf.structured(getattr(importlib.import_module(mod), name)),
                          OmegaConf.load(spec))
    # Hydra's own grammar for the overrides (``key=`` is "", quoting, types)
    for override in OverridesParser.create().parse_overrides(overrides):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


@contextlib.contextmanager
def stable_sort(on: bool):
    import pandas as pd

    original = pd.DataFrame.sort_values
    if on:
        def patched(self, *args, **kwargs):
            kwargs.setdefault("kind", "stable")
            return original(self, *args, **kwargs)
        pd.DataFrame.sort_values = patched
    try:
        yield
    finally:
        pd.DataFrame.sort_values = original


def run(job: dict) -> dict:
    module = importlib.import_module(f"{PACKAGES[job['category']]}.{job['action']}")
    cwd = os.getcwd()
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    try:
        os.chdir(job.get("cwd") or cwd)
        cfg = compose(job["category"], job["action"], job["spec"], job.get("overrides", []))
        with stable_sort(job.get("stable_sort", False)), contextlib.redirect_stdout(log):
            module.main(cfg)
        return {"ok": True, "error": None, "log": log.getvalue()}
    except Exception as exc:  # noqa: BLE001 - every failure is an answer
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "log": log.getvalue(),
                "traceback": traceback.format_exc()}
    finally:
        logging.getLogger().removeHandler(handler)
        os.chdir(cwd)


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(run(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
