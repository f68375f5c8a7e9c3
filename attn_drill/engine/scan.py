"""The static scan of a learner's file: forbidden names and escape hatches, with their lines.

It parses the file with ``ast`` (reading, never running it). It is the second line behind
the worker's operator-level guard, and like it best effort against deliberate evasion: a
name built at run time escapes it. Value verdicts never depend on it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Reaching into torch's or Python's machinery: never needed to write attention.
ESCAPE_HATCHES = {
    "torch._C": "torch's C internals",
    "torch.ops": "raw operator calls",
    "torch._dynamo": "torch's compiler internals",
    "torch.overrides": "torch-function overrides",
    "torch.utils._python_dispatch": "dispatch modes",
    "_disable_torch_function": "switching off torch-function modes",
    "__torch_function__": "a torch-function override",
    "__torch_dispatch__": "a dispatch override",
    "TorchFunctionMode": "a torch-function mode",
    "TorchDispatchMode": "a dispatch mode",
    "settrace": "tracing the grader (sys.settrace)",
    "setprofile": "profiling hooks (sys.setprofile)",
    "_getframe": "reading the caller's frames",
    "gc": "the garbage collector's object lists",
    "ctypes": "raw memory access",
    "importlib": "re-importing modules",
    "reload": "reloading modules",
    "__import__": "importing by name at run time",
    "builtins": "the builtins module",
    "inspect": "inspecting the caller",
    "signal": "signals",
    "subprocess": "starting programs",
    "multiprocessing": "starting processes",
    "socket": "the network",
    "pickle": "unpickling",
}
# The last part of each forbidden name the catalog uses, as a learner would write it.
FORBIDDEN_WORDS = {
    "torch.nn.functional.scaled_dot_product_attention": ("scaled_dot_product_attention",),
    "torch.nn.functional.multi_head_attention_forward": ("multi_head_attention_forward",),
    "torch.nn.MultiheadAttention": ("MultiheadAttention",),
    "torch.nn.TransformerEncoderLayer": ("TransformerEncoderLayer", "TransformerEncoder"),
    "torch.autograd.grad": ("autograd",),
    "torch.autograd.backward": ("autograd",),
    "torch.Tensor.backward": ("backward",),
}


@dataclass(frozen=True)
class Finding:
    line: int
    name: str
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.name} ({self.why})"


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Dotted:
    """Dotted names to find in another name, as the whole of it, its leading parts or its trailing
    parts: ``torch._C`` in ``torch._C._nn.foo``, ``settrace`` in ``sys.settrace``. Looked up by
    how many parts they have, so a name costs a few dictionary lookups, not one test per entry."""

    def __init__(self, meanings: dict[str, str]):
        self.by_parts: dict[int, dict[str, tuple[int, str]]] = {}
        for order, (name, meaning) in enumerate(meanings.items()):
            self.by_parts.setdefault(name.count(".") + 1, {})[name] = (order, meaning)

    def first(self, parts: list[str]) -> str | None:
        """The meaning of the first-listed entry that ``parts`` (a name split at its dots) is,
        starts with or ends with; None when none is."""
        hits = []
        for k, names in self.by_parts.items():
            if len(parts) < k:
                continue
            ends = [".".join(parts[:k])] + ([".".join(parts[-k:])] if len(parts) > k else [])
            hits += [names[end] for end in ends if end in names]
        return min(hits)[1] if hits else None


_HATCHES = _Dotted({hatch: f"{why} is not allowed in exercise code" for hatch, why in ESCAPE_HATCHES.items()})


def scan(source: str, forbidden: tuple[str, ...] | list[str], *, allowed_names: tuple[str, ...] = ()) -> list[Finding]:
    """Every use of a forbidden built-in or an escape hatch in ``source``, in line order.
    ``allowed_names`` are the names the exercise itself asks the learner to define."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the import check reports it, with the line
    words = _Dotted({word: f"{name} is off limits in this exercise"
                     for name in forbidden for word in FORBIDDEN_WORDS.get(name, (name.rsplit(".", 1)[-1],))})
    found: dict[tuple[int, str], Finding] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, (ast.Attribute, ast.Name)):
            dotted = _dotted(node)
            names = [dotted] if dotted else []
            names.append(node.attr if isinstance(node, ast.Attribute) else node.id)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names),
                     *(alias.name for alias in node.names)]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]   # getattr(F, "scaled_dot_product_attention")
        for name in names:
            if name in allowed_names:
                continue
            parts = name.split(".")
            why = words.first(parts) or _HATCHES.first(parts)
            if why:
                found.setdefault((node.lineno, name), Finding(node.lineno, name, why))
    return sorted(found.values(), key=lambda f: (f.line, f.name))

