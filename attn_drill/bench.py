"""`attn-drill bench EX`: the learner's code against the reference and PyTorch's built-in, timed
over growing sequence lengths, with peak memory. No terminal code here (see ``render.bench``).

It runs on the grading engine like every grading (``grading.Engine.session``): the supervisor
starts a fresh judge child and a fresh sandboxed worker child; the judge runs
:func:`judge_bench` in place of the hidden checks. The learner's code runs only in the worker,
through one request, ``time`` (``engine/worker.py``: warm-up runs, then timed runs, each between
two CUDA synchronisations, under the exercise's forbidden-API guard). The reference and the
built-in are timed in the judge. The judge makes every input, from :data:`SPECS`.

Each series walks the lengths in order and stops before a length it would not finish within its
budgets: a run projected over :data:`RUN_BUDGET_S`, memory projected over the budget (half the
memory limit on CPU, half the GPU's free memory on CUDA; time and memory are projected to grow as
L^2), or the time left (``--timeout``). Peak memory is the call's rise above what was allocated
before it: on CUDA the allocator's peak (the worker reports its own, the judge measures its own);
on CPU the kernel's high-water mark of the process, read from /proc outside the sandbox, less
the copies of the inputs the wire makes. Below a few MiB the CPU figure is noise: the C heap
reuses memory it freed before.

The learner's timings are worker data, as trustworthy as the learner's code: they are checked
for shape and against the wall time of the request, never used for a verdict.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Callable

from attn_drill.errors import DrillError

RUNS = 5                        # timed runs per length: their median is shown
WARMUP = 1                      # untimed runs before them
MAX_RUNS = 100
MAX_LENGTH = 1 << 16
DEFAULT_LENGTHS = {"cpu": (128, 256, 512, 1024, 2048, 4096), "cuda": (512, 1024, 2048, 4096, 8192, 16384)}
RUN_BUDGET_S = 2.0              # a series stops before a length whose runs would take longer than this each
PROBE_S = 30.0                  # the first call of the learner's code: import, construction, one small run
STEP_S = 10.0                   # each later request of the learner may take this much beyond 4x the projection
PLOT_HINT = "pip install 'attn-drill[plot]'"
GROWTH_FROM = {"time": 1e-4, "memory": 4 << 20}  # below these (s, bytes) how a series grows is noise

B, H, D = 1, 4, 64              # q, k, v (B, H, L, D) for the functions (ex1, ex10)
E = 256                         # the modules' width: x (B, L, E), 4 heads of 64 (ex2, ex6); 8 of 32 (ex9)
GQA_HEADS, GQA_KV_HEADS = 8, 2
BLOCK = 128                     # ex10's block_size


# ---------------------------------------------------------------------------------------
# What each exercise times. Judge side only: the functions import torch when called.


@dataclass(frozen=True)
class Spec:
    learner: str                               # what the learner's file defines
    builtin: str                               # the built-in, as the learner knows it
    inputs_text: str                           # the inputs, for people
    make_inputs: Callable[..., tuple]          # (L, device) -> (args, kwargs)
    reference: Callable[..., Callable]         # (reference module, device) -> the timed callable
    make_builtin: Callable[..., Callable]      # (device) -> the timed callable
    module_args: tuple | None = None           # the learner writes an nn.Module built with these
    kwargs: dict = field(default_factory=dict)  # keyword arguments of every call (learner and reference)

    def what(self) -> str:
        """The learner's code, as a message names it."""
        return f"your {self.learner}.forward" if self.module_args is not None else f"your {self.learner}()"


def _randn(*shape: int, seed: int, device):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device)


def _qkv(length: int, device) -> tuple:
    return [_randn(B, H, length, D, seed=i, device=device) for i in range(3)], {}  # 3 x (B, H, L, D)


def _x(length: int, device) -> tuple:
    return [_randn(B, length, E, seed=0, device=device)], {}  # (B, L, E)


def _sdpa(device) -> Callable:
    import torch.nn.functional as F

    return F.scaled_dot_product_attention


def _module(name: str, *args) -> Callable:
    def build(reference, device):
        import torch

        torch.manual_seed(0)
        return getattr(reference, name)(*args).to(device).eval()

    return build


def _builtin_multihead(device) -> Callable:
    import torch

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(E, 4, batch_first=True, device=device).eval()
    return lambda x: mha(x, x, x, need_weights=False)  # eval, no grad: its fused fast path


def _builtin_causal(device) -> Callable:
    """ex6's layer on the built-in: one fused qkv projection, SDPA with is_causal, out_proj."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    heads = 4
    qkv, out_proj = torch.nn.Linear(E, 3 * E, device=device), torch.nn.Linear(E, E, device=device)

    def forward(x):
        B_, T, _ = x.shape  # batch, time
        q, k, v = (t.view(B_, T, heads, E // heads).transpose(1, 2) for t in qkv(x).split(E, dim=2))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return out_proj(y.transpose(1, 2).reshape(B_, T, E))  # (B, T, E)

    return forward


def _builtin_grouped(device) -> Callable:
    """ex9's layer on the built-in: SDPA with enable_gqa (repeat_interleave where torch lacks it)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    d, group = E // GQA_HEADS, GQA_HEADS // GQA_KV_HEADS
    q_proj, out_proj = torch.nn.Linear(E, E, bias=False, device=device), torch.nn.Linear(E, E, bias=False, device=device)
    k_proj = torch.nn.Linear(E, GQA_KV_HEADS * d, bias=False, device=device)
    v_proj = torch.nn.Linear(E, GQA_KV_HEADS * d, bias=False, device=device)

    def forward(x):
        B_, T, _ = x.shape  # batch, time
        q = q_proj(x).view(B_, T, GQA_HEADS, d).transpose(1, 2)     # (B, H, T, D)
        k = k_proj(x).view(B_, T, GQA_KV_HEADS, d).transpose(1, 2)  # (B, H_kv, T, D)
        v = v_proj(x).view(B_, T, GQA_KV_HEADS, d).transpose(1, 2)  # (B, H_kv, T, D)
        try:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # (B, H, T, D)
        except TypeError:  # torch before 2.5
            y = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1))
        return out_proj(y.transpose(1, 2).reshape(B_, T, E))  # (B, T, E)

    return forward


SPECS: dict[str, Spec] = {
    "ex1": Spec("scaled_dot_product_attention", "F.scaled_dot_product_attention",
                f"q, k, v ({B}, {H}, L, {D}) float32", _qkv,
                lambda reference, device: reference.scaled_dot_product_attention, _sdpa),
    "ex2": Spec("MultiHeadAttention", "nn.MultiheadAttention", f"x ({B}, L, {E}) float32, 4 heads", _x,
                _module("MultiHeadAttention", E, 4), _builtin_multihead, module_args=(E, 4)),
    "ex6": Spec("CausalSelfAttention", "F.scaled_dot_product_attention(is_causal=True)",
                f"x ({B}, L, {E}) float32, 4 heads", _x, _module("CausalSelfAttention", E, 4), _builtin_causal,
                module_args=(E, 4)),
    "ex9": Spec("GroupedQueryAttention", "F.scaled_dot_product_attention(enable_gqa=True)",
                f"x ({B}, L, {E}) float32, {GQA_HEADS} query heads, {GQA_KV_HEADS} key/value heads", _x,
                _module("GroupedQueryAttention", E, GQA_HEADS, GQA_KV_HEADS), _builtin_grouped,
                module_args=(E, GQA_HEADS, GQA_KV_HEADS)),
    "ex10": Spec("tiled_attention", "F.scaled_dot_product_attention",
                 f"q, k, v ({B}, {H}, L, {D}) float32, block_size={BLOCK}", _qkv,
                 lambda reference, device: reference.tiled_attention, _sdpa, kwargs={"block_size": BLOCK}),
}


def spec_for(exercise_id: str) -> Spec:
    if exercise_id not in SPECS:
        raise DrillError(f"{exercise_id} has no benchmark: bench times {', '.join(SPECS)}. "
                         f"Try `attn-drill bench ex1`.",
                         zh=f"{exercise_id} 没有 bench：bench 只测 {', '.join(SPECS)}。试试 `attn-drill bench ex1`。")
    return SPECS[exercise_id]


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class Point:
    length: int
    times: list[float]              # seconds, one per timed run
    peak_bytes: int | None = None   # memory the call used beyond its inputs; None when not measured

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)


@dataclass
class Series:
    key: str                        # "yours", "reference" or "builtin"
    label: str                      # "your tiled_attention()", "the reference", "F.scaled_dot_product_attention"
    points: list[Point] = field(default_factory=list)
    stopped: str | None = None      # why the series ended before the last length
    failed: bool = False            # it ended because the learner's code failed (an error, a crash, a hang)

    def at(self, length: int) -> Point | None:
        return next((p for p in self.points if p.length == length), None)

    def growth(self, what: str) -> float | None:
        """The exponent k of time or memory ~ L^k between the last two points (None: too few)."""
        pairs = [(p.length, p.median_s if what == "time" else p.peak_bytes) for p in self.points]
        pairs = [(n, v) for n, v in pairs if v and v >= GROWTH_FROM[what]]
        if len(pairs) < 2 or pairs[-1][0] == pairs[-2][0]:
            return None
        (n0, v0), (n1, v1) = pairs[-2:]
        return math.log(v1 / v0) / math.log(n1 / n0)


@dataclass
class BenchReport:
    exercise: str
    file: str
    device: str
    sandbox: str
    inputs: str                     # the inputs, for people: "q, k, v (1, 4, L, 64) float32"
    lengths: list[int]
    runs: int
    warmup: int
    series: list[Series]
    problem: str | None = None      # the learner's code could not be timed at all: why
    duration_s: float = 0.0
    output: str = ""                # what the learner's code printed

    @property
    def passed(self) -> bool:
        """Exit 0: the learner's code ran, whether or not a budget stopped its series."""
        return self.problem is None and not any(s.failed for s in self.series)

    def series_named(self, key: str) -> Series | None:
        return next((s for s in self.series if s.key == key), None)

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise, "device": self.device, "sandbox": self.sandbox, "inputs": self.inputs,
            "lengths": self.lengths, "runs": self.runs, "warmup": self.warmup, "problem": self.problem,
            "passed": self.passed, "duration_s": round(self.duration_s, 3),
            "series": [{"name": s.key, "label": s.label, "stopped": s.stopped, "failed": s.failed,
                        "points": [{"length": p.length, "median_s": p.median_s, "times_s": p.times,
                                    "peak_bytes": p.peak_bytes} for p in s.points]} for s in self.series],
        }


# ---------------------------------------------------------------------------------------
# The supervisor's side: options, the session, the report


def parse_lengths(text: str | None) -> list[int] | None:
    """'128,256,512' or '128..4096' (doubling from the first) -> lengths; None: the device's default."""
    if text is None or not text.strip():
        return None
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split(".."))
            lengths = []
            while low <= high and low >= 1:
                lengths.append(low)
                low *= 2
        else:
            lengths = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise DrillError(f"--lengths must be numbers such as 128,256,512 or a range 128..4096, got '{text}'.",
                         zh=f"--lengths 必须是像 128,256,512 这样的数字，或范围 128..4096，而不是 '{text}'。") from None
    if not lengths or any(n < 1 or n > MAX_LENGTH for n in lengths):
        raise DrillError(f"--lengths must be between 1 and {MAX_LENGTH}, got '{text}'. Try 128..4096.",
                         zh=f"--lengths 必须在 1 到 {MAX_LENGTH} 之间，而不是 '{text}'。试试 128..4096。")
    return sorted(set(lengths))


def bench_exercise(key: str, *, file: Path | None = None, **options) -> BenchReport:
    """`attn-drill bench KEY`: the workspace's file (or ``file``) as exercise KEY."""
    from attn_drill.catalog import find_exercise
    from attn_drill.practice import learner_file

    exercise = find_exercise(key)
    spec_for(exercise.id)
    return bench(exercise, learner_file(exercise, file), **options)


def bench(exercise, learner_file: Path, *, device: str = "auto", lengths: list[int] | None = None,
          runs: int = RUNS, warmup: int = WARMUP, timeout: float | None = None, memory_limit: int | str | None = None,
          sandbox: str = "auto", engine=None, lang: str = "en") -> BenchReport:
    """Time ``learner_file`` as ``exercise`` against the reference and the built-in. On ``engine``
    (a warm :class:`attn_drill.grading.Engine`) when given, else on one started for this bench.
    The judge's lines are English (:func:`zh_text` translates them); what the supervisor saw of a
    lost worker is in ``lang``.

    Raises DrillError for bad input (an exercise without a benchmark, bad lengths or runs, a
    missing or non-Python file, no CUDA for --device cuda)."""
    from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, Engine, check_options, read_learner_source

    spec = spec_for(exercise.id)
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    memory = check_options(device, timeout, DEFAULT_MEMORY if memory_limit is None else memory_limit, sandbox)
    if lengths is not None and (not lengths or any(type(n) is not int or not 1 <= n <= MAX_LENGTH for n in lengths)):
        raise DrillError(f"--lengths must be between 1 and {MAX_LENGTH}, got {lengths}.",
                         zh=f"--lengths 必须在 1 到 {MAX_LENGTH} 之间，而不是 {lengths}。")
    for name, value, low in (("--runs", runs, 1), ("--warmup", warmup, 0)):
        if type(value) is not int or not low <= value <= MAX_RUNS:
            raise DrillError(f"{name} must be a whole number from {low} to {MAX_RUNS}, got {value}.",
                             zh=f"{name} 必须是 {low} 到 {MAX_RUNS} 之间的整数，而不是 {value}。")
    read_learner_source(Path(learner_file))
    task = {"lengths": sorted(set(lengths)) if lengths else None, "runs": runs, "warmup": warmup,
            "memory_budget": memory // 2, "time_budget_s": float(timeout)}
    if engine is None:
        with Engine(sandbox=sandbox, device=device) as own:
            return _bench(own, exercise, Path(learner_file), spec, task, device, timeout, memory, lang)
    return _bench(engine, exercise, Path(learner_file), spec, task, device, timeout, memory, lang)


def _bench(engine, exercise, learner_file: Path, spec: Spec, task: dict, device: str, timeout: float,
           memory: int, lang: str) -> BenchReport:
    started = time.monotonic()
    # The judge times two trusted series besides the learner's, each within its own time budget.
    run = engine.session(exercise, learner_file, device=device, timeout=timeout, memory_limit=memory, bench=task,
                         judge_slack_s=2 * timeout + 60, lang=lang)
    report = BenchReport(exercise.id, str(learner_file), run.device, engine.sandbox, spec.inputs_text,
                         list(task["lengths"] or DEFAULT_LENGTHS.get(run.device, DEFAULT_LENGTHS["cpu"])),
                         task["runs"], task["warmup"], [], output=run.output_text())
    record = run.bench
    if record is None:
        why = (f"the bench failed (a bug in attn-drill):\n{run.internal}" if run.internal else
               f"the bench did not finish ({run.stopped or f'the judge ended early, exit code {run.judge_status}'}); "
               "this is a problem of attn-drill, not of your code.")
        tail = run.judge_output.decode(errors="replace")[-2000:].strip()
        report.problem = why + (f"\n{tail}" if tail and not run.internal else "")
    else:
        report.lengths = [int(n) for n in record.get("lengths", report.lengths)]
        cause = run.worker_end or run.say("stopped the worker process", "终止了 worker 进程")
        if record.get("problem"):
            report.problem = _failure_text(record["problem"], cause, lang)
        labels = {"yours": spec.what(), "reference": "the reference", "builtin": spec.builtin}
        for key in ("yours", "reference", "builtin"):
            data = (record.get("series") or {}).get(key)
            if data is None:
                continue
            series = Series(key, labels[key], [Point(int(p["length"]), [float(t) for t in p["times"]], p.get("peak"))
                                               for p in data.get("points", [])], data.get("stopped"))
            if data.get("failure"):
                series.stopped, series.failed = _failure_text(data["failure"], cause, lang), True
            report.series.append(series)
    report.duration_s = time.monotonic() - started
    return report


def _failure_text(failure: dict, cause: str, lang: str) -> str:
    """The judge's account of a failure of the learner's code; a lost worker's cause is the
    supervisor's (a signal, the memory limit, the output limit), said in ``lang``."""
    if failure.get("text"):
        return failure["text"]
    what, length = failure.get("what", "your code"), failure.get("length")
    if lang == "zh":
        return f"{_zh_what(what)}{f' 在 L={length} 时' if length else ''}{cause}。"
    return f"{what} {cause}{f' at L={length}' if length else ''}."


# ---------------------------------------------------------------------------------------
# The plot (optional: matplotlib)


def require_plotting() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise DrillError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}",
                         zh=f"--plot 需要 matplotlib，但它没有安装：{PLOT_HINT}")


def write_plot(report: BenchReport, path: Path) -> Path:
    """A PNG: time and peak memory against L, log-log, one line per series."""
    require_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for series in report.series:
        lengths = [p.length for p in series.points]
        times.plot(lengths, [p.median_s * 1e3 for p in series.points], marker="o", label=series.label)
        measured = [(p.length, p.peak_bytes / 2**20) for p in series.points if p.peak_bytes]
        if measured:
            memory.plot(*zip(*measured), marker="o", label=series.label)
    for axes, title in ((times, "median time (ms)"), (memory, "peak memory (MiB)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(report.lengths, [str(n) for n in report.lengths])
        axes.set_yscale("log")
        axes.set_xlabel("sequence length L")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(f"attn-drill bench {report.exercise} · {report.device} · {report.inputs}", fontsize=10)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png", dpi=110)
    except OSError as error:
        raise DrillError(f"cannot write the plot to {path}: {error.strerror or error}. Try another path.",
                         zh=f"无法把图写入 {path}：{error.strerror or error}。请换一个路径。") from None
    finally:
        plt.close(figure)
    return path


# ---------------------------------------------------------------------------------------
# The judge's side: runs in the judge child (engine/judge.py), never in the supervisor


class _Stopped(Exception):
    """The learner's code cannot go on: ``text`` says why in one line (None: the worker was lost,
    and the supervisor knows the cause)."""

    def __init__(self, what: str, text: str | None, length: int | None = None, budget: bool = False):
        super().__init__(text or what)
        self.record = {"what": what, "text": text, "length": length}
        self.budget = budget  # a budget was reached (out of GPU memory), not a failure of the code


class _Learner:
    """The learner's code in the worker: one deadline per request, and every failure as one line."""

    def __init__(self, remote, budget_s: float, worker_pid: int | None):
        self.remote = remote
        self.budget_s = budget_s
        self.worker_pid = worker_pid

    def left_s(self) -> float:
        return self.budget_s - self.remote.spent_s

    def ask(self, what: str, op: str, limit_s: float, length: int | None = None, **fields) -> Any:
        from attn_drill.engine.remote import LearnerError, OutOfTime, WorkerLost, WorkerProblem

        allowed = max(0.05, min(limit_s, self.left_s()))
        self.remote.budget_s = self.remote.spent_s + allowed  # the Remote's deadline for this request
        at = f" at L={length}" if length else ""
        try:
            return self.remote.request(op, **fields)
        except LearnerError as error:
            if error.type == "OutOfMemoryError":
                raise _Stopped(what, f"stopped{at}: {what} ran out of GPU memory.", length, budget=True) from None
            raise _Stopped(what, _learner_line(what, error, at), length) from None
        except OutOfTime:
            raise _Stopped(what, f"{what} did not return within {allowed:.2g} s{at}: it hangs, or is far slower "
                                 "than expected (--timeout sets your code's time).", length) from None
        except WorkerLost:
            raise _Stopped(what, None, length) from None
        except WorkerProblem as problem:
            raise _Stopped(what, f"{what}: your code interfered with the grader: it {problem}{at}.", length) from None


def _learner_line(what: str, error, at: str) -> str:
    """One line for an error the learner's code raised (never its traceback)."""
    frames = [line.strip() for line in error.trace.splitlines() if line.startswith("  ")]
    where = f" ({frames[-1].split(', in ')[0]})" if frames else ""
    if error.kind == "not_implemented":
        return f"{what} is not written yet: it raises NotImplementedError{where}."
    if error.kind == "missing":
        return f"{error.message}; the statement asks for it."
    if error.kind == "forbidden":
        return f"{what}{at}: {error.message}"
    if error.kind == "system_exit":
        return f"{what} called sys.exit({error.message}){at}; return a result instead."
    message = (error.message.strip().splitlines() or [""])[0]
    summary = " ".join(f"{error.type or 'an error'}: {message}".split())[:300] if message else error.type or "an error"
    return f"{what} raised {summary}{at}{where}."


def judge_bench(settings: dict, reporter, requests_fd: int, replies_fd: int) -> int:
    """The bench, in the judge child: set the learner's code up in the worker and try it once on
    the smallest length (an unwritten or broken file ends here), time the reference and the
    built-in here, then the learner's code; send one "bench" record."""
    import traceback

    import torch

    from attn_drill.engine.remote import Remote

    wanted = settings["device"]
    if wanted == "cuda" and not torch.cuda.is_available():
        reporter.send("error", kind="no_cuda")
        return 3
    device = torch.device("cuda" if wanted in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # as in the worker: one thread each, so the three compare
    torch.backends.cuda.matmul.allow_tf32 = False  # as in the worker
    torch.backends.cudnn.allow_tf32 = False
    if device.type == "cpu":
        _fresh_pages()  # as the worker does for the learner's code: the kernel's count follows the tensors
    reporter.send("ready", device=device.type)
    try:
        record = _judge_bench(torch, settings, device, Remote(requests_fd, replies_fd, settings["budget_s"], device))
    except Exception:  # a bug in attn-drill: the supervisor reports it as such
        reporter.send("internal", message=traceback.format_exc()[-3000:])
        return 3
    reporter.send("bench", **record)
    reporter.send("done", exit=0)
    return 0


def _judge_bench(torch, settings: dict, device, remote) -> dict:
    from attn_drill.engine.remote import RemoteObject

    task, spec = settings["bench"], SPECS[settings["exercise"]]
    lengths = list(task["lengths"] or DEFAULT_LENGTHS[device.type])
    warmup, runs = int(task["warmup"]), int(task["runs"])
    memory_budget = int(task["memory_budget"])
    if device.type == "cuda":
        memory_budget = torch.cuda.mem_get_info(device)[0] // 2
    learner = _Learner(remote, float(settings["budget_s"]), settings.get("worker_pid"))
    record: dict = {"lengths": lengths, "series": {}, "problem": None}

    # 1) the learner's code: import, build, one run on the smallest length
    source = Path(settings["learner_file"]).read_text(encoding="utf-8")
    worker_settings = {**settings["worker"], "device": device.type, "learner_name": settings["learner_name"],
                       "source": source}
    try:
        learner.ask("the start of the worker", "settings", PROBE_S, settings=worker_settings)
        names = learner.ask("the import of your file", "import", PROBE_S)
        if not isinstance(names, dict) or names.get(spec.learner) not in ("function", "class"):
            raise _Stopped(spec.what(), f"your file does not define {spec.learner}; the statement asks for it.")
        target: Any = spec.learner
        if spec.module_args is not None:
            built = f"your {spec.learner}({', '.join(map(str, spec.module_args))})"
            answer = learner.ask(built, "call", PROBE_S, target=spec.learner, method=None,
                                 args=list(spec.module_args), kwargs={}, watch=False)
            target = answer.get("result") if isinstance(answer, dict) else None
            if not isinstance(target, RemoteObject) or not target.is_module:
                raise _Stopped(built, f"{built} should make a torch.nn.Module.")
            learner.ask(f"your {spec.learner}.to()", "to", PROBE_S, target=target,
                        kwargs={"device": device, "dtype": torch.float32})
            learner.ask(f"your {spec.learner}.eval()", "train", PROBE_S, target=target, mode=False)
        probe = _learner_timer(torch, learner, spec, target, device, 0, 1, lambda: PROBE_S)
        probe(lengths[0], *spec.make_inputs(lengths[0], device))
    except _Stopped as stop:
        record["problem"] = stop.record
        return record

    # 2) the reference and the built-in, here; 3) the learner's code, in the worker
    reference = _load_reference(Path(settings["reference_file"]), settings["exercise"])
    budget = float(task["time_budget_s"])
    for key, fn in (("reference", spec.reference(reference, device)), ("builtin", spec.make_builtin(device))):
        clock = _Clock(budget)
        fixed = spec.kwargs if key == "reference" else {}  # the built-in has no block_size
        args, kwargs = spec.make_inputs(lengths[0], device)
        try:
            with torch.no_grad():  # as the probe did for the learner's code: first-call costs stay out of the series
                fn(*args, **kwargs, **fixed)
        except (MemoryError, RuntimeError) as error:
            if not _out_of_memory(error):
                raise
            record["series"][key] = {"points": [], "stopped": f"stopped at L={lengths[0]}: out of memory.",
                                     "failure": None}
            continue
        finally:
            del args, kwargs
        record["series"][key] = _series(spec, lengths, device, memory_budget, warmup, runs, clock.left,
                                        _local_timer(torch, fn, fixed, device, warmup, runs))
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the learner's code gets the memory the trusted series used
    expected: dict = {"s": PROBE_S}
    timer = _learner_timer(torch, learner, spec, target, device, warmup, runs, lambda: expected["s"])
    record["series"]["yours"] = _series(spec, lengths, device, memory_budget, warmup, runs, learner.left_s, timer,
                                        expected=expected)
    return record


class _Clock:
    """A trusted series' own time budget."""

    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


def _series(spec: Spec, lengths: list[int], device, memory_budget: int, warmup: int, runs: int,
            time_left: Callable[[], float], timer: Callable, expected: dict | None = None) -> dict:
    """Time one implementation over the lengths, stopping before a length past a budget."""
    points: list[dict] = []
    stopped, failure = None, None
    for length in lengths:
        if time_left() <= 0:
            stopped = f"stopped before L={length}: its time is used up (--timeout)."
            break
        if points:
            last = points[-1]
            grow = (length / last["length"]) ** 2
            run_s = statistics.median(last["times"]) * grow
            if run_s > RUN_BUDGET_S:
                stopped = (f"stopped before L={length}: each run would take about {run_s:.1f} s, over the "
                           f"{RUN_BUDGET_S:g} s budget.")
                break
            if run_s * (warmup + runs) > time_left():
                stopped = (f"stopped before L={length}: its runs would take about {run_s * (warmup + runs):.0f} s, "
                           f"more than the {max(0.0, time_left()):.0f} s left (--timeout).")
                break
            if last["peak"] and last["peak"] * grow > memory_budget:
                stopped = (f"stopped before L={length}: it would need about {_size(last['peak'] * grow)} of memory, "
                           f"over the {_size(memory_budget)} budget.")
                break
            if expected is not None:
                expected["s"] = STEP_S + 4 * run_s * (warmup + runs)
        args, kwargs = spec.make_inputs(length, device)
        try:
            times, peak = timer(length, args, kwargs)
        except _Stopped as stop:
            if stop.budget:
                stopped = stop.record["text"]
            else:
                failure = stop.record
            break
        except (MemoryError, RuntimeError) as error:  # in trusted code; torch.OutOfMemoryError is a RuntimeError
            if not _out_of_memory(error):
                raise
            stopped = f"stopped at L={length}: out of memory."
            break
        finally:
            del args, kwargs
        points.append({"length": length, "times": times, "peak": peak})
    return {"points": points, "stopped": stopped, "failure": failure}


def _out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def _local_timer(torch, fn: Callable, fixed: dict, device, warmup: int, runs: int) -> Callable:
    """Time trusted code here, as the worker times the learner's."""
    from attn_drill.engine import processes

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def once(args, kwargs):
        sync()
        start = perf_counter()
        fn(*args, **kwargs, **fixed)
        sync()
        return perf_counter() - start

    def timer(length, args, kwargs):
        pids = [os.getpid()]
        with torch.no_grad():
            if not cuda:
                processes.reset_peaks(pids)
                before = processes.peak_bytes(pids)
            for _ in range(warmup):
                once(args, kwargs)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            times = [once(args, kwargs) for _ in range(runs)]
        peak = torch.cuda.max_memory_allocated(device) if cuda else processes.peak_bytes(pids)
        return times, max(0, peak - before)

    return timer


def _learner_timer(torch, learner: _Learner, spec: Spec, target, device, warmup: int, runs: int,
                   limit_s: Callable[[], float]) -> Callable:
    """Time the learner's code in the worker (the ``time`` request). On CPU its peak memory is the
    kernel's, read here from outside the sandbox; on CUDA it is the worker's allocator's."""
    from attn_drill.engine import processes

    what = spec.what()

    def timer(length, args, kwargs):
        pids = processes.below(learner.worker_pid) if learner.worker_pid and device.type == "cpu" else []
        if pids:
            processes.reset_peaks(pids)
            before = processes.peak_bytes(pids)
        started = perf_counter()
        answer = learner.ask(what, "time", limit_s(), length, target=target, method=None, args=list(args),
                             kwargs={**kwargs, **spec.kwargs}, warmup=warmup, runs=runs)
        wall = perf_counter() - started
        keys = {"times", "before", "peak"} if device.type == "cuda" else {"times"}
        times = answer.get("times") if isinstance(answer, dict) and set(answer) == keys else None
        if (not isinstance(times, list) or len(times) != runs
                or not all(type(t) is float and math.isfinite(t) and t >= 0 for t in times) or sum(times) > wall):
            raise _Stopped(what, f"{what}: your code interfered with the grader (its timings are malformed) "
                                 f"at L={length}.", length)
        if device.type == "cuda":
            before, peak = answer["before"], answer["peak"]
            if not all(type(n) is int and n >= 0 for n in (before, peak)):
                raise _Stopped(what, f"{what}: your code interfered with the grader (its memory figures are "
                                     f"malformed) at L={length}.", length)
            return times, max(0, peak - before)
        if not pids:
            return times, None
        now = processes.below(learner.worker_pid) or pids
        wire_copies = 2 * sum(t.nelement() * t.element_size() for t in args if isinstance(t, torch.Tensor))
        return times, max(0, processes.peak_bytes(now) - before - wire_copies)

    return timer


def _fresh_pages(threshold: int = 256 << 10) -> None:
    """A copy of engine/worker.py's fresh_pages (importing that file here would put the engine's
    folder on sys.path): every block of ``threshold`` bytes or more a fresh mapping, unmapped when freed."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _load_reference(path: Path, exercise_id: str):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"reference_{exercise_id}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _size(n: float) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << power:
            return f"{n / (1 << power):.3g} {unit}"
    return f"{int(n)} B"


# ---------------------------------------------------------------------------------------
# The bench's lines in Chinese (the judge writes them in English; render.bench shows these under zh)

_ZH_WHAT = [(r"your (\w+)\.forward", r"你的 \1.forward"), (r"your (\w+)\(\)", r"你的 \1()"),
            (r"your (\w+)\((.*)\)", r"你的 \1(\2)"), (r"your (\w+)\.(to|eval)\(\)", r"你的 \1.\2()"),
            ("the reference", "参考实现"), ("the import of your file", "导入你的文件"),
            ("the start of the worker", "启动工作进程"), ("your code", "你的代码")]

_ZH_LINES = [
    (r"stopped before L=(\d+): its time is used up \(--timeout\)\.", "在 L={0} 之前停止：时间已用完（--timeout）。"),
    (r"stopped before L=(\d+): each run would take about (\S+) s, over the (\S+) s budget\.",
     "在 L={0} 之前停止：每次运行约需 {1} 秒，超过 {2} 秒的预算。"),
    (r"stopped before L=(\d+): its runs would take about (\S+) s, more than the (\S+) s left \(--timeout\)\.",
     "在 L={0} 之前停止：这些运行约需 {1} 秒，超过剩余的 {2} 秒（--timeout）。"),
    (r"stopped before L=(\d+): it would need about (.+) of memory, over the (.+) budget\.",
     "在 L={0} 之前停止：约需 {1} 内存，超过 {2} 的预算。"),
    (r"stopped at L=(\d+): out of memory\.", "在 L={0} 处停止：内存不足。"),
    (r"stopped(?: at L=(\d+))?: (.+) ran out of GPU memory\.", "{W1}{L0}停止：GPU 内存不足。"),
    (r"(.+?) did not return within (\S+) s(?: at L=(\d+))?: it hangs, or is far slower than expected "
     r"\(--timeout sets your code's time\)\.", "{W0}{L2}没有在 {1} 秒内返回：它卡住了，或比预期慢得多"
                                               "（--timeout 设定你的代码的时间）。"),
    (r"(.+?): your code interfered with the grader: it (.+?)(?: at L=(\d+))?\.",
     "{W0}{L2}：你的代码干扰了评分程序：{1}。"),
    (r"(.+?) is not written yet: it raises NotImplementedError(.*)\.", "{W0} 还没有写：它抛出 NotImplementedError{1}。"),
    (r"your file does not define (\w+); the statement asks for it\.", "你的文件没有定义 {0}；题目要求定义它。"),
    (r"(.+?) should make a torch\.nn\.Module\.", "{W0} 应当创建一个 torch.nn.Module。"),
    (r"(.+?) called sys\.exit\((.*)\)(?: at L=(\d+))?; return a result instead\.",
     "{W0}{L2}调用了 sys.exit({1})；请改为返回结果。"),
    (r"(.+?) raised (.+?)(?: at L=(\d+))?( \(.*\))?\.", "{W0}{L2}抛出了 {1}{3}。"),
]


def _zh_what(what: str) -> str:
    for pattern, replacement in _ZH_WHAT:
        if re.fullmatch(pattern, what):
            return re.sub(pattern, replacement, what)
    return what


def zh_text(text: str | None) -> str | None:
    """A bench line (a series' stop, a failure, the problem) in Chinese; unknown lines stay as they are."""
    if not text:
        return text
    if text.startswith("the bench failed (a bug in attn-drill):"):
        return "bench 失败了（attn-drill 的 bug）：" + text[len("the bench failed (a bug in attn-drill):"):]
    found = re.match(r"the bench did not finish \((.*)\); this is a problem of attn-drill, not of your code\.", text,
                     re.S)
    if found:
        return f"bench 没有完成（{found.group(1)}）；这是 attn-drill 的问题，不是你的代码的问题。" + text[found.end():]
    for pattern, template in _ZH_LINES:
        found = re.fullmatch(pattern, text, re.S)
        if found:
            groups = [g or "" for g in found.groups()]
            fields = {f"W{i}": _zh_what(g) for i, g in enumerate(groups)}
            fields.update({f"L{i}": f" 在 L={g} " if g else " " for i, g in enumerate(groups)})
            return template.format(*groups, **fields).replace("  ", " ").strip()
    return text
