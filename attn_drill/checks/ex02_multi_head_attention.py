"""Hidden checks for ex2: multi-head attention."""

import math

import torch

from attn_drill.checks.harness import (
    DTYPES, _t, builtin_multihead, check, compare, compare_gradients, describe, fail, mistake, randn, random_mask,
)
from attn_drill.checks.mistakes import ATTENTION_VARIANTS, attention
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    agree, check_defines, check_static_scan, dropout_train_only, every_parameter_learns, finite, outputs,
    rows_sum_to_one, twin,
)

NAME = "MultiHeadAttention"
# (B, L, S, E, H): batch 1, length 1, L != S, odd head width, one head.
SHAPES = [(1, 1, 1, 4, 2), (2, 5, 5, 6, 3), (3, 4, 4, 8, 1), (2, 3, 7, 12, 4), (1, 6, 2, 10, 2)]


def pair(learner, reference, E, H, dtype=torch.float64, device=None, seed=0, **options):
    return twin(learner, reference.MultiHeadAttention, NAME, E, H, dtype=dtype, device=device, seed=seed, **options)


def forward(learner, module, *args, **kwargs):
    out, weights = outputs(learner.run(module, *args, **kwargs), 2, f"{NAME}.forward")
    return out, weights


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
    merged = heads.reshape(B, L, E) if merge_view else heads.transpose(1, 2).reshape(B, L, E)  # (B, L, E)
    return ref.out_proj(merged), weights


def mha_mistakes(ref, query, key, value, mask=None):
    """part -> known multi-head mistakes on these inputs, each computing the output it would give."""
    switches = [(mistake("heads-split-without-transpose"), {"split_view": True}),
                (mistake("heads-merged-without-transpose"), {"merge_view": True}),
                (mistake("scale-by-embed-dim"), {"embed_scale": True})]
    switches += [(m, s) for m, s in ATTENTION_VARIANTS if mask is not None or not m.key.startswith("mask")]

    def candidates(part):
        def thunk(options):
            def compute():
                with torch.no_grad():
                    result = variant(ref, query, key, value, mask, **options)
                return None if result is None else result[part]
            return compute
        return [(known, thunk(options)) for known, options in switches]

    return candidates


@check("q_proj, k_proj, v_proj and out_proj are nn.Linear(E, E), with or without bias",
       zh="q_proj、k_proj、v_proj 和 out_proj 是 nn.Linear(E, E)（带 bias 和不带 bias 两种情况）")
def check_parameters(learner, reference):
    for bias in (True, False):
        label = f"{NAME}(12, 4, bias={bias})"
        module, expected = pair(learner, reference, 12, 4, bias=bias)
        count = sum(math.prod(shape) for shape in learner.parameters(module).values())
        want = sum(p.numel() for p in expected.parameters())
        if count != want:
            fail(_t(f"{label} has {count} parameters, expected {want} (4 E^2{' + 4 E' if bias else ''}).",
                    f"{label} 有 {count} 个参数，应为 {want} 个（4 E^2{' + 4 E' if bias else ''}）。"))


@check("embed_dim not divisible by num_heads raises ValueError naming both",
       zh="embed_dim 不能被 num_heads 整除时抛出 ValueError，并指明这两个参数")
def check_indivisible(learner):
    for name in ("embed_dim", "num_heads"):
        learner.raises(_t("embed_dim 10 and num_heads 4", "embed_dim 为 10、num_heads 为 4"), (name,), NAME, 10, 4)


@check("self-attention matches the reference (float64 and float32, five shapes)",
       zh="自注意力与参考实现一致（float64 和 float32，五种形状）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, L, _, E, H) in enumerate(SHAPES):
            mine, ref = pair(learner, reference, E, H, dtype, device, seed)
            x = randn(B, L, E, dtype=dtype, device=device, seed=seed)  # (B, L, E)
            out, _ = forward(learner, mine, x)
            compare("out", out, ref(x)[0], inputs=describe(x=x, num_heads=H),
                    mistakes=mha_mistakes(ref, x, x, x)(0))


@check("cross-attention (L != S) with a mask matches the reference, weights included",
       zh="带掩码的交叉注意力（L != S）与参考实现一致，包括 weights")
def check_cross_attention(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, L, S, E, H) in enumerate(SHAPES):
            mine, ref = pair(learner, reference, E, H, dtype, device, 10 + seed)
            query = randn(B, L, E, dtype=dtype, device=device, seed=20 + seed)   # (B, L, E)
            memory = randn(B, S, E, dtype=dtype, device=device, seed=30 + seed)  # (B, S, E)
            value = randn(B, S, E, dtype=dtype, device=device, seed=40 + seed)   # (B, S, E): key != value
            mask = random_mask(B, 1, L, S, device=device, seed=seed)             # (B, 1, L, S)
            got = forward(learner, mine, query, memory, value, mask=mask, need_weights=True)
            expected = ref(query, memory, value, mask=mask, need_weights=True)
            agree(("out", "weights"), got, expected, inputs=describe(query=query, key=memory, value=value, mask=mask,
                                                                     num_heads=H),
                  mistakes=mha_mistakes(ref, query, memory, value, mask))


@check("matches torch.nn.MultiheadAttention with the same weights (mask polarity converted)",
       zh="权重相同时与 torch.nn.MultiheadAttention 一致（掩码的极性已转换）")
def check_matches_builtin(learner, reference, device):
    B, L, S, E, H = 2, 4, 6, 8, 2
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, E, H, dtype, device, 5)
        builtin = builtin_multihead(H, torch.cat([ref.q_proj.weight, ref.k_proj.weight, ref.v_proj.weight]),
                                    torch.cat([ref.q_proj.bias, ref.k_proj.bias, ref.v_proj.bias]),
                                    ref.out_proj.weight, ref.out_proj.bias)
        query = randn(B, L, E, dtype=dtype, device=device, seed=40)
        memory = randn(B, S, E, dtype=dtype, device=device, seed=41)
        mask = random_mask(L, S, device=device, seed=42)  # True = may attend
        # nn.MultiheadAttention's boolean attn_mask means True = NOT allowed: invert it.
        expected = builtin(query, memory, memory, attn_mask=~mask, average_attn_weights=False)
        got = forward(learner, mine, query, memory, memory, mask=mask, need_weights=True)
        agree(("out", "weights"), got, expected, inputs=describe(query=query, key=memory, mask=mask, num_heads=H),
              mistakes=mha_mistakes(ref, query, memory, memory, mask))


@check("weights: None unless need_weights; rows sum to 1; masked keys and fully-masked rows get 0, never NaN",
       zh="weights：need_weights 为假时是 None；每行之和为 1；被屏蔽的 key 和全部被屏蔽的行得到 0，绝不是 NaN")
def check_weights(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=6)
    x = randn(2, 5, 8, device=device, seed=50)
    _, weights = forward(learner, mine, x)
    if weights is not None:
        fail(_t(f"forward returned weights for need_weights=False; return None then (got {type(weights).__name__}).",
                f"need_weights=False 时 forward 返回了 weights；这时应返回 None（得到的是 {type(weights).__name__}）。"))
    mask = random_mask(2, 1, 5, 5, device=device, seed=51)
    mask[:, :, 3] = False  # query 3 may attend to nothing
    got = forward(learner, mine, x, mask=mask, need_weights=True)
    inputs = describe(x=x, mask=mask, num_heads=2) + _t(", row 3 fully masked", "，第 3 行全部被屏蔽")
    finite(_t("out or weights", "out 或 weights"), got, inputs=inputs,
           advice=_t("a fully-masked row must give zero weights.", "全部被屏蔽的行必须得到全零的权重。"))
    candidates = mha_mistakes(ref, x, x, x, mask)
    rows_sum_to_one(got[1], inputs=inputs, rows=[0, 1, 2, 4], mistakes=candidates(1))
    agree(("weights", "out"), got[::-1], ref(x, mask=mask, need_weights=True)[::-1], inputs=inputs,
          mistakes=lambda part: candidates(1 - part))


@check("key defaults to the query, and value to the key",
       zh="key 默认取 query，value 默认取 key")
def check_defaults(learner, reference, device):
    mine, ref = pair(learner, reference, 6, 3, device=device, seed=7)
    x = randn(2, 4, 6, device=device, seed=60)
    memory = randn(2, 5, 6, device=device, seed=61)
    compare("forward(x)", forward(learner, mine, x)[0], ref(x, x, x)[0],
            inputs=describe(x=x) + _t(", against (x, x, x)", "，对照 (x, x, x)"))
    compare("forward(x, memory)", forward(learner, mine, x, memory)[0], ref(x, memory, memory)[0],
            inputs=describe(x=x, memory=memory) + _t(", against (x, memory, memory)", "，对照 (x, memory, memory)"))


@check("large logits (about 1e4) give finite, correct results",
       zh="很大的 logits（约 1e4）给出有限且正确的结果")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, 8, 2, dtype, device, 8)
        x = randn(2, 5, 8, dtype=dtype, device=device, seed=70) * 300  # scores of order 1e4
        inputs = describe(x=x) + _t(", scores near 1e4", "，分数约为 1e4")
        out, _ = forward(learner, mine, x)
        finite("out", [out], inputs=inputs, advice=_t("use a stable softmax (subtract each row's maximum).",
                                                      "使用数值稳定的 softmax（减去每行的最大值）。"))
        compare("out", out, ref(x)[0], inputs=inputs)


@check("gradients match the reference, and every parameter gets its gradient",
       zh="梯度与参考实现一致，且每个参数都得到了梯度")
def check_gradients(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=9)
    query = randn(2, 4, 8, device=device, seed=80, requires_grad=True)
    memory = randn(2, 6, 8, device=device, seed=81, requires_grad=True)
    mask = random_mask(2, 1, 4, 6, device=device, seed=82)
    inputs = describe(query=query, key=memory, mask=mask)
    out, _ = forward(learner, mine, query, memory, memory, mask=mask)
    compare_gradients(learner, out, ref(query, memory, memory, mask=mask)[0],
                      {"query": query, _t("key and value", "key 和 value"): memory}, inputs=inputs)
    every_parameter_learns(learner, NAME, mine, ref,
                           lambda: forward(learner, mine, query, memory, memory, mask=mask)[0],
                           lambda: ref(query, memory, memory, mask=mask)[0], inputs=inputs)


@check("dropout acts on the weights in training mode only",
       zh="dropout 只在训练模式下作用于注意力权重")
def check_dropout(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=10, dropout=0.5)
    x = randn(2, 6, 8, device=device, seed=90)
    dropout_train_only(learner, "out", mine, lambda: forward(learner, mine, x)[0], lambda: ref(x)[0],
                       inputs=describe(x=x), advice=_t("apply dropout to the attention weights when self.training "
                                                       "is True (nn.Dropout does this).",
                                                       "在 self.training 为 True 时对注意力权重应用 dropout"
                                                       "（nn.Dropout 会这样做）。"))
    plain, ref = pair(learner, reference, 8, 2, device=device, seed=10, dropout=0.0)
    learner.train(plain)
    compare(_t("out in training mode with dropout=0.0", "out（训练模式，dropout=0.0）"), forward(learner, plain, x)[0],
            ref(x)[0], inputs=describe(x=x))
