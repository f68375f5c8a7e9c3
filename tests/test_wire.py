"""The judge's side of the wire, fed what a hostile worker could send: every malformed,
oversized, wrongly typed or subclass-carrying answer is an Interference, never a crash."""

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save

from attn_drill.engine import wire
from attn_drill.engine.remote import Interference, LearnerError, OutOfTime, Remote, RemoteObject, WorkerLost


@pytest.fixture
def link():
    """A Remote whose worker is this test: ``reply(frame_bytes)`` queues an answer."""
    to_worker_read, to_worker_write = os.pipe()
    from_worker_read, from_worker_write = os.pipe()
    remote = Remote(to_worker_write, from_worker_read, budget_s=2.0, device=torch.device("cpu"))

    def reply(data: bytes) -> None:
        wire.write_all(from_worker_write, data)

    reply.close = lambda: os.close(from_worker_write)
    yield remote, reply
    for fd in (to_worker_read, to_worker_write, from_worker_read):
        os.close(fd)
    try:
        os.close(from_worker_write)
    except OSError:
        pass


def ok(value, tensors=None) -> bytes:
    return wire.frame({"ok": True, "value": value}, save(tensors) if tensors else b"")


def test_plain_values_and_tensors_come_back_as_plain_data(link):
    remote, reply = link
    tensor = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    reply(ok({"$tuple": [{"$t": "t0", "w": 7, "rg": True, "dev": "cpu"}, 3, 2.5, None, "x",
                         {"$dict": [["a", [1, 2]]]}, {"$dtype": "float32"},
                         {"$h": 4, "type": "MultiHeadAttention", "module": True, "subclass": False}]},
             {"t0": tensor}))
    got, n, f, none, s, d, dtype, handle = remote.request("call", target="f")
    assert type(got) is torch.Tensor and torch.equal(got, tensor)
    assert got._worker_id == 7 and got._worker_requires_grad is True
    assert (n, f, none, s, d, dtype) == (3, 2.5, None, "x", {"a": [1, 2]}, torch.float32)
    assert isinstance(handle, RemoteObject) and handle.is_module and handle.type_name == "MultiHeadAttention"


def test_learner_errors_arrive_as_learner_errors(link):
    remote, reply = link
    reply(wire.frame({"ok": False, "error": {"kind": "value_error", "type": "ValueError",
                                             "message": "embed_dim", "trace": "  f.py, line 3"}}))
    with pytest.raises(LearnerError) as raised:
        remote.request("call", target="f")
    assert raised.value.kind == "value_error" and raised.value.message == "embed_dim"
    assert remote.broken is None  # a learner's error is an answer, not a broken worker


BAD_ANSWERS = {
    "not json": struct.pack(">4sIQ", b"ADW1", 5, 0) + b"{oops",
    "json not an object": struct.pack(">4sIQ", b"ADW1", 6, 0) + b"[1, 2]",
    "wrong magic": struct.pack(">4sIQ", b"EVIL", 2, 0) + b"{}",
    "oversized body": struct.pack(">4sIQ", b"ADW1", wire.MAX_BODY + 1, 0),
    "oversized blob": struct.pack(">4sIQ", b"ADW1", 2, wire.MAX_BLOB + 1) + b"{}",
    "no ok field": wire.frame({"value": 1}),
    "tensor without bytes": wire.frame({"ok": True, "value": {"$t": "t0", "w": 1, "rg": False, "dev": "cpu"}}),
    "bytes that are not safetensors": wire.frame({"ok": True, "value": {"$t": "t0", "w": 1, "dev": "cpu"}},
                                                 b"\x00" * 64),
    "tensor named twice": ok([{"$t": "t0", "w": 1, "dev": "cpu"}, {"$t": "t0", "w": 2, "dev": "cpu"}],
                             {"t0": torch.zeros(2)}),
    "tensor on a device the judge does not use": ok({"$t": "t0", "w": 1, "dev": "cuda"}, {"t0": torch.zeros(2)}),
    "tensor subclass": ok({"$h": 3, "type": "LyingTensor", "module": False, "subclass": True}),
    "unknown tag": wire.frame({"ok": True, "value": {"$pickle": "gASV"}}),
    "handle without a number": wire.frame({"ok": True, "value": {"$h": "1", "type": "X"}}),
    "dict with a bad pair": wire.frame({"ok": True, "value": {"$dict": [["a"]]}}),
    "unknown dtype": wire.frame({"ok": True, "value": {"$dtype": "object"}}),
    "nested too deeply": wire.frame({"ok": True, "value": json.loads("[" * 60 + "]" * 60)}),
    "error of the wrong shape": wire.frame({"ok": False, "error": "boom"}),
    "protocol error": wire.frame({"ok": False, "error": {"kind": "protocol", "message": "bad"}}),
}


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_malformed_answer_is_interference_and_breaks_the_link(link, name):
    remote, reply = link
    reply(BAD_ANSWERS[name])
    with pytest.raises(Interference):
        remote.request("call", target="f")
    with pytest.raises(Interference):  # nothing more is trusted from this worker
        remote.request("call", target="f")


def test_silence_is_out_of_time(link):
    remote, _ = link
    remote.budget_s = 0.2
    with pytest.raises(OutOfTime):
        remote.request("call", target="f")


def test_closed_channel_is_a_lost_worker(link):
    remote, reply = link
    reply(b"ADW1")  # half a header, then gone
    reply.close()
    with pytest.raises(WorkerLost):
        remote.request("call", target="f")


def test_the_judge_sends_only_plain_data():
    """What goes to the worker: JSON and safetensors bytes, tensors by value with the judge's id."""
    from attn_drill.engine.remote import _Encoder

    encoder = _Encoder()
    q = torch.randn(2, 3, requires_grad=True)
    body = encoder.value({"args": [q, (1, 2.0)], "dtype": torch.float64})
    assert json.loads(json.dumps(body)) == body
    tensor = body["$dict"][0][1][0]
    assert tensor["rg"] is True and tensor["j"] == q._judge_id
    assert set(encoder.tensors) == {tensor["$t"]}
