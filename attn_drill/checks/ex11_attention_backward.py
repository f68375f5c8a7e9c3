"""Hidden checks for ex11: the backward pass of softmax attention, written by hand. The expected
gradients come from autograd in the judge; the worker makes the forbidden autograd calls raise."""

import math

import torch

from attn_drill.checks.harness import DTYPES, _t, check, describe, fail, mistake, randn
from attn_drill.checks.mistakes import attention
from attn_drill.checks.properties import agree, check_defines, check_static_scan, finite, outputs  # noqa: F401

NAMES = ("dq", "dk", "dv")
# (leading dims, L, S, D, Dv): L == S first (where the transpose mistakes can run), L != S, length 1,
# S = 1, no leading dimension, one leading dimension.
SHAPES = [((2, 3), 5, 5, 4, 4), ((2, 3), 5, 7, 4, 6), ((1, 1), 1, 3, 4, 4), ((3,), 4, 1, 3, 5), ((), 6, 6, 5, 3),
          ((2,), 6, 4, 3, 2)]


def make_inputs(shape, dtype, device, seed=0, requires_grad=False):
    lead, L, S, D, Dv = shape
    return tuple(randn(*lead, T, W, dtype=dtype, device=device, seed=seed + i, requires_grad=requires_grad and i < 3)
                 for i, (T, W) in enumerate(((L, D), (S, D), (S, Dv), (L, Dv))))  # q, k, v, grad_out


def autograd_gradients(q, k, v, grad_out, scale=None):
    """(dq, dk, dv) by autograd, computed here in the judge."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    with torch.enable_grad():
        out = attention(*leaves, None, scale)[0]  # (..., L, Dv)
        return torch.autograd.grad((out * grad_out).sum(), leaves)  # a scalar loss: no sympy import


def by_hand(q, k, v, grad_out, scale=None, *, rowsum=True, scale_grads=True, transpose_dk=True, transpose_dv=True):
    """The backward pass with switches that reproduce the classic mistakes; Nones if it cannot run."""
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    p = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)  # (..., L, S)
    if not (transpose_dk and transpose_dv) and p.size(-1) != p.size(-2):
        return None, None, None  # the untransposed products do not fit when L != S
    dv = (p.transpose(-2, -1) if transpose_dv else p) @ grad_out                          # (..., S, Dv)
    dp = grad_out @ v.transpose(-2, -1)                                                   # (..., L, S)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) if rowsum else p * dp                  # (..., L, S)
    factor = scale if scale_grads else 1.0
    return ds @ k * factor, (ds.transpose(-2, -1) if transpose_dk else ds) @ q * factor, dv  # dq, dk, dv


SWITCHES = [("softmax-backward-no-rowsum", {"rowsum": False}), ("backward-scale-missing", {"scale_grads": False}),
            ("dk-without-transpose", {"transpose_dk": False}), ("dv-without-transpose", {"transpose_dv": False})]


def expect(learner, q, k, v, grad_out, scale=None, *, note="", default_scale_named=False):
    """The learner's (dq, dk, dv) equal autograd's, each named by its known mistakes; returns them."""
    got = outputs(learner.call("attention_backward", q, k, v, grad_out, scale=scale), 3, "attention_backward()")
    inputs = describe(q=q, k=k, v=v, grad_out=grad_out, scale=scale) + note
    finite(_t("dq, dk or dv", "dq、dk 或 dv"), got, inputs=inputs,
           advice=_t("recompute P with a stable softmax (subtract each row's maximum before exp; torch.softmax does "
                     "this).", "用数值稳定的 softmax 重新计算 P（在 exp 之前减去每行的最大值；torch.softmax 会这样做）。"))
    detached = [t.detach() for t in (q, k, v, grad_out)]

    def mistakes(part):
        found = [(mistake(key), lambda switches=switches: by_hand(*detached, scale, **switches)[part])
                 for key, switches in SWITCHES]
        if default_scale_named:
            found.insert(0, (mistake("scale-ignored"), lambda: autograd_gradients(*detached)[part]))
        return found

    agree(NAMES, got, autograd_gradients(q, k, v, grad_out, scale), inputs=inputs, mistakes=mistakes)
    return got


@check("dq, dk and dv match autograd (float64 and float32, six shapes, with and without leading dims)",
       zh="dq、dk 和 dv 与 autograd 一致（float64 和 float32，六种形状，带与不带前导维）")
def check_matches_autograd(learner, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            expect(learner, *make_inputs(shape, dtype, device, seed=10 * seed))


@check("returns a tuple (dq, dk, dv) shaped like q, k and v, in their dtype and on their device",
       zh="返回 tuple (dq, dk, dv)，形状、dtype 和 device 分别与 q、k、v 相同")
def check_returns_tuple(learner, device):
    for dtype in DTYPES:
        q, k, v, grad_out = make_inputs(((2,), 3, 5, 4, 6), dtype, device, seed=100)
        got = outputs(learner.call("attention_backward", q, k, v, grad_out), 3, "attention_backward()")
        for name, grad, like in zip(NAMES, got, (q, k, v)):
            if (grad.shape, grad.dtype, grad.device.type) != (like.shape, like.dtype, like.device.type):
                inputs = describe(q=q, k=k, v=v, grad_out=grad_out)
                fail(_t(f"{name} is {tuple(grad.shape)} {grad.dtype} on {grad.device} for {inputs}; it must be shaped "
                        f"like {name[1:]}, {tuple(like.shape)} {like.dtype} on {like.device}. Return (dq, dk, dv) in "
                        "that order.",
                        f"{name} 是位于 {grad.device} 的 {tuple(grad.shape)} {grad.dtype}（输入：{inputs}）；它必须与 "
                        f"{name[1:]} 一样，是位于 {like.device} 的 {tuple(like.shape)} {like.dtype}。请按 (dq, dk, dv) "
                        "的顺序返回。"))


@check("an explicit scale replaces 1/sqrt(D), in the forward and in dq and dk",
       zh="显式给出的 scale 取代 1/sqrt(D)，在前向计算和 dq、dk 中都是如此")
def check_custom_scale(learner, device):
    for dtype in DTYPES:
        for seed, shape in enumerate([((2, 3), 5, 5, 4, 4), ((2,), 4, 6, 3, 5)]):
            expect(learner, *make_inputs(shape, dtype, device, seed=200 + 10 * seed), 0.37, default_scale_named=True)


@check("large logits (about 1e4) give finite gradients that match autograd",
       zh="很大的 logits（约 1e4）给出有限的、与 autograd 一致的梯度")
def check_large_logits(learner, device):
    q, k, v, grad_out = make_inputs(((2, 2), 5, 6, 4, 3), torch.float32, device, seed=300)
    q, k = q * 100, k * 100  # scores of order 1e4; in float32 only finiteness (rounding differs by op order)
    got = outputs(learner.call("attention_backward", q, k, v, grad_out), 3, "attention_backward()")
    finite(_t("dq, dk or dv", "dq、dk 或 dv"), got,
           inputs=describe(q=q, k=k, v=v, grad_out=grad_out) + _t(", scores near 1e4", "，分数约为 1e4"),
           advice=_t("recompute P with a stable softmax (subtract each row's maximum before exp).",
                     "用数值稳定的 softmax 重新计算 P（在 exp 之前减去每行的最大值）。"))
    q, k, v, grad_out = (t.double() for t in (q, k, v, grad_out))
    expect(learner, q, k, v, grad_out, note=_t(", scores near 1e4", "，分数约为 1e4"))


@check("computes the gradients itself: no autograd call inside your code, with or without requires_grad inputs",
       zh="自己计算梯度：你的代码里不调用 autograd，无论输入是否 requires_grad")
def check_no_autograd(learner, device):
    for requires_grad in (False, True):  # the worker makes the forbidden calls raise
        expect(learner, *make_inputs(((2, 2), 4, 5, 3, 3), torch.float64, device, 400, requires_grad),
               note=f", requires_grad={requires_grad}")


@check("inputs are left untouched",
       zh="输入没有被修改")
def check_inputs_untouched(learner, device):
    for requires_grad in (False, True):  # the worker fails a call that modifies an input
        learner.call("attention_backward", *make_inputs(((2,), 5, 5, 4, 4), torch.float64, device, 500, requires_grad))


@check("bad arguments raise ValueError naming the argument",
       zh="错误的参数会抛出指明该参数的 ValueError")
def check_bad_arguments(learner, device):
    q, k, v, k3, v6, g, g4 = (randn(2, *shape, device=device) for shape in
                              ((5, 4), (7, 4), (7, 6), (7, 3), (6, 6), (5, 6), (5, 4)))
    learner.raises(_t("q (2, 5, 4) and k (2, 7, 3) of different widths", "q (2, 5, 4) 与 k (2, 7, 3) 的宽度不同"),
                   ("q", "k"), "attention_backward", q, k3, v, g)
    learner.raises(_t("k (2, 7, 4) and v (2, 6, 6) of different lengths", "k (2, 7, 4) 与 v (2, 6, 6) 的长度不同"),
                   ("k", "v"), "attention_backward", q, k, v6, g)
    learner.raises(_t("grad_out (2, 5, 4) where the output is (2, 5, 6)", "grad_out 为 (2, 5, 4)，而输出是 (2, 5, 6)"),
                   ("grad_out",), "attention_backward", q, k, v, g4)
