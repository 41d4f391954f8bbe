"""The Bash hook (hooks/check_script_output.py): which commands it reads and what it says."""
from __future__ import annotations

import json

import pytest
from test_hook_report_check import feedback, hook_env, run_hook

from tao_aoi.hooks import report_rules as rr
from tao_aoi.hooks.script_check import check, family_of

DS = '"$TAO_SKILL_BANK_PYTHON" "$TAO_SKILL_BANK_PATH/scripts/data_services.py"'
DOCKER = ("docker run --gpus all --rm --ipc=host -v /ws:/ws -w /ws "
          "nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services")


def bash(tmp_path, command, stdout="", stderr="", interrupted=False, **env):
    event = {"session_id": "s", "transcript_path": "", "cwd": str(tmp_path),
             "hook_event_name": "PostToolUse", "tool_name": "Bash",
             "tool_input": {"command": command, "description": "run"},
             "tool_response": {"stdout": stdout, "stderr": stderr, "interrupted": interrupted,
                               "isImage": False}}
    rc, out, err = run_hook("check_script_output.py", event, hook_env(tmp_path, **env))
    assert rc == 0, err
    return feedback(out)


@pytest.mark.parametrize("command,family", [
    (f"{DS} gap_analysis vcn_aoi -e spec.yaml", "rca"),
    (f"{DOCKER} gap_analysis vcn_aoi -e /ws/spec.yaml", "rca"),
    ("python3 $TAO_SKILL_BANK_PATH/scripts/spot_check.py --results r", "rca"),
    ("python3 scripts/draft_report.py r", "rca"),
    ("python3 scripts/route_samples.py --gaps g.parquet", "routing"),
    (f"{DS} embedding image_embeddings -e e.yaml", "mining"),
    ("$DS tmm  nearest_neighbors -e m.yaml", "mining"),
    ("python3 scripts/pool_to_parquet.py pool.csv", "mining"),
    ("python3 scripts/mining_ledger.py add", "mining"),
    ("python3 scripts/preflight.py --for mining", "mining"),
    ("python3 scripts/preflight.py --for routing", "routing"),
    ("python3 scripts/preflight.py", "rca"),
    ("docker run --rm hello-world", "rca"),
    ("ls -la && echo docker", None),
    ("git status", None),
    ("cat data_services.md", None),
])
def test_family_by_command(command, family):
    assert family_of(command) == family


def test_unrelated_and_clean_commands_are_quiet(tmp_path):
    assert bash(tmp_path, "ls /nonexistent", stderr="ls: cannot access '/nonexistent': No such "
                "file or directory\nTraceback (most recent call last):\nValueError: x") == ""
    assert bash(tmp_path, f"{DS} gap_analysis vcn_aoi -e /ws/spec.yaml",
                stdout="backend: local (no docker)\nthreshold: 0.42\nkept rows: 120\n") == ""


def test_traceback_and_usage_error(tmp_path):
    out = bash(tmp_path, f"{DS} gap_analysis vcn_aoi -e /ws/spec.yaml",
               stderr="Traceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n"
                      "    main()\nKeyError: 'siamese_score'\n")
    assert out.startswith("tao-aoi rca script check:")
    assert "crashed with `KeyError: 'siamese_score'`" in out
    out = bash(tmp_path, "python3 scripts/route_samples.py --gaps /x.parquet",
               stderr="route_samples: error: --gaps /x.parquet does not exist\n")
    assert "`route_samples: error: --gaps /x.parquet does not exist`" in out
    assert "tao-aoi routing script check" in out


def test_empty_output_from_analysis_command(tmp_path):
    command = f"{DS} embedding image_embeddings -e /ws/e.yaml"
    assert "printed nothing" in bash(tmp_path, command)
    assert bash(tmp_path, command + " > /ws/log.txt 2>&1") == ""     # redirected: silence expected
    assert bash(tmp_path, "python3 scripts/draft_report.py r") == ""   # not an analysis command
    assert "interrupted" in bash(tmp_path, command, interrupted=True)


@pytest.mark.parametrize("stderr,expected", [
    ("bash: docker: command not found", "docker is not usable"),
    ("docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", "docker is not usable"),
    ("Unable to find image 'nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services' locally\n"
     "docker: Error response from daemon: manifest unknown.", "`nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services` is not available"),
    ("docker: Error response from daemon: pull access denied for tao, repository does not exist",
     "`tao` is not available"),
    ("KeyError: 'getpwuid(): uid not found: 1000'", "drop `--user`"),
    ("docker: Error response from daemon: could not select device driver \"\" with capabilities: [[gpu]].",
     "no GPU is reachable"),
    ("nvidia-container-cli: initialization error: nvml error: driver not loaded", "no GPU is reachable"),
    ("FileNotFoundError: [Errno 2] No such file or directory: '/ws/exp/inference/inference.csv'",
     "`/ws/exp/inference/inference.csv` was not found inside the container"),
])
def test_docker_failure_modes(tmp_path, stderr, expected):
    command = (f"{DOCKER} gap_analysis vcn_aoi -e /ws/spec.yaml "
               "inference_results_dir=/ws/exp/inference results_dir=/ws/out")
    out = bash(tmp_path, command, stderr=stderr)
    assert expected in out


def test_successful_pull_is_not_a_failure(tmp_path):
    out = bash(tmp_path, f"{DOCKER} gap_analysis vcn_aoi -e /ws/spec.yaml",
               stdout="backend: docker\nthreshold 0.4\n",
               stderr="Unable to find image 'img:1' locally\n1: Pulling from x\nStatus: Downloaded newer image for img:1\n")
    assert out == ""


def test_docker_command_line_problems():
    command = ("docker run --gpus all --rm --user 1000:1000 -v /data/ws:/workspace -w /workspace "
               "img:1 gap_analysis vcn_aoi -e /workspace/spec.yaml results_dir=/tmp/out")
    bullets = check(command, "backend: docker", "")
    text = "\n".join(bullets)
    assert "do not pass `--user`" in text
    assert "maps the workspace to a different path" in text
    assert "`/tmp/out` is not under any `-v` mount" in text
    # same-path mount with everything under it, or an unexpanded $W: nothing static to say
    assert check(f"{DOCKER} gap_analysis vcn_aoi -e /ws/spec.yaml results_dir=/ws/out", "x", "") == []
    assert check('docker run --rm -v "$W":"$W" -w "$W" img tmm nearest_neighbors -e /else/m.yaml',
                 "x", "") == []


def test_missing_path_from_local_runner_and_unset_bank_path(tmp_path):
    out = bash(tmp_path, "python3 /scripts/data_services.py gap_analysis vcn_aoi -e /ws/s.yaml",
               stderr="python3: can't open file '/scripts/data_services.py': [Errno 2] No such file or directory")
    assert "`$TAO_SKILL_BANK_PATH` is empty" in out


@pytest.mark.parametrize("marker,expected", [
    (rr.MARK_UNREACHABLE, "skip the visual spot check"),
    (rr.MARK_DEGENERATE, "threshold_pinned_by"),
    (rr.MARK_LABEL_FILTER_NOOP, "the label filter did nothing"),
    (rr.MARK_DROPPED_LABELS, "Dropped Labels section"),
    (rr.MARK_MISSING_IMAGES, "kpi_media_path"),
    (rr.MARK_ENCODER_MISMATCH, "re-embed both with the same embedding_spec.yaml"),
    (rr.MARK_ENCODER_UNKNOWN, "Encoder Consistency"),
])
def test_markers(tmp_path, marker, expected):
    out = bash(tmp_path, f"{DS} gap_analysis vcn_aoi -e /ws/spec.yaml",
               stdout=f"backend: local\n{marker} details: LIFTED_LEAD, SHORT\n")
    assert expected in out
    if marker in (rr.MARK_DROPPED_LABELS, rr.MARK_LABEL_FILTER_NOOP):
        assert "LIFTED_LEAD, SHORT" in out   # the tool's own line is repeated


def test_failed_bash_call_is_checked_from_its_error_and_answered_as_a_failure(tmp_path):
    # Claude Code sends a non-zero exit as PostToolUseFailure: an `error`, no tool_response.
    event = {"session_id": "s", "transcript_path": "", "cwd": str(tmp_path),
             "hook_event_name": "PostToolUseFailure", "tool_name": "Bash",
             "tool_input": {"command": f"{DS} gap_analysis vcn_aoi -e /ws/spec.yaml"},
             "error": f"Exit code 1\nbackend: local\n{rr.MARK_UNREACHABLE}: no NO_PASS rows\n"}
    rc, out, err = run_hook("check_script_output.py", event, hook_env(tmp_path))
    assert rc == 0, err
    payload = json.loads(out)["hookSpecificOutput"]
    assert payload["hookEventName"] == "PostToolUseFailure"
    assert "skip the visual spot check" in payload["additionalContext"]


def test_toggles_silence_only_their_family(tmp_path):
    stderr = "Traceback (most recent call last):\nValueError: boom"
    assert bash(tmp_path, "python3 scripts/route_samples.py", stderr=stderr, ROUTING_HOOKS="0") == ""
    assert "boom" in bash(tmp_path, "python3 scripts/route_samples.py", stderr=stderr, RCA_HOOKS="0")
    assert bash(tmp_path, "python3 scripts/spot_check.py", stderr=stderr, RCA_HOOKS="false") == ""


# ------------------------------------------------------------- the container's own output
RUN_DS = '"$DS" gap_analysis vcn_aoi -e "$RCA/spec.yaml" results_dir="$RCA"'
HYDRA_TAIL = "\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"


def container_failure(error_line: str) -> str:
    return ("Error executing job with overrides: ['results_dir=/ws/rca']\n"
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.12/dist-packages/nvidia_tao_ds/rcca/gap_analysis/'
            'scripts/vcn_aoi.py", line 107, in compute_vcn_optimal_threshold\n'
            "    raise ValueError(\n"
            f"{error_line}\n{HYDRA_TAIL}Execution status: FAIL\n")


def test_container_pass_is_success():
    out = ("Threshold: 0.55\nBreakdown saved to /ws/rca/weak_samples_breakdown.txt\n"
           "Execution status: PASS\n")
    assert check(RUN_DS, out, "") == []
    assert check(f"{DOCKER} gap_analysis vcn_aoi -e /ws/spec.yaml results_dir=/ws/rca", out, "") == []


def test_container_fail_points_at_the_lines_above():
    out = container_failure("KeyError: 'input_map'")
    [bullet] = check(RUN_DS, out, "")
    assert "Execution status: FAIL" in bullet and "KeyError: 'input_map'" in bullet
    assert "crashed" not in bullet
    # no traceback: the last line before the status
    [bullet] = check(RUN_DS, "something broke here\nExecution status: FAIL\n", "")
    assert "something broke here" in bullet


def test_unreachable_target_follows_the_unreachable_branch():
    out = container_failure("ValueError: No threshold achieves 100% recall on the NO_PASS class.")
    [bullet] = check(RUN_DS, out, "")
    assert "unreachable" in bullet and "unreachable_kpi.txt" in bullet
    assert "completion step" in bullet and "100%" in bullet
    assert "crashed" not in bullet and "Execution status" not in bullet


def test_unreachable_already_handled_is_not_repeated():
    # the completion step ran in the same command and wrote unreachable_kpi.txt
    out = (container_failure("ValueError: No threshold achieves 95% recall on the NO_PASS class.")
           + f"{rr.MARK_UNREACHABLE}: no threshold reaches 95% recall; wrote /ws/rca/unreachable_kpi.txt\n")
    bullets = check(RUN_DS + " ; python3 scripts/complete_gap_analysis.py", out, "")
    assert len(bullets) == 1 and "abridged" in bullets[0]
    assert "completion step" not in bullets[0]


@pytest.mark.parametrize("error_line, expect", [
    ("ValueError: Inference CSV at /ws/inf/inference.csv contains no rows.", "no rows"),
    ("FileNotFoundError: Expected inference CSV at /ws/exp/inference.csv", "/inference`"),
    ("omegaconf.errors.MissingMandatoryValue: Missing mandatory value: train_config",
     "`train_config=<value>`"),
])
def test_container_value_errors(error_line, expect):
    [bullet] = check(RUN_DS, container_failure(error_line), "")
    assert expect in bullet and "crashed" not in bullet


def test_expected_csv_in_an_inference_folder_does_not_repeat_the_advice():
    out = container_failure("FileNotFoundError: Expected inference CSV at /ws/exp/inference/inference.csv")
    [bullet] = check(RUN_DS, out, "")
    assert "usually ends in `/inference`" not in bullet and "inference ran" in bullet


def test_mandatory_value_set_in_the_command_points_at_quoting():
    out = container_failure("omegaconf.errors.MissingMandatoryValue: Missing mandatory value: results_dir")
    [bullet] = check(RUN_DS, out, "")
    assert "did not reach the action" in bullet and "add `results_dir" not in bullet


def test_missing_spec_argument_and_missing_spec_file():
    out = ("ValueError: The subtask `vcn_aoi` requires the following argument: "
           "-e/--experiment_spec_file\n")
    [bullet] = check('"$DS" gap_analysis vcn_aoi results_dir=/ws/rca', out, "")
    assert "-e <spec.yaml>" in bullet
    out = "FileNotFoundError: Experiment spec file was not found at /elsewhere/spec.yaml\n"
    bullets = check(f"{DOCKER} gap_analysis vcn_aoi -e /elsewhere/spec.yaml", out, "")
    assert any("/elsewhere/spec.yaml" in b and '"$DS"' in b for b in bullets)
    bullets = check('"$DS" gap_analysis vcn_aoi -e /ws/nope.yaml', out, "")
    assert len(bullets) == 1 and '"$DS"' not in bullets[0]


def test_launcher_refusal_is_reported():
    err = ("ds_launcher: error: override key 'results dir' is not a plain key name; "
           "docker was not started\n")
    [bullet] = check('"$DS" gap_analysis vcn_aoi -e s.yaml "results dir=/x"', "", err)
    assert "results dir" in bullet and "fix that input" in bullet


def test_container_unreachable_through_the_hook(tmp_path):
    out = container_failure("ValueError: No threshold achieves 100% recall on the NO_PASS class.")
    text = bash(tmp_path, RUN_DS, stdout=out)
    assert "unreachable_kpi.txt" in text and "completion step" in text
