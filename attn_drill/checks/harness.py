"""The helper set every exercise's hidden checks use; it runs in the judge only.

The learner's code is never here: the ``learner`` fixture is a :class:`Learner`, a remote
door to the worker process (``attn_drill.engine.remote``). Through it a check calls the
learner's functions, builds and drives the learner's modules, and receives plain tensors the
judge rebuilt from bytes. Everything else (the reference, the inputs, the comparisons, the
verdicts) lives here, out of the learner's reach. Failures say what was compared, on which
shapes, the largest difference and where, and name a known mistake when the output matches
one.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import pytest
import torch

from attn_drill.engine.remote import (
    Interference, LearnerError, OutOfTime, Remote, RemoteObject, WorkerLost, WorkerProblem,
)

# ---------------------------------------------------------------------------------------
# Configuration, set by the judge before pytest starts.


@dataclass
class Config:
    exercise: str                      # "ex1"
    learner_file: Path                 # the judge's read-only copy, for the static scan
    learner_name: str                  # the file name the learner knows
    reference_file: Path
    defines: tuple[str, ...]
    forbidden: tuple[str, ...]
    worker_settings: dict
    worker_pid: int                    # the worker template's pid: gradings run below it
    device: torch.device
    remote: Remote
    state: dict = field(default_factory=dict)
    lang: str = "en"                   # the language of titles and messages: "en" or "zh"


CONFIG: Config | None = None
TRIPPED = object()   # call_watched's result when the worker cut the call short (see stop_above)


def config() -> Config:
    if CONFIG is None:  # pragma: no cover - only when a check module is run by hand
        raise RuntimeError("the hidden checks run through `attn-drill check`, not directly")
    return CONFIG


def current_lang() -> str:
    """The grading's language ("en" when no grading is configured)."""
    return CONFIG.lang if CONFIG is not None else "en"


def _t(en: str, zh: str) -> str:
    """``en`` or ``zh``, by the grading's language (``--lang zh`` or a Chinese locale)."""
    return zh if current_lang() == "zh" else en


def _pad(text: str) -> str:
    """``text`` with a space on each side that meets Chinese text with an ASCII character
    (docs/glossary.md: a space between an English word and the Chinese around it)."""
    text = str(text)
    if not text:
        return text
    return (" " if text[0].isascii() else "") + text + (" " if text[-1].isascii() else "")


_CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) (?=[{_CJK}])")


def _tidy(text: str) -> str:
    """Chinese text without the spaces a template left between two Chinese characters."""
    return _CJK_SPACE.sub("", text)


def check(title: str, zh: str | None = None):
    """Give a check the title a learner sees ("weights rows sum to 1"), and its Chinese
    title (``zh``) for ``--lang zh``."""

    def mark(fn):
        fn.__check_title__ = title
        fn.__check_title_zh__ = zh
        return fn

    return mark


# ---------------------------------------------------------------------------------------
# Failures and known mistakes


class CheckFailure(AssertionError):
    """A failed check; ``mistake`` names a known mistake when the output matched one."""

    def __init__(self, message: str, mistake: str | None = None, while_doing: str | None = None):
        if current_lang() == "zh":
            message = _tidy(message)
        super().__init__(message)
        self.message = message
        self.mistake = mistake
        self.while_doing = while_doing


def fail(message: str, mistake: str | None = None):
    raise CheckFailure(message, mistake)


@dataclass(frozen=True)
class Mistake:
    """A classic error: ``key`` joins it to quiz concepts, ``says`` completes
    "your output equals ..."."""

    key: str
    says: str
    says_zh: str = ""   # the same in Chinese, completing "你的输出等于……"; "" where the table has none


MISTAKES_FILE = Path(__file__).resolve().parent.parent / "questions" / "mistakes.toml"


@lru_cache(maxsize=1)
def mistake_table() -> dict[str, Mistake]:
    """Every known mistake, from the one table the quiz reads too."""
    data = tomllib.loads(MISTAKES_FILE.read_text(encoding="utf-8"))
    return {entry["key"]: Mistake(entry["key"], entry["says"], entry.get("says_zh", ""))
            for entry in data["mistakes"]}


def mistake(key: str) -> Mistake:
    return mistake_table()[key]


def says(known: Mistake, lang: str | None = None) -> str:
    """What ``known`` computes, completing "your output equals ...", in ``lang`` (by default the
    grading's): the Chinese ``says_zh`` where the table has one, else the English."""
    if (lang or current_lang()) == "zh":
        return getattr(known, "says_zh", None) or known.says
    return known.says


def equals_line(known: Mistake, what: str = "output") -> str:
    """The line that names a known mistake: "\nYour output equals ...." (``what``: output or mask)."""
    if current_lang() == "zh":
        noun = {"output": "输出", "mask": "掩码"}.get(what, what)
        text = says(known, "zh")
        return f"\n你的{noun}等于{' ' if text[:1].isascii() else ''}{text}。"
    return f"\nYour {what} equals {known.says}."


# ---------------------------------------------------------------------------------------
# The learner, remote


class _ValueErrorRaised(Exception):
    def __init__(self, error: LearnerError):
        self.error = error


class Learner:
    """The learner's file as the checks see it: every call crosses to the worker."""

    def __init__(self, remote: Remote, names: dict[str, str]):
        self.remote = remote
        self.names = names    # what the learner's module defines: name -> "function" | "class" | "value"

    # -- the requests --------------------------------------------------------------------

    def _ask(self, what: str, op: str, *, value_error_ok: bool = False, **fields) -> Any:
        if self.remote.broken is not None:
            fail(_t(f"not run: your code {_problem_text(self.remote.broken)} in an earlier check (see above).",
                    f"未运行：你的代码在之前的一项检查中{_problem_text(self.remote.broken)}（见上文）。"))
        try:
            return self.remote.request(op, **fields)
        except LearnerError as error:
            if value_error_ok and error.kind == "value_error":
                raise _ValueErrorRaised(error) from None
            fail(_learner_error_text(what, error))
        except WorkerLost as problem:
            raise CheckFailure(_t(f"your code stopped the worker process during {what}",
                                  f"你的代码在{_pad(what)}期间终止了 worker 进程。"), None, what) from problem
        except WorkerProblem as problem:
            fail(_t(f"your code {_problem_text(problem)} during {what}.",
                    f"你的代码在{_pad(what)}期间{_problem_text(problem)}。"))

    def _call(self, what: str, target: Any, method: str | None, args: tuple, kwargs: dict,
              value_error_ok: bool = False, watch: bool = False, stop_above: int | None = None) -> Any:
        limit = {} if stop_above is None else {"stop_above": stop_above}
        answer = self._ask(what, "call", value_error_ok=value_error_ok, target=target, method=method,
                           args=list(args), kwargs=kwargs, watch=watch, **limit)
        tripped = stop_above is not None and isinstance(answer, dict) and answer.get("tripped") is True
        keys = {"result", "modified"} | ({"largest"} if watch else set()) | ({"tripped"} if tripped else set())
        if not isinstance(answer, dict) or set(answer) != keys or not isinstance(answer["modified"], list):
            raise CheckFailure(_t(f"{what}: your code interfered with the grader (a malformed answer).",
                                  f"{what}：你的代码干扰了评分程序（回答格式错误）。"))
        if answer["modified"]:
            fail(_t(f"{what} modified its input {answer['modified'][0]} in place; work on new tensors instead.",
                    f"{what} 原地修改了它的输入 {answer['modified'][0]}；请在新的张量上计算。"))
        if tripped:
            return TRIPPED, answer["largest"]
        return (answer["result"], answer["largest"]) if watch else answer["result"]

    def call(self, name: str, *args, **kwargs) -> Any:
        """Call the learner's function ``name``."""
        return self._call(f"{name}()", name, None, args, kwargs)

    def call_watched(self, name: str, *args, stop_above: int | None = None, **kwargs) -> tuple[Any, list]:
        """Call the learner's function ``name`` and report the largest tensor its code made,
        as the worker saw it ([numel, op, shape]: worker data, good for messages, not verdicts).
        With ``stop_above`` (bytes), the worker ends the call at the first tensor that large and
        the result is :data:`TRIPPED` (only a speed-up: the verdict stays the kernel's numbers)."""
        return self._call(f"{name}()", name, None, args, kwargs, watch=True, stop_above=stop_above)

    def new(self, name: str, *args, **kwargs) -> RemoteObject:
        """Construct the learner's class ``name``."""
        obj = self._call(f"{name}(...)", name, None, args, kwargs)
        if not isinstance(obj, RemoteObject):
            fail(_t(f"{name}(...) should make an object, got {type(obj).__name__}.",
                    f"{name}(...) 应当创建一个对象，却得到了 {type(obj).__name__}。"))
        return obj

    def module(self, name: str, *args, **kwargs) -> RemoteObject:
        """Construct the learner's ``nn.Module`` subclass ``name``."""
        obj = self.new(name, *args, **kwargs)
        if not obj.is_module:
            fail(_t(f"{name}(...) should be a torch.nn.Module, got {obj.type_name}.",
                    f"{name}(...) 应当是 torch.nn.Module，却得到了 {obj.type_name}。"))
        return obj

    def run(self, obj: RemoteObject, *args, what: str | None = None, **kwargs) -> Any:
        """Call a learner object: a module's forward."""
        return self._call(what or f"{obj.type_name}.forward", obj, None, args, kwargs)

    def method(self, obj: RemoteObject, name: str, *args, what: str | None = None, **kwargs) -> Any:
        return self._call(what or f"{obj.type_name}.{name}", obj, name, args, kwargs)

    def attr(self, obj: RemoteObject, name: str) -> Any:
        return self._ask(_t(f"reading {obj.type_name}.{name}", f"读取 {obj.type_name}.{name}"), "getattr",
                         target=obj, name=name)

    def length(self, obj: RemoteObject) -> int:
        n = self._ask(f"len({obj.type_name})", "len", target=obj)
        if type(n) is not int:
            fail(_t(f"len() of your {obj.type_name} should be an int, got {type(n).__name__}.",
                    f"你的 {obj.type_name} 的 len() 应当是 int，却得到了 {type(n).__name__}。"))
        return n

    def raises(self, case: str, names: Sequence[str], fn_name: str, *args, **kwargs) -> None:
        """Fail unless ``fn_name(*args)`` raises ValueError whose message names one of ``names``
        as a word (so "x" is not found in "expected")."""
        what = _t(f"{fn_name}() with {case}", f"{fn_name}()（{case}）")
        try:
            self._call(what, fn_name, None, args, kwargs, value_error_ok=True)
        except _ValueErrorRaised as raised:
            message = raised.error.message
            if not any(re.search(rf"\b{re.escape(name)}\b", message) for name in names):
                fail(_t(f"{what} raised ValueError({message!r}); say which argument is wrong "
                        f"(mention {' or '.join(repr(n) for n in names)}).",
                        f"{what} 抛出了 ValueError({message!r})；请说明是哪个参数有误"
                        f"（提到 {' 或 '.join(repr(n) for n in names)}）。"))
            return
        fail(_t(f"{what} should raise ValueError naming the argument, but it returned normally.",
                f"{what} 应当抛出指明该参数的 ValueError，但它正常返回了。"))

    # -- modules -------------------------------------------------------------------------

    def to(self, module: RemoteObject, **kwargs) -> RemoteObject:
        self._ask(f"{module.type_name}.to()", "to", target=module, kwargs=kwargs)
        return module

    def train(self, module: RemoteObject, mode: bool = True) -> RemoteObject:
        self._ask(f"{module.type_name}.train()", "train", target=module, mode=mode)
        return module

    def eval(self, module: RemoteObject) -> RemoteObject:
        return self.train(module, False)

    def state(self, module: RemoteObject) -> dict[str, tuple[tuple[int, ...], str]]:
        """The module's state dict: name -> (shape, dtype)."""
        entries = self._ask(f"{module.type_name}.state_dict()", "state", target=module)
        try:
            return {str(name): (tuple(int(n) for n in shape), str(dtype)) for name, shape, dtype in entries}
        except (TypeError, ValueError):
            raise CheckFailure(_t(f"{module.type_name}: your code interfered with the grader (a malformed state dict).",
                                  f"{module.type_name}：你的代码干扰了评分程序（state dict 格式错误）。"))

    def parameters(self, module: RemoteObject) -> dict[str, tuple[int, ...]]:
        entries = self._ask(f"{module.type_name}.named_parameters()", "parameters", target=module)
        try:
            return {str(name): tuple(int(n) for n in shape) for name, shape, _ in entries}
        except (TypeError, ValueError):
            raise CheckFailure(_t(f"{module.type_name}: your code interfered with the grader (a malformed answer).",
                                  f"{module.type_name}：你的代码干扰了评分程序（回答格式错误）。"))

    def trainable(self, module: RemoteObject) -> dict[str, bool]:
        """Each parameter's requires_grad, without fetching its values (which a statement may leave
        free, as an initialisation)."""
        entries = self._ask(f"{module.type_name}.named_parameters()", "parameters", target=module)
        try:
            return {str(name): requires_grad is True for name, _, requires_grad in entries}
        except (TypeError, ValueError):
            raise CheckFailure(f"{module.type_name}: your code interfered with the grader (a malformed answer).")

    def load(self, module: RemoteObject, state: dict[str, torch.Tensor]) -> None:
        self._ask(_t(f"loading weights into {module.type_name}", f"向 {module.type_name} 加载权重"), "load",
                  target=module, state=state)

    def seed(self, seed: int) -> None:
        self._ask("torch.manual_seed()", "seed", seed=seed)

    def grad(self, outputs: Sequence[torch.Tensor], grad_outputs: Sequence[torch.Tensor],
             wrt: Sequence[torch.Tensor] = (), module: RemoteObject | None = None,
             what: str | None = None):
        """Gradients of sum(output * grad_output) with respect to the tensors ``wrt`` (inputs the
        judge sent) and, given ``module``, its parameters: (list, dict name -> grad or None)."""
        what = what or _t("the backward pass through your code", "经过你的代码的反向传播")
        for output in outputs:
            if getattr(output, "_worker_id", None) is None:
                raise TypeError("grad() takes tensors the learner's code returned")  # a bug in a check
        answer = self._ask(what, "grad", outputs=[o._worker_id for o in outputs], grad_outputs=list(grad_outputs),
                           wrt=[_judge_id(t) for t in wrt], module=module)
        try:
            grads, params = answer["inputs"], answer["parameters"]
            assert len(grads) == len(wrt) and isinstance(params, dict)
            assert all(g is None or isinstance(g, torch.Tensor) for g in [*grads, *params.values()])
        except (TypeError, KeyError, AssertionError):
            raise CheckFailure(_t(f"{what}: your code interfered with the grader (a malformed answer).",
                                  f"{what}：你的代码干扰了评分程序（回答格式错误）。"))
        return grads, params

    def peak_memory(self, run: Callable[[], Any]) -> tuple[Any, int]:
        """Run ``run`` (learner calls) and measure how far the worker's resident memory rose above
        where it stood before: (its result, bytes). The kernel's numbers, read from outside the
        sandbox, where the worker cannot reach them."""
        from attn_drill.engine import processes

        pids = processes.below(config().worker_pid)
        processes.reset_peaks(pids)
        before = processes.peak_bytes(pids)
        result = run()
        return result, max(0, processes.peak_bytes(processes.below(config().worker_pid) or pids) - before)


def _judge_id(tensor: torch.Tensor) -> int:
    judge_id = getattr(tensor, "_judge_id", None)
    if judge_id is None:
        raise TypeError("grad() is taken with respect to tensors the judge sent")  # a bug in a check
    return judge_id


def _problem_text(problem: WorkerProblem) -> str:
    if current_lang() == "zh":
        if isinstance(problem, OutOfTime):
            return problem.text("zh")
        if isinstance(problem, Interference):
            return f"干扰了评分程序：它{problem.text('zh')}"
        return "终止了 worker 进程"
    if isinstance(problem, OutOfTime):
        return str(problem)
    if isinstance(problem, Interference):
        return f"interfered with the grader: it {problem}"
    return "stopped the worker process"


_WORKER_TEXT_ZH = (  # the worker's own sentences (attn_drill/engine/worker.py), in Chinese
    (re.compile(r"your file does not define (.+)", re.S), r"你的文件没有定义 \1"),
    (re.compile(r"(.+) is off limits in this exercise: write this yourself\.", re.S), r"本练习不允许使用 \1：请自己实现。"),
    (re.compile(r"an output is not connected to the inputs' graph"), "有一个输出没有连接到输入的计算图"),
)


def _worker_text(message: str) -> str:
    """A message the worker wrote, in the grading's language (unknown ones stay as they are)."""
    if current_lang() == "zh":
        for pattern, zh in _WORKER_TEXT_ZH:
            if pattern.fullmatch(message):
                return pattern.sub(zh, message)
    return message


def _learner_error_text(what: str, error: LearnerError) -> str:
    zh = current_lang() == "zh"
    if error.kind == "not_implemented":
        where = [line for line in error.trace.splitlines() if line.startswith("  ")][-1:]
        return (f"{what} 还没有实现：它抛出了 NotImplementedError。" if zh else
                f"{what} is not written yet: it raises NotImplementedError.") + (f"\n{where[0]}" if where else "")
    if error.kind == "forbidden":
        return f"{what}：{_worker_text(error.message)}" if zh else f"{what}: {error.message}"
    if error.kind == "system_exit":
        return _t(f"{what}: your code called sys.exit({error.message}); return a result instead.",
                  f"{what}：你的代码调用了 sys.exit({error.message})；请返回结果。")
    if error.kind == "missing":
        return _t(f"{error.message}; the statement asks for it.", f"{_worker_text(error.message)}；题目要求定义它。")
    if error.kind == "unencodable":
        return _t(f"{what} returned something the grader cannot take: {error.message}.",
                  f"{what} 返回了评分程序无法接收的东西：{error.message}。")
    if error.kind == "no_grad":
        return _t(f"{what}: {error.message}; do not detach, use .data or .numpy().",
                  f"{what}：{_worker_text(error.message)}；不要 detach，也不要用 .data 或 .numpy()。")
    return _t(f"{what} raised an error:\n{error.trace}", f"{what} 抛出了错误：\n{error.trace}")


def _import_learner() -> Learner:
    cfg = config()
    state = cfg.state
    if "learner" in state:
        return state["learner"]
    if "error" in state:
        pytest.skip(_t("your file did not import (see the first check)", "你的文件未能导入（见第一项检查）"))
    remote = cfg.remote
    try:
        learner = Learner(remote, {})
        learner._ask(_t("the start of the worker", "worker 启动"), "settings", settings=cfg.worker_settings)
        names = learner._ask(_t("the import of your file", "导入你的文件"), "import")
        if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
            fail(_t("the import of your file: your code interfered with the grader (a malformed answer).",
                    "导入你的文件：你的代码干扰了评分程序（回答格式错误）。"))
        learner.names = names
    except CheckFailure as failure:
        state["error"] = failure
        raise
    state["learner"] = learner
    return learner


@pytest.fixture
def learner() -> Learner:
    learner = _import_learner()
    learner._ask(_t("preparing the check", "准备检查"), "reset")
    return learner


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    import importlib.util
    import sys

    cfg = config()
    spec = importlib.util.spec_from_file_location(f"reference_{cfg.exercise}", cfg.reference_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def device() -> torch.device:
    return config().device


def require_defined(learner: Learner) -> None:
    """The import check: the file imports and defines everything the statement asks for."""
    missing = [name for name in config().defines if learner.names.get(name) not in ("function", "class")]
    if missing:
        fail(_t(f"your file does not define {', '.join(missing)}; the statement asks for "
                f"{', '.join(config().defines)}.",
                f"你的文件没有定义 {'、'.join(missing)}；题目要求定义 {'、'.join(config().defines)}。"))


# ---------------------------------------------------------------------------------------
# Inputs

DTYPES = (torch.float64, torch.float32)


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for comparing results computed in ``dtype``."""
    return {
        torch.float64: (1e-9, 1e-7),
        torch.float32: (5e-5, 5e-4),
        torch.bfloat16: (2e-2, 2e-2),
        torch.float16: (5e-3, 5e-3),
    }[dtype]


def seed_modules(seed: int) -> None:
    """Seed the weights of the reference modules the judge builds (on CPU, then moved): the CPU
    generator alone, since torch.manual_seed spends about 2 ms queueing seeds for CUDA, XPU and
    MTIA on every call."""
    torch.default_generator.manual_seed(seed)


def randn(*shape: int, dtype=torch.float64, device=None, seed: int = 0, requires_grad=False) -> torch.Tensor:
    """Random values of both signs, reproducible, created on CPU then moved."""
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    return tensor.requires_grad_(requires_grad)


def random_mask(*shape: int, device=None, seed: int = 0, p_allowed: float = 0.6) -> torch.Tensor:
    """A boolean mask (True = may attend) with both values present and each row allowed somewhere."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=generator) < p_allowed
    mask[..., 0] = True          # every row sees at least one key
    if shape[-1] > 1:
        mask[..., -1] = False    # and both polarities appear
    return mask.to(device)


def describe(**tensors: Any) -> str:
    """'q (2, 3, 5, 4), k (2, 3, 7, 4), float32' for a failure message."""
    parts, dtype = [], None
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            parts.append(f"{name} {tuple(value.shape)}")
            dtype = dtype or (value.dtype if value.is_floating_point() else None)
        elif value is not None:
            parts.append(f"{name}={value}")
    if dtype is not None:
        parts.append(str(dtype).replace("torch.", ""))
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# Comparing


def expect_tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        kind = value.type_name if isinstance(value, RemoteObject) else type(value).__name__
        fail(_t(f"{what} should be a tensor, got {kind}.", f"{what} 应当是张量，却得到了 {kind}。"))
    return value


def expect_tuple(value: Any, length: int, what: str) -> tuple:
    if not isinstance(value, tuple) or len(value) != length:
        got = _t(f"a tuple of {len(value)}", f"{len(value)} 个元素的 tuple") if isinstance(value, tuple) else (
            value.type_name if isinstance(value, RemoteObject) else type(value).__name__)
        fail(_t(f"{what} should return a tuple of {length}, got {got}.",
                f"{what} 应当返回 {length} 个元素的 tuple，却得到了 {got}。"))
    return value


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    atol, rtol = tolerance(expected.dtype)
    both_nan = torch.isnan(got) & torch.isnan(expected)
    return bool((torch.isclose(got, expected, rtol=rtol, atol=atol) | both_nan).all())


def matches(got: Any, expected: torch.Tensor) -> bool:
    """True when ``got`` is a tensor equal to ``expected`` within the dtype's tolerance."""
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and _close(got.detach().to(expected.dtype).cpu(), expected.detach().cpu()))


def _index(flat: int, shape: torch.Size) -> list[int]:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return index[::-1]


MistakeCandidates = Sequence[tuple[Mistake, Callable[[], Any]]]


def compare(what: str, got: Any, expected: torch.Tensor, *, inputs: str, mistakes: MistakeCandidates = ()) -> None:
    """Fail unless ``got`` equals ``expected``: same shape, dtype, device, values within tolerance.

    ``mistakes`` pairs each known mistake with a function computing the output that mistake
    would give on the same inputs; a match is named in the message.
    """
    got = expect_tensor(got, what)
    problem = _difference(got, expected)
    if problem is None:
        return
    found = named_mistake(got, mistakes, expected)
    wrong = _t(f"{what} is wrong for {inputs}: {problem}", f"{what} 不正确（输入：{inputs}）：{problem}")
    if found is not None:
        fail(wrong + equals_line(found), found.key)
    fail(wrong)


def _difference(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """None when equal; otherwise what differs, said plainly."""
    if got.shape != expected.shape:
        return _t(f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}.",
                  f"形状为 {tuple(got.shape)}，应为 {tuple(expected.shape)}。")
    if got.dtype != expected.dtype:
        return _t(f"dtype {got.dtype}, expected {expected.dtype}: keep the input's dtype.",
                  f"dtype 为 {got.dtype}，应为 {expected.dtype}：请保持输入的 dtype。")
    if got.device.type != expected.device.type:
        return _t(f"on device {got.device}, expected {expected.device}: keep the input's device.",
                  f"位于 device {got.device}，应为 {expected.device}：请保持输入的 device。")
    got_cpu, expected_cpu = got.detach().cpu(), expected.detach().cpu()
    if got_cpu.is_complex() or not got_cpu.is_floating_point():
        got_cpu = got_cpu.to(expected_cpu.dtype) if not got_cpu.is_complex() else got_cpu
    if _close(got_cpu, expected_cpu):
        return None
    atol, rtol = tolerance(expected.dtype)
    bad_nan = torch.isnan(got_cpu) & ~torch.isnan(expected_cpu)
    if bad_nan.any():
        where = _index(int(bad_nan.flatten().nonzero()[0]), got.shape)
        return _t(f"NaN at {where} where the reference is {expected_cpu[tuple(where)].item():.6g}.",
                  f"{where} 处为 NaN，而参考结果是 {expected_cpu[tuple(where)].item():.6g}。")
    diff = (got_cpu.double() - expected_cpu.double()).abs().nan_to_num(nan=math.inf)
    flat = int(diff.flatten().argmax())
    where = tuple(_index(flat, got.shape))
    return _t(f"largest difference {diff[where].item():.3g} at {list(where)} "
              f"(got {got_cpu[where].item():.6g}, expected {expected_cpu[where].item():.6g}; "
              f"tolerance atol={atol:g}, rtol={rtol:g}).",
              f"最大差异 {diff[where].item():.3g} 位于 {list(where)}"
              f"（得到 {got_cpu[where].item():.6g}，应为 {expected_cpu[where].item():.6g}；"
              f"容差 atol={atol:g}，rtol={rtol:g}）。")


def fail_naming(message: str, got: Any, mistakes: MistakeCandidates):
    """Fail with ``message``, naming the known mistake ``got`` matches, if any."""
    found = named_mistake(got, mistakes)
    if found is None:
        fail(message)
    fail(message + equals_line(found), found.key)


def named_mistake(got: Any, candidates: MistakeCandidates, expected: torch.Tensor | None = None) -> Mistake | None:
    """The first known mistake whose output equals ``got`` (and, when ``expected`` is given,
    differs from it: a mistake that is harmless on these inputs names nothing)."""
    for known, compute in candidates:
        wrong = compute()
        if wrong is None or not matches(got, wrong):
            continue
        if expected is not None and matches(wrong, expected):
            continue
        return known
    return None


# ---------------------------------------------------------------------------------------
# Gradients and modules


def projection(output: torch.Tensor, seed: int = 99) -> torch.Tensor:
    """A fixed random output gradient: the backward pass of sum(output * projection)."""
    return randn(*output.shape, dtype=output.dtype, device=output.device, seed=seed)


def reference_grads(expected: torch.Tensor, wrt: dict[str, torch.Tensor], seed: int = 99) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(expected, list(wrt.values()), projection(expected, seed), allow_unused=True)
    return dict(zip(wrt, grads))


def compare_gradients(learner: Learner, output: Any, expected: torch.Tensor, wrt: dict[str, torch.Tensor], *,
                      inputs: str, nonfinite: str | None = None, what: str = "out") -> None:
    """The gradients of the learner's ``output`` and the reference's ``expected`` with respect to
    the same inputs agree; with ``nonfinite``, a NaN or inf gradient fails first with that advice."""
    output = expect_tensor(output, what)
    if not getattr(output, "_worker_requires_grad", False):
        fail(_t(f"{what} is cut off from the inputs' graph (no grad_fn) for {inputs}: do not detach, "
                "use .data or .numpy().",
                f"{what} 与输入的计算图断开了（没有 grad_fn；输入：{inputs}）：不要 detach，也不要用 .data 或 .numpy()。"))
    got, _ = learner.grad([output], [projection(output)], list(wrt.values()))
    want = reference_grads(expected, wrt)
    for (name, grad), (_, expected_grad) in zip(zip(wrt, got), want.items()):
        if grad is None:
            fail(_t(f"{what} does not depend on {name} through autograd for {inputs}; is part of it detached?",
                    f"{what} 没有通过 autograd 依赖于 {name}（输入：{inputs}）；是不是有一部分被 detach 了？"))
        if nonfinite and not torch.isfinite(grad).all():
            fail(_t(f"the gradient of {name} has NaN or inf for {inputs}: {nonfinite}",
                    f"{name} 的梯度含有 NaN 或 inf（输入：{inputs}）：{nonfinite}"))
        compare(_t(f"the gradient of {name}", f"{name} 的梯度"), grad, expected_grad, inputs=inputs)


def copy_parameters(learner: Learner, what: str, module: RemoteObject, source: torch.nn.Module) -> None:
    """Load ``source``'s parameters into the learner's ``module``; the names must follow the contract."""
    if not isinstance(module, RemoteObject) or not module.is_module:
        kind = getattr(module, 'type_name', type(module).__name__)
        fail(_t(f"{what} should be a torch.nn.Module, got {kind}.",
                f"{what} 应当是 torch.nn.Module，却得到了 {kind}。"))
    got, want = learner.state(module), source.state_dict()
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or unexpected:
        fail(_t(f"{what}'s parameters do not follow the statement: missing {missing or 'none'}, "
                f"unexpected {unexpected or 'none'}. Name the submodules as the statement does.",
                f"{what} 的参数与题目说明不符（缺少：{missing or '无'}；多出：{unexpected or '无'}）。"
                "请按题目说明给子模块命名。"))
    for name, tensor in want.items():
        if got[name][0] != tuple(tensor.shape):
            fail(_t(f"{what}.{name} has shape {got[name][0]}, expected {tuple(tensor.shape)}.",
                    f"{what}.{name} 的形状为 {got[name][0]}，应为 {tuple(tensor.shape)}。"))
    learner.load(module, dict(want))


def compare_parameter_grads(learner: Learner, what: str, module: RemoteObject, output: torch.Tensor,
                            reference_module: torch.nn.Module, expected: torch.Tensor, *, inputs: str) -> None:
    """Every parameter of the learner's module receives the reference's gradient (none left out
    of the graph) for the backward pass of sum(output * projection)."""
    output = expect_tensor(output, _t(f"the output of {what}", f"{what} 的输出"))
    if not getattr(output, "_worker_requires_grad", False):
        fail(_t(f"the output of {what} is cut off from the graph (no grad_fn) for {inputs}: do not detach.",
                f"{what} 的输出与计算图断开了（没有 grad_fn；输入：{inputs}）：不要 detach。"))
    _, got = learner.grad([output], [projection(output)], module=module)
    names = [name for name, p in reference_module.named_parameters() if p.requires_grad]
    want = torch.autograd.grad(expected, [dict(reference_module.named_parameters())[n] for n in names],
                               projection(expected), allow_unused=True)
    for name, expected_grad in zip(names, want):
        grad = got.get(name)
        if grad is None:
            fail(_t(f"{what}.{name} received no gradient for {inputs}: it is not used in forward, or its path is "
                    "detached.",
                    f"{what}.{name} 没有收到梯度（输入：{inputs}）：它没有在 forward 中用到，或者它的路径被 detach 了。"))
        if expected_grad is not None:
            compare(_t(f"the gradient of {what}.{name}", f"{what}.{name} 的梯度"), grad, expected_grad, inputs=inputs)


def load_multihead(module: torch.nn.MultiheadAttention, in_weight: torch.Tensor, in_bias: torch.Tensor | None,
                   out_weight: torch.Tensor, out_bias: torch.Tensor | None) -> torch.nn.MultiheadAttention:
    """Give PyTorch's ``nn.MultiheadAttention`` (or an encoder layer's ``self_attn``) these
    weights: ``in_weight`` (3E, E) stacks the q, k and v projections in that order."""
    with torch.no_grad():
        module.in_proj_weight.copy_(in_weight)
        module.out_proj.weight.copy_(out_weight)
        if in_bias is not None:
            module.in_proj_bias.copy_(in_bias)
        if out_bias is not None:
            module.out_proj.bias.copy_(out_bias)
    return module


def builtin_multihead(num_heads: int, in_weight: torch.Tensor, in_bias: torch.Tensor | None,
                      out_weight: torch.Tensor, out_bias: torch.Tensor | None) -> torch.nn.MultiheadAttention:
    """A batch-first ``nn.MultiheadAttention`` in eval mode with these weights. Its boolean masks
    mean True = NOT allowed: pass it ``~mask`` for this catalog's True = may attend."""
    module = torch.nn.MultiheadAttention(in_weight.size(1), num_heads, bias=in_bias is not None, batch_first=True,
                                         dtype=in_weight.dtype, device=in_weight.device)
    return load_multihead(module, in_weight, in_bias, out_weight, out_bias).eval()
