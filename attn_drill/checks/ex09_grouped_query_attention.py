"""Hidden checks for ex9: grouped-query attention (GQA), with multi-query and multi-head as its ends."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attn_drill.checks.harness import (
    DTYPES, Mistake, builtin_multihead, check, compare, copy_parameters, describe, expect_every_parameter_has_grad,
    expect_tensor, fail, randn, random_mask, require_defined,
)
from attn_drill.checks.mistakes import ATTENTION_VARIANTS, attention

KV_REPEAT_ORDER = Mistake(
    "kv-repeat-order",
    "grouped-query attention with the kv heads repeated in the wrong order (repeat instead of "
    "repeat_interleave): query head h must use kv head h // (H / H_kv), so consecutive query heads share one")
HEADS_NO_TRANSPOSE = Mistake(
    "heads-split-without-transpose",
    "attention with the heads split without a transpose: view (B, T, E) as (B, T, H, D), then "
    "transpose(1, 2) to (B, H, T, D); a direct view to (B, H, T, D) mixes time steps and heads")
MERGE_NO_TRANSPOSE = Mistake(
    "heads-merged-without-transpose",
    "attention whose heads were merged with view(B, T, E) straight from (B, H, T, D): transpose(1, 2) first")

# (E, H, H_kv, B, T, bias): real groups (1 < H_kv < H), MQA, MHA, batch 1, length 1, odd sizes.
CONFIGS = [(8, 4, 2, 2, 5, False), (12, 6, 3, 1, 4, True), (6, 3, 1, 3, 4, False), (8, 2, 2, 2, 3, True),
           (16, 8, 2, 2, 6, False), (12, 6, 2, 2, 1, True)]


# ---------------------------------------------------------------------------------------
# GQA computed in the check from the reference's parameters, with switches for mistakes


def gqa(x, params, num_heads, num_kv_heads, mask=None, *, kv_order="interleave", split="transpose",
        merge="transpose", **switches):
    """Grouped-query attention from a state dict; the keywords reproduce known mistakes.

    kv_order "interleave" (right) or "repeat"; split/merge "transpose" (right) or "view".
    """
    B, T, E = x.shape
    H, H_kv, D = num_heads, num_kv_heads, E // num_heads

    def project(name):
        return F.linear(x, params[f"{name}.weight"], params.get(f"{name}.bias"))  # (B, T, heads * D)

    def heads(t, n):
        if split == "transpose":
            return t.view(B, T, n, D).transpose(1, 2)  # (B, n, T, D)
        return t.reshape(B, n, T, D)                   # (B, n, T, D), time and heads mixed

    q, k, v = heads(project("q_proj"), H), heads(project("k_proj"), H_kv), heads(project("v_proj"), H_kv)
    group = H // H_kv
    if kv_order == "interleave":
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, T, D)
    else:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)                    # (B, H, T, D)
    result = attention(q, k, v, mask, **switches)
    if result is None:
        return None  # the mistake cannot run on these shapes
    y = result[0]                                                                     # (B, H, T, D)
    y = y.transpose(1, 2).reshape(B, T, E) if merge == "transpose" else y.reshape(B, T, E)
    return F.linear(y, params["out_proj.weight"], params.get("out_proj.bias"))     # (B, T, E)


def gqa_mistakes(x, params, num_heads, num_kv_heads, mask=None):
    """Candidate mistakes for grouped-query attention on these inputs and weights."""
    variants = [(KV_REPEAT_ORDER, {"kv_order": "repeat"}),
                (HEADS_NO_TRANSPOSE, {"split": "view", "merge": "view"}),
                (HEADS_NO_TRANSPOSE, {"split": "view"}),
                (MERGE_NO_TRANSPOSE, {"merge": "view"})]
    variants += [(m, s) for m, s in ATTENTION_VARIANTS if mask is not None or not m.key.startswith("mask")]
    candidates = []
    for mistake, switches in variants:
        def compute(switches=switches):
            with torch.no_grad():
                return gqa(x.detach(), params, num_heads, num_kv_heads, mask, **switches)

        candidates.append((mistake, compute))
    return candidates


# ---------------------------------------------------------------------------------------
# Building the learner's module with the reference's (random) weights


def build(learner, reference, config, dtype, device, seed=0):
    """(learner module, reference module, parameters) with the same random weights."""
    E, H, H_kv, _, _, bias = config
    ref = reference.GroupedQueryAttention(E, H, H_kv, bias=bias)
    with torch.no_grad():
        for i, parameter in enumerate(ref.parameters()):
            parameter.copy_(randn(*parameter.shape, seed=1000 + 17 * seed + i) / math.sqrt(E))
    ref = ref.to(dtype=dtype, device=device)
    module = learner.new("GroupedQueryAttention", E, H, H_kv, bias=bias)
    if not isinstance(module, nn.Module):
        fail(f"GroupedQueryAttention(...) should be a torch.nn.Module, got {type(module).__name__}.")
    module.to(dtype=dtype, device=device)
    copy_parameters(f"GroupedQueryAttention({E}, {H}, {H_kv}, bias={bias})", module, ref)
    params = {name: p.detach() for name, p in ref.named_parameters()}
    return module, ref, params


def forward(learner, module, x, mask=None):
    out = learner.run(module, x, mask=mask, what="GroupedQueryAttention.forward")
    return expect_tensor(out, "GroupedQueryAttention.forward(x)")


def label(config, x, mask=None):
    E, H, H_kv, _, _, bias = config
    return f"embed_dim={E}, num_heads={H}, num_kv_heads={H_kv}, bias={bias}, " + describe(x=x, mask=mask)


def masks_for(B, T, device, seed):
    """No mask, a (T, T) mask and a per-batch (B, 1, T, T) mask, both polarities present."""
    return [None, random_mask(T, T, device=device, seed=seed), random_mask(B, 1, T, T, device=device, seed=seed + 1)]


def split_heads(t, n):
    B, T, W = t.shape
    return t.view(B, T, n, W // n).transpose(1, 2)  # (B, n, T, D)


# ---------------------------------------------------------------------------------------
# The checks


@check("your file imports and defines GroupedQueryAttention")
def check_defines(learner):
    require_defined(learner)


@check("out matches the reference with the same weights (float64 and float32, six shapes, with masks)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, config in enumerate(CONFIGS):
            E, H, H_kv, B, T, _ = config
            module, ref, params = build(learner, reference, config, dtype, device, seed=seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            for mask in masks_for(B, T, device, seed):
                out = forward(learner, module, x, mask)
                with torch.no_grad():
                    expected = ref(x, mask=mask)
                compare("out", out, expected, inputs=label(config, x, mask),
                        mistakes=gqa_mistakes(x, params, H, H_kv, mask))


@check("num_kv_heads = num_heads is ordinary multi-head attention (and matches nn.MultiheadAttention)")
def check_multi_head(learner, reference, device):
    for dtype in DTYPES:
        config = (12, 4, 4, 2, 5, True)
        E, H, _, B, T, _ = config
        module, _, p = build(learner, reference, config, dtype, device, seed=7)
        x = randn(B, T, E, dtype=dtype, device=device, seed=70)  # (B, T, E)
        mask = random_mask(T, T, device=device, seed=71)          # (T, T), True = may attend
        out = forward(learner, module, x, mask)
        inputs = label(config, x, mask)
        with torch.no_grad():
            # plain multi-head attention: every query head has its own key/value head
            q, k, v = (split_heads(F.linear(x, p[f"{n}.weight"], p[f"{n}.bias"]), H) for n in ("q_proj", "k_proj", "v_proj"))
            y = attention(q, k, v, mask)[0].transpose(1, 2).reshape(B, T, E)   # (B, T, E)
            expected = F.linear(y, p["out_proj.weight"], p["out_proj.bias"])  # (B, T, E)
        compare("out (multi-head case)", out, expected, inputs=inputs, mistakes=gqa_mistakes(x, p, H, H, mask))

        mha = builtin_multihead(H, torch.cat([p["q_proj.weight"], p["k_proj.weight"], p["v_proj.weight"]]),
                                torch.cat([p["q_proj.bias"], p["k_proj.bias"], p["v_proj.bias"]]),
                                p["out_proj.weight"], p["out_proj.bias"])
        with torch.no_grad():
            # nn.MultiheadAttention's boolean mask has the opposite polarity: True = may NOT attend
            builtin, _ = mha(x, x, x, attn_mask=~mask, need_weights=False)
        compare("out against nn.MultiheadAttention (its mask polarity converted: True = not allowed)",
                out, builtin, inputs=inputs)


@check("num_kv_heads = 1 is multi-query attention: every query head uses the single key/value head")
def check_multi_query(learner, reference, device):
    for dtype in DTYPES:
        config = (12, 6, 1, 2, 5, False)
        E, H, _, B, T, _ = config
        module, _, p = build(learner, reference, config, dtype, device, seed=8)
        x = randn(B, T, E, dtype=dtype, device=device, seed=80)  # (B, T, E)
        mask = random_mask(B, 1, T, T, device=device, seed=81)
        out = forward(learner, module, x, mask)
        with torch.no_grad():
            q = split_heads(F.linear(x, p["q_proj.weight"]), H)      # (B, H, T, D)
            k = F.linear(x, p["k_proj.weight"]).unsqueeze(1)          # (B, 1, T, D), shared by all heads
            v = F.linear(x, p["v_proj.weight"]).unsqueeze(1)          # (B, 1, T, D)
            y = attention(q, k, v, mask)[0].transpose(1, 2).reshape(B, T, E)  # (B, T, E)
            expected = F.linear(y, p["out_proj.weight"])             # (B, T, E)
        compare("out (multi-query case)", out, expected, inputs=label(config, x, mask),
                mistakes=gqa_mistakes(x, p, H, 1, mask))


@check("matches torch's grouped-query path: scaled_dot_product_attention(..., enable_gqa=True)")
def check_matches_torch_gqa(learner, reference, device):
    for dtype in DTYPES:
        for seed, config in enumerate([(16, 8, 2, 2, 6, True), (12, 6, 3, 1, 5, False)]):
            E, H, H_kv, B, T, _ = config
            module, _, p = build(learner, reference, config, dtype, device, seed=20 + seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=90 + seed)  # (B, T, E)
            mask = random_mask(B, 1, T, T, device=device, seed=91 + seed)
            out = forward(learner, module, x, mask)
            with torch.no_grad():
                q = split_heads(F.linear(x, p["q_proj.weight"], p.get("q_proj.bias")), H)      # (B, H, T, D)
                k = split_heads(F.linear(x, p["k_proj.weight"], p.get("k_proj.bias")), H_kv)   # (B, H_kv, T, D)
                v = split_heads(F.linear(x, p["v_proj.weight"], p.get("v_proj.bias")), H_kv)   # (B, H_kv, T, D)
                try:
                    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
                    how = "torch's scaled_dot_product_attention(enable_gqa=True)"
                except TypeError:  # torch < 2.5 has no enable_gqa: expand the kv heads as it would
                    group = H // H_kv
                    y = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1),
                                                       v.repeat_interleave(group, 1), attn_mask=mask)
                    how = "torch's scaled_dot_product_attention on kv heads expanded with repeat_interleave"
                y = y.transpose(1, 2).reshape(B, T, E)                                          # (B, T, E)
                expected = F.linear(y, p["out_proj.weight"], p.get("out_proj.bias"))           # (B, T, E)
            compare(f"out against {how}", out, expected, inputs=label(config, x, mask),
                    mistakes=gqa_mistakes(x, p, H, H_kv, mask))


@check("k_proj and v_proj project to num_kv_heads * D: the parameter count shrinks with num_kv_heads")
def check_parameter_counts(learner, device):
    for E, H, H_kv, bias in [(12, 6, 2, False), (12, 6, 3, True), (8, 4, 1, True), (8, 4, 4, False)]:
        D = E // H
        module = learner.new("GroupedQueryAttention", E, H, H_kv, bias=bias)
        what = f"GroupedQueryAttention({E}, {H}, {H_kv}, bias={bias})"
        if not isinstance(module, nn.Module):
            fail(f"{what} should be a torch.nn.Module, got {type(module).__name__}.")
        for name, out_features in (("q_proj", E), ("k_proj", H_kv * D), ("v_proj", H_kv * D), ("out_proj", E)):
            layer = getattr(module, name, None)
            if not isinstance(layer, nn.Linear):
                fail(f"{what}.{name} should be an nn.Linear, got {type(layer).__name__}.")
            if (layer.in_features, layer.out_features) != (E, out_features):
                fail(f"{what}.{name} maps {layer.in_features} -> {layer.out_features} features, expected "
                     f"{E} -> {out_features} (num_kv_heads * D = {H_kv} * {D} for keys and values).")
            if (layer.bias is not None) != bias:
                fail(f"{what}.{name} {'has no' if bias else 'has a'} bias; the bias argument decides.")
        want = 2 * E * E + 2 * E * H_kv * D + (2 * E + 2 * H_kv * D if bias else 0)
        got = sum(p.numel() for p in module.parameters())
        if got != want:
            fail(f"{what} has {got} parameters, expected {want} = 2*E*E + 2*E*(num_kv_heads*D)"
                 f"{' + biases' if bias else ''}: no parameters beyond the four projections.")


@check("a query whose keys are all masked gets zero attention output (out = out_proj's bias), no NaN")
def check_fully_masked_rows(learner, reference, device):
    config = (8, 4, 2, 2, 5, True)
    E, H, H_kv, B, T, _ = config
    module, ref, p = build(learner, reference, config, torch.float64, device, seed=30)
    x = randn(B, T, E, device=device, seed=31, requires_grad=True)  # (B, T, E)
    mask = random_mask(T, T, device=device, seed=32)
    mask[2] = False  # query 2 may attend to nothing
    inputs = label(config, x, mask) + ", row 2 fully masked"
    out = forward(learner, module, x, mask)
    if torch.isnan(out).any():
        fail(f"out has NaN for {inputs}: the softmax of a row of -inf is NaN; set those weights to 0.")
    compare("out", out, ref(x, mask=mask), inputs=inputs, mistakes=gqa_mistakes(x, p, H, H_kv, mask))
    compare("out at the fully-masked query 2", out[:, 2], p["out_proj.bias"].expand(B, E), inputs=inputs)
    (grad,) = torch.autograd.grad((out * randn(*out.shape, device=device, seed=33)).sum(), [x])
    if not torch.isfinite(grad).all():
        fail(f"the gradient of x has NaN or inf for {inputs}: a fully-masked row must not poison the "
             "backward pass (zero the NaN weights with masked_fill, not arithmetic).")


@check("large logits (about 1e4) give finite, correct results")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        config = (8, 4, 2, 2, 5, False)
        E, H, H_kv, B, T, _ = config
        module, ref, _ = build(learner, reference, config, dtype, device, seed=40)
        with torch.no_grad():
            for m in (module, ref):
                m.q_proj.weight.mul_(60.0)
                m.k_proj.weight.mul_(60.0)
        p = {name: t.detach() for name, t in ref.named_parameters()}
        x = randn(B, T, E, dtype=dtype, device=device, seed=41)  # (B, T, E)
        inputs = label(config, x) + ", scores near 1e4"
        out = forward(learner, module, x)
        if not torch.isfinite(out).all():
            fail(f"out overflows to inf/NaN for {inputs}: subtract each row's maximum before exp "
                 "(torch.softmax does this for you).")
        with torch.no_grad():
            expected = ref(x)
        compare("out", out, expected, inputs=inputs, mistakes=gqa_mistakes(x, p, H, H_kv))


@check("gradients of x and of every parameter match the reference; every parameter gets one")
def check_gradients(learner, reference, device):
    for seed, config in enumerate([(12, 6, 2, 2, 5, True), (8, 4, 1, 1, 3, False)]):
        E, H, H_kv, B, T, _ = config
        module, ref, _ = build(learner, reference, config, torch.float64, device, seed=50 + seed)
        x = randn(B, T, E, device=device, seed=51 + seed, requires_grad=True)  # (B, T, E)
        mask = random_mask(B, 1, T, T, device=device, seed=52 + seed)
        inputs = label(config, x, mask)
        weight = randn(B, T, E, device=device, seed=53 + seed)
        out = forward(learner, module, x, mask)
        if not out.requires_grad:
            fail(f"out is cut off from the graph for {inputs} (no grad_fn): do not detach or use .data.")
        (grad_x,) = torch.autograd.grad((out * weight).sum(), [x], retain_graph=True)
        (out * weight).sum().backward()
        expect_every_parameter_has_grad(f"GroupedQueryAttention({E}, {H}, {H_kv})", module)
        (want_x,) = torch.autograd.grad((ref(x, mask=mask) * weight).sum(), [x], retain_graph=True)
        (ref(x, mask=mask) * weight).sum().backward()
        compare("the gradient of x", grad_x, want_x, inputs=inputs)
        learner_params = dict(module.named_parameters())
        for name, parameter in ref.named_parameters():
            compare(f"the gradient of {name}", learner_params[name].grad, parameter.grad, inputs=inputs)


@check("head counts that do not divide raise ValueError naming the argument")
def check_bad_arguments(learner):
    learner.raises("embed_dim=10, num_heads=4 (10 is not divisible by 4)", ("embed_dim", "num_heads"),
                   "GroupedQueryAttention", 10, 4, 2)
    learner.raises("num_heads=4, num_kv_heads=3 (4 is not divisible by 3)", ("num_kv_heads",),
                   "GroupedQueryAttention", 8, 4, 3)
    learner.raises("num_heads=4, num_kv_heads=8 (more kv heads than query heads)", ("num_kv_heads",),
                   "GroupedQueryAttention", 8, 4, 8)
    learner.raises("num_kv_heads=0", ("num_kv_heads",), "GroupedQueryAttention", 8, 4, 0)
