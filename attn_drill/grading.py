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
    differs: bool | None = None   # the mutation audit: did some answer differ from the reference's?

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
            "extra_data": {"exercise": self.exercise, "sandbox": self.sandbox, "device": self.device},
        }


def parse_size(text: str) -> int:
    """'2GiB', '512MiB', '1.5G', '1000000' -> bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise DrillError(f"--memory-limit must be a size such as 2GiB or 512MiB, got '{text}'.",
                         zh=f"--memory-limit 必须是 2GiB 或 512MiB 这样的大小，实际是 '{text}'。")
    number, unit, binary = float(match.group(1)), match.group(2).upper(), match.group(3)
    power = " KMGT".index(unit) if unit else 0
    size = int(number * (1024 if binary or not unit else 1000) ** power) if unit else int(number)
    if size < 256 << 20:
        raise DrillError(f"--memory-limit must be at least 256MiB (torch alone needs about 300 MiB), got '{text}'.",
                         zh=f"--memory-limit 至少要 256MiB（光是 torch 就要约 300 MiB），实际是 '{text}'。")
    return size


def read_learner_source(path: Path) -> str:
    """The learner's file as text, or one clear DrillError saying why it is not a Python file."""
    if path.is_dir():
        raise DrillError(f"{path} is a directory; give the Python file to grade.",
                         zh=f"{path} 是一个目录；请给出要评测的 Python 文件。")
    if not path.is_file():
        raise DrillError(f"no file at {path}.", zh=f"{path} 处没有文件。")
    if path.stat().st_size > LEARNER_FILE_LIMIT:
        raise DrillError(f"{path} is over {LEARNER_FILE_LIMIT >> 20} MiB: it is not a Python source file.",
                         zh=f"{path} 超过 {LEARNER_FILE_LIMIT >> 20} MiB：它不是 Python 源文件。")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DrillError(f"{path} is not a Python file (it is not UTF-8 text).",
                         zh=f"{path} 不是 Python 文件（它不是 UTF-8 文本）。") from None
    if "\0" in text:
        raise DrillError(f"{path} is not a Python file (it holds binary data).",
                         zh=f"{path} 不是 Python 文件（它含有二进制数据）。")
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
    worker_end: str | None = None    # why the worker ended early, in the learner's terms
    stopped: str | None = None       # why the supervisor stopped the whole grading
    peak: int = 0
    output: bytearray = field(default_factory=bytearray)
    output_tail: bytearray = field(default_factory=bytearray)
    output_total: int = 0
    judge_output: bytearray = field(default_factory=bytearray)
    judge_status: int | None = None  # the judge child's exit code
    differs: bool | None = None      # with a tape to compare: some answer differed from the recorded one
    bench: dict | None = None        # the judge's timings, when it ran a bench (attn_drill.bench)
    lang: str = "en"                 # the language of the supervisor's own messages: "en" or "zh"
    first_failure: bool = False      # the judge stops at the first failed check

    def say(self, en: str, zh: str) -> str:
        return zh if self.lang == "zh" else en

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
            self.differs = record.get("differs")
        elif kind == "error":
            self.error = record.get("kind")
        elif kind == "internal":
            self.internal = record.get("message", "")
        elif kind == "bench":
            self.bench = record

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
          memory_limit: int | str = DEFAULT_MEMORY, sandbox: str = "auto", lang: str = "en") -> GradeReport:
    """Run ``exercise``'s hidden checks on ``learner_file``: the judge and the sandboxed worker,
    started for this grading alone (see :class:`Engine` to keep them warm for many).

    Raises DrillError for bad input (missing or non-Python file, unknown device, no CUDA for
    --device cuda, a bad limit, bubblewrap asked for but unusable).
    """
    check_options(device, timeout, memory_limit, sandbox)
    read_learner_source(Path(learner_file))
    with Engine(sandbox=sandbox, device=device) as engine:
        return engine.grade(exercise, learner_file, device=device, timeout=timeout, memory_limit=memory_limit,
                            lang=lang)


def check_options(device: str, timeout: float, memory_limit: int | str, sandbox: str) -> int:
    """Raise DrillError for a bad option; return the memory limit in bytes."""
    import math

    if device not in DEVICES:
        raise DrillError(f"--device must be one of {', '.join(DEVICES)}, got '{device}'.",
                         zh=f"--device 必须是 {'、'.join(DEVICES)} 之一，实际是 '{device}'。")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise DrillError(f"--timeout must be a positive number of seconds, got {timeout}.",
                         zh=f"--timeout 必须是正的秒数，实际是 {timeout}。")
    if sandbox not in SANDBOXES:
        raise DrillError(f"the sandbox must be one of {', '.join(SANDBOXES)}, got '{sandbox}'.",
                         zh=f"沙箱必须是 {'、'.join(SANDBOXES)} 之一，实际是 '{sandbox}'。")
    return parse_size(memory_limit) if isinstance(memory_limit, str) else int(memory_limit)


class Engine:
    """A warm judge and a warm worker: two templates, started once, each forking a fresh child
    per grading (the worker's inside its sandbox). Templates never run learner code; a grading's
    processes never serve another grading. Use as a context manager, or call :meth:`close`."""

    def __init__(self, *, sandbox: str = "auto", device: str = "auto", spawned_judge: bool = False):
        """With ``spawned_judge``, only the worker template starts here: the judge template comes
        from :meth:`spawn_judge` of another engine (a Pool's first)."""
        from attn_drill.engine import sandbox as boxing

        self.bwrap = None if sandbox == "none" else boxing.bwrap_path()
        if sandbox == "bubblewrap" and self.bwrap is None:
            raise DrillError("bubblewrap cannot run here (no bwrap, or user namespaces are off). "
                             "Try --allow-unsandboxed, or install bubblewrap.",
                             zh="这里无法运行 bubblewrap（没有 bwrap，或者用户命名空间被关闭）。"
                                "可以加 --allow-unsandboxed，或者安装 bubblewrap。")
        self.sandbox = "bubblewrap" if self.bwrap else "none"
        self.cuda = device in ("auto", "cuda") and boxing.has_nvidia()
        self._start(judge=not spawned_judge)

    def _start(self, judge: bool = True) -> None:
        """Start both templates (they import torch in parallel), or without ``judge`` the worker's
        alone; :meth:`_wait_ready` joins them."""
        import socket
        import subprocess
        import tempfile

        from attn_drill.engine import sandbox as boxing

        self.box = Path(tempfile.mkdtemp(prefix="attn-drill-box-"))
        self.scratch = Path(tempfile.mkdtemp(prefix="attn-drill-scratch-"))  # the worker's cwd without a sandbox
        self.judge_dir = Path(tempfile.mkdtemp(prefix="attn-drill-judge-"))
        for name in ("worker.py", "wire.py"):
            shutil.copyfile(content.PACKAGE_DIR / "engine" / name, self.box / name)
        for path in (self.box, *self.box.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.worker_control, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.judge_control, judge_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args = [str(worker_end.fileno())]
        if self.bwrap:
            argv, env, cwd = boxing.bwrap_command(self.bwrap, self.box, args, cuda=self.cuda), None, None
        else:
            argv = [sys.executable, "-I", str(self.box / "worker.py"), *args]
            env, cwd = boxing.worker_env(str(self.scratch)), str(self.scratch)
        try:
            # Unsandboxed, the template hears of the supervisor's death (SIGTERM) and ends its grading first.
            self.worker = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, pass_fds=(worker_end.fileno(),), env=env,
                                           cwd=cwd, preexec_fn=boxing.own_session(signal.SIGTERM))
            self.judge = None if not judge else subprocess.Popen(
                [sys.executable, "-m", "attn_drill.engine.judge", str(judge_end.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(judge_end.fileno(),), cwd=self.judge_dir, env=_judge_env(), preexec_fn=boxing.own_session())
        finally:
            worker_end.close()
            if judge:
                judge_end.close()
            else:
                self._judge_end = judge_end   # for spawn_judge
        self.worker_template: int | None = None   # the worker template's pid (below bwrap when sandboxed)
        self.broken: str | None = None
        self.ready = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait_ready(self) -> None:
        from attn_drill.engine import processes

        for control in (self.worker_control, self.judge_control):
            control.settimeout(STARTUP_LIMIT_S)
            try:
                message = control.recv(1 << 10)
            except OSError:
                message = b""
            spawned = control is self.judge_control and self.judge is None   # a judge forked for it
            if b'"ready": true' in message and (not spawned or self._take_spawned(message)):
                continue
            if spawned:  # no judge came: start one of its own
                self.close()
                self._start()
                return self._wait_ready()
            raise DrillError("the grader could not start (its judge or worker process failed). "
                             "Run `attn-drill check --verbose` again, and report it if it persists.",
                             zh="评测器无法启动（它的 judge 或 worker 进程失败了）。请再运行一次 "
                                "`attn-drill check --verbose`，如果问题依旧，请报告它。")
        if self.bwrap is None:
            self.worker_template = self.worker.pid
        else:
            python = [sys.executable.encode(), b"-I"]  # not bwrap's own processes, whose arguments name it too
            below = processes.below(self.worker.pid)
            self.worker_template = next((pid for pid in below if _cmdline(pid).split(b"\0")[:2] == python), None)
        self.ready = True

    def spawn_judge(self, other: Engine) -> None:
        """Give ``other`` (started with ``spawned_judge``) a judge template forked from this one's,
        warm already: a Pool's engines pay torch's import in one judge, not in each."""
        import socket

        if not self.ready:
            self._wait_ready()
        try:
            socket.send_fds(self.judge_control, [b'{"spawn": true}'], [other._judge_end.fileno()])
        except OSError:
            pass   # this judge is gone: ``other`` hears no answer and starts a judge of its own
        finally:
            other._judge_end.close()

    def _take_spawned(self, message: bytes) -> bool:
        try:
            pid = json.loads(message)["pid"]
        except (ValueError, KeyError, TypeError):
            return False
        self.judge = _SpawnedJudge(pid) if type(pid) is int else None
        return self.judge is not None

    def grade(self, exercise: Exercise, learner_file: Path, *, device: str = "auto",
              timeout: float = DEFAULT_TIMEOUT_S, memory_limit: int | str = DEFAULT_MEMORY,
              tape: dict | None = None, lang: str = "en", first_failure: bool = False) -> GradeReport:
        """One grading on the warm templates. With ``tape`` ({"record": path} or {"compare":
        path}), the judge records every answer of the worker, or compares each with the recorded
        one: ``report.differs`` says whether any differed (the mutation audit's probe). ``lang``
        ("en" or "zh"): the language of the check titles and messages. With ``first_failure``
        the checks after the first that fails are not run (a mutant is killed by one)."""
        started = time.monotonic()
        run = self.session(exercise, learner_file, device=device, timeout=timeout, memory_limit=memory_limit,
                           tape=tape, lang=lang, first_failure=first_failure)
        checks = _outcomes(run, run.judge_status)
        passed = bool(checks) and all(c.passed for c in checks)
        return GradeReport(exercise.id, str(learner_file), passed, checks, run.device, time.monotonic() - started,
                           self.sandbox, run.output_text(), run.peak, differs=run.differs)

    def session(self, exercise: Exercise, learner_file: Path, *, device: str = "auto",
                timeout: float = DEFAULT_TIMEOUT_S, memory_limit: int | str = DEFAULT_MEMORY,
                bench: dict | None = None, judge_slack_s: float = JUDGE_SLACK_S, tape: dict | None = None,
                lang: str = "en", first_failure: bool = False) -> _Run:
        """One fresh judge child and one fresh worker child, joined for one task, within the limits:
        the hidden checks, or with ``bench`` the judge's bench (:mod:`attn_drill.bench`) in their
        place. Returns what the supervisor observed."""
        import socket

        from attn_drill.engine import sandbox as boxing
        from attn_drill.engine.forbidden import worker_rules

        memory = check_options(device, timeout, memory_limit, "auto")
        learner_file = Path(learner_file)
        source = read_learner_source(learner_file)
        if self.broken or (self.ready and not self._alive()):  # a template is gone: start afresh
            self.close()
            self._start()
        if not self.ready:
            self._wait_ready()
        judge_copy = self.judge_dir / f"{exercise.id}-{time.monotonic_ns()}" / learner_file.name
        judge_copy.parent.mkdir()
        judge_copy.write_text(source, encoding="utf-8")

        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        results_read, results_write = os.pipe()
        output_read, output_write = os.pipe()
        judge_out_read, judge_out_write = os.pipe()
        limits = {"RLIMIT_CORE": 0, "RLIMIT_CPU": int(2 * timeout) + 30, "RLIMIT_FSIZE": boxing.SCRATCH_BYTES,
                  "RLIMIT_NPROC": boxing.MAX_PROCESSES}
        if not self.cuda:
            limits["RLIMIT_AS"] = memory + boxing.ADDRESS_SPACE_SLACK
        settings = {
            "device": device, "exercise": exercise.id, "checks_file": str(exercise.checks_path),
            "reference_file": str(exercise.solution_path), "learner_file": str(judge_copy),
            "learner_name": learner_file.name, "defines": list(exercise.defines),
            "forbidden": list(exercise.forbidden), "budget_s": float(timeout), "worker_pid": self.worker_template,
            "worker": {"module_name": f"learner_{exercise.id}", "forbidden": worker_rules(exercise.forbidden)},
            "bench": bench, "tape": tape, "lang": lang, "first_failure": first_failure,
        }
        run = _Run(lang=lang, first_failure=first_failure)
        try:
            socket.send_fds(self.worker_control, [json.dumps(limits).encode()],
                            [requests_read, replies_write, output_write])
            socket.send_fds(self.judge_control, [json.dumps(settings).encode()],
                            [results_write, requests_write, replies_read, judge_out_write])
        except OSError:
            self.broken = "a template is gone"
            run.stopped = run.say("the grader's processes stopped before grading", "评分程序的进程在评分开始前就停止了")
        finally:
            for fd in (requests_read, replies_write, output_write, results_write, requests_write, replies_read,
                       judge_out_write):
                os.close(fd)
        try:
            if run.stopped is None:
                _watch(run, self, results_read, output_read, judge_out_read, memory,
                       time.monotonic() + timeout + judge_slack_s)
        finally:
            self._end_grading(run)
            for fd in (results_read, output_read, judge_out_read):
                os.close(fd)
            shutil.rmtree(judge_copy.parent, ignore_errors=True)
        if run.error == "no_cuda":
            raise DeviceUnavailable("--device cuda: no CUDA device is available here. Try --device cpu or --device auto.")
        return run

    def _alive(self) -> bool:
        """Both templates still run (something outside may have killed one between gradings)."""
        return (self.worker.poll() is None and self.judge.poll() is None
                and self.worker_template is not None and Path(f"/proc/{self.worker_template}").exists())

    def grading_pids(self) -> list[int]:
        from attn_drill.engine import processes

        return processes.below(self.worker_template) if self.worker_template else []

    def kill_grading(self) -> None:
        for pid in self.grading_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _end_grading(self, run: _Run) -> None:
        """Stop what is left of the grading, and collect both templates' reports of it. A template
        the learner's code stopped (SIGSTOP) is resumed: it ran none of that code, and can go on."""
        self.kill_grading()
        for pid in (self.worker_template, self.judge.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except (ProcessLookupError, PermissionError):
                    pass
        for name, control in (("worker", self.worker_control), ("judge", self.judge_control)):
            control.settimeout(TEMPLATE_REPORT_S)
            try:
                report = json.loads(control.recv(1 << 10))
                status = int(report["done"])
            except (OSError, ValueError, KeyError, TypeError):
                self.broken = f"the {name} template did not report"
                continue
            if name == "judge":
                run.judge_status = os.waitstatus_to_exitcode(status)
            elif run.worker_end is None:
                run.worker_end = _exit_cause(os.waitstatus_to_exitcode(status), run.lang)

    def close(self) -> None:
        for control in (self.worker_control, self.judge_control):
            control.close()
        for process in (self.worker, self.judge):
            if process is not None:   # a judge still to be spawned has none yet
                _kill(process)
                process.wait()
        for folder in (self.box, self.scratch, self.judge_dir):
            shutil.rmtree(folder, ignore_errors=True)


TEMPLATE_REPORT_S = 5.0


class Pool:
    """Several warm engines grading many files at once (``check --all``, ``validate``,
    ``grade DIR``): ``jobs`` gradings run in parallel, each on an engine of its own."""

    def __init__(self, jobs: int = 0, *, sandbox: str = "auto", device: str = "auto"):
        jobs = max(1, jobs or os.cpu_count() or 1)
        first = Engine(sandbox=sandbox, device=device)
        self.engines = [first] + [Engine(sandbox=sandbox, device=device, spawned_judge=True) for _ in range(jobs - 1)]
        for engine in self.engines[1:]:
            if engine.judge is None:   # its worker template starts meanwhile
                first.spawn_judge(engine)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sandbox(self) -> str:
        return self.engines[0].sandbox

    def grade_all(self, jobs: list[tuple[Exercise, Path]], *, on_done=lambda index, report: None,
                  tape_for=lambda index: None, **options) -> list[GradeReport]:
        """Grade every (exercise, file); reports in the order given. ``on_done`` hears of each
        as it finishes. A DrillError for one file (not a Python file, say) stops nothing else:
        that file's report has one failed check saying why."""
        import queue
        from concurrent.futures import ThreadPoolExecutor

        free: queue.Queue[Engine] = queue.Queue()
        for engine in self.engines:
            free.put(engine)

        def run(index: int) -> GradeReport:
            exercise, path = jobs[index]
            engine = free.get()
            try:
                report = engine.grade(exercise, path, tape=tape_for(index), **options)
            except DeviceUnavailable:
                raise
            except DrillError as error:
                title = "你的文件可以评分" if options.get("lang") == "zh" else "your file can be graded"
                report = GradeReport(exercise.id, str(path), False, [CheckResult(title, False, str(error))], "cpu",
                                     0.0, engine.sandbox)
            finally:
                free.put(engine)
            on_done(index, report)
            return report

        with ThreadPoolExecutor(max_workers=len(self.engines)) as threads:
            return list(threads.map(run, range(len(jobs))))

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _judge_env() -> dict[str, str]:
    from attn_drill.engine.sandbox import HUGE_PAGE_HEAP

    return {
        **HUGE_PAGE_HEAP,   # unless the user set glibc's tunables
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(content.PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",    # the user's pytest plugins stay out
    }


def _watch(run: _Run, engine: Engine, results_read: int, output_read: int, judge_out_read: int,
           memory: int, deadline: float) -> None:
    """Read the judge's results and the worker's output until the judge's grading ends;
    meanwhile keep the grading's processes within their limits."""
    import selectors

    from attn_drill.engine import processes
    from attn_drill.engine.sandbox import MAX_PROCESSES

    selector = selectors.DefaultSelector()
    for fd, what in ((results_read, "results"), (output_read, "output"), (judge_out_read, "judge")):
        selector.register(fd, selectors.EVENT_READ, what)
    pending = b""
    next_poll = 0.0   # the limits are read every POLL_S, not at every record the judge sends
    while True:
        if time.monotonic() > deadline:
            run.stopped = run.say("the grading took too long and was stopped", "评分耗时过长，已被终止")
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
                    _end_worker(engine, run, run.say(f"printed over {OUTPUT_LIMIT_BYTES >> 20} MiB of output, "
                                                     "so the grader stopped it",
                                                     f"输出了超过 {OUTPUT_LIMIT_BYTES >> 20} MiB 的内容，"
                                                     "评分程序因此终止了它"))
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
        if run.worker_end is None and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + POLL_S
            pids = engine.grading_pids()
            resident, peak = processes.resident_bytes(pids), processes.peak_bytes(pids)
            run.peak = max(run.peak, resident, peak)
            if max(resident, peak) > memory:
                _end_worker(engine, run, run.say(f"used more than {_size(memory)} of memory (the limit; see "
                                                 "--memory-limit)",
                                                 f"使用了超过 {_size(memory)} 的内存（这是上限；见 --memory-limit）"))
            elif len(pids) > MAX_PROCESSES:
                _end_worker(engine, run, run.say(f"started more than {MAX_PROCESSES} processes",
                                                 f"启动了超过 {MAX_PROCESSES} 个进程"))


def _end_worker(engine: Engine, run: _Run, why: str) -> None:
    run.worker_end = why
    engine.kill_grading()


def _exit_cause(code: int, lang: str = "en") -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"因信号 {name} 而崩溃" if lang == "zh" else f"crashed with signal {name}"
    return f"退出了进程（退出码 {code}）" if lang == "zh" else f"exited the process (exit code {code})"


def _size(n: int) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20)):
        if n >= 1 << power:
            return f"{n / (1 << power):g} {unit}"
    return f"{n} bytes"


class _SpawnedJudge:
    """A judge template forked by another engine's (not this process's child): what
    :class:`Engine` asks of a template's Popen."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self) -> int | None:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return -signal.SIGKILL
        return -signal.SIGKILL if state in ("Z", "X") else None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> None:   # its parent, the template that forked it, collects it
        pass


def _kill(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its session: everything it started that stayed there
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.kill()
    except ProcessLookupError:
        pass


def _outcomes(run: _Run, returncode: int | None) -> list[CheckResult]:
    """One result per collected check; a check without a result from the judge has failed."""
    say = run.say
    if run.internal:
        return [CheckResult(say("hidden checks load", "隐藏检查加载"), False,
                            say("the hidden checks failed to load (a bug in attn-drill):\n",
                                "隐藏检查加载失败（attn-drill 的缺陷）：\n") + run.internal)]
    if not run.collected:
        tail = run.judge_output.decode(errors="replace")[-2000:]
        why = run.stopped or say(f"the judge process ended early (exit code {returncode})",
                                 f"judge 进程提前结束了（退出码 {returncode}）")
        return [CheckResult(say("grading starts", "评分开始"), False,
                            why + say("; this is a problem of attn-drill, not of your code.",
                                      "；这是 attn-drill 的问题，不是你的代码的问题。") + (f"\n{tail}" if tail else ""))]
    clean = run.done and returncode in (0, 1) and not run.stopped
    cause = run.worker_end or say("stopped the worker process", "终止了 worker 进程")
    checks = []
    for check in run.collected:
        result = run.results.get(check.get("id"))
        name = str(check.get("name", check.get("id")))
        if result is None:
            ending = run.stopped or (say("the grading stopped at the first failure", "评分在第一个失败处停止")
                                     if run.first_failure and clean else
                                     say("the grading ended before this check ran", "评分在这项检查运行之前就结束了"))
            checks.append(CheckResult(name, False, say(f"not run: {ending}", f"未运行：{ending}")))
        elif result.get("lost"):
            lost = str(result["lost"])
            checks.append(CheckResult(name, False, say(f"your code {cause} during {lost}.",
                                                       f"你的代码在{_pad(lost)}期间{cause}。")))
        else:
            checks.append(CheckResult(name, bool(result.get("passed")), str(result.get("message", "")),
                                      result.get("mistake")))
    if not clean and all(c.passed for c in checks):
        checks.append(CheckResult(say("grading ends cleanly", "评分正常结束"), False,
                                  run.stopped or say("the judge did not finish", "judge 没有完成")))
    return checks


def _pad(text: str) -> str:
    """``text`` with a space where it meets Chinese text with an ASCII character."""
    if not text:
        return text
    return (" " if text[0].isascii() else "") + text + (" " if text[-1].isascii() else "")
