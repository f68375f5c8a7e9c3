"""Hidden checks for ex7: rotary position embedding (RoPE), half-split convention."""

import torch

from attn_drill.checks.harness import (
    DTYPES, _t, check, compare, compare_gradients, describe, expect_tensor, fail, mistake, randn,
)
from attn_drill.checks.properties import check_defines, check_static_scan  # noqa: F401  (collected here)

FN = "apply_rotary_embedding"
# Shapes of x: no leading dims, T = 1, batch and heads, D/2 odd with batch 1, D = 2, two leading dims.
SHAPES = [(5, 8), (2, 1, 4), (2, 3, 6, 8), (1, 2, 7, 6), (3, 5, 2), (2, 2, 3, 4, 10)]
SWITCHES = [("rope-adjacent-pairs", {"pairs": "adjacent"}), ("rope-rotation-reversed", {"sign": -1.0}),
            ("rope-exponent-i-over-d", {"exponent": "i"}), ("rope-frequency-inverted", {"exponent": "positive"}),
            ("rope-sin-cos-swapped", {"swap": True}), ("rope-positions-ignored", {"positions": None}),
            ("rope-base-ignored", {"base": 10000.0})]


def rope_variant(x, positions=None, base=10000.0, *, pairs="half", sign=1.0, exponent="2i", swap=False):
    """RoPE by the statement's formula in float64, real arithmetic, with switches that reproduce
    the classic mistakes; returned in x's dtype and on its device."""
    x64 = x.detach().cpu().double()
    T, D = x64.shape[-2:]
    i = torch.arange(D // 2, dtype=torch.float64)
    theta = base ** {"2i": -2 * i / D, "i": -i / D, "positive": 2 * i / D}[exponent]  # (D/2,)
    at = torch.arange(T) if positions is None else positions.cpu()  # (T,)
    angles = sign * at.double()[:, None] * theta  # (T, D/2)
    cos, sin = (angles.sin(), angles.cos()) if swap else (angles.cos(), angles.sin())
    first = torch.arange(D // 2) if pairs == "half" else torch.arange(0, D, 2)  # (D/2,)
    second = first + (D // 2 if pairs == "half" else 1)  # (D/2,): the partner of each dimension in first
    a, b = x64[..., first], x64[..., second]  # (..., T, D/2) each
    out = torch.empty_like(x64)
    out[..., first], out[..., second] = a * cos - b * sin, a * sin + b * cos
    return out.to(dtype=x.dtype, device=x.device)


def rope_complex(x, positions, base):
    """An independent RoPE: (x_i + j x_{i + D/2}) times exp(j p theta_i), with Python-float frequencies."""
    x64, half = x.detach().cpu().double(), x.size(-1) // 2
    theta = torch.tensor([base ** (-2 * i / x.size(-1)) for i in range(half)], dtype=torch.float64)  # (D/2,)
    angles = positions.cpu().double()[:, None] * theta  # (T, D/2)
    z = torch.complex(x64[..., :half], x64[..., half:]) * torch.polar(torch.ones_like(angles), angles)  # (..., T, D/2)
    return torch.cat([z.real, z.imag], dim=-1).to(dtype=x.dtype, device=x.device)


def rope_mistakes(x, positions=None, base=10000.0):
    """Known mistakes on these inputs (one that gives the right answer here is never named)."""
    return [(mistake(key), lambda s=switches: rope_variant(x, **{"positions": positions, "base": base, **s}))
            for key, switches in SWITCHES]


def rotate(learner, x, positions=None, base=None):
    kwargs = {k: v for k, v in (("positions", positions), ("base", base)) if v is not None}
    return expect_tensor(learner.call(FN, x, **kwargs), f"{FN}()")


def inputs(x, positions=None, base=None):
    at = "" if positions is None else f", positions {positions.tolist()} ({str(positions.dtype)[6:]})"
    return describe(x=x) + at + ("" if base is None else f", base={base}")


@check("matches the reference (float64 and float32; with and without batch and head dims, T = 1, D = 2)",
       zh="与参考实现一致（float64 和 float32；带与不带 batch 维和头维，T = 1，D = 2）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            x = randn(*shape, dtype=dtype, device=device, seed=seed)  # (..., T, D)
            compare("out", rotate(learner, x), reference.apply_rotary_embedding(x), inputs=inputs(x),
                    mistakes=rope_mistakes(x))


@check("custom positions and a non-default base (float64 and float32)",
       zh="自定义的 positions 和非默认的 base（float64 和 float32）")
def check_positions_and_base(learner, reference, device):
    cases = [((2, 3, 5, 8), [4, 0, 9, 2, 31], None), ((1, 6, 10), [20, 21, 22, 23, 24, 25], 500.0),
             ((2, 4, 6), [3, 3, 1, 0], 100.0), ((3, 1, 4), [17], 2.5)]
    for dtype in DTYPES:
        for seed, (shape, where, base) in enumerate(cases):
            x = randn(*shape, dtype=dtype, device=device, seed=20 + seed)  # (..., T, D)
            positions = torch.tensor(where, dtype=torch.int32 if seed == 3 else torch.long, device=device)  # (T,)
            want = reference.apply_rotary_embedding(x, positions, **({} if base is None else {"base": base}))
            compare("out", rotate(learner, x, positions, base), want, inputs=inputs(x, positions, base),
                    mistakes=rope_mistakes(x, positions, base or 10000.0))


@check("agrees with an independent complex-number rotation: dimension i pairs with i + D/2 (rotate half)",
       zh="与独立的复数旋转一致：第 i 维与第 i + D/2 维配对（rotate half）")
def check_half_split(learner, device):
    x = randn(2, 4, 12, device=device, seed=30)  # (B, T, D)
    positions = torch.tensor([0, 5, 10, 15], device=device)  # (T,)
    compare("out", rotate(learner, x, positions, 100.0), rope_complex(x, positions, 100.0),
            inputs=inputs(x, positions, 100.0) + _t(" (each pair (x_i, x_{i+D/2}) as the complex number "
                                                    "x_i + j x_{i+D/2}, times exp(j p theta_i))",
                                                    "（把每一对 (x_i, x_{i+D/2}) 看作复数 x_i + j x_{i+D/2}，"
                                                    "乘以 exp(j p theta_i)）"),
            mistakes=rope_mistakes(x, positions, 100.0))


@check("the rotation keeps the length of every vector (per position)",
       zh="旋转保持每个向量的长度（逐位置）")
def check_norms(learner, device):
    for dtype in DTYPES:
        x = randn(2, 3, 7, 8, dtype=dtype, device=device, seed=40)  # (B, H, T, D)
        positions = torch.tensor([0, 1, 2, 7, 13, 29, 40], device=device)  # (T,)
        got = rotate(learner, x, positions)
        if got.shape != x.shape:
            fail(_t(f"out has shape {tuple(got.shape)} for {inputs(x, positions)}; expected x's shape "
                    f"{tuple(x.shape)}.",
                    f"out 的形状为 {tuple(got.shape)}（输入：{inputs(x, positions)}）；应为 x 的形状 {tuple(x.shape)}。"))
        compare(_t("the length of each rotated vector, out.norm(dim=-1)", "每个旋转后向量的长度 out.norm(dim=-1)"),
                got.norm(dim=-1), x.norm(dim=-1),
                inputs=inputs(x, positions) + _t(" (a rotation must not change ||x[..., t, :]||)",
                                                 "（旋转不能改变 ||x[..., t, :]||）"))


@check("position 0 leaves x unchanged",
       zh="位置 0 使 x 保持不变")
def check_position_zero(learner, device):
    x, one = randn(2, 3, 5, 8, device=device, seed=50), randn(3, 1, 6, device=device, seed=51)  # (B, H, T, D), T = 1
    positions = torch.zeros(5, dtype=torch.long, device=device)  # (T,)
    compare(_t("out at position 0", "位置 0 处的 out"), rotate(learner, x, positions), x, inputs=inputs(x, positions),
            mistakes=rope_mistakes(x, positions))
    compare(_t("out at the default position 0 (T = 1)", "默认位置 0 处的 out（T = 1）"), rotate(learner, one), one,
            inputs=inputs(one),
            mistakes=rope_mistakes(one))


@check("q-k scores depend only on the position difference: shifting both positions by s changes nothing",
       zh="q-k 分数只取决于位置之差：两个位置同时平移 s 不改变任何结果")
def check_relative(learner, device):
    q, k = randn(2, 3, 5, 8, device=device, seed=60), randn(2, 3, 6, 8, device=device, seed=61)  # (B, H, L|S, D)
    at_q = torch.tensor([0, 2, 3, 7, 11], device=device)  # (L,) positions m
    at_k = torch.tensor([1, 4, 5, 6, 9, 12], device=device)  # (S,) positions n
    scores = rotate(learner, q, at_q) @ rotate(learner, k, at_k).transpose(-2, -1)  # (B, H, L, S)
    for shift in (3, 50):
        compare(_t(f"the scores with both positions shifted by {shift}", f"两个位置都平移 {shift} 后的分数"),
                rotate(learner, q, at_q + shift) @ rotate(learner, k, at_k + shift).transpose(-2, -1), scores,
                inputs=_t(f"q {tuple(q.shape)} at m = {at_q.tolist()}, k {tuple(k.shape)} at n = {at_k.tolist()}, "
                          "float64 (rot(q, m) @ rot(k, n)^T must equal rot(q, m + s) @ rot(k, n + s)^T)",
                          f"q {tuple(q.shape)} 位于 m = {at_q.tolist()}，k {tuple(k.shape)} 位于 n = {at_k.tolist()}，"
                          "float64（rot(q, m) @ rot(k, n)^T 必须等于 rot(q, m + s) @ rot(k, n + s)^T）"))


@check("gradients with respect to x match the reference",
       zh="对 x 的梯度与参考实现一致")
def check_gradients(learner, reference, device):
    x = randn(2, 3, 5, 6, device=device, seed=70, requires_grad=True)  # (B, H, T, D)
    positions = torch.tensor([2, 0, 7, 1, 4], device=device)  # (T,)
    want = reference.apply_rotary_embedding(x, positions, 50.0)  # (B, H, T, D)
    compare_gradients(learner, rotate(learner, x, positions, 50.0), want, {"x": x}, inputs=inputs(x, positions, 50.0))


@check("an odd D raises ValueError naming x",
       zh="奇数的 D 抛出指明 x 的 ValueError")
def check_odd_width(learner, device):
    for shape in ((2, 3, 5), (4, 1), (1, 2, 3, 7)):
        learner.raises(_t(f"x of shape {shape} (odd D = {shape[-1]})", f"形状为 {shape} 的 x（D = {shape[-1]} 为奇数）"),
                       ("x",), FN, randn(*shape, device=device, seed=80))
