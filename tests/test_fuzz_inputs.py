"""Fuzz-style contract check (issue #9): malformed input to every script and every hook.

Scripts (``scripts/*.py``, and ``scripts/data_services.py <category> <action>`` per action): a
bad input exits 2 with exactly ONE line on stderr (no traceback, no argparse usage lines), that
line never echoes file contents (every malformed file carries ``MARK``, which must appear
neither on stdout nor on stderr), and nothing is written: the case's folder and the shared
baseline folder hold the same entries before and after (hidden ``.tmp`` files included).

Hooks (``hooks/*.py``): whatever arrives on stdin (empty, not JSON, a list, a wrong type in any
field, huge strings, binary bytes, report/transcript paths that are folders, links out, /proc
files, missing), exit 0, stdout empty or one JSON object, no traceback.

Cases are generated per family: each breaks ONE thing of a valid baseline command line, and
``test_baseline_is_valid`` proves every baseline runs. They run in-process (``runpy`` on the
script file, exactly what ``python3 scripts/x.py`` executes); a sample of ~20 also runs as
real subprocesses, for the process-level behaviour (exit status, stdin/stdout encoding,
``python3 -S`` for the PostToolUse hooks).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, tree_state

MARK = "tao-fuzz-SECRET-3b9c5e7a"      # planted in every malformed file: must never be echoed
# what /proc/self/environ (NUL-separated NAME=value) looks like when a message quotes it
ENVIRON_ECHO = re.compile(r"\x00|\\x00|(?:^|[^A-Z_])(?:PATH|HOME)=/")
SCRIPTS = REPO / "scripts"
HOOKS = REPO / "hooks"
ACTIONS = [("gap_analysis", "vcn_aoi"), ("embedding", "image_embeddings"), ("tmm", "nearest_neighbors")]
LIGHTS = {"Diffuse": 1, "Coaxial": 0, "Side": 2}
LABELS = ["PASS", "PASS", "MISSING", "PASS", "BRIDGE", "PASS", "EXCESS_SOLDER", "PASS",
          "TOMBSTONE", "PASS", "MISSING", "PASS"]


# ============================================================================ running


class _Exec(Exception):
    """docker_launch.py would exec docker here (a valid command line)."""


def run_inprocess(path: Path, argv: list[str], *, cwd: Path, env: dict[str, str | None],
                  stdin: bytes | None = None) -> tuple[int, str, str]:
    """Execute ``path`` as ``python3 path argv...`` would, in this process."""
    out, err = io.StringIO(), io.StringIO()
    saved = (sys.argv, list(sys.path), os.getcwd(), sys.stdin, dict(os.environ), os.execvp)
    sys.argv = [str(path), *argv]
    os.chdir(cwd)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")

    def no_exec(*_a, **_k):
        raise _Exec

    os.execvp = no_exec
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
                rc = 0
            except SystemExit as exc:
                code = exc.code
                if code is None or isinstance(code, int):
                    rc = code or 0
                else:  # the interpreter prints a non-int exit code and exits 1
                    print(code, file=sys.stderr)
                    rc = 1
            except _Exec:
                rc = 0
            except BaseException:  # what the interpreter would print before exiting 1
                traceback.print_exc()
                rc = 1
    finally:
        sys.argv, sys.path[:], cwd0, sys.stdin, environ, os.execvp = saved
        os.chdir(cwd0)
        os.environ.clear()
        os.environ.update(environ)
    return rc, out.getvalue(), err.getvalue()


def run_subprocess(path: Path, argv: list[str], *, cwd: Path, env: dict[str, str | None],
                   stdin: bytes | None = None, bare: bool = False) -> tuple[int, str, str]:
    full = dict(os.environ, TAO_FUZZ_ENV_SECRET=MARK)   # what /proc/self/environ will hold
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    cmd = [sys.executable, *(["-S"] if bare else []), str(path), *argv]
    proc = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True,
                          cwd=cwd, env=full, timeout=120)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"))


def call(script: str, *argv: str, cwd: Path | None = None, env: dict | None = None) -> tuple[int, str, str]:
    """Run a script in-process (baselines and the shared world)."""
    return run_inprocess(SCRIPTS / script, [str(a) for a in argv], cwd=cwd or REPO, env=env or {})


def ok(script: str, *argv, **kw) -> str:
    rc, out, err = call(script, *argv, **kw)
    assert rc == 0, f"{script} {argv}: rc {rc}\n{out}\n{err}"
    return out


# ============================================================================ the valid world


@dataclass
class World:
    root: Path

    def __getattr__(self, name: str) -> Path:  # w.rca -> root/"rca" etc. through PATHS
        try:
            return self.root / PATHS[name]
        except KeyError:
            raise AttributeError(name) from None


PATHS = {
    "exp": "exp", "infer": "exp/inference", "csv": "exp/inference/inference.csv",
    "train": "exp/train.yaml", "media": "media",
    "rca": "rca", "spec": "rca/vcn_aoi_spec.yaml", "gaps": "rca/kpi_gaps.parquet",
    "metrics": "rca/metrics.json",
    "exp2": "exp2", "infer2": "exp2/inference", "rca2": "rca2", "spec2": "rca2/vcn_aoi_spec.yaml",
    "pool_csv": "pool.csv", "pool": "pool.parquet",
    "emb_spec": "emb/embedding_spec.yaml", "nn_spec": "emb/mining_spec.yaml",
    "source": "emb/source.parquet", "target": "emb/target.parquet", "mined": "emb/mined.parquet",
    "ledger": "ledger.parquet",
    "lights": "samples/lights.parquet", "lights_emb": "samples/lights_emb.parquet",
    "combined": "samples/combined.parquet", "samples_mined": "samples/mined.parquet",
    "bank": "bank", "outside": "outside", "secret": "outside/secret.txt",
    "secret_jsonl": "outside/session.jsonl", "image": "media/board00/C0_Coaxial.png",
}


def _write_png(path: Path, i: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), ((37 * i) % 256, (91 * i) % 256, 120)).save(path)


def _experiment(root: Path, name: str, scores: list[float]) -> None:
    import yaml

    rows = [{"input_path": f"board{i:02d}", "golden_path": f"golden{i:02d}", "label": lab,
             "object_name": f"C{i}", "siamese_score": s}
            for i, (lab, s) in enumerate(zip(LABELS, scores))]
    infer = root / name / "inference"
    infer.mkdir(parents=True)
    import pandas as pd

    pd.DataFrame(rows).to_csv(infer / "inference.csv", index=False)
    doc = {"model": {"classify": {"backbone": "fan_small"}},
           "dataset": {"classify": {"input_map": LIGHTS, "image_ext": ".png", "num_input": 3,
                                    "grid_map": {"x": 3, "y": 1}}}}
    (root / name / "train.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """Valid inputs for every script, made by the scripts themselves (read-only for the cases)."""
    w = World(tmp_path_factory.mktemp("fuzz_world"))
    r = w.root
    scores = [0.05, 0.12, 0.81, 0.33, 0.92, 0.21, 0.64, 0.4, 0.77, 0.08, 0.55, 0.3]
    _experiment(r, "exp", scores)
    _experiment(r, "exp2", [s + (0.1 if lab == "PASS" else -0.05) for s, lab in zip(scores, LABELS)])
    for i in range(len(LABELS)):
        for light in LIGHTS:
            _write_png(w.media / f"board{i:02d}" / f"C{i}_{light}.png", i)
    w.outside.mkdir()
    w.secret.write_text(f"{MARK}\n")
    w.secret_jsonl.write_text(json.dumps({"type": "user", "message": MARK}) + "\n")
    w.bank.mkdir()
    shutil.copy(REPO / "versions.yaml", w.bank / "versions.yaml")

    for exp, rca, spec in ((w.exp, w.rca, w.spec), (w.exp2, w.rca2, w.spec2)):
        ok("write_spec.py", "gap_analysis", "vcn_aoi", "--out", spec,
           f"inference_results_dir={exp / 'inference'}", f"train_config={w.train}",
           f"kpi_media_path={w.media}", f"results_dir={rca}", "top_k_per_label=50")
        ok("data_services.py", "gap_analysis", "vcn_aoi", "-e", spec)
    w.pool_csv.write_text("filepath,label\n" + "".join(
        f"{w.media}/board{i:02d}/C{i}_Coaxial.png,{LABELS[i]}\n" for i in range(8)))
    ok("pool_to_parquet.py", w.pool_csv, "--out", w.pool)
    ok("write_spec.py", "embedding", "image_embeddings", "--out", w.emb_spec,
       "model=baseline", "model_path=baseline", "num_workers=0")
    ok("write_spec.py", "tmm", "nearest_neighbors", "--out", w.nn_spec, "knn_metric=cosine",
       "topn=2")
    ok("data_services.py", "embedding", "image_embeddings", "-e", w.emb_spec,
       f"input_parquet={w.pool}", f"output_parquet={w.source}")
    ok("data_services.py", "embedding", "image_embeddings", "-e", w.emb_spec,
       f"input_parquet={w.gaps}", f"output_parquet={w.target}")
    ok("data_services.py", "tmm", "nearest_neighbors", "-e", w.nn_spec,
       f"source_parquet={w.source}", f"target_parquet={w.target}", f"output_parquet={w.mined}")
    ok("mining_ledger.py", "record", "--mined", w.mined, "--ledger", w.ledger, "--run-id", "r1")
    ok("mine_samples.py", "expand", w.csv, "--train-spec", w.train, "--media-root", w.media,
       "--out", w.lights)
    ok("data_services.py", "embedding", "image_embeddings", "-e", w.emb_spec,
       f"input_parquet={w.lights}", f"output_parquet={w.lights_emb}")
    ok("mine_samples.py", "combine", w.lights_emb, "--train-spec", w.train, "--out", w.combined)
    ok("data_services.py", "tmm", "nearest_neighbors", "-e", w.nn_spec,
       f"source_parquet={w.combined}", f"target_parquet={w.combined}",
       f"output_parquet={w.samples_mined}")
    return w


# ============================================================================ one case's sandbox

BINARY = bytes(range(256)) + MARK.encode() + b"\x00\xff\xfe\xfd" + bytes(range(255, -1, -1))
DROP = object()   # a slot value that removes the argument


class Ctx:
    """A case's own folder and the malformed things it makes there."""

    def __init__(self, w: World, tmp: Path):
        self.w, self.tmp = w, tmp
        self.cwd = tmp / "cwd"            # the command's working folder ("" must not mean it)
        self.cwd.mkdir()
        (self.cwd / "keep.txt").write_text("not a results folder\n")
        self.env: dict[str, str | None] = {
            "XDG_CACHE_HOME": str(tmp / "xdg"), "TAO_SKILL_BANK_PATH": None,
            "MPLBACKEND": "Agg", "DS_BACKEND_REASON": None, "TAO_SKILL_BANK_PYTHON": None}
        self._readonly: list[Path] = []
        self._copies = 0

    def path(self, rel: str) -> Path:
        p = self.tmp / "in" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write(self, rel: str, data: bytes | str) -> str:
        p = self.path(rel)
        p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return str(p)

    def dir(self, rel: str) -> str:
        p = self.path(rel)
        p.mkdir(parents=True, exist_ok=True)
        return str(p)

    def missing(self, rel: str) -> str:
        return str(self.tmp / "in" / "no_such_folder" / rel)

    def under_file(self, rel: str) -> str:
        f = self.path("plain_file")
        f.write_text("a plain file, not a folder\n")
        return str(f / rel)

    def readonly(self, rel: str) -> str:
        """Where nothing can be created. Root writes into a chmod 555 folder anyway, so as root
        this is a path under /sys (sysfs refuses new entries even to root)."""
        if os.geteuid() == 0:
            return f"/sys/tao_fuzz_readonly/{rel}"
        d = self.tmp / "readonly"
        d.mkdir(exist_ok=True)
        d.chmod(0o555)
        self._readonly.append(d)
        return str(d / rel)

    def proc(self, rel: str) -> str:
        return f"/proc/self/tao_fuzz/{rel}"

    def link_out(self, rel: str, target: Path | None = None) -> str:
        p = self.path(rel)
        p.symlink_to(target or self.w.secret)
        return str(p)

    def copy(self, src: Path, rel: str, edit: Callable[[Path], None] | None = None) -> str:
        dest = self.path(rel)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
        else:
            shutil.copy2(src, dest)
        if edit is not None:
            edit(dest)
        return str(dest)

    def rca(self, edit: Callable[[Path], None] | None = None, src: Path | None = None) -> str:
        """A fresh copy of the baseline RCA results folder, optionally broken by ``edit``."""
        self._copies += 1
        return self.copy(src or self.w.rca, f"rca_copy{self._copies}", edit)

    def close(self) -> None:
        for d in self._readonly:
            d.chmod(0o755)


# ---------------------------------------------------------------------------- malformed content

def csv_variant(src: Path, drop: str | None = None, dup: str | None = None) -> str:
    """``src`` plus a ``note`` column holding MARK, then one column dropped or duplicated."""
    import csv

    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0] + ["note"], [r + [f"{MARK}-{i}"] for i, r in enumerate(rows[1:])]
    if dup is not None:
        j = header.index(dup)
        header.append(dup)
        body = [r + [r[j]] for r in body]
    if drop is not None:
        j = header.index(drop)
        header.pop(j)
        body = [r[:j] + r[j + 1:] for r in body]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *body])
    return out.getvalue()


def parquet_variant(src: Path, dest: Path, drop: str) -> str:
    """``src`` plus a ``note`` column holding MARK, less the column ``drop``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    table = table.append_column("note", pa.array([MARK] * table.num_rows))
    pq.write_table(table.drop_columns([drop]), dest)
    return str(dest)


def relink(path: Path, target: Path) -> None:
    """Replace ``path`` by a symbolic link to ``target`` (outside the folder)."""
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def train_yaml(input_map=None, image_ext=".png") -> str:
    import yaml

    doc = {"note": MARK, "dataset": {"classify": {
        "input_map": dict(LIGHTS) if input_map is None else input_map, "image_ext": image_ext}}}
    return yaml.safe_dump(doc, sort_keys=False)


YAML_LIST = f"- {MARK}\n- second item\n"
YAML_INVALID = f"dataset:\n  classify: {MARK}: [unclosed\n"
JUNK_TEXT = f"{MARK} this is text, not the binary format its name promises\n" * 3


def metrics_nan(path: Path) -> None:
    m = json.loads(path.read_text())
    text = json.dumps({**m, "note": MARK}, indent=2)
    path.write_text(text.replace(f'"threshold": {json.dumps(m["threshold"])}', '"threshold": NaN', 1))


METRICS_BREAKERS = {   # family -> how to break a copied metrics.json
    "metrics_list": lambda p: p.write_text(json.dumps([MARK, 1])),
    "metrics_string": lambda p: p.write_text(json.dumps(MARK)),
    "metrics_nan": metrics_nan,
    "metrics_invalid_json": lambda p: p.write_text('{"threshold": ' + MARK),
}


# ============================================================================ cases


@dataclass(frozen=True)
class Case:
    tool: str                 # scripts/<tool> (data_services: "data_services.py <cat> <act>")
    what: str                 # the argument that is broken
    family: str
    build: Callable[[Ctx], list[str]]
    rc: int = 2
    sub: bool = False         # also run as a real subprocess

    @property
    def script(self) -> str:
        return self.tool.split()[0]

    @property
    def id(self) -> str:
        name = self.tool.replace(".py", "").replace(" ", ":")
        return f"{name}|{self.what}|{self.family}"


Slots = list[tuple[str, object]]


def argv_of(slots: Slots) -> list[str]:
    """("#n", v): a positional; ("=key", v): key=v; (flag, True): a switch; (flag, v): flag v."""
    out: list[str] = []
    for key, value in slots:
        if value is DROP:
            continue
        if key.startswith("#"):
            out.append(str(value))
        elif key.startswith("="):
            out.append(f"{key[1:]}={value}")
        elif value is True:
            out.append(key)
        elif str(value).startswith("-"):   # "--size -1e308" would read -1e308 as an option
            out.append(f"{key}={value}")
        else:
            out += [key, str(value)]
    return out


TOOLS: list["Tool"] = []   # every baseline, proved valid by test_baseline_is_valid


@dataclass(frozen=True)
class Tool:
    name: str                                   # as in Case.tool
    base: Callable[[Ctx], Slots]                # the valid command line, as slots

    def __post_init__(self):
        TOOLS.append(self)

    def argv(self, c: Ctx, slot: str | None = None, value=None, extra: tuple = ()) -> list[str]:
        slots = list(self.base(c))
        if slot is not None:
            keys = [k for k, _ in slots]
            if slot in keys:
                slots[keys.index(slot)] = (slot, value)
            else:
                slots.append((slot, value))
        return argv_of(slots) + [str(x) for x in extra]

    def case(self, slot: str, family: str, value: Callable[[Ctx], object], rc: int = 2,
             sub: bool = False) -> Case:
        return Case(self.name, slot.lstrip("#=-") or slot, family,
                    lambda c: self.argv(c, slot, value(c)), rc, sub)

    def raw(self, what: str, family: str, build: Callable[[Ctx], list[str]], rc: int = 2,
            sub: bool = False) -> Case:
        return Case(self.name, what, family, build, rc, sub)


# ---------------------------------------------------------------------------- families

def out_file(tool: Tool, slot: str, name: str, dir_ok: bool = False, empty: bool = True) -> list[Case]:
    """An output file argument: parent is a file, read-only place, /proc, a folder, ''."""
    cases = [tool.case(slot, "out_parent_is_file", lambda c: c.under_file(name)),
             tool.case(slot, "out_readonly", lambda c: c.readonly(name)),
             tool.case(slot, "out_under_proc", lambda c: c.proc(name))]
    if not dir_ok:
        cases.append(tool.case(slot, "out_is_dir", lambda c: c.dir(name)))
    if empty:
        cases.append(tool.case(slot, "empty_string", lambda c: ""))
    return cases


def out_dir(tool: Tool, slot: str, name: str) -> list[Case]:
    """An output folder argument: parent is a file, read-only place, /proc, a file, ''."""
    return [tool.case(slot, "out_parent_is_file", lambda c: c.under_file(name)),
            tool.case(slot, "out_readonly", lambda c: c.readonly(name)),
            tool.case(slot, "out_under_proc", lambda c: c.proc(name)),
            tool.case(slot, "out_is_file", lambda c: c.write(name, f"{MARK}\n")),
            tool.case(slot, "empty_string", lambda c: "")]


def in_file(tool: Tool, slot: str, name: str, empty_string: bool = True) -> list[Case]:
    """Any input file: missing, a folder, empty, binary garbage, a /proc file, ''."""
    cases = [tool.case(slot, "input_missing", lambda c: c.missing(name)),
             tool.case(slot, "input_is_dir", lambda c: c.dir(name)),
             tool.case(slot, "input_empty", lambda c: c.write(name, b"")),
             tool.case(slot, "input_binary", lambda c: c.write(name, BINARY)),
             tool.case(slot, "input_under_proc", lambda c: "/proc/self/environ")]
    if empty_string:
        cases.append(tool.case(slot, "empty_string", lambda c: ""))
    return cases


def in_csv(tool: Tool, slot: str, name: str, src: str, required: str, dup: str | None = None,
           **kw) -> list[Case]:
    dup = dup or required
    return in_file(tool, slot, name, **kw) + [
        tool.case(slot, "csv_duplicated_column",
                  lambda c: c.write(name, csv_variant(getattr(c.w, src), dup=dup))),
        tool.case(slot, "csv_missing_column",
                  lambda c: c.write(name, csv_variant(getattr(c.w, src), drop=required)))]


def in_parquet(tool: Tool, slot: str, name: str, src: str | None, required: str | None,
               **kw) -> list[Case]:
    cases = in_file(tool, slot, name, **kw) + [
        tool.case(slot, "parquet_is_text", lambda c: c.write(name, JUNK_TEXT))]
    if src is not None:
        cases.append(tool.case(slot, "parquet_missing_column",
                               lambda c: parquet_variant(getattr(c.w, src), c.path(name), required)))
    return cases


def in_yaml(tool: Tool, slot: str, name: str, **kw) -> list[Case]:
    return in_file(tool, slot, name, **kw) + [
        tool.case(slot, "yaml_is_list", lambda c: c.write(name, YAML_LIST)),
        tool.case(slot, "yaml_invalid", lambda c: c.write(name, YAML_INVALID))]


def in_train(tool: Tool, slot: str, **kw) -> list[Case]:
    name = "train.yaml"
    return in_yaml(tool, slot, name, **kw) + [
        tool.case(slot, "lighting_with_slash",
                  lambda c: c.write(name, train_yaml({"Diffuse": 1, "../Coaxial": 0, "Side": 2}))),
        tool.case(slot, "lighting_dotdot", lambda c: c.write(name, train_yaml({"..": 0, "Side": 1}))),
        tool.case(slot, "image_ext_with_slash", lambda c: c.write(name, train_yaml(image_ext="/.png"))),
        tool.case(slot, "image_ext_dotdot", lambda c: c.write(name, train_yaml(image_ext="../x.png"))),
        tool.case(slot, "yaml_no_input_map", lambda c: c.write(name, f"dataset:\n  note: {MARK}\n"))]


def in_results(tool: Tool, slot: str, metrics: bool = True) -> list[Case]:
    """An RCA results folder argument: missing, a file, /proc, empty, not results, broken metrics."""
    cases = [tool.case(slot, "input_missing", lambda c: c.missing("rca")),
             tool.case(slot, "input_is_file", lambda c: c.write("rca", f"{MARK}\n")),
             tool.case(slot, "input_under_proc", lambda c: "/proc/self"),
             tool.case(slot, "input_empty_dir", lambda c: c.dir("rca")),
             tool.case(slot, "empty_string", lambda c: "")]
    if metrics:
        for fam, breaker in METRICS_BREAKERS.items():
            cases.append(tool.case(slot, fam, lambda c, b=breaker: c.rca(lambda d: b(d / "metrics.json"))))
    return cases


def numbers(tool: Tool, slot: str, bad: tuple[str, ...]) -> list[Case]:
    names = {"nan": "nan", "inf": "inf", "-inf": "neg_inf", "-1e308": "huge_negative",
             "1e308": "huge", "-1": "negative", "0": "zero", "1.5": "fraction", "7": "too_small",
             "99999": "too_large", "abc": "not_a_number"}
    return [tool.case(slot, f"number_{names.get(v, v)}", lambda c, v=v: v) for v in bad]


def flags(tool: Tool, required: tuple[str, ...] = ()) -> list[Case]:
    cases = [tool.raw("argv", "unknown_flag", lambda c: tool.argv(c, extra=("--no-such-flag",)))]
    for slot in required:
        cases.append(tool.case(slot, "missing_required", lambda c: DROP))
    return cases


# ============================================================================ every script

def _ga_overrides(c: Ctx) -> Slots:
    return [("=results_dir", c.tmp / "out" / "rca")]


def _numbers_ga(tool: Tool) -> list[Case]:
    return (numbers(tool, "=min_recall", ("nan", "inf", "-1e308", "1.5", "-1"))
            + numbers(tool, "=top_k_per_label", ("nan", "0", "-1", "1e308", "1.5"))
            + numbers(tool, "=threshold", ("nan", "inf", "-inf")))


def _spec_args(tool: Tool) -> list[Case]:
    def spec_nan(c: Ctx) -> str:   # YAML's .nan is a float NaN (an override "nan" is a string)
        spec = Path(dict(tool.base(c))["-e"])
        key = {"embedding_spec.yaml": "batch_size", "mining_spec.yaml": "distance_threshold"}.get(
            spec.name, "min_recall")
        return c.write("spec.yaml", f"# {MARK}\n{spec.read_text()}{key}: .nan\n")

    return in_yaml(tool, "-e", "spec.yaml") + [
        tool.case("-e", "spec_number_nan", spec_nan),
        tool.case("-e", "missing_required", lambda c: DROP),
        tool.case("=bogus_key", "unknown_key", lambda c: MARK),
        tool.case("#override", "not_key_value", lambda c: "just_a_word"),
        tool.raw("argv", "unknown_flag", lambda c: tool.argv(c, extra=("--no-such-flag",)))]


def gap_analysis_cases() -> list[Case]:
    t = Tool("data_services.py gap_analysis vcn_aoi", lambda c: [
        ("#category", "gap_analysis"), ("#action", "vcn_aoi"), ("-e", c.w.spec),
        *_ga_overrides(c)])
    name = "inference/inference.csv"

    def infer(fn):  # the folder holding a malformed inference.csv
        return lambda c: str(Path(fn(c)).parent)

    cases = _spec_args(t) + _numbers_ga(t) + out_dir(t, "=results_dir", "rca") + [
        t.case("=inference_results_dir", "input_missing", lambda c: c.missing("inference")),
        t.case("=inference_results_dir", "input_is_file", lambda c: c.write("inference", MARK)),
        t.case("=inference_results_dir", "input_under_proc", lambda c: "/proc/self"),
        t.case("=inference_results_dir", "empty_string", lambda c: ""),
        t.case("=inference_results_dir", "input_empty", infer(lambda c: c.write(name, b""))),
        t.case("=inference_results_dir", "input_binary", infer(lambda c: c.write(name, BINARY)), sub=True),
        t.case("=inference_results_dir", "csv_duplicated_column",
               infer(lambda c: c.write(name, csv_variant(c.w.csv, dup="label")))),
        t.case("=inference_results_dir", "csv_missing_column",
               infer(lambda c: c.write(name, csv_variant(c.w.csv, drop="siamese_score")))),
        t.case("=inference_results_dir", "csv_bad_score",
               infer(lambda c: c.write(name, csv_variant(c.w.csv).replace("0.81", "NaN")))),
        t.case("=train_config", "empty_string", lambda c: ""),
        t.raw("category", "unknown_category", lambda c: ["no_such", "vcn_aoi", "-e", str(c.w.spec)]),
        t.raw("action", "unknown_action", lambda c: ["gap_analysis", "no_such", "-e", str(c.w.spec)]),
        t.raw("argv", "cfg_bad_value", lambda c: t.argv(c, extra=("--cfg=everything",))),
        t.raw("argv", "extra_positional", lambda c: t.argv(c, extra=("surplus",))),
    ]
    return cases + in_train(t, "=train_config", empty_string=False)


def embedding_cases() -> list[Case]:
    t = Tool("data_services.py embedding image_embeddings", lambda c: [
        ("#category", "embedding"), ("#action", "image_embeddings"), ("-e", c.w.emb_spec),
        ("=input_parquet", c.w.pool), ("=output_parquet", c.tmp / "out" / "emb.parquet")])
    return (_spec_args(t) + in_parquet(t, "=input_parquet", "pool.parquet", "pool", "filepath")
            + out_file(t, "=output_parquet", "emb.parquet")
            + numbers(t, "=batch_size", ("nan", "0", "-1", "1e308"))
            + numbers(t, "=num_workers", ("-1", "nan"))
            + [t.case("=model", "unknown_model", lambda c: "NoSuchModel"),
               t.case("=model_path", "empty_string", lambda c: ""),
               t.case("=embedding_cache", "input_is_file", lambda c: c.write("cache", MARK)),
               t.case("=output_parquet", "out_same_as_input", lambda c: str(c.w.pool))])


def nearest_neighbors_cases() -> list[Case]:
    t = Tool("data_services.py tmm nearest_neighbors", lambda c: [
        ("#category", "tmm"), ("#action", "nearest_neighbors"), ("-e", c.w.nn_spec),
        ("=source_parquet", c.w.source), ("=target_parquet", c.w.target),
        ("=output_parquet", c.tmp / "out" / "mined.parquet")])
    # the overrides give every mandatory key: an empty spec file is a valid one here
    return ([x for x in _spec_args(t) if (x.what, x.family) != ("e", "input_empty")]
            + in_parquet(t, "=source_parquet", "source.parquet", "source", "embedding")
            + in_parquet(t, "=target_parquet", "target.parquet", "target", "embedding")
            + out_file(t, "=output_parquet", "mined.parquet")
            + numbers(t, "=topn", ("nan", "0", "-1", "1e308", "99999"))
            + numbers(t, "=distance_threshold", ("nan", "inf"))
            + [t.case("=knn_metric", "unknown_metric", lambda c: "chebyshev"),
               t.case("=exclude_parquet", "input_is_dir", lambda c: c.dir("exclude")),
               t.case("=exclude_parquet", "input_missing", lambda c: c.missing("exclude.parquet")),
               t.case("=exclude_parquet", "parquet_is_text", lambda c: c.write("ex.parquet", JUNK_TEXT)),
               t.case("=exclude_parquet", "input_binary", lambda c: c.write("ex.parquet", BINARY)),
               t.case("=output_parquet", "out_same_as_input", lambda c: str(c.w.source))])


def complete_cases() -> list[Case]:
    t = Tool("complete_gap_analysis.py", lambda c: [("-e", c.w.spec), ("=results_dir", c.rca())])

    def rca_edit(fn):
        return lambda c: c.rca(fn)

    return (_spec_args(t) + _numbers_ga(t) + in_train(t, "=train_config", empty_string=False) + [
        t.case("=results_dir", "input_missing", lambda c: c.missing("rca")),
        t.case("=results_dir", "input_is_file", lambda c: c.write("rca", MARK)),
        t.case("=results_dir", "out_parent_is_file", lambda c: c.under_file("rca")),
        t.case("=results_dir", "out_under_proc", lambda c: c.proc("rca")),
        t.case("=results_dir", "empty_string", lambda c: ""),
        t.case("=results_dir", "parquet_is_text",
               rca_edit(lambda d: (d / "kpi_gaps.parquet").write_text(JUNK_TEXT)), sub=True),
        t.case("=results_dir", "input_binary",
               rca_edit(lambda d: (d / "kpi_gaps.parquet").write_bytes(BINARY))),
        t.case("=results_dir", "symlink_out",
               lambda c: c.rca(lambda d: relink(d / "threshold.txt", c.w.secret))),
        # a threshold.txt that disagrees is drift (exit 1), but it must not be quoted
        t.case("=results_dir", "threshold_garbage", rc=1,
               value=rca_edit(lambda d: (d / "threshold.txt").write_text(JUNK_TEXT))),
        t.case("=inference_results_dir", "input_binary",
               lambda c: str(Path(c.write("inference/inference.csv", BINARY)).parent)),
        t.case("=inference_results_dir", "csv_missing_column",
               lambda c: str(Path(c.write("inference/inference.csv",
                                          csv_variant(c.w.csv, drop="label"))).parent)),
        t.case("=inference_results_dir", "csv_duplicated_column",
               lambda c: str(Path(c.write("inference/inference.csv",
                                          csv_variant(c.w.csv, dup="siamese_score"))).parent)),
    ])


def build_index_cases() -> list[Case]:
    t = Tool("build_index.py", lambda c: [("#results_dir", c.rca())])
    return in_results(t, "#results_dir", metrics=False) + flags(t, ("#results_dir",))


def compare_cases() -> list[Case]:
    t = Tool("compare_iterations.py", lambda c: [
        ("#before", c.w.rca), ("#after", c.w.rca2), ("--out", c.tmp / "out" / "cmp")])
    return (in_results(t, "#before") + in_results(t, "#after")
            + in_csv(t, "--before-csv", "before.csv", "csv", "siamese_score", empty_string=False)
            + in_parquet(t, "--routed", "mining_gaps.parquet", "gaps", "object_name",
                         empty_string=False)
            + out_dir(t, "--out", "cmp") + flags(t, ("#after",))
            + [t.case("#after", "same_as_before", lambda c: str(c.w.rca))])


def dedupe_cases() -> list[Case]:
    t = Tool("dedupe_first_lighting.py", lambda c: [
        ("#parquet", c.w.gaps), ("--train-config", c.w.train), ("--out", c.tmp / "out" / "d.parquet")])
    return (in_parquet(t, "#parquet", "gaps.parquet", "gaps", "input_path") + in_train(t, "--train-config")
            + out_file(t, "--out", "d.parquet")
            + [t.case("--out", "out_same_as_input", lambda c: str(c.w.gaps))]
            + flags(t, ("--out", "--train-config")))


def demo_cases() -> list[Case]:
    t = Tool("demo.py", lambda c: [("--workspace", c.tmp / "out" / "demo"), ("--seed", "7")])
    return (numbers(t, "--seed", ("-1", "nan", "inf", "1e308", "1.5"))
            + out_dir(t, "--workspace", "demo")
            + [t.case("--workspace", "not_made_by_demo",
                      lambda c: str(Path(c.write("theirs/a.txt", MARK)).parent)),
               t.case("--workspace", "empty_cwd_as_empty_string", lambda c: ""),
               t.raw("argv", "unknown_flag", lambda c: t.argv(c, extra=("--no-such-flag",)), sub=True)])


def docker_launch_cases() -> list[Case]:
    def base(c: Ctx) -> Slots:
        spec = c.copy(c.w.spec, "ws/spec.yaml")
        return [("--workspace", c.tmp / "in" / "ws"), ("--image", "img:1"), ("#sep", "--"),
                ("#category", "gap_analysis"), ("#action", "vcn_aoi"), ("-e", spec)]

    t = Tool("docker_launch.py", base)
    return [t.case("#sep", "missing_required", lambda c: DROP),
            t.case("--image", "missing_required", lambda c: DROP),
            t.case("-e", "input_missing", lambda c: c.missing("spec.yaml")),
            t.case("-e", "input_is_dir", lambda c: c.dir("ws/spec_dir")),
            t.case("-e", "spec_name_with_space", lambda c: c.write("ws/my spec.yaml", MARK)),
            t.case("#category", "category_with_space", lambda c: "gap analysis"),
            t.case("=key with space", "bad_override_key", lambda c: "1"),
            t.raw("argv", "option_with_space", lambda c: t.argv(c, extra=("--cfg=a b",))),
            t.raw("argv", "spec_twice", lambda c: t.argv(c, extra=("-e", str(c.w.spec)))),
            t.raw("argv", "e_without_value", lambda c: t.argv(c, "-e", DROP, extra=("-e",))),
            t.raw("argv", "not_key_value", lambda c: t.argv(c, extra=("word",)))]


def draft_cases() -> list[Case]:
    t = Tool("draft_report.py", lambda c: [("#results_dir", c.rca()), ("--no-plot", True)])

    def rca_edit(fn):
        return lambda c: c.rca(fn)

    return (in_results(t, "#results_dir")
            + in_csv(t, "--inference-dir", "inference.csv", "csv", "siamese_score", empty_string=False)
            + numbers(t, "--rows-per-label", ("0", "-1", "nan", "inf"))
            + flags(t, ("#results_dir",))
            + [t.case("#results_dir", "threshold_garbage",
                      rca_edit(lambda d: (d / "threshold.txt").write_text(JUNK_TEXT)), sub=True),
               t.case("#results_dir", "symlink_out",
                      lambda c: c.rca(lambda d: relink(d / "threshold.txt", c.w.secret))),
               t.case("#results_dir", "parquet_is_text",
                      rca_edit(lambda d: (d / "kpi_gaps.parquet").write_text(JUNK_TEXT)))])


def locate_cases() -> list[Case]:
    def trt_csv(c: Ctx) -> str:   # TensorRT naming: the one layout where --results is written
        return c.write("exp/inference/inference.csv",
                       c.w.csv.read_text().replace("siamese_score", "output_score"))

    t = Tool("locate_inference.py", lambda c: [
        ("#path", c.w.exp), ("--train-config", c.w.train), ("--results", c.tmp / "out" / "res")])
    trt = Tool("locate_inference.py", lambda c: [
        ("#path", trt_csv(c)), ("--train-config", c.w.train), ("--results", c.tmp / "out" / "res")])
    return ([t.case("#path", "input_missing", lambda c: c.missing("exp")),
             t.case("#path", "input_empty_dir", lambda c: c.dir("exp")),
             t.case("#path", "input_under_proc", lambda c: "/proc/self"),
             t.case("#path", "empty_string", lambda c: ""),
             t.case("#path", "input_wrong_name", lambda c: c.write("scores.csv", MARK)),
             t.case("#path", "input_binary", lambda c: c.write("inference.csv", BINARY)),
             t.case("#path", "input_empty", lambda c: c.write("inference.csv", b""))]
            + in_yaml(t, "--train-config", "train.yaml") + flags(t, ("--train-config", "--results"))
            + out_dir(trt, "--results", "res"))


def mine_samples_cases() -> list[Case]:
    e = Tool("mine_samples.py expand", lambda c: [
        ("#cmd", "expand"), ("#csv", c.w.csv), ("--train-spec", c.w.train),
        ("--media-root", c.w.media), ("--out", c.tmp / "out" / "l.parquet")])
    cb = Tool("mine_samples.py combine", lambda c: [
        ("#cmd", "combine"), ("#embeddings", c.w.lights_emb), ("--train-spec", c.w.train),
        ("--out", c.tmp / "out" / "c.parquet")])
    d = Tool("mine_samples.py dataset", lambda c: [
        ("#cmd", "dataset"), ("--mined", c.w.samples_mined), ("--samples", c.w.combined),
        ("--out", c.tmp / "out" / "mined_dataset.csv")])
    return (in_csv(e, "#csv", "dataset.csv", "csv", "object_name", dup="label")
            + in_train(e, "--train-spec") + out_file(e, "--out", "l.parquet") + flags(e, ("--out",))
            + in_parquet(cb, "#embeddings", "emb.parquet", "lights_emb", "embedding")
            + in_yaml(cb, "--train-spec", "train.yaml") + out_file(cb, "--out", "c.parquet")
            + [cb.case("--combine", "unknown_choice", lambda c: "median")]
            + in_parquet(d, "--mined", "mined.parquet", "samples_mined", "filepath")
            + in_parquet(d, "--samples", "samples.parquet", "combined", "object_name")
            + out_file(d, "--out", "mined_dataset.csv")
            + [e.raw("command", "unknown_subcommand", lambda c: ["shuffle", str(c.w.csv)]),
               e.raw("command", "missing_required", lambda c: [])])


def ledger_cases() -> list[Case]:
    f = Tool("mining_ledger.py filter", lambda c: [
        ("#cmd", "filter"), ("--mined", c.w.mined), ("--ledger", c.w.ledger),
        ("--out", c.tmp / "out" / "novel.parquet")])
    r = Tool("mining_ledger.py record", lambda c: [
        ("#cmd", "record"), ("--mined", c.w.mined), ("--ledger", c.copy(c.w.ledger, "l/ledger.parquet")),
        ("--run-id", "r2")])
    return (in_parquet(f, "--mined", "mined.parquet", "mined", "filepath")
            + [f.case("--mined", "csv_missing_column",
                      lambda c: c.write("mined.csv", f"path,note\nx.png,{MARK}\n"))]
            + [f.case("--ledger", fam, fn) for fam, fn in (
                ("input_is_dir", lambda c: c.dir("ledger.parquet")),
                ("input_binary", lambda c: c.write("ledger.parquet", BINARY)),
                ("parquet_is_text", lambda c: c.write("ledger.parquet", JUNK_TEXT)),
                ("parquet_missing_column",
                 lambda c: parquet_variant(c.w.ledger, c.path("ledger.parquet"), "run_id")),
                ("empty_string", lambda c: ""))]
            + out_file(f, "--out", "novel.parquet") + flags(f, ("--out",))
            + [f.case("--out", "out_same_as_input", lambda c: str(c.w.mined))]
            + [r.case("--run-id", "empty_string", lambda c: ""),
               r.case("--run-id", "blank", lambda c: "   "),
               r.case("--ledger", "input_is_dir", lambda c: c.dir("ledger.parquet")),
               r.case("--ledger", "parquet_is_text", lambda c: c.write("ledger.parquet", JUNK_TEXT), sub=True),
               r.case("--ledger", "out_parent_is_file", lambda c: c.under_file("ledger.parquet")),
               r.case("--ledger", "out_readonly", lambda c: c.readonly("ledger.parquet")),
               r.case("--ledger", "out_under_proc", lambda c: c.proc("ledger.parquet")),
               r.case("--mined", "parquet_is_text", lambda c: c.write("mined.parquet", JUNK_TEXT))]
            + flags(r, ("--run-id",)))


def pool_cases() -> list[Case]:
    t = Tool("pool_to_parquet.py", lambda c: [("#csv", c.w.pool_csv), ("--out", c.tmp / "out" / "p.parquet")])
    return (in_csv(t, "#csv", "pool.csv", "pool_csv", "filepath")
            + out_file(t, "--out", "p.parquet") + flags(t, ("--out",))
            + [t.case("#csv", "csv_blank_filepath",
                      lambda c: c.write("pool.csv", f"filepath,label\n,{MARK}\n")),
               t.case("--out", "out_wrong_suffix", lambda c: str(c.tmp / "out" / "p.csv"))])


def preflight_cases() -> list[Case]:
    t = Tool("preflight.py", lambda c: [
        ("--workspace", c.w.root), ("--paths", c.w.exp), ("--backend", "local"), ("--json", True)])

    def link_out(c: Ctx) -> str:
        return c.link_out("ws_link", c.w.outside)

    def bank(text):
        def make(c: Ctx) -> str:
            c.env["TAO_SKILL_BANK_PATH"] = c.dir("bank")
            c.write("bank/versions.yaml", text)
            return "local"
        return make

    return ([t.case("--workspace", "input_missing", lambda c: c.missing("ws")),
             t.case("--workspace", "input_is_file", lambda c: c.write("ws", MARK)),
             t.case("--workspace", "empty_string", lambda c: ""),
             t.case("--paths", "outside_workspace", lambda c: "/etc"),
             t.case("--backend", "unknown_choice", lambda c: "podman"),
             t.case("--shell", "mutually_exclusive", lambda c: True),
             t.raw("argv", "paths_without_value", lambda c: t.argv(c, "--paths", DROP, extra=("--paths",))),
             t.raw("--paths", "symlink_out", lambda c: ["--workspace", str(c.tmp / "in"), "--paths",
                                                        str(Path(link_out(c)) / "secret.txt"),
                                                        "--backend", "local"]),
             t.raw("argv", "unknown_flag", lambda c: t.argv(c, extra=("--no-such-flag",)))]
            + [t.case("--backend", fam, bank(text)) for fam, text in (
                ("versions_yaml_list", YAML_LIST), ("versions_yaml_invalid", YAML_INVALID),
                ("versions_binary", BINARY), ("versions_empty", b""))]
            + [t.raw("argv", "launcher_out_parent_is_file", lambda c: (
                c.env.update(XDG_CACHE_HOME=c.under_file("xdg")),
                ["--workspace", str(c.w.root), "--backend", "local", "--shell"])[1])])


def resize_cases() -> list[Case]:
    t = Tool("resize_images.py", lambda c: [("#sources", c.w.image), ("--out-dir", c.tmp / "out" / "th")])
    return (numbers(t, "--size", ("nan", "inf", "-1e308", "0", "-1", "7", "99999", "1e308"))
            + out_dir(t, "--out-dir", "th") + flags(t, ("--out-dir", "#sources"))
            + [t.case("#sources", "empty_string", lambda c: ""),
               # an unreadable image is listed, not fatal: exit 1 (its documented contract)
               t.case("#sources", "input_binary", lambda c: c.write("x.png", BINARY), rc=1),
               t.case("#sources", "input_missing", lambda c: c.missing("x.png"), rc=1),
               t.case("#sources", "input_is_dir", lambda c: c.dir("x.png"), rc=1)])


def resolve_cases() -> list[Case]:
    t = Tool("resolve_image.py", lambda c: [("#key", "images.tao_toolkit.data_services")])

    def bank(text):
        def make(c: Ctx) -> str:
            c.env["TAO_SKILL_BANK_PATH"] = c.dir("bank")
            if text is not None:
                c.write("bank/versions.yaml", text)
            return "images.tao_toolkit.data_services"
        return make

    return ([t.case("#key", "empty_string", lambda c: "", sub=True),
             t.case("#key", "key_is_mapping", lambda c: "images"),
             t.case("#key", "key_empty_part", lambda c: "images..data_services"),
             t.case("#key", "key_missing", lambda c: "images.nope"),
             t.raw("argv", "extra_positional", lambda c: ["a.b", "c.d"]),
             t.raw("argv", "unknown_flag", lambda c: ["--no-such-flag"], sub=True)]
            + [t.case("#key", fam, bank(text)) for fam, text in (
                ("versions_missing", None), ("versions_yaml_list", YAML_LIST),
                ("versions_yaml_invalid", YAML_INVALID), ("versions_binary", BINARY),
                ("versions_empty", b""),
                ("image_latest", f"note: {MARK}\nimages:\n  tao_toolkit:\n    data_services: repo/img:latest\n"),
                ("image_untagged", f"note: {MARK}\nimages:\n  tao_toolkit:\n    data_services: repo/img\n"))])


def route_cases() -> list[Case]:
    t = Tool("route_samples.py", lambda c: [
        ("--gaps", c.w.gaps), ("--pool", c.w.pool_csv), ("--out", c.tmp / "out" / "route")])
    return (in_parquet(t, "--gaps", "gaps.parquet", "gaps", "label")
            + in_csv(t, "--pool", "pool.csv", "pool_csv", "label", empty_string=False)
            + [t.case("--gaps", "csv_duplicated_column",
                      lambda c: c.write("gaps.csv", csv_variant(c.w.pool_csv, dup="label"))),
               t.case("--gaps", "input_wrong_suffix", lambda c: c.write("gaps.txt", MARK)),
               t.case("--pool", "parquet_is_text", lambda c: c.write("pool.parquet", JUNK_TEXT)),
               t.case("--anomalygen-labels", "empty_string", lambda c: ""),
               t.case("--anomalygen-labels", "only_commas", lambda c: ",,")]
            + out_dir(t, "--out", "route") + flags(t, ("--gaps", "--out")))


def sample_cases() -> list[Case]:
    t = Tool("sample_parquet.py", lambda c: [("#parquet", c.w.gaps)])
    return (in_parquet(t, "#parquet", "gaps.parquet", None, None)
            + numbers(t, "--head", ("-1", "nan", "-1e308", "inf"))
            + [t.case("--sort", "unknown_column", lambda c: "nope"),
               t.case("--by", "unknown_column", lambda c: "nope"),
               t.case("--columns", "unknown_column", lambda c: "nope")]
            + flags(t, ("#parquet",)))


def spot_cases() -> list[Case]:
    t = Tool("spot_check.py", lambda c: [("#results_dir", c.rca()), ("--train-config", c.w.train)])
    m = Tool("spot_check.py", lambda c: [("#results_dir", c.rca())])   # lightings from metrics.json

    def rca_edit(fn):
        return lambda c: c.rca(fn)

    def metrics_lights(lights):
        def edit(d: Path) -> None:
            doc = json.loads((d / "metrics.json").read_text())
            (d / "metrics.json").write_text(json.dumps({**doc, "lightings": lights, "note": MARK}))
        return rca_edit(edit)

    return (in_results(t, "#results_dir", metrics=False) + in_train(t, "--train-config", empty_string=False)
            + [m.case("#results_dir", fam, lambda c, b=b: c.rca(lambda d: b(d / "metrics.json")))
               for fam, b in METRICS_BREAKERS.items() if fam != "metrics_nan"]
            + [m.case("#results_dir", "lighting_with_slash", metrics_lights(["../Coaxial", "Side"])),
               m.case("#results_dir", "lighting_dotdot", metrics_lights([".."])),
               t.case("#results_dir", "symlink_out",
                      lambda c: c.rca(lambda d: relink(d / "rca_images", c.w.outside)), sub=True),
               t.case("#results_dir", "rca_images_is_file",
                      rca_edit(lambda d: (d / "rca_images").write_text(MARK))),
               t.case("#results_dir", "parquet_is_text",
                      rca_edit(lambda d: (d / "kpi_gaps.parquet").write_text(JUNK_TEXT))),
               t.case("#results_dir", "input_binary",
                      rca_edit(lambda d: (d / "kpi_gaps.parquet").write_bytes(BINARY))),
               t.case("#results_dir", "parquet_missing_column", lambda c: c.rca(
                   lambda d: parquet_variant(c.w.gaps, d / "kpi_gaps.parquet", "weakness"))),
               t.case("#results_dir", "unreachable_kpi",
                      rca_edit(lambda d: (d / "unreachable_kpi.txt").write_text(MARK)))]
            + numbers(t, "--per-class", ("0", "-1", "nan"))
            + numbers(t, "--size", ("7", "99999", "nan", "inf"))
            + flags(t, ("#results_dir",)))


def write_spec_cases() -> list[Case]:
    t = Tool("write_spec.py", lambda c: [
        ("#category", "gap_analysis"), ("#action", "vcn_aoi"), ("--out", c.tmp / "out" / "spec.yaml"),
        ("=inference_results_dir", c.w.infer), ("=train_config", c.w.train)])
    ws = Tool("write_spec.py", lambda c: [
        ("#category", "gap_analysis"), ("#action", "vcn_aoi"),
        ("--workspace", c.dir("ws")), ("--out", c.tmp / "in" / "ws" / "spec.yaml")])
    return (out_file(t, "--out", "spec.yaml") + _numbers_ga(t)
            + [t.case("=results_dir", "empty_string", lambda c: ""),
               t.case("=inference_results_dir", "empty_string", lambda c: ""),
               t.case("=bogus_key", "unknown_key", lambda c: MARK),
               t.case("#override", "not_key_value", lambda c: "just_a_word"),
               t.case("=dataset.classify", "nested_key", lambda c: "x"),
               t.case("#category", "unknown_category", lambda c: "no_such"),
               t.case("#action", "unknown_action", lambda c: "no_such"),
               ws.case("--out", "outside_workspace", lambda c: str(c.tmp / "out" / "spec.yaml")),
               ws.case("--out", "symlink_out",
                       lambda c: str(Path(c.link_out("ws/link", c.w.outside)) / "spec.yaml")),
               ws.case("--workspace", "empty_string", lambda c: "")]
            + flags(t, ("--out", "#action")))


def script_cases() -> list[Case]:
    return (gap_analysis_cases() + embedding_cases() + nearest_neighbors_cases() + complete_cases()
            + build_index_cases() + compare_cases() + dedupe_cases() + demo_cases()
            + docker_launch_cases() + draft_cases() + locate_cases() + mine_samples_cases()
            + ledger_cases() + pool_cases() + preflight_cases() + resize_cases() + resolve_cases()
            + route_cases() + sample_cases() + spot_cases() + write_spec_cases())


SCRIPT_CASES = script_cases()


# ============================================================================ hooks

@dataclass(frozen=True)
class HookCase:
    hook: str
    what: str
    family: str
    stdin: Callable[[Ctx], bytes]
    sub: bool = False

    @property
    def id(self) -> str:
        return f"{self.hook.replace('.py', '')}|{self.what}|{self.family}"


RAW_STDIN = {
    "empty": b"", "whitespace": b" \n\t ", "not_json": b"not json at all", "json_list": b"[1, 2]",
    "json_null": b"null", "json_number": b"42", "json_string": json.dumps(MARK).encode(),
    "truncated": b'{"tool_name": "Write", "tool_input": {"file_path": ', "two_objects": b"{}{}",
    "binary": BINARY, "huge_string": json.dumps("x" * 3_000_000).encode(),
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000, "bom": b"\xef\xbb\xbf{}",
    "lone_surrogate": b'{"tool_name": "\\udcff", "hook_event_name": "\\ud800"}',
}
WEIRD = {"null": None, "int": 7, "infinity": math.inf, "nan": math.nan, "bool": True,
         "list": ["a", 1], "object": {"x": "y"}, "empty": "", "huge": "y" * 1_000_000,
         "surrogate": "\udcff", "nul": "a\x00b"}


def _report_event(c: Ctx) -> dict:
    from test_hook_report_check import make_rca_run

    folder = make_rca_run(c.tmp / "in")
    transcript = c.tmp / "in" / "session.jsonl"
    transcript.write_text(json.dumps({"type": "user", "message": "hello"}) + "\n")
    return {"session_id": "s-1", "transcript_path": str(transcript), "cwd": str(c.tmp / "in"),
            "hook_event_name": "PostToolUse", "tool_name": "Write",
            "tool_input": {"file_path": str(folder / "RCA_Report.md"), "content": "# RCA"},
            "tool_response": {"filePath": str(folder / "RCA_Report.md"), "success": True}}


def _bash_event(c: Ctx) -> dict:
    return {"session_id": "s-1", "transcript_path": "", "cwd": str(c.tmp),
            "hook_event_name": "PostToolUse", "tool_name": "Bash",
            "tool_input": {"command": "python3 scripts/route_samples.py --gaps g.parquet --out r",
                           "run_in_background": False},
            "tool_response": {"stdout": "", "interrupted": False,
                              "stderr": "route_samples.py: error: gaps file not found: g.parquet"},
            "error": "Exit code 2"}


def _session_event(c: Ctx) -> dict:
    return {"session_id": "s-1", "hook_event_name": "SessionStart", "cwd": str(c.tmp),
            "transcript_path": str(c.tmp / "t.jsonl"), "source": "startup"}


def _encode(event: dict) -> bytes:
    return json.dumps(event).encode("utf-8")


def _with(base: Callable[[Ctx], dict], field: str, value) -> Callable[[Ctx], bytes]:
    def make(c: Ctx) -> bytes:
        event = base(c)
        node, key = event, field
        if "." in field:
            outer, key = field.split(".")
            node = event[outer]
        node[key] = value(c) if callable(value) else value
        return _encode(event)
    return make


def _report_paths() -> dict[str, Callable[[Ctx], object]]:
    def folder(c: Ctx) -> Path:
        return c.tmp / "in" / "exp one" / "rca_results" / "2024-05-01_101500"

    def as_dir(c):
        (folder(c) / "RCA_Report.md").unlink()
        (folder(c) / "RCA_Report.md").mkdir()
        return str(folder(c) / "RCA_Report.md")

    def as_link(c):
        relink(folder(c) / "RCA_Report.md", c.w.secret)
        return str(folder(c) / "RCA_Report.md")

    def binary(c):
        (folder(c) / "RCA_Report.md").write_bytes(BINARY)
        return str(folder(c) / "RCA_Report.md")

    def huge(c):
        (folder(c) / "RCA_Report.md").write_text("## 1. Verdict\n" + "word " * 700_000)
        return str(folder(c) / "RCA_Report.md")

    return {"path_is_dir": as_dir, "symlink_out": as_link, "binary_report": binary,
            "huge_report": huge, "missing": lambda c: str(folder(c) / "gone" / "RCA_Report.md"),
            "proc_environ": lambda c: "/proc/self/environ",
            "proc_report": lambda c: "/proc/self/RCA_Report.md",
            "relative_dotdot": lambda c: "../../RCA_Report.md",
            "under_file": lambda c: c.under_file("RCA_Report.md"),
            "too_long": lambda c: "/" + "a" * 5000 + "/RCA_Report.md",
            "nul_char": lambda c: "/tmp/x\x00/RCA_Report.md"}


def _transcript_paths() -> dict[str, Callable[[Ctx], object]]:
    def huge(c):
        return c.write("huge.jsonl", json.dumps({"type": "user", "m": "z" * 3_000_000}) + "\n")

    return {"path_is_dir": lambda c: c.dir("t_dir"),
            "symlink_out": lambda c: c.link_out("t_link.jsonl", c.w.secret_jsonl),
            "proc_environ": lambda c: "/proc/self/environ", "missing": lambda c: c.missing("t.jsonl"),
            "relative": lambda c: "session.jsonl", "binary": lambda c: c.write("t.jsonl", BINARY),
            "huge_line": huge, "too_long": lambda c: "/" + "b" * 5000,
            "nul_char": lambda c: "/tmp/t\x00.jsonl"}


def hook_cases() -> list[HookCase]:
    cases: list[HookCase] = []
    for hook in ("check_script_output.py", "on_report_written.py", "session_start.py"):
        for fam, raw in RAW_STDIN.items():
            cases.append(HookCase(hook, "stdin", fam, lambda c, raw=raw: raw,
                                  sub=fam in ("binary", "deep_nesting") and hook != "session_start.py"))
    report_fields = ("session_id", "transcript_path", "cwd", "hook_event_name", "tool_name",
                     "tool_input", "tool_input.file_path", "tool_input.content", "tool_response")
    bash_fields = ("session_id", "cwd", "hook_event_name", "tool_name", "tool_input",
                   "tool_input.command", "tool_input.run_in_background", "tool_response",
                   "tool_response.stdout", "tool_response.stderr", "tool_response.interrupted", "error")
    for hook, base, fields in (("on_report_written.py", _report_event, report_fields),
                               ("check_script_output.py", _bash_event, bash_fields),
                               ("session_start.py", _session_event, ("session_id", "hook_event_name"))):
        for field in fields:
            for fam, value in WEIRD.items():
                cases.append(HookCase(hook, field, f"type_{fam}", _with(base, field, value)))
    for fam, value in _report_paths().items():
        cases.append(HookCase("on_report_written.py", "tool_input.file_path", fam,
                              _with(_report_event, "tool_input.file_path", value),
                              sub=fam == "symlink_out"))
    for fam, value in _transcript_paths().items():
        cases.append(HookCase("on_report_written.py", "transcript_path", fam,
                              _with(_report_event, "transcript_path", value),
                              sub=fam == "symlink_out"))
    return cases


HOOK_CASES = hook_cases()


# ============================================================================ the tests


@pytest.fixture
def ctx(world, tmp_path):
    c = Ctx(world, tmp_path)
    yield c
    c.close()


def _diff(before: dict, after: dict) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added[:5]}, removed {removed[:5]}, changed {changed[:5]}"


def check_script(case: Case, c: Ctx, runner) -> None:
    argv = case.build(c)
    before = tree_state(c.tmp, c.w.root)
    rc, out, err = runner(SCRIPTS / case.script, argv, cwd=c.cwd, env=c.env)
    after = tree_state(c.tmp, c.w.root)
    shown = f"argv {argv!r:.400}\nstdout {out[-800:]!r}\nstderr {err[-1500:]!r}"
    assert rc == case.rc, f"exit {rc}, want {case.rc}\n{shown}"
    assert "Traceback" not in err, shown
    assert len(err.splitlines()) == 1, f"stderr must be one line\n{shown}"
    if case.rc == 2:
        assert re.match(r"[\w.\-]+: error: \S", err), f"not a '<prog>: error: ...' line\n{shown}"
    assert MARK not in out and MARK not in err, f"file contents echoed\n{shown}"
    assert not ENVIRON_ECHO.search(out + err), f"/proc/self/environ echoed\n{shown}"
    assert after == before, f"something was written: {_diff(before, after)}\n{shown}"


@pytest.mark.parametrize("case", SCRIPT_CASES, ids=[c.id for c in SCRIPT_CASES])
def test_script_rejects_malformed_input(case, ctx):
    check_script(case, ctx, run_inprocess)


def _hook_env(c: Ctx) -> dict[str, str | None]:
    empty_bin = c.tmp / "bin"
    empty_bin.mkdir(exist_ok=True)
    return {"CLAUDE_PLUGIN_ROOT": str(REPO), "CLAUDE_PLUGIN_DATA": str(c.tmp / "plugin data"),
            "CLAUDE_PROJECT_DIR": None, "RCA_HOOKS": None, "ROUTING_HOOKS": None,
            "MINING_HOOKS": None, "TAO_AOI_DETECT_SECRETS": "0",
            "CLAUDE_ENV_FILE": str(c.tmp / "env" / "env.sh"), "TAO_SKILL_BANK_PYTHON": sys.executable,
            "PATH": str(empty_bin)}


def check_hook(case: HookCase, c: Ctx, runner) -> None:
    stdin = case.stdin(c)
    kw = {"bare": case.hook != "session_start.py"} if runner is run_subprocess else {}
    rc, out, err = runner(HOOKS / case.hook, [], cwd=c.tmp, env=_hook_env(c), stdin=stdin, **kw)
    shown = f"stdin {stdin[:300]!r}\nstdout {out[:1500]!r}\nstderr {err[-1500:]!r}"
    assert rc == 0, shown
    assert err == "", shown
    assert MARK not in out, f"a file outside was quoted\n{shown}"
    assert not ENVIRON_ECHO.search(out), f"/proc/self/environ echoed\n{shown}"
    if case.hook == "session_start.py":
        assert out.startswith("[") and "Skills:" in out, shown
    elif out.strip():
        lines = out.strip().splitlines()
        assert len(lines) == 1, shown
        payload = json.loads(lines[0])
        assert isinstance(payload, dict) and "hookSpecificOutput" in payload, shown
        assert isinstance(payload["hookSpecificOutput"].get("hookEventName"), str), shown


@pytest.mark.parametrize("case", HOOK_CASES, ids=[c.id for c in HOOK_CASES])
def test_hook_survives_malformed_stdin(case, ctx):
    check_hook(case, ctx, run_inprocess)


SUBPROCESS_IDS = {   # besides the cases marked sub=True
    "write_spec|min_recall|number_nan", "route_samples|out|out_readonly",
    "pool_to_parquet|csv|csv_duplicated_column", "preflight|workspace|empty_string",
    "sample_parquet|parquet|input_under_proc", "locate_inference|train-config|yaml_invalid",
    "data_services:embedding:image_embeddings|output_parquet|out_under_proc",
    "compare_iterations|before|metrics_nan", "pool_to_parquet|csv|input_under_proc"}
SUBPROCESS_SAMPLE = ([c for c in SCRIPT_CASES if c.sub or c.id in SUBPROCESS_IDS]
                     + [c for c in HOOK_CASES if c.sub])


@pytest.mark.parametrize("case", SUBPROCESS_SAMPLE, ids=[c.id for c in SUBPROCESS_SAMPLE])
def test_real_process(case, ctx):
    """The same contract, as a separate process (exit status, encodings, python3 -S hooks)."""
    if isinstance(case, HookCase):
        check_hook(case, ctx, run_subprocess)
    else:
        check_script(case, ctx, run_subprocess)


BASELINE_TOOLS = [t for t in TOOLS if t.name != "demo.py"]   # the demo runs in test_demo.py


@pytest.mark.parametrize("tool", BASELINE_TOOLS, ids=[f"{t.name}#{i}" for i, t in enumerate(BASELINE_TOOLS)])
def test_baseline_is_valid(tool, ctx):
    """Each case breaks one thing of a command line that works."""
    argv = tool.argv(ctx)
    rc, out, err = run_inprocess(SCRIPTS / tool.name.split()[0], argv, cwd=ctx.cwd, env=ctx.env)
    assert rc == 0, f"{argv}\n{out[-1000:]}\n{err[-2000:]}"


def test_every_script_and_family_is_covered():
    scripts = {p.name for p in SCRIPTS.glob("*.py")}
    covered = {c.script for c in SCRIPT_CASES}
    assert scripts <= covered, f"scripts without fuzz cases: {sorted(scripts - covered)}"
    actions = {tuple(c.tool.split()[1:3]) for c in SCRIPT_CASES if c.script == "data_services.py"}
    assert set(ACTIONS) <= actions
    families = {c.family for c in SCRIPT_CASES}
    for family in ("out_parent_is_file", "out_readonly", "out_is_dir", "out_under_proc",
                   "input_is_dir", "input_missing", "input_empty", "input_binary",
                   "csv_duplicated_column", "csv_missing_column", "parquet_is_text",
                   "metrics_list", "metrics_string", "metrics_nan", "yaml_is_list", "yaml_invalid",
                   "number_nan", "number_inf", "number_huge_negative", "empty_string",
                   "lighting_with_slash", "lighting_dotdot", "image_ext_with_slash",
                   "image_ext_dotdot", "unknown_flag", "missing_required", "symlink_out"):
        assert family in families, family
    assert len(SCRIPT_CASES) + len(HOOK_CASES) >= 300
    assert 15 <= len(SUBPROCESS_SAMPLE) <= 25
