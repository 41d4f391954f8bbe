"""The mining report check (``Mining_Report.md``): artifacts, one encoder, sections, length.

Standard library only.
"""
from __future__ import annotations

from pathlib import Path

from . import report_rules as rr
from .report_artifacts import encoder_identity, load_artifacts
from .report_markdown import check_words, find_sections


def check_mining(folder: Path, text: str) -> list[str]:
    problems: list[str] = []
    fix = ": rerun that mining step into this folder"
    artifacts = load_artifacts(folder, rr.MINING_ARTIFACTS, problems, fix)
    enc_t = encoder_identity(artifacts["target_embeddings.parquet"], "target_embeddings.parquet", problems)
    enc_s = encoder_identity(artifacts["source_embeddings.parquet"], "source_embeddings.parquet", problems)
    if enc_t is not None and enc_s is not None:
        differ = [k for k in ("model", "model_path", "dim") if enc_t.get(k) != enc_s.get(k)]
        if differ:
            detail = "; ".join(f"{k}: target {enc_t.get(k)!r} vs source {enc_s.get(k)!r}" for k in differ)
            problems.append(f"the two embedding parquets come from different encoders ({detail}): "
                            "re-embed both from the same embedding_spec.yaml and rerun the k-NN; "
                            "mined neighbours across encoders are meaningless.")
    problems += find_sections(text, rr.MINING_SECTIONS)[1]
    check_words(text, rr.MINING_WORDS, "Mining_Report.md", problems)
    return problems
