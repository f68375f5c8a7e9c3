"""The judge's side of the wire: the learner's code, as seen from the judge.

:class:`Remote` sends requests to the worker and turns its answers back into plain values:
tensors rebuilt by the judge from bytes (never an object the worker made), learner objects
as :class:`RemoteObject` handles. Every answer is checked on arrival; anything malformed,
oversized, late, or of an unexpected type raises :class:`Interference` or one of the other
:class:`WorkerProblem` kinds, which the checks report as failures with a reason.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import torch

from attn_drill.engine import wire

_judge_ids = itertools.count(1)


class WorkerProblem(Exception):
    """The worker cannot answer: it interfered, ran out of time, or is gone. ``str()`` is the
    English reason; ``zh`` the Chinese one, for ``--lang zh``."""

    def __init__(self, message: str = "", zh: str | None = None):
        super().__init__(message)
        self.zh = zh

    def text(self, lang: str = "en") -> str:
        return self.zh if lang == "zh" and self.zh else str(self)


class Interference(WorkerProblem):
    pass


class OutOfTime(WorkerProblem):
    pass


class WorkerLost(WorkerProblem):
    pass


@dataclass
class LearnerError(Exception):
    """Learner code raised: ``kind`` is value_error, not_implemented, system_exit, forbidden,
    missing, no_grad, unencodable, exception; ``trace`` the frames in the learner's file."""

    kind: str
    type: str
    message: str
    trace: str

    def __str__(self) -> str:
        return self.trace or self.message


@dataclass(frozen=True)
class RemoteObject:
    """An object that lives in the worker: a learner's module, cache, or anything not plain."""

    remote: "Remote"
    handle: int
    type_name: str
    is_module: bool

    def ref(self) -> dict:
        return {"$h": self.handle}


class Remote:
    """Requests to the worker over two pipes, within the learner's time budget."""

    def __init__(self, send_fd: int, receive_fd: int, budget_s: float, device: torch.device,
                 tape: dict | None = None):
        self.send_fd = send_fd
        self.receive_fd = receive_fd
        self.budget_s = budget_s
        self.spent_s = 0.0
        self.device = device
        self.broken: WorkerProblem | None = None
        self.tape = Tape(tape) if tape else None

    def request(self, op: str, **fields) -> Any:
        """Send one request; return the decoded value or raise LearnerError / WorkerProblem."""
        if self.broken is not None:
            raise self.broken
        encoder = _Encoder()
        body = {"op": op, **{key: encoder.value(value) for key, value in fields.items()}}
        started = time.monotonic()
        try:
            wire.write_all(self.send_fd, wire.frame(body, encoder.blob()))
            reply, blob = wire.read_frame(self.receive_fd, started + max(0.0, self.budget_s - self.spent_s))
        except wire.Deadline:
            raise self._break(OutOfTime(f"ran past the time limit of {self.budget_s:g} s",
                                         f"超出了 {self.budget_s:g} s 的时间限制")) from None
        except (wire.PeerClosed, BrokenPipeError):
            raise self._break(WorkerLost("the worker process ended", "worker 进程已结束")) from None
        except wire.WireError as exc:
            raise self._break(Interference(f"sent a malformed message ({exc})", f"发送了格式错误的消息（{exc}）")) from None
        finally:
            self.spent_s += time.monotonic() - started
        if self.tape is not None:
            self.tape.take(reply, blob, self)
        return self._decode_reply(reply, blob)

    def close_tape(self) -> bool | None:
        """End the recording, or say whether any answer differed from the recorded ones."""
        return self.tape.close() if self.tape is not None else None

    def _break(self, problem: WorkerProblem) -> WorkerProblem:
        self.broken = problem
        return problem

    def _decode_reply(self, reply: dict, blob: bytes) -> Any:
        if reply.get("ok") is False:
            error = reply.get("error")
            if not isinstance(error, dict) or not all(isinstance(error.get(k, ""), str) for k in
                                                      ("kind", "type", "message", "trace")):
                raise self._break(Interference("sent a malformed error", "发送了格式错误的错误信息"))
            if error.get("kind") == "protocol":
                raise self._break(Interference(f"broke the protocol ({error.get('message', '')[:200]})",
                                                      f"违反了通信协议（{error.get('message', '')[:200]}）"))
            raise LearnerError(error.get("kind", "exception"), error.get("type", ""), error.get("message", ""),
                               error.get("trace", ""))
        if reply.get("ok") is not True or "value" not in reply:
            raise self._break(Interference("sent a malformed answer", "发送了格式错误的回答"))
        try:
            tensors = _load_tensors(blob)
            return _Decoder(self, tensors).value(reply["value"])
        except Interference as problem:
            raise self._break(problem) from None
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError, RuntimeError) as exc:
            raise self._break(Interference(f"sent a malformed answer ({type(exc).__name__})",
                                          f"发送了格式错误的回答（{type(exc).__name__}）")) from None


class Tape:
    """The mutation audit's probe: every answer of a reference's grading is recorded; a
    mutant's grading then compares each of its answers with the recorded one at the same place.
    A mutant whose checks all pass and whose answers all agree is equivalent on every probe."""

    def __init__(self, spec: dict):
        from pathlib import Path

        self.path = Path(spec.get("record") or spec["compare"])
        self.recording = "record" in spec
        self.frames: list[bytes] = []
        self.position = 0
        self.differs = False
        if not self.recording:
            data = self.path.read_bytes()
            while data:
                size = int.from_bytes(data[:8], "big")
                self.frames.append(data[8:8 + size])
                data = data[8 + size:]

    def take(self, reply: dict, blob: bytes, remote: "Remote") -> None:
        frame = wire.frame(reply, blob)
        if self.recording:
            self.frames.append(frame)
            return
        if self.differs:
            return
        if self.position >= len(self.frames):
            self.differs = True
            return
        recorded = self.frames[self.position]
        self.position += 1
        try:
            self.differs = not _same(_decoded(recorded, remote), _decoded(frame, remote))
        except WorkerProblem:
            self.differs = True

    def close(self) -> bool | None:
        if self.recording:
            self.path.write_bytes(b"".join(len(f).to_bytes(8, "big") + f for f in self.frames))
            return None
        return self.differs or self.position != len(self.frames)


def _decoded(frame: bytes, remote: "Remote"):
    import json

    head = wire.HEAD.size
    _, body_size, _ = wire.HEAD.unpack(frame[:head])
    body, blob = json.loads(frame[head:head + body_size]), frame[head + body_size:]
    if body.get("ok") is not True:
        return ("error", (body.get("error") or {}).get("kind"))
    probe = Remote.__new__(Remote)
    probe.device, probe.broken = remote.device, None
    return _Decoder(probe, _load_tensors(blob)).value(body.get("value"))


def _same(a: Any, b: Any) -> bool:
    """Equal answers: tensors within their dtype's tolerance (NaNs where NaNs are), handles of
    the same type, everything else equal."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape \
                or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return bool(torch.equal(a, b))
        from attn_drill.checks.harness import tolerance

        atol, rtol = tolerance(a.dtype) if a.dtype in (torch.float64, torch.float32, torch.float16,
                                                          torch.bfloat16) else (0.0, 0.0)
        return bool(torch.allclose(a.cpu(), b.cpu(), atol=atol, rtol=rtol, equal_nan=True))
    if isinstance(a, RemoteObject) or isinstance(b, RemoteObject):
        return isinstance(a, RemoteObject) and isinstance(b, RemoteObject) and a.type_name == b.type_name
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _load_tensors(blob: bytes) -> dict[str, torch.Tensor]:
    if not blob:
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise Interference(f"sent tensors that do not parse ({exc})", f"发送了无法解析的张量（{exc}）") from None
    for tensor in tensors.values():
        if type(tensor) is not torch.Tensor:  # pragma: no cover - safetensors builds plain tensors
            raise Interference("sent something that is not a plain tensor", "发送了不是普通张量的东西")
    return tensors


class _Encoder:
    """Judge values to wire values. Tensors go as bytes with the judge's id (so gradients can
    name them later); tensors the worker made go back by their worker id."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}

    def value(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, torch.Tensor):
            worker_id = getattr(value, "_worker_id", None)
            if worker_id is not None:
                return {"$w": worker_id}
            judge_id = getattr(value, "_judge_id", None)
            if judge_id is None:
                judge_id = next(_judge_ids)
                value._judge_id = judge_id
            name = f"t{len(self.tensors)}"
            self.tensors[name] = value.detach().to("cpu").contiguous().clone()
            return {"$t": name, "j": judge_id, "rg": value.requires_grad, "dev": value.device.type}
        if isinstance(value, RemoteObject):
            return value.ref()
        if isinstance(value, tuple):
            return {"$tuple": [self.value(v) for v in value]}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {"$dict": [[self.value(k), self.value(v)] for k, v in value.items()]}
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        raise TypeError(f"cannot send {type(value).__name__} to the worker")  # a bug in a check

    def blob(self) -> bytes:
        if not self.tensors:
            return b""
        from safetensors.torch import save

        return save(self.tensors)


MAX_DEPTH = 20


class _Decoder:
    """Wire values from the worker to judge values, checking each on the way."""

    def __init__(self, remote: Remote, tensors: dict[str, torch.Tensor]):
        self.remote = remote
        self.tensors = tensors
        self.used: set[str] = set()

    def value(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise Interference("sent a value nested too deeply", "发送了嵌套过深的值")
        if value is None or type(value) in (bool, str):
            return value
        if type(value) is int:
            return value
        if type(value) is float:
            return value
        if type(value) is list:
            return [self.value(v, depth + 1) for v in value]
        if type(value) is not dict or len(value) == 0:
            raise Interference("sent a value of an unknown kind", "发送了未知类型的值")
        if "$t" in value:
            return self.tensor(value)
        if "$h" in value:
            return self.handle(value)
        if set(value) == {"$tuple"} and type(value["$tuple"]) is list:
            return tuple(self.value(v, depth + 1) for v in value["$tuple"])
        if set(value) == {"$dict"} and type(value["$dict"]) is list:
            pairs = value["$dict"]
            if not all(type(p) is list and len(p) == 2 for p in pairs):
                raise Interference("sent a malformed dict", "发送了格式错误的 dict")
            out = {}
            for key, item in pairs:
                key = self.value(key, depth + 1)
                if not isinstance(key, (str, int, float, bool, tuple)) and key is not None:
                    raise Interference("sent a dict with an unusable key", "发送了带有不可用的键的 dict")
                out[key] = self.value(item, depth + 1)
            return out
        if set(value) == {"$dtype"} and value["$dtype"] in wire.DTYPES:
            return getattr(torch, value["$dtype"])
        if set(value) == {"$device"} and type(value["$device"]) is str:
            try:
                return torch.device(value["$device"])
            except RuntimeError:
                raise Interference("sent an unknown device", "发送了未知的 device") from None
        raise Interference("sent a value of an unknown kind", "发送了未知类型的值")

    def tensor(self, value: dict) -> torch.Tensor:
        name, worker_id = value.get("$t"), value.get("w")
        if type(name) is not str or name not in self.tensors or name in self.used or type(worker_id) is not int:
            raise Interference("sent a tensor reference that does not match its bytes",
                               "发送了与其字节不符的张量引用")
        device = value.get("dev")
        if device not in ("cpu", self.remote.device.type):
            raise Interference("sent a tensor on a device it cannot have", "发送了位于不可能的 device 上的张量")
        self.used.add(name)
        tensor = self.tensors[name].to(self.remote.device) if device == "cuda" else self.tensors[name]
        tensor._worker_id = worker_id
        tensor._worker_requires_grad = value.get("rg") is True
        return tensor

    def handle(self, value: dict) -> RemoteObject:
        handle, type_name = value.get("$h"), value.get("type")
        if type(handle) is not int or type(type_name) is not str:
            raise Interference("sent a malformed object handle", "发送了格式错误的对象句柄")
        if value.get("subclass") is True:
            raise Interference(f"returned a torch.Tensor subclass ({type_name[:60]}) where a plain tensor belongs",
                               f"在应为普通张量的地方返回了 torch.Tensor 的子类（{type_name[:60]}）")
        return RemoteObject(self.remote, handle, type_name[:100], value.get("module") is True)
