"""`attn-drill new`: scaffold an exercise in an instructor's pack, and make starters from
references (a starter is its reference with the bodies taken out: same signatures, same
docstrings, ``raise NotImplementedError``)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from attn_drill.errors import DrillError
from attn_drill.workspace import write_atomically

ID_PATTERN = re.compile(r"ex0*([1-9][0-9]*)(?:_([a-z][a-z0-9_]*))?")


def make_starter(reference: str) -> str:
    """The starter of a reference: the file as written, but every function and method body
    (after its docstring) replaced by ``raise NotImplementedError`` with a TODO."""
    tree = ast.parse(reference)
    bodies = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if body:
                bodies.append((body[0].lineno - 1, body[-1].end_lineno, " " * body[0].col_offset))
    lines = reference.splitlines(keepends=True)
    outermost: list[tuple[int, int, str]] = []
    for start, end, indent in sorted(bodies):
        if not outermost or start >= outermost[-1][1]:   # a body inside another goes with it
            outermost.append((start, end, indent))
    for start, end, indent in reversed(outermost):
        lines[start:end] = [f"{indent}# TODO: write this\n", f"{indent}raise NotImplementedError\n"]
    return "".join(lines)


@dataclass(frozen=True)
class Scaffold:
    id: str
    files: tuple[Path, ...]


def new_exercise(key: str, pack: Path) -> Scaffold:
    """Write the statement, reference, starter, checks and catalog entry of a new exercise
    ``key`` (``ex14`` or ``ex14_rope_scaling``) into the pack folder ``pack``."""
    from attn_drill.catalog import forget_catalogs, load_catalog

    match = ID_PATTERN.fullmatch(key.strip().lower())
    if match is None:
        raise DrillError(f"an exercise id looks like ex14 or ex14_rope_scaling, got '{key}'.",
                         zh=f"练习 id 应形如 ex14 或 ex14_rope_scaling，实际是 '{key}'。")
    number, name = int(match.group(1)), match.group(2) or f"exercise_{match.group(1)}"
    exercise_id, stem = f"ex{number}", f"ex{number:02d}_{name}"
    taken = next((ex for ex in load_catalog() if ex.id == exercise_id or ex.name == name), None)
    if taken is not None:
        raise DrillError(f"{exercise_id} ({name}) is taken by {taken.id} {taken.title}. Try another number or name.",
                         zh=f"{exercise_id}（{name}）已被 {taken.id} {taken.title_zh} 占用。请换一个编号或名字。")
    pack = Path(pack)
    paths = {what: pack / what / f"{stem}.py" for what in ("solutions", "exercises", "checks")}
    existing = [p for p in paths.values() if p.exists()]
    if existing:
        raise DrillError(f"{existing[0]} exists already; `new` never overwrites. Choose another id.",
                         zh=f"{existing[0]} 已经存在；`new` 从不覆盖文件。请换一个 id。")
    reference = REFERENCE.format(id=exercise_id, name=name)
    write_atomically(paths["solutions"], reference)
    write_atomically(paths["exercises"], make_starter(reference))
    write_atomically(paths["checks"], CHECKS.format(id=exercise_id, name=name))
    catalog = pack / "catalog.toml"
    head = catalog.read_text(encoding="utf-8") if catalog.exists() else CATALOG_HEAD
    write_atomically(catalog, head.rstrip("\n") + "\n" + ENTRY.format(id=exercise_id, name=name))
    forget_catalogs()
    return Scaffold(exercise_id, (catalog, *paths.values()))


CATALOG_HEAD = """# An attn-drill exercise pack (docs/authoring.md): one [[exercises]] entry per exercise.
# Files follow from id and name: exercises/ex14_name.py (starter), solutions/ex14_name.py
# (reference), checks/ex14_name.py (hidden checks), questions/<topic>.toml (quiz questions).
format_version = 1
"""

ENTRY = '''
[[exercises]]
id = "{id}"
name = "{name}"
title = "Attention weights, by hand"       # TODO: your exercise's title
title_zh = "手写注意力权重"                   # TODO
topic = "self-attention"                   # one of the catalog's topics
difficulty = 1
defines = ["attention_weights"]
forbidden = ["torch.nn.functional.scaled_dot_product_attention"]
hints = [
  "TODO: the vaguest hint first: the scores are q @ k^T times the scale.",
  "TODO: softmax over the last dimension, the keys.",
  "TODO: the most specific hint last: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1).",
]
'''

REFERENCE = '''"""{id} · Attention weights, by hand

TODO: the statement the learner reads (rendered as Markdown by `attn-drill show`).

Write `attention_weights(q, k)`: the weights `softmax(q k^T / sqrt(D))` of scaled dot-product
attention, softmax over the keys.

- q `(..., L, D)`, k `(..., S, D)`; returns `(..., L, S)`, each row summing to 1.
- Keep the input's dtype and device; never modify an input in place.

Forbidden here: `torch.nn.functional.scaled_dot_product_attention`.

中文：

TODO：学习者看到的题目（中文）。实现 `attention_weights(q, k)`：缩放点积注意力的权重
`softmax(q k^T / sqrt(D))`，在 key 维度上做 softmax。
"""

import math

import torch


def attention_weights(q, k):
    """The weights of scaled dot-product attention: (..., L, S)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., L, S)
    return torch.softmax(scores, dim=-1)  # (..., L, S)
'''

CHECKS = '''"""Hidden checks for {id}: a spec over the shared property checks (docs/authoring.md)."""

import torch

from attn_drill.checks.harness import DTYPES, check, compare, compare_gradients, describe, randn
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    check_defines, check_static_scan, outputs, rows_sum_to_one,
)

NAME = "attention_weights"
SHAPES = [(1, 1, 1, 3, 4), (2, 3, 5, 7, 4), (2, 2, 6, 6, 8)]   # (B, H, L, S, D): L != S, length 1


def inputs(shape, dtype, device, seed, requires_grad=False):
    B, H, L, S, D = shape
    q = randn(B, H, L, D, dtype=dtype, device=device, seed=seed, requires_grad=requires_grad)      # (B, H, L, D)
    k = randn(B, H, S, D, dtype=dtype, device=device, seed=seed + 1, requires_grad=requires_grad)  # (B, H, S, D)
    return q, k


@check("the weights match the reference (float64 and float32, three shapes)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            q, k = inputs(shape, dtype, device, seed)
            got, = outputs(learner.call(NAME, q, k), 1, f"{{NAME}}()")
            compare("weights", got, reference.attention_weights(q, k), inputs=describe(q=q, k=k))


@check("gradients with respect to q and k match the reference")
def check_gradients(learner, reference, device):
    q, k = inputs((2, 3, 5, 7, 4), torch.float64, device, 10, requires_grad=True)
    got, = outputs(learner.call(NAME, q, k), 1, f"{{NAME}}()")
    compare_gradients(learner, got, reference.attention_weights(q, k), {{"q": q, "k": k}}, inputs=describe(q=q, k=k))


@check("TODO: the property your topic is about (here: every row of weights sums to 1)")
def check_topic_property(learner, device):
    q, k = inputs((2, 3, 5, 7, 4), torch.float64, device, 20)
    got, = outputs(learner.call(NAME, q, k), 1, f"{{NAME}}()")
    rows_sum_to_one(got, inputs=describe(q=q, k=k))
'''
