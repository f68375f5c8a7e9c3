"""Hidden checks for ex3: the sinusoidal positional encoding."""

import math

import torch

from attn_drill.checks.harness import (
    CheckFailure, Mistake, check, compare, expect_tensor, fail, fail_naming, matches, require_defined,
)

FN = "sinusoidal_positional_encoding"

# (num_positions, d_model): one position, the smallest width, odd pair counts (6, 10), a long one.
SIZES = [(1, 2), (7, 4), (33, 6), (12, 10), (50, 16)]

SIN_COS_SWAPPED = Mistake(
    "sinusoid-sin-cos-swapped",
    "the encoding with sin and cos swapped; the statement puts sin in the even columns 2i and cos in the odd ones")
EXPONENT_I = Mistake(
    "sinusoid-exponent-i-over-d",
    "the encoding with frequencies 1/base**(i/d_model): the exponent is 2i/d_model, where i counts the pairs")
COS_OWN_EXPONENT = Mistake(
    "sinusoid-cos-own-exponent",
    "the encoding whose cos columns use the exponent (2i+1)/d_model: both columns of pair i share 1/base**(2i/d_model)")
HALVES_CONCATENATED = Mistake(
    "sinusoid-halves-concatenated",
    "the encoding laid out as [sin ..., cos ...] halves; the statement interleaves them (column 2i sin, 2i+1 cos)")
POSITIONS_FROM_1 = Mistake(
    "sinusoid-positions-from-1", "the encoding with positions counted from 1; the first row is position p = 0")
BASE_IGNORED = Mistake(
    "sinusoid-base-ignored", "the encoding with base 10000: the base argument was ignored")


def formula(num_positions, d_model, base=10000.0, *, swap=False, exponent="2i", layout="interleaved", start=0):
    """PE from the statement's formula, element by element in float64 (Python floats), with
    switches that reproduce the classic mistakes. Independent of any reference code."""
    pe = torch.zeros(num_positions, d_model, dtype=torch.float64)
    half = d_model // 2
    for p in range(num_positions):
        position = p + start
        for i in range(half):
            e_sin = {"2i": 2 * i / d_model, "i": i / d_model, "own": 2 * i / d_model}[exponent]
            e_cos = (2 * i + 1) / d_model if exponent == "own" else e_sin
            first, second = math.sin(position / base ** e_sin), math.cos(position / base ** e_cos)
            if swap:
                first, second = math.cos(position / base ** e_cos), math.sin(position / base ** e_sin)
            if layout == "interleaved":
                pe[p, 2 * i], pe[p, 2 * i + 1] = first, second
            else:
                pe[p, i], pe[p, half + i] = first, second
    return pe


def expected(num_positions, d_model, base=10000.0, *, dtype, device, **switches):
    return formula(num_positions, d_model, base, **switches).to(dtype=dtype, device=device)


def mistakes(num_positions, d_model, base=10000.0, *, dtype, device, include_base=False):
    """Candidate mistakes for these arguments, each in the learner's dtype and on their device.
    A mistake that gives the right answer on these arguments (exponent i/d with one pair, say)
    gives None, so it is never named."""
    correct = expected(num_positions, d_model, base, dtype=dtype, device=device)

    def distinct(wrong):
        return None if matches(wrong, correct) else wrong

    def make(**switches):
        return lambda: distinct(expected(num_positions, d_model, base, dtype=dtype, device=device, **switches))

    candidates = [
        (SIN_COS_SWAPPED, make(swap=True)),
        (EXPONENT_I, make(exponent="i")),
        (COS_OWN_EXPONENT, make(exponent="own")),
        (HALVES_CONCATENATED, make(layout="halves")),
        (POSITIONS_FROM_1, make(start=1)),
    ]
    if include_base:
        candidates.append(
            (BASE_IGNORED, lambda: distinct(expected(num_positions, d_model, dtype=dtype, device=device))))
    return candidates


def encoding(learner, num_positions, d_model, **kwargs):
    return expect_tensor(learner.call(FN, num_positions, d_model, **kwargs), f"{FN}()")


def inputs(num_positions, d_model, **kwargs):
    extra = "".join(f", {name}={value}" for name, value in kwargs.items())
    return f"{FN}({num_positions}, {d_model}{extra}) (shape ({num_positions}, {d_model}))"


@check("your file imports and defines sinusoidal_positional_encoding")
def check_defines(learner):
    require_defined(learner)


@check("PE matches the formula computed independently in float64 (five sizes, float64 and float32)")
def check_formula(learner, device):
    for dtype in (torch.float64, torch.float32):
        for num_positions, d_model in SIZES:
            got = encoding(learner, num_positions, d_model, dtype=dtype, device=device)
            compare("PE", got, expected(num_positions, d_model, dtype=dtype, device=device),
                    inputs=inputs(num_positions, d_model, dtype=dtype, device=device),
                    mistakes=mistakes(num_positions, d_model, dtype=dtype, device=device))


@check("num_positions = 1 gives the single row [0, 1, 0, 1, ...] of shape (1, d_model)")
def check_one_position(learner, device):
    got = encoding(learner, 1, 8, dtype=torch.float64, device=device)
    want = torch.tensor([[0.0, 1.0] * 4], dtype=torch.float64, device=device)  # (1, 8)
    compare("PE", got, want, inputs=inputs(1, 8, dtype=torch.float64),
            mistakes=mistakes(1, 8, dtype=torch.float64, device=device))


@check("a non-default base replaces 10000 (base = 100 and 3.5)")
def check_base(learner, device):
    for base, (num_positions, d_model) in ((100.0, (9, 6)), (3.5, (20, 8))):
        got = encoding(learner, num_positions, d_model, base=base, dtype=torch.float64, device=device)
        compare("PE", got, expected(num_positions, d_model, base, dtype=torch.float64, device=device),
                inputs=inputs(num_positions, d_model, base=base, dtype=torch.float64),
                mistakes=mistakes(num_positions, d_model, base, dtype=torch.float64, device=device,
                                  include_base=True))


@check("dtype and device are honoured (default float32 on the default device, float64 on request)")
def check_dtype_device(learner, device):
    default_device = torch.empty(0).device
    got = encoding(learner, 6, 4)
    compare("PE with the default dtype", got, expected(6, 4, dtype=torch.float32, device=default_device),
            inputs=inputs(6, 4) + " (expected float32 on the default device)")
    for dtype in (torch.float64, torch.float32):
        got = encoding(learner, 6, 4, dtype=dtype, device=device)
        compare("PE", got, expected(6, 4, dtype=dtype, device=device), inputs=inputs(6, 4, dtype=dtype, device=device))
    expect_device_used(learner, device)


def expect_device_used(learner, device):
    """Local helper: the device argument is used, provable without a GPU. While torch's default
    device is the shape-only "meta" device, a call that passes device=<the checks' device>
    must still return a tensor there. Code that cannot run under that default (it creates a
    tensor without device= and then reads it) is let off; the check above covers the rest."""
    for attempt in (1, 2):
        try:
            with torch.device("meta"):
                got = learner.call(FN, 5, 6, dtype=torch.float64, device=device)
            break
        except CheckFailure as failure:
            # The first operation on "meta" in a process imports torch._dynamo, which rebinds
            # torch.manual_seed; the guard reports that and puts it back, so one retry is clean.
            if attempt == 1 and "torch.manual_seed" in failure.message:
                continue
            return  # the call could not run under that default; not held against it
    if isinstance(got, torch.Tensor) and got.device.type != device.type:
        fail(f"with torch's default device set to 'meta', {inputs(5, 6, dtype=torch.float64, device=device)} "
             f"returned a tensor on {got.device}, not on {device}: create every tensor with device=device "
             "(and dtype=dtype) instead of relying on the default device.")


@check("PE[p + k] = M_k @ PE[p] with one matrix M_k for every p (k = 1, 4, 9): relative positions are linear")
def check_shift_is_linear(learner, device):
    num_positions, d_model, base = 40, 8, 100.0
    pe = encoding(learner, num_positions, d_model, base=base, dtype=torch.float64, device=device)
    if pe.shape != (num_positions, d_model):
        fail(f"PE has shape {tuple(pe.shape)} for {inputs(num_positions, d_model, base=base)}; "
             f"expected ({num_positions}, {d_model}).")
    pe = pe.detach().cpu().double()
    for k in (1, 4, 9):
        before, after = pe[: num_positions - k], pe[k:]  # (P - k, d_model) each: PE[p], PE[p + k]
        # The best single matrix for every p at once (least squares): after ~= before @ M_k^T.
        solution = torch.linalg.lstsq(before, after, driver="gelsd").solution  # (d_model, d_model)
        error = (before @ solution - after).abs()  # (P - k, d_model)
        worst = error.max().item()
        if worst > 1e-7:
            p, column = divmod(int(error.argmax()), d_model)
            fail(f"for {inputs(num_positions, d_model, base=base, dtype=torch.float64)}, PE[p + {k}] is not one "
                 f"fixed linear function of PE[p]: the best single matrix M_{k} (least squares over every p) "
                 f"still misses PE[{p + k}, {column}] by {worst:.3g}. Each column must be sin or cos of "
                 "p times a fixed frequency, with sin and cos of the same frequency in every pair.")


@check("that matrix rotates each pair (2i, 2i+1) by the angle k / base**(2i/d_model), the same for every p")
def check_shift_is_rotation(learner, device):
    num_positions, d_model, base = 30, 6, 100.0
    label = inputs(num_positions, d_model, base=base, dtype=torch.float64)
    pe = encoding(learner, num_positions, d_model, base=base, dtype=torch.float64, device=device)
    if pe.shape != (num_positions, d_model):
        fail(f"PE has shape {tuple(pe.shape)} for {label}; expected ({num_positions}, {d_model}).")
    candidates = mistakes(num_positions, d_model, base, dtype=torch.float64, device=device, include_base=True)
    values = pe.detach().cpu().double()
    for k in (1, 5):
        rotation = torch.zeros(d_model, d_model, dtype=torch.float64)  # M_k, block diagonal
        for i in range(d_model // 2):
            angle = k / base ** (2 * i / d_model)
            c, s = math.cos(angle), math.sin(angle)
            # sin(a + b) = sin a cos b + cos a sin b;  cos(a + b) = cos a cos b - sin a sin b
            rotation[2 * i, 2 * i], rotation[2 * i, 2 * i + 1] = c, s
            rotation[2 * i + 1, 2 * i], rotation[2 * i + 1, 2 * i + 1] = -s, c
        predicted = values[: num_positions - k] @ rotation.T  # (P - k, d_model): M_k @ PE[p]
        error = (predicted - values[k:]).abs()
        worst = error.max().item()
        if worst > 1e-9:
            p, column = divmod(int(error.argmax()), d_model)
            fail_naming(f"for {label}, M_{k} @ PE[p] (each pair (2i, 2i+1) rotated by k / base**(2i/d_model)) "
                        f"differs from PE[p + {k}] by {worst:.3g} at p = {p}, column {column}.", pe, candidates)


@check("an odd d_model raises ValueError naming d_model")
def check_odd_width(learner, device):
    for num_positions, d_model in ((4, 5), (3, 1), (1, 7)):
        learner.raises(f"d_model = {d_model} (odd)", ("d_model",), FN, num_positions, d_model, device=device)
