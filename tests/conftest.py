"""Shared fixtures: a small VCN experiment folder on disk and a way to run the scripts."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest_models import tiny_models  # noqa: F401  (shared fixture: tiny random CLIP/SigLIP)

REPO = Path(__file__).resolve().parents[1]
LIGHTINGS = {"Diffuse": 1, "Coaxial": 0, "Side": 2}  # first lighting = Coaxial (index 0)


def run_script(name: str, *args: str, env: dict | None = None, cwd: str | None = None):
    """Run ``scripts/<name>`` with this interpreter; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def write_inference_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_train_yaml(path: Path, input_map: dict | None = None, image_ext: str = ".jpg") -> Path:
    import yaml

    input_map = dict(LIGHTINGS if input_map is None else input_map)
    doc = {"model": {"classify": {"backbone": "fan_small"}},
           "dataset": {"classify": {"input_map": input_map, "image_ext": image_ext,
                                    "num_input": len(input_map)}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def vcn_experiment(tmp_path):
    """Factory: ``make(rows, images_for=N)`` -> dict of paths for an experiment on disk.

    rows: dicts with input_path, object_name, label, siamese_score (+ extra columns).
    Images (tiny JPEG-named files) exist for every lighting of the first ``images_for`` rows.
    """
    def make(rows, images_for: int = 0, name: str = "exp"):
        exp = tmp_path / name
        csv_path = write_inference_csv(exp / "inference" / "inference.csv", rows)
        train = write_train_yaml(exp / "train.yaml")
        media = tmp_path / f"{name}_media"
        media.mkdir(exist_ok=True)
        for row in rows[:images_for]:
            folder = media / row["input_path"]
            folder.mkdir(parents=True, exist_ok=True)
            for light in LIGHTINGS:
                (folder / f"{row['object_name']}_{light}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
        return {"exp": exp, "inference_dir": csv_path.parent, "csv": csv_path, "train": train,
                "media": media, "results": exp / "rca_results" / "run1"}

    return make


# ----------------------------------------------------------------------------- the oracle
# NVIDIA's own data-services code (tests/oracle/README.md). Missing is a failure, never a skip.
ORACLE_DIR = REPO / "tests" / "oracle"


def oracle_python() -> str:
    import os

    py = os.environ.get("TAO_AOI_ORACLE_PYTHON") or str(REPO / ".venv-oracle" / "bin" / "python")
    if not Path(py).exists():
        pytest.fail(f"NVIDIA's data-services code is not installed ({py} missing): run `make oracle`")
    return py


class NvidiaContainer:
    """Runs NVIDIA's entry modules as the image's entrypoint does (tests/oracle/entrypoint.py)."""

    def __init__(self, python: str):
        self.python = python

    def run(self, category: str, action: str, spec, *overrides: str, cwd=None,
            stable_sort: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
        import os

        env = dict(os.environ)
        env["TAO_ORACLE_STABLE_SORT"] = "1" if stable_sort else "0"
        env["PATH"] = f"{ORACLE_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)
        return subprocess.run([self.python, str(ORACLE_DIR / "entrypoint.py"), category, action,
                               "-e", str(spec), *overrides], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def nvidia() -> NvidiaContainer:
    """NVIDIA's data-services modules (the release pinned through versions.yaml)."""
    return NvidiaContainer(oracle_python())


@pytest.fixture
def container_env(nvidia) -> dict:
    """Environment of a GPU host: `docker` and `nvidia-smi` stand-ins first on PATH, whose
    `docker run <pinned image> ...` executes NVIDIA's code (tests/oracle/bin)."""
    import os

    env = dict(os.environ)
    env["PATH"] = f"{ORACLE_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["TAO_AOI_ORACLE_PYTHON"] = nvidia.python
    return env


class NvidiaWorker:
    """One long-lived process running NVIDIA's modules in-process (tests/oracle/worker.py):
    hundreds of generated cases without paying interpreter and import start-up each time."""

    def __init__(self, python: str):
        import os

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ORACLE_DIR / "stubs"), str(ORACLE_DIR)])
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.proc = subprocess.Popen([python, str(ORACLE_DIR / "worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env, bufsize=1)

    def run(self, category: str, action: str, spec, *overrides: str, cwd=None,
            stable_sort: bool = False) -> dict:
        """``{"ok": bool, "error": "Type: message" | None, "log": str}``."""
        import json

        job = {"category": category, "action": action, "spec": str(spec),
               "overrides": list(overrides), "cwd": str(cwd) if cwd else None,
               "stable_sort": stable_sort}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail("NVIDIA oracle worker died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def nvidia_worker():
    worker = NvidiaWorker(oracle_python())
    yield worker
    worker.close()


def tree_state(*roots) -> dict:
    """Every entry under ``roots``, links not followed, hidden files included: kind, size, mtime
    and link target per path (folders by existence only). Two equal states = nothing written."""
    import os
    import stat

    state = {}
    for root in map(str, roots):
        if not os.path.lexists(root):
            continue
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):
                    state[path] = ("dir",)
                elif stat.S_ISLNK(st.st_mode):
                    state[path] = ("link", os.readlink(path))
                else:
                    state[path] = ("file", st.st_size, st.st_mtime_ns)
    return state
