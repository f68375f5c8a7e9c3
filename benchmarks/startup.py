"""Start-up and grading time, as ratios against floors measured in the same run.

    python benchmarks/startup.py [--runs 5]

Targets (issue 2): `--help`, `list` and `show` within 2x of `python -c "import typer, rich.console"`;
`check ex1` on a correct file, cold, within 1.4x of `python -c "import torch, pytest"` (issue 7:
the judge and the sandboxed worker start in parallel).
`check --all` on a workspace holding the 13 references, within 3x of one cold `check ex1`
(issue 10: one warm judge and a pool of warm workers instead of 13 cold starts).
Each command runs in a fresh process; the median of the runs is compared.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOLUTION = REPO / "solutions" / "ex01_self_attention.py"


def median_seconds(command: list[str], runs: int, env: dict) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _scratch(prefix: str) -> str:
    """A temporary folder, removed however the run ends."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    env = {**os.environ, "ATTN_DRILL_HOME": _scratch("attn-drill-bench-")}
    drill = [sys.executable, "-m", "attn_drill"]
    light_floor = median_seconds([sys.executable, "-c", "import typer, rich.console"], runs, env)
    heavy_floor = median_seconds([sys.executable, "-c", "import torch, pytest"], runs, env)
    rows = [
        ("attn-drill --help", drill + ["--help"], light_floor, 2.0),
        ("attn-drill list", drill + ["list"], light_floor, 2.0),
        ("attn-drill show ex1", drill + ["show", "ex1"], light_floor, 2.0),
        ("attn-drill check ex1 (correct file)", drill + ["check", "ex1", "--file", str(SOLUTION), "--device", "cpu"],
         heavy_floor, 1.4),
    ]
    workspace = Path(_scratch("attn-drill-bench-ws-"))
    subprocess.run(drill + ["init", str(workspace)], env=env, stdout=subprocess.DEVNULL, check=True)
    for reference in (REPO / "solutions").glob("ex*.py"):
        (workspace / "exercises" / reference.name).write_text(reference.read_text())
    cold_check = median_seconds(rows[-1][1], runs, env)
    all_seconds = statistics.median(
        _timed(drill + ["check", "--all", "--device", "cpu"], env, workspace) for _ in range(max(1, runs // 2)))
    print(f"floor: import typer, rich.console  {light_floor:.3f} s")
    print(f"floor: import torch, pytest        {heavy_floor:.3f} s")
    print(f"{'command':40} {'median s':>9} {'ratio':>7} {'target':>7}  result")
    missed = 0
    for name, command, floor, target in rows:
        seconds = median_seconds(command, runs, env)
        ratio = seconds / floor
        missed += ratio > target
        print(f"{name:40} {seconds:9.3f} {ratio:7.2f} {target:7.1f}  {'ok' if ratio <= target else 'MISSED'}")
    ratio = all_seconds / cold_check
    missed += ratio > 3.0
    print(f"{'check --all (13 references)':40} {all_seconds:9.3f} {ratio:7.2f} {3.0:7.1f}  "
          f"{'ok' if ratio <= 3.0 else 'MISSED'}  (ratio to one cold check ex1)")
    return 1 if missed else 0


def _timed(command: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
