"""Demo stage 3: route the RCA demo's weak samples, then mine look-alikes from a pool.

Continues where ``tao_aoi.demo.rca`` stops (``ctx.rca_dir`` holds ``kpi_gaps.parquet``):

1. draw a deterministic synthetic source pool (``<workspace>/source_pool/``, a few
   hundred small JPEGs rendered by the RCA demo's own drawing code) with ``pool.csv``;
   it deliberately holds no TOMBSTONE image, so routing has a label to surface;
2. run ``scripts/route_samples.py`` into ``<rca>/routing_results/<ts>/``, write
   ``Routing_Report.md`` and hand the report hook the event Claude Code would send;
3. run the mining skill's recipe (the first bash block of its
   ``references/reference-invocation.md``) with ``MODEL=baseline`` on the local runner,
   write ``Mining_Report.md`` (600-1200 words) and fire the hook again.

The baseline encoder compares thumbnails and colour histograms: good enough to show the
plumbing offline, meaningless for real mining, and both reports say so.
"""
from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tao_aoi.cli import RunFailed
from tao_aoi.demo.rca import check_script_output, check_words, extract_recipe
from tao_aoi import contract as rr
from tao_aoi.labels import label_keys
from tao_aoi.parquet_tools import SAMPLE_KEYS

POOL_DIRNAME = "source_pool"
# Images per label in the synthetic pool. TOMBSTONE is absent on purpose: it is not an
# AnomalyGen label either, so routing must report it as dropped.
POOL_COUNTS = {"PASS": 100, "MISSING": 45, "BRIDGE": 45, "EXCESS_SOLDER": 40, "SHIFT": 50}
RECIPE = Path("skills") / rr.SKILLS["mining"] / "references" / "reference-invocation.md"
TOPN = 5


# ------------------------------------------------------------------ source pool
def make_pool(workspace: Path, seed: int = 7) -> tuple[Path, dict[str, int]]:
    """Write ``source_pool/<label>/*.jpg`` and ``source_pool/pool.csv`` (filepath, label).

    Filepaths are relative to the workspace (the recipe runs from there). Same seed,
    same bytes.
    """
    from tao_aoi.demo import synth

    root = workspace / POOL_DIRNAME
    rng = np.random.default_rng(seed + 1000)
    lights = list(synth.INPUT_MAP)
    rows = []
    for label, count in POOL_COUNTS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            light = lights[i % len(lights)]
            name = f"pool_{label.lower()}_{i:03d}_{light}{synth.IMAGE_EXT}"
            (folder / name).write_bytes(synth.draw_component(label, light, rng))
            rows.append((f"{POOL_DIRNAME}/{label}/{name}", label))
    csv_path = root / "pool.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "label"])
        writer.writerows(rows)
    return csv_path, dict(POOL_COUNTS)


# ------------------------------------------------------------------ helpers
def _timestamp_dir(parent: Path) -> Path:
    """``parent/<YYYY-MM-DD_HHMMSS>`` that does not exist yet (waits a second on a clash)."""
    while True:
        path = parent / time.strftime("%Y-%m-%d_%H%M%S")
        if not path.exists():
            return path
        time.sleep(1.0)


def _session_id(ctx, stage: int) -> str:
    import uuid

    return str(uuid.UUID(int=ctx.seed * 10 + stage))


def _write_report(ctx, stage: int, path: Path, text: str, command: str, output: str) -> None:
    """Write the report, then hand the report hook the PostToolUse(Write) event."""
    from tao_aoi import atomic
    from tao_aoi.demo.rca import check_report

    atomic.write_text(path, text)
    family = rr.REPORT_FILES[path.name]
    if not check_report(ctx, _session_id(ctx, stage), path, text,
                        {"script": command, "stdout": output},
                        prompt=f"Write {path.name} for the demo outputs in {path.parent}."):
        print(f"note: hooks/on_report_written.py is absent: {path.name} not checked or packaged")
    else:
        print(f"== {family}: wrote {path} ({rr.count_words(text)} words); report hook passed, "
              f"packaged {rr.CONFIG_DIRS[family]}/ and {rr.SESSION_FILE}")


def _run(cmd: list[str], ctx, cwd: Path, what: str, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=ctx.env(**env), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-2000:]).strip()
        raise RunFailed(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ routing
def _count_or_na(x: dict, key: str = "samples"):
    return x[key] if x.get(key) is not None else "n/a"


def _routing_verdict(route: dict, dropped: list[dict]) -> str:
    n = _count_or_na
    both = [x["label"] for x in route["labels"] if x["mining"] and x["anomalygen"]]
    verdict = (
        f"The gap analysis left {route['total_rows']} weak rows ({n(route, 'total_samples')} "
        f"unique samples, each expanded over the lightings). {route['mining']['rows']} rows "
        f"({n(route['mining'])} samples) go to real-image mining and "
        f"{route['anomalygen']['rows']} rows ({n(route['anomalygen'])} samples) to AnomalyGen; "
        f"labels {', '.join(both) or 'none'} reach both modules. ")
    if dropped:
        return verdict + ("Label(s) " + ", ".join(f"{x['label']} ({x['rows']} rows)" for x in dropped)
                          + " reach neither module and are listed under Dropped Labels.")
    return verdict + "Every label reaches at least one module."


def _routing_rows(labels: list[dict]) -> list[list]:
    rows = []
    for x in labels:
        why = ["in the pool" if x["mining"] else "not in the pool",
               "AnomalyGen label" if x["anomalygen"] else "not an AnomalyGen label"]
        rows.append([x["label"], x["rows"], _count_or_na(x), "yes" if x["mining"] else "no",
                     "yes" if x["anomalygen"] else "no", "; ".join(why)])
    return rows


def _routing_actions(route: dict, dropped: list[dict]) -> list[str]:
    actions = [f"Run `tao-mine-aoi-images` with `{route['mining']['path']}` as the target parquet."
               if route["mining"]["rows"] else
               "Mining has no targets: provide a source pool whose labels overlap the weak samples."]
    actions.append(f"Queue `{route['anomalygen']['path']}` for AnomalyGen.")
    for x in dropped:
        actions.append(f"{x['label']}: add real {x['label']} images to the source pool (then "
                       "re-route) or collect new data; it cannot be augmented today.")
    return actions


def routing_report(route: dict, route_dir: Path, pool_counts: dict[str, int]) -> str:
    n = _count_or_na
    labels = route["labels"]
    dropped = [x for x in labels if not (x["mining"] or x["anomalygen"])]
    unit = "samples" if route["total_samples"] is not None else "rows"
    pool_desc = ", ".join(f"{k} {v}" for k, v in pool_counts.items())
    dropped_text = "None: every label reached at least one module." if not dropped else "\n".join(
        f"- **{x['label']}**: {x['rows']} rows ({n(x)} samples). The synthetic pool holds no "
        f"{x['label']} image and AnomalyGen does not synthesise it, so no augmentation "
        "path exists yet." for x in dropped)
    return "\n".join([
        f"# Routing Report: demo experiment {route_dir.name}", "",
        "## 1. Verdict", _routing_verdict(route, dropped), "",
        "## 2. Inputs",
        _table(["input", "value"], [
            ["gaps file", f"`{route['gaps']}` ({route['total_rows']} rows, "
                          f"{n(route, 'total_samples')} samples)"],
            ["source pool", f"`{route['pool']}` ({pool_desc})" if route["pool"] else "none"],
            ["AnomalyGen labels", ", ".join(route["anomalygen_labels"]) + " (default)"],
            ["output folder", f"`{route_dir}`"]]), "",
        f"Counts are rows of the gaps parquet (one per sample and lighting) and unique {unit}.", "",
        "## 3. Per-Label Routing Decisions",
        _table(["label", "rows", "samples", "mining", "AnomalyGen", "why"], _routing_rows(labels)), "",
        _spellings(labels), "",
        "## 4. Module-Level Summaries",
        f"**Mining**: {route['mining']['rows']} rows, {n(route['mining'])} samples, labels "
        f"{', '.join(x['label'] for x in labels if x['mining']) or 'none'}; file "
        f"`mining_gaps.parquet`, the target parquet of the mining skill.", "",
        f"**AnomalyGen**: {route['anomalygen']['rows']} rows, {n(route['anomalygen'])} samples, "
        f"labels {', '.join(x['label'] for x in labels if x['anomalygen']) or 'none'}; file "
        "`anomalygen_gaps.parquet`.", "",
        "## 5. Dropped Labels", dropped_text, "",
        "## 6. Recommended Actions",
        "\n".join(f"{i}. {a}" for i, a in enumerate(_routing_actions(route, dropped), 1)), ""])


def _spellings(labels: list[dict]) -> str:
    merged = [x for x in labels if len(x.get("spellings") or []) > 1]
    if not merged:
        return "Every label is written one way in the gaps file."
    return ("Labels are compared stripped and upper-cased, so these spellings were routed "
            "together (the rows keep their original text): " + "; ".join(
                f"{x['label']} as {', '.join(repr(v) for v in x['spellings'])}" for x in merged)
            + ". Fix the spelling at the source so later tools do not split them.")


def run_routing(ctx, pool_csv: Path, pool_counts: dict[str, int]) -> tuple[Path, dict]:
    gaps = ctx.rca_dir / "kpi_gaps.parquet"
    if not gaps.is_file():
        raise RunFailed(f"routing needs {gaps}; the RCA stage did not produce it")
    route_dir = _timestamp_dir(ctx.rca_dir / "routing_results")
    cmd = [ctx.python, str(ctx.bank_root / "scripts" / "route_samples.py"),
           "--gaps", str(gaps), "--pool", str(pool_csv), "--out", str(route_dir), "--json"]
    print(f"== routing: {route_dir}")
    proc = _run(cmd, ctx, ctx.workspace, "route_samples.py")
    command = shlex.join(cmd)
    check_script_output(ctx, _session_id(ctx, 1), command, proc.stdout, proc.stderr, command[:80],
                        expected=(rr.MARK_DROPPED_LABELS,))
    route = json.loads(proc.stdout)
    sys.stdout.write((route_dir / rr.ROUTING_ARTIFACTS[2]).read_text(encoding="utf-8"))
    report = route_dir / "Routing_Report.md"
    _write_report(ctx, 1, report, routing_report(route, route_dir, pool_counts), command,
                  proc.stdout + proc.stderr)
    return route_dir, route


# ------------------------------------------------------------------ mining
def recipe_block(bank_root: Path) -> str:
    return extract_recipe(bank_root, RECIPE)


def _label_counts(df, unique_samples: bool = False) -> dict[str, int] | None:
    """Rows (or unique input_path/object_name samples) per normalised label; None without labels."""
    if "label" not in df.columns:
        return None
    cols = ["label"] + ([c for c in SAMPLE_KEYS if c in df.columns] if unique_samples else [])
    df = df[cols].assign(label=label_keys(df["label"]))
    if unique_samples and len(cols) == 3:
        df = df.drop_duplicates()
    return {str(k): int(v) for k, v in sorted(df["label"].value_counts().items())}


class _MiningFacts:
    """What the mining report says, read once from the run's artifacts."""

    def __init__(self, run: Path, pool_counts: dict[str, int], output: str, workspace: Path):
        import pandas as pd
        import pyarrow.parquet as pq

        from tao_aoi.encoders import read_encoder_identity, same_encoder

        self.run, self.pool_counts = run, pool_counts
        self.enc_t = read_encoder_identity(run / "target_embeddings.parquet") or {}
        self.enc_s = read_encoder_identity(run / "source_embeddings.parquet") or {}
        self.same = same_encoder(self.enc_t, self.enc_s)
        # The target parquet is read once, without its embedding column.
        target_path = run / "target_embeddings.parquet"
        names = pq.read_schema(target_path).names
        self.tdf = pd.read_parquet(target_path, columns=[c for c in ("filepath", "label", *SAMPLE_KEYS)
                                                         if c in names])
        self.targets = _label_counts(self.tdf) or {}
        self.target_samples = _label_counts(self.tdf, unique_samples=True) or {}
        self.mined_df = mined_df = pd.read_parquet(run / "mined.parquet")
        self.mined = _label_counts(mined_df) or {}
        self.n_targets = sum(self.targets.values())
        self.n_mined = len(mined_df)
        self.n_pool = sum(pool_counts.values())
        self.summary = (run / "mining_summary.txt").read_text(encoding="utf-8").strip()
        self.missing_files = [fp for fp in mined_df["filepath"]
                              if not (Path(fp) if Path(fp).is_absolute() else workspace / fp).is_file()]
        self.unique = bool(mined_df["filepath"].is_unique)
        self.backend_line = next((ln.strip() for ln in output.splitlines()
                                  if ln.strip().startswith(rr.MARK_BACKEND)), "backend: local")
        self.for_label, self.cross = self._credited()
        self.rows = self._per_label_rows()
        self.starved = [r[0] for r in self.rows if r[1] and not r[4]]
        self.thin = (min(self.rows, key=lambda r: (r[4] / r[1]) if r[1] else 1e9)[0]
                     if self.rows else "n/a")
        self.dist = (mined_df["best_distance"].describe()
                     if "best_distance" in mined_df.columns else None)

    def _credited(self) -> tuple[dict[str, int], dict[str, int]]:
        """Mined images per label of the target each was nearest to, and those among them
        whose own label differs (cross-label)."""
        mined_df = self.mined_df
        if "nearest_target" not in mined_df.columns:
            return {}, {}
        owner = label_keys(self.tdf.drop_duplicates("filepath").set_index("filepath")["label"])
        served = mined_df["nearest_target"].map(owner)
        for_label = {str(k): int(v) for k, v in served.value_counts().items()}
        cross: dict[str, int] = {}
        if "label" in mined_df.columns:
            own = label_keys(mined_df["label"])
            cross = {str(k): int(v) for k, v in served[own != served].value_counts().items()}
        return for_label, cross

    def _per_label_rows(self) -> list[list]:
        rows = []
        for label in sorted(set(self.targets) | set(self.mined)):
            t = self.targets.get(label, 0)
            m = self.for_label.get(label, self.mined.get(label, 0))
            rows.append([label, t, self.target_samples.get(label, "n/a"),
                         self.pool_counts.get(label, 0), m, self.mined.get(label, 0),
                         self.cross.get(label, 0), f"{m / t:.2f}" if t else "n/a"])
        return rows


def _mining_verdict(f: _MiningFacts) -> str:
    return (
        f"This offline demo run mined {f.n_mined} unique pool images for {f.n_targets} target rows "
        f"(topn {TOPN}, cosine distance) from a pool of {f.n_pool} synthetic images. The plumbing "
        "works end to end: both embedding parquets exist, carry "
        + ("the same encoder identity" if f.same else "DIFFERENT encoder identities")
        + ", and the k-NN step wrote mined.parquet and mining_summary.txt"
        + (", and every mined path exists. " if not f.missing_files else
           f", but {len(f.missing_files)} mined paths are missing on disk. ")
        + "The "
        "result is NOT ready for training, because the run used the weight-free `baseline` "
        "encoder, which compares thumbnails and colour histograms rather than defects. Rerun "
        "the same recipe with SigLIP before feeding anything to a training round.")


def _encoder_text(f: _MiningFacts) -> str:
    enc_t, enc_s = f.enc_t, f.enc_s
    return (
        f"Both embedding steps read the same `embedding_spec.yaml`. The target parquet records "
        f"model `{enc_t.get('model')}`, model_path `{enc_t.get('model_path')}` and dimension "
        f"{enc_t.get('dim')}; the source parquet records model `{enc_s.get('model')}`, "
        f"model_path `{enc_s.get('model_path')}` and dimension {enc_s.get('dim')}. "
        + ("The identities match, so the distances between targets and pool images are "
           "comparable and the k-NN step accepted the pair without an override."
           if f.same else "The identities DIFFER: the mining output is void and must be redone.")
        + " The encoder itself is the baseline one, so consistency here proves only that the "
          "recipe shares one spec across both steps, which is the most common failure in real runs.")


def _per_label_note(f: _MiningFacts) -> str:
    return (
        "Target rows count the target parquet (one row per sample and lighting) and target "
        "samples count unique components. The per-label numbers come from joining the mined "
        "output with the target embeddings: each mined image names the target it was nearest "
        "to, and is credited to that target's label (mined for label). Mined with label counts "
        "the same images by their own pool label, and cross-label counts images whose pool "
        f"label differs from the label of the target they were found for ({sum(f.cross.values())} "
        "in total). "
        "Label filtering was off, so cross-label neighbours were allowed; the synthetic pool is "
        "drawn with the same renderer as the weak samples, which is why they stay rare here. "
        + (f"No image was mined for {', '.join(f.starved)}. " if f.starved else "")
        + f"The thinnest label relative to its targets is {f.thin}.")


def _sanity_text(f: _MiningFacts) -> str:
    dist = f.dist
    return (
        f"mined.parquet holds {f.n_mined} rows; topn x targets is {TOPN * f.n_targets}, far more "
        f"than the {f.n_pool}-image pool can supply, so a smaller mined count is expected and not "
        "a defect: many targets share neighbours, and each shared image is kept once. "
        f"Filepaths are {'unique' if f.unique else 'NOT unique'}; "
        f"{len(f.missing_files)} mined path(s) are missing on disk. "
        f"Columns written: {', '.join(f.mined_df.columns)}. The mined images all come from the "
        "synthetic pool under `source_pool/`, and nothing outside the workspace was read. "
        + (f"Best distances range from {dist['min']:.4f} to {dist['max']:.4f} (median "
           f"{dist['50%']:.4f}). Such small cosine distances are typical of the baseline "
           "encoder on near-identical renders and say nothing about how a real encoder would "
           "rank these images." if dist is not None else ""))


def _mining_actions(thin: str) -> list[str]:
    return [
        "Do not train on this output: rerun the recipe with `MODEL=SigLIP` (the default) on a "
        "machine with the model cached or a GPU container, keeping every other setting.",
        "Once real embeddings exist, sweep `topn` (for example 3, 5, 10) by rerunning only the "
        "k-NN step against the saved embedding parquets, and compare mined counts per label.",
        "Turn on `filter_by_label=true` when cross-label neighbours appear in a visual check; "
        "both parquets carry a label column, so the filter will be applied, not skipped.",
        f"Grow the pool for {thin}, which received the fewest images per target, and add "
        "TOMBSTONE images so that label can be routed to mining at all.",
        "Record accepted runs with `scripts/mining_ledger.py record` so the next iteration "
        "mines only images that were never mined before.",
    ]


def mining_report(run: Path, route: dict, pool_counts: dict[str, int], output: str,
                  workspace: Path) -> str:
    """Mining_Report.md from the run's artifacts; ``output`` is the recipe's stderr+stdout."""
    f = _MiningFacts(run, pool_counts, output, workspace)
    inputs = _table(["input", "value"], [
        ["target parquet", f"`{route['mining']['path']}` ({f.n_targets} rows, labels "
                           f"{', '.join(f.targets) or 'none'})"],
        ["source pool", f"`{POOL_DIRNAME}/pool.csv` converted to `source_pool.parquet` "
                        f"({f.n_pool} images, labels {', '.join(pool_counts)})"],
        ["backend", f.backend_line.replace("|", "/")],
        ["run folder", f"`{run}`"]])
    mining = (
        f"The mining spec used topn {TOPN}, knn_metric cosine and filter_by_label \"false\" "
        "(the quoted string the schema expects), with no distance threshold. The k-NN step "
        "searched every target against every pool image exactly, removed neighbours shared "
        "by several targets, and wrote its own summary, quoted here unchanged:")
    text = "\n".join([
        f"# Mining Report: demo experiment {run.name}", "",
        "## 1. Verdict", _mining_verdict(f), "",
        "## 2. Inputs", inputs, "",
        "The targets are the mining subset of the routing step, so only labels that the pool "
        "actually holds were embedded as targets.", "",
        "## 3. Encoder Consistency", _encoder_text(f), "",
        "## 4. Mining Run", mining, "", "```text", f.summary, "```", "",
        "## 5. Per-Label Breakdown",
        _table(["label", "target rows", "target samples", "pool images", "mined for label",
                "mined with label", "cross-label", "mined per target row"], f.rows), "",
        _per_label_note(f), "",
        "## 6. Output Sanity", _sanity_text(f), "",
        "## 7. Recommended Actions",
        "\n".join(f"{i}. {a}" for i, a in enumerate(_mining_actions(f.thin), 1)), ""])
    check_words("Mining_Report.md", text, rr.MINING_WORDS)
    return text


def run_mining(ctx, route: dict, pool_csv: Path, pool_counts: dict[str, int]) -> Path:
    out_root = ctx.experiment_dir
    block = recipe_block(ctx.bank_root)
    print("== mining: running the skill's recipe (references/reference-invocation.md, "
          "local backend, MODEL=baseline)")
    proc = _run(["bash", "-c", block], ctx, ctx.workspace,
                "mining recipe", TARGET_PARQUET=route["mining"]["path"], POOL=str(pool_csv),
                OUT=str(out_root), MODEL="baseline", TOPN=str(TOPN), FILTER_BY_LABEL="false",
                WORKSPACE=str(ctx.workspace))
    m = re.search(r"^MINING_RUN=(.+)$", proc.stdout, re.M)
    if not m:
        raise RunFailed("the mining recipe did not print MINING_RUN=<folder>")
    run = Path(m.group(1).strip())
    missing = [a for a in rr.MINING_ARTIFACTS if not (run / a).is_file()]
    if missing:
        raise RunFailed(f"mining run {run} lacks {', '.join(missing)}")
    sys.stdout.write(proc.stdout)
    check_script_output(ctx, _session_id(ctx, 2), block, proc.stdout, proc.stderr, block[:80])
    report = run / "Mining_Report.md"
    _write_report(ctx, 2, report, mining_report(run, route, pool_counts, proc.stderr + proc.stdout,
                                                 ctx.workspace), block, proc.stdout)
    return run


def run_stage(ctx) -> None:
    if ctx.rca_dir is None:
        raise RunFailed("routing and mining need the RCA stage's results (ctx.rca_dir is unset)")
    pool_csv, pool_counts = make_pool(ctx.workspace, ctx.seed)
    ctx.summary.append(f"source pool:      {pool_csv} ({sum(pool_counts.values())} images)")
    route_dir, route = run_routing(ctx, pool_csv, pool_counts)
    ctx.summary.append(f"routing results:  {route_dir}  (Routing_Report.md, routing_summary.txt)")
    if route["dropped_labels"]:
        ctx.summary.append(f"  {rr.MARK_DROPPED_LABELS} {', '.join(route['dropped_labels'])} "
                           "(see Routing_Report.md, section 5)")
    if not route["mining"]["rows"]:
        raise RunFailed("routing sent no rows to mining; nothing to mine")
    run = run_mining(ctx, route, pool_csv, pool_counts)
    ctx.summary.append(f"mining results:   {run}  (Mining_Report.md, mined.parquet, "
                       "mining_summary.txt; baseline encoder, demo only)")
