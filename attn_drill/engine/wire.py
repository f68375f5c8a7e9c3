"""The message format between the judge and the worker: plain data only.

A message is one frame: the magic ``ADW1``, the length of a JSON body (4 bytes, big
endian), the length of a tensor blob (8 bytes), the body, then the blob. The blob is a
safetensors file (the format made for tensors from untrusted sources): dtype, shape and
bytes, nothing executable. In the body, a tensor is ``{"$t": name, ...}`` naming its entry
in the blob; a tuple is ``{"$tuple": [...]}``, a dict ``{"$dict": [[key, value], ...]}``, a
dtype ``{"$dtype": "float32"}``, a device ``{"$device": "cpu"}``; a learner object the judge
may refer to later is an opaque handle ``{"$h": number, "type": name, "module": bool}``.

Both sides import this file; the worker carries a copy into its sandbox. The reading side
never trusts what arrives: sizes are capped, and everything is checked before use.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

MAGIC = b"ADW1"
HEAD = struct.Struct(">4sIQ")
MAX_BODY = 4 << 20        # bytes of JSON in one message
MAX_BLOB = 256 << 20      # bytes of tensors in one message
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
          "complex64", "complex128")


class WireError(Exception):
    """A frame that is malformed, too large, cut short or late."""


class PeerClosed(WireError):
    """The other side closed its end (it exited or was stopped)."""


class Deadline(WireError):
    """No complete message arrived in time."""


def frame(body: dict, blob: bytes = b"") -> bytes:
    data = json.dumps(body, separators=(",", ":"), allow_nan=True).encode()
    return HEAD.pack(MAGIC, len(data), len(blob)) + data + blob


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise Deadline("no answer in time")
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise PeerClosed("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, *, max_blob: int = MAX_BLOB) -> tuple[dict, bytes]:
    """One message from ``fd``: (body, blob). Raises WireError for anything malformed."""
    magic, body_size, blob_size = HEAD.unpack(_read_exact(fd, HEAD.size, deadline))
    if magic != MAGIC:
        raise WireError("a message did not start with the expected marker")
    if body_size > MAX_BODY or blob_size > max_blob:
        raise WireError(f"a message of {body_size + blob_size} bytes is over the limit")
    raw = _read_exact(fd, body_size, deadline)
    blob = _read_exact(fd, blob_size, deadline) if blob_size else b""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"a message was not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise WireError("a message was not a JSON object")
    return body, blob
