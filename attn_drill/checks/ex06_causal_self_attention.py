"""Hidden checks for ex6: causal multi-head self-attention with a fused qkv projection."""

import math

import torch
import torch.nn.functional as F

from attn_drill.checks.harness import DTYPES, _t, check, compare, compare_gradients, describe, fail, fail_naming, randn
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    causal_builtin, causal_builtin_note, causal_mistakes, check_defines, check_static_scan, dropout_train_only,
    eval_is_deterministic, every_parameter_learns, finite, indivisible_heads_raise, outputs, twin,
)

NAME = "CausalSelfAttention"
# (B, T, E, H): batch 1, length 1, one head, D = 1, odd sizes.
SHAPES = [(2, 5, 8, 2), (1, 1, 6, 3), (3, 7, 12, 4), (1, 4, 4, 1), (2, 6, 6, 6), (2, 3, 10, 5)]


def pair(learner, reference, E, H, *, dtype=torch.float64, device=None, seed=0, **options):
    return twin(learner, reference.CausalSelfAttention, NAME, E, H, dtype=dtype, device=device, seed=seed, **options)


def forward(learner, mine, x):
    return outputs(learner.run(mine, x), 1, f"{NAME}.forward")[0]


def leak(where, amount, *, to, x, H, out, ref):
    fail_naming(_t(f"{to} at [batch, position, feature] = {where} {amount} (x {tuple(x.shape)}, num_heads={H}, "
                   "float64). Query t may attend to keys 0 .. t only: fill the forbidden scores with -inf before the "
                   "softmax.",
                   f"{to} [batch, position, feature] = {where} 处{amount}（x {tuple(x.shape)}，num_heads={H}，"
                   "float64）。query t 只能关注 key 0 .. t：在 softmax 之前把不允许的分数填为 -inf。"),
                out, causal_mistakes(ref, x, H))


def matches(learner, reference, B, T, E, H, *, dtype=torch.float64, device=None, seed=0, gain=2.0, expect=None,
            note="", **options):
    """The learner's module and the reference agree (or ``expect(ref, x)``) on x = gain * randn (B, T, E)."""
    mine, ref = pair(learner, reference, E, H, dtype=dtype, device=device, seed=seed, **options)
    x = gain * randn(B, T, E, dtype=dtype, device=device, seed=seed + 100)  # (B, T, E)
    out, inputs = forward(learner, mine, x), describe(x=x, num_heads=H, **options) + note
    if gain > 100:
        finite(_t("the output", "输出"), [out], inputs=inputs,
               advice=_t("use a stable softmax (subtract each row's maximum).", "使用数值稳定的 softmax（减去每行的最大值）。"))
    compare(_t("the output", "输出"), out, (expect or (lambda ref, x: ref(x)))(ref, x), inputs=inputs,
            mistakes=causal_mistakes(ref, x, H))


@check("embed_dim not divisible by num_heads raises ValueError naming both",
       zh="embed_dim 不能被 num_heads 整除时抛出 ValueError，并指明这两个参数")
def check_bad_arguments(learner):
    indivisible_heads_raise(learner, NAME)


@check("the parameters are qkv (E -> 3E) and out_proj (E -> E), without biases when bias=False",
       zh="参数是 qkv（E -> 3E）和 out_proj（E -> E），bias=False 时不带 bias")
def check_parameters(learner, reference, device):
    for bias in (True, False):
        pair(learner, reference, 8, 2, bias=bias, device=device)


@check("output matches the reference with the same weights (float64 and float32, six shapes, with and without bias)",
       zh="权重相同时输出与参考实现一致（float64 和 float32，六种形状，带与不带 bias）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            matches(learner, reference, *shape, bias=seed % 2 == 0, dtype=dtype, device=device, seed=seed)


@check("changing the tokens after position t leaves outputs 0 .. t unchanged (every t)",
       zh="改变位置 t 之后的 token 不会改变输出 0 .. t（对每个 t）")
def check_future_does_not_matter(learner, reference, device):
    B, T, E, H = 2, 6, 8, 2
    mine, ref = pair(learner, reference, E, H, device=device, seed=7)
    x = 2 * randn(B, T, E, device=device, seed=70)  # (B, T, E)
    out = forward(learner, mine, x)
    if out.shape != x.shape:
        fail(_t(f"the output has shape {tuple(out.shape)} for x {tuple(x.shape)}; expected (B, T, E) = "
                f"{tuple(x.shape)}.",
                f"输出的形状为 {tuple(out.shape)}（x {tuple(x.shape)}）；应为 (B, T, E) = {tuple(x.shape)}。"))
    if not torch.isfinite(out).all():
        where = [int(i) for i in (~torch.isfinite(out)).nonzero()[0]]
        value = out[tuple(where)].item()
        leak(where, _t(f"is {value}: is a query left with no key it may attend to? Query t must see keys 0 .. t, "
                       "itself included",
                       f"为 {value}：是不是有 query 没有任何可以关注的 key？query t 必须能看到 key 0 .. t，包括它自己"),
             x=x, H=H, out=out, ref=ref, to=_t("the output", "输出在"))
    for t in range(T - 1):
        changed = torch.cat([x[:, :t + 1], 5 * randn(B, T - t - 1, E, device=device, seed=71 + t)], dim=1)  # new future
        diff = (forward(learner, mine, changed) - out)[:, :t + 1].abs().nan_to_num(math.inf)  # (B, t + 1, E)
        if diff.max() > 1e-9:
            leak([int(i) for i in (diff == diff.max()).nonzero()[0]],
                 _t(f"by {diff.max().item():.3g}", f"变化了 {diff.max().item():.3g}"), x=x, H=H, out=out, ref=ref,
                 to=_t(f"information leaks from the future: replacing the tokens after position {t} changed the output",
                       f"信息从未来泄漏了：替换位置 {t} 之后的 token 后，输出在"))


@check("the gradient of output t with respect to every later input is exactly zero",
       zh="输出 t 对其后每个输入的梯度恰好为零")
def check_zero_gradient_to_future(learner, reference, device):
    B, T, E, H = 2, 6, 8, 2
    mine, ref = pair(learner, reference, E, H, device=device, seed=8)
    x = (2 * randn(B, T, E, device=device, seed=80)).requires_grad_()  # (B, T, E)
    for t in range(T):
        out = forward(learner, mine, x)
        if out.shape != x.shape:
            fail(_t(f"the output has shape {tuple(out.shape)} for x {tuple(x.shape)}; expected {tuple(x.shape)}.",
                    f"输出的形状为 {tuple(out.shape)}（x {tuple(x.shape)}）；应为 {tuple(x.shape)}。"))
        weight = torch.zeros_like(out)
        weight[:, t] = randn(B, E, device=device, seed=81 + t)  # only output t pulls
        (grad,), _ = learner.grad([out], [weight], [x])
        if grad is None or not grad[:, : t + 1].abs().sum() > 0:
            fail(_t(f"output {t} has no gradient with respect to x[:, :{t + 1}] (x {tuple(x.shape)}): "
                    "is part of the computation detached?",
                    f"输出 {t} 对 x[:, :{t + 1}] 没有梯度（x {tuple(x.shape)}）：是不是计算的一部分被 detach 了？"))
        if torch.count_nonzero(grad[:, t + 1:]) > 0:
            where = [int(i) for i in grad[:, t + 1:].nonzero()[0]]
            where[1] += t + 1
            leak(where, _t(f"is {grad[tuple(where)].item():.3g}, not exactly 0",
                           f"为 {grad[tuple(where)].item():.3g}，而不是恰好为 0"), x=x.detach(), H=H, out=out, ref=ref,
                 to=_t(f"the gradient of output {t} with respect to x", f"输出 {t} 对 x 的梯度在"))


@check("output matches nn.MultiheadAttention(batch_first=True) under a causal mask, with the same weights",
       zh="权重相同、使用因果掩码时，输出与 nn.MultiheadAttention(batch_first=True) 一致")
def check_matches_builtin(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, bias) in enumerate([(2, 5, 8, 2, True), (3, 4, 6, 3, False), (1, 7, 4, 1, True)]):
            matches(learner, reference, B, T, E, H, bias=bias, dtype=dtype, device=device, seed=20 + seed,
                    expect=lambda ref, x: causal_builtin(ref, H, x), note=causal_builtin_note())


@check("heads are split with view(B, T, H, D).transpose(1, 2) and merged back (E = 8 with H = 1, 2, 4, 8)",
       zh="用 view(B, T, H, D).transpose(1, 2) 拆分出各个头，再合并回去（E = 8，H = 1, 2, 4, 8）")
def check_heads(learner, reference, device):
    for H in (1, 2, 4, 8):
        matches(learner, reference, 2, 5, 8, H, device=device, seed=30 + H)


@check("large logits (about 1e4) give finite, correct results",
       zh="很大的 logits（约 1e4）给出有限且正确的结果")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        matches(learner, reference, 2, 5, 8, 2, dtype=dtype, device=device, seed=35, gain=300.0,
                note=_t(", scores near 1e4", "，分数约为 1e4"))


@check("gradients with respect to x and every parameter match the reference",
       zh="对 x 和每个参数的梯度与参考实现一致")
def check_gradients(learner, reference, device):
    for bias in (True, False):
        mine, ref = pair(learner, reference, 8, 2, bias=bias, device=device, seed=50)
        x = (2 * randn(2, 5, 8, device=device, seed=51)).requires_grad_()  # (B, T, E)
        inputs = describe(x=x, num_heads=2, bias=bias)
        compare_gradients(learner, forward(learner, mine, x), ref(x), {"x": x}, inputs=inputs)
        every_parameter_learns(learner, NAME, mine, ref, lambda: forward(learner, mine, x), lambda: ref(x),
                               inputs=inputs)


@check("dropout acts in training mode only: eval() is deterministic and equals the dropout-free output",
       zh="dropout 只在训练模式下起作用：eval() 的结果是确定的，并等于不带 dropout 的输出")
def check_dropout(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=60, dropout=0.5)
    x = 2 * randn(2, 6, 8, device=device, seed=61)  # (B, T, E)
    inputs, run = describe(x=x, num_heads=2, dropout=0.5), lambda: forward(learner, mine, x)
    eval_is_deterministic(learner, _t("the output", "输出"), mine, run, inputs=inputs)
    dropout_train_only(learner, _t("the output", "输出"), mine, run, lambda: ref(x), inputs=inputs,
                       advice=_t("apply dropout to the attention weights while training (nn.Dropout does this).",
                                 "训练时对注意力权重应用 dropout（nn.Dropout 会这样做）。"))


def out_proj_of_v(ref, x):  # softmax over one key is 1: a single token's output is out_proj(v)
    E = x.size(2)
    return F.linear(F.linear(x, ref.qkv.weight[2 * E:], ref.qkv.bias[2 * E:]), ref.out_proj.weight, ref.out_proj.bias)


@check("T = 1 and B = 1: a single token attends only to itself",
       zh="T = 1 和 B = 1：单个 token 只关注它自己")
def check_single_token(learner, reference, device):
    for dtype in DTYPES:
        for B, T in ((1, 1), (3, 1), (1, 5)):
            matches(learner, reference, B, T, 6, 2, dtype=dtype, device=device, seed=9 + B + T,
                    expect=out_proj_of_v if T == 1 else None,
                    note=_t(", compared with out_proj(v)", "，对照 out_proj(v)") if T == 1 else "")
