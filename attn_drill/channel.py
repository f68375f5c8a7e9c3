"""The signed record format between the grading child and its parent.

Each record is one line: an HMAC-SHA256 signature (hex), a space, then JSON. The key is
made fresh for every grading and handed to the child on stdin, so text that the learner's
code prints or writes cannot pass for a result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).hexdigest().encode()


class Channel:
    """The child's end: signed JSON lines on a pipe only it and the parent hold."""

    def __init__(self, fd: int, key: bytes):
        self._fd = fd
        self._key = key
        os.set_inheritable(fd, False)  # processes the learner starts do not get it

    def send(self, record_type: str, /, **fields) -> None:
        payload = json.dumps({"type": record_type, **fields}, separators=(",", ":")).encode()
        data = _sign(self._key, payload) + b" " + payload + b"\n"
        while data:
            data = data[os.write(self._fd, data):]


def read_record(line: bytes, key: bytes) -> dict | None:
    """The record on ``line``, or None when its signature does not match."""
    signature, _, payload = line.rstrip(b"\n").partition(b" ")
    if not hmac.compare_digest(_sign(key, payload), signature):
        return None
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
