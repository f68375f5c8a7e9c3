"""`attn-drill grade`: 100 submissions of ex2 on the warm pool, against cold `attn-drill check` runs
measured in the same run.

    python benchmarks/grade.py [--timeout 3] [--cold-runs 1] [--jobs 0]

Targets (the grade issue): grading 100 submissions of ex2 (a mix of correct, wrong, crashing,
hanging and tampering ones) takes at most 60 s on a 2-core machine, and at most 0.35x the
time of 100 cold `attn-drill check` runs.

The submissions are made in a temporary folder from ex2's reference, its starter and hostile
variants (see KINDS): a file per student, and a few folders per student. `grade` runs once,
as a user runs it, in its own process (`--format json --out FILE`, `--device cpu`, the same
`--timeout` for every kind), and its rows are checked: each correct submission passed, every
other failed. The cold cost is one cold `attn-drill check ex2 --file F` per kind (each in a
fresh process: the judge and the sandboxed worker start, import torch, grade, end), scaled to
100 by how many submissions of each kind there are.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOLUTION = (REPO / "solutions" / "ex02_multi_head_attention.py").read_text()
STARTER = (REPO / "exercises" / "ex02_multi_head_attention.py").read_text()
FILE_NAME = "ex02_multi_head_attention.py"
LIMIT_S = 60.0
TARGET_RATIO = 0.35


def _variant(old: str, new: str) -> str:
    assert old in SOLUTION, old
    return SOLUTION.replace(old, new, 1)


TAMPER = (REPO / "tests" / "fixtures" / "batch" / "ex2_forges_frames.py").read_text()  # test_batch.py grades it too

# kind -> (how many of the 100, source, passes?)
KINDS = {
    "correct": (35, SOLUTION, True),
    "correct_folder": (5, SOLUTION, True),                         # a folder per student
    "wrong_starter": (15, STARTER, False),                         # raises NotImplementedError
    "wrong_unscaled": (15, _variant("/ math.sqrt(D)", ""), False),  # forgets 1/sqrt(D)
    "crash_exit": (10, "import os\n\nos._exit(1)\n", False),       # ends the process at import
    "crash_raise": (5, _variant("        key = query if key is None else key\n",
                                "        raise RuntimeError('boom')\n"), False),
    "hang": (5, _variant("        key = query if key is None else key\n",
                         "        while True:\n            pass\n"), False),  # an endless loop in forward
    "tamper": (10, TAMPER, False),                                  # forged frames into every fd
}


def make_submissions(folder: Path, seed: int = 0) -> dict[str, str]:
    """100 submissions, shuffled among student names; returns student -> kind."""
    kinds = [kind for kind, (count, _, _) in KINDS.items() for _ in range(count)]
    random.Random(seed).shuffle(kinds)
    students = {}
    for number, kind in enumerate(kinds):
        student = f"student{number:03d}"
        source = KINDS[kind][1]
        if kind == "correct_folder":
            (folder / student).mkdir()
            (folder / student / FILE_NAME).write_text(source)
        else:
            (folder / f"{student}.py").write_text(source)
        students[student] = kind
    return students


def cold_checks(samples: Path, env: dict, timeout: float, runs: int) -> dict[str, float]:
    """Seconds of one cold `attn-drill check ex2 --file F` per kind (median of ``runs``)."""
    seconds = {}
    for kind, (_, source, passes) in KINDS.items():
        path = samples / kind / FILE_NAME
        path.parent.mkdir()
        path.write_text(source)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "attn_drill", "check", "ex2", "--file", str(path),
                                   "--device", "cpu", "--timeout", str(timeout)], env=env, cwd=samples,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            times.append(time.perf_counter() - started)
            if done.returncode != (0 if passes else 1):
                sys.exit(f"the cold check of {kind} exited {done.returncode}:\n{done.stdout[-2000:]}")
        seconds[kind] = statistics.median(times)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0, help="--timeout of every grading (default 3 s)")
    parser.add_argument("--cold-runs", type=int, default=1, help="cold checks per kind (default 1)")
    parser.add_argument("--jobs", type=int, default=0, help="grade --jobs (default: the number of cores)")
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="attn-drill-bench-"))
    atexit.register(shutil.rmtree, home, True)   # removed however the run ends
    env = {**os.environ, "ATTN_DRILL_HOME": str(home / "home"), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    submissions = home / "submissions"
    submissions.mkdir()
    students = make_submissions(submissions)
    assert len(students) == 100

    out = home / "grades.json"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "attn_drill", "grade", str(submissions), "--exercise", "ex2",
                           "--format", "json", "--out", str(out), "--device", "cpu", "--timeout", str(options.timeout),
                           "--jobs", str(options.jobs)], env=env, cwd=home, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False)
    warm = time.perf_counter() - started
    if done.returncode != 1 or not out.exists():
        sys.exit(f"attn-drill grade exited {done.returncode}:\n{done.stdout[-3000:]}")
    report = json.loads(out.read_text())
    rows = {row["student"]: row for row in report["submissions"]}
    wrong = [s for s, kind in students.items() if rows[s]["passed"] != KINDS[kind][2]]
    if sorted(rows) != sorted(students) or wrong:
        sys.exit(f"wrong verdicts: {[(s, students[s], rows.get(s)) for s in wrong]}")

    samples = home / "cold"
    samples.mkdir()
    cold = cold_checks(samples, env, options.timeout, options.cold_runs)
    cold_100 = sum(KINDS[kind][0] * seconds for kind, seconds in cold.items())
    ratio = warm / cold_100
    slowest = max(report["submissions"], key=lambda row: row["duration_s"])
    print(f"machine: {os.cpu_count()} cores; grade --jobs {options.jobs or os.cpu_count()}, "
          f"--timeout {options.timeout:g}; sandbox: {report['sandbox']}")
    print("mix: " + ", ".join(f"{kind} {count}" for kind, (count, _, _) in KINDS.items()))
    print("cold `attn-drill check ex2 --file F`, one per kind: "
          + ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in cold.items()))
    print(f"100 cold checks (scaled by the mix)        {cold_100:8.1f} s")
    print(f"attn-drill grade, 100 submissions          {warm:8.1f} s   (the slowest submission: "
          f"{slowest['student']} {students[slowest['student']]} {slowest['duration_s']:.1f} s; "
          f"{sum(r['passed'] for r in rows.values())} passed, as expected)")
    print(f"limit {LIMIT_S:g} s: {'ok' if warm <= LIMIT_S else 'MISSED'}   "
          f"ratio {ratio:.3f}, target <= {TARGET_RATIO}: {'ok' if ratio <= TARGET_RATIO else 'MISSED'}")
    return 0 if warm <= LIMIT_S and ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
