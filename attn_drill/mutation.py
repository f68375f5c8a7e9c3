"""Mutants of a reference solution: small changes to its syntax tree that a real bug makes.

Each operator is a classic error in attention code (drop the scale, softmax over the wrong
dimension, invert or drop the mask, drop a transpose, swap or replace arguments, change a
constant or an index offset, force training on, drop a residual, remove a projection, ...).
:func:`mutants` yields every single-site mutant of a source file; `attn-drill validate
--mutants` grades each one with the exercise's hidden checks, which must fail it.
"""

from __future__ import annotations

import ast
import copy
import difflib
from dataclasses import dataclass
from typing import Callable, Iterator

SOFTMAX_LIKE = {"softmax", "log_softmax", "amax", "max", "sum", "logsumexp", "mean", "cumsum", "argmax"}
TRANSPOSES = {"transpose", "permute", "t", "swapaxes", "movedim"}
PROJECTION_WORDS = ("proj", "qkv", "fc", "linear", "w_")


@dataclass(frozen=True)
class Mutant:
    name: str       # "drop-scale@12", stable for the same source
    source: str
    diff: str


def _is_docstring(node: ast.AST, parents: dict) -> bool:
    parent = parents.get(node)
    return isinstance(parent, ast.Expr) and isinstance(node, ast.Constant) and isinstance(node.value, str)


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _is_scale(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and _call_name(node) in ("sqrt", "rsqrt"):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return True
    return isinstance(node, ast.Name) and "scale" in node.id


# Each operator takes a node and proposes the nodes that could replace it (none: it does not apply).
Rewrite = Callable[[ast.AST], list[ast.AST]]


def _drop_scale(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Mult)) and _is_scale(node.right):
        return [node.left]
    return []


def _softmax_dim(node):
    if not (isinstance(node, ast.Call) and _call_name(node) in SOFTMAX_LIKE):
        return []
    out = []
    for i, keyword in enumerate(node.keywords):
        if keyword.arg == "dim":
            other = copy.deepcopy(node)
            other.keywords[i].value = ast.Constant(-2) if ast.unparse(keyword.value) == "-1" else ast.Constant(-1)
            out.append(other)
    return out


def _invert_mask(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return [node.operand]
    if isinstance(node, ast.Call) and _call_name(node) == "masked_fill" and node.args \
            and not isinstance(node.args[0], ast.UnaryOp):
        other = copy.deepcopy(node)
        other.args[0] = ast.UnaryOp(ast.Invert(), other.args[0])
        return [other]
    return []


def _drop_mask(node):
    if isinstance(node, ast.Call) and _call_name(node) == "masked_fill" and isinstance(node.func, ast.Attribute):
        return [node.func.value]
    return []


def _drop_transpose(node):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TRANSPOSES:
        return [node.func.value]
    if isinstance(node, ast.Attribute) and node.attr in ("T", "mT"):
        return [node.value]
    return []


def _swap_arguments(node):
    if not isinstance(node, ast.Call):
        return []
    out = []
    names = [i for i, arg in enumerate(node.args) if isinstance(arg, (ast.Name, ast.Attribute))]
    for a, b in zip(names, names[1:]):
        if ast.unparse(node.args[a]) != ast.unparse(node.args[b]):
            other = copy.deepcopy(node)
            other.args[a], other.args[b] = other.args[b], other.args[a]
            out.append(other)
    return out


def _replace_argument(node):
    if not isinstance(node, ast.Call):
        return []
    out = []
    names = [arg for arg in node.args if isinstance(arg, ast.Name)]
    for i, arg in enumerate(node.args):
        for replacement in names:
            if isinstance(arg, ast.Name) and replacement.id != arg.id:
                other = copy.deepcopy(node)
                other.args[i] = ast.Name(replacement.id, ast.Load())
                out.append(other)
                break
    return out


def _constant(node):
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return []
    if isinstance(node.value, int):
        return [ast.Constant(node.value + 1)] + ([ast.Constant(node.value - 1)] if node.value else [])
    if isinstance(node.value, float):
        return [ast.Constant(node.value * 2 if node.value else 1.0)]
    return []


def _index_offset(node):
    if not isinstance(node, ast.Slice):
        return []
    out = []
    for side in ("lower", "upper"):
        bound = getattr(node, side)
        if bound is not None:
            other = copy.deepcopy(node)
            setattr(other, side, ast.BinOp(copy.deepcopy(bound), ast.Add(), ast.Constant(1)))
            out.append(other)
    return out


COMPARE_SWAPS = {ast.LtE: ast.Lt, ast.Lt: ast.LtE, ast.GtE: ast.Gt, ast.Gt: ast.GtE, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq}


def _compare(node):
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE_SWAPS:
        other = copy.deepcopy(node)
        other.ops = [COMPARE_SWAPS[type(node.ops[0])]()]
        return [other]
    return []


def _force_training(node):
    if isinstance(node, ast.Attribute) and node.attr == "training" and isinstance(node.ctx, ast.Load):
        return [ast.Constant(True)]
    return []


def _drop_residual(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        if isinstance(node.left, ast.Name) and isinstance(node.right, ast.Call):
            return [node.right]
        if isinstance(node.right, ast.Name) and isinstance(node.left, ast.Call):
            return [node.left]
    return []


def _remove_projection(node):
    if isinstance(node, ast.Call) and len(node.args) == 1 and isinstance(node.func, ast.Attribute) \
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "self" \
            and any(word in node.func.attr for word in PROJECTION_WORDS):
        return [node.args[0]]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult) and isinstance(node.right, ast.Name) \
            and node.right.id.startswith("w_"):
        return [node.left]
    return []


def _drop_softmax(node):
    if isinstance(node, ast.Call) and _call_name(node) == "softmax" and node.args:
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        if receiver is not None and not (isinstance(receiver, ast.Name) and receiver.id in ("torch", "F")):
            return [receiver]
        return [node.args[0]]
    return []


def _negate(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
        return [node.operand]
    return []


OPERATORS: dict[str, Rewrite] = {
    "drop-scale": _drop_scale, "softmax-dim": _softmax_dim, "invert-mask": _invert_mask, "drop-mask": _drop_mask,
    "drop-transpose": _drop_transpose, "swap-arguments": _swap_arguments, "replace-argument": _replace_argument,
    "constant": _constant, "index-offset": _index_offset, "comparison": _compare, "force-training": _force_training,
    "drop-residual": _drop_residual, "remove-projection": _remove_projection, "drop-softmax": _drop_softmax,
    "drop-negation": _negate,
}


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST):
        self.target, self.replacement = target, replacement

    def visit(self, node):
        if node is self.target:
            return copy.deepcopy(self.replacement)
        return super().visit(node)


def _checked_code(tree: ast.Module) -> list[ast.AST]:
    """The statements worth mutating: function and method bodies, not the module docstring,
    imports or top-level constants."""
    bodies = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bodies.extend(node.body)
    return bodies


def mutants(source: str) -> Iterator[Mutant]:
    """Every single-site mutant of ``source`` that still parses and differs from it."""
    tree = ast.parse(source)
    original = ast.unparse(tree)
    seen = {original}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    sites = [node for statement in _checked_code(tree) for node in ast.walk(statement)
             if not _is_docstring(node, parents) and not isinstance(node, ast.Raise)]
    for name, operator in OPERATORS.items():
        for node in sites:
            for replacement in operator(node):
                mutated_tree = _mutate(tree, node, replacement)
                if mutated_tree is None:
                    continue
                text = ast.unparse(mutated_tree)
                if text in seen:
                    continue
                seen.add(text)
                diff = "".join(difflib.unified_diff(original.splitlines(True), text.splitlines(True), "reference",
                                                    "mutant", n=0))
                yield Mutant(f"{name}@{getattr(node, 'lineno', 0)}", text + "\n", diff)


def _mutate(tree: ast.Module, target: ast.AST, replacement: ast.AST) -> ast.Module | None:
    """A copy of ``tree`` with ``target`` replaced (found by its position in a walk)."""
    index = next(i for i, node in enumerate(ast.walk(tree)) if node is target)
    twin = copy.deepcopy(tree)
    twin_target = next(node for i, node in enumerate(ast.walk(twin)) if i == index)
    mutated = _Replace(twin_target, replacement).visit(twin)
    try:
        ast.fix_missing_locations(mutated)
        compile(mutated, "<mutant>", "exec")
    except (SyntaxError, ValueError, TypeError):
        return None
    return mutated
