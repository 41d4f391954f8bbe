"""Names shared by the tools, the completion step and the hooks: one place for each.

Artifact and folder names, the container's columns and texts, report sections and word
ranges, the markers tools print and the script-check hook matches, metadata keys, the family
tables. The writer and the checker of a fact import it from here, so they cannot drift apart.
Standard library only and imports nothing of the project (a leaf), so every module, hooks
included, can take its names from here.
"""
from __future__ import annotations

# gap_analysis vcn_aoi: what the container writes into results_dir ...
GAPS_FILE = "kpi_gaps.parquet"
BREAKDOWN_FILE = "weak_samples_breakdown.txt"
THRESHOLD_FILE = "threshold.txt"  # only when the threshold was swept (threshold < 0)
CONTAINER_GAPS_COLUMNS = ("filepath", "label", "siamese_score", "weakness")
# ... and what this bank adds on either backend (tao_aoi.gap_completion)
METRICS_FILE = "metrics.json"
UNREACHABLE_FILE = "unreachable_kpi.txt"
ADDED_GAPS_COLUMNS = ("input_path", "object_name", "lighting", "misclassified")
# artifacts every finished gap analysis has; threshold.txt in addition after a sweep
RCA_ARTIFACTS = (GAPS_FILE, METRICS_FILE, BREAKDOWN_FILE)
# Every file a gap-analysis run may leave in results_dir: one run's set replaces another's whole.
GAP_RUN_ARTIFACTS = (GAPS_FILE, BREAKDOWN_FILE, THRESHOLD_FILE, METRICS_FILE, UNREACHABLE_FILE)

# The container's last line, and its error text for an unreachable recall target
EXECUTION_PASS = "Execution status: PASS"
EXECUTION_FAIL = "Execution status: FAIL"
UNREACHABLE_TEXT = "No threshold achieves"

# ----------------------------------------------------------------- reports and families

VERDICTS = ("mislabeled", "edge case", "data quality", "systematic")

RCA_SECTIONS = ("Verdict", "Threshold Selection", "Weakness Distribution",
                "Top-K Weakest Samples", "Visual Spot Check", "Per-Label Breakdown",
                "Recommended Actions")
# When unreachable_kpi.txt exists sections 3-6 collapse into one quoting that file.
RCA_UNREACHABLE_SECTIONS = ("Verdict", "Threshold Selection", "Unreachable KPI",
                            "Recommended Actions")
RCA_WORDS = (1000, 1800)

ROUTING_SECTIONS = ("Verdict", "Inputs", "Per-Label Routing Decisions",
                    "Module-Level Summaries", "Dropped Labels", "Recommended Actions")

MINING_SECTIONS = ("Verdict", "Inputs", "Encoder Consistency", "Mining Run",
                   "Per-Label Breakdown", "Output Sanity", "Recommended Actions")
MINING_WORDS = (600, 1200)

REPORT_FILES = {"RCA_Report.md": "rca", "Routing_Report.md": "routing",
                "Mining_Report.md": "mining"}
CONFIG_DIRS = {"rca": "rca_config", "routing": "routing_config", "mining": "mining_config"}
SKILLS = {"rca": "tao-analyze-gaps-visual-changenet",
          "routing": "tao-route-visual-changenet-samples",
          "mining": "tao-mine-aoi-images"}
SESSION_FILE = "claude_session.jsonl"

RCA_UNREACHABLE_FILE = UNREACHABLE_FILE
RCA_IMAGES_DIR = "rca_images"
RCA_SPOT_CHECK_COUNT = 10
# Written by scripts/spot_check.py: which samples it picked (fewer than 10 when a class has <5).
RCA_SPOT_CHECK_JSON = "spot_check.json"
# Also written by scripts/spot_check.py: the one-call overview of all picked samples (every
# lighting + golden) and, under rca_images/samples/, one full-size panel per sample. Neither
# counts as one of the 10 first-lighting copies the report links.
RCA_SPOT_CHECK_SHEET = "spot_check_sheet.png"
# Optional RCA section, checked when present against scripts/compare_iterations.py's JSON
RCA_ITERATION_SECTION = "Change Since Last Iteration"
RCA_ITERATION_JSON = "iteration_compare.json"
RCA_SPOT_CHECK_PANELS = "samples"
ROUTING_ARTIFACTS = ("mining_gaps.parquet", "anomalygen_gaps.parquet", "routing_summary.txt")
MINING_ARTIFACTS = ("target_embeddings.parquet", "source_embeddings.parquet",
                    "mined.parquet", "mining_summary.txt")


def count_words(markdown: str) -> int:
    """Words a reader reads: prose and table cells; not fenced code, table rules or image links."""
    import re

    words = 0
    in_fence = False
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or re.fullmatch(r"\|?[\s:|-]+\|?", stripped or "x"):
            continue
        stripped = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", stripped)
        words += len(re.findall(r"[A-Za-z0-9][\w.%/+-]*", stripped))
    return words


# Markers the tools print (stdout or stderr) and the script-check hook looks for.
# The tools import these constants, so the text printed and the text matched are one fact.
MARK_UNREACHABLE = "UNREACHABLE KPI"
MARK_MISSING_IMAGES = "WARNING [missing-images]"
MARK_DEGENERATE = "WARNING [degenerate-threshold]"
MARK_LABEL_FILTER_NOOP = "WARNING [label-filter-noop]"
MARK_DROPPED_LABELS = "WARNING [dropped-labels]"
MARK_ENCODER_MISMATCH = "WARNING [encoder-mismatch]"
MARK_ENCODER_UNKNOWN = "WARNING [encoder-unknown]"
MARK_BACKEND = "backend:"
ENCODER_METADATA_KEY = "tao_aoi.encoder"
