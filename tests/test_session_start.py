"""hooks/session_start.py run for real: stdin JSON in, env file / venv bootstrap / context out.

The pip step is replaced through TAO_AOI_PIP_INSTALL by a small shell command, so the
background install really runs (venv creation, lock, markers, log) without PyPI.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_preflight import IMAGE, fake_tools

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "hooks" / "session_start.py"
EVENT = {"session_id": "sess-1", "hook_event_name": "SessionStart", "cwd": "/tmp",
         "transcript_path": "/tmp/t.jsonl", "source": "startup"}


class Sandbox:
    """A throwaway HOME, plugin data dir, env file and PATH (no docker unless added)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.home = tmp / "home"
        self.data = tmp / "plugin data"
        self.env_file = tmp / "claude env" / "env.sh"
        self.bin = tmp / "bin"
        self.home.mkdir()
        self.bin.mkdir()
        for tool in ("sh", "sleep", "cat", "tail", "echo"):
            found = shutil.which(tool)
            if found:
                (self.bin / tool).symlink_to(found)
        self.counter = tmp / "installs.txt"
        # the stand-in for "pip install <deps>": counts itself, records its args, takes a moment
        self.pip = (f"sh -c 'echo \"$*\" >> {shlex.quote(str(self.counter))}; sleep 1' fake-pip")
        self.root = REPO

    def env(self, **extra: str) -> dict:
        env = {"PATH": str(self.bin), "HOME": str(self.home), "LANG": "C.UTF-8",
               "CLAUDE_ENV_FILE": str(self.env_file), "CLAUDE_PLUGIN_DATA": str(self.data),
               "CLAUDE_PLUGIN_ROOT": str(self.root), "TAO_AOI_PIP_INSTALL": self.pip}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def fire(self, stdin: str | None = None, **extra) -> subprocess.CompletedProcess:
        stdin = json.dumps(EVENT) if stdin is None else stdin
        return subprocess.run([sys.executable, str(HOOK)], input=stdin, capture_output=True,
                              text=True, env=self.env(**extra), timeout=60)

    def exports(self) -> list[str]:
        return self.env_file.read_text().splitlines()

    def venvs(self, base: Path | None = None) -> list[Path]:
        d = (base or self.data) / "venvs"
        return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def wait_ready(self, base: Path | None = None, timeout: float = 60) -> Path:
        deadline = time.time() + timeout
        while time.time() < deadline:
            done = [v for v in self.venvs(base) if (v / ".tao-aoi-ready").is_file()]
            locks = list(((base or self.data) / "venvs").glob("*.lock"))
            if done and not locks:
                return done[0]
            time.sleep(0.1)
        raise AssertionError("background install did not finish")

    def wait_no_lock(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while list((self.data / "venvs").glob("*.lock")):
            assert time.time() < deadline, "installer never released its lock"
            time.sleep(0.1)


@pytest.fixture
def box(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


def plugin_copy(tmp: Path, deps: list[str], name: str = "plug in") -> Path:
    """A minimal plugin root (manifest + pyproject) with the given dependency list."""
    root = tmp / name
    (root / ".claude-plugin").mkdir(parents=True)
    shutil.copy(REPO / ".claude-plugin" / "plugin.json", root / ".claude-plugin" / "plugin.json")
    shutil.copy(REPO / "versions.yaml", root / "versions.yaml")
    dep_lines = ", ".join(json.dumps(d) for d in deps)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "x"\nversion = "0"\ndependencies = [{dep_lines}]\n'
        '[project.optional-dependencies]\nembeddings = ["fake-encoder-pkg>=1"]\n')
    return root


def test_exports_are_written_quoted_and_usable(box, tmp_path):
    box.root = plugin_copy(tmp_path, ["pyyaml>=6"])  # a path with a space
    proc = box.fire()
    assert proc.returncode == 0, proc.stderr
    wrapper = box.data / "bin" / "tao-python"
    assert box.exports() == [f"export TAO_SKILL_BANK_PATH={shlex.quote(str(box.root))}",
                             f"export TAO_SKILL_BANK_PYTHON={shlex.quote(str(wrapper))}"]
    sourced = subprocess.run(["bash", "-c", f'. {shlex.quote(str(box.env_file))}; '
                              'printf "%s\\n" "$TAO_SKILL_BANK_PATH" "$TAO_SKILL_BANK_PYTHON"'],
                             capture_output=True, text=True)
    assert sourced.stdout.splitlines() == [str(box.root), str(wrapper)]
    assert os.access(wrapper, os.X_OK)
    out = proc.stdout
    assert "[tao-aoi 0.1.0]" in out
    assert "installing in the background" in out and str(box.data / "venvs") in out
    assert "local (docker not found)" in out
    for skill in ("tao-analyze-gaps-visual-changenet", "tao-route-visual-changenet-samples",
                  "tao-mine-aoi-images"):
        assert f"tao-aoi:{skill}" in out
    assert '"${TAO_SKILL_BANK_PYTHON:-python3}" "$TAO_SKILL_BANK_PATH/scripts/<tool>.py"' in out
    box.wait_ready()


def test_firing_twice_adds_no_line_and_starts_one_install(box):
    first = box.fire()
    second = box.fire()  # while the first install is still running
    assert first.returncode == second.returncode == 0
    assert len(box.exports()) == 2
    assert "installing" in second.stdout
    venv_dir = box.wait_ready()
    third = box.fire()  # now ready: same exported value, still no new line
    assert len(box.exports()) == 2
    assert f"ready ({venv_dir})" in third.stdout
    installs = box.counter.read_text().splitlines()
    assert len(installs) == 1
    # the real dependency list of the bank went to the installer
    assert "pyyaml>=6" in installs[0].split() and "pandas>=2.1" in installs[0].split()


def test_wrapper_waits_for_the_install_then_runs_the_venv_python(box):
    box.fire()
    wrapper = box.data / "bin" / "tao-python"
    proc = subprocess.run([str(wrapper), "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, env=box.env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    venv_dir = box.wait_ready()
    assert proc.stdout.strip() == str(venv_dir)
    assert "waiting for the skill bank's Python environment" in proc.stderr


def test_failed_install_reports_log_tail_and_is_not_restarted(box):
    box.pip = f"sh -c 'echo \"$*\" >> {shlex.quote(str(box.counter))}; echo boom-no-wheel >&2; exit 3' pip"
    box.fire()
    box.wait_no_lock()
    wrapper = box.data / "bin" / "tao-python"
    proc = subprocess.run([str(wrapper), "-c", "print(1)"], capture_output=True, text=True,
                          env=box.env(), timeout=60)
    assert proc.returncode == 1
    assert "failed" in proc.stderr and "boom-no-wheel" in proc.stderr
    again = box.fire()
    assert "install failed" in again.stdout and ".log" in again.stdout
    time.sleep(0.5)
    assert len(box.counter.read_text().splitlines()) == 1  # no second attempt right away
    failed_marker = next((box.data / "venvs").glob("*.failed"))
    assert str(failed_marker) in again.stdout  # the context says how to retry
    failed_marker.unlink()
    retry = box.fire()
    assert "installing" in retry.stdout
    box.wait_no_lock()
    assert len(box.counter.read_text().splitlines()) == 2


def test_wrapper_gives_up_after_its_wait_limit(box):
    box.pip = "sh -c 'sleep 30' slow-pip"
    box.fire()
    lock = next((box.data / "venvs").glob("*.lock"))
    try:
        proc = subprocess.run([str(box.data / "bin" / "tao-python"), "-c", "print(1)"],
                              capture_output=True, text=True, timeout=60,
                              env=box.env(TAO_AOI_WAIT_LIMIT_S="2"))
        assert proc.returncode == 1
        assert "gave up after 2s" in proc.stderr and "waiting for" in proc.stderr
    finally:
        deadline = time.time() + 10
        while not lock.read_text().strip() and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(int(lock.read_text()), signal.SIGTERM)  # the installer leads its own group


def test_wrapper_gives_up_when_no_installer_runs(box):
    box.fire()
    box.wait_ready()
    venv_dir = box.venvs()[0]
    (venv_dir / ".tao-aoi-ready").unlink()  # not ready, no lock, no failure verdict
    proc = subprocess.run([str(box.data / "bin" / "tao-python"), "-c", "print(1)"],
                          capture_output=True, text=True, env=box.env(), timeout=60)
    assert proc.returncode == 1 and "no install is running" in proc.stderr


def test_stale_lock_of_a_dead_installer_is_replaced(box):
    box.fire()
    box.wait_ready()
    venv_dir = box.venvs()[0]
    (venv_dir / ".tao-aoi-ready").unlink()
    dead = subprocess.Popen(["true"], env=box.env(), executable=shutil.which("true"))
    dead.wait()
    (box.data / "venvs" / f"{venv_dir.name}.lock").write_text(str(dead.pid))
    proc = box.fire()
    assert "installing" in proc.stdout
    box.wait_ready()
    assert len(box.counter.read_text().splitlines()) == 2


def test_secret_values_never_leak_but_names_are_listed(box):
    secrets = {"NGC_API_KEY": "sk-ngc-SECRET-1111", "HF_TOKEN": "hf_SECRET_2222",
               "AWS_SECRET_ACCESS_KEY": "aws-SECRET-3333", "MY_SERVICE_TOKEN": "svc-SECRET-4444",
               "ACME_API_KEY": "acme-SECRET-5555", "OPENAI_API_KEY": ""}
    proc = box.fire(**secrets)
    box.wait_ready()
    box.fire(**secrets)
    listed = next(l for l in proc.stdout.splitlines() if l.startswith("Credentials set"))
    for name in ("NGC_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_SERVICE_TOKEN", "ACME_API_KEY"):
        assert name in listed
    assert "OPENAI_API_KEY" not in listed  # set but empty
    written = [proc.stdout, proc.stderr, box.env_file.read_text()]
    written += [p.read_text(errors="replace") for p in box.data.rglob("*.log")]
    written += [p.read_text(errors="replace") for p in box.data.rglob("*") if p.is_file()
                and p.stat().st_size < 100_000 and p.suffix in ("", ".txt", ".failed", ".lock")
                and "bin/python" not in str(p)]
    for value in filter(None, secrets.values()):
        assert not any(value in text for text in written), value


@pytest.mark.parametrize("stdin", ["", "not json {", "[1, 2]", "null"])
def test_malformed_stdin_exits_zero_and_still_exports(box, stdin):
    proc = box.fire(stdin=stdin)
    assert proc.returncode == 0
    assert len(box.exports()) == 2
    assert "TAO Visual ChangeNet" in proc.stdout
    box.wait_no_lock()


def test_provided_python_is_reused(box):
    proc = box.fire(TAO_SKILL_BANK_PYTHON=sys.executable)
    assert f"export TAO_SKILL_BANK_PYTHON={shlex.quote(sys.executable)}" in box.exports()
    assert "provided by environment" in proc.stdout
    assert box.venvs() == [] and not box.counter.exists()


def test_non_executable_python_is_not_reused(box, tmp_path):
    bogus = tmp_path / "not-a-python"
    bogus.write_text("")
    proc = box.fire(TAO_SKILL_BANK_PYTHON=str(bogus))
    assert "provided by environment" not in proc.stdout
    assert f"export TAO_SKILL_BANK_PYTHON={shlex.quote(str(box.data / 'bin' / 'tao-python'))}" in box.exports()
    box.wait_ready()


def test_bootstrap_disabled_exports_python3(box):
    proc = box.fire(TAO_AOI_BOOTSTRAP="0")
    assert "export TAO_SKILL_BANK_PYTHON=python3" in box.exports()
    assert "bootstrap disabled" in proc.stdout
    assert box.venvs() == [] and not box.counter.exists()


def test_venv_key_follows_the_dependency_list(box, tmp_path):
    box.root = plugin_copy(tmp_path, ["pyyaml>=6", "tqdm>=4"], "a")
    box.fire()
    key_a = box.wait_ready().name
    box.root = plugin_copy(tmp_path, ["tqdm>=4", "pyyaml>=6"], "b")  # same set, other order
    box.fire()
    assert [v.name for v in box.venvs()] == [key_a]
    box.root = plugin_copy(tmp_path, ["pyyaml>=6", "tqdm>=4", "numpy>=1.26"], "c")
    proc = box.fire()
    assert "installing" in proc.stdout
    box.wait_ready()
    keys = {v.name for v in box.venvs()}
    assert len(keys) == 2 and key_a in keys
    runs = box.counter.read_text().splitlines()
    assert len(runs) == 2 and "numpy>=1.26" in runs[1]


def test_extras_add_their_dependencies_under_a_new_key(box, tmp_path):
    box.root = plugin_copy(tmp_path, ["pyyaml>=6"])
    box.fire()
    plain = box.wait_ready().name
    box.fire(TAO_AOI_EXTRAS="embeddings")
    box.wait_ready()
    keys = {v.name for v in box.venvs()}
    assert len(keys) == 2 and plain in keys
    assert "fake-encoder-pkg>=1" in box.counter.read_text().splitlines()[-1]


def test_without_plugin_data_falls_back_to_home_cache(box):
    proc = box.fire(CLAUDE_PLUGIN_DATA=None)
    assert proc.returncode == 0
    cache = box.home / ".cache" / "tao-aoi"
    assert f"export TAO_SKILL_BANK_PYTHON={shlex.quote(str(cache / 'bin' / 'tao-python'))}" in box.exports()
    box.wait_ready(base=cache)


def test_backend_line_with_docker_and_gpu_present(box):
    fake_tools(box.bin)
    proc = box.fire(TAO_AOI_BOOTSTRAP="0")
    assert "Data-services backend: docker (" in proc.stdout
    fake_tools(box.bin, image=False)
    proc = box.fire(TAO_AOI_BOOTSTRAP="0")
    assert f"Data-services backend: local (image not pulled: {IMAGE})" in proc.stdout


def test_no_gpu_decides_local_without_running_docker(box):
    fake_tools(box.bin, gpu=False)
    proc = box.fire(TAO_AOI_BOOTSTRAP="0")
    assert "Data-services backend: local (no GPU" in proc.stdout
    assert not (box.bin / "docker.calls").exists()


def test_without_pyyaml_the_preflight_decides(box):
    fake_tools(box.bin)
    # -S: no site-packages, i.e. a bare python3 without PyYAML
    proc = subprocess.run([sys.executable, "-S", str(HOOK)], input=json.dumps(EVENT),
                          capture_output=True, text=True, env=box.env(TAO_AOI_BOOTSTRAP="0"))
    assert proc.returncode == 0
    assert "Data-services backend: undecided" in proc.stdout and "preflight.py decides" in proc.stdout
    assert not (box.bin / "docker.calls").exists()
