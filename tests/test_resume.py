"""A run killed with SIGKILL at any moment resumes to exactly the output of an uninterrupted run,
with no row lost or duplicated and no review asked twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeljury.store import RunStore

from .conftest import make_rows, write_task

# Runs the real pipeline in a child process with a gold reviewer that logs every answer it gives,
# so the test can count how often each row was asked.
CHILD = """
import sys, json, os
from labeljury import load_task, run
from labeljury.review import GoldReviewer

class LoggingGold(GoldReviewer):
    def review(self, items):
        for r in super().review(items):
            with open(sys.argv[5], "a") as fh:
                fh.write(json.dumps(r.key) + "\\n")
                fh.flush(); os.fsync(fh.fileno())
            yield r

task = load_task(sys.argv[1])
run(task, sys.argv[2], sys.argv[3], sys.argv[4],
    reviewer=LoggingGold(sys.argv[2], "label", task.label_names))
"""


def _child(task: Path, data: Path, out: Path, run_dir: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(task), str(data), str(out), str(run_dir), str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_minus_nine_at_any_moment_resumes_to_the_same_output(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    make_rows(6000, seed=7, empties=30, duplicates=300).to_csv(data, index=False)
    task = write_task(tmp_path / "task.yaml", budget=0.2)

    ref_out, ref_log = tmp_path / "ref.csv", tmp_path / "ref.log"
    t0 = time.monotonic()
    p = _child(task, data, ref_out, tmp_path / "ref.run", ref_log)
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    duration = time.monotonic() - t0
    reference = ref_out.read_bytes()

    out, log, run_dir = tmp_path / "out.csv", tmp_path / "out.log", tmp_path / "out.run"
    # kill each resumed child at a different moment of its life (start-up, ingest, encoding,
    # reviewing, fitting, writing) until one finishes: every resume makes progress. The moments are
    # fractions of the reference run's time; when the machine ran the reference slower than it runs
    # the children (another process finished meanwhile) too few are killed: start again, sooner.
    scale = 1.0
    for _attempt in range(3):
        shutil.rmtree(run_dir, ignore_errors=True)
        out.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        kills = 0
        for fraction in (0.3, 0.35, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 0.97):
            p = _child(task, data, out, run_dir, log)
            time.sleep(duration * fraction * scale)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                assert not out.exists() or out.read_bytes() == reference  # never half-written
            if out.exists():
                break
        p = _child(task, data, out, run_dir, log)
        assert p.wait(timeout=600) == 0, p.stderr.read().decode()
        if kills >= 2:
            break
        scale /= 2
    assert kills >= 2
    assert out.read_bytes() == reference

    asked = [json.loads(x) for x in log.read_text().splitlines()]
    ref_asked = [json.loads(x) for x in ref_log.read_text().splitlines()]
    assert sorted(set(asked)) == sorted(ref_asked)
    # a row can only be asked twice if the kill fell between the answer and its commit
    assert len(asked) - len(set(asked)) <= kills
    with RunStore(run_dir) as s:
        assert s.n_rows == 6330
        assert len(s.reviews()) == len(ref_asked)
