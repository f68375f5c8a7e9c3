"""Hidden checks for ex6: causal multi-head self-attention with a fused qkv projection."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attn_drill.checks.harness import (
    DTYPES, Mistake, builtin_multihead, check, compare, copy_parameters, describe, expect_every_parameter_has_grad,
    expect_tensor, fail, fail_naming, randn, require_defined,
)
from attn_drill.checks.mistakes import CAUSAL_INVERTED, NO_SCALE

CAUSAL_MISSING = Mistake(
    "causal-missing", "attention without the causal mask: every position sees the whole sequence, its future included")
HEADS_NO_TRANSPOSE = Mistake(
    "heads-no-transpose", "heads split without a transpose: view(B, H, T, D) directly instead of "
    "view(B, T, H, D).transpose(1, 2)")
HEADS_MERGE_NO_TRANSPOSE = Mistake(
    "heads-merge-no-transpose", "heads merged without transposing back: the (B, H, T, D) result viewed as "
    "(B, T, E) directly instead of transpose(1, 2) first")
SCALE_BY_EMBED_DIM = Mistake(
    "scale-by-embed-dim", "attention scaled by 1/sqrt(embed_dim) instead of 1/sqrt(head_dim)")
QKV_ORDER = Mistake(
    "qkv-order", "q, k and v taken from the fused qkv output in the wrong order (the statement's order is q, k, v)")
DROPOUT_IN_EVAL = Mistake(
    "dropout-in-eval", "attention with dropout still active in eval() mode")

# (B, T, E, H): batch 1, length 1, one head, D = 1, odd sizes.
SHAPES = [(2, 5, 8, 2), (1, 1, 6, 3), (3, 7, 12, 4), (1, 4, 4, 1), (2, 6, 6, 6), (2, 3, 10, 5)]
NAME = "CausalSelfAttention"


# ---------------------------------------------------------------------------------------
# Building modules with known weights


def make_reference(reference, E, H, *, bias=True, dtype=torch.float64, device=None, seed=0):
    """The reference module with reproducible weights of both signs."""
    module = reference.CausalSelfAttention(E, H, bias=bias).to(dtype=dtype, device=device)
    with torch.no_grad():
        for i, parameter in enumerate(module.parameters()):
            parameter.copy_(randn(*parameter.shape, dtype=dtype, device=device, seed=1000 * seed + i) / math.sqrt(E))
    return module


def make_pair(learner, reference, E, H, *, bias=True, dtype=torch.float64, device=None, seed=0, **kwargs):
    """(the learner's module, the reference module), the learner's holding the reference's weights."""
    ref = make_reference(reference, E, H, bias=bias, dtype=dtype, device=device, seed=seed)
    mine = learner.new(NAME, E, H, bias=bias, **kwargs)
    if not isinstance(mine, nn.Module):
        fail(f"{NAME}(...) should be a torch.nn.Module, got {type(mine).__name__}.")
    mine = mine.to(dtype=dtype, device=device)
    copy_parameters(NAME, mine, ref)
    return mine, ref


def forward(learner, module, x):
    return expect_tensor(learner.run(module, x), f"{NAME}.forward")


# ---------------------------------------------------------------------------------------
# Known mistakes, computed from the reference module's weights


def attention_variant(ref, x, H, *, mask="causal", split="transpose", merge="transpose", scale="head",
                      order=(0, 1, 2), nan_rows=False):
    """Causal self-attention with switches that reproduce classic mistakes."""
    with torch.no_grad():
        B, T, E = x.shape
        D = E // H
        parts = F.linear(x, ref.qkv.weight, ref.qkv.bias).split(E, dim=2)  # 3 x (B, T, E)
        q, k, v = (parts[i] for i in order)

        def heads(t):  # (B, T, E) -> (B, H, T, D)
            return t.reshape(B, H, T, D) if split == "view" else t.view(B, T, H, D).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        factor = {"head": 1 / math.sqrt(D), "none": 1.0, "embed": 1 / math.sqrt(E)}[scale]
        att = q @ k.transpose(-2, -1) * factor  # (B, H, T, T)
        offset = torch.arange(T, device=x.device)[None, :] - torch.arange(T, device=x.device)[:, None]  # j - i
        allowed = {"causal": offset <= 0, "none": offset == offset, "future": offset > 0,
                   "future-and-self": offset >= 0}[mask]
        att = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
        if not nan_rows:
            att = att.nan_to_num(0.0)
        y = att @ v  # (B, H, T, D)
        y = y.reshape(B, T, E) if merge == "view" else y.transpose(1, 2).reshape(B, T, E)
        return F.linear(y, ref.out_proj.weight, ref.out_proj.bias)  # (B, T, E)


def causal_mistakes(ref, x, H):
    def variant(**switches):
        return lambda: attention_variant(ref, x, H, **switches)

    candidates = [
        (CAUSAL_MISSING, variant(mask="none")),
        (CAUSAL_INVERTED, variant(mask="future")),
        (CAUSAL_INVERTED, variant(mask="future-and-self")),
        (NO_SCALE, variant(scale="none")),
    ]
    B, T, E = x.shape
    if T > 1:  # the last query sees nothing: NaN in the last row only (all NaN for T = 1 would match anything)
        candidates.append((CAUSAL_INVERTED, variant(mask="future", nan_rows=True)))
    if H > 1:
        candidates += [
            (HEADS_NO_TRANSPOSE, variant(split="view")),
            (HEADS_MERGE_NO_TRANSPOSE, variant(merge="view")),
            (SCALE_BY_EMBED_DIM, variant(scale="embed")),
        ]
    if E > 1:
        candidates += [(QKV_ORDER, variant(order=order))
                       for order in ((1, 0, 2), (0, 2, 1), (2, 1, 0), (1, 2, 0), (2, 0, 1))]
    return candidates


# ---------------------------------------------------------------------------------------
# Checks


@check("your file imports and defines CausalSelfAttention")
def check_defines(learner):
    require_defined(learner)


@check("embed_dim not divisible by num_heads raises ValueError naming both")
def check_bad_arguments(learner):
    for E, H in ((10, 4), (6, 4)):
        for name in ("embed_dim", "num_heads"):
            learner.raises(f"embed_dim={E}, num_heads={H}", (name,), NAME, E, H)


@check("the parameters are qkv (E -> 3E) and out_proj (E -> E), without biases when bias=False")
def check_parameters(learner, reference, device):
    for bias in (True, False):
        make_pair(learner, reference, 8, 2, bias=bias, device=device)


@check("output matches the reference with the same weights (float64 and float32, six shapes, with and without bias)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H) in enumerate(SHAPES):
            bias = seed % 2 == 0
            mine, ref = make_pair(learner, reference, E, H, bias=bias, dtype=dtype, device=device, seed=seed)
            x = 2 * randn(B, T, E, dtype=dtype, device=device, seed=seed)  # (B, T, E)
            compare("the output", forward(learner, mine, x), ref(x),
                    inputs=describe(x=x, num_heads=H, bias=bias), mistakes=causal_mistakes(ref, x, H))


@check("changing the tokens after position t leaves outputs 0 .. t unchanged (every t)")
def check_future_does_not_matter(learner, reference, device):
    B, T, E, H = 2, 6, 8, 2
    mine, ref = make_pair(learner, reference, E, H, device=device, seed=7)
    x = 2 * randn(B, T, E, device=device, seed=70)  # (B, T, E)
    out = forward(learner, mine, x)
    if out.shape == x.shape and not torch.isfinite(out).all():
        where = [int(i) for i in (~torch.isfinite(out)).nonzero()[0]]
        fail_naming(f"the output is {out[tuple(where)].item()} at [batch, position, feature] = {where} for x "
                    f"{tuple(x.shape)}, num_heads={H}, float64: is a query left with no key it may attend to? Query "
                    "t must see keys 0 .. t, itself included.", out, causal_mistakes(ref, x, H))
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1:] = 5 * randn(B, T - t - 1, E, device=device, seed=71 + t)  # a very different future
        out_changed = forward(learner, mine, changed)
        if out_changed.shape != out.shape or out.shape != x.shape:
            fail(f"the output has shape {tuple(out_changed.shape)} for x {tuple(x.shape)}; expected (B, T, E) = "
                 f"{tuple(x.shape)}.")
        got, want = out_changed[:, : t + 1], out[:, : t + 1]
        if not torch.allclose(got, want, rtol=1e-7, atol=1e-9):
            diff = (got - want).abs()
            where = [int(i) for i in (diff == diff.max()).nonzero()[0]]
            fail_naming(f"information leaks from the future: replacing the tokens after position {t} changed the "
                        f"output at [batch, position, feature] = {where} by {diff.max().item():.3g} "
                        f"(x {tuple(x.shape)}, num_heads={H}, float64). Query t may attend to keys 0 .. t only.",
                        out, causal_mistakes(ref, x, H))


@check("the gradient of output t with respect to every later input is exactly zero")
def check_zero_gradient_to_future(learner, reference, device):
    B, T, E, H = 2, 6, 8, 2
    mine, ref = make_pair(learner, reference, E, H, device=device, seed=8)
    x = (2 * randn(B, T, E, device=device, seed=80)).requires_grad_()  # (B, T, E)
    out = forward(learner, mine, x)
    if out.shape != x.shape:
        fail(f"the output has shape {tuple(out.shape)} for x {tuple(x.shape)}; expected (B, T, E) = {tuple(x.shape)}.")
    if not out.requires_grad:
        fail(f"the output is cut off from x's graph (no grad_fn) for x {tuple(x.shape)}: do not detach.")
    for t in range(T):
        weight = randn(B, E, device=device, seed=81 + t)
        (grad,) = torch.autograd.grad((out[:, t] * weight).sum(), x, retain_graph=True, allow_unused=True)
        if grad is None or not grad[:, : t + 1].abs().sum() > 0:
            fail(f"output {t} has no gradient with respect to x[:, :{t + 1}] (x {tuple(x.shape)}): "
                 "is part of the computation detached?")
        later = grad[:, t + 1:]
        if later.numel() and torch.count_nonzero(later) > 0:
            where = [int(i) for i in later.nonzero()[0]]
            where[1] += t + 1
            fail_naming(f"the gradient of output {t} with respect to x at [batch, position, feature] = {where} is "
                        f"{grad[tuple(where)].item():.3g}, not exactly 0 (x {tuple(x.shape)}, num_heads={H}, "
                        f"float64): position {t} must not depend on any later position, not even a little. Fill "
                        "the forbidden scores with -inf before the softmax.", out, causal_mistakes(ref, x, H))


@check("output matches nn.MultiheadAttention(batch_first=True) under a causal mask, with the same weights")
def check_matches_builtin(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, bias) in enumerate([(2, 5, 8, 2, True), (3, 4, 6, 3, False), (1, 7, 4, 1, True)]):
            mine, ref = make_pair(learner, reference, E, H, bias=bias, dtype=dtype, device=device, seed=20 + seed)
            mha = builtin_multihead(H, ref.qkv.weight, ref.qkv.bias, ref.out_proj.weight, ref.out_proj.bias)
            x = 2 * randn(B, T, E, dtype=dtype, device=device, seed=90 + seed)  # (B, T, E)
            # nn.MultiheadAttention's boolean attn_mask has the opposite polarity: True = NOT allowed.
            not_allowed = torch.ones(T, T, dtype=torch.bool, device=device).triu(diagonal=1)  # (T, T)
            with torch.no_grad():
                expected, _ = mha(x, x, x, attn_mask=not_allowed, need_weights=False)  # (B, T, E)
            compare("the output", forward(learner, mine, x), expected,
                    inputs=describe(x=x, num_heads=H, bias=bias) + "; compared with nn.MultiheadAttention given "
                    "in_proj_weight = qkv.weight, in_proj_bias = qkv.bias, your out_proj, and attn_mask = "
                    "triu(ones(T, T), 1) (its boolean mask means True = NOT allowed, the opposite of ours)",
                    mistakes=causal_mistakes(ref, x, H))


@check("heads are split with view(B, T, H, D).transpose(1, 2) and merged back (E = 8 with H = 1, 2, 4, 8)")
def check_heads(learner, reference, device):
    for H in (1, 2, 4, 8):
        mine, ref = make_pair(learner, reference, 8, H, device=device, seed=30 + H)
        x = 2 * randn(2, 5, 8, device=device, seed=40 + H)  # (B, T, E)
        compare("the output", forward(learner, mine, x), ref(x), inputs=describe(x=x, num_heads=H),
                mistakes=causal_mistakes(ref, x, H))


@check("gradients with respect to x and every parameter match the reference")
def check_gradients(learner, reference, device):
    for bias in (True, False):
        mine, ref = make_pair(learner, reference, 8, 2, bias=bias, device=device, seed=50)
        x = (2 * randn(2, 5, 8, device=device, seed=51)).requires_grad_()  # (B, T, E)
        weight = randn(2, 5, 8, device=device, seed=52)
        out = forward(learner, mine, x)
        if not out.requires_grad:
            fail(f"the output is cut off from the graph (no grad_fn) for x {tuple(x.shape)}: do not detach.")
        if out.shape != x.shape:
            fail(f"the output has shape {tuple(out.shape)} for x {tuple(x.shape)}; expected {tuple(x.shape)}.")
        (grad_x,) = torch.autograd.grad((out * weight).sum(), x, retain_graph=True)
        (out * weight).sum().backward()
        expect_every_parameter_has_grad(NAME, mine)
        (want_x,) = torch.autograd.grad((ref(x) * weight).sum(), x)
        (ref(x) * weight).sum().backward()
        inputs = describe(x=x, num_heads=2, bias=bias)
        compare("the gradient with respect to x", grad_x, want_x, inputs=inputs)
        got_params = dict(mine.named_parameters())
        for name, parameter in ref.named_parameters():
            compare(f"the gradient of {name}", got_params[name].grad, parameter.grad, inputs=inputs)


@check("dropout acts in training mode only: eval() is deterministic and equals the dropout-free output")
def check_dropout(learner, reference, device):
    mine, ref = make_pair(learner, reference, 8, 2, device=device, seed=60, dropout=0.5)
    x = 2 * randn(2, 6, 8, device=device, seed=61)  # (B, T, E)
    inputs = describe(x=x, num_heads=2, dropout=0.5)
    mine.eval()
    first, second = forward(learner, mine, x), forward(learner, mine, x)
    expected = ref(x)
    if not torch.equal(first.nan_to_num(0.5), second.nan_to_num(0.5)):
        fail(f"in eval() mode two calls gave different outputs for {inputs}: dropout must be off in eval mode "
             "(use nn.Dropout, or F.dropout(..., training=self.training)).\n"
             f"Your output equals {DROPOUT_IN_EVAL.says}.", DROPOUT_IN_EVAL.key)
    compare("the output in eval() mode", first, expected, inputs=inputs, mistakes=causal_mistakes(ref, x, 2))
    mine.train()
    torch.manual_seed(0)
    if torch.equal(forward(learner, mine, x), forward(learner, mine, x)):
        fail(f"in training mode with dropout=0.5 two calls gave identical outputs for {inputs}: apply dropout to "
             "the attention weights while training.")


@check("T = 1 and B = 1: a single token attends only to itself")
def check_single_token(learner, reference, device):
    for dtype in DTYPES:
        for B, T in ((1, 1), (3, 1), (1, 5)):
            mine, ref = make_pair(learner, reference, 6, 2, dtype=dtype, device=device, seed=9)
            x = 2 * randn(B, T, 6, dtype=dtype, device=device, seed=90 + B + T)  # (B, T, E)
            inputs = describe(x=x, num_heads=2)
            out = forward(learner, mine, x)
            if T == 1:  # softmax over one key is 1: the output is out_proj(v)
                with torch.no_grad():
                    v = F.linear(x, ref.qkv.weight[12:], ref.qkv.bias[12:])  # (B, 1, E)
                    expected = F.linear(v, ref.out_proj.weight, ref.out_proj.bias)  # (B, 1, E)
                compare("the output (which must be out_proj(v) for a single token)", out, expected, inputs=inputs,
                        mistakes=causal_mistakes(ref, x, 2))
            else:
                compare("the output", out, ref(x), inputs=inputs, mistakes=causal_mistakes(ref, x, 2))
