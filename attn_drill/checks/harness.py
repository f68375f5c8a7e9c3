"""The helper set every exercise's hidden checks use.

It runs inside the grading child process only (it imports torch). It loads the learner's
file and the reference by path, calls learner code under guard (forbidden built-ins raise,
torch tampering is undone and reported, inputs must come back untouched, exceptions become
a short traceback into the learner's file), and compares results with messages a learner
can act on, naming a known mistake when the output matches one.
"""

from __future__ import annotations

import builtins
import importlib.util
import inspect
import math
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Sequence

import pytest
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------
# Configuration, set by the runner before pytest starts.


@dataclass
class Config:
    exercise: str                      # "ex1"
    learner_file: Path
    reference_file: Path
    defines: tuple[str, ...]
    forbidden: tuple[str, ...]
    device: torch.device = torch.device("cpu")
    on_import: Callable[[str], None] = lambda stage: None   # the runner's channel marker


CONFIG: Config | None = None


def config() -> Config:
    if CONFIG is None:  # pragma: no cover - only when a check module is run by hand
        raise RuntimeError("the hidden checks run through `attn-drill check`, not directly")
    return CONFIG


def check(title: str):
    """Give a check the title a learner sees ("weights rows sum to 1")."""

    def mark(fn):
        fn.__check_title__ = title
        return fn

    return mark


# ---------------------------------------------------------------------------------------
# Failures


class CheckFailure(AssertionError):
    """A failed check; ``mistake`` names a known mistake when the output matched one."""

    def __init__(self, message: str, mistake: str | None = None):
        super().__init__(message)
        self.message = message
        self.mistake = mistake


def fail(message: str, mistake: str | None = None):
    raise CheckFailure(message, mistake)


@dataclass(frozen=True)
class Mistake:
    """A classic error: ``key`` joins it to quiz concepts, ``says`` completes
    "your output equals ..."."""

    key: str
    says: str


# ---------------------------------------------------------------------------------------
# Guarding learner code

# Originals captured before any learner code runs; comparisons below use only these.
_ORIGINAL_CLOSE = torch.isclose
_WATCHED: dict[str, Any] = {
    "torch": torch,
    "torch.Tensor": torch.Tensor,
    "torch.nn.functional": F,
    "torch.nn.Module": torch.nn.Module,
    "torch.testing": torch.testing,
    "math": math,
    "builtins": builtins,
}
_SNAPSHOT = {name: dict(vars(space)) for name, space in _WATCHED.items()}


_TORCH_DIR = str(Path(torch.__file__).parent)


def _torch_wrapper(value: Any, original: Any) -> bool:
    """True for torch's own lazy re-wrapping of a function (importing torch._dynamo replaces
    ``torch.manual_seed`` with a wrapper of it), which is not the learner's doing."""
    code = getattr(value, "__code__", None)
    return (getattr(value, "__wrapped__", None) is original and code is not None
            and code.co_filename.startswith(_TORCH_DIR))


def _undo_tampering() -> list[str]:
    """Put back every watched name the learner's code rebound; return their names."""
    changed = []
    for name, space in _WATCHED.items():
        now = vars(space)
        for attr, original in _SNAPSHOT[name].items():
            value = now.get(attr, _MISSING)
            if value is original:
                continue
            if _torch_wrapper(value, original):
                _SNAPSHOT[name][attr] = value
                continue
            changed.append(f"{name}.{attr}")
            setattr(space, attr, original)
    return changed


_MISSING = object()


class ForbiddenCall(Exception):
    pass


def _resolve(dotted: str) -> tuple[Any, str]:
    parts = dotted.split(".")
    owner: Any = importlib.import_module(parts[0])
    for part in parts[1:-1]:
        owner = getattr(owner, part)
    return owner, parts[-1]


class _Forbidden:
    """While active, each forbidden name raises a clear "write this yourself" error."""

    def __init__(self, names: Sequence[str], exercise: str):
        self.targets = [(_resolve(name), name) for name in names]
        self.exercise = exercise
        self.used: list[str] = []

    def _raiser(self, name: str):
        def forbidden(*args, **kwargs):
            self.used.append(name)
            raise ForbiddenCall(f"{name} is off limits in {self.exercise}: write this yourself.")

        return forbidden

    def __enter__(self):
        self.saved = [(owner, attr, owner.__dict__[attr]) for (owner, attr), _ in self.targets]
        for ((owner, attr), name) in self.targets:
            setattr(owner, attr, self._raiser(name))
        return self

    def __exit__(self, *exc):
        for owner, attr, original in self.saved:
            setattr(owner, attr, original)
        return False


def _learner_frames(exc: BaseException) -> str:
    """A short traceback: only the frames in the learner's file, then the error itself."""
    path = str(config().learner_file)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    lines = [f"  {Path(f.filename).name}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames]
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return "\n".join([*lines, summary])


def _tensors(values: Iterable[Any]) -> list[tuple[str, torch.Tensor]]:
    return [(name, value) for name, value in values if isinstance(value, torch.Tensor)]


def guarded(what: str, fn: Callable, *args, **kwargs):
    """Run learner code ``fn(*args, **kwargs)`` and turn anything it does wrong into a failure."""
    inputs = [(name, tensor, tensor.detach().clone()) for name, tensor in _tensors(_named_arguments(fn, args, kwargs))]
    forbidden = _Forbidden(config().forbidden, config().exercise)
    try:
        with forbidden:
            result = fn(*args, **kwargs)
    except ForbiddenCall as exc:
        fail(f"{what}: {exc}")
    except NotImplementedError as exc:
        where = _learner_frames(exc).splitlines()[-2:-1]
        fail(f"{what} is not written yet: it raises NotImplementedError." + (f"\n{where[0]}" if where else ""))
    except SystemExit as exc:
        fail(f"{what}: your code called sys.exit({exc.code!r}); return a result instead.")
    except KeyboardInterrupt:
        raise
    except _RaisedValueError as raised:
        raise CheckFailure(f"{what} raised ValueError") from raised
    except BaseException as exc:  # the learner's own error, shown as a short traceback
        fail(f"{what} raised an error:\n{_learner_frames(exc)}")
    finally:
        tampered = _undo_tampering()
    if tampered:
        fail(f"{what}: your code replaced {', '.join(tampered[:4])}; the checks put the originals back. "
             "Remove those assignments.")
    if forbidden.used:
        fail(f"{what}: your code called {forbidden.used[0]}, which is off limits in {config().exercise}: write this yourself.")
    for name, tensor, before in inputs:
        changed = tensor.shape != before.shape or not (torch.equal(tensor.detach(), before) or _same_nan(tensor, before))
        if changed:
            fail(f"{what} modified its input {name} in place; work on new tensors instead.")
    return result


def _named_arguments(fn: Callable, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """Pair each argument with its parameter name, for messages ("modified its input q")."""
    try:
        target = fn.forward if isinstance(fn, torch.nn.Module) else fn
        bound = inspect.signature(target).bind_partial(*args, **kwargs)
        return list(bound.arguments.items())
    except (TypeError, ValueError):
        return [(f"argument {i + 1}", value) for i, value in enumerate(args)] + list(kwargs.items())


def expect_value_error(what: str, fn: Callable, names: Sequence[str], *args, **kwargs) -> None:
    """Learner code ``fn(*args, **kwargs)`` must raise ValueError whose message names one of
    ``names`` as a word (so "x" is not found in "expected")."""
    try:
        guarded(what, _expect_value_error(fn), *args, **kwargs)
    except CheckFailure as failure:
        if not isinstance(failure.__cause__, _RaisedValueError):
            raise
        message = str(failure.__cause__.error)
        if not any(re.search(rf"\b{re.escape(name)}\b", message) for name in names):
            fail(f"{what} raised ValueError({message!r}); say which argument is wrong "
                 f"(mention {' or '.join(repr(n) for n in names)}).")
        return
    fail(f"{what} should raise ValueError naming the argument, but it returned normally.")


class _RaisedValueError(Exception):
    def __init__(self, error: ValueError):
        self.error = error


def _expect_value_error(fn: Callable) -> Callable:
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as error:
            raise _RaisedValueError(error) from None

    return call


def _same_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(torch.nan_to_num(a.detach(), nan=0.5), torch.nan_to_num(b, nan=0.5)))


def load_module(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class Learner:
    """The learner's module, imported once under guard, with guarded call helpers."""

    def __init__(self, module: ModuleType):
        self.module = module

    def get(self, name: str):
        value = getattr(self.module, name, None)
        if value is None:
            fail(f"your file does not define {name}; the statement asks for it.")
        return value

    def call(self, name: str, *args, **kwargs):
        """Call the learner's function ``name``."""
        return guarded(f"{name}()", self.get(name), *args, **kwargs)

    def new(self, name: str, *args, **kwargs):
        """Construct the learner's class ``name``."""
        return guarded(f"{name}(...)", self.get(name), *args, **kwargs)

    def raises(self, case: str, names: Sequence[str], fn_name: str, *args, **kwargs) -> None:
        """Fail unless ``fn_name(*args)`` raises ValueError whose message names one of ``names``."""
        expect_value_error(f"{fn_name}() with {case}", self.get(fn_name), names, *args, **kwargs)

    def run(self, obj, *args, what: str | None = None, **kwargs):
        """Call a learner object (a module's forward, a method)."""
        label = what or f"{type(obj).__name__}.forward"
        return guarded(label, obj, *args, **kwargs)


_import_state: dict[str, Any] = {}


def _import_learner() -> Learner:
    cfg = config()
    if "learner" in _import_state:
        return _import_state["learner"]
    if "error" in _import_state:
        pytest.skip("your file did not import (see the first check)")
    cfg.on_import("start")
    try:
        module = guarded("importing your file", load_module, cfg.learner_file, f"learner_{cfg.exercise}")
    except CheckFailure as failure:
        _import_state["error"] = failure
        raise
    finally:
        cfg.on_import("end")
    learner = Learner(module)
    _import_state["learner"] = learner
    return learner


@pytest.fixture
def learner() -> Learner:
    return _import_learner()


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    cfg = config()
    return load_module(cfg.reference_file, f"reference_{cfg.exercise}")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return config().device


def require_defined(learner: Learner) -> None:
    """The import check: the file imports and defines everything the statement asks for."""
    missing = [name for name in config().defines if not callable(getattr(learner.module, name, None))]
    if missing:
        fail(f"your file does not define {', '.join(missing)}; the statement asks for "
             f"{', '.join(config().defines)}.")


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
        fail(f"{what} should be a tensor, got {type(value).__name__}.")
    return value


def expect_tuple(value: Any, length: int, what: str) -> tuple:
    if not isinstance(value, tuple) or len(value) != length:
        got = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        fail(f"{what} should return a tuple of {length}, got {got}.")
    return value


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    atol, rtol = tolerance(expected.dtype)
    both_nan = torch.isnan(got) & torch.isnan(expected)
    return bool((_ORIGINAL_CLOSE(got, expected, rtol=rtol, atol=atol) | both_nan).all())


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


def compare(what: str, got: Any, expected: torch.Tensor, *, inputs: str,
            mistakes: Sequence[tuple[Mistake, Callable[[], Any]]] = ()) -> None:
    """Fail unless ``got`` equals ``expected``: same shape, dtype, device, values within tolerance.

    ``mistakes`` pairs each known mistake with a function computing the output that mistake
    would give on the same inputs; a match is named in the message.
    """
    got = expect_tensor(got, what)
    problem = _difference(got, expected)
    if problem is None:
        return
    mistake = named_mistake(got, mistakes, expected)
    if mistake is not None:
        fail(f"{what} is wrong for {inputs}: {problem}\nYour output equals {mistake.says}.", mistake.key)
    fail(f"{what} is wrong for {inputs}: {problem}")


def _difference(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """None when equal; otherwise what differs, said plainly."""
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}."
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}: keep the input's dtype."
    if got.device != expected.device:
        return f"on device {got.device}, expected {expected.device}: keep the input's device."
    got_cpu, expected_cpu = got.detach().cpu(), expected.detach().cpu()
    if _close(got_cpu, expected_cpu):
        return None
    atol, rtol = tolerance(expected.dtype)
    bad_nan = torch.isnan(got_cpu) & ~torch.isnan(expected_cpu)
    if bad_nan.any():
        where = _index(int(bad_nan.flatten().nonzero()[0]), got.shape)
        return f"NaN at {where} where the reference is {expected_cpu[tuple(where)].item():.6g}."
    diff = (got_cpu.double() - expected_cpu.double()).abs().nan_to_num(nan=math.inf)
    flat = int(diff.flatten().argmax())
    where = tuple(_index(flat, got.shape))
    return (f"largest difference {diff[where].item():.3g} at {list(where)} "
            f"(got {got_cpu[where].item():.6g}, expected {expected_cpu[where].item():.6g}; "
            f"tolerance atol={atol:g}, rtol={rtol:g}).")


def fail_naming(message: str, got: Any, mistakes: Sequence[tuple[Mistake, Callable[[], Any]]]):
    """Fail with ``message``, naming the known mistake ``got`` matches, if any."""
    mistake = named_mistake(got, mistakes)
    if mistake is None:
        fail(message)
    fail(f"{message}\nYour output equals {mistake.says}.", mistake.key)


def grad_of(what: str, output: Any, inputs: dict[str, torch.Tensor], seed: int = 99) -> dict[str, torch.Tensor]:
    """Gradients of a fixed random projection of ``output`` with respect to each input."""
    output = expect_tensor(output, what)
    if not output.requires_grad:
        fail(f"{what} is cut off from the inputs' graph (no grad_fn): do not detach, use .data or .numpy().")
    weight = randn(*output.shape, dtype=output.dtype, device=output.device, seed=seed)
    grads = torch.autograd.grad((output * weight).sum(), list(inputs.values()), allow_unused=True)
    for name, grad in zip(inputs, grads):
        if grad is None:
            fail(f"{what} does not depend on {name} through autograd; is part of it detached?")
    return dict(zip(inputs, grads))


def compare_gradients(output: Any, expected: torch.Tensor, wrt: dict[str, torch.Tensor], *, inputs: str,
                      nonfinite: str | None = None) -> None:
    """The gradients of the learner's ``output`` and the reference's ``expected`` with respect to
    the same tensors agree; with ``nonfinite``, a NaN or inf gradient fails first with that advice."""
    got = grad_of("out", output, wrt)
    want = grad_of("the reference's out", expected, wrt)
    for name in got:
        if nonfinite and not torch.isfinite(got[name]).all():
            fail(f"the gradient of {name} has NaN or inf for {inputs}: {nonfinite}")
        compare(f"the gradient of {name}", got[name], want[name], inputs=inputs)


def copy_parameters(what: str, module: Any, source: torch.nn.Module) -> None:
    """Load ``source``'s parameters into the learner's ``module``; the names must follow the contract."""
    if not isinstance(module, torch.nn.Module):
        fail(f"{what} should be a torch.nn.Module, got {type(module).__name__}.")
    got, want = module.state_dict(), source.state_dict()
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or unexpected:
        fail(f"{what}'s parameters do not follow the statement: missing {missing or 'none'}, "
             f"unexpected {unexpected or 'none'}. Name the submodules as the statement does.")
    for name, tensor in want.items():
        if got[name].shape != tensor.shape:
            fail(f"{what}.{name} has shape {tuple(got[name].shape)}, expected {tuple(tensor.shape)}.")
    with torch.no_grad():
        for name, tensor in want.items():
            got[name].copy_(tensor)


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


def expect_every_parameter_has_grad(what: str, module: torch.nn.Module) -> None:
    """After a backward pass: every parameter received a gradient (none left out of the graph)."""
    for name, parameter in module.named_parameters():
        if parameter.grad is None:
            fail(f"{what}.{name} received no gradient: it is not used in forward, or its path is detached.")


def named_mistake(got: Any, candidates: Sequence[tuple[Mistake, Callable[[], Any]]],
                  expected: torch.Tensor | None = None) -> Mistake | None:
    """The first known mistake whose output equals ``got`` (and, when ``expected`` is given,
    differs from it: a mistake that is harmless on these inputs names nothing)."""
    for mistake, compute in candidates:
        wrong = compute()
        if wrong is None or not matches(got, wrong):
            continue
        if expected is not None and matches(wrong, expected):
            continue
        return mistake
    return None
