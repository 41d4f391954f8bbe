"""Test-only: what the data-services image's entrypoint does with one command line.

    python entrypoint.py <category> <action> -e <spec> [key=value ...]

Mirrors nvidia_tao_ds.core.entrypoint.entrypoint.launch (read, not copied): ``-e`` required
(ValueError), the spec must exist (FileNotFoundError), one string
``python <module file> --config-path <realpath> --config-name <name> <args joined by spaces>``
split again with shlex, stdout and stderr merged, ``nvidia-smi -L`` called, then
``Execution status: PASS|FAIL`` and exit 1 on failure. Run it with the oracle interpreter.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = {
    "gap_analysis": "nvidia_tao_ds.rcca.gap_analysis.scripts",
    "tmm": "nvidia_tao_ds.mining.tmm.scripts",
    "embedding": "nvidia_tao_ds.mining.embedding.scripts",
}


def module_file(category: str, action: str) -> str:
    spec = importlib.util.find_spec(f"{PACKAGES[category]}.{action}")
    if spec is None or spec.origin is None:
        raise SystemExit(f"entrypoint: {category} has no subtask {action}")
    return spec.origin


def child_env() -> dict:
    env = dict(os.environ)
    paths = [str(HERE / "stubs")]
    if env.get("TAO_ORACLE_STABLE_SORT") == "1":
        paths.insert(0, str(HERE / "stable_sort"))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in PACKAGES:
        print(f"usage: entrypoint.py {{{','.join(PACKAGES)}}} <action> -e <spec> [key=value ...]")
        return 2
    category, action, rest = argv[0], argv[1], argv[2:]
    spec_file, unknown = None, []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("-e", "--experiment_spec_file") and i + 1 < len(rest):
            spec_file, i = rest[i + 1], i + 2
            continue
        if arg.startswith("--experiment_spec_file="):
            spec_file = arg.split("=", 1)[1]
        else:
            unknown.append(arg)
        i += 1
    if spec_file is None:
        raise ValueError(f"The subtask `{action}` requires the following argument: -e/--experiment_spec_file")
    if not os.path.exists(spec_file):
        raise FileNotFoundError(f"Experiment spec file was not found at {spec_file}")
    path, name = os.path.split(spec_file)
    script_args = ""
    if path != "":
        script_args += f" --config-path {os.path.realpath(path)}"
    script_args += f" --config-name {name}"
    call = f"{shlex.quote(sys.executable)} {module_file(category, action)}{script_args} {' '.join(unknown)}"
    subprocess.check_output(["nvidia-smi", "-L"])
    proc = subprocess.Popen(shlex.split(call), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, env=child_env())
    for line in proc.stdout:
        sys.stdout.write(line)
    proc.wait()
    if proc.returncode != 0:
        print("Execution status: FAIL")
        return 1
    print("Execution status: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
