"""Hidden checks for ex3: the sinusoidal positional encoding."""

import math

import torch

from attn_drill.checks.harness import _t, check, compare, expect_tensor, fail, fail_naming, mistake
from attn_drill.checks.properties import check_defines, check_static_scan, device_honoured  # noqa: F401

FN = "sinusoidal_positional_encoding"
# (num_positions, d_model): one position, the smallest width, odd pair counts (6, 10), a long one.
SIZES = [(1, 2), (7, 4), (33, 6), (12, 10), (50, 16)]
VARIANTS = [("sinusoid-sin-cos-swapped", {"swap": True}), ("sinusoid-exponent-i-over-d", {"exponent": "i"}),
            ("sinusoid-cos-own-exponent", {"exponent": "own"}), ("sinusoid-halves-concatenated", {"halves": True}),
            ("sinusoid-positions-from-1", {"start": 1}), ("sinusoid-base-ignored", {"base": 10000.0})]


def formula(P, d_model, base=10000.0, *, dtype=torch.float64, device=None, swap=False, exponent="2i", halves=False,
            start=0):
    """PE by the statement's formula, element by element in Python floats (independent of any
    reference code), with switches that reproduce the classic mistakes."""
    pe = torch.zeros(P, d_model, dtype=torch.float64)  # (P, d_model)
    half = d_model // 2
    for p in range(P):
        for i in range(half):
            e_sin = (i if exponent == "i" else 2 * i) / d_model
            e_cos = (2 * i + 1) / d_model if exponent == "own" else e_sin
            pair = math.sin((p + start) / base ** e_sin), math.cos((p + start) / base ** e_cos)
            first, second = (i, half + i) if halves else (2 * i, 2 * i + 1)
            pe[p, first], pe[p, second] = pair[::-1] if swap else pair
    return pe.to(dtype=dtype, device=device)


def mistakes(P, d_model, base=10000.0, **where):
    return [(mistake(key), lambda s=switches: formula(P, d_model, **{"base": base, **s}, **where))
            for key, switches in VARIANTS]


def encoding(learner, P, d_model, dtype=torch.float64, device=None, **kwargs):
    """The learner's PE, its label and the mistakes it could match."""
    extra = "".join(f", {k}={v}" for k, v in kwargs.items())
    label = _t(f"{FN}({P}, {d_model}{extra}, dtype={dtype}) (shape ({P}, {d_model}))",
               f"{FN}({P}, {d_model}{extra}, dtype={dtype})（形状 ({P}, {d_model})）")
    pe = expect_tensor(learner.call(FN, P, d_model, dtype=dtype, device=device, **kwargs), f"{FN}()")
    return pe, label, mistakes(P, d_model, dtype=dtype, device=device, **kwargs)


@check("PE matches the formula computed independently in float64 (five sizes, float64 and float32)",
       zh="PE 与在 float64 下独立计算的公式一致（五种大小，float64 和 float32）")
def check_formula(learner, device):
    for dtype in (torch.float64, torch.float32):
        for P, d_model in SIZES:
            pe, label, candidates = encoding(learner, P, d_model, dtype, device)
            compare("PE", pe, formula(P, d_model, dtype=dtype, device=device), inputs=label, mistakes=candidates)


@check("num_positions = 1 gives the single row [0, 1, 0, 1, ...] of shape (1, d_model)",
       zh="num_positions = 1 时得到形状为 (1, d_model) 的单行 [0, 1, 0, 1, ...]")
def check_one_position(learner, device):
    pe, label, candidates = encoding(learner, 1, 8, device=device)
    compare("PE", pe, torch.tensor([[0.0, 1.0] * 4], dtype=torch.float64, device=device), inputs=label,
            mistakes=candidates)


@check("a non-default base replaces 10000 (base = 100 and 3.5)",
       zh="非默认的 base 取代 10000（base = 100 和 3.5）")
def check_base(learner, device):
    for base, (P, d_model) in ((100.0, (9, 6)), (3.5, (20, 8))):
        pe, label, candidates = encoding(learner, P, d_model, device=device, base=base)
        compare("PE", pe, formula(P, d_model, base, device=device), inputs=label, mistakes=candidates)


@check("dtype and device are honoured (default float32 on the default device, float64 on request)",
       zh="遵从 dtype 和 device（默认是默认 device 上的 float32，要求时为 float64）")
def check_dtype_device(learner, device):
    compare(_t("PE with the default dtype", "默认 dtype 下的 PE"), expect_tensor(learner.call(FN, 6, 4), f"{FN}()"),
            formula(6, 4, dtype=torch.float32), inputs=_t(f"{FN}(6, 4) (expected float32 on the default device)",
                                                          f"{FN}(6, 4)（应为默认 device 上的 float32）"))
    for dtype in (torch.float64, torch.float32):
        pe, label, _ = encoding(learner, 6, 4, dtype, device)
        compare("PE", pe, formula(6, 4, dtype=dtype, device=device), inputs=label)
    device_honoured(learner, FN, 5, 6, dtype=torch.float64)


def shifted_pe(learner, device, P, d_model, base=100.0):
    pe, label, candidates = encoding(learner, P, d_model, device=device, base=base)
    if pe.shape != (P, d_model):
        fail(_t(f"PE has shape {tuple(pe.shape)} for {label}; expected ({P}, {d_model}).",
                f"PE 的形状为 {tuple(pe.shape)}（输入：{label}）；应为 ({P}, {d_model})。"))
    return pe.cpu().double(), label, candidates


@check("PE[p + k] = M_k @ PE[p] with one matrix M_k for every p (k = 1, 4, 9): relative positions are linear",
       zh="PE[p + k] = M_k @ PE[p]，所有 p 共用一个矩阵 M_k（k = 1, 4, 9）：相对位置是线性的")
def check_shift_is_linear(learner, device):
    pe, label, _ = shifted_pe(learner, device, 40, 8)
    for k in (1, 4, 9):
        before, after = pe[:-k], pe[k:]  # (P - k, d_model) each: PE[p], PE[p + k]
        # The best single matrix for every p at once (least squares): after ~= before @ M_k^T.
        error = (before @ torch.linalg.lstsq(before, after, driver="gelsd").solution - after).abs()  # (P - k, d)
        if error.max().item() > 1e-7:
            p, column = divmod(int(error.argmax()), 8)
            fail(_t(f"for {label}, PE[p + {k}] is not one fixed linear function of PE[p]: the best single matrix "
                    f"M_{k} (least squares over every p) still misses PE[{p + k}, {column}] by "
                    f"{error.max().item():.3g}. Each column must be sin or cos of p times a fixed frequency, with sin "
                    "and cos of the same frequency in every pair.",
                    f"对 {label}，PE[p + {k}] 不是 PE[p] 的同一个固定线性函数：最佳的单个矩阵 M_{k}（对所有 p "
                    f"做最小二乘）在 PE[{p + k}, {column}] 处仍差 {error.max().item():.3g}。每一列都必须是 p 乘以"
                    "固定频率后的 sin 或 cos，且每一对中的 sin 和 cos 频率相同。"))


@check("that matrix rotates each pair (2i, 2i+1) by the angle k / base**(2i/d_model), the same for every p",
       zh="这个矩阵把每一对 (2i, 2i+1) 旋转角度 k / base**(2i/d_model)，对所有 p 都相同")
def check_shift_is_rotation(learner, device):
    pe, label, candidates = shifted_pe(learner, device, 30, 6)
    for k in (1, 5):
        rotation = torch.zeros(6, 6, dtype=torch.float64)  # (d, d): M_k, block diagonal
        for i in range(3):
            c, s = math.cos(k / 100.0 ** (2 * i / 6)), math.sin(k / 100.0 ** (2 * i / 6))
            # sin(a + b) = sin a cos b + cos a sin b;  cos(a + b) = cos a cos b - sin a sin b
            rotation[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
        error = (pe[:-k] @ rotation.T - pe[k:]).abs()  # (P - k, d): M_k @ PE[p] - PE[p + k]
        if error.max().item() > 1e-9:
            p, column = divmod(int(error.argmax()), 6)
            fail_naming(_t(f"for {label}, M_{k} @ PE[p] (each pair (2i, 2i+1) rotated by k / base**(2i/d_model)) "
                           f"differs from PE[p + {k}] by {error.max().item():.3g} at p = {p}, column {column}.",
                           f"对 {label}，M_{k} @ PE[p]（每一对 (2i, 2i+1) 旋转 k / base**(2i/d_model)）与 "
                           f"PE[p + {k}] 在 p = {p}、第 {column} 列处相差 {error.max().item():.3g}。"),
                        pe, candidates)


@check("an odd d_model raises ValueError naming d_model",
       zh="奇数的 d_model 抛出指明 d_model 的 ValueError")
def check_odd_width(learner, device):
    for P, d_model in ((4, 5), (3, 1), (1, 7)):
        learner.raises(_t(f"d_model = {d_model} (odd)", f"d_model = {d_model}（奇数）"), ("d_model",), FN, P, d_model,
                       device=device)
