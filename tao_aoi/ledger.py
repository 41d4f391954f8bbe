"""History-aware mining: a ledger of the source images already mined in earlier runs.

The ledger is one table (parquet, or CSV when the file name ends in ``.csv``) with columns
``filepath``, ``run_id``, ``recorded_at`` (UTC ISO-8601). Two commands:

* ``filter``: keep only the mined rows whose filepath is not in the ledger yet (all
  columns of the mined parquet are kept) and write an audit summary: how many are new,
  how many were mined before and in which runs.
* ``record``: append a run's mined filepaths under a run id, atomically. Recording the
  same run id again with the same files changes nothing; with different files it is
  refused unless ``--replace``.

Concurrency: ``record`` is a read-modify-write. It holds an exclusive ``fcntl.flock`` on a
sidecar ``.<ledger name>.lock`` (kept beside the ledger, never deleted, so every writer
locks the same inode) from reading the ledger until the new one has been renamed into
place (temp file + fsync + ``os.replace``): parallel ``record`` calls queue up and every row
of every run survives. Readers (``filter``) take no lock: they see the old or the new file,
never half of one. A writer waits up to ``LOCK_TIMEOUT_S`` and then exits 2.

Filepaths are matched after ``os.path.normpath`` (``a/./b.jpg`` == ``a/b.jpg``); the
mined parquet may come from the container or the local runner (only ``filepath`` is needed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from tao_aoi.cli import OneLineParser, UsageError, one_line

PROG = "mining_ledger.py"
LOCK_TIMEOUT_S = 300.0
LEDGER_COLUMNS = ("filepath", "run_id", "recorded_at")


def _norm(path) -> str:
    return os.path.normpath(str(path))


def read_mined(path: str | Path):
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"mined parquet not found: {p}")
    try:
        df = pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    except Exception as exc:
        raise UsageError(f"cannot read {p}: {one_line(exc)}") from None
    if "filepath" not in df.columns:
        raise UsageError(f"{p} has no 'filepath' column (columns: {', '.join(map(str, df.columns))})")
    if df["filepath"].isna().any():
        raise UsageError(f"{p} has rows without a filepath")
    return df


def read_ledger(path: str | Path):
    """The ledger as a DataFrame (empty with the ledger columns when the file does not exist)."""
    import pandas as pd

    if not str(path).strip():
        # Path("") is ".": an empty --ledger must not read the current folder as a dataset
        raise UsageError("--ledger is empty: give the ledger file (.parquet or .csv)")
    p = Path(path)
    if not p.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})
    if not p.is_file():
        raise UsageError(f"ledger {p} is not a file")
    try:
        df = pd.read_csv(p, dtype=str) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    except Exception as exc:
        raise UsageError(f"cannot read ledger {p}: {one_line(exc)}") from None
    missing = [c for c in LEDGER_COLUMNS if c not in df.columns]
    if missing:
        raise UsageError(f"{p} is not a mining ledger: missing column(s) {', '.join(missing)}")
    return df[list(LEDGER_COLUMNS)].astype(str)


def lock_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def ledger_lock(path: str | Path, timeout: float = LOCK_TIMEOUT_S):
    """Hold the ledger's exclusive lock (``fcntl.flock`` on the sidecar lock file)."""
    from tao_aoi import locks

    return locks.exclusive(lock_path(path), timeout, f"ledger {path}")


def write_ledger(df, path: str | Path) -> None:
    from tao_aoi import atomic

    p = Path(path)
    with atomic.atomic_path(p) as tmp:
        if p.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def filter_novel(mined, ledger) -> tuple[object, dict]:
    """(rows of ``mined`` not in the ledger, audit dict)."""
    runs_of: dict[str, list[str]] = {}
    for fp, run in zip(ledger["filepath"], ledger["run_id"]):
        runs = runs_of.setdefault(_norm(fp), [])
        if run not in runs:
            runs.append(run)
    keys = mined["filepath"].map(_norm)
    seen = keys.map(lambda k: k in runs_of)
    novel = mined[~seen.to_numpy()]
    per_run: Counter = Counter()
    for k in set(keys[seen.to_numpy()]):
        for run in runs_of[k]:
            per_run[run] += 1
    audit = {
        "mined": int(len(mined)),
        "unique_mined": int(keys.nunique()),
        "new": int(len(novel)),
        "already_mined": int(seen.sum()),
        "already_mined_by_run": dict(sorted(per_run.items())),
        "ledger_runs": int(ledger["run_id"].nunique()),
        "ledger_files": int(ledger["filepath"].map(_norm).nunique()),
    }
    return novel, audit


def audit_text(audit: dict, mined_path, ledger_path, out_path) -> str:
    lines = [
        "mining ledger filter",
        f"mined: {mined_path} ({audit['mined']} rows)",
        f"ledger: {ledger_path} ({audit['ledger_files']} files from {audit['ledger_runs']} runs)",
        f"output: {out_path}",
        f"new: {audit['new']}",
        f"already_mined: {audit['already_mined']}",
    ]
    if audit["already_mined_by_run"]:
        lines.append("already_mined_by_run (a file mined in several runs counts in each):")
        lines += [f"  {run}: {n}" for run, n in audit["already_mined_by_run"].items()]
    return "\n".join(lines) + "\n"


def record_run(mined, ledger, run_id: str, replace: bool = False,
               now: datetime | None = None) -> tuple[object, str]:
    """(new ledger, what happened). Idempotent for the same run id and the same files."""
    import pandas as pd

    if not run_id or not str(run_id).strip():
        raise UsageError("--run-id must not be empty")
    files = sorted({_norm(p) for p in mined["filepath"]})
    mine = ledger[ledger["run_id"] == run_id]
    if len(mine):
        if sorted(set(mine["filepath"].map(_norm))) == files:
            return ledger, f"run {run_id} is already recorded with the same {len(files)} files; ledger unchanged"
        if not replace:
            raise UsageError(f"run id {run_id!r} is already in the ledger with a different set of "
                             f"files ({len(mine)} recorded, {len(files)} now); use a new run id "
                             f"or --replace")
        ledger = ledger[ledger["run_id"] != run_id]
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = pd.DataFrame({"filepath": files, "run_id": [str(run_id)] * len(files),
                         "recorded_at": [stamp] * len(files)})
    out = pd.concat([ledger, rows], ignore_index=True) if len(ledger) else rows
    verb = "replaced" if len(mine) else "recorded"
    return out.astype(str), f"{verb} {len(files)} files under run {run_id}; ledger now holds {len(out)} rows"


_DESCRIPTION = """\
Keep a ledger of the source images mined in earlier iterations, so the next iteration
adds only novel images.
  filter: write the mined rows whose filepath is not in the ledger (+ an audit text
          <out stem>_ledger_audit.txt: how many are new, how many already mined, by run)
  record: append this run's mined filepaths to the ledger under --run-id (atomic;
          recording the same run again is a no-op)
The ledger is a parquet (or a CSV when its name ends in .csv) with columns filepath,
run_id, recorded_at. A missing ledger counts as empty."""

_EPILOG = """\
example (after tmm nearest_neighbors wrote $R/mined.parquet):
  python3 scripts/mining_ledger.py filter --mined $R/mined.parquet \\
      --ledger $W/mining_ledger.parquet --out $R/novel.parquet
  python3 scripts/mining_ledger.py record --mined $R/novel.parquet \\
      --ledger $W/mining_ledger.parquet --run-id $(basename $R)
Exit codes: 0 done, 2 bad input (nothing written)."""


def main(argv: Sequence[str] | None = None) -> int:
    from tao_aoi import atomic

    parser = OneLineParser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    f = sub.add_parser("filter", help="keep only filepaths not in the ledger")
    r = sub.add_parser("record", help="append a run's mined filepaths to the ledger")
    for p in (f, r):
        p.add_argument("--mined", required=True, help="mined parquet (needs a filepath column)")
        p.add_argument("--ledger", required=True, help="ledger parquet or .csv (created by record)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    f.add_argument("--out", required=True, help="where the novel rows are written (parquet)")
    r.add_argument("--run-id", required=True, help="identifier of this mining run (e.g. its timestamp)")
    r.add_argument("--replace", action="store_true",
                   help="replace the files already recorded under this run id")
    args = parser.parse_args(argv)

    mined = read_mined(args.mined)
    if args.command == "record":
        if not args.run_id.strip():
            raise UsageError("--run-id must not be empty")
        read_ledger(args.ledger)  # a broken ledger is refused before its lock file is made
        with ledger_lock(args.ledger):          # read-modify-write under the lock
            ledger = read_ledger(args.ledger)
            new_ledger, message = record_run(mined, ledger, args.run_id, replace=args.replace)
            if new_ledger is not ledger:
                write_ledger(new_ledger, args.ledger)
        if args.json:
            print(json.dumps({"ledger": str(args.ledger), "rows": int(len(new_ledger)),
                              "message": message}, sort_keys=True))
        else:
            print(message)
        return 0
    ledger = read_ledger(args.ledger)
    if args.command == "filter":
        out = Path(args.out)
        if out.resolve() in (Path(args.mined).resolve(), Path(args.ledger).resolve()):
            raise UsageError("--out must differ from --mined and --ledger")
        novel, audit = filter_novel(mined, ledger)
        audit_path = out.with_name(out.stem + "_ledger_audit.txt")
        with atomic.atomic_path(out) as tmp:
            novel.to_parquet(tmp, index=False)
        text = audit_text(audit, args.mined, args.ledger, out)
        atomic.write_text(audit_path, text)
        if args.json:
            print(json.dumps({**audit, "out": str(out), "audit": str(audit_path)}, sort_keys=True))
        else:
            sys.stdout.write(text)
            print(f"audit: {audit_path}")
        return 0
    raise AssertionError(args.command)  # argparse allows only filter and record
