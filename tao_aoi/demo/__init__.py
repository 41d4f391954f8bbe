"""``make demo``: the whole AOI loop on a synthetic experiment, with no GPU and no network.

Stages (``scripts/demo.py`` runs them in order):

1. ``synth.generate``  -- a deterministic VCN experiment under ``<workspace>``;
2. ``rca.run_stage``   -- runs the RCA skill's own recipe (the first ```bash block of
   ``skills/tao-analyze-gaps-visual-changenet/references/recipe.md``) on the local backend,
   writes ``RCA_Report.md`` from the draft and feeds the report hook the PostToolUse event
   Claude Code would send;
3. ``mining.run_stage`` -- routing and mining, when ``tao_aoi/demo/mining.py`` exists;
4. ``iteration.run_stage`` -- a simulated retrained model, the RCA recipe again, and the
   comparison of the two iterations; prints where each results page (index.html) is.

Contract for a later stage (e.g. ``tao_aoi/demo/mining.py``): expose
``run_stage(ctx: DemoContext) -> None``; read the fields below, write under
``ctx.workspace``, raise ``tao_aoi.cli.RunFailed`` to make the demo exit 1, and append
human-readable lines to ``ctx.summary`` (printed at the end as "where everything is").
Use ``ctx.env()`` for subprocesses so they see the bank and local backend.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DemoContext:
    workspace: Path          # everything the demo writes lives here (mounted workspace)
    experiment_dir: Path     # <workspace>/experiment: inference/inference.csv, train.yaml
    dataset_dir: Path        # <workspace>/dataset: kpi_media_path (image root)
    train_yaml: Path         # <workspace>/experiment/train.yaml
    python: str              # interpreter with the tao_aoi dependencies (sys.executable)
    bank_root: Path          # repository / plugin root (TAO_SKILL_BANK_PATH)
    seed: int = 7
    rca_dir: Path | None = None   # <experiment>/rca_results/<ts>/ once the RCA stage ran
    summary: list[str] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for subprocesses: bank path, bank python, local backend forced."""
        env = dict(os.environ)
        env.update({"TAO_SKILL_BANK_PATH": str(self.bank_root),
                    "TAO_SKILL_BANK_PYTHON": self.python,
                    "DS_BACKEND_FORCE": "local",
                    "PYTHONHASHSEED": "0"})
        env.update(extra)
        return env


MARKER = ".tao_aoi_demo"


def _prepare_workspace(ws: Path) -> None:
    """Start from an empty workspace; only ever delete one the demo created itself."""
    import shutil

    from tao_aoi.cli import UsageError

    if ws.exists():
        if not ws.is_dir():
            raise UsageError(f"--workspace {ws} exists and is not a folder")
        if any(ws.iterdir()) and not (ws / MARKER).is_file():
            raise UsageError(f"--workspace {ws} is not empty and was not made by the demo "
                             f"(no {MARKER}); pick another folder")
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    (ws / MARKER).write_text("created by scripts/demo.py; deleted and rebuilt on every run\n")


def main(argv=None) -> int:
    import argparse
    import importlib.util
    import sys
    import time

    from tao_aoi.cli import OneLineParser

    parser = OneLineParser(
        prog="demo.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the AOI loop end to end on a synthetic VCN experiment, offline and "
                    "on the CPU: generate the experiment, run the RCA skill's recipe (local "
                    "backend), write RCA_Report.md with rule-based demo prose, fire the report "
                    "hook as Claude Code would, then routing and mining when available.",
        epilog="example:\n  python3 scripts/demo.py --workspace /tmp/aoi_demo\n"
               "The workspace is wiped and rebuilt on each run (only if the demo made it).")
    parser.add_argument("--workspace", default="demo_workspace",
                        help="folder for everything the demo writes (default ./demo_workspace)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    if args.seed < 0:  # numpy refuses it, after the workspace was made: say so before
        from tao_aoi.cli import UsageError

        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    start = time.monotonic()
    ws = Path(os.path.abspath(args.workspace))
    _prepare_workspace(ws)

    from tao_aoi.demo import rca, synth

    bank = Path(__file__).resolve().parents[2]
    info = synth.generate(ws, seed=args.seed)
    print(f"== synthetic experiment: {info.rows} inference rows, {info.images} images, "
          f"{len(info.mislabeled)} deliberately mislabeled samples")
    ctx = DemoContext(workspace=ws, experiment_dir=ws / "experiment", dataset_dir=info.dataset_dir,
                      train_yaml=info.train_yaml, python=sys.executable, bank_root=bank,
                      seed=args.seed)
    ctx.summary += [f"workspace:        {ws}",
                    f"inference CSV:    {info.csv_path}",
                    f"train YAML:       {info.train_yaml}",
                    f"dataset:          {info.dataset_dir}"]
    rca.run_stage(ctx)
    if importlib.util.find_spec("tao_aoi.demo.mining") is not None:
        from tao_aoi.demo import mining

        print("== routing and mining (tao_aoi/demo/mining.py)")
        mining.run_stage(ctx)
    else:
        print("note: tao_aoi/demo/mining.py does not exist yet: routing and mining skipped")
    from tao_aoi.demo import iteration

    print("== next iteration and comparison (tao_aoi/demo/iteration.py)")
    iteration.run_stage(ctx)
    print("\n== where everything is")
    for line in ctx.summary:
        print(f"  {line}")
    print(f"demo finished in {time.monotonic() - start:.1f} s")
    return 0
