"""Benchmark the PostToolUse hooks: the cost they add to every tool call, and packaging time.

Measures, with the real entry points run as Claude Code runs them (a fresh ``python3`` process
with the flags hooks/hooks.json gives it, fed the event on stdin):

* ignored-event latency of ``check_script_output.py`` (a plain ``echo``) and
  ``on_report_written.py`` (a Write to ``notes.md``): median of 20 runs, target < 150 ms;
* packaging a report with a 50 MB transcript (redaction streamed line by line): the whole hook
  process, median of 3 runs, target < 2 s; plus the redaction throughput alone.

Every row also gives the CPU time (user + system) of the measured process: on a shared machine
the wall time grows with other load, the CPU time much less.

Run: ``python3 benchmarks/bench_hooks.py [--python python3] [--transcript-mb 50] [--json]``
(the folder it builds lives in a temporary directory and is removed afterwards).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tao_aoi.hooks import report_rules as rr  # noqa: E402


def fake_transcript(path: Path, megabytes: float, seed: int = 0) -> int:
    """A Claude Code style JSONL session of about ``megabytes`` MB; returns the line count."""
    rng = random.Random(seed)
    words = ("threshold recall precision label PASS NO_PASS weakness kpi_gaps parquet spec "
             "docker backend local runner lighting Coaxial image sample mined embedding").split()
    image = base64.b64encode(rng.randbytes(60_000)).decode()
    target = int(megabytes * 1024 * 1024)
    size = lines = 0
    with open(path, "w", encoding="utf-8") as fh:
        while size < target:
            kind = rng.random()
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 400)))
            if kind < 0.4:
                rec = {"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}}
            elif kind < 0.7:
                rec = {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash",
                       "input": {"command": f"export HF_TOKEN=hf_{'x' * 34}\n$DS gap_analysis vcn_aoi "
                                            f"-e spec.yaml top_k_per_label=50 # {text[:200]}"}}]}}
            elif kind < 0.97:
                rec = {"type": "user", "toolUseResult": {"stdout": "\n".join([text] * rng.randint(1, 20)),
                                                         "stderr": "", "interrupted": False}}
            else:
                rec = {"type": "user", "message": {"content": [{"type": "image", "source": {
                    "type": "base64", "media_type": "image/png", "data": image}}]}}
            line = json.dumps(rec) + "\n"
            fh.write(line)
            size += len(line)
            lines += 1
    return lines


def real_python3() -> str:
    """The interpreter ``python3`` resolves to, past any pyenv-style shim script."""
    try:
        out = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                             capture_output=True, text=True, check=True, timeout=30)
        return out.stdout.strip() or sys.executable
    except (OSError, subprocess.SubprocessError):
        return sys.executable


def interpreter_flags(script: str) -> list[str]:
    """The flags hooks/hooks.json passes to python3 for ``script`` (e.g. ``-S``)."""
    import shlex

    registrations = json.loads((REPO / "hooks" / "hooks.json").read_text())["hooks"]
    for groups in registrations.values():
        for group in groups:
            for hook in group["hooks"]:
                if script in hook["command"]:
                    return shlex.split(hook["command"])[1:-1]
    return []


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_hook(python: str, script: str, event: dict, env: dict) -> tuple[float, str, float]:
    """(wall seconds, stdout, CPU seconds of the hook process: user + system)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run([python, *interpreter_flags(script), str(REPO / "hooks" / script)],
                          input=json.dumps(event),
                          capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{script} exited {proc.returncode}: {proc.stderr}")
    return elapsed, proc.stdout, cpu


def make_folder(root: Path) -> Path:
    """A minimal results folder for packaging (artifacts do not matter for the timing)."""
    folder = root / "exp" / "rca_results" / "2024-05-01_101500"
    folder.mkdir(parents=True)
    (folder / "vcn_aoi_spec.yaml").write_text("inference_results_dir: /nowhere\n")
    (folder / "RCA_Report.md").write_text("## 1. Verdict\n\nbenchmark\n")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python3 benchmarks/bench_hooks.py --json",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=None,
                        help="interpreter to run the hooks with (default: the real python3)")
    parser.add_argument("--runs", type=int, default=20, help="runs per ignored-event measurement")
    parser.add_argument("--transcript-mb", type=float, default=50.0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.python = args.python or real_python3()

    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench hooks ") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, CLAUDE_PLUGIN_ROOT=str(REPO), CLAUDE_PLUGIN_DATA=str(tmp / "data"),
                   CLAUDE_PROJECT_DIR=str(tmp))
        base = {"session_id": "bench", "transcript_path": "", "cwd": str(tmp),
                "hook_event_name": "PostToolUse"}
        ignored = [
            ("check_script_output.py", "ignored Bash (echo)",
             {**base, "tool_name": "Bash", "tool_input": {"command": "echo hello"},
              "tool_response": {"stdout": "hello\n", "stderr": "", "interrupted": False}}),
            ("on_report_written.py", "ignored Write (notes.md)",
             {**base, "tool_name": "Write",
              "tool_input": {"file_path": str(tmp / "notes.md"), "content": "# notes\n"}}),
        ]
        for script, label, event in ignored:
            run_hook(args.python, script, event, env)  # warm the page cache / .pyc
            results = [run_hook(args.python, script, event, env) for _ in range(args.runs)]
            times = [r[0] for r in results]
            rows.append({"measure": f"{script}: {label}", "median_s": statistics.median(times),
                         "max_s": max(times), "target_s": 0.150, "runs": args.runs,
                         "cpu_median_s": statistics.median(r[2] for r in results)})

        transcript = tmp / "session.jsonl"
        n_lines = fake_transcript(transcript, args.transcript_mb)
        mb = transcript.stat().st_size / 1e6

        from tao_aoi.hooks.redact import redact_stream

        start, cpu = time.perf_counter(), time.process_time()
        with open(transcript, "rb") as src, open(tmp / "redacted.jsonl", "wb") as dst:
            redact_stream(src, dst)
        redact_s = time.perf_counter() - start
        cpu = time.process_time() - cpu
        rows.append({"measure": f"redact_stream alone ({mb:.0f} MB, {n_lines} lines)",
                     "median_s": redact_s, "max_s": redact_s, "target_s": None, "runs": 1,
                     "mb_per_s": mb / redact_s, "cpu_median_s": cpu})

        folder = make_folder(tmp)
        event = {**base, "transcript_path": str(transcript), "tool_name": "Write",
                 "tool_input": {"file_path": str(folder / "RCA_Report.md"), "content": "x"}}
        results = [run_hook(args.python, "on_report_written.py", event, env) for _ in range(3)]
        times = [r[0] for r in results]
        session = folder / rr.SESSION_FILE
        with open(session, encoding="utf-8") as fh:
            head = fh.read(2_000_000)
        if "[REDACTED:hf_token]" not in head or "hf_xxxx" in head:
            raise SystemExit("packaging produced no redacted claude_session.jsonl")
        rows.append({"measure": f"on_report_written.py: package + check, {mb:.0f} MB transcript",
                     "median_s": statistics.median(times), "max_s": max(times), "target_s": 2.0,
                     "runs": len(times), "cpu_median_s": statistics.median(r[2] for r in results)})

    if args.json:
        print(json.dumps({"python": args.python, "flags": interpreter_flags("on_report_written.py"),
                          "load_average": load, "cpus": os.cpu_count(), "rows": rows}, indent=2))
        return 0
    print(f"interpreter: {args.python} {' '.join(interpreter_flags('on_report_written.py'))}")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs "
          "(wall times grow with other load; the CPU column does not)")
    print(f"{'measure':<68} {'median':>9} {'max':>9} {'cpu med':>9} {'target':>8}  ok")
    for row in rows:
        target = row["target_s"]
        ok = "" if target is None else ("yes" if row["median_s"] < target else "NO")
        cpu = row.get("cpu_median_s")
        print(f"{row['measure']:<68} {row['median_s'] * 1000:>7.0f}ms {row['max_s'] * 1000:>7.0f}ms "
              f"{'' if cpu is None else f'{cpu * 1000:.0f}ms':>9} "
              f"{'' if target is None else f'{target * 1000:.0f}ms':>8}  {ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
