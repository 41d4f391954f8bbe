"""scripts/preflight.py against fake docker / nvidia-smi executables on PATH."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_script

SCRIPT = REPO / "scripts" / "preflight.py"
IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services"


def fake_tools(bin_dir: Path, docker: str | None = "ok", gpu: bool = True, image: bool = True) -> Path:
    """Write tiny stand-ins: docker ("ok" | "broken" | None), nvidia-smi (gpu), and whether
    `docker image inspect` finds the image. Every docker call is logged to bin_dir/docker.calls."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    if docker is not None:
        info = "exit 0" if docker == "ok" else "echo 'Cannot connect to the Docker daemon' >&2; exit 1"
        inspect = "exit 0" if image else "echo 'Error: No such image' >&2; exit 1"
        script = (f"#!/bin/sh\necho \"$*\" >> {shlex.quote(str(bin_dir / 'docker.calls'))}\n"
                  f"case \"$1\" in\n  info) {info};;\n  image) {inspect};;\nesac\nexit 9\n")
        (bin_dir / "docker").write_text(script)
        (bin_dir / "docker").chmod(0o755)
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: fake'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    return bin_dir


def preflight(*args: str, path_dir: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TAO_SKILL_BANK_PATH", "TAO_SKILL_BANK_PYTHON")}
    env["PATH"] = str(path_dir)  # only the fakes: no real docker can leak into the decision
    env.update(env_extra or {})
    return run_script("preflight.py", *args, env=env, cwd=str(path_dir))


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "my workspace"
    (ws / "exp" / "inference").mkdir(parents=True)
    (ws / "images").mkdir()
    return ws


def as_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_container_when_docker_gpu_and_image_present(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin")
    out = as_json(preflight("--workspace", str(workspace), "--json", path_dir=bin_dir))
    assert out["backend"] == "docker"
    w = str(workspace)
    # $DS quotes the arguments for the image's entrypoint, then runs exactly this docker prefix
    assert out["argv"] == [sys.executable, str(REPO / "scripts" / "docker_launch.py"),
                           "--workspace", w, "--image", IMAGE, "--"]
    assert shlex.split(out["docker"]) == ["docker", "run", "--gpus", "all", "--rm", "--ipc=host",
                                          "-v", f"{w}:{w}", "-w", w, IMAGE]
    assert "--user" not in out["ds"] and "--user" not in out["docker"]
    assert out["ds"] == shlex.join(out["argv"])
    assert shlex.split(out["ds"]) == out["argv"]  # the space in the path survives quoting
    assert any("chown" in n for n in out["notes"])
    calls = (bin_dir / "docker.calls").read_text().splitlines()
    assert calls == ["info", f"image inspect {IMAGE}"]


@pytest.mark.parametrize("tools, reason", [
    (dict(docker=None), "docker not found"),
    (dict(docker="broken"), "docker not working: Cannot connect to the Docker daemon"),
    (dict(gpu=False), "no GPU"),
    (dict(image=False), f"image not pulled: {IMAGE}"),
])
def test_local_with_the_reason(tmp_path, workspace, tools, reason):
    bin_dir = fake_tools(tmp_path / "bin", **tools)
    out = as_json(preflight("--workspace", str(workspace), "--json", path_dir=bin_dir))
    assert out["backend"] == "local"
    assert out["reason"].startswith(reason)
    assert out["argv"] == [sys.executable, str(REPO / "scripts" / "data_services.py")]


def test_local_prefix_uses_bank_python(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin", docker=None)
    py = tmp_path / "py dir" / "python"
    out = as_json(preflight("--workspace", str(workspace), "--json", path_dir=bin_dir,
                            env_extra={"TAO_SKILL_BANK_PYTHON": str(py)}))
    assert out["argv"][0] == str(py)
    assert out["ds"].startswith(shlex.quote(str(py)) + " ")


def test_human_output_lists_checks_backend_ds_and_workspace(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin", gpu=False)
    proc = preflight("--workspace", str(workspace), path_dir=bin_dir)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"image: {IMAGE}" in text
    assert "OK      docker" in text and "MISSING gpu" in text
    assert "backend: local (no GPU (nvidia-smi not found))" in text
    assert f"workspace: {workspace}" in text
    assert "DS: " in text


@pytest.mark.parametrize("kind", ["docker", "local"])
def test_shell_output_evals_in_bash(tmp_path, workspace, kind):
    bin_dir = fake_tools(tmp_path / "bin", gpu=(kind == "docker"))
    expected = as_json(preflight("--workspace", str(workspace), "--json", path_dir=bin_dir))
    assert expected["backend"] == kind
    cmd = (f"eval \"$({shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} "
           f"--workspace {shlex.quote(str(workspace))} --shell)\" || exit 7\n"
           'printf "%s\\n" "$DS_BACKEND" "$WORKSPACE" "$DS_IMAGE"\n'
           'eval "set -- $DS_CMD"; printf "<%s>\\n" "$@"\n'
           'printf "%s\\n" "$DS"\n'
           'bash -c \'printf "%s\\n" "$DS_BACKEND"\'\n')  # exported, so children see it
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == [kind, str(workspace), IMAGE]
    assert lines[3:-2] == [f"<{a}>" for a in expected["argv"]]
    # $DS is one executable path, so "$DS" args survives spaces in any path
    launcher = Path(lines[-2])
    assert launcher.is_relative_to(tmp_path / "home") and os.access(launcher, os.X_OK)
    assert launcher.read_text().rstrip().endswith(f'exec {expected["ds"]} "$@"')
    assert lines[-1] == kind
    assert f"backend: {kind}" in proc.stderr  # still visible although eval ate stdout


def test_path_outside_workspace_is_refused(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin")
    outside = tmp_path / "elsewhere" / "inference.csv"
    proc = preflight("--workspace", str(workspace), "--paths", str(workspace / "exp"), str(outside),
                     path_dir=bin_dir)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert str(outside) in proc.stderr and "outside the workspace" in proc.stderr


def test_symlink_escaping_the_workspace_is_refused(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin")
    target = tmp_path / "real_images"
    target.mkdir()
    (workspace / "linked").symlink_to(target)
    proc = preflight("--workspace", str(workspace), "--paths", str(workspace / "linked"),
                     path_dir=bin_dir)
    assert proc.returncode == 2 and "symlink" in proc.stderr


def test_default_workspace_is_common_root_of_paths(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin")
    out = as_json(preflight("--json", "--paths", str(workspace / "exp" / "inference"),
                            str(workspace / "images"),
                            str(workspace / "exp" / "rca_results" / "2024-01-01_000000"),
                            path_dir=bin_dir))
    assert out["workspace"] == str(workspace)
    # a single path that does not exist yet: the nearest existing folder above it
    out = as_json(preflight("--json", "--paths", str(workspace / "exp" / "new" / "deeper"),
                            path_dir=bin_dir))
    assert out["workspace"] == str(workspace / "exp")


def test_default_workspace_without_paths_is_cwd(tmp_path):
    bin_dir = fake_tools(tmp_path / "bin")
    out = as_json(preflight("--json", path_dir=bin_dir))
    assert out["workspace"] == str(bin_dir)


def test_forced_docker_without_docker_says_what_is_missing(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin", docker=None, gpu=False)
    proc = preflight("--workspace", str(workspace), "--backend", "docker", path_dir=bin_dir)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "docker not found" in proc.stderr and "nvidia-smi not found" in proc.stderr


def test_forced_local_with_everything_present(tmp_path, workspace):
    bin_dir = fake_tools(tmp_path / "bin")
    out = as_json(preflight("--workspace", str(workspace), "--backend", "local", "--json",
                            path_dir=bin_dir))
    assert out["backend"] == "local" and "forced" in out["reason"]
    assert not (bin_dir / "docker.calls").exists()  # nothing probed when local is forced


def test_missing_workspace_is_a_usage_error(tmp_path):
    bin_dir = fake_tools(tmp_path / "bin")
    proc = preflight("--workspace", str(tmp_path / "nope"), path_dir=bin_dir)
    assert proc.returncode == 2 and "not an existing folder" in proc.stderr
