"""The worker: the only process that runs the learner's code.

It starts inside the sandbox (``attn_drill.engine.sandbox``), imports torch, then answers
the judge's requests one at a time: import the learner's file, call a function or a method,
read an attribute, load a state dict, switch train/eval, seed the RNG, take gradients, time a
call (``attn-drill bench``). It returns plain data only (see ``wire``): values as JSON, tensors as bytes, learner objects as
opaque handles. It holds no reference solution, no check and no verdict: whatever it sends,
the judge decides what it is worth.

While learner code runs, the forbidden built-ins of the exercise raise a "write this
yourself" error at the operator level: a torch-function mode sees the Python-level entry
points (``F.scaled_dot_product_attention`` through any alias, ``torch.ops.aten``), a dispatch
mode sees the fused kernels behind them. This is best effort against deliberate evasion; the
judge's verdicts on values do not depend on it.

This file imports nothing of attn-drill but ``wire``, which the sandbox carries beside it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
from time import perf_counter  # bound before any learner code runs, which may rebind time's

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire  # noqa: E402  (the copy beside this file, not attn_drill's)

MAX_DEPTH = 16          # nesting of lists, tuples and dicts in a value
MAX_ITEMS = 4096        # entries in one value
MAX_RUNS = 1000         # warm-up or timed runs in one op_time request


class ForbiddenCall(Exception):
    pass


class Unencodable(Exception):
    pass


def main() -> None:
    """``worker.py CONTROL_FD``: the template. It imports torch once, then, for each grading
    the supervisor asks for, forks a fresh child that runs the learner's code: no learner code
    ever runs in the template, nor in a process that graded something before."""
    import socket

    gc.disable()  # importing torch makes 300,000 objects: collecting as it goes costs 0.2 s of CPU
    control = socket.socket(fileno=int(sys.argv[1]))
    sys.stdin = open(os.devnull)
    import torch

    torch.set_num_threads(1)  # the checks' tensors are tiny: more threads only contend
    warm_up(torch)
    gc.freeze()  # a grading's collections skip the template's objects: no copy-on-write of their pages
    gc.enable()  # in every grading, as usual
    _prctl(PR_SET_DUMPABLE, 0)      # the learner's processes cannot ptrace or write this one
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # whatever they start, even detached, stays below it
    if os.getpid() == 1:  # the sandbox's init: only signals it has a handler for reach it from inside
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # so not Python's KeyboardInterrupt either
    else:
        signal.signal(signal.SIGTERM, _end_everything)  # sent when the supervisor dies (unsandboxed)
    control.send(b'{"ready": true}')
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
        except OSError:
            os._exit(0)
        if not message or len(fds) != 3:
            os._exit(0)
        limits = _json(message)
        child = os.fork()
        if child == 0:
            control.close()
            _grading_child(torch, *fds, limits)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(child, 0)
        _reap_everything()
        _empty(os.getcwd())  # the scratch folder (in the sandbox, all of /tmp) starts empty again
        control.send(("{\"done\": %d}" % status).encode())


def warm_up(torch) -> None:
    """Do once, in the template, what every grading would otherwise pay for: torch imports
    much of itself lazily on first use (autograd's first backward pass alone takes seconds)."""
    from safetensors.torch import load, save

    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    with Guard(torch, [{"label": "warm-up", "functions": ["torch.nn.functional.scaled_dot_product_attention"],
                        "ops": ["scaled_dot_product_attention"]}]), Largest(torch):
        y = torch.softmax(x @ x.transpose(-2, -1), dim=-1).masked_fill(x > 5, 0.0)
    torch.autograd.grad(y, [x], torch.ones_like(y))
    load(save({"t": y.detach()}))


def _end_everything(signum, frame) -> None:
    _reap_everything()
    os._exit(0)


def _grading_child(torch, requests: int, replies: int, output: int, limits: dict) -> None:
    """One grading: the learner's code runs here, then this process ends."""
    import resource

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # it dies with the template
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    for fd in (requests, replies):
        os.set_inheritable(fd, False)  # processes the learner starts do not get them
    folder = os.path.join(os.getcwd(), f"grading-{os.getpid()}")
    os.makedirs(folder)
    os.chdir(folder)
    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (AttributeError, ValueError, OSError):
            pass
    worker = Worker(torch, folder)
    try:
        while True:
            try:
                body, blob = wire.read_frame(requests)
            except wire.PeerClosed:
                break
            body, blob = worker.handle(body, blob)
            wire.write_all(replies, wire.frame(body, blob))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(0)  # skip atexit handlers the learner's code may have registered


def _reap_everything() -> None:
    """Kill and reap every process left below the template (the subreaper collects orphans)."""
    import time

    for _ in range(200):
        children = _children()
        if not children:
            break
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.005)


def _empty(folder: str) -> None:
    import shutil

    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _children() -> list[int]:
    found = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as file:
                found += [int(pid) for pid in file.read().split()]
    except OSError:
        pass
    return found


PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _json(message: bytes) -> dict:
    import json

    value = json.loads(message)
    return value if isinstance(value, dict) else {}


class Worker:
    def __init__(self, torch, folder: str):
        self.torch = torch
        self.folder = folder              # this grading's private folder (the cwd)
        self.settings: dict = {}
        self.module = None
        self.objects: dict[int, object] = {}     # handles of learner objects
        self.outputs: dict[int, object] = {}     # tensors sent to the judge, by id, for gradients
        self.inputs: dict[int, object] = {}      # tensors the judge sent, by the judge's id
        self.next_id = 1

    # -- requests ------------------------------------------------------------------------

    def handle(self, body: dict, blob: bytes) -> tuple[dict, bytes]:
        op = body.get("op")
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": {"kind": "protocol", "message": f"unknown request {op!r}"}}, b""
        encoder = Encoder(self)
        try:
            tensors = self.torch_load(blob)
            value = handler(body, Decoder(self, tensors))
            return {"ok": True, "value": encoder.value(value)}, encoder.blob()
        except LearnerError as error:
            return {"ok": False, "error": error.record}, b""
        except Unencodable as error:
            return {"ok": False, "error": {"kind": "unencodable", "message": str(error)}}, b""
        except Exception as exc:  # learner objects misbehaving while the worker handles them
            return {"ok": False, "error": {"kind": "exception", "type": type(exc).__name__,
                                           "message": "", "trace": f"the grader could not handle your result "
                                                                   f"({type(exc).__name__})"}}, b""

    def torch_load(self, blob: bytes) -> dict:
        if not blob:
            return {}
        from safetensors.torch import load

        return load(blob)

    def op_settings(self, body, decode):
        self.settings = decode.value(body["settings"])
        self.guard = Guard(self.torch, self.settings.get("forbidden", []))
        self.device = self.torch.device(self.settings.get("device", "cpu"))
        if self.device.type == "cuda":
            self.torch.backends.cuda.matmul.allow_tf32 = False  # float32 tolerances assume full precision
            self.torch.backends.cudnn.allow_tf32 = False
        return None

    def op_import(self, body, decode):
        import importlib.util

        path = os.path.join(self.folder, os.path.basename(str(self.settings["learner_name"])))
        with open(path, "w", encoding="utf-8") as file:
            file.write(str(self.settings["source"]))
        self.settings["learner_file"] = path
        spec = importlib.util.spec_from_file_location(self.settings.get("module_name", "learner"), path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        self.run(spec.loader.exec_module, (module,), {})
        self.module = module
        return {name: kind_of(value) for name, value in vars(module).items() if not name.startswith("__")}

    def op_reset(self, body, decode):
        self.objects.clear()
        self.outputs.clear()
        self.inputs.clear()
        return None

    def op_call(self, body, decode):
        target = self.target(body.get("target"))
        if body.get("method") is not None:
            target = self.run(getattr, (target, str(body["method"])), {})
        args = decode.value(body.get("args", []))
        kwargs = decode.value(body.get("kwargs", {"$dict": []}))
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise LearnerError({"kind": "protocol", "message": "bad arguments"})
        before = [(path, tensor, tensor.detach().clone()) for path, tensor in decode.sent]
        stop_above = body.get("stop_above")
        watch = Largest(self.torch, stop_above if type(stop_above) is int else None) if body.get("watch") else None
        try:
            result = self.run(target, tuple(args), kwargs, watch=watch)
        except LearnerError:
            if watch is None or not watch.tripped:
                raise
        if watch is not None and watch.tripped:  # cut short: the judge measures what it held
            return {"result": None, "modified": [], "largest": list(watch.largest), "tripped": True}
        modified = [path for path, tensor, copy in before if not same(self.torch, tensor, copy)]
        answer = {"result": result, "modified": modified}
        if watch is not None:
            answer["largest"] = list(watch.largest)
        return answer

    def op_time(self, body, decode):
        """Time a call made as op_call makes it, without autograd: ``warmup`` untimed runs, then
        ``runs`` timed ones, each between two CUDA synchronisations. Returns the run times in
        seconds and, on CUDA, the memory allocated before the timed runs and the peak during them
        (bytes). The call's result is dropped, never sent."""
        torch = self.torch
        target = self.target(body.get("target"))
        if body.get("method") is not None:
            target = self.run(getattr, (target, str(body["method"])), {})
        args = decode.value(body.get("args", []))
        kwargs = decode.value(body.get("kwargs", {"$dict": []}))
        warmup, runs = body.get("warmup", 1), body.get("runs", 1)
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(
                type(n) is int and 0 <= n <= MAX_RUNS for n in (warmup, runs)):
            raise LearnerError({"kind": "protocol", "message": "bad arguments"})
        cuda = self.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if not cuda:
            fresh_pages()  # the memory the judge reads from outside then follows the tensors

        def once():
            with torch.no_grad():
                sync()
                start = perf_counter()
                target(*args, **kwargs)
                sync()
                return perf_counter() - start

        for _ in range(warmup):
            self.run(once, (), {})
        answer = {}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            answer["before"] = torch.cuda.memory_allocated()
        answer["times"] = [self.run(once, (), {}) for _ in range(runs)]
        if cuda:
            answer["peak"] = torch.cuda.max_memory_allocated()
        return answer

    def op_getattr(self, body, decode):
        return self.run(getattr, (self.target(body.get("target")), str(body.get("name"))), {})

    def op_len(self, body, decode):
        return self.run(len, (self.target(body.get("target")),), {})

    def op_to(self, body, decode):
        module = self.target(body.get("target"))
        kwargs = decode.value(body.get("kwargs", {"$dict": []}))
        return self.run(module.to, (), kwargs)

    def op_train(self, body, decode):
        module = self.target(body.get("target"))
        self.run(module.train, (bool(body.get("mode", True)),), {})
        return None

    def op_state(self, body, decode):
        """Names, shapes and dtypes of a module's state dict."""
        state = self.run(lambda m: m.state_dict(), (self.target(body.get("target")),), {})
        return [[str(name), list(value.shape), str(value.dtype).removeprefix("torch.")]
                for name, value in state.items() if isinstance(value, self.torch.Tensor)]

    def op_parameters(self, body, decode):
        module = self.target(body.get("target"))
        named = self.run(lambda m: list(m.named_parameters()), (module,), {})
        return [[str(name), list(p.shape), bool(p.requires_grad)] for name, p in named]

    def op_load(self, body, decode):
        """Copy the judge's tensors into a module's state dict, entry by entry."""
        module = self.target(body.get("target"))
        state = decode.value(body.get("state"))

        def load(module, state):
            own = module.state_dict()
            with self.torch.no_grad():
                for name, tensor in state.items():
                    own[name].copy_(tensor)

        self.run(load, (module, state), {})
        return None

    def op_seed(self, body, decode):
        seed = int(body.get("seed", 0))
        if self.device.type == "cuda":
            self.torch.manual_seed(seed)
        else:  # the CPU generator alone: torch.manual_seed spends ~2 ms queueing seeds for absent devices
            self.torch.default_generator.manual_seed(seed)
        return None

    def op_grad(self, body, decode):
        """Gradients of sum(output * grad_output) over the given outputs, with respect to
        tensors the judge sent and, with ``module``, that module's parameters."""
        outputs = [self.outputs.get(int(i)) for i in body.get("outputs", [])]
        if any(o is None for o in outputs):
            raise LearnerError({"kind": "protocol", "message": "unknown output tensor"})
        grad_outputs = decode.value(body.get("grad_outputs", []))
        wrt = [self.inputs.get(int(i)) for i in body.get("wrt", [])]
        names, params = [], []
        if body.get("module") is not None:
            for name, parameter in self.target(body["module"]).named_parameters():
                names.append(name)
                params.append(parameter)
        if any(not getattr(o, "requires_grad", False) for o in outputs):
            raise LearnerError({"kind": "no_grad", "message": "an output is not connected to the inputs' graph"})

        def take(outputs, grad_outputs, targets):
            leaves = [t for t in targets if t is not None and t.requires_grad]
            grads = self.torch.autograd.grad(outputs, leaves, grad_outputs, allow_unused=True)
            found = iter(grads)
            return [next(found) if t is not None and t.requires_grad else None for t in targets]

        grads = self.run(take, (outputs, grad_outputs, wrt + params), {}, guarded=False)
        return {"inputs": grads[:len(wrt)], "parameters": dict(zip(names, grads[len(wrt):]))}

    # -- helpers -------------------------------------------------------------------------

    def target(self, ref):
        if isinstance(ref, dict) and "$h" in ref:
            obj = self.objects.get(ref["$h"]) if isinstance(ref["$h"], int) else None
            if obj is None:
                raise LearnerError({"kind": "protocol", "message": "unknown handle"})
            return obj
        if isinstance(ref, str):
            if self.module is None:
                raise LearnerError({"kind": "protocol", "message": "the learner's file is not imported"})
            if not hasattr(self.module, ref):
                raise LearnerError({"kind": "missing", "message": f"your file does not define {ref}"})
            return getattr(self.module, ref)
        raise LearnerError({"kind": "protocol", "message": "bad target"})

    def run(self, fn, args, kwargs, *, guarded: bool = True, watch=None):
        """Run learner code; anything it raises becomes a LearnerError with a short traceback.
        With ``watch`` (a dispatch mode), the call also runs under it."""
        try:
            if not guarded:
                return fn(*args, **kwargs)
            with self.guard:
                if watch is None:
                    return fn(*args, **kwargs)
                with watch:
                    return fn(*args, **kwargs)
        except ForbiddenCall as exc:
            raise LearnerError({"kind": "forbidden", "message": str(exc)}) from None
        except BaseException as exc:  # the learner's own error, whatever it is
            if isinstance(exc, LearnerError):
                raise
            used = self.guard.used[:1] if guarded else []
            if used:
                raise LearnerError({"kind": "forbidden", "message": used[0]}) from None
            raise LearnerError(self.describe(exc)) from None

    def describe(self, exc: BaseException) -> dict:
        path = self.settings.get("learner_file")
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
        lines = [f"  {os.path.basename(f.filename)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}"
                 for f in frames[-6:]]
        try:
            summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        except BaseException:  # a learner exception whose __str__ itself fails
            summary = type(exc).__name__
        kind = {NotImplementedError: "not_implemented", SystemExit: "system_exit",
                ValueError: "value_error"}.get(type(exc), "exception")
        if isinstance(exc, ValueError):
            kind = "value_error"
        try:
            message = str(exc)
        except BaseException:
            message = ""
        if path:  # a SyntaxError names the file: by its name, not the grading's scratch folder
            summary, message = (text.replace(path, os.path.basename(path)) for text in (summary, message))
        return {"kind": kind, "type": type(exc).__name__, "message": message[:2000],
                "trace": "\n".join([*lines, summary[:2000]])}

    def keep(self, obj) -> int:
        handle = self.next_id
        self.next_id += 1
        self.objects[handle] = obj
        return handle


class LearnerError(Exception):
    def __init__(self, record: dict):
        super().__init__(record.get("message", ""))
        self.record = record


def kind_of(value) -> str:
    if isinstance(value, type):
        return "class"
    return "function" if callable(value) else "value"


def same(torch, tensor, copy) -> bool:
    if tensor.shape != copy.shape or tensor.dtype != copy.dtype:
        return False
    a, b = tensor.detach(), copy
    if a.is_floating_point():
        a, b = torch.nan_to_num(a, nan=0.5), torch.nan_to_num(b, nan=0.5)
    return bool(torch.equal(a, b))


class Encoder:
    """Learner values to wire values: tensors into the blob, objects as handles."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.tensors: dict[str, object] = {}
        self.items = 0

    def value(self, value, depth: int = 0):
        torch = self.worker.torch
        self.items += 1
        if depth > MAX_DEPTH or self.items > MAX_ITEMS:
            raise Unencodable("your result is nested too deeply or has too many parts")
        kind = type(value)
        if value is None or kind in (bool, int, float, str):
            return value
        if kind in (torch.Tensor, torch.nn.Parameter):
            return self.tensor(value)
        if isinstance(value, torch.Tensor):  # a subclass: never sent as a tensor
            return {"$h": self.worker.keep(value), "type": kind.__name__, "module": False, "subclass": True}
        if kind is tuple or kind is torch.Size:
            return {"$tuple": [self.value(v, depth + 1) for v in value]}
        if kind is list:
            return [self.value(v, depth + 1) for v in value]
        if kind is dict:
            return {"$dict": [[self.value(k, depth + 1), self.value(v, depth + 1)] for k, v in value.items()]}
        if kind is torch.dtype:
            return {"$dtype": str(value).removeprefix("torch.")}
        if kind is torch.device:
            return {"$device": str(value)}
        return {"$h": self.worker.keep(value), "type": kind.__name__[:100],
                "module": isinstance(value, torch.nn.Module), "subclass": False}

    def tensor(self, value) -> dict:
        worker = self.worker
        wid = worker.next_id
        worker.next_id += 1
        worker.outputs[wid] = value
        name = f"t{len(self.tensors)}"
        self.tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {"$t": name, "w": wid, "rg": bool(value.requires_grad), "dev": value.device.type}

    def blob(self) -> bytes:
        if not self.tensors:
            return b""
        from safetensors.torch import save

        return save(self.tensors)


class Decoder:
    """Wire values from the judge to worker values; remembers the tensors it made."""

    def __init__(self, worker: Worker, tensors: dict):
        self.worker = worker
        self.tensors = tensors
        self.sent: list[tuple[str, object]] = []   # (where in the arguments, tensor) for in-place checks

    def value(self, value, path: str = "argument"):
        torch = self.worker.torch
        if isinstance(value, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if "$t" in value:
            return self.tensor(value, path)
        if "$w" in value:
            return self.worker.outputs[int(value["$w"])]
        if "$h" in value:
            return self.worker.target(value)
        if "$tuple" in value:
            return tuple(self.value(v, f"{path}[{i}]") for i, v in enumerate(value["$tuple"]))
        if "$dict" in value:
            return {k: self.value(v, k if path == "argument" else f"{path}[{k!r}]") for k, v in value["$dict"]}
        if "$dtype" in value:
            return getattr(torch, value["$dtype"])
        if "$device" in value:
            return torch.device(value["$device"])
        raise LearnerError({"kind": "protocol", "message": "unknown value"})

    def tensor(self, value: dict, path: str):
        jid = value.get("j")
        known = self.worker.inputs.get(jid) if jid is not None else None
        if known is None:
            known = self.tensors[value["$t"]].to(value.get("dev", "cpu"))
            if value.get("rg"):
                known.requires_grad_(True)
            if jid is not None:
                self.worker.inputs[jid] = known
        self.sent.append((path, known))
        return known


class Guard:
    """While active, the exercise's forbidden built-ins raise "write this yourself"."""

    def __init__(self, torch, forbidden: list[dict]):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        self.used: list[str] = []
        functions: dict[int, str] = {}
        names: dict[str, str] = {}
        patterns: list[tuple[str, str]] = []   # "*backward*": any op whose name contains "backward"
        keep = []
        for entry in forbidden:
            label = entry["label"]
            for dotted in entry.get("functions", []):
                obj = resolve(dotted)
                if obj is not None:
                    keep.append(obj)
                    functions[id(obj)] = label
            for name in entry.get("ops", []):
                if name.startswith("*") and name.endswith("*"):
                    patterns.append((name.strip("*"), label))
                else:
                    names[name] = label
        guard = self

        verdicts: dict = {}   # func -> label or None: each function is judged once, not at every call

        def judge(func):
            name = op_name(func)
            return functions.get(id(func)) or names.get(name) or next(
                (label for part, label in patterns if part in name), None)

        def check(func):
            try:
                label = verdicts[func]
            except KeyError:
                label = verdicts[func] = judge(func)
            except TypeError:  # an unhashable callable
                label = judge(func)
            if label is not None:
                message = f"{label} is off limits in this exercise: write this yourself."
                guard.used.append(message)
                raise ForbiddenCall(message)

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                check(func)
                return func(*args, **(kwargs or {}))

        class Ops(TorchDispatchMode):
            @classmethod
            def _should_skip_dynamo(cls):
                return False  # no torch._dynamo wrapper: importing it takes seconds

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                check(func)
                return func(*args, **(kwargs or {}))

        self.modes = (Functions, Ops) if forbidden else ()
        self.keep = keep
        self.active: list = []

    def __enter__(self):
        self.used.clear()
        self.active = [mode() for mode in self.modes]
        for mode in self.active:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self.active):
            try:
                mode.__exit__(None, None, None)
            except Exception:  # the learner popped the mode already
                pass
        self.active = []
        return False


class MemoryTripped(BaseException):
    """Raised into learner code by Largest(stop_above=...): a tensor that big ends the call."""


def Largest(torch, stop_above: int | None = None):
    """A dispatch mode that records the largest tensor any op makes: [numel, op, shape]. With
    ``stop_above`` (bytes), the first op whose result's storage is that large ends the call
    (``tripped``): a learner's L x S matrix is caught as it is made, not after a long loop."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        largest = (0, "", [])
        tripped = False

        @classmethod
        def _should_skip_dynamo(cls):
            return False  # no torch._dynamo wrapper: importing it takes seconds

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    tripped = stop_above is not None and _storage_bytes(tensor) >= stop_above
                    if tripped or tensor.numel() > self.largest[0]:   # the tensor that tripped is reported
                        self.largest = (tensor.numel(), str(func), list(tensor.shape))
                    if tripped:
                        self.tripped = True
                        raise MemoryTripped(str(func))
            return out

    return Watch()


def _storage_bytes(tensor) -> int:
    try:
        return tensor.untyped_storage().nbytes()
    except Exception:  # a tensor without one storage (sparse, nested): not what the tripwire looks for
        return 0


def fresh_pages(threshold: int = 256 << 10) -> None:
    """Make every block of ``threshold`` bytes or more a fresh mapping, unmapped when freed: no
    reuse of freed heap, no dynamic threshold (glibc's mallopt M_MMAP_THRESHOLD)."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, threshold)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def op_name(func) -> str:
    name = getattr(func, "__name__", "") or ""
    return name.split(".")[0] if isinstance(name, str) else ""


def resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


if __name__ == "__main__":
    main()
