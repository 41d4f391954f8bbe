"""Names shared by the tools, the completion step and the hooks: one place for each.

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

# The container's last line, and its error text for an unreachable recall target
EXECUTION_PASS = "Execution status: PASS"
EXECUTION_FAIL = "Execution status: FAIL"
UNREACHABLE_TEXT = "No threshold achieves"
