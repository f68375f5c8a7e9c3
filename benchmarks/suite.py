"""The test suite's wall time on this machine, against its target and a floor from the same run.

    python benchmarks/suite.py [--jobs 2]

Target (issue 10): the whole suite under 90 s on an idle 2-core machine. The floor is one
`python -c "import torch, pytest"`, the price every pytest worker pays once. On Linux it also
says the CPU time the whole machine spent while the suite ran, and the time a virtual machine's
host took away (steal): the same suite's wall time moves with both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 90.0


def seconds(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started, done.returncode


def cpu_seconds() -> tuple[float, float] | None:
    """The machine's busy and stolen CPU seconds so far, from /proc/stat; None elsewhere."""
    try:
        fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / 100, steal / 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    jobs = parser.parse_args().jobs
    floor, _ = seconds([sys.executable, "-c", "import torch, pytest"])
    before = cpu_seconds()
    suite, code = seconds([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(jobs),
                           "--dist", "worksteal"])
    after = cpu_seconds()
    print(f"floor: import torch, pytest   {floor:7.1f} s")
    print(f"test suite (-n {jobs})          {suite:7.1f} s  ({suite / floor:.0f}x the floor; target {TARGET_S:.0f} s: "
          f"{'ok' if suite <= TARGET_S else 'MISSED'}; pytest exit {code})")
    if before and after:
        print(f"  machine CPU while it ran    {after[0] - before[0]:7.1f} s busy, {after[1] - before[1]:.1f} s stolen by the host")
    return 0 if suite <= TARGET_S and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
