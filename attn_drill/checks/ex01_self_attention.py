"""Hidden checks for ex1: scaled dot-product attention and self-attention."""

import torch
import torch.nn.functional as F

from attn_drill.checks.harness import (
    DTYPES, _t, check, compare, compare_gradients, describe, fail, fail_naming, mistake, randn,
    random_mask,
)
from attn_drill.checks.mistakes import attention, attention_mistakes
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    check_defines, check_static_scan, finite, outputs, rows_sum_to_one,
)

# (B, H, L, S, D, Dv); H = 0 means no head dimension. Batch 1, length 1, L != S, odd sizes, S = 1.
SHAPES = [(1, 1, 1, 3, 4, 4), (2, 3, 5, 7, 4, 6), (3, 2, 6, 6, 8, 8), (2, 1, 4, 1, 3, 5), (2, 0, 5, 3, 5, 2)]


def make_qkv(shape, dtype, device, seed=0, requires_grad=False):
    B, H, L, S, D, Dv = shape
    lead = (B, H) if H else (B,)
    q = randn(*lead, L, D, dtype=dtype, device=device, seed=seed, requires_grad=requires_grad)          # (B, H, L, D)
    k = randn(*lead, S, D, dtype=dtype, device=device, seed=seed + 1, requires_grad=requires_grad)      # (B, H, S, D)
    v = randn(*lead, S, Dv, dtype=dtype, device=device, seed=seed + 2, requires_grad=requires_grad)     # (B, H, S, Dv)
    return q, k, v


def sdpa(learner, q, k, v, **kwargs):
    return outputs(learner.call("scaled_dot_product_attention", q, k, v, **kwargs), 2,
                   "scaled_dot_product_attention()")


def self_attention(learner, x, w_q, w_k, w_v, mask=None):
    return outputs(learner.call("self_attention", x, w_q, w_k, w_v, mask=mask), 2, "self_attention()")


def compare_attention(out, weights, expected, q, k, v, mask=None, scale=None, inputs=None):
    inputs = inputs or describe(q=q, k=k, v=v, mask=mask, scale=scale)
    compare("weights", weights, expected[1], inputs=inputs, mistakes=attention_mistakes(q, k, v, mask, scale, part=1))
    compare("out", out, expected[0], inputs=inputs, mistakes=attention_mistakes(q, k, v, mask, scale))


@check("out and weights match the reference (float64 and float32, five shapes)",
       zh="out 和 weights 与参考实现一致（float64 和 float32，五种形状）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            q, k, v = make_qkv(shape, dtype, device, seed=10 * seed)
            out, weights = sdpa(learner, q, k, v)
            compare_attention(out, weights, reference.scaled_dot_product_attention(q, k, v), q, k, v)


@check("with a boolean mask, out matches torch's scaled_dot_product_attention",
       zh="使用布尔掩码时，out 与 torch 的 scaled_dot_product_attention 一致")
def check_matches_builtin(learner, device):
    for dtype in DTYPES:
        q, k, v = make_qkv((2, 3, 5, 7, 4, 6), dtype, device, seed=3)
        for mask in (random_mask(5, 7, device=device, seed=1), random_mask(2, 1, 5, 7, device=device, seed=2)):
            expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, Dv)
            out, _ = sdpa(learner, q, k, v, mask=mask)
            compare("out", out, expected, inputs=describe(q=q, k=k, v=v, mask=mask),
                    mistakes=attention_mistakes(q, k, v, mask))


@check("weights rows sum to 1 and masked keys get exactly 0",
       zh="weights 每行之和为 1，被屏蔽的 key 权重恰好为 0")
def check_weights_rows(learner, device):
    q, k, v = make_qkv((2, 3, 5, 7, 4, 6), torch.float64, device, seed=4)
    mask = random_mask(2, 1, 5, 7, device=device, seed=5)
    _, weights = sdpa(learner, q, k, v, mask=mask)
    inputs = describe(q=q, k=k, v=v, mask=mask)
    if weights.shape != (2, 3, 5, 7):
        fail(_t(f"weights have shape {tuple(weights.shape)} for {inputs}; expected (B, H, L, S) = (2, 3, 5, 7).",
                f"weights 的形状为 {tuple(weights.shape)}（输入：{inputs}）；应为 (B, H, L, S) = (2, 3, 5, 7)。"))
    candidates = attention_mistakes(q, k, v, mask, part=1)
    rows_sum_to_one(weights, inputs=inputs, mistakes=candidates)
    leaked = weights.detach()[~mask.expand_as(weights)].abs()
    if leaked.numel() and leaked.max().item() != 0:
        fail_naming(_t(f"a masked key got weight {leaked.max().item():.3g} for {inputs}: masked keys "
                       "(mask False) must get exactly 0; True means 'may attend'.",
                       f"一个被屏蔽的 key 得到了权重 {leaked.max().item():.3g}（输入：{inputs}）：被屏蔽的 key"
                       "（mask 为 False）必须恰好得到 0；True 表示“可以关注”。"), weights, candidates)


@check("a query whose keys are all masked gets zero weights, zero output and finite gradients",
       zh="key 全部被屏蔽的 query 得到全零的权重、全零的输出和有限的梯度")
def check_fully_masked_rows(learner, reference, device):
    q, k, v = make_qkv((2, 3, 5, 7, 4, 6), torch.float64, device, seed=6, requires_grad=True)
    mask = random_mask(5, 7, device=device, seed=7)
    mask[2] = False  # query 2 may attend to nothing
    out, weights = sdpa(learner, q, k, v, mask=mask)
    inputs = describe(q=q, k=k, v=v, mask=mask) + _t(", row 2 fully masked", "，第 2 行全部被屏蔽")
    finite(_t("out or weights", "out 或 weights"), (out, weights), inputs=inputs,
           advice=_t("the softmax of a row of -inf is NaN; set that row to 0.", "一整行 -inf 的 softmax 是 NaN；把这一行设为 0。"))
    expected = reference.scaled_dot_product_attention(q, k, v, mask=mask)
    compare_attention(out, weights, expected, q, k, v, mask, inputs=inputs)
    compare_gradients(learner, out, expected[0], {"q": q, "k": k, "v": v}, inputs=inputs,
                      nonfinite=_t("a fully-masked row must not poison the backward pass (mask the scores, then "
                                   "zero the NaN weights with masked_fill, not arithmetic).",
                                   "全部被屏蔽的行不能破坏反向传播（先屏蔽分数，再用 masked_fill 而不是算术运算"
                                   "把 NaN 权重置零）。"))


@check("large logits (about 1e4) give finite, correct results",
       zh="很大的 logits（约 1e4）给出有限且正确的结果")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        q, k, v = make_qkv((2, 2, 4, 6, 4, 3), dtype, device, seed=8)
        q, k = q * 100, k * 100  # scores of order 1e4
        out, weights = sdpa(learner, q, k, v)
        inputs = describe(q=q, k=k, v=v) + _t(", scores near 1e4", "，分数约为 1e4")
        finite(_t("out or weights", "out 或 weights"), (out, weights), inputs=inputs,
               advice=_t("subtract each row's maximum before exp (torch.softmax does this for you).",
                         "在 exp 之前减去每行的最大值（torch.softmax 会替你这样做）。"))
        compare_attention(out, weights, reference.scaled_dot_product_attention(q, k, v), q, k, v, inputs=inputs)


@check("an explicit scale replaces 1/sqrt(D)",
       zh="显式给出的 scale 取代 1/sqrt(D)")
def check_explicit_scale(learner, reference, device):
    q, k, v = make_qkv((2, 3, 5, 7, 4, 6), torch.float64, device, seed=9)
    out, weights = sdpa(learner, q, k, v, scale=0.37)
    expected = reference.scaled_dot_product_attention(q, k, v, scale=0.37)
    inputs = describe(q=q, k=k, v=v, scale=0.37)
    default = [(mistake("scale-ignored"), lambda: attention(q, k, v)[1])]
    compare("weights", weights, expected[1], inputs=inputs,
            mistakes=default + attention_mistakes(q, k, v, scale=0.37, part=1))
    compare("out", out, expected[0], inputs=inputs)


@check("gradients with respect to q, k and v match the reference",
       zh="对 q、k、v 的梯度与参考实现一致")
def check_gradients(learner, reference, device):
    q, k, v = make_qkv((2, 3, 5, 7, 4, 6), torch.float64, device, seed=11, requires_grad=True)
    mask = random_mask(5, 7, device=device, seed=12)
    inputs = describe(q=q, k=k, v=v, mask=mask)
    out, _ = sdpa(learner, q, k, v, mask=mask)
    compare_gradients(learner, out, reference.scaled_dot_product_attention(q, k, v, mask=mask)[0],
                      {"q": q, "k": k, "v": v}, inputs=inputs)


@check("self_attention projects with w_q, w_k, w_v and matches the reference (E != D, with and without a mask)",
       zh="self_attention 用 w_q、w_k、w_v 做投影，并与参考实现一致（E != D，有无掩码）")
def check_self_attention(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, D, Dv) in enumerate([(2, 5, 6, 4, 3), (1, 1, 4, 4, 4), (3, 4, 3, 5, 2)]):
            x = randn(B, T, E, dtype=dtype, device=device, seed=20 + seed)          # (B, T, E)
            w_q, w_k, w_v = (randn(E, d, dtype=dtype, device=device, seed=30 + seed + i) / E ** 0.5
                             for i, d in enumerate((D, D, Dv)))                     # (E, D), (E, D), (E, Dv)
            for mask in (None, random_mask(T, T, device=device, seed=seed)):
                out, weights = self_attention(learner, x, w_q, w_k, w_v, mask)
                expected = reference.self_attention(x, w_q, w_k, w_v, mask=mask)
                q, k, v = x @ w_q, x @ w_k, x @ w_v  # (B, T, D), (B, T, D), (B, T, Dv)
                inputs = describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask)
                compare("self_attention weights", weights, expected[1], inputs=inputs,
                        mistakes=attention_mistakes(q, k, v, mask, part=1))
                compare("self_attention out", out, expected[0], inputs=inputs,
                        mistakes=attention_mistakes(q, k, v, mask))


@check("self-attention without a mask is permutation-equivariant",
       zh="不带掩码的自注意力是置换等变的")
def check_permutation_equivariance(learner, device):
    x = randn(2, 6, 5, device=device, seed=40)                                       # (B, T, E)
    w_q, w_k, w_v = (randn(5, 4, device=device, seed=41 + i) for i in range(3))      # (E, D)
    perm = torch.tensor([3, 0, 5, 1, 4, 2], device=device)
    out, _ = self_attention(learner, x, w_q, w_k, w_v)
    out_perm, _ = self_attention(learner, x[:, perm], w_q, w_k, w_v)
    compare(_t("self_attention of the permuted tokens", "置换后 token 的 self_attention"), out_perm, out[:, perm],
            inputs=describe(x=x) + _t(", tokens permuted [3, 0, 5, 1, 4, 2]", "，token 按 [3, 0, 5, 1, 4, 2] 置换"))


@check("bad arguments raise ValueError naming the argument",
       zh="错误的参数会抛出指明该参数的 ValueError")
def check_bad_arguments(learner, device):
    def t(*shape):
        return randn(*shape, device=device)

    learner.raises(_t("q (2, 5, 4) and k (2, 7, 3) of different widths", "q (2, 5, 4) 与 k (2, 7, 3) 的宽度不同"),
                   ("q", "k"),
                   "scaled_dot_product_attention", t(2, 5, 4), t(2, 7, 3), t(2, 7, 6))
    learner.raises(_t("k (2, 7, 4) and v (2, 6, 6) of different lengths", "k (2, 7, 4) 与 v (2, 6, 6) 的长度不同"),
                   ("k", "v"),
                   "scaled_dot_product_attention", t(2, 5, 4), t(2, 7, 4), t(2, 6, 6))
    learner.raises(_t("a float mask", "float 类型的 mask"), ("mask",), "scaled_dot_product_attention",
                   t(2, 5, 4), t(2, 7, 4), t(2, 7, 6), mask=torch.ones(5, 7, device=device))
    learner.raises(_t("w_k of shape (5, 4) for E = 6", "E = 6 时形状为 (5, 4) 的 w_k"), ("w_k",), "self_attention",
                   t(2, 3, 6), t(6, 4), t(5, 4), t(6, 4))
