"""Known attention mistakes, computed on the checks' own inputs so feedback can name them.

One parameterised attention (``attention``) reproduces each classic error; every exercise
whose output is attention-shaped draws its candidate mistakes from here.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from attn_drill.checks.harness import Mistake, mistake

NO_SCALE = mistake("no-scale")
SCALE_BY_D = mistake("scale-by-d")
SCALE_MULTIPLIED = mistake("scale-multiplied")
SOFTMAX_OVER_QUERIES = mistake("softmax-dim")
MASK_INVERTED = mistake("mask-inverted")
MASK_IGNORED = mistake("mask-ignored")
MASK_AFTER_SOFTMAX = mistake("mask-after-softmax")
NO_SOFTMAX = mistake("no-softmax")
QK_SWAPPED = mistake("qk-swapped")
CAUSAL_TOP_LEFT = mistake("causal-top-left")
CAUSAL_INVERTED = mistake("causal-inverted")


def attention(q, k, v, mask=None, scale=None, *, scale_kind="sqrt", softmax_dim=-1, invert_mask=False,
              ignore_mask=False, mask_after_softmax=False, softmax=True, swap_qk=False):
    """Scaled dot-product attention, with switches that reproduce the classic mistakes."""
    d_k = q.size(-1)
    if scale is None:
        scale = {"sqrt": 1 / math.sqrt(d_k), "none": 1.0, "d": 1 / d_k, "times": math.sqrt(d_k)}[scale_kind]
    scores = (k @ q.transpose(-2, -1) if swap_qk else q @ k.transpose(-2, -1)) * scale  # (..., L, S)
    if scores.shape[-2:] != (q.size(-2), k.size(-2)):
        return None  # the mistake cannot even run on these shapes
    if mask is not None and not ignore_mask:
        mask = ~mask if invert_mask else mask
        if not mask_after_softmax:
            scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim) if softmax else scores
    if mask is not None and not ignore_mask:
        weights = weights.masked_fill(~mask, 0.0).nan_to_num(0.0)
    return weights @ v, weights


ATTENTION_VARIANTS: list[tuple[Mistake, dict]] = [
    (NO_SCALE, {"scale_kind": "none"}),
    (SCALE_BY_D, {"scale_kind": "d"}),
    (SCALE_MULTIPLIED, {"scale_kind": "times"}),
    (SOFTMAX_OVER_QUERIES, {"softmax_dim": -2}),
    (NO_SOFTMAX, {"softmax": False}),
    (QK_SWAPPED, {"swap_qk": True}),
    (MASK_INVERTED, {"invert_mask": True}),
    (MASK_IGNORED, {"ignore_mask": True}),
    (MASK_AFTER_SOFTMAX, {"mask_after_softmax": True}),
]


def attention_mistakes(q, k, v, mask=None, scale=None, *, part: int = 0,
                       then: Callable = lambda result: result) -> list[tuple[Mistake, Callable]]:
    """Candidate mistakes for attention on these inputs: ``part`` 0 is the output, 1 the weights;
    ``then`` maps a mistaken attention output onward (an output projection, say)."""
    candidates = []
    for known, switches in ATTENTION_VARIANTS:
        if scale is not None and "scale_kind" in switches:
            continue
        if mask is None and known in (MASK_INVERTED, MASK_IGNORED, MASK_AFTER_SOFTMAX):
            continue

        def compute(switches=switches):
            with torch.no_grad():
                result = attention(q.detach(), k.detach(), v.detach(), mask, scale, **switches)
                return None if result is None else then(result[part])

        candidates.append((known, compute))
    return candidates
