"""The worker's process tree as the kernel sees it, read from /proc outside the sandbox.

The supervisor uses it to enforce the memory and process limits on the whole tree, and the
judge to measure a call's peak memory: numbers the worker cannot fake (inside the sandbox
/proc is read-only, so it cannot reset its own high-water mark either).
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def tree(root: int) -> list[int]:
    """``root`` and every process below it (empty once it is gone)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        tasks = PROC / str(pid) / "task"
        try:
            children = [int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        found.append(pid)
        todo.extend(children)
    return found


def below(root: int) -> list[int]:
    """Every process below ``root``, not ``root`` itself (a template's gradings)."""
    return tree(root)[1:]


def _status(pid: int, field: str) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def resident_bytes(pids: list[int]) -> int:
    return sum(_status(pid, "VmRSS:") for pid in pids)


def peak_bytes(pids: list[int]) -> int:
    """The largest resident size any of ``pids`` reached since its peak was last reset."""
    return max((_status(pid, "VmHWM:") for pid in pids), default=0)


def reset_peaks(pids: list[int]) -> None:
    for pid in pids:
        try:
            (PROC / str(pid) / "clear_refs").write_text("5")
        except OSError:
            pass
