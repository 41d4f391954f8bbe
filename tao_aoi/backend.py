"""Which backend runs the data-services actions, and the exact ``$DS`` command prefix.

Container when docker answers, a GPU answers and the pinned image is already pulled;
otherwise the local runner, with the reason. Standard library only: the session-start
hook uses the cheap PATH checks from here.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

PYTHON_ENV = "TAO_SKILL_BANK_PYTHON"
DOCKER_RUN = ("docker", "run", "--gpus", "all", "--rm", "--ipc=host")
LOCAL_RUNNER = "scripts/data_services.py"
DOCKER_LAUNCHER = "scripts/docker_launch.py"  # quotes for the image's entrypoint, then docker run
PROBE_TIMEOUT_S = 5.0
BACKENDS = ("docker", "local")


@dataclass
class Check:
    name: str      # docker | gpu | image
    ok: bool
    detail: str    # what was seen, for the human listing
    reason: str = ""  # short cause when not ok, used as the backend reason


@dataclass
class Decision:
    backend: str                  # "docker" or "local"
    reason: str
    checks: list[Check] = field(default_factory=list)

    @property
    def missing(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict:
        return {"backend": self.backend, "reason": self.reason,
                "checks": [asdict(c) for c in self.checks]}


def _run(cmd: list[str], timeout: float) -> tuple[bool, str]:
    """Run quietly; (worked, first line of complaint)."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:g}s"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    if proc.returncode == 0:
        return True, ""
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    return False, lines[0] if lines else f"exit status {proc.returncode}"


def _no_docker() -> Check:
    return Check("docker", False, "docker not found on PATH", "docker not found")


def _no_gpu() -> Check:
    return Check("gpu", False, "nvidia-smi not found on PATH", "no GPU (nvidia-smi not found)")


def path_checks() -> list[Check]:
    """Failed checks visible from PATH alone (no process started): cheap enough for a hook."""
    failed = []
    if shutil.which("docker") is None:
        failed.append(_no_docker())
    if shutil.which("nvidia-smi") is None:
        failed.append(_no_gpu())
    return failed


def probe(image: str, timeout: float = PROBE_TIMEOUT_S) -> list[Check]:
    """Every container prerequisite, each as OK or missing with what was seen."""
    checks: list[Check] = []
    docker = shutil.which("docker")
    if docker is None:
        checks.append(_no_docker())
    else:
        ok, why = _run([docker, "info"], timeout)
        checks.append(Check("docker", ok, "docker info answered" if ok else f"docker info failed: {why}",
                            "" if ok else f"docker not working: {why}"))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        checks.append(_no_gpu())
    else:
        ok, why = _run([smi], timeout)
        checks.append(Check("gpu", ok, "nvidia-smi answered" if ok else f"nvidia-smi failed: {why}",
                            "" if ok else f"no GPU (nvidia-smi failed: {why})"))
    if checks[0].ok:
        ok, why = _run([docker, "image", "inspect", image], timeout)
        checks.append(Check("image", ok, f"{image} present locally" if ok
                            else f"{image} not present locally (docker pull {image})",
                            "" if ok else f"image not pulled: {image}"))
    else:
        checks.append(Check("image", False, f"{image} not checked: docker unavailable",
                            f"image not checked: {image}"))
    return checks


def decide(checks: list[Check], force: str = "auto") -> Decision:
    """Container only when every check passed; ``force`` picks one regardless (the caller
    refuses a forced docker with missing checks)."""
    missing = [c for c in checks if not c.ok]
    if force == "local":
        return Decision("local", "forced with --backend local", checks)
    if force == "docker":
        return Decision("docker", "forced with --backend docker", checks)
    if missing:
        return Decision("local", missing[0].reason, checks)
    return Decision("docker", "docker, GPU and the pinned image are present", checks)


def bank_python() -> str:
    """The interpreter for the bank's tools: ``$TAO_SKILL_BANK_PYTHON`` or this one."""
    return os.environ.get(PYTHON_ENV, "").strip() or sys.executable


def docker_argv(workspace: str | os.PathLike, image: str) -> list[str]:
    """The ``docker run`` prefix itself (what the launcher ends in; shown to the user).

    No --user: the image has no passwd entry for host uids (getpwuid KeyError);
    files come out root-owned, so chown them afterwards.
    """
    w = str(workspace)
    return [*DOCKER_RUN, "-v", f"{w}:{w}", "-w", w, image]


def docker_launch_argv(workspace: str | os.PathLike, image: str, bank: str | os.PathLike,
                       python: str | None = None) -> list[str]:
    """The container prefix of ``$DS``: ``scripts/docker_launch.py`` quotes the arguments so
    the image's entrypoint (join + shlex re-split + Hydra) keeps them whole, mounts the spec's
    folder read-only at a space-free path, then execs :func:`docker_argv` + the arguments."""
    return [python or bank_python(), str(Path(bank) / DOCKER_LAUNCHER),
            "--workspace", str(workspace), "--image", image, "--"]


def local_argv(bank: str | os.PathLike, python: str | None = None) -> list[str]:
    return [python or bank_python(), str(Path(bank) / LOCAL_RUNNER)]


def prefix_argv(backend: str, workspace: str | os.PathLike, image: str,
                bank: str | os.PathLike, python: str | None = None) -> list[str]:
    if backend == "docker":
        return docker_launch_argv(workspace, image, bank, python)
    return local_argv(bank, python)


def join(argv: list[str]) -> str:
    """One shell-safe string (paths with spaces stay single words under ``eval``)."""
    return shlex.join(argv)


CHOWN_HINT = ("the container runs as root (no --user: the image cannot resolve host uids), so "
              "the files it writes are root-owned; afterwards run: "
              'sudo chown -R "$(id -u):$(id -g)" <results_dir>')

QUOTING_NOTE = ("the container's entrypoint joins the arguments with spaces and splits them again: "
                "$DS quotes every override value that needs it (Hydra quoted string) and mounts "
                "the spec's folder read-only at /tao_aoi/spec, so paths with spaces work; an "
                "argument it cannot make safe is refused (exit 2) before docker starts")
