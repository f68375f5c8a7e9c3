"""The static scan: forbidden names and escape hatches are flagged with their line; plain
attention code, and the names the exercise asks for, are not."""

import pytest

from attn_drill.catalog import load_catalog
from attn_drill.engine.scan import scan

SDPA = ("torch.nn.functional.scaled_dot_product_attention",)


@pytest.mark.parametrize(("source", "line", "name"), [
    ("import torch.nn.functional as F\nF.scaled_dot_product_attention(q, k, v)\n", 2, "F.scaled_dot_product_attention"),
    ("from torch.nn.functional import scaled_dot_product_attention as s\n", 1, "scaled_dot_product_attention"),
    ("import torch\n\n\ntorch._C._nn.foo\n", 4, "torch._C"),
    ("import torch\ny = torch.ops.aten.mm\n", 2, "torch.ops"),
    ("import sys\nsys.settrace(None)\n", 2, "sys.settrace"),
    ("import gc\n", 1, "gc"),
    ("import ctypes\n", 1, "ctypes"),
    ("from importlib import reload\n", 1, "importlib"),
    ("class T:\n    def __torch_function__(self):\n        pass\n", 2, "__torch_function__"),
    ("f = getattr(F, 'scaled_dot_product_attention')\n", 1, "scaled_dot_product_attention"),
])
def test_flags_with_the_line(source, line, name):
    findings = scan(source, SDPA)
    assert any(f.line == line and f.name == name for f in findings), findings


def test_plain_attention_and_the_exercises_own_names_pass():
    source = (
        "import math\nimport torch\nfrom torch import nn\n\n"
        "def scaled_dot_product_attention(q, k, v, mask=None, scale=None):\n"
        "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))\n"
        "    return torch.softmax(scores, dim=-1) @ v, scores\n\n"
        "def self_attention(x, w_q, w_k, w_v, mask=None):\n"
        "    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, mask)\n")
    assert scan(source, SDPA, allowed_names=("scaled_dot_product_attention", "self_attention")) == []


def test_every_reference_passes_the_scan():
    for exercise in load_catalog():
        source = exercise.solution_path.read_text(encoding="utf-8")
        assert scan(source, exercise.forbidden, allowed_names=exercise.defines) == [], exercise.id


def test_a_syntax_error_is_left_to_the_import_check():
    assert scan("def broken(:\n", SDPA) == []
