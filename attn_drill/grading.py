"""The grading engine: run one exercise's hidden checks on a learner's file, safely.

The checks run in a child process (``attn_drill.checks.runner``) in its own process group,
with a time limit and bounded output. Outcomes come back as signed records on a private
pipe; a check counts as passed only when its signed "passed" record arrived and the child
then finished cleanly. Anything else (a hang, an exit, a signal, a flood) becomes a failed
check whose message says what happened and where.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attn_drill import content
from attn_drill.errors import DeviceUnavailable, DrillError

if TYPE_CHECKING:
    import subprocess

    from attn_drill.catalog import Exercise

DEFAULT_TIMEOUT_S = 60.0
STARTUP_LIMIT_S = 120.0        # importing torch and pytest, before the learner's time starts
OUTPUT_LIMIT_BYTES = 1 << 20   # more learner output than this stops the run
OUTPUT_KEPT_BYTES = 8 << 10    # head and tail of the output kept for --verbose
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str = ""
    mistake: str | None = None   # key of a known mistake the output matched


@dataclass
class GradeReport:
    exercise: str
    file: str
    passed: bool
    checks: list[CheckResult]
    device: str
    duration_s: float
    output: str = ""              # what the learner's code printed (head and tail)
    questions_due: int = 0        # quiz questions on the named mistakes' concepts, made due now

    @property
    def mistakes(self) -> list[str]:
        return [c.mistake for c in self.checks if c.mistake]

    def to_dict(self) -> dict:
        """The ``check --json`` object of the CLI contract."""
        return {
            "exercise": self.exercise,
            "passed": self.passed,
            "checks": [{"name": c.name, "passed": c.passed, "message": c.message} for c in self.checks],
            "device": self.device,
            "duration_s": round(self.duration_s, 3),
        }

    def to_gradescope(self) -> dict:
        """A Gradescope ``results.json``: one test per check, one point each."""
        tests = [
            {"name": c.name, "score": 1.0 if c.passed else 0.0, "max_score": 1.0,
             "status": "passed" if c.passed else "failed", "output": c.message}
            for c in self.checks
        ]
        return {
            "score": float(sum(t["score"] for t in tests)),
            "max_score": float(len(tests)),
            "execution_time": round(self.duration_s, 3),
            "output": f"{self.exercise}: {'all checks passed' if self.passed else 'some checks failed'}",
            "visibility": "visible",
            "tests": tests,
        }


@dataclass
class _Run:
    """What the parent observed of one child run."""

    collected: list[dict] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    current: str | None = None      # check id whose run started last
    importing: bool = False         # the learner's file was being imported
    device: str = "cpu"
    done: bool = False
    error: str | None = None        # setup error reported by the child ("no_cuda")
    internal: str | None = None     # the checks themselves failed to load
    forged: bool = False            # an unsigned or malformed record arrived
    stopped: str | None = None      # why the parent stopped the child
    output: bytearray = field(default_factory=bytearray)
    output_tail: bytearray = field(default_factory=bytearray)
    output_total: int = 0

    def take(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "collected":
            self.collected = record["checks"]
        elif kind == "start":
            self.current = record["check"]
        elif kind == "import":
            self.importing = record["stage"] == "start"
        elif kind == "result":
            self.results[record["check"]] = record
        elif kind == "ready":
            self.device = record["device"]
        elif kind == "done":
            self.done = True
        elif kind == "error":
            self.error = record["kind"]
        elif kind == "internal":
            self.internal = record["message"]

    def keep_output(self, data: bytes) -> None:
        self.output_total += len(data)
        room = OUTPUT_KEPT_BYTES - len(self.output)
        if room > 0:
            self.output += data[:room]
            data = data[room:]
        self.output_tail = (self.output_tail + data)[-OUTPUT_KEPT_BYTES:]

    def output_text(self) -> str:
        text = self.output.decode(errors="replace")
        if self.output_tail:
            skipped = self.output_total - len(self.output) - len(self.output_tail)
            if skipped > 0:
                text += f"\n[... {skipped} bytes left out ...]\n"
            text += self.output_tail.decode(errors="replace")
        return text


def grade(exercise: Exercise, learner_file: Path, *, device: str = "auto",
          timeout: float = DEFAULT_TIMEOUT_S, reference: bool = False) -> GradeReport:
    """Run ``exercise``'s hidden checks on ``learner_file`` in a child process.

    Raises DrillError for bad input (missing file, unknown device, no CUDA for --device cuda).
    """
    import secrets  # here, not at the top: commands that grade nothing start faster
    import shutil
    import subprocess
    import tempfile

    if device not in DEVICES:
        raise DrillError(f"--device must be one of {', '.join(DEVICES)}, got '{device}'.")
    if timeout <= 0:
        raise DrillError(f"--timeout must be a positive number of seconds, got {timeout:g}.")
    learner_file = Path(learner_file)
    if not learner_file.is_file():
        raise DrillError(f"no file at {learner_file}. Try `attn-drill init` for a workspace, or --file PATH.")

    key = secrets.token_bytes(32)
    marker = secrets.token_hex(8)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="attn-drill-"))
    result_read, result_write = os.pipe()
    output_read, output_write = os.pipe()
    settings = {
        "key": key.hex(), "fd": result_write, "device": device, "exercise": exercise.id,
        "learner_file": str(learner_file.resolve()), "reference_file": str(exercise.solution_path),
        "checks_file": str(exercise.checks_path), "defines": list(exercise.defines),
        "forbidden": list(exercise.forbidden),
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(content.PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",          # no __pycache__ beside the learner's file
        "PYTHONUNBUFFERED": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",    # the user's pytest plugins stay out
        "ATTN_DRILL_GRADING": marker,             # finds stray processes afterwards
    }
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "attn_drill.checks.runner"],
            stdin=subprocess.PIPE, stdout=output_write, stderr=output_write,
            pass_fds=(result_write,), cwd=workdir, env=env, start_new_session=True,
        )
    finally:
        os.close(result_write)
        os.close(output_write)
    run = _Run()
    try:
        child.stdin.write((json.dumps(settings) + "\n").encode())
        child.stdin.close()
        _watch(child, run, key, result_read, output_read, started, timeout)
    except BrokenPipeError:
        pass
    finally:
        _kill_group(child)
        child.wait()
        _kill_strays(marker)
        os.close(result_read)
        os.close(output_read)
        shutil.rmtree(workdir, ignore_errors=True)
    if run.error == "no_cuda":
        raise DeviceUnavailable("--device cuda: no CUDA device is available here. Try --device cpu or --device auto.")
    checks = _outcomes(run, child.returncode)
    passed = bool(checks) and all(c.passed for c in checks)
    return GradeReport(exercise.id, str(learner_file), passed, checks, run.device,
                       time.monotonic() - started, run.output_text())


def _watch(child, run: _Run, key: bytes, result_read: int, output_read: int,
           started: float, timeout: float) -> None:
    """Read both pipes until the child ends or must be stopped."""
    import selectors

    from attn_drill.channel import read_record

    selector = selectors.DefaultSelector()
    selector.register(result_read, selectors.EVENT_READ, "results")
    selector.register(output_read, selectors.EVENT_READ, "output")
    pending = b""
    deadline = started + STARTUP_LIMIT_S
    learner_clock = False
    open_pipes = 2
    while open_pipes:
        if run.collected and not learner_clock:
            learner_clock = True
            deadline = time.monotonic() + timeout     # the learner's time starts with the checks
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            run.stopped = f"timed out after {timeout:g} s"
            return
        if child.poll() is not None:
            remaining = min(remaining, 0.5)  # drain what is left, but never wait on grandchildren
        events = selector.select(timeout=min(remaining, 0.25))
        if not events and child.poll() is not None:
            return
        for selected, _ in events:
            data = os.read(selected.fd, 1 << 16)
            if not data:
                selector.unregister(selected.fd)
                open_pipes -= 1
            elif selected.data == "output":
                run.keep_output(data)
                if run.output_total > OUTPUT_LIMIT_BYTES:
                    run.stopped = f"printed over {OUTPUT_LIMIT_BYTES >> 20} MiB of output, so the grader stopped it"
                    return
            else:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    record = read_record(line, key)
                    if record is None:
                        run.forged = True
                    else:
                        run.take(record)


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_strays(marker: str) -> None:
    """Kill processes the learner's code started that left the process group."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    needle = f"ATTN_DRILL_GRADING={marker}".encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _ending(run: _Run, returncode: int | None) -> str:
    """Why the child stopped before finishing, in the learner's terms."""
    if run.forged:
        return "your code wrote into the grader's result channel, so no result of this run can be trusted"
    if run.stopped:
        what = run.stopped
    elif returncode is not None and returncode < 0:
        try:
            what = f"crashed with signal {signal.Signals(-returncode).name}"
        except ValueError:
            what = f"crashed with signal {-returncode}"
    else:
        what = f"exited the process (exit code {returncode})"
    if run.importing:
        return f"your code {what} during import"
    if run.current:
        title = next((c["name"] for c in run.collected if c["id"] == run.current), run.current)
        return f"your code {what} while the check '{title}' ran"
    return f"the grading process ended early ({what}) before any of your code ran"


def _outcomes(run: _Run, returncode: int | None) -> list[CheckResult]:
    """One result per collected check; a check without a signed result has failed."""
    clean = run.done and returncode in (0, 1) and not run.forged and not run.stopped
    if run.internal:
        return [CheckResult("hidden checks load", False, f"the hidden checks failed to load (a bug in attn-drill):\n{run.internal}")]
    if not run.collected:
        tail = run.output_text()[-2000:]
        return [CheckResult("grading process starts", False, _ending(run, returncode) + (f"\n{tail}" if tail else ""))]
    ending = None if clean else _ending(run, returncode)
    if run.forged:
        return [CheckResult(check["name"], False, ending) for check in run.collected]
    checks = []
    for check in run.collected:
        result = run.results.get(check["id"])
        if result is not None:
            checks.append(CheckResult(check["name"], bool(result["passed"]), result["message"], result.get("mistake")))
        elif check["id"] == run.current and not clean:
            checks.append(CheckResult(check["name"], False, ending))
        else:
            checks.append(CheckResult(check["name"], False, f"not run: {ending or 'the run ended early'}"))
    if not clean and all(c.passed for c in checks):
        checks.append(CheckResult("grading process ends cleanly", False, ending))
    return checks
