"""Scenario helpers over the project's own demo machinery (tao_aoi.demo) and skill documents.

Nothing here re-implements a skill: recipes are read from the skill documents, data come
from the demo generators, good report text from the demo's report writers.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import REPO, bank_python, fill_recipe

from tao_aoi.skill_docs import bash_blocks

FEEDBACK = "PostToolUse:{tool} hook additional context:"
WRITE_FEEDBACK = FEEDBACK.format(tool="Write")
BASH_FEEDBACK = FEEDBACK.format(tool="Bash")
RCA_PIECES = ("skills/tao-analyze-gaps-visual-changenet/references/recipe.md",
              "scripts/data_services.py", "scripts/spot_check.py", "scripts/draft_report.py",
              "tao_aoi/demo/synth.py", "tao_aoi/demo/rca.py", "hooks/on_report_written.py")
ROUTING_SKILL = REPO / "skills" / "tao-route-visual-changenet-samples" / "SKILL.md"


# ------------------------------------------------------------------------ RCA
def rca_recipe_command(ws: Path, exp: Path) -> str:
    """The RCA skill's recipe (first bash block of recipe.md) as one Bash call, with its
    inputs exported first as the document says."""
    from tao_aoi.demo.rca import extract_recipe

    exports = (f'export EXP="{exp}" TRAIN_YAML="{exp}/train.yaml" DATASET="{ws}/dataset" '
               f'DS_BACKEND_FORCE=local')
    return exports + "\n" + extract_recipe(REPO)


def new_experiment(ws: Path, name: str, keep_labels: set[str] | None = None) -> Path:
    """A fresh experiment dir (inference CSV + train YAML) over the shared demo dataset;
    with ``keep_labels`` its inference.csv keeps only the rows whose label (stripped,
    upper-cased, as the gap analysis reads it) is in that set."""
    exp = ws / name
    shutil.copytree(ws / "experiment", exp, ignore=shutil.ignore_patterns("*_results"))
    if keep_labels is not None:
        csv_path = exp / "inference" / "inference.csv"
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        column = rows[0].index("label")
        kept = [row for row in rows[1:] if row[column].strip().upper() in keep_labels]
        assert kept, f"no row of {csv_path} has a label in {keep_labels}"
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([rows[0]] + kept)
    return exp


def rca_dir_from(output: str) -> Path:
    m = re.search(r"^RCA results dir: (.+)$", output, re.M)
    assert m, "the recipe did not print its results dir:\n" + output[-3000:]
    return Path(m.group(1).strip())


def run_rca_recipe(ws: Path, exp: Path) -> Path:
    env = dict(os.environ, TAO_SKILL_BANK_PATH=str(REPO), TAO_SKILL_BANK_PYTHON=bank_python())
    proc = subprocess.run(["bash", "-c", rca_recipe_command(ws, exp)], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return rca_dir_from(proc.stdout)


def good_rca_report(rca_dir: Path) -> str:
    """A complete RCA_Report.md for ``rca_dir`` from the demo's draft-filling code, returned
    as text: the scripted Write puts it on disk, so the hook sees a real Write."""
    from tao_aoi.demo.rca import write_report

    path, _ = write_report(rca_dir)
    text = path.read_text(encoding="utf-8")
    path.unlink()
    return text


def unreachable_rca_report(rca_dir: Path) -> str:
    """An abridged RCA_Report.md for an unreachable-KPI run, written the way the check's rules
    say (report_rules.RCA_UNREACHABLE_SECTIONS as ``## <n>. <name>``, the Unreachable KPI
    section quoting unreachable_kpi.txt, Recommended Actions: retrain or relabel)."""
    from tao_aoi.hooks.report_rules import RCA_UNREACHABLE_FILE, RCA_UNREACHABLE_SECTIONS

    quoted = (rca_dir / RCA_UNREACHABLE_FILE).read_text(encoding="utf-8").rstrip()
    threshold = rca_dir / "threshold.txt"
    chosen = (f"threshold.txt holds {threshold.read_text(encoding='utf-8').strip()}."
              if threshold.is_file() else "No threshold was chosen: none reaches the target.")
    bodies = {
        "Verdict": "No threshold reaches the recall target, so the model cannot meet the KPI "
                   "at any operating point with this inference CSV.",
        "Threshold Selection": f"Target min_recall = 1.0. {chosen}",
        "Unreachable KPI": f"{RCA_UNREACHABLE_FILE} says:\n\n"
                           + "\n".join("> " + ln if ln else ">" for ln in quoted.splitlines())
                           + "\n\nThe weakness ranking and the visual spot check were skipped.",
        "Recommended Actions": "1. Relabel or re-export the test set so the CSV holds its defect "
                               "(NO_PASS) samples, then retrain and rerun this analysis.",
    }
    assert list(bodies) == list(RCA_UNREACHABLE_SECTIONS), RCA_UNREACHABLE_SECTIONS
    parts = [f"# RCA Report: unreachable KPI ({rca_dir.name})"]
    parts += [f"## {n}. {name}\n\n{body}" for n, (name, body) in enumerate(bodies.items(), 1)]
    return "\n\n".join(parts) + "\n"


def results_copy(rca_results: Path, name: str) -> Path:
    """A private copy of a results folder (a test may break it)."""
    dest = rca_results.parent / name
    shutil.copytree(rca_results, dest)
    return dest


def drop_section(report: str, name: str) -> str:
    m = re.search(rf"^## \d+\. {re.escape(name)}\n.*?(?=^## )", report, re.S | re.M)
    assert m, f"section {name} not found in the report"
    return report[:m.start()] + report[m.end():]


# ------------------------------------------------------------------------ routing / mining
def routing_command(rca: Path, pool_csv: Path) -> str:
    """The routing skill's Run block with its placeholders filled; prints the output dir."""
    block = bash_blocks(ROUTING_SKILL)[0]
    return fill_recipe(block, {"RCA": str(rca), "pool.csv": str(pool_csv)}) + \
        '\necho "ROUTING_OUT=$OUT"'


def routing_summary_json(rca: Path, pool_csv: Path, route_dir: Path, scratch: Path) -> dict:
    """route_samples.py --json on the same inputs (into ``scratch``), paths mapped to
    ``route_dir``: what the demo's report writer needs, without touching the session's run."""
    proc = subprocess.run([bank_python(), str(REPO / "scripts" / "route_samples.py"),
                           "--gaps", str(rca / "kpi_gaps.parquet"), "--pool", str(pool_csv),
                           "--out", str(scratch), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.replace(str(scratch), str(route_dir)))


def mining_command(ws: Path, targets: Path, pool_csv: Path, out: Path) -> str:
    """The mining skill's reference invocation (first bash block), baseline encoder, local."""
    from tao_aoi.demo.mining import TOPN, recipe_block

    exports = (f'export TARGET_PARQUET="{targets}" POOL="{pool_csv}" OUT="{out}" MODEL=baseline '
               f'TOPN={TOPN} FILTER_BY_LABEL=false WORKSPACE="{ws}" DS_BACKEND_FORCE=local')
    return exports + "\n" + recipe_block(REPO)


def out_dir(output: str, key: str) -> Path:
    m = re.search(rf"^{key}=(.+)$", output, re.M)
    assert m, f"no {key}= line in the output:\n" + output[-3000:]
    return Path(m.group(1).strip())


# ------------------------------------------------------------------------ assertions
def assert_feedback(session, step: int, *needles: str, tool: str = "Write") -> str:
    """The report hook's feedback for step ``step`` (a ``tool`` call: Write, Edit ...) reached
    the model in the NEXT request (and is not an echo of an earlier one)."""
    seen = session.seen_after(step)
    marker = FEEDBACK.format(tool=tool)
    assert marker in seen, f"no report-hook feedback after step {step}:\n{seen[:2000]}"
    feedback = seen[seen.index(marker):]
    for needle in needles:
        assert needle in feedback, f"{needle!r} not in the feedback:\n{feedback[:2000]}"
    if step > 0:
        assert feedback not in session.seen_after(step - 1)
    return feedback


def assert_no_feedback(session, step: int) -> None:
    seen = session.seen_after(step)
    assert "PostToolUse:" not in seen, f"unexpected hook output after step {step}:\n{seen[:3000]}"


def assert_bundle(folder: Path, config_dir: str, skill_dir: str, session) -> str:
    """The report's provenance bundle: config dir with the skill, and this session's
    transcript. Returns the bundled transcript text."""
    config = folder / config_dir
    assert (config / skill_dir / "SKILL.md").is_file(), sorted(config.rglob("*"))[:20]
    bundled = (folder / "claude_session.jsonl").read_text(encoding="utf-8")
    assert session.standin.requests[0].headers.get("X-Claude-Code-Session-Id", "?") in bundled
    return bundled
