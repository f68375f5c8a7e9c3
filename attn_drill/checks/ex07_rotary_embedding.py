"""Hidden checks for ex7: rotary position embedding (RoPE), half-split convention."""

import torch

from attn_drill.checks.harness import (
    DTYPES, Mistake, check, compare, describe, expect_tensor, fail, grad_of, matches, randn,
    require_defined,
)

FN = "apply_rotary_embedding"

# Shapes of x: no leading dims, T = 1, batch and heads, D/2 odd with batch 1, D = 2, two leading dims.
SHAPES = [(5, 8), (2, 1, 4), (2, 3, 6, 8), (1, 2, 7, 6), (3, 5, 2), (2, 2, 3, 4, 10)]

ADJACENT_PAIRS = Mistake(
    "rope-adjacent-pairs",
    "RoPE on adjacent pairs (2i, 2i+1), the interleaved GPT-J convention: you rotate adjacent pairs (2i, 2i+1), "
    "the contract pairs i with i + D/2 (rotate half)")
ROTATION_REVERSED = Mistake(
    "rope-rotation-reversed",
    "RoPE rotating the wrong way (by -p*theta_i): out[i] = a cos + b sin and out[i + D/2] = -a sin + b cos; "
    "the contract has out[i] = a cos - b sin, out[i + D/2] = a sin + b cos")
EXPONENT_I = Mistake(
    "rope-exponent-i-over-d", "RoPE with frequencies base**(-i/D): pair i has theta_i = base**(-2i/D)")
FREQUENCY_INVERTED = Mistake(
    "rope-frequency-inverted",
    "RoPE with frequencies base**(+2i/D): the exponent must be negative, theta_i = base**(-2i/D)")
POSITIONS_IGNORED = Mistake(
    "rope-positions-ignored", "RoPE at positions 0, 1, ..., T-1: the positions argument was ignored")
BASE_IGNORED = Mistake("rope-base-ignored", "RoPE with base 10000: the base argument was ignored")
SIN_COS_SWAPPED = Mistake(
    "rope-sin-cos-swapped", "RoPE with sin and cos swapped (then position 0 is not the identity)")


def _positions(x, positions):
    return torch.arange(x.size(-2)) if positions is None else positions.detach().cpu()


def rope_variant(x, positions=None, base=10000.0, *, pairs="half", sign=1.0, exponent="2i", swap=False):
    """RoPE by the statement's formula in float64, real arithmetic, with switches that reproduce
    the classic mistakes; returned in x's dtype and on its device."""
    x64 = x.detach().cpu().double()
    T, D = x64.shape[-2:]
    half = D // 2
    i = torch.arange(half, dtype=torch.float64)
    theta = base ** {"2i": -2 * i / D, "i": -i / D, "positive": 2 * i / D}[exponent]  # (D/2,)
    angles = sign * _positions(x, positions).double()[:, None] * theta  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()
    if swap:
        cos, sin = sin, cos
    if pairs == "half":
        first, second = torch.arange(half), torch.arange(half) + half
    else:
        first, second = torch.arange(0, D, 2), torch.arange(1, D, 2)
    a, b = x64[..., first], x64[..., second]  # (..., T, D/2) each
    out = torch.empty_like(x64)
    out[..., first] = a * cos - b * sin
    out[..., second] = a * sin + b * cos
    return out.to(dtype=x.dtype, device=x.device)


def rope_complex(x, positions=None, base=10000.0):
    """An independent RoPE: (x_i + j x_{i + D/2}) times exp(j p theta_i), with Python-float frequencies."""
    x64 = x.detach().cpu().double()
    T, D = x64.shape[-2:]
    half = D // 2
    theta = torch.tensor([base ** (-2 * i / D) for i in range(half)], dtype=torch.float64)  # (D/2,)
    angles = _positions(x, positions).double()[:, None] * theta  # (T, D/2)
    turn = torch.polar(torch.ones_like(angles), angles)  # (T, D/2) complex: exp(j p theta_i)
    z = torch.complex(x64[..., :half], x64[..., half:]) * turn  # (..., T, D/2)
    return torch.cat([z.real, z.imag], dim=-1).to(dtype=x.dtype, device=x.device)


def rope_mistakes(x, positions=None, base=10000.0):
    """Candidate mistakes on these inputs; one that gives the right answer here is never named."""
    correct = rope_variant(x, positions, base)

    def make(**switches):
        def compute():
            wrong = rope_variant(x, **{"positions": positions, "base": base, **switches})
            return None if matches(wrong, correct) else wrong
        return compute

    candidates = [
        (ADJACENT_PAIRS, make(pairs="adjacent")),
        (ROTATION_REVERSED, make(sign=-1.0)),
        (EXPONENT_I, make(exponent="i")),
        (FREQUENCY_INVERTED, make(exponent="positive")),
        (SIN_COS_SWAPPED, make(swap=True)),
    ]
    if positions is not None:
        candidates.append((POSITIONS_IGNORED, make(positions=None)))
    if base != 10000.0:
        candidates.append((BASE_IGNORED, make(base=10000.0)))
    return candidates


def rotate(learner, x, positions=None, base=None):
    kwargs = {}
    if positions is not None:
        kwargs["positions"] = positions
    if base is not None:
        kwargs["base"] = base
    return expect_tensor(learner.call(FN, x, **kwargs), f"{FN}()")


def inputs(x, positions=None, base=None):
    text = describe(x=x)
    if positions is not None:
        text += f", positions {positions.tolist()}"
    if base is not None:
        text += f", base={base}"
    return text


@check("your file imports and defines apply_rotary_embedding")
def check_defines(learner):
    require_defined(learner)


@check("matches the reference (float64 and float32; with and without batch and head dims, T = 1, D = 2)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            x = randn(*shape, dtype=dtype, device=device, seed=seed)  # (..., T, D)
            compare("out", rotate(learner, x), reference.apply_rotary_embedding(x), inputs=inputs(x),
                    mistakes=rope_mistakes(x))


@check("custom positions and a non-default base (float64 and float32)")
def check_positions_and_base(learner, reference, device):
    cases = [((2, 3, 5, 8), [4, 0, 9, 2, 31], None), ((1, 6, 10), [20, 21, 22, 23, 24, 25], 500.0),
             ((2, 4, 6), [3, 3, 1, 0], 100.0), ((3, 1, 4), [17], 2.5)]
    for dtype in DTYPES:
        for seed, (shape, where, base) in enumerate(cases):
            x = randn(*shape, dtype=dtype, device=device, seed=20 + seed)  # (..., T, D)
            positions = torch.tensor(where, device=device)  # (T,) int64
            want = reference.apply_rotary_embedding(x, positions, **({} if base is None else {"base": base}))
            compare("out", rotate(learner, x, positions, base), want, inputs=inputs(x, positions, base),
                    mistakes=rope_mistakes(x, positions, 10000.0 if base is None else base))


@check("agrees with an independent complex-number rotation: dimension i pairs with i + D/2 (rotate half)")
def check_half_split(learner, device):
    x = randn(2, 4, 12, device=device, seed=30)  # (B, T, D)
    positions = torch.tensor([0, 5, 10, 15], device=device)  # (T,)
    got = rotate(learner, x, positions, 100.0)
    compare("out", got, rope_complex(x, positions, 100.0), inputs=inputs(x, positions, 100.0)
            + " (each pair (x_i, x_{i+D/2}) as the complex number x_i + j x_{i+D/2}, times exp(j p theta_i))",
            mistakes=rope_mistakes(x, positions, 100.0))


@check("the rotation keeps the length of every vector (per position)")
def check_norms(learner, device):
    for dtype in DTYPES:
        x = randn(2, 3, 7, 8, dtype=dtype, device=device, seed=40)  # (B, H, T, D)
        positions = torch.tensor([0, 1, 2, 7, 13, 29, 40], device=device)
        got = rotate(learner, x, positions)
        if got.shape != x.shape:
            fail(f"out has shape {tuple(got.shape)} for {inputs(x, positions)}; expected x's shape {tuple(x.shape)}.")
        compare("the length of each rotated vector, out.norm(dim=-1)", got.norm(dim=-1), x.norm(dim=-1),
                inputs=inputs(x, positions) + " (a rotation must not change ||x[..., t, :]||)")


@check("position 0 leaves x unchanged")
def check_position_zero(learner, device):
    x = randn(2, 3, 5, 8, device=device, seed=50)  # (B, H, T, D)
    positions = torch.zeros(5, dtype=torch.long, device=device)
    compare("out at position 0", rotate(learner, x, positions), x, inputs=inputs(x, positions),
            mistakes=rope_mistakes(x, positions))
    one = randn(3, 1, 6, device=device, seed=51)  # (B, T = 1, D): the default position is 0
    compare("out at the default position 0", rotate(learner, one), one, inputs=inputs(one),
            mistakes=rope_mistakes(one))


@check("q-k scores depend only on the position difference: shifting both positions by s changes nothing")
def check_relative(learner, device):
    q = randn(2, 3, 5, 8, device=device, seed=60)  # (B, H, L, D)
    k = randn(2, 3, 6, 8, device=device, seed=61)  # (B, H, S, D)
    at_q = torch.tensor([0, 2, 3, 7, 11], device=device)  # (L,) positions m
    at_k = torch.tensor([1, 4, 5, 6, 9, 12], device=device)  # (S,) positions n
    scores = rotate(learner, q, at_q) @ rotate(learner, k, at_k).transpose(-2, -1)  # (B, H, L, S)
    for shift in (3, 50):
        shifted = rotate(learner, q, at_q + shift) @ rotate(learner, k, at_k + shift).transpose(-2, -1)
        compare(f"the scores with both positions shifted by {shift}", shifted, scores,
                inputs=f"q {tuple(q.shape)} at m = {at_q.tolist()}, k {tuple(k.shape)} at n = {at_k.tolist()}, "
                       "float64 (rot(q, m) @ rot(k, n)^T must equal rot(q, m + s) @ rot(k, n + s)^T)")


@check("gradients with respect to x match the reference")
def check_gradients(learner, reference, device):
    x = randn(2, 3, 5, 6, device=device, seed=70, requires_grad=True)  # (B, H, T, D)
    positions = torch.tensor([2, 0, 7, 1, 4], device=device)
    got = grad_of("out", rotate(learner, x, positions, 50.0), {"x": x})
    want = grad_of("the reference's out", reference.apply_rotary_embedding(x, positions, 50.0), {"x": x})
    compare("the gradient of x", got["x"], want["x"], inputs=inputs(x, positions, 50.0))


@check("an odd D raises ValueError naming x")
def check_odd_width(learner, device):
    for shape in ((2, 3, 5), (4, 1), (1, 2, 3, 7)):
        x = randn(*shape, device=device, seed=80)
        learner.raises(f"x of shape {shape} (odd D = {shape[-1]})", ("x",), FN, x)
