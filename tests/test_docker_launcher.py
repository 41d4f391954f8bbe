"""The docker launcher against the image's entrypoint: join + shlex re-split + Hydra's parser.

The end-to-end case runs NVIDIA's own gap-analysis module through the `docker` stand-in
(tests/oracle/bin), exactly as `"$DS"` runs it on a GPU host.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_inference_csv
from tao_aoi import docker_launch as dl

IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services"

AWKWARD = [
    "/data/my run", "it's", 'say "hi"', "a,b", "[1,2]", "{a: 1}", "cost$5", "$HOME", "${x}",
    "a\\", "a\\'b", "\\\\'", "\\n literal", "ünï cödé 名前", "k=v", "==", " lead", "trail ",
    "x\ny", "", "%a@b+c", "a:b", "~x", "*?", "#hash", "a;b|c&", "`cmd`", "\t", "'", '"', "''",
    "'quoted' tail", "'a' 'b'", "'a\\'", "back\\slash\\", "/data/run (1)/[x]", "-dash start", "null text",
    "C:\\Windows\\path", "a b,c=d'e\"f\\g$h{i}[j]",
]


def _hydra_values(tokens: list[str], python: str) -> list:
    """Hydra's own override parser (hydra-core in the oracle interpreter) on each token."""
    code = ("import json, sys\n"
            "from hydra.core.override_parser.overrides_parser import OverridesParser\n"
            "p = OverridesParser.create()\n"
            "out = []\n"
            "for t in json.load(sys.stdin):\n"
            "    o = p.parse_override(t)\n"
            "    out.append([o.key_or_group, o.value()])\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([python, "-c", code], input=json.dumps(tokens), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _random_strings(n: int, seed: int = 13) -> list[str]:
    import random

    rng = random.Random(seed)
    alphabet = list(" \t'\"\\,[]{}=$:;|&`#*?~!%@+-_./()<>\n") + list("abcXYZ019") + ["é", "名", "🙂"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def test_quoted_values_survive_the_resplit_and_hydra(nvidia):
    values = AWKWARD + _random_strings(300)
    values = [v for v in values if ("${" not in v or v == "${x}")
              and not dl._PREQUOTED.fullmatch(v)]  # already Hydra-quoted: taken as meant
    keys = ["results_dir", "kpi_media_path", "a.b", "++x", "+y"]
    args = [dl.quote_override(f"{keys[i % len(keys)]}={v}") for i, v in enumerate(values)]
    # The entrypoint: one string, split again.
    tokens = shlex.split("python script.py --config-path /tao_aoi/spec --config-name s.yaml "
                         + " ".join(args))[6:]
    assert len(tokens) == len(values)
    parsed = _hydra_values(tokens, nvidia.python)
    for i, (value, (key, got)) in enumerate(zip(values, parsed)):
        assert key == keys[i % len(keys)].lstrip("+")
        if dl._PLAIN_VALUE.fullmatch(value):  # passed unchanged: Hydra types it as usual
            assert tokens[i] == f"{keys[i % len(keys)]}={value}"
            continue
        assert got == value and isinstance(got, str), (value, tokens[i], got)


@pytest.mark.parametrize("value, typed", [("1", 1), ("-1.0", -1.0), ("0.95", 0.95),
                                          ("true", True), ("false", False), ("null", None),
                                          ("50", 50), ("/data/exp/rca", "/data/exp/rca")])
def test_plain_values_are_not_quoted(nvidia, value, typed):
    arg = dl.quote_override(f"k={value}")
    assert arg == f"k={value}"
    [[_, got]] = _hydra_values([arg], nvidia.python)
    assert got == typed and type(got) is type(typed)


def test_a_hydra_quoted_value_is_taken_as_meant(nvidia):
    """`results_dir='/data/my run'` (quotes inside the argument) means what the local runner
    reads from it: the path, not the path wrapped in quotes."""
    from tao_aoi.specs import parse_overrides

    for token in ("results_dir='/data/my run'", 'results_dir="/data/my run"', "results_dir=''"):
        [tok] = shlex.split(dl.quote_override(token))
        [[_, got]] = _hydra_values([tok], nvidia.python)
        assert got == parse_overrides([token])[0]["results_dir"]


@pytest.mark.parametrize("token, named", [
    ("bad key=1", "bad key"), ("=x", "''"), ("noequals", "noequals"),
    ("k=${unbalanced", "k:"), ("k=a\x00b", "k:"), ("--weird opt", "--weird opt"),
])
def test_unsafe_arguments_are_refused(token, named):
    with pytest.raises(dl.Unsafe) as err:
        dl.quote_arg(token)
    assert "\n" not in str(err.value)
    assert named.strip("'").rstrip(":") in str(err.value) or named == "''"


def test_build_mounts_the_spec_read_only_at_a_space_free_path(tmp_path):
    ws = tmp_path / "my ws"
    (ws / "rca").mkdir(parents=True)
    spec = ws / "rca" / "spec.yaml"
    spec.write_text("results_dir: ???\n")
    argv = dl.build(str(ws), IMAGE, ["gap_analysis", "vcn_aoi", "-e", "rca/spec.yaml",
                                     f"results_dir={ws}/rca", "threshold=0.5", "--cfg=job"],
                    cwd=str(ws))
    w = str(ws)
    assert argv[:10] == ["docker", "run", "--gpus", "all", "--rm", "--ipc=host",
                         "-v", f"{w}:{w}", "-w", w]
    assert "--user" not in argv and "-u" not in argv
    assert argv[10:12] == ["-v", f"{ws / 'rca'}:/tao_aoi/spec:ro"]
    assert argv[12:] == [IMAGE, "gap_analysis", "vcn_aoi", "-e", "/tao_aoi/spec/spec.yaml",
                         shlex.quote(f"results_dir='{ws}/rca'"), "threshold=0.5", "--cfg=job"]


@pytest.mark.parametrize("name", ["my spec.yaml", "spec$1.yaml", "-spec.yaml", "spéc.yaml"])
def test_unsafe_spec_file_name_is_refused(tmp_path, name):
    (tmp_path / name).write_text("a: 1\n")
    with pytest.raises(dl.Unsafe, match="spec file name"):
        dl.build(str(tmp_path), IMAGE, ["gap_analysis", "vcn_aoi", "-e", name], cwd=str(tmp_path))


def test_missing_spec_is_refused_before_docker(tmp_path):
    with pytest.raises(dl.Unsafe, match="was not found"):
        dl.build(str(tmp_path), IMAGE, ["gap_analysis", "vcn_aoi", "-e", "nope.yaml"],
                 cwd=str(tmp_path))


# ------------------------------------------------------------------ through the generated $DS
def _preflight_ds(ws: Path, env: dict, home: Path) -> dict:
    cmd = (f"eval \"$({shlex.quote(sys.executable)} {shlex.quote(str(REPO / 'scripts' / 'preflight.py'))}"
           f" --workspace {shlex.quote(str(ws))} --shell)\" || exit 7\n"
           'printf "%s\\n" "$DS_BACKEND" "$DS"\n')
    env = {**env, "HOME": str(home)}
    env.pop("XDG_CACHE_HOME", None)
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    backend, ds = proc.stdout.splitlines()
    return {"backend": backend, "ds": ds, "env": env}


@pytest.fixture
def rca_workspace(tmp_path):
    ws = tmp_path / "my work space"
    inf = ws / "exp one" / "inference"
    write_inference_csv(inf / "inference.csv", [
        {"input_path": "boards/b1", "label": "PASS", "object_name": "C1", "siamese_score": 0.10},
        {"input_path": "boards/b1", "label": "NO_PASS", "object_name": "C2", "siamese_score": 0.90},
        {"input_path": "boards/b2", "label": "pass", "object_name": "C3", "siamese_score": 0.60},
        {"input_path": "boards/b2", "label": "NO_PASS", "object_name": "C4", "siamese_score": 0.55},
    ])
    train = ws / "exp one" / "train spec.yaml"
    train.write_text("dataset:\n  classify:\n    image_ext: .png\n    input_map:\n"
                     "      A: 0\n      B: 1\n", encoding="utf-8")
    rca = ws / "rca"
    rca.mkdir(parents=True)
    spec = rca / "spec.yaml"
    spec.write_text("inference_results_dir: ???\ntrain_config: ???\nkpi_media_path: ''\n"
                    "threshold: -1.0\nmin_recall: 1.0\ntop_k_per_label: 50\nresults_dir: ???\n",
                    encoding="utf-8")
    return {"ws": ws, "inference": inf, "train": train, "rca": rca, "spec": spec,
            "media": ws / "kpi media"}


def _run_ds(ds: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    script = '"$DS" "$@"'
    return subprocess.run(["bash", "-c", script, "bash", *args], capture_output=True, text=True,
                          env={**env, "DS": ds}, cwd=str(cwd), timeout=300)


def test_ds_runs_nvidia_code_in_a_workspace_with_spaces(tmp_path, container_env, rca_workspace):
    pytest.importorskip("pandas")
    import pandas as pd

    w = rca_workspace
    setup = _preflight_ds(w["ws"], container_env, tmp_path / "home dir")
    assert setup["backend"] == "docker"
    cwd = tmp_path / "some other cwd"
    cwd.mkdir()
    proc = _run_ds(setup["ds"], [
        "gap_analysis", "vcn_aoi", "-e", str(w["spec"]),
        f"inference_results_dir={w['inference']}", f"train_config={w['train']}",
        f"results_dir={w['rca']}", f"kpi_media_path={w['media']}"], setup["env"], cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.rstrip().splitlines()[-1] == "Execution status: PASS"
    for name in ("kpi_gaps.parquet", "threshold.txt", "weak_samples_breakdown.txt"):
        assert (w["rca"] / name).is_file(), (name, out)
    gaps = pd.read_parquet(w["rca"] / "kpi_gaps.parquet")
    assert list(gaps.columns) == ["filepath", "label", "siamese_score", "weakness"]
    assert all(p.startswith(str(w["media"]) + "/boards/") for p in gaps["filepath"])
    assert {Path(p).name for p in gaps["filepath"]} >= {"C3_A.png", "C3_B.png"}
    # the spec was mounted read-only, never written
    assert sorted(p.name for p in w["rca"].iterdir()) == [
        "kpi_gaps.parquet", "spec.yaml", "threshold.txt", "weak_samples_breakdown.txt"]


def test_ds_unsafe_argument_is_refused_before_docker(tmp_path, container_env, rca_workspace):
    w = rca_workspace
    setup = _preflight_ds(w["ws"], container_env, tmp_path / "home")
    marker = tmp_path / "docker.ran"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
    (fake / "docker").chmod(0o755)
    env = {**setup["env"], "PATH": f"{fake}{os.pathsep}{setup['env']['PATH']}"}
    for args, named in [(["-e", str(w["spec"]), "results dir=/x"], "results dir"),
                        (["-e", str(w["ws"] / "nope.yaml")], "nope.yaml")]:
        proc = _run_ds(setup["ds"], ["gap_analysis", "vcn_aoi", *args], env, tmp_path)
        assert proc.returncode == 2
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and lines[0].startswith("ds_launcher: error:")
    assert not marker.exists()


def test_ds_container_failure_ends_with_execution_status_fail(tmp_path, container_env,
                                                              rca_workspace):
    w = rca_workspace
    setup = _preflight_ds(w["ws"], container_env, tmp_path / "home")
    proc = _run_ds(setup["ds"], [
        "gap_analysis", "vcn_aoi", "-e", str(w["spec"]),
        f"inference_results_dir={w['inference']}", f"train_config={w['train']}",
        f"results_dir={w['rca']}", "threshold=-1", "min_recall=1.0",
        f"kpi_media_path={w['media']}", "inference_results_dir=" + str(w["ws"] / "no such dir")],
        setup["env"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert out.rstrip().splitlines()[-1] == "Execution status: FAIL"
    assert "Expected inference CSV at" in out or "inference.csv" in out
