"""Hidden checks for ex13: a buggy self-attention interview answer, debugged.

ex1's self_attention checks run as they are (imported after the two checks of every exercise,
so that they run next); the checks here each aim at one of the planted bugs.
"""

import math

import torch
import torch.nn.functional as F

from attn_drill.checks.harness import DTYPES, _t, check, compare, compare_gradients, describe, fail, fail_naming
from attn_drill.checks.harness import mistake, randn, random_mask
from attn_drill.checks.mistakes import attention, attention_mistakes
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here, in this order)
    agree, check_defines, check_static_scan, finite, masked_get_zero, outputs, rows_sum_to_one,
)
from attn_drill.checks.ex01_self_attention import (  # noqa: F401,I001  (ex1's order)
    check_self_attention, check_permutation_equivariance,
)


def project(x, w_q, w_k, w_v):
    return x @ w_q, x @ w_k, x @ w_v  # (B, T, D), (B, T, D), (B, T, Dv)


def debug_mistakes(x, w_q, w_k, w_v, mask=None, part=0):
    """Every known mistake of this exercise on these inputs: ``part`` 0 is out, 1 the weights."""
    x, w_q, w_k, w_v = (t.detach() for t in (x, w_q, w_k, w_v))
    q, k, v = project(x, w_q, w_k, w_v)
    norm, relu = (lambda t: F.layer_norm(t, t.shape[-1:])), torch.relu  # a fresh nn.LayerNorm: weight 1, bias 0

    def of(q, k, v, transform=lambda t: t, **options):
        return lambda: (transform(attention(q, k, v, mask, **options)[0]), attention(q, k, v, mask, **options)[1])[part]

    def transposed(which):  # x @ w.T for the projections in ``which``, where the shapes allow it
        ws = [w.T if name in which else w for name, w in zip("qkv", (w_q, w_k, w_v))]
        return (lambda: None) if any(w.size(0) != x.size(-1) for w in ws) else of(*project(x, *ws))

    def relu_scores():  # a ReLU on the scores before masking and the softmax
        scores = relu(q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, T, T)
        weights = torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), dim=-1)
        weights = weights if mask is None else weights.masked_fill(~mask, 0.0)
        return (weights @ v, weights)[part]

    own = [("softmax-dim", of(q, k, v, softmax_dim=0)), ("projection-wrong-weight", of(q, q, v)),  # k = x @ w_q
           ("projection-wrong-weight", of(k, k, v)), ("scale-by-embed-dim", of(q, k, v, scale=x.size(-1) ** -0.5)),
           ("fresh-layernorm", of(*project(norm(x), w_q, w_k, w_v))), ("fresh-layernorm", of(norm(q), norm(k), v)),
           ("fresh-layernorm", of(q, k, v, norm)), ("relu-in-attention", of(q, k, v, relu)),
           ("relu-in-attention", relu_scores), ("relu-in-attention", of(relu(q), relu(k), relu(v)))]
    own += [("projection-transposed", transposed(which)) for which in ("q", "k", "v", "qkv")]
    return attention_mistakes(q, k, v, mask, part=part) + [(mistake(key), compute) for key, compute in own]


def weights_of(E, D, Dv, dtype=torch.float64, device=None, seed=0, requires_grad=False):
    """w_q, w_k (E, D) and w_v (E, Dv), scaled so that scores stay of order 1."""
    return tuple((randn(E, d, dtype=dtype, device=device, seed=seed + i) / E ** 0.5).requires_grad_(requires_grad)
                 for i, d in enumerate((D, D, Dv)))


def attend(learner, x, w_q, w_k, w_v, mask=None):
    return outputs(learner.call("self_attention", x, w_q, w_k, w_v, mask=mask), 2, "self_attention()")


def expect(learner, reference, x, w_q, w_k, w_v, mask=None, *, note=""):
    """The learner's (out, weights) are finite and equal the reference's, each named by its known
    mistakes: (out, weights, expected)."""
    got, inputs = attend(learner, x, w_q, w_k, w_v, mask), describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask) + note
    finite(_t("out or weights", "out 或 weights"), got, inputs=inputs,
           advice=_t("subtract each row's maximum before exp (torch.softmax does), and set a fully-masked row's "
                     "weights to 0 (weights.masked_fill(~mask, 0.0)): its softmax is NaN.",
                     "在 exp 之前减去每行的最大值（torch.softmax 会这样做），并把全部被屏蔽的行的权重设为 0"
                     "（weights.masked_fill(~mask, 0.0)）：它的 softmax 是 NaN。"))
    expected = reference.self_attention(x, w_q, w_k, w_v, mask=mask)
    agree(("self_attention weights", "self_attention out"), got[::-1], expected[::-1], inputs=inputs,
          mistakes=lambda part: debug_mistakes(x, w_q, w_k, w_v, mask, part=1 - part))
    return (*got, expected)


@check("no fresh layers: the same inputs give the same output twice, and the function has no parameters of its own",
       zh="没有新建的层：相同的输入两次给出相同的输出，函数也没有自己的参数")
def check_no_own_parameters(learner, device):
    for dtype in DTYPES:
        x, weights = randn(2, 5, 6, dtype=dtype, device=device, seed=50), weights_of(6, 4, 3, dtype, device, seed=51)
        mask = random_mask(5, 5, device=device, seed=52)
        inputs = describe(x=x, w_q=weights[0], w_k=weights[1], w_v=weights[2], mask=mask)
        (out, _), (again, _) = attend(learner, x, *weights, mask), attend(learner, x, *weights, mask)
        if not torch.equal(out.nan_to_num(0.5), again.nan_to_num(0.5)):
            fail(_t(f"the same inputs gave a different out the second time for {inputs}: something inside the "
                    "function is random or freshly initialised (an nn.Linear created there gets new random weights "
                    "each call). Compute only from x, w_q, w_k, w_v and the mask.",
                    f"相同的输入第二次给出了不同的 out（输入：{inputs}）：函数内部有随机的或新初始化的东西（在函数里"
                    "创建的 nn.Linear 每次调用都会得到新的随机权重）。只用 x、w_q、w_k、w_v 和 mask 来计算。"))
        if out._worker_requires_grad:
            fail_naming(_t(f"out requires grad although no input does ({inputs}): something inside the function has "
                           "parameters of its own (an nn.Linear or nn.LayerNorm created there gets fresh, untrained "
                           "weights each call). Compute only from x, w_q, w_k, w_v and the mask.",
                           f"没有任何输入需要梯度，out 却 requires grad（输入：{inputs}）：函数内部有自己的参数（在"
                           "函数里创建的 nn.Linear 或 nn.LayerNorm 每次调用都会得到新的、未训练的权重）。只用 x、"
                           "w_q、w_k、w_v 和 mask 来计算。"),
                        out, debug_mistakes(x, *weights, mask))


@check("with square weights (E == D) q, k and v are x @ w_q, x @ w_k, x @ w_v, not x @ w.T (float64 and float32)",
       zh="权重为方阵（E == D）时，q、k、v 是 x @ w_q、x @ w_k、x @ w_v，而不是 x @ w.T（float64 和 float32）")
def check_square_projections(learner, reference, device):
    for dtype in DTYPES:
        x, weights = randn(2, 5, 4, dtype=dtype, device=device, seed=60), weights_of(4, 4, 4, dtype, device, seed=61)
        for mask in (None, random_mask(2, 5, 5, device=device, seed=62)):
            expect(learner, reference, x, *weights, mask)


@check("scores are divided by sqrt(D), D the query/key width (E = 6, D = 4, Dv = 3)",
       zh="分数除以 sqrt(D)，D 是 query/key 的宽度（E = 6，D = 4，Dv = 3）")
def check_scale(learner, reference, device):
    expect(learner, reference, randn(3, 4, 6, device=device, seed=70),
           *(w * 2 for w in weights_of(6, 4, 3, device=device, seed=71)))


@check("weights rows sum to 1 over the keys (dim=-1) and masked keys get exactly 0",
       zh="weights 每行沿 key（dim=-1）之和为 1，被屏蔽的 key 恰好得到 0")
def check_softmax_over_keys(learner, device):
    x, weights = randn(2, 6, 5, device=device, seed=80), weights_of(5, 3, 4, device=device, seed=81)
    mask = random_mask(2, 6, 6, device=device, seed=82)
    _, got = attend(learner, x, *weights, mask)
    inputs = describe(x=x, w_q=weights[0], w_k=weights[1], w_v=weights[2], mask=mask)
    if got.shape != (2, 6, 6):
        fail(_t(f"weights have shape {tuple(got.shape)} for {inputs}; expected (B, T, T) = (2, 6, 6).",
                f"weights 的形状为 {tuple(got.shape)}（输入：{inputs}）；应为 (B, T, T) = (2, 6, 6)。"))
    candidates = debug_mistakes(x, *weights, mask, part=1)
    rows_sum_to_one(got, inputs=inputs, mistakes=candidates)
    masked_get_zero(got, mask, inputs=inputs, mistakes=candidates)


@check("with a boolean mask, out matches torch's scaled_dot_product_attention on the projections (True = may attend)",
       zh="使用布尔掩码时，out 与 torch 的 scaled_dot_product_attention 在投影上的结果一致（True = 可以关注）")
def check_matches_builtin(learner, device):
    for dtype in DTYPES:
        x, weights = randn(2, 5, 6, dtype=dtype, device=device, seed=90), weights_of(6, 4, 3, dtype, device, seed=91)
        for mask in (random_mask(5, 5, device=device, seed=92), random_mask(2, 5, 5, device=device, seed=93)):
            compare("self_attention out", attend(learner, x, *weights, mask)[0],
                    F.scaled_dot_product_attention(*project(x, *weights), attn_mask=mask),  # (B, T, Dv)
                    inputs=describe(x=x, w_q=weights[0], w_k=weights[1], w_v=weights[2], mask=mask),
                    mistakes=debug_mistakes(x, *weights, mask))


@check("a query whose keys are all masked gets zero weights, zero output and finite gradients",
       zh="key 全部被屏蔽的 query 得到全零的权重、全零的输出和有限的梯度")
def check_fully_masked_rows(learner, reference, device):
    x = randn(2, 5, 6, device=device, seed=100, requires_grad=True)  # (B, T, E)
    weights = weights_of(6, 4, 3, device=device, seed=101, requires_grad=True)
    mask = random_mask(2, 5, 5, device=device, seed=102)
    mask[:, 2] = False  # query 2 may attend to nothing
    row = _t(", row 2 fully masked", "，第 2 行全部被屏蔽")
    out, _, expected = expect(learner, reference, x, *weights, mask, note=row)
    compare_gradients(learner, out, expected[0], dict(zip(("x", "w_q", "w_k", "w_v"), (x, *weights))),
                      inputs=describe(x=x, mask=mask) + row,
                      nonfinite=_t("a fully-masked row must not poison the backward pass (mask the scores with "
                                   "masked_fill, then zero the NaN weights with masked_fill).",
                                   "全部被屏蔽的行不能破坏反向传播（先用 masked_fill 屏蔽分数，再用 masked_fill "
                                   "把 NaN 权重置零）。"))


@check("large logits (about 1e4) give finite, correct results (float64 and float32)",
       zh="很大的 logits（约 1e4）给出有限且正确的结果（float64 和 float32）")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        x = randn(2, 4, 6, dtype=dtype, device=device, seed=110) * 40  # scores of order 1e4
        expect(learner, reference, x, *weights_of(6, 4, 3, dtype, device, seed=111),
               random_mask(4, 4, device=device, seed=112), note=_t(", scores near 1e4", "，分数约为 1e4"))


@check("nothing is applied after the weighted sum: out is linear in the values (w_v times -2 gives out times -2)",
       zh="加权和之后不再做任何变换：out 对 value 是线性的（w_v 乘以 -2 得到 out 乘以 -2）")
def check_linear_in_values(learner, device):
    x, (w_q, w_k, w_v) = randn(2, 5, 6, device=device, seed=120), weights_of(6, 4, 3, device=device, seed=121)
    mask = random_mask(5, 5, device=device, seed=122)
    compare(_t("out with w_v * -2", "w_v * -2 时的 out"), attend(learner, x, w_q, w_k, w_v * -2, mask)[0],
            attend(learner, x, w_q, w_k, w_v, mask)[0] * -2, mistakes=debug_mistakes(x, w_q, w_k, w_v * -2, mask),
            inputs=describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask) + _t(" (out = weights @ v is linear in v)",
                                                                            "（out = weights @ v 对 v 是线性的）"))


@check("gradients with respect to x, w_q, w_k and w_v match the reference",
       zh="对 x、w_q、w_k 和 w_v 的梯度与参考实现一致")
def check_gradients(learner, reference, device):
    x = randn(2, 5, 6, device=device, seed=130, requires_grad=True)  # (B, T, E)
    weights = weights_of(6, 4, 3, device=device, seed=131, requires_grad=True)
    mask = random_mask(5, 5, device=device, seed=132)
    out, _, expected = expect(learner, reference, x, *weights, mask)
    compare_gradients(learner, out, expected[0], dict(zip(("x", "w_q", "w_k", "w_v"), (x, *weights))),
                      inputs=describe(x=x, mask=mask))


@check("bad arguments raise ValueError naming the argument",
       zh="错误的参数会抛出指明该参数的 ValueError")
def check_bad_arguments(learner, device):
    x, w, w5, w3, w2 = (randn(*shape, device=device) for shape in ((2, 3, 6), (6, 4), (5, 4), (3, 6), (6, 2)))
    learner.raises(_t("w_k of shape (5, 4) for E = 6", "E = 6 时形状为 (5, 4) 的 w_k"), ("w_k",), "self_attention",
                   x, w, w5, w)
    learner.raises(_t("w_v of shape (3, 6) for E = 6", "E = 6 时形状为 (3, 6) 的 w_v"), ("w_v",), "self_attention",
                   x, w, w, w3)
    learner.raises(_t("a float mask", "float 类型的 mask"), ("mask",), "self_attention", x, w, w, w2,
                   mask=torch.ones(3, 3, device=device))
