"""Hidden checks for ex11: the backward pass of softmax attention, written by hand.

The expected gradients come from autograd, run here in the check, never inside the learner's
code. While the learner's code runs, the catalog's forbidden names make torch.autograd.grad,
torch.autograd.backward and Tensor.backward raise, and ``BackwardWatch`` (a TorchDispatchMode)
fails the call if any torch backward kernel runs (what torch.func.vjp would do).
"""

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attn_drill.checks.harness import (
    DTYPES, Mistake, check, compare, config, describe, expect_tensor, expect_tuple, fail, randn, require_defined,
)
from attn_drill.checks.mistakes import attention

NO_ROWSUM = Mistake(
    "softmax-backward-no-rowsum",
    "the softmax backward without subtracting the row sum: dS = dP * P instead of P * (dP - rowsum(dP * P))")
SCALE_MISSING = Mistake(
    "backward-scale-missing",
    "gradients with the scale missing from dq and dk: S = scale * q k^T, so dq = scale * dS @ k and "
    "dk = scale * dS^T @ q")
DK_NO_TRANSPOSE = Mistake(
    "dk-without-transpose",
    "dk computed with dS where its transpose belongs (P instead of P^T): dk = scale * dS^T @ q")
DV_NO_TRANSPOSE = Mistake("dv-without-transpose", "dv computed with P where its transpose belongs: dv = P^T @ grad_out")
SCALE_IGNORED = Mistake(
    "scale-ignored", "the gradients of attention with the default 1/sqrt(D) scale: the scale argument was ignored")
NAMES = ("dq", "dk", "dv")

# (leading dims, L, S, D, Dv): L == S first (where the transpose mistakes can run), L != S, length 1,
# S = 1, no leading dimension, one leading dimension.
SHAPES = [((2, 3), 5, 5, 4, 4), ((2, 3), 5, 7, 4, 6), ((1, 1), 1, 3, 4, 4), ((3,), 4, 1, 3, 5), ((), 6, 6, 5, 3),
          ((2,), 6, 4, 3, 2)]


# ---------------------------------------------------------------------------------------
# Watching for torch's own backward kernels inside the learner's code


class BackwardWatch(TorchDispatchMode):
    """Records the first aten backward kernel (``*_backward*``) that runs."""

    @classmethod
    def _should_skip_dynamo(cls):
        # False: no torch._dynamo wrapper around __torch_dispatch__, whose first call would import
        # torch._dynamo (seconds, and it rebinds torch.manual_seed, which the guard reports).
        return False

    def __init__(self):
        super().__init__()
        self.backward_op = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.backward_op is None and "backward" in str(func):
            self.backward_op = str(func)
        return func(*args, **(kwargs or {}))


def backward(learner, q, k, v, grad_out, **kwargs):
    """The learner's (dq, dk, dv), under guard and under watch."""
    with BackwardWatch() as watch:
        result = learner.call("attention_backward", q, k, v, grad_out, **kwargs)
    if watch.backward_op is not None:
        fail(f"attention_backward(): your code ran torch's backward kernel {watch.backward_op} (automatic "
             f"differentiation), which is off limits in {config().exercise}: write this yourself.")
    grads = expect_tuple(result, 3, "attention_backward()")
    return tuple(expect_tensor(g, name) for g, name in zip(grads, NAMES))


# ---------------------------------------------------------------------------------------
# Inputs, expected gradients and known mistakes


def make_inputs(shape, dtype, device, seed=0):
    lead, L, S, D, Dv = shape
    q = randn(*lead, L, D, dtype=dtype, device=device, seed=seed)            # (..., L, D)
    k = randn(*lead, S, D, dtype=dtype, device=device, seed=seed + 1)        # (..., S, D)
    v = randn(*lead, S, Dv, dtype=dtype, device=device, seed=seed + 2)       # (..., S, Dv)
    grad_out = randn(*lead, L, Dv, dtype=dtype, device=device, seed=seed + 3)  # (..., L, Dv)
    return q, k, v, grad_out


def autograd_gradients(q, k, v, grad_out, scale=None):
    """(dq, dk, dv) by autograd, computed here in the check."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    with torch.enable_grad():
        out = attention(*leaves, None, scale)[0]  # (..., L, Dv)
        # a scalar loss whose gradient with respect to out is grad_out (passing grad_outputs
        # instead would make torch import sympy, about a second)
        return torch.autograd.grad((out * grad_out).sum(), leaves)


def by_hand(q, k, v, grad_out, scale=None, *, rowsum=True, scale_grads=True, transpose_dk=True, transpose_dv=True):
    """The backward pass with switches that reproduce the classic mistakes; None if it cannot run."""
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    p = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)  # (..., L, S)
    if not (transpose_dk and transpose_dv) and p.size(-1) != p.size(-2):
        return None  # the untransposed products do not fit when L != S
    dv = (p.transpose(-2, -1) if transpose_dv else p) @ grad_out
    dp = grad_out @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) if rowsum else p * dp
    factor = scale if scale_grads else 1.0
    dq = ds @ k * factor
    dk = (ds.transpose(-2, -1) if transpose_dk else ds) @ q * factor
    return dq, dk, dv


def backward_mistakes(q, k, v, grad_out, scale=None, *, part):
    """Candidate mistakes for one of (dq, dk, dv) = part 0, 1, 2."""
    switches = [(NO_ROWSUM, {"rowsum": False}), (SCALE_MISSING, {"scale_grads": False}),
                (DK_NO_TRANSPOSE, {"transpose_dk": False}), (DV_NO_TRANSPOSE, {"transpose_dv": False})]

    def thunk(options):
        def compute():
            with torch.no_grad():
                result = by_hand(q, k, v, grad_out, scale, **options)
            return None if result is None else result[part]
        return compute

    return [(mistake, thunk(options)) for mistake, options in switches]


def compare_by_hand(got, want, q, k, v, grad_out, scale=None, inputs=None, extra=()):
    inputs = inputs or describe(q=q, k=k, v=v, grad_out=grad_out, scale=scale)
    for part, name in enumerate(NAMES):
        compare(name, got[part], want[part], inputs=inputs,
                mistakes=[(m, lambda m=m, fn=fn: fn()[part]) for m, fn in extra]
                + backward_mistakes(q, k, v, grad_out, scale, part=part))


# ---------------------------------------------------------------------------------------
# The checks


@check("your file imports and defines attention_backward")
def check_defines(learner):
    require_defined(learner)


@check("dq, dk and dv match autograd (float64 and float32, six shapes, with and without leading dims)")
def check_matches_autograd(learner, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            q, k, v, grad_out = make_inputs(shape, dtype, device, seed=10 * seed)
            got = backward(learner, q, k, v, grad_out)
            compare_by_hand(got, autograd_gradients(q, k, v, grad_out), q, k, v, grad_out)


@check("returns a tuple (dq, dk, dv) shaped like q, k and v, in their dtype and on their device")
def check_returns_tuple(learner, device):
    for dtype in DTYPES:
        q, k, v, grad_out = make_inputs(((2,), 3, 5, 4, 6), dtype, device, seed=100)
        got = backward(learner, q, k, v, grad_out)
        inputs = describe(q=q, k=k, v=v, grad_out=grad_out)
        for name, grad, like in zip(NAMES, got, (q, k, v)):
            if grad.shape != like.shape:
                fail(f"{name} has shape {tuple(grad.shape)} for {inputs}; it must be shaped like "
                     f"{name[1:]}: {tuple(like.shape)}. Return (dq, dk, dv) in that order.")
            if grad.dtype != like.dtype or grad.device != like.device:
                fail(f"{name} is {grad.dtype} on {grad.device} for {inputs}; keep the inputs' "
                     f"{like.dtype} on {like.device}.")


@check("an explicit scale replaces 1/sqrt(D), in the forward and in dq and dk")
def check_custom_scale(learner, device):
    for dtype in DTYPES:
        for seed, shape in enumerate([((2, 3), 5, 5, 4, 4), ((2,), 4, 6, 3, 5)]):
            q, k, v, grad_out = make_inputs(shape, dtype, device, seed=200 + 10 * seed)
            got = backward(learner, q, k, v, grad_out, scale=0.37)
            default = [(SCALE_IGNORED, lambda: autograd_gradients(q, k, v, grad_out))]
            compare_by_hand(got, autograd_gradients(q, k, v, grad_out, 0.37), q, k, v, grad_out, 0.37,
                              extra=default)


@check("large logits (about 1e4) give finite gradients that match autograd")
def check_large_logits(learner, device):
    for dtype in DTYPES:
        q, k, v, grad_out = make_inputs(((2, 2), 5, 6, 4, 3), dtype, device, seed=300)
        q, k = q * 100, k * 100  # scores of order 1e4
        inputs = describe(q=q, k=k, v=v, grad_out=grad_out) + ", scores near 1e4"
        got = backward(learner, q, k, v, grad_out)
        for name, grad in zip(NAMES, got):
            if not torch.isfinite(grad).all():
                fail(f"{name} overflows to inf/NaN for {inputs}: recompute P with a stable softmax "
                     "(subtract each row's maximum before exp; torch.softmax does this).")
        if dtype == torch.float64:  # in float32, rounding of 1e4 scores differs by op order, so only finiteness
            compare_by_hand(got, autograd_gradients(q, k, v, grad_out), q, k, v, grad_out, inputs=inputs)


@check("computes the gradients itself: no autograd call and no torch backward kernel inside your code")
def check_no_autograd(learner, device):
    q, k, v, grad_out = make_inputs(((2, 2), 4, 5, 3, 3), torch.float64, device, seed=400)
    for requires_grad in (False, True):
        leaves = [t.clone().requires_grad_(requires_grad) for t in (q, k, v)]
        got = backward(learner, *leaves, grad_out)  # forbidden calls and backward kernels fail here
        compare_by_hand([g.detach() for g in got], autograd_gradients(q, k, v, grad_out), q, k, v, grad_out,
                          inputs=describe(q=q, k=k, v=v, grad_out=grad_out) + f", requires_grad={requires_grad}")


@check("inputs are left untouched")
def check_inputs_untouched(learner, device):
    q, k, v, grad_out = make_inputs(((2,), 5, 5, 4, 4), torch.float64, device, seed=500)
    before = [t.clone() for t in (q, k, v, grad_out)]
    backward(learner, q, k, v, grad_out)  # the guard fails a call that modifies an input
    for name, now, then in zip(("q", "k", "v", "grad_out"), (q, k, v, grad_out), before):
        if not torch.equal(now, then):
            fail(f"attention_backward() modified its input {name}; work on new tensors instead.")


@check("bad arguments raise ValueError naming the argument")
def check_bad_arguments(learner, device):
    def t(*shape):
        return randn(*shape, device=device)

    learner.raises("q (2, 5, 4) and k (2, 7, 3) of different widths", ("q", "k"),
                   "attention_backward", t(2, 5, 4), t(2, 7, 3), t(2, 7, 6), t(2, 5, 6))
    learner.raises("k (2, 7, 4) and v (2, 6, 6) of different lengths", ("k", "v"),
                   "attention_backward", t(2, 5, 4), t(2, 7, 4), t(2, 6, 6), t(2, 5, 6))
    learner.raises("grad_out (2, 5, 4) where the output is (2, 5, 6)", ("grad_out",),
                   "attention_backward", t(2, 5, 4), t(2, 7, 4), t(2, 7, 6), t(2, 5, 4))
