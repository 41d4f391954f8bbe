"""Route the weak samples of a gap analysis to the augmentation modules that can use them.

Two modules consume the gaps parquet (SPEC section 3):

* real-image mining (``tao-mine-aoi-images``) can only help a label the source pool
  actually holds, so its subset is the rows whose label occurs in the pool;
* AnomalyGen synthesises defects for a fixed set of labels (overridable).

Labels are compared stripped and upper-cased; the rows keep their original text and
every column (Arrow schema and metadata included, because the subsets are filtered
Arrow tables, not round-tripped through pandas). A label neither module takes is
listed under its own heading and announced with ``MARK_DROPPED_LABELS``: nothing is
dropped quietly.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tao_aoi import atomic, parquet_tools
from tao_aoi.cli import OneLineParser, UsageError
from tao_aoi.contract import MARK_DROPPED_LABELS, ROUTING_ARTIFACTS
from tao_aoi.labels import normalize_label
from tao_aoi.parquet_tools import SAMPLE_KEYS, column_list, csv_header, read_csv

MINING_FILE, ANOMALYGEN_FILE, SUMMARY_FILE = ROUTING_ARTIFACTS
DEFAULT_ANOMALYGEN_LABELS = ("PASS", "EXCESS_SOLDER", "MISSING", "BRIDGE")
MISSING_LABEL = "<missing>"


def norm_label(value) -> str:
    """The comparison key of a label: stripped, upper-cased; null -> ``<missing>``."""
    if value is None:
        return MISSING_LABEL
    try:
        if value != value:  # NaN
            return MISSING_LABEL
    except Exception:
        pass
    text = normalize_label(value)
    return text or MISSING_LABEL


def parse_label_set(text: str) -> tuple[str, ...]:
    labels = sorted({norm_label(x) for x in text.split(",") if x.strip()})
    if not labels:
        raise UsageError("--anomalygen-labels is empty; give a comma-separated list "
                         "such as PASS,EXCESS_SOLDER,MISSING,BRIDGE")
    return tuple(labels)


def _columns_of(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".csv":
        return csv_header(path, "pool file")
    return list(pq.read_schema(path).names)


def read_table(path: Path, what: str, columns: list[str] | None = None):
    """Read a parquet or CSV file as an Arrow table; UsageError on anything unreadable."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return parquet_tools.read_table(path, what=what, columns=columns)
    if suffix != ".csv":
        raise UsageError(f"{what} must be a .parquet or .csv file, got {path.name}")
    # labels stay text ("007" is not 7); only the needed columns when asked
    df = read_csv(path, what, dtype={"label": str}, usecols=columns)
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:  # a column of mixed types
        raise UsageError(f"cannot read {what} {path}: {type(exc).__name__}") from None


@dataclass
class LabelRoute:
    label: str                 # normalised comparison key
    rows: int
    samples: int | None
    mining: bool
    anomalygen: bool
    spellings: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> bool:
        return not (self.mining or self.anomalygen)

    def line(self) -> str:
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        return f"{self.label}: {self.rows} (mining={yn(self.mining)}, anomalygen={yn(self.anomalygen)})"


@dataclass
class Routing:
    total_rows: int
    total_samples: int | None
    mining_rows: int
    mining_samples: int | None
    anomalygen_rows: int
    anomalygen_samples: int | None
    labels: list[LabelRoute]
    anomalygen_labels: tuple[str, ...]
    pool_labels: tuple[str, ...] | None   # None = no pool given

    @property
    def dropped(self) -> list[LabelRoute]:
        return [r for r in self.labels if r.dropped]


def _count_samples(df) -> int | None:
    if not all(k in df.columns for k in SAMPLE_KEYS):
        return None
    return int(df[list(SAMPLE_KEYS)].drop_duplicates().shape[0])


def route_table(gaps, pool_labels: set[str] | None, anomalygen_labels: Sequence[str]):
    """Return ``(routing, mining_table, anomalygen_table)`` for an Arrow gaps table."""
    import pyarrow as pa

    for col in ("filepath", "label"):
        if col not in gaps.column_names:
            raise UsageError(f"gaps file has no '{col}' column (columns: "
                             f"{column_list(gaps.column_names)})")
    ag = set(anomalygen_labels)
    pool = set(pool_labels) if pool_labels is not None else set()
    keys_present = [k for k in SAMPLE_KEYS if k in gaps.column_names]
    df = gaps.select(["label", *keys_present]).to_pandas()
    # normalise each distinct label once, not once per row
    uniques = df["label"].drop_duplicates()
    keys = {v: norm_label(v) for v in uniques if v is not None and v == v}
    df["_key"] = df["label"].map(keys).fillna(MISSING_LABEL)
    mining_mask = df["_key"].isin(pool).to_numpy()
    ag_mask = df["_key"].isin(ag).to_numpy()

    routes = []
    for key, part in df.groupby("_key", sort=True):
        spellings = sorted({str(v) for v in part["label"].dropna().unique()})
        routes.append(LabelRoute(label=key, rows=len(part), samples=_count_samples(part),
                                 mining=key in pool, anomalygen=key in ag,
                                 spellings=spellings))
    routing = Routing(
        total_rows=len(df), total_samples=_count_samples(df),
        mining_rows=int(mining_mask.sum()), mining_samples=_count_samples(df[mining_mask]),
        anomalygen_rows=int(ag_mask.sum()), anomalygen_samples=_count_samples(df[ag_mask]),
        labels=routes, anomalygen_labels=tuple(sorted(ag)),
        pool_labels=tuple(sorted(pool)) if pool_labels is not None else None)
    return routing, gaps.filter(pa.array(mining_mask, pa.bool_())), \
        gaps.filter(pa.array(ag_mask, pa.bool_()))


def _count_text(rows: int, samples: int | None) -> str:
    return f"{rows} rows" + (f", {samples} samples" if samples is not None else "")


def summary_text(r: Routing, gaps_path: Path, pool_path: Path | None, out_dir: Path) -> str:
    lines = ["Routing summary (tao-route-visual-changenet-samples)",
             f"gaps: {gaps_path}"]
    if pool_path is None:
        lines.append("pool: none")
    else:
        lines.append(f"pool: {pool_path} ({len(r.pool_labels or ())} labels: "
                     f"{', '.join(r.pool_labels or ()) or 'none'})")
    lines.append(f"anomalygen labels: {', '.join(r.anomalygen_labels)}")
    lines.append("counting: 'rows' are gaps-parquet rows (one per sample x lighting); "
                 + ("'samples' are unique (input_path, object_name) pairs"
                    if r.total_samples is not None else
                    "no input_path/object_name columns, so samples are not counted"))
    lines.append("")
    lines.append(f"total: {_count_text(r.total_rows, r.total_samples)}")
    lines.append(f"mining subset: {_count_text(r.mining_rows, r.mining_samples)} -> "
                 f"{out_dir / MINING_FILE}")
    lines.append(f"anomalygen subset: {_count_text(r.anomalygen_rows, r.anomalygen_samples)} -> "
                 f"{out_dir / ANOMALYGEN_FILE}")
    if pool_path is None:
        lines.append("note: POOL MISSING -- no source pool was given, so the mining subset is "
                     "empty (same columns as the gaps file). Pass --pool to route to mining.")
    lines.append("")
    lines.append("per label (count = rows, one per sample x lighting):")
    lines.extend(route.line() for route in r.labels)
    if r.total_samples is not None:
        lines.append("")
        lines.append("per label (unique samples):")
        lines.extend(f"{route.label}: {route.samples}" for route in r.labels)
    merged = [route for route in r.labels if len(route.spellings) > 1]
    if merged:
        lines.append("")
        lines.append("label spellings merged (compared stripped and upper-cased; rows keep the original):")
        lines.extend(f"{route.label}: {' | '.join(repr(s) for s in route.spellings)}"
                     for route in merged)
    lines.append("")
    lines.append("dropped labels (routed to neither module):")
    if r.dropped:
        lines.append(dropped_marker_line(r))
        lines.extend(f"{route.label}: {_count_text(route.rows, route.samples)}"
                     for route in r.dropped)
    else:
        lines.append("none")
    return "\n".join(lines) + "\n"


def dropped_marker_line(r: Routing) -> str:
    names = ", ".join(f"{route.label} ({route.rows} rows)" for route in r.dropped)
    return (f"{MARK_DROPPED_LABELS} routed to neither mining nor AnomalyGen: {names}. "
            "Report them in the Dropped Labels section; do not drop them silently.")


def to_json(r: Routing, gaps_path: Path, pool_path: Path | None, out_dir: Path) -> dict:
    return {
        "gaps": str(gaps_path), "pool": str(pool_path) if pool_path else None,
        "pool_missing": pool_path is None,
        "anomalygen_labels": list(r.anomalygen_labels),
        "pool_labels": list(r.pool_labels) if r.pool_labels is not None else None,
        "total_rows": r.total_rows, "total_samples": r.total_samples,
        "mining": {"rows": r.mining_rows, "samples": r.mining_samples,
                   "path": str(out_dir / MINING_FILE)},
        "anomalygen": {"rows": r.anomalygen_rows, "samples": r.anomalygen_samples,
                       "path": str(out_dir / ANOMALYGEN_FILE)},
        "summary": str(out_dir / SUMMARY_FILE),
        "labels": [{"label": x.label, "rows": x.rows, "samples": x.samples,
                    "mining": x.mining, "anomalygen": x.anomalygen,
                    "spellings": x.spellings} for x in r.labels],
        "dropped_labels": [x.label for x in r.dropped],
    }


def write_outputs(out_dir: Path, mining, anomalygen, summary: str) -> None:
    """Write the three artifacts all-or-nothing: every temp file is complete before any rename."""
    import pyarrow.parquet as pq

    with atomic.atomic_paths(out_dir / MINING_FILE, out_dir / ANOMALYGEN_FILE,
                      out_dir / SUMMARY_FILE) as (tmp_m, tmp_a, tmp_s):
        pq.write_table(mining, tmp_m)
        pq.write_table(anomalygen, tmp_a)
        tmp_s.write_text(summary, encoding="utf-8")


def _remove_stale(out_dir: Path) -> None:
    """A failed run takes the older set away whole (one commit), so it is not read as this run's."""
    with atomic.atomic_paths(remove=[out_dir / name for name in ROUTING_ARTIFACTS]):
        pass


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="route_samples.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Split the weak samples of a gap analysis (kpi_gaps.parquet) between the two\n"
            "augmentation modules. Rows whose label the source pool holds go to real-image\n"
            "mining (mining_gaps.parquet); rows whose label AnomalyGen can synthesise go to\n"
            "anomalygen_gaps.parquet. A row may go to both. Labels are compared stripped and\n"
            "upper-cased; rows keep their original text and every column. Labels routed to\n"
            "neither module are listed in routing_summary.txt and flagged on the output."),
        epilog=(
            "example:\n"
            "  TS=$(date +%Y-%m-%d_%H%M%S)\n"
            "  python3 scripts/route_samples.py --gaps exp/rca_results/$RCA_TS/kpi_gaps.parquet \\\n"
            "      --pool pool.csv --out exp/rca_results/$RCA_TS/routing_results/$TS\n\n"
            "Without --pool the mining subset is written empty (same columns) and the summary\n"
            "says the pool was missing. Counts are given in rows (one per sample x lighting)\n"
            "and, when input_path/object_name exist, in unique samples."))
    p.add_argument("--gaps", required=True, type=Path,
                   help="gaps parquet (or CSV) with at least filepath and label columns")
    p.add_argument("--pool", type=Path, default=None,
                   help="source pool (.csv or .parquet) with a label column; optional")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    p.add_argument("--anomalygen-labels", default=",".join(DEFAULT_ANOMALYGEN_LABELS),
                   help="comma-separated labels AnomalyGen handles (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout instead of the text summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    out_dir = args.out.resolve()
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out exists and is not a folder: {out_dir}")
        labels = parse_label_set(args.anomalygen_labels)
        gaps_path = args.gaps.resolve()
        atomic.settle(gaps_path.parent)  # finish a gap-analysis set a killed run committed
        gaps = read_table(gaps_path, "gaps file")
        pool_path = None
        pool_labels = None
        if args.pool is not None:
            pool_path = args.pool.resolve()
            if pool_path.is_file() and pool_path.suffix.lower() in (".csv", ".parquet", ".pq"):
                try:
                    names = _columns_of(pool_path)
                except UsageError:
                    raise
                except Exception as exc:
                    raise UsageError(f"cannot read pool file {pool_path}: {exc}") from exc
                if "label" not in names:
                    raise UsageError(f"pool file has no 'label' column (columns: "
                                     f"{column_list(names)}); routing to "
                                     "mining needs the labels the pool holds")
            pool = read_table(pool_path, "pool file", columns=["label"])
            pool_labels = {norm_label(v) for v in pool.column("label").to_pylist()} - {MISSING_LABEL}
        routing, mining, anomalygen = route_table(gaps, pool_labels, labels)
    except UsageError:
        if out_dir.is_dir():
            _remove_stale(out_dir)
        raise
    summary = summary_text(routing, gaps_path, pool_path, out_dir)
    write_outputs(out_dir, mining, anomalygen, summary)
    if args.json:
        print(json.dumps(to_json(routing, gaps_path, pool_path, out_dir), indent=2))
        if routing.dropped:  # stdout stays pure JSON; the hook reads stderr too
            print(dropped_marker_line(routing), file=sys.stderr)
    else:
        sys.stdout.write(summary)  # holds the marker line when labels were dropped
    return 0


if __name__ == "__main__":  # pragma: no cover
    from tao_aoi.cli import run_cli
    raise SystemExit(run_cli(main, "route_samples.py"))
