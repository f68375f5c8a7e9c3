"""Hidden checks for ex2: multi-head attention."""

import math

import torch

from attn_drill.checks.harness import (
    DTYPES, Mistake, builtin_multihead, check, compare, compare_gradients, copy_parameters, describe,
    expect_every_parameter_has_grad, expect_tensor, expect_tuple, fail, fail_naming, randn, random_mask,
    require_defined,
)
from attn_drill.checks.mistakes import ATTENTION_VARIANTS, MASK_INVERTED, attention

SPLIT_NO_TRANSPOSE = Mistake(
    "heads-split-without-transpose",
    "multi-head attention whose heads were split with view(B, H, T, D) and no transpose: "
    "split as view(B, T, H, D).transpose(1, 2)")
MERGE_NO_TRANSPOSE = Mistake(
    "heads-merged-without-transpose",
    "multi-head attention whose heads were merged with view(B, L, E) straight from (B, H, L, D): "
    "transpose(1, 2) first")
SCALE_BY_EMBED = Mistake("scale-by-embed-dim", "multi-head attention scaled by 1/sqrt(E) instead of 1/sqrt(D), the head width")
MHA_MASK_POLARITY = Mistake(
    "mask-inverted",
    "attention with the mask inverted. nn.MultiheadAttention's boolean masks mean True = NOT allowed; "
    "this exercise (like scaled_dot_product_attention) uses True = may attend")

# (B, L, S, E, H): batch 1, length 1, L != S, odd head width, one head.
SHAPES = [(1, 1, 1, 4, 2), (2, 5, 5, 6, 3), (3, 4, 4, 8, 1), (2, 3, 7, 12, 4), (1, 6, 2, 10, 2)]


def modules(learner, reference, E, H, dtype, device, seed=0, **options):
    """The learner's module and the reference, with the same weights, in eval mode."""
    torch.manual_seed(seed)
    ref = reference.MultiHeadAttention(E, H, **options).to(device=device, dtype=dtype).eval()
    mine = learner.new("MultiHeadAttention", E, H, **options)
    copy_parameters("MultiHeadAttention", mine, ref)
    return mine.to(device=device, dtype=dtype).eval(), ref


def forward(learner, module, *args, **kwargs):
    result = learner.run(module, *args, **kwargs)
    out, weights = expect_tuple(result, 2, "MultiHeadAttention.forward")
    return expect_tensor(out, "out"), weights


def variant(ref, query, key, value, mask=None, *, split_view=False, merge_view=False, embed_scale=False, **switches):
    """The reference module's forward pass with one classic mistake switched on."""
    B, L, E = query.shape
    S, H = key.size(1), ref.num_heads
    D = E // H

    def split(x, T):  # (B, T, E) -> (B, H, T, D)
        return x.reshape(B, H, T, D) if split_view else x.view(B, T, H, D).transpose(1, 2)

    q, k, v = split(ref.q_proj(query), L), split(ref.k_proj(key), S), split(ref.v_proj(value), S)
    result = attention(q, k, v, mask, 1 / math.sqrt(E) if embed_scale else None, **switches)
    if result is None:
        return None
    heads, weights = result  # (B, H, L, D), (B, H, L, S)
    merged = heads.reshape(B, L, E) if merge_view else heads.transpose(1, 2).reshape(B, L, E)
    return ref.out_proj(merged), weights


def mha_mistakes(ref, query, key, value, mask=None, part=0):
    """Known multi-head mistakes on these inputs, each computing the output it would give."""
    switches = [(SPLIT_NO_TRANSPOSE, {"split_view": True}), (MERGE_NO_TRANSPOSE, {"merge_view": True}),
                (SCALE_BY_EMBED, {"embed_scale": True})]
    switches += [(MHA_MASK_POLARITY if m is MASK_INVERTED else m, s) for m, s in ATTENTION_VARIANTS
                 if mask is not None or not m.key.startswith("mask")]

    def thunk(options):
        def compute():
            with torch.no_grad():
                result = variant(ref, query, key, value, mask, **options)
            return None if result is None else result[part]
        return compute

    return [(mistake, thunk(options)) for mistake, options in switches]


@check("your file imports and defines MultiHeadAttention")
def check_defines(learner):
    require_defined(learner)


@check("q_proj, k_proj, v_proj and out_proj are nn.Linear(E, E), with or without bias")
def check_parameters(learner, reference, device):
    for bias in (True, False):
        module = learner.new("MultiHeadAttention", 12, 4, bias=bias)
        expected = reference.MultiHeadAttention(12, 4, bias=bias)
        copy_parameters(f"MultiHeadAttention(12, 4, bias={bias})", module, expected)
        count = sum(p.numel() for p in module.parameters())
        want = sum(p.numel() for p in expected.parameters())
        if count != want:
            fail(f"MultiHeadAttention(12, 4, bias={bias}) has {count} parameters, expected {want} "
                 f"(4 E^2{' + 4 E' if bias else ''}).")


@check("embed_dim not divisible by num_heads raises ValueError naming both")
def check_indivisible(learner):
    learner.raises("embed_dim 10 and num_heads 4", ("embed_dim", "num_heads"), "MultiHeadAttention", 10, 4)


@check("self-attention matches the reference (float64 and float32, five shapes)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, L, _, E, H) in enumerate(SHAPES):
            mine, ref = modules(learner, reference, E, H, dtype, device, seed=seed)
            x = randn(B, L, E, dtype=dtype, device=device, seed=seed)  # (B, L, E)
            out, _ = forward(learner, mine, x)
            compare("out", out, ref(x)[0], inputs=describe(x=x, num_heads=H), mistakes=mha_mistakes(ref, x, x, x))


@check("cross-attention (L != S) with a mask matches the reference, weights included")
def check_cross_attention(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, L, S, E, H) in enumerate(SHAPES):
            mine, ref = modules(learner, reference, E, H, dtype, device, seed=10 + seed)
            query = randn(B, L, E, dtype=dtype, device=device, seed=20 + seed)   # (B, L, E)
            memory = randn(B, S, E, dtype=dtype, device=device, seed=30 + seed)  # (B, S, E)
            mask = random_mask(B, 1, L, S, device=device, seed=seed)             # (B, 1, L, S)
            out, weights = forward(learner, mine, query, memory, memory, mask=mask, need_weights=True)
            expected_out, expected_weights = ref(query, memory, memory, mask=mask, need_weights=True)
            inputs = describe(query=query, key=memory, value=memory, mask=mask, num_heads=H)
            compare("weights", weights, expected_weights, inputs=inputs,
                    mistakes=mha_mistakes(ref, query, memory, memory, mask, part=1))
            compare("out", out, expected_out, inputs=inputs, mistakes=mha_mistakes(ref, query, memory, memory, mask))


@check("matches torch.nn.MultiheadAttention with the same weights (mask polarity converted)")
def check_matches_builtin(learner, reference, device):
    B, L, S, E, H = 2, 4, 6, 8, 2
    for dtype in DTYPES:
        mine, ref = modules(learner, reference, E, H, dtype, device, seed=5)
        builtin = builtin_multihead(H, torch.cat([ref.q_proj.weight, ref.k_proj.weight, ref.v_proj.weight]),
                                    torch.cat([ref.q_proj.bias, ref.k_proj.bias, ref.v_proj.bias]),
                                    ref.out_proj.weight, ref.out_proj.bias)
        query = randn(B, L, E, dtype=dtype, device=device, seed=40)
        memory = randn(B, S, E, dtype=dtype, device=device, seed=41)
        mask = random_mask(L, S, device=device, seed=42)  # True = may attend
        # nn.MultiheadAttention's boolean attn_mask means True = NOT allowed: invert it.
        expected_out, expected_weights = builtin(query, memory, memory, attn_mask=~mask, average_attn_weights=False)
        out, weights = forward(learner, mine, query, memory, memory, mask=mask, need_weights=True)
        inputs = describe(query=query, key=memory, mask=mask, num_heads=H)
        compare("out", out, expected_out, inputs=inputs, mistakes=mha_mistakes(ref, query, memory, memory, mask))
        compare("weights", weights, expected_weights, inputs=inputs)


@check("weights: None unless need_weights; rows sum to 1; masked keys and fully-masked rows get 0, never NaN")
def check_weights(learner, reference, device):
    mine, ref = modules(learner, reference, 8, 2, torch.float64, device, seed=6)
    x = randn(2, 5, 8, device=device, seed=50)
    _, weights = forward(learner, mine, x)
    if weights is not None:
        fail(f"forward returned weights for need_weights=False; return None then (got {type(weights).__name__}).")
    mask = random_mask(2, 1, 5, 5, device=device, seed=51)
    mask[:, :, 3] = False  # query 3 may attend to nothing
    out, weights = forward(learner, mine, x, mask=mask, need_weights=True)
    weights = expect_tensor(weights, "weights")
    inputs = describe(x=x, mask=mask, num_heads=2) + ", row 3 fully masked"
    if torch.isnan(out).any() or torch.isnan(weights).any():
        fail(f"out or weights has NaN for {inputs}: a fully-masked row must give zero weights.")
    expected_out, expected_weights = ref(x, mask=mask, need_weights=True)
    compare("weights", weights, expected_weights, inputs=inputs, mistakes=mha_mistakes(ref, x, x, x, mask, part=1))
    sums = weights.detach().sum(-1)[:, :, [0, 1, 2, 4]]
    if (sums - 1).abs().max() > 1e-9:
        fail_naming(f"weights rows do not sum to 1 for {inputs}.", weights, mha_mistakes(ref, x, x, x, mask, part=1))
    compare("out", out, expected_out, inputs=inputs)


@check("key and value default to the query")
def check_defaults(learner, reference, device):
    mine, _ = modules(learner, reference, 6, 3, torch.float64, device, seed=7)
    x = randn(2, 4, 6, device=device, seed=60)
    compare("forward(x)", forward(learner, mine, x)[0], forward(learner, mine, x, x, x)[0].detach(),
            inputs=describe(x=x) + ", against forward(x, x, x)")


@check("large logits (about 1e4) give finite, correct results")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        mine, ref = modules(learner, reference, 8, 2, dtype, device, seed=8)
        x = randn(2, 5, 8, dtype=dtype, device=device, seed=70) * 300  # scores of order 1e4
        out, _ = forward(learner, mine, x)
        if not torch.isfinite(out).all():
            fail(f"out overflows to inf/NaN for {describe(x=x)} with scores near 1e4: use a stable softmax.")
        compare("out", out, ref(x)[0], inputs=describe(x=x) + ", scores near 1e4")


@check("gradients match the reference and every parameter gets one")
def check_gradients(learner, reference, device):
    mine, ref = modules(learner, reference, 8, 2, torch.float64, device, seed=9)
    query = randn(2, 4, 8, device=device, seed=80, requires_grad=True)
    memory = randn(2, 6, 8, device=device, seed=81, requires_grad=True)
    mask = random_mask(2, 1, 4, 6, device=device, seed=82)
    inputs = describe(query=query, key=memory, mask=mask)
    out, _ = forward(learner, mine, query, memory, memory, mask=mask)
    compare_gradients(out, ref(query, memory, memory, mask=mask)[0], {"query": query, "key and value": memory},
                      inputs=inputs)
    mine.zero_grad()
    forward(learner, mine, query, memory, memory, mask=mask)[0].square().sum().backward()
    expect_every_parameter_has_grad("MultiHeadAttention", mine)


@check("dropout acts on the weights in training mode only")
def check_dropout(learner, reference, device):
    mine, ref = modules(learner, reference, 8, 2, torch.float64, device, seed=10, dropout=0.5)
    x = randn(2, 6, 8, device=device, seed=90)
    evaluated = forward(learner, mine, x)[0]
    compare("out in eval mode with dropout=0.5", evaluated, ref(x)[0], inputs=describe(x=x))
    mine.train()
    torch.manual_seed(0)
    trained = forward(learner, mine, x)[0]
    if torch.allclose(trained, evaluated):
        fail("with dropout=0.5 in training mode the output equals eval mode: apply dropout to the "
             "attention weights when self.training is True (nn.Dropout does this).")
    plain, _ = modules(learner, reference, 8, 2, torch.float64, device, seed=10, dropout=0.0)
    plain.train()
    compare("out in training mode with dropout=0.0", forward(learner, plain, x)[0], ref(x)[0], inputs=describe(x=x))
