"""PostToolUse(Bash): read the output of the skill bank's tools and the container, say what broke.

Claude Code gives a Bash hook the command, stdout, stderr and ``interrupted`` -- never the exit
code -- so failures are recognised by what the tools print: tracebacks, usage errors
(``<prog>: error: ...``), docker's own messages, and the markers in ``report_rules``.

Relevance is decided from the command text alone, before anything else is imported: a Bash call
that runs none of our tools costs one substring scan. Feedback is one bullet per problem, each
saying what to do next; a clean run prints nothing.
"""
from __future__ import annotations

import re

from . import report_rules as rr
from .common import emit_context, enabled  # already loaded by the entry point

# (pattern in the command, family or None when it depends on the action words)
_TOOLS: tuple[tuple[str, str | None], ...] = (
    (r"gap_analysis\s+vcn_aoi", "rca"),
    (r"spot_check\.py", "rca"),
    (r"draft_report\.py", "rca"),
    (r"route_samples\.py", "routing"),
    (r"embedding\s+image_embeddings", "mining"),
    (r"tmm\s+nearest_neighbors", "mining"),
    (r"pool_to_parquet\.py", "mining"),
    (r"mining_ledger\.py", "mining"),
    (r"data_services\.py", None),
    (r"preflight\.py", None),
    (r"docker\s+run", None),
)
_QUICK = ("data_services.py", "docker", "gap_analysis", "image_embeddings", "nearest_neighbors",
          "route_samples.py", "spot_check.py", "draft_report.py", "preflight.py",
          "pool_to_parquet.py", "mining_ledger.py")
_TOOL_RE = re.compile("|".join(f"(?P<t{i}>{p})" for i, (p, _) in enumerate(_TOOLS)))
# Words that tie a generic command (preflight, a bare docker run) to a family.
_ACTION_WORDS = (("routing", re.compile(r"rout(?:e|ing)", re.I)),
                 ("mining", re.compile(r"embedding|nearest_neighbors|mining|\bmine\b|\btmm\b", re.I)),
                 ("rca", re.compile(r"gap_analysis|\brca\b", re.I)))
# Commands whose success always prints a summary: silence means something went wrong.
_ANALYSIS = re.compile(r"gap_analysis\s+vcn_aoi|embedding\s+image_embeddings|"
                       r"tmm\s+nearest_neighbors|route_samples\.py")
_OUR_PROGS = ("data_services", "route_samples", "spot_check", "draft_report", "preflight",
              "pool_to_parquet", "mining_ledger", "write_spec", "resolve_image",
              "sample_parquet", "dedupe_first_lighting", "resize_images", "demo",
              "gap_analysis", "image_embeddings", "nearest_neighbors", "ds_launcher")
_USAGE_LINE = re.compile(r"^(?P<prog>[\w.\-]+): error: (?P<msg>.+)$", re.M)
_TRACEBACK = "Traceback (most recent call last):"
_STDOUT_REDIRECT = re.compile(r"(?:^|[\s;|(])(?:1|&)?>>?\s*(?!&)[^\s&]")
_MAX_LINE = 300
# The image's entrypoint ends every run with this line (exit 1 on FAIL).
_STATUS = re.compile(r"^Execution status: (PASS|FAIL)\s*$", re.M)  # contract.EXECUTION_PASS/FAIL
_UNREACHABLE = re.compile(re.escape(rr.UNREACHABLE_TEXT) + r" (\S+?)% recall on the NO_PASS class\.")
_EMPTY_CSV = re.compile(r"Inference CSV at (.+?) contains no rows\.")
_NO_CSV = re.compile(r"Expected inference CSV at (.+?)\s*$", re.M)
_NO_SPEC_ARG = re.compile(r"requires the following argument: -e/--experiment_spec_file")
_SPEC_MISSING = re.compile(r"Experiment spec file was not found at (.+?)\s*$", re.M)
_MANDATORY = re.compile(r"Missing mandatory value: ?(\S*)")


def family_of(command: str) -> str | None:
    """The report family a command belongs to, or ``None`` when it runs none of our tools."""
    if not any(q in command for q in _QUICK):
        return None
    generic = False
    for match in _TOOL_RE.finditer(command):
        fam = _TOOLS[int(match.lastgroup[1:])][1]
        if fam:
            return fam
        generic = True
    if not generic:
        return None
    for fam, words in _ACTION_WORDS:
        if words.search(command):
            return fam
    return "rca"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LINE else text[:_MAX_LINE - 3] + "..."


def _marker_line(text: str, marker: str) -> str:
    for line in text.splitlines():
        if marker in line:
            return _short(line)
    return marker


def _exception_line(output: str) -> str:
    tail = output[output.rfind(_TRACEBACK):]
    lines = [ln for ln in tail.splitlines()[1:] if ln.strip() and not ln.startswith((" ", "\t"))]
    return _short(lines[0]) if lines else "an exception"


def _last_line_before_status(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()
             and not _STATUS.match(ln) and "HYDRA_FULL_ERROR" not in ln]
    return _short(lines[-1]) if lines else "no output"


def _docker_segment(command: str) -> list[str] | None:
    """Tokens of the first ``docker run`` in the command, up to the end of that command."""
    import shlex

    start = re.search(r"docker\s+run\b", command)
    if not start:
        return None
    text = command[start.start():].replace("\\\n", " ").replace("\n", " ; ")
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
    except ValueError:
        tokens = text.split()
    out = []
    for tok in tokens:
        if tok and set(tok) <= set(";&|()"):
            break
        out.append(tok)
    return out


_DOCKER_VALUE_OPTS = {"-v", "--volume", "-w", "--workdir", "-e", "--env", "--env-file", "--mount",
                      "--name", "--ipc", "--gpus", "--user", "-u", "--network", "--net",
                      "--shm-size", "--entrypoint", "--runtime", "-p", "--publish", "--device",
                      "--label", "-l", "--cpus", "--memory", "-m", "--ulimit", "--platform",
                      "--pull", "--hostname", "-h", "--add-host", "--cap-add", "--cap-drop",
                      "--security-opt", "--tmpfs", "--log-driver", "--restart", "--cidfile",
                      "--group-add", "--pid", "--uts", "--cgroupns", "--stop-signal"}


def _docker_mount_problems(tokens: list[str]) -> list[str]:
    """Static checks on a docker run line: --user, mounts not at the same path, paths outside mounts."""
    problems: list[str] = []
    mounts: list[str] = []
    image_at = None
    i = 2  # skip "docker run"
    user = False
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("-"):
            image_at = i
            break
        name, eq, value = tok.partition("=")
        if not eq and name in _DOCKER_VALUE_OPTS:
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
            i += 1
        if name in ("-u", "--user"):
            user = True
        if name in ("-v", "--volume"):
            parts = value.split(":")
            if len(parts) >= 2:
                src, dst = parts[0], parts[1]
                mounts.append(dst)
                if src.rstrip("/") != dst.rstrip("/"):
                    problems.append(f"the mount `-v {src}:{dst}` maps the workspace to a different "
                                    "path inside the container, so paths in the spec will not "
                                    "resolve: mount it at the same path (`-v $W:$W -w $W`).")
        if name == "--mount":
            m = re.search(r"(?:target|destination|dst)=([^,]+)", value)
            if m:
                mounts.append(m.group(1))
        i += 1
    if user:
        problems.append("do not pass `--user` to docker run: the image has no passwd entry for your "
                        "uid (getpwuid KeyError); run as root and `chown -R $(id -u):$(id -g)` the "
                        "results folder afterwards.")
    if image_at is None or any("$" in m for m in mounts):
        return problems
    outside = []
    for tok in tokens[image_at + 1:]:
        value = tok.split("=", 1)[1] if "=" in tok and not tok.startswith("/") else tok
        if value.startswith("/") and not any(value == m.rstrip("/") or value.startswith(m.rstrip("/") + "/")
                                             for m in mounts):
            outside.append(value)
    if outside:
        shown = ", ".join(f"`{p}`" for p in outside[:4])
        problems.append(f"{shown} {'is' if len(outside) == 1 else 'are'} not under any `-v` mount "
                        f"({', '.join(mounts) or 'no mounts'}), so the container cannot see "
                        f"{'it' if len(outside) == 1 else 'them'}: keep every spec and data path "
                        "under the workspace and mount it with `-v $W:$W -w $W`.")
    return problems


_QUOTED_PATH = re.compile(r"['\"`](/[^'\"`\n]+)['\"`]|(?<![\w/])(/[\w.\-/]+)")


def _missing_paths(output: str, command: str) -> list[str]:
    """Paths reported missing that the command names (or lie under a path the command names)."""
    named = [m.group(1) or m.group(2) for m in _QUOTED_PATH.finditer(command)]
    named += re.findall(r"(?:^|[\s=])(/[^\s'\"`;&|]+)", command)
    found: list[str] = []
    for line in output.splitlines():
        if "No such file or directory" not in line and "can't open file" not in line:
            continue
        for m in _QUOTED_PATH.finditer(line):
            path = m.group(1) or m.group(2)
            path = path.rstrip(".,:;)") if path else path
            if not path or path in found:
                continue
            if path.startswith("/scripts/") or any(
                    n and (path == n.rstrip("/") or path.startswith(n.rstrip("/") + "/")
                           or n.startswith(path.rstrip("/") + "/")) for n in named):
                found.append(path)
    return found


def _container_errors(out: str, command: str, is_docker: bool) -> list[str]:
    """Bullets for the error texts of NVIDIA's data-services code (container or oracle)."""
    bullets: list[str] = []
    m = _UNREACHABLE.search(out)
    if m and rr.MARK_UNREACHABLE not in out and rr.RCA_UNREACHABLE_FILE not in out:
        bullets.append(f"`{_short(m.group(0))}` -- the recall target ({m.group(1)}%) is "
                       "unreachable: that is a result, not a crash. Follow the unreachable branch: "
                       "run the completion step now (it writes unreachable_kpi.txt), skip the "
                       "visual spot check and write the abridged RCA_Report.md; do not change "
                       "min_recall or the threshold to make the run pass.")
    m = _EMPTY_CSV.search(out)
    if m:
        bullets.append(f"`{_short(m.group(1))}` has a header but no rows: TAO inference produced "
                       "nothing to analyse; rerun inference (or point inference_results_dir at "
                       "the folder of a non-empty inference.csv) before going on.")
    m = _NO_CSV.search(out)
    if m:
        folder = m.group(1).rstrip("/")
        folder = folder[:-len("/inference.csv")] if folder.endswith("/inference.csv") else folder
        if folder.rstrip("/").endswith("/inference"):
            hint = ("check that TAO inference ran and wrote it there (and, with docker, that "
                    "the folder is under the mounted workspace)")
        else:
            hint = ("a TAO inference run writes it to `<inference results_dir>/inference/"
                    "inference.csv`, so the key usually ends in `/inference`")
        bullets.append(f"no inference.csv directly inside `{_short(folder)}`: "
                       "`inference_results_dir` must be the folder that holds inference.csv "
                       f"(it is not searched); {hint}.")
    if _NO_SPEC_ARG.search(out):
        bullets.append("the container requires the spec file: add `-e <spec.yaml>` after the "
                       "action, even when every key is given as an override.")
    m = _SPEC_MISSING.search(out)
    if m:
        where = ("; a raw docker run sees only mounted folders, so run it through \"$DS\" "
                 "(which mounts the spec's folder) or keep the spec under the `-v` workspace"
                 if is_docker else "")
        bullets.append(f"the spec file `{_short(m.group(1))}` was not found: check the `-e` "
                       f"path{where}.")
    m = _MANDATORY.search(out)
    if m:
        key = (m.group(1) or "").strip(".,:") or "a key"
        if key != "a key" and re.search(rf"(?:^|[\s'\"]){re.escape(key)}=", command):
            bullets.append(f"`{key}` is still `???` although the command sets `{key}=`: the "
                           "override did not reach the action; check its quoting and run it "
                           "through \"$DS\" (which quotes values for the container).")
        else:
            bullets.append(f"`{key}` is `???` (mandatory) in the spec and nothing set it: add "
                           f"`{key}=<value>` to the command or fill it in the spec.")
    return bullets


# What to do about each marker line a tool printed (the line itself is quoted first).
_MARKER_ADVICE = (
    (rr.MARK_DEGENERATE, "lead the report's Verdict with this: name the samples that hold the "
                         "threshold down (metrics.json threshold_pinned_by: relabel or confirm "
                         "them) and what the relaxed target would cost (operating_curve)."),
    (rr.MARK_LABEL_FILTER_NOOP, "the label filter did nothing, so the mined set is unfiltered: "
                                "add a `label` column to both parquets and rerun, or state it in "
                                "the report."),
    (rr.MARK_ENCODER_MISMATCH, "the two embedding parquets come from different encoders, so "
                               "distances between them mean little: re-embed both with the same "
                               "embedding_spec.yaml."),
    (rr.MARK_ENCODER_UNKNOWN, "encoder consistency cannot be verified: say so in the report's "
                              "Encoder Consistency section."),
    (rr.MARK_DROPPED_LABELS, "these labels reach neither module: list them in the report's "
                             "Dropped Labels section with a next step."),
    (rr.MARK_MISSING_IMAGES, "check `kpi_media_path` and `image_ext` against the files on disk "
                             "before trusting the spot check."),
)


def check(command: str, stdout: str, stderr: str, interrupted: bool = False,
          background: bool = False) -> list[str]:
    """Bullets (without the leading dash) for every problem seen in one tool call's output."""
    out = f"{stdout}\n{stderr}"
    bullets: list[str] = []
    is_docker = bool(re.search(r"docker\s+run\b", command))
    if interrupted:
        bullets.append("the command was interrupted before it finished: its artifacts are "
                       "incomplete; rerun it (in the background for long runs) before going on.")
    bullets += _docker_problems(out, command, is_docker)
    bullets += _missing_file_problems(out, command, is_docker)
    bullets += _failures(out, command, is_docker)
    bullets += _marker_problems(out)
    # Silence from a command that always prints a summary.
    if (not out.strip() and not interrupted and not background and _ANALYSIS.search(command)
            and not _STDOUT_REDIRECT.search(command)):
        bullets.append("the command printed nothing, but a successful run prints a summary "
                       "(backend, counts, output paths): check that it ran at all (`echo $?`, the "
                       "`$DS` prefix is set) and that the results folder holds new artifacts.")
    return bullets


def _docker_problems(out: str, command: str, is_docker: bool) -> list[str]:
    """Docker environment failures, and docker run flags that break the container."""
    bullets = []
    if re.search(r"docker: command not found|docker: not found|Cannot connect to the Docker daemon|"
                 r"permission denied while trying to connect to the Docker daemon", out):
        bullets.append("docker is not usable on this machine: run `scripts/preflight.py` and use the "
                       "`$DS` prefix it prints (the local runner has the same command line).")
    pull = re.search(r"pull access denied for ([^\s,]+)|manifest for (\S+) not found|"
                     r"manifest unknown|unauthorized: authentication required", out)
    unpulled = re.search(r"Unable to find image '([^']+)' locally", out)
    if pull or (unpulled and not re.search(r"Status: Downloaded|Pull complete", out)):
        image = (unpulled and unpulled.group(1)) or (pull and (pull.group(1) or pull.group(2))) or "the image"
        bullets.append(f"the container image `{image}` is not available: `docker login nvcr.io` "
                       "with your NGC key, then `docker pull` the exact tag pinned in versions.yaml "
                       "(`scripts/resolve_image.py`), never `:latest`.")
    if "getpwuid" in out:
        bullets.append("getpwuid KeyError inside the container: drop `--user` from docker run (the "
                       "image runs as root) and `chown -R $(id -u):$(id -g)` the results folder "
                       "after the run.")
    if re.search(r"could not select device driver|nvidia-container-cli|no CUDA-capable device|"
                 r"CUDA driver version is insufficient|Found no NVIDIA driver|"
                 r"NVIDIA driver on your system is too old", out, re.I):
        bullets.append("no GPU is reachable from the container: check `nvidia-smi` and the NVIDIA "
                       "container toolkit, or rerun `scripts/preflight.py` and use the local runner "
                       "it selects.")
    if is_docker:
        tokens = _docker_segment(command) or []
        for problem in _docker_mount_problems(tokens):
            if "--user" in problem and any("getpwuid" in b for b in bullets):
                continue
            bullets.append(problem)
    return bullets


def _missing_file_problems(out: str, command: str, is_docker: bool) -> list[str]:
    """Files named in the command that the tool could not find."""
    bullets = []
    for path in _missing_paths(out, command):
        if path.startswith("/scripts/"):
            bullets.append(f"`{path}` does not exist: `$TAO_SKILL_BANK_PATH` is empty; start a new "
                           "session so the plugin exports it, or set it to the skill bank root.")
        else:
            where = (" inside the container: mount the folder holding it at the same path "
                     "(`-v $W:$W -w $W`)" if is_docker else ": check the path and the spec keys")
            bullets.append(f"`{path}` was not found{where}.")
    return bullets


def _failures(out: str, command: str, is_docker: bool) -> list[str]:
    """NVIDIA's data-services errors and final status line, then crashes and usage errors of
    our tools (a crash the container already explained is not repeated)."""
    known = _container_errors(out, command, is_docker)
    bullets = list(known)
    statuses = _STATUS.findall(out)
    failed = bool(statuses) and statuses[-1] == "FAIL"
    if failed and not known and not (rr.MARK_UNREACHABLE in out and _UNREACHABLE.search(out)):
        cause = _exception_line(out) if _TRACEBACK in out else _last_line_before_status(out)
        bullets.append(f"the container action failed (`Execution status: FAIL`); the cause is in "
                       f"the lines above it: `{cause}`. Fix that and rerun; do not continue "
                       "with the artifacts of this run.")
    if _TRACEBACK in out and not failed and not known:
        bullets.append(f"the tool crashed with `{_exception_line(out)}`: read the traceback, fix "
                       "the cause and rerun; do not continue with the artifacts of this run.")
    seen = set()
    for m in _USAGE_LINE.finditer(out):
        prog = m.group("prog").removesuffix(".py")
        line = _short(m.group(0))
        if prog in _OUR_PROGS and line not in seen:
            seen.add(line)
            bullets.append(f"`{line}` -- fix that input and rerun (the tool wrote nothing).")
    return bullets


def _marker_problems(out: str) -> list[str]:
    """What each marker our tools printed asks of the agent."""
    bullets = []
    if rr.MARK_UNREACHABLE in out:
        bullets.append("the recall target is unreachable (unreachable_kpi.txt): stop the analysis "
                       "here, skip the visual spot check, and write the abridged RCA_Report.md "
                       "(Verdict, Threshold Selection, Unreachable KPI quoting the file, Recommended "
                       "Actions: retrain or relabel).")
    for marker, advice in _MARKER_ADVICE:
        if marker in out:
            bullets.append(f"{_marker_line(out, marker)} -- {advice}")
    return bullets


def handle(event: dict) -> None:
    """Hook body for ``hooks/check_script_output.py``."""
    if event.get("tool_name") != "Bash":
        return
    tool_input = event.get("tool_input") or {}
    command = tool_input.get("command") or ""
    if not isinstance(command, str):
        return
    family = family_of(command)
    if family is None or not enabled(family):
        return
    response = event.get("tool_response")
    if response is None and "error" in event:
        # A Bash call that exits non-zero arrives as PostToolUseFailure: no tool_response, an
        # ``error`` holding "Exit code N", stdout and stderr run together.
        response = {"stderr": str(event.get("error") or "")}
    if not isinstance(response, dict):
        response = {"stdout": str(response or "")}
    bullets = check(command, str(response.get("stdout") or ""), str(response.get("stderr") or ""),
                    interrupted=bool(response.get("interrupted")),
                    background=bool(tool_input.get("run_in_background")
                                    or response.get("backgroundTaskId")))
    if bullets:
        emit_context(event, [f"tao-aoi {family} script check:"] + [f"- {b}" for b in bullets])
