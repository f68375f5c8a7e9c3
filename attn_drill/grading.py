"""The grading engine's front: grade one learner file with an exercise's hidden checks.

:func:`grade` is the supervisor. It starts, in parallel, the worker (the learner's code, in
the sandbox: ``attn_drill.engine.worker``) and the judge (the checks, the reference and the
verdicts: ``attn_drill.engine.judge``), joined by two pipes. It enforces the limits the
worker cannot lift from inside: wall time, memory and process count of the worker's whole
tree (read from /proc, outside the sandbox), output size. The verdicts come only from the
judge, over a pipe the worker never holds. When grading ends, every learner process ends
with the worker's PID namespace, or is killed with its session.
"""

from __future__ import annotations

import json
import os
import shutil
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
DEFAULT_MEMORY = "2GiB"
STARTUP_LIMIT_S = 120.0        # importing torch and pytest, before the learner's time starts
JUDGE_SLACK_S = 60.0           # the judge's own work (references, comparisons) beyond the learner's time
OUTPUT_LIMIT_BYTES = 1 << 20   # more learner output than this stops the run
OUTPUT_KEPT_BYTES = 8 << 10    # head and tail of the output kept for --verbose
LEARNER_FILE_LIMIT = 1 << 20   # a learner's file larger than this is not source code
POLL_S = 0.02                  # how often the worker's memory and processes are read
DEVICES = ("auto", "cpu", "cuda")
SANDBOXES = ("auto", "bubblewrap", "none")


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
    sandbox: str = "none"         # "bubblewrap" or "none"
    output: str = ""              # what the learner's code printed (head and tail)
    peak_memory: int = 0          # the worker tree's largest resident size, in bytes
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
            "sandbox": self.sandbox,
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
            "output": f"{self.exercise}: {'all checks passed' if self.passed else 'some checks failed'}"
                      + ("" if self.sandbox != "none" else " (graded without a sandbox)"),
            "visibility": "visible",
            "tests": tests,
        }


def parse_size(text: str) -> int:
    """'2GiB', '512MiB', '1.5G', '1000000' -> bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise DrillError(f"--memory-limit must be a size such as 2GiB or 512MiB, got '{text}'.")
    number, unit, binary = float(match.group(1)), match.group(2).upper(), match.group(3)
    power = " KMGT".index(unit) if unit else 0
    size = int(number * (1024 if binary or not unit else 1000) ** power) if unit else int(number)
    if size < 256 << 20:
        raise DrillError(f"--memory-limit must be at least 256MiB (torch alone needs about 300 MiB), got '{text}'.")
    return size


def read_learner_source(path: Path) -> str:
    """The learner's file as text, or one clear DrillError saying why it is not a Python file."""
    if path.is_dir():
        raise DrillError(f"{path} is a directory; give the Python file to grade.")
    if not path.is_file():
        raise DrillError(f"no file at {path}.")
    if path.stat().st_size > LEARNER_FILE_LIMIT:
        raise DrillError(f"{path} is over {LEARNER_FILE_LIMIT >> 20} MiB: it is not a Python source file.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DrillError(f"{path} is not a Python file (it is not UTF-8 text).") from None
    if "\0" in text:
        raise DrillError(f"{path} is not a Python file (it holds binary data).")
    return text


@dataclass
class _Run:
    """What the supervisor observed of one grading."""

    collected: list[dict] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    current: str | None = None       # check id whose run started last
    device: str = "cpu"
    done: bool = False
    error: str | None = None         # setup error reported by the judge ("no_cuda")
    internal: str | None = None      # the checks themselves failed to load
    sandboxed: bool = False
    worker_end: str | None = None    # why the worker ended early, in the learner's terms
    stopped: str | None = None       # why the supervisor stopped the whole grading
    peak: int = 0
    output: bytearray = field(default_factory=bytearray)
    output_tail: bytearray = field(default_factory=bytearray)
    output_total: int = 0
    judge_output: bytearray = field(default_factory=bytearray)

    def take(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "collected":
            self.collected = [c for c in record.get("checks", []) if isinstance(c, dict)]
        elif kind == "start":
            self.current = record.get("check")
        elif kind == "result":
            self.results[record.get("check")] = record
        elif kind == "ready":
            self.device = record.get("device", "cpu")
        elif kind == "done":
            self.done = True
        elif kind == "error":
            self.error = record.get("kind")
        elif kind == "internal":
            self.internal = record.get("message", "")

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


def grade(exercise: Exercise, learner_file: Path, *, device: str = "auto", timeout: float = DEFAULT_TIMEOUT_S,
          memory_limit: int | str = DEFAULT_MEMORY, sandbox: str = "auto") -> GradeReport:
    """Run ``exercise``'s hidden checks on ``learner_file``: the judge and the sandboxed worker.

    Raises DrillError for bad input (missing or non-Python file, unknown device, no CUDA for
    --device cuda, a bad limit).
    """
    import math
    import subprocess
    import tempfile

    from attn_drill.engine import sandbox as boxing
    from attn_drill.engine.forbidden import worker_rules

    if device not in DEVICES:
        raise DrillError(f"--device must be one of {', '.join(DEVICES)}, got '{device}'.")
    if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise DrillError(f"--timeout must be a positive number of seconds, got {timeout}.")
    memory = parse_size(memory_limit) if isinstance(memory_limit, str) else int(memory_limit)
    learner_file = Path(learner_file)
    source = read_learner_source(learner_file)
    bwrap = None if sandbox == "none" else boxing.bwrap_path()
    if sandbox == "bubblewrap" and bwrap is None:
        raise DrillError("bubblewrap cannot run here (no bwrap, or user namespaces are off). "
                         "Try --allow-unsandboxed, or install bubblewrap.")
    wants_cuda = device in ("auto", "cuda")

    started = time.monotonic()
    box = Path(tempfile.mkdtemp(prefix="attn-drill-box-"))
    judge_dir = Path(tempfile.mkdtemp(prefix="attn-drill-judge-"))
    scratch = Path(tempfile.mkdtemp(prefix="attn-drill-scratch-")) if bwrap is None else None
    engine_dir = content.PACKAGE_DIR / "engine"
    for name in ("worker.py", "wire.py"):
        shutil.copyfile(engine_dir / name, box / name)
    (box / learner_file.name).write_text(source, encoding="utf-8")
    for path in (box, *box.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    inside = f"{boxing.BOX}/{learner_file.name}" if bwrap else str(box / learner_file.name)

    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    results_read, results_write = os.pipe()
    output_read, output_write = os.pipe()
    judge_out_read, judge_out_write = os.pipe()
    limits = boxing.Limits(memory_bytes=memory, cpu_seconds=int(STARTUP_LIMIT_S + 2 * timeout) + 1,
                           cap_address_space=not (wants_cuda and boxing.has_nvidia()))
    worker_args = [str(requests_read), str(replies_write)]
    if bwrap:
        argv = boxing.bwrap_command(bwrap, box, worker_args, cuda=wants_cuda and boxing.has_nvidia())
        worker_env, worker_cwd = None, None
    else:
        argv = [sys.executable, "-I", str(box / "worker.py"), *worker_args]
        worker_env, worker_cwd = boxing.worker_env(str(scratch)), str(scratch)
    worker = judge = None
    run = _Run(sandboxed=bwrap is not None)
    try:
        worker = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output_write, stderr=output_write,
                                  pass_fds=(requests_read, replies_write), env=worker_env, cwd=worker_cwd,
                                  preexec_fn=boxing.set_limits(limits))
        settings = {
            "results_fd": results_write, "requests_fd": requests_write, "replies_fd": replies_read,
            "device": device, "exercise": exercise.id, "checks_file": str(exercise.checks_path),
            "reference_file": str(exercise.solution_path), "learner_file": str(box / learner_file.name),
            "learner_name": learner_file.name, "defines": list(exercise.defines),
            "forbidden": list(exercise.forbidden), "budget_s": float(timeout), "startup_s": STARTUP_LIMIT_S,
            "worker_pid": worker.pid,
            "worker": {"learner_file": inside, "module_name": f"learner_{exercise.id}",
                       "forbidden": worker_rules(exercise.forbidden)},
        }
        judge = subprocess.Popen([sys.executable, "-m", "attn_drill.engine.judge"], stdin=subprocess.PIPE,
                                 stdout=judge_out_write, stderr=judge_out_write,
                                 pass_fds=(results_write, requests_write, replies_read), cwd=judge_dir,
                                 env=_judge_env(), preexec_fn=boxing.set_limits(None))
    finally:
        for fd in (requests_read, replies_write, results_write, output_write, judge_out_write,
                   requests_write, replies_read):
            os.close(fd)
    try:
        judge.stdin.write((json.dumps(settings) + "\n").encode())
        judge.stdin.close()
        _watch(run, worker, judge, results_read, output_read, judge_out_read, memory,
               started + STARTUP_LIMIT_S + timeout + JUDGE_SLACK_S)
    except BrokenPipeError:
        pass
    finally:
        _stop(worker, run)
        _stop(judge, None)
        for fd in (results_read, output_read, judge_out_read):
            os.close(fd)
        for folder in (box, judge_dir, scratch):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    if run.error == "no_cuda":
        raise DeviceUnavailable("--device cuda: no CUDA device is available here. Try --device cpu or --device auto.")
    checks = _outcomes(run, judge.returncode)
    passed = bool(checks) and all(c.passed for c in checks)
    return GradeReport(exercise.id, str(learner_file), passed, checks, run.device, time.monotonic() - started,
                       "bubblewrap" if bwrap else "none", run.output_text(), run.peak)


def _judge_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(content.PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",    # the user's pytest plugins stay out
    }


def _watch(run: _Run, worker, judge, results_read: int, output_read: int, judge_out_read: int,
           memory: int, deadline: float) -> None:
    """Read the judge's results and the worker's output until the judge ends; meanwhile keep
    the worker's tree within its limits."""
    import selectors

    from attn_drill.engine import processes
    from attn_drill.engine.sandbox import MAX_PROCESSES

    selector = selectors.DefaultSelector()
    for fd, what in ((results_read, "results"), (output_read, "output"), (judge_out_read, "judge")):
        selector.register(fd, selectors.EVENT_READ, what)
    pending = b""
    while True:
        if time.monotonic() > deadline:
            run.stopped = "the grading took too long and was stopped"
            return
        for selected, _ in selector.select(timeout=POLL_S):
            data = os.read(selected.fd, 1 << 16)
            if not data:
                selector.unregister(selected.fd)
                if selected.data == "results":
                    return
                continue
            if selected.data == "output":
                run.keep_output(data)
                if run.output_total > OUTPUT_LIMIT_BYTES and run.worker_end is None:
                    _end_worker(worker, run, f"printed over {OUTPUT_LIMIT_BYTES >> 20} MiB of output, "
                                             "so the grader stopped it")
            elif selected.data == "judge":
                run.judge_output = (run.judge_output + data)[-8000:]
            else:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    try:
                        run.take(json.loads(line))
                    except (ValueError, AttributeError):
                        pass
        if run.worker_end is None and worker.poll() is None:
            pids = processes.tree(worker.pid)
            resident, peak = processes.resident_bytes(pids), processes.peak_bytes(pids)
            run.peak = max(run.peak, resident, peak)
            if max(resident, peak) > memory:
                _end_worker(worker, run, f"used more than {_size(memory)} of memory (the limit; see --memory-limit)")
            elif len(pids) > MAX_PROCESSES + 2:
                _end_worker(worker, run, f"started more than {MAX_PROCESSES} processes")
        elif run.worker_end is None:
            run.worker_end = _exit_cause(worker.returncode, sandboxed=run.sandboxed)


def _end_worker(worker, run: _Run, why: str) -> None:
    run.worker_end = why
    _kill(worker)


def _exit_cause(returncode: int, *, sandboxed: bool) -> str:
    signum = -returncode if returncode < 0 else (returncode - 128 if sandboxed and returncode > 128 else None)
    if signum:
        try:
            return f"crashed with signal {signal.Signals(signum).name}"
        except ValueError:
            return f"crashed with signal {signum}"
    return f"exited the process (exit code {returncode})"


def _size(n: int) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20)):
        if n >= 1 << power:
            return f"{n / (1 << power):g} {unit}"
    return f"{n} bytes"


def _kill(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its session: everything it started that stayed there
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.kill()
    except ProcessLookupError:
        pass


def _stop(process, run: _Run | None) -> None:
    if process is None:
        return
    if run is not None and run.worker_end is None and process.poll() is not None:
        run.worker_end = _exit_cause(process.returncode, sandboxed=run.sandboxed)
    _kill(process)
    process.wait()


def _outcomes(run: _Run, returncode: int | None) -> list[CheckResult]:
    """One result per collected check; a check without a result from the judge has failed."""
    if run.internal:
        return [CheckResult("hidden checks load", False, f"the hidden checks failed to load (a bug in attn-drill):\n"
                                                        f"{run.internal}")]
    if not run.collected:
        tail = run.judge_output.decode(errors="replace")[-2000:]
        why = run.stopped or f"the judge process ended early (exit code {returncode})"
        return [CheckResult("grading starts", False, f"{why}; this is a problem of attn-drill, not of your code."
                            + (f"\n{tail}" if tail else ""))]
    clean = run.done and returncode in (0, 1) and not run.stopped
    cause = run.worker_end or "stopped the worker process"
    checks = []
    for check in run.collected:
        result = run.results.get(check.get("id"))
        name = str(check.get("name", check.get("id")))
        if result is None:
            ending = run.stopped or "the grading ended before this check ran"
            checks.append(CheckResult(name, False, f"not run: {ending}"))
        elif result.get("lost"):
            checks.append(CheckResult(name, False, f"your code {cause} during {result['lost']}."))
        else:
            checks.append(CheckResult(name, bool(result.get("passed")), str(result.get("message", "")),
                                      result.get("mistake")))
    if not clean and all(c.passed for c in checks):
        checks.append(CheckResult("grading ends cleanly", False, run.stopped or "the judge did not finish"))
    return checks
