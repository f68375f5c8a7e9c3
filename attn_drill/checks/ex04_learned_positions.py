"""Hidden checks for ex4: the learned positional embedding."""

import torch

from attn_drill.checks.harness import DTYPES, CheckFailure, check, compare, describe, fail, mistake, randn
from attn_drill.checks.properties import check_defines, check_static_scan, forward_raises, outputs, twin  # noqa: F401

CLASS = "LearnedPositionalEmbedding"
NOT_PARAMETER = "learned-pos-not-parameter"
# (B, T, E, max_len, offset): B != T everywhere, batch 1, length 1, odd widths, offset + T == max_len.
SHAPES = [(2, 5, 6, 10, 0), (1, 1, 4, 8, 0), (3, 4, 6, 10, 3), (2, 3, 5, 7, 4), (4, 2, 3, 5, 1), (1, 6, 4, 6, 0)]


def pair(learner, reference, max_len, E, dtype=torch.float64, device=None, seed=0):
    """The learner's module and the reference with the same weight, drawn from N(0, 1): values of
    both signs as large as x's (the 0.02 initialisation would hide a wrong slice less well)."""
    def build(*args):
        module = reference.LearnedPositionalEmbedding(*args)
        torch.nn.init.normal_(module.weight)  # twin seeded the generator
        return module
    return twin(learner, build, CLASS, max_len, E, dtype=dtype, device=device, seed=seed)


def forward(learner, mine, x, offset=None):
    kwargs = {} if offset is None else {"offset": offset}
    what = f"{CLASS}.forward on x {tuple(x.shape)}, {f'offset={offset}' if kwargs else 'offset at its default'}"
    return outputs(learner.run(mine, x, what=what, **kwargs), 1, what)[0]


def forward_mistakes(x, weight, offset):
    """Known mistakes on these inputs; one that cannot run on them gives None."""
    (B, T, _), max_len = x.shape, weight.size(0)
    return [(mistake("learned-pos-offset-ignored"), lambda: x + weight[:T]),
            (mistake("learned-pos-batch-broadcast"),
             lambda: x + weight[offset: offset + B, None] if offset + B <= max_len else None),  # (B, 1, E)
            (mistake("learned-pos-shifted-by-one"),
             lambda: x + weight[offset + 1: offset + 1 + T] if offset + 1 + T <= max_len else None)]  # (T, E)


def inputs(x, max_len, offset):
    return f"{CLASS}({max_len}, {x.size(-1)}), {describe(x=x)}, offset={offset}"


@check("weight is a registered nn.Parameter of shape (max_len, d_model), in parameters() and state_dict()")
def check_parameter(learner):
    for max_len, d_model in ((10, 6), (3, 8), (7, 1)):
        what = f"{CLASS}({max_len}, {d_model})"
        mine = learner.module(CLASS, max_len, d_model)
        params, state = learner.parameters(mine), learner.state(mine)
        if "weight" not in params:
            try:
                learner.attr(mine, "weight")
            except CheckFailure:
                fail(f"{what} has no attribute weight (its parameters: {sorted(params) or 'none'}). The statement "
                     "asks for self.weight = nn.Parameter(...) of shape (max_len, d_model), on the module itself.")
            fail(f"{what}.weight is {'a buffer' if 'weight' in state else 'a plain attribute'}, not an nn.Parameter: "
                 "parameters() does not yield it and no optimiser ever trains it. Write "
                 "self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02).", NOT_PARAMETER)
        if not learner.attr(mine, "weight")._worker_requires_grad:
            fail(f"{what}.weight has requires_grad=False, so it is never trained.", NOT_PARAMETER)
        if params["weight"] != (max_len, d_model):
            fail(f"{what}.weight has shape {params['weight']}, expected (max_len, d_model) = ({max_len}, {d_model}).")


@check("forward adds weight[offset:offset+T] to every sequence (six shapes and offsets, float64 and float32)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, max_len, offset) in enumerate(SHAPES):
            mine, ref = pair(learner, reference, max_len, E, dtype, device, seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            compare("out", forward(learner, mine, x, offset or None), ref(x, offset=offset),
                    inputs=inputs(x, max_len, offset) + ("" if offset else " (the default)"),
                    mistakes=forward_mistakes(x, ref.weight.detach(), offset))


@check("offsets for decoding: a sequence fed in pieces, or one token at a time, equals one full pass")
def check_decoding(learner, reference, device):
    max_len, (B, T, E) = 8, (2, 6, 4)
    mine, ref = pair(learner, reference, max_len, E, device=device, seed=60)
    x, weight = randn(B, T, E, device=device, seed=61), ref.weight.detach()  # (B, T, E), (max_len, E)
    for cuts in ((0, 3, 4, 6), tuple(range(T + 1))):
        spans = list(zip(cuts, cuts[1:]))
        pieces = [forward(learner, mine, x[:, a:b], a) for a, b in spans]  # (B, b - a, E) each
        if [tuple(piece.shape) for piece in pieces] != [(B, b - a, E) for a, b in spans]:
            fail(f"forward on the pieces of x {tuple(x.shape)} cut at {list(cuts)} returned shapes "
                 f"{[tuple(piece.shape) for piece in pieces]}.")
        ignored = lambda: torch.cat([x[:, a:b] + weight[: b - a] for a, b in spans], dim=1)  # noqa: E731
        compare("the pieces joined along T", torch.cat(pieces, dim=1), ref(x),
                inputs=f"{CLASS}({max_len}, {E}), {describe(x=x)} fed as "
                       + ", ".join(f"x[:, {a}:{b}] at offset={a}" for a, b in spans),
                mistakes=[(mistake("learned-pos-offset-ignored"), ignored)])


@check("the gradient trains exactly the rows used, summed over the batch (so one SGD step moves only those)")
def check_training(learner, reference, device):
    max_len, (B, T, E), offset = 9, (3, 4, 5), 2
    mine, _ = pair(learner, reference, max_len, E, device=device, seed=70)
    x = randn(B, T, E, device=device, seed=71, requires_grad=True)  # (B, T, E)
    upstream = randn(B, T, E, device=device, seed=72)  # (B, T, E): d loss / d out
    what, used = inputs(x, max_len, offset), f"rows {offset}..{offset + T - 1}"
    out = forward(learner, mine, x, offset)
    if not out._worker_requires_grad:
        fail(f"out is cut off from the graph for {what} (no grad_fn): do not detach it.")
    (grad_x,), params = learner.grad([out], [upstream], [x], module=mine)
    grad = params.get("weight")  # (max_len, E)
    if grad is None:
        fail(f"{CLASS}.weight received no gradient for {what}: add a slice of self.weight itself (not .data, "
             "not a detached copy).")
    want = torch.zeros(max_len, E, dtype=torch.float64, device=device)  # (max_len, E)
    want[offset: offset + T] = upstream.sum(0)  # the rows used get the batch sum
    stray = [i for i in range(max_len) if not offset <= i < offset + T and grad[i].abs().max().item() != 0]
    if stray:
        fail(f"rows {stray} of weight got a nonzero gradient for {what}, but forward uses only {used}: slice "
             "weight[offset:offset + T], do not mix in the rest of the table.")
    compare("the gradient of weight", grad, want,
            inputs=f"{what} ({used} get the upstream gradient summed over the batch, every other row 0)")
    if grad_x is None:
        fail(f"x received no gradient for {what}: out must be x plus the position vectors.")
    compare("the gradient of x", grad_x, upstream, inputs=f"{what} (out = x + ..., so it passes unchanged)")


@check("offset + T > max_len raises ValueError naming max_len")
def check_too_long(learner, reference, device):
    mine, _ = pair(learner, reference, 6, 4, device=device, seed=80)
    for (B, T), offset in (((2, 7), 0), ((2, 3), 4), ((1, 1), 6)):
        case = f"max_len = 6, x ({B}, {T}, 4), offset={offset} (offset + T = {offset + T})"
        forward_raises(learner, case, ("max_len",), mine, randn(B, T, 4, device=device, seed=81), offset=offset)


@check("out keeps x's dtype and device; x and weight are not modified")
def check_untouched(learner, reference, device):
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, 7, 4, dtype, device, seed=90)
        x = randn(3, 5, 4, dtype=dtype, device=device, seed=91)  # (B, T, E); modifying it fails in the worker
        compare("out", forward(learner, mine, x, 1), ref(x, offset=1), inputs=inputs(x, 7, 1))
        compare("weight after forward", learner.attr(mine, "weight"), ref.weight.detach(),
                inputs=inputs(x, 7, 1) + ": forward must not modify weight in place")
