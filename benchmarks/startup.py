"""Start-up and grading time, as ratios against floors measured in the same run.

    python benchmarks/startup.py [--runs 5]

Targets (issue 2): `--help`, `list` and `show` within 2x of `python -c "import typer, rich.console"`;
`check ex1` on a correct file, cold, within 1.4x of `python -c "import torch, pytest"` (issue 7:
the judge and the sandboxed worker start in parallel).
Each command runs in a fresh process; the median of the runs is compared.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    env = {**os.environ, "ATTN_DRILL_HOME": tempfile.mkdtemp(prefix="attn-drill-bench-")}
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
    print(f"floor: import typer, rich.console  {light_floor:.3f} s")
    print(f"floor: import torch, pytest        {heavy_floor:.3f} s")
    print(f"{'command':40} {'median s':>9} {'ratio':>7} {'target':>7}  result")
    missed = 0
    for name, command, floor, target in rows:
        seconds = median_seconds(command, runs, env)
        ratio = seconds / floor
        missed += ratio > target
        print(f"{name:40} {seconds:9.3f} {ratio:7.2f} {target:7.1f}  {'ok' if ratio <= target else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
