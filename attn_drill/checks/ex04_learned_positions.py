"""Hidden checks for ex4: the learned positional embedding."""

import torch
from torch import nn

from attn_drill.checks.harness import (
    DTYPES, Mistake, check, compare, describe, expect_tensor, expect_value_error, fail, randn, require_defined,
)

CLASS = "LearnedPositionalEmbedding"

# (B, T, E, max_len, offset): B != T everywhere, batch 1, length 1, odd widths, offset + T == max_len.
SHAPES = [(2, 5, 6, 10, 0), (1, 1, 4, 8, 0), (3, 4, 6, 10, 3), (2, 3, 5, 7, 4), (4, 2, 3, 5, 1), (1, 6, 4, 6, 0)]

OFFSET_IGNORED = Mistake(
    "learned-pos-offset-ignored", "x + weight[:T]: the offset was ignored; token t sits at position offset + t")
NOT_PARAMETER = Mistake(
    "learned-pos-not-parameter", "a weight that is not a registered nn.Parameter, so no optimiser ever trains it")
BATCH_BROADCAST = Mistake(
    "learned-pos-batch-broadcast",
    "x[b, t] + weight[offset + b]: the position was taken from the batch index; add the same (T, E) slice "
    "weight[offset:offset+T] to every sequence (it broadcasts over B)")
SHIFTED_BY_ONE = Mistake(
    "learned-pos-shifted-by-one", "x + weight[offset + 1 : offset + 1 + T]: the slice starts one row late")


def label(max_len, d_model):
    return f"{CLASS}({max_len}, {d_model})"


def expect_weight_parameter(module, max_len, d_model):
    """``module.weight`` is a trainable nn.Parameter of shape (max_len, d_model), registered on the module."""
    what = label(max_len, d_model)
    if not isinstance(module, nn.Module):
        fail(f"{what} should be a torch.nn.Module, got {type(module).__name__}.")
    weight = getattr(module, "weight", None)
    if weight is None:
        names = [name for name, _ in module.named_parameters()]
        fail(f"{what} has no attribute weight (its parameters: {names or 'none'}). The statement asks for "
             "self.weight = nn.Parameter(...) of shape (max_len, d_model).")
    if not isinstance(weight, nn.Parameter):
        kind = "a buffer" if any(b is weight for b in module.buffers()) else f"a plain {type(weight).__name__}"
        fail(f"{what}.weight is {kind}, not an nn.Parameter: parameters() does not yield it and no optimiser "
             "trains it. Write self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02).", NOT_PARAMETER.key)
    if not any(p is weight for p in module.parameters()):
        fail(f"{what}.weight is an nn.Parameter but parameters() does not yield it: assign it directly on the "
             "module (self.weight = nn.Parameter(...)).", NOT_PARAMETER.key)
    if not weight.requires_grad:
        fail(f"{what}.weight has requires_grad=False, so it is never trained.", NOT_PARAMETER.key)
    if tuple(weight.shape) != (max_len, d_model):
        fail(f"{what}.weight has shape {tuple(weight.shape)}, expected (max_len, d_model) = ({max_len}, {d_model}).")
    state = module.state_dict()
    if "weight" not in state:
        fail(f"{what}.state_dict() has no key 'weight' (keys: {sorted(state)}): register the table directly "
             "on the module as self.weight.")


def build(learner, max_len, d_model, *, dtype, device, seed):
    """The learner's module, moved to (dtype, device), with the checks' own values in weight."""
    module = learner.new(CLASS, max_len, d_model)
    expect_weight_parameter(module, max_len, d_model)
    module = module.to(dtype=dtype, device=device)
    weight = randn(max_len, d_model, dtype=dtype, device=device, seed=seed)  # (max_len, d_model)
    with torch.no_grad():
        module.weight.copy_(weight)
    return module, weight


def reference_module(reference, weight):
    module = reference.LearnedPositionalEmbedding(*weight.shape).to(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        module.weight.copy_(weight)
    return module


def forward(learner, module, x, offset=None):
    what = (f"{CLASS}.forward (max_len = {module.weight.size(0)}) on x {tuple(x.shape)}, "
            + ("offset left at its default" if offset is None else f"offset={offset}"))
    result = learner.run(module, x, what=what) if offset is None else learner.run(module, x, offset=offset, what=what)
    return expect_tensor(result, f"{CLASS}.forward")


def forward_mistakes(x, weight, offset):
    """Candidate mistakes on these inputs; a mistake that cannot run on them gives None."""
    B, T, _ = x.shape
    max_len = weight.size(0)

    def offset_ignored():
        return x + weight[:T]

    def batch_broadcast():
        return x + weight[offset: offset + B].unsqueeze(1) if offset + B <= max_len else None

    def shifted():
        return x + weight[offset + 1: offset + 1 + T] if offset + 1 + T <= max_len else None

    mistakes = [(BATCH_BROADCAST, batch_broadcast), (SHIFTED_BY_ONE, shifted)]
    return ([(OFFSET_IGNORED, offset_ignored)] if offset else []) + mistakes


def inputs(x, max_len, offset):
    return f"{label(max_len, x.size(-1))}, {describe(x=x)}, offset={offset}"


@check("your file imports and defines LearnedPositionalEmbedding")
def check_defines(learner):
    require_defined(learner)


@check("weight is a registered nn.Parameter of shape (max_len, d_model), in parameters() and state_dict()")
def check_parameter(learner):
    for max_len, d_model in ((10, 6), (3, 8), (7, 1)):
        module = learner.new(CLASS, max_len, d_model)
        expect_weight_parameter(module, max_len, d_model)
        state = module.state_dict()
        if tuple(state["weight"].shape) != (max_len, d_model):
            fail(f"{label(max_len, d_model)}.state_dict()['weight'] has shape {tuple(state['weight'].shape)}, "
                 f"expected ({max_len}, {d_model}).")


@check("forward adds weight[offset:offset+T] to every sequence (six shapes and offsets, float64 and float32)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, max_len, offset) in enumerate(SHAPES):
            module, weight = build(learner, max_len, E, dtype=dtype, device=device, seed=seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            got = forward(learner, module, x, offset if offset else None)
            want = reference_module(reference, weight)(x, offset=offset)  # (B, T, E)
            compare("out", got, want, inputs=inputs(x, max_len, offset) + ("" if offset else " (the default)"),
                    mistakes=forward_mistakes(x, weight, offset))


@check("offsets for decoding: a sequence fed in pieces, or one token at a time, equals one full pass")
def check_decoding(learner, reference, device):
    max_len, (B, T, E) = 8, (2, 6, 4)
    module, weight = build(learner, max_len, E, dtype=torch.float64, device=device, seed=60)
    x = randn(B, T, E, device=device, seed=61)  # (B, T, E)
    want = reference_module(reference, weight)(x)  # (B, T, E)
    for cuts in ((0, 3, 4, 6), tuple(range(T + 1))):
        pieces = [forward(learner, module, x[:, start:end], start) for start, end in zip(cuts, cuts[1:])]
        shapes = [tuple(piece.shape) for piece in pieces]
        if any(shape != (B, end - start, E) for shape, start, end in zip(shapes, cuts, cuts[1:])):
            fail(f"forward on the pieces of x {tuple(x.shape)} cut at {list(cuts)} returned shapes {shapes}.")
        steps = ", ".join(f"x[:, {a}:{b}] at offset={a}" for a, b in zip(cuts, cuts[1:]))
        ignored = [(OFFSET_IGNORED, lambda cuts=cuts: torch.cat(
            [x[:, a:b] + weight[: b - a] for a, b in zip(cuts, cuts[1:])], dim=1))]
        compare("the pieces joined along T", torch.cat(pieces, dim=1), want,
                inputs=f"{label(max_len, E)}, {describe(x=x)} fed as {steps}", mistakes=ignored)


@check("one SGD step trains exactly the rows used, with the gradient summed over the batch")
def check_training(learner, device):
    max_len, (B, T, E), offset, lr = 9, (3, 4, 5), 2, 0.5
    module, weight = build(learner, max_len, E, dtype=torch.float64, device=device, seed=70)
    x = randn(B, T, E, device=device, seed=71, requires_grad=True)  # (B, T, E)
    upstream = randn(B, T, E, device=device, seed=72)  # d loss / d out
    what = inputs(x, max_len, offset)
    out = forward(learner, module, x, offset)
    if not out.requires_grad:
        fail(f"out is cut off from the graph for {what} (no grad_fn): do not detach or use .data.")
    (out * upstream).sum().backward()
    grad = module.weight.grad
    if grad is None:
        fail(f"{label(max_len, E)}.weight received no gradient for {what}: add a slice of self.weight itself "
             "(not .data, not a detached copy).")
    want = torch.zeros(max_len, E, dtype=torch.float64, device=device)  # (max_len, E)
    want[offset: offset + T] = upstream.sum(0)  # rows offset .. offset + T - 1 get the batch sum
    used = f"rows {offset}..{offset + T - 1}"
    unused = torch.ones(max_len, dtype=torch.bool, device=device)
    unused[offset: offset + T] = False
    stray = [i for i in range(max_len) if unused[i] and grad[i].abs().max().item() != 0]
    if stray:
        fail(f"rows {stray} of weight got a nonzero gradient for {what}, but forward uses only {used}: "
             "slice weight[offset:offset + T], do not mix in the rest of the table.")
    compare("the gradient of weight", grad, want, inputs=what + f" ({used} get the upstream gradient summed "
            "over the batch, every other row 0)")
    if x.grad is None:
        fail(f"x received no gradient for {what}: out must be x plus the position vectors.")
    compare("the gradient of x", x.grad, upstream, inputs=what + " (out = x + ..., so it passes unchanged)")

    before = module.weight.detach().clone()
    # Plain SGD by hand: torch.optim's first step imports torch._dynamo, which rebinds torch.manual_seed
    # (the guard would then report tampering on the next call).
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.grad is not None:
                parameter -= lr * parameter.grad
    after = module.weight.detach()
    if not torch.equal(after[unused], before[unused]):
        rows = [i for i in range(max_len) if unused[i] and not torch.equal(after[i], before[i])]
        fail(f"one SGD step changed rows {rows} of weight, which {what} never uses; only rows "
             f"{offset}..{offset + T - 1} may change.")
    compare("weight after one SGD step (lr 0.5)", after, before - lr * want, inputs=what)


@check("offset + T > max_len raises ValueError naming max_len")
def check_too_long(learner, device):
    module, _ = build(learner, 6, 4, dtype=torch.float64, device=device, seed=80)
    for (B, T), offset in (((2, 7), 0), ((2, 3), 4), ((1, 1), 6)):
        x = randn(B, T, 4, device=device, seed=81)
        case = f"max_len = 6, x {tuple(x.shape)}, offset={offset} (offset + T = {offset + T})"
        expect_value_error(f"{CLASS}.forward with {case}", module, ("max_len",), x, offset=offset)


@check("out keeps x's dtype and device; x and weight are not modified")
def check_untouched(learner, device):
    for dtype in DTYPES:
        module, weight = build(learner, 7, 4, dtype=dtype, device=device, seed=90)
        x = randn(3, 5, 4, dtype=dtype, device=device, seed=91)  # (B, T, E)
        out = forward(learner, module, x, 1)
        what = inputs(x, 7, 1)
        if out.dtype != dtype or out.device != x.device:
            fail(f"out is {out.dtype} on {out.device} for {what}; keep x's dtype ({dtype}) and device ({x.device}).")
        if not torch.equal(module.weight.detach(), weight):
            fail(f"forward modified weight in place for {what}; add to x in a new tensor instead.")
        compare("out", out, x + weight[1:6], inputs=what)
