"""Artifact sets are all-or-nothing, even when the writer is killed (issue #9).

A child process pauses right before its K-th rename into the results folder and is killed
there with SIGKILL; K walks every point of the commit (before the journal, after it, between
each pair of renames). What the folder must hold afterwards, once the next writer (or a
reader's ``settle``) has looked at it: the complete previous set, or the complete new one;
never a mix, and no temp file of the dead run.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from tao_aoi import atomic

SET_NAMES = ("a.parquet", "b.json", "c.txt", "d.txt")

# Pauses the K-th os.replace whose destination is in PAUSE_FOLDER, then runs a program.
CHILD = r'''
import os, runpy, sys, time
folder, pause_at, marker = os.environ["PAUSE_FOLDER"], int(os.environ["PAUSE_AT"]), os.environ["PAUSE_MARKER"]
real_replace, seen = os.replace, [0]
def replace(src, dst, *a, **kw):
    if os.path.dirname(os.path.abspath(dst)) == folder:
        seen[0] += 1
        if seen[0] == pause_at:
            open(marker, "w").close()
            time.sleep(600)
    return real_replace(src, dst, *a, **kw)
os.replace = replace
if sys.argv[1] == "--set":
    from tao_aoi import atomic
    gen = sys.argv[2]
    names = sys.argv[3:]
    with atomic.atomic_paths(*(os.path.join(folder, n) for n in names)) as tmps:
        for t in tmps:
            t.write_text(gen)
else:
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.fixture
def child(tmp_path):
    script = tmp_path / "pausing_child.py"
    script.write_text(CHILD)

    def run_until_pause(folder: Path, pause_at: int, *argv: str, timeout: float = 120):
        """Start the child; once it pauses before rename ``pause_at``, SIGKILL it. Returns True
        when it was killed there, False when it finished without reaching that rename."""
        marker = folder.parent / f".paused-{pause_at}-{time.monotonic_ns()}"
        env = dict(os.environ, PAUSE_FOLDER=str(folder.resolve()), PAUSE_AT=str(pause_at),
                   PAUSE_MARKER=str(marker), PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, str(script), *argv], env=env, cwd=str(REPO),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                err = proc.stderr.read().decode()
                proc.stderr.close()
                assert proc.returncode == 0, err
                return False
            assert time.monotonic() < deadline, "child neither paused nor finished"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        marker.unlink()
        return True

    return run_until_pause


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_set(folder: Path, gen: str) -> None:
    with atomic.atomic_paths(*(folder / n for n in SET_NAMES)) as tmps:
        for t in tmps:
            t.write_text(gen)


@pytest.mark.parametrize("pause_at", range(1, len(SET_NAMES) + 2))
def test_kill_at_every_point_of_the_commit(tmp_path, child, pause_at):
    folder = tmp_path / "results"
    folder.mkdir()
    write_set(folder, "old")
    assert child(folder, pause_at, "--set", "new", *SET_NAMES)
    before = snapshot(folder)
    # pause 1 is the journal's own rename: nothing is committed yet
    committed = pause_at > 1
    if 2 < pause_at <= len(SET_NAMES) + 1:
        assert {before[n] for n in SET_NAMES} == {b"old", b"new"}  # the kill landed mid-swap
    assert any(n.endswith(".tmp") for n in hidden(folder))
    atomic.settle(folder, force=True)
    after = snapshot(folder)
    assert {n: after[n] for n in SET_NAMES} == {n: (b"new" if committed else b"old") for n in SET_NAMES}
    assert hidden(folder) == []


def test_next_writer_finishes_a_committed_set_then_writes_its_own(tmp_path, child):
    folder = tmp_path / "results"
    folder.mkdir()
    write_set(folder, "old")
    assert child(folder, 3, "--set", "new", *SET_NAMES)
    assert [n for n in hidden(folder) if n.startswith(atomic.JOURNAL_PREFIX)]
    # another process: its first write into the folder settles it
    out = subprocess.run([sys.executable, "-c", "import sys; from tao_aoi import atomic; "
                          "atomic.write_text(sys.argv[1] + '/other.txt', 'x')", str(folder)],
                         cwd=str(REPO), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {n: snapshot(folder)[n] for n in SET_NAMES} == {n: b"new" for n in SET_NAMES}
    assert hidden(folder) == []


def test_twenty_random_kills_never_leave_a_mixed_set(tmp_path, child):
    folder = tmp_path / "results"
    folder.mkdir()
    write_set(folder, "gen0")
    rng = random.Random(9)
    killed_mid_swap = 0
    for gen in range(1, 21):
        pause_at = rng.randint(1, len(SET_NAMES) + 1)
        assert child(folder, pause_at, "--set", f"gen{gen}", *SET_NAMES)
        killed_mid_swap += pause_at > 2
        atomic.settle(folder, force=True)
        values = {snapshot(folder)[n] for n in SET_NAMES}
        assert len(values) == 1, (gen, pause_at, values)
        assert values <= {f"gen{gen}".encode(), f"gen{gen - 1}".encode()}
        if pause_at == 1:  # not committed: keep the folder's generation in step with the loop
            write_set(folder, f"gen{gen}")
        assert hidden(folder) == []
    assert killed_mid_swap >= 5


def test_temp_files_of_a_live_writer_are_kept(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    mine = folder / f".a.parquet.{atomic._owner()}.abcd1234.tmp"
    mine.write_text("in progress")
    dead = folder / f".a.parquet.{atomic._HOST}-{2 ** 22 + 12345}.abcd1234.tmp"
    dead.write_text("left by a killed run")
    foreign = folder / ".a.parquet.otherhost-1.abcd1234.tmp"
    foreign.write_text("another machine's run, recent")
    atomic.settle(folder, force=True)
    assert mine.exists() and foreign.exists() and not dead.exists()
    old = time.time() - atomic.FOREIGN_STALE_S - 60
    os.utime(foreign, (old, old))
    atomic.settle(folder, force=True)
    assert not foreign.exists()


def test_a_destination_taken_by_a_folder_stops_the_set_before_any_rename(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    write_set(folder, "old")
    (folder / "e.txt").mkdir()
    with pytest.raises(Exception, match="not a regular file"):
        with atomic.atomic_paths(*(folder / n for n in (*SET_NAMES, "e.txt"))) as tmps:
            for t in tmps:
                t.write_text("new")
    assert {n: snapshot(folder)[n] for n in SET_NAMES} == {n: b"old" for n in SET_NAMES}
    assert hidden(folder) == []


def test_a_planted_journal_cannot_rename_outside_its_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (folder / "x.tmp").write_text("payload")
    journal = folder / f"{atomic.JOURNAL_PREFIX}evil.json"
    journal.write_text(json.dumps({"rename": [["x.tmp", "../outside.txt"], ["../outside.txt", "y"]],
                                   "remove": ["../outside.txt", "/etc/hostname"]}))
    atomic.settle(folder, force=True)
    assert outside.read_text() == "keep" and not journal.exists()


def test_parallel_set_writers_leave_one_whole_set(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    code = ("import sys; from pathlib import Path; from tao_aoi import atomic\n"
            "f, w = Path(sys.argv[1]), sys.argv[2]\n"
            "for i in range(20):\n"
            "    with atomic.atomic_paths(*(f / n for n in %r)) as ts:\n"
            "        [t.write_text(f'{w}-{i}') for t in ts]\n") % (SET_NAMES,)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder), f"w{w}"], cwd=str(REPO),
                              stderr=subprocess.PIPE) for w in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
        p.stderr.close()
    values = {snapshot(folder)[n] for n in SET_NAMES}
    assert len(values) == 1 and values.pop().endswith(b"-19")
    assert hidden(folder) == []


# ----------------------------------------------------------------------------- real actions

def _gap_rows(n: int):
    rng = random.Random(n)
    rows = []
    for i in range(n):
        label = "PASS" if i % 3 else rng.choice(["SHORT", "OPEN"])
        score = rng.random() * (0.4 if label == "PASS" else 1.0) + (0 if label == "PASS" else 0.3)
        rows.append({"input_path": f"b{i}", "object_name": f"o{i}", "label": label,
                     "siamese_score": round(score, 4)})
    return rows


def _gap_argv(exp, top_k: int):
    return [str(REPO / "scripts" / "data_services.py"), "gap_analysis", "vcn_aoi",
            "-e", str(exp["spec"]), f"inference_results_dir={exp['inference_dir']}",
            f"train_config={exp['train']}", f"kpi_media_path={exp['media']}",
            f"results_dir={exp['results']}", f"top_k_per_label={top_k}"]


def _run(argv):
    out = subprocess.run([sys.executable, *argv], cwd=str(REPO), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def gap_experiment(vcn_experiment, tmp_path):
    exp = vcn_experiment(_gap_rows(60), images_for=60)
    exp["spec"] = tmp_path / "spec.yaml"
    exp["spec"].write_text("{}\n")
    return exp


@pytest.mark.slow
def test_gap_analysis_killed_at_every_rename(gap_experiment, child):
    exp, results = gap_experiment, gap_experiment["results"]
    _run(_gap_argv(exp, 5))
    new = snapshot(results)
    _run(_gap_argv(exp, 1))
    old = snapshot(results)
    assert new != old and set(new) == set(old)
    pause_at = 1
    while child(results, pause_at, *_gap_argv(exp, 5)):
        atomic.settle(results, force=True)
        assert snapshot(results) == (new if pause_at > 1 else old), pause_at
        assert hidden(results) == []
        _run(_gap_argv(exp, 1))
        pause_at += 1
    assert pause_at == len(new) + 2  # journal + one rename per artifact, each one killed once


@pytest.mark.slow
def test_route_samples_killed_at_every_rename(tmp_path, child):
    import pandas as pd

    gaps = tmp_path / "kpi_gaps.parquet"
    pd.DataFrame({"filepath": [f"/m/o{i}_L1.jpg" for i in range(30)],
                  "label": ["SHORT", "OPEN", "SCRATCH"] * 10,
                  "siamese_score": [i / 30 for i in range(30)]}).to_parquet(gaps)
    pools = []
    for name, labels in (("pool_new.csv", ["SHORT", "OPEN"]), ("pool_old.csv", ["SCRATCH"])):
        pools.append(tmp_path / name)
        pd.DataFrame({"filepath": [f"/p/{x}.jpg" for x in labels], "label": labels}).to_csv(pools[-1], index=False)
    out = tmp_path / "routing"

    def argv(pool):
        return [str(REPO / "scripts" / "route_samples.py"), "--gaps", str(gaps), "--pool", str(pool),
                "--out", str(out)]

    _run(argv(pools[0]))
    new = snapshot(out)
    _run(argv(pools[1]))
    old = snapshot(out)
    assert new != old
    pause_at = 1
    while child(out, pause_at, *argv(pools[0])):
        atomic.settle(out, force=True)
        assert snapshot(out) == (new if pause_at > 1 else old), pause_at
        assert hidden(out) == []
        _run(argv(pools[1]))
        pause_at += 1
    assert pause_at == len(new) + 2


@pytest.mark.slow
def test_a_reader_finishes_the_set_before_reading_it(gap_experiment, child):
    """The report draft (like the report hook, the spot check, the iteration comparison and
    the packaging) settles the folder first: it never describes a half-renamed set."""
    exp, results = gap_experiment, gap_experiment["results"]
    _run(_gap_argv(exp, 5))
    new = snapshot(results)
    _run(_gap_argv(exp, 1))
    assert child(results, 3, *_gap_argv(exp, 5))
    assert {n: snapshot(results)[n] for n in new} != new  # mid-swap
    _run([str(REPO / "scripts" / "draft_report.py"), str(results), "--no-plot"])
    assert {n: snapshot(results)[n] for n in new} == new
    assert hidden(results) == []


@pytest.mark.slow
def test_nearest_neighbors_killed_at_every_rename(tmp_path, child):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    for name, n in (("src", 200), ("tgt", 6)):
        vectors = rng.normal(size=(n, 8)).astype(np.float32)
        pq.write_table(pa.table({"filepath": [f"/pool/{name}_{i}.jpg" for i in range(n)],
                                 "embedding": pa.array(list(vectors), pa.list_(pa.float32()))}),
                       tmp_path / f"{name}.parquet")
    out = tmp_path / "mining" / "mined.parquet"
    spec = tmp_path / "nn.yaml"
    spec.write_text("{}\n")

    def argv(topn):
        return [str(REPO / "scripts" / "data_services.py"), "tmm", "nearest_neighbors", "-e", str(spec),
                f"source_parquet={tmp_path / 'src.parquet'}", f"target_parquet={tmp_path / 'tgt.parquet'}",
                f"output_parquet={out}", f"topn={topn}", "knn_metric=cosine"]

    def untimed():  # the summary's run time differs from run to run
        return {name: b"".join(line for line in data.splitlines(True) if b"Seconds:" not in line)
                for name, data in snapshot(out.parent).items()}

    _run(argv(5))
    new = untimed()
    _run(argv(1))
    old = untimed()
    assert new != old and set(new) == set(old)
    pause_at = 1
    while child(out.parent, pause_at, *argv(5)):
        atomic.settle(out.parent, force=True)
        assert untimed() == (new if pause_at > 1 else old), pause_at
        assert hidden(out.parent) == []
        _run(argv(1))
        pause_at += 1
    assert pause_at == len(new) + 2
