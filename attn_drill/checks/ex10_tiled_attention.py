"""Hidden checks for ex10: tiled attention with an online softmax (the FlashAttention forward).

Every call of the learner's function runs under ``TensorWatch``, a TorchDispatchMode that
sees every tensor the learner's code creates: it records the largest one (the check that
no ``L x S`` matrix is ever held) and any fused attention kernel called by its aten name.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from attn_drill.checks.harness import (
    DTYPES, Mistake, check, compare, compare_gradients, config, describe, expect_tensor, fail, randn,
    require_defined,
)
from attn_drill.checks.mistakes import CAUSAL_INVERTED, CAUSAL_TOP_LEFT, attention, attention_mistakes

FULL_SCORES = Mistake("full-score-matrix", "you computed the full L x S score matrix")
NO_RESCALE = Mistake(
    "online-softmax-no-rescale",
    "an online softmax whose running max is not used to rescale the accumulator: when a block raises "
    "the max from m to m_new, multiply the old acc (and the old sum l) by exp(m - m_new)")
NOT_NORMALISED = Mistake(
    "online-softmax-not-normalised", "the online softmax's accumulator never divided by the running sum l")
CAUSAL_IGNORED = Mistake("causal-ignored", "attention without the causal mask: causal=True was ignored")
CAUSAL_NO_DIAGONAL = Mistake(
    "causal-excludes-diagonal",
    "a causal mask that also hides each query's own position (j < i + S - L instead of j <= i + S - L)")
SCALE_IGNORED = Mistake("scale-ignored", "attention with the default 1/sqrt(D) scale: the scale argument was ignored")

# (B, H, L, S, D, Dv, block_size): length 1, L != S, S not divisible by the block, block 1, block >= S.
SHAPES = [(1, 1, 1, 3, 4, 4, 2), (2, 3, 5, 7, 4, 6, 3), (2, 2, 9, 9, 8, 8, 4), (1, 2, 4, 10, 3, 5, 64),
          (2, 1, 6, 5, 4, 4, 1), (1, 2, 7, 13, 5, 3, 5)]
# Causal: L == S, L < S (a cache), ragged last block, block 1, block >= S.
CAUSAL_SHAPES = [(2, 2, 9, 9, 4, 4, 4), (2, 3, 5, 7, 4, 6, 3), (1, 2, 6, 11, 3, 5, 4), (2, 1, 5, 5, 4, 3, 1),
                 (1, 1, 4, 6, 4, 4, 16), (1, 2, 1, 6, 4, 4, 4)]
FUSED_KERNELS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention", "_fused_sdp")


# ---------------------------------------------------------------------------------------
# Watching every tensor the learner's code creates


class TensorWatch(TorchDispatchMode):
    """Records the largest tensor any op produces, and the first fused attention kernel called."""

    @classmethod
    def _should_skip_dynamo(cls):
        # False: no torch._dynamo wrapper around __torch_dispatch__, whose first call would import
        # torch._dynamo (seconds, and it rebinds torch.manual_seed, which the guard reports).
        return False

    def __init__(self):
        super().__init__()
        self.largest = (0, "", ())  # (numel, op, shape)
        self.fused = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if self.fused is None and any(kernel in name for kernel in FUSED_KERNELS):
            self.fused = name
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.numel() > self.largest[0]:
                self.largest = (tensor.numel(), name, tuple(tensor.shape))
        return out


def tiled(learner, q, k, v, **kwargs):
    """The learner's tiled_attention(q, k, v, **kwargs) under guard and under watch: (out, watch)."""
    with TensorWatch() as watch:
        out = learner.call("tiled_attention", q, k, v, **kwargs)
    if watch.fused is not None:
        fail(f"tiled_attention(): your code ran the fused attention kernel {watch.fused}, which is off limits "
             f"in {config().exercise}: write this yourself.")
    return expect_tensor(out, "tiled_attention(...)"), watch


# ---------------------------------------------------------------------------------------
# Inputs, expected results and known mistakes


def make_qkv(shape, dtype, device, seed=0, requires_grad=False):
    B, H, L, S, D, Dv, _ = shape
    q = randn(B, H, L, D, dtype=dtype, device=device, seed=seed, requires_grad=requires_grad)       # (B, H, L, D)
    k = randn(B, H, S, D, dtype=dtype, device=device, seed=seed + 1, requires_grad=requires_grad)   # (B, H, S, D)
    v = randn(B, H, S, Dv, dtype=dtype, device=device, seed=seed + 2, requires_grad=requires_grad)  # (B, H, S, Dv)
    return q, k, v


def causal_allowed(L, S, device, offset=None):
    """(L, S) bool, True = may attend: j <= i + offset; bottom-right alignment is offset S - L."""
    offset = S - L if offset is None else offset
    rows = torch.arange(L, device=device).unsqueeze(-1)  # (L, 1)
    return torch.arange(S, device=device) <= rows + offset  # (L, S)


def online(q, k, v, block_size, causal=False, scale=None, *, rescale_acc=True, rescale_sum=True, normalise=True):
    """The online-softmax loop with switches that reproduce wrong updates."""
    L, S = q.size(-2), k.size(-2)
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    m = q.new_full((*q.shape[:-1], 1), float("-inf"))  # (B, H, L, 1)
    l = q.new_zeros((*q.shape[:-1], 1))                 # (B, H, L, 1)
    acc = q.new_zeros((*q.shape[:-1], v.size(-1)))      # (B, H, L, Dv)
    allowed = causal_allowed(L, S, q.device)             # (L, S), fine in the check itself
    for start in range(0, S, block_size):
        scores = q @ k[..., start:start + block_size, :].transpose(-2, -1) * scale  # (B, H, L, Bk)
        if causal:
            scores = scores.masked_fill(~allowed[:, start:start + block_size], float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
        alpha = torch.exp(m - m_safe)
        p = torch.exp(scores - m_safe)
        l = (l * alpha if rescale_sum else l) + p.sum(-1, keepdim=True)
        acc = (acc * alpha if rescale_acc else acc) + p @ v[..., start:start + block_size, :]
        m = m_new
    return acc / l.masked_fill(l == 0, 1.0) if normalise else acc


def tiled_mistakes(q, k, v, block_size, causal=False, scale=None):
    """Known mistakes for tiled attention on these inputs, each computing the output it would give."""
    q, k, v = q.detach(), k.detach(), v.detach()
    L, S = q.size(-2), k.size(-2)

    def run(fn):
        def compute():
            with torch.no_grad():
                return fn()
        return compute

    candidates = [
        (NO_RESCALE, run(lambda: online(q, k, v, block_size, causal, scale, rescale_acc=False))),
        (NO_RESCALE, run(lambda: online(q, k, v, block_size, causal, scale, rescale_acc=False, rescale_sum=False))),
        (NO_RESCALE, run(lambda: online(q, k, v, block_size, causal, scale, rescale_sum=False))),
        (NOT_NORMALISED, run(lambda: online(q, k, v, block_size, causal, scale, normalise=False))),
    ]
    if causal:
        for mistake, offset in ((CAUSAL_TOP_LEFT, 0), (CAUSAL_NO_DIAGONAL, S - L - 1)):
            mask = causal_allowed(L, S, q.device, offset)
            candidates.append((mistake, run(lambda mask=mask: attention(q, k, v, mask, scale)[0])))
        future = torch.arange(S, device=q.device) >= torch.arange(L, device=q.device).unsqueeze(-1) + (S - L)
        candidates.append((CAUSAL_INVERTED, run(lambda: attention(q, k, v, future, scale)[0])))
        candidates.append((CAUSAL_IGNORED, run(lambda: attention(q, k, v, None, scale)[0])))
        return candidates + attention_mistakes(q, k, v, causal_allowed(L, S, q.device), scale)
    return candidates + attention_mistakes(q, k, v, None, scale)


def label(q, k, v, block_size, causal=False, scale=None):
    return describe(q=q, k=k, v=v, block_size=block_size, causal=causal or None, scale=scale)


# ---------------------------------------------------------------------------------------
# The checks


@check("your file imports and defines tiled_attention")
def check_defines(learner):
    require_defined(learner)


@check("out matches the reference (float64 and float32; ragged last block, block_size 1 and >= S, L != S)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            q, k, v = make_qkv(shape, dtype, device, seed=10 * seed)
            block = shape[-1]
            out, _ = tiled(learner, q, k, v, block_size=block)
            compare("out", out, reference.tiled_attention(q, k, v, block_size=block), inputs=label(q, k, v, block),
                    mistakes=tiled_mistakes(q, k, v, block))


@check("causal=True matches the reference, bottom-right aligned: query i sees key j iff j <= i + (S - L)")
def check_causal(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(CAUSAL_SHAPES):
            q, k, v = make_qkv(shape, dtype, device, seed=100 + 10 * seed)
            block = shape[-1]
            out, _ = tiled(learner, q, k, v, block_size=block, causal=True)
            expected = reference.tiled_attention(q, k, v, block_size=block, causal=True)
            compare("out", out, expected, inputs=label(q, k, v, block, causal=True),
                    mistakes=tiled_mistakes(q, k, v, block, causal=True))


@check("causal with L > S: the first L - S queries see no key and get 0, never NaN (forward and gradients)")
def check_causal_rows_without_keys(learner, reference, device):
    shape = (2, 2, 7, 4, 4, 3, 3)  # L = 7 > S = 4: queries 0, 1, 2 see nothing
    q, k, v = make_qkv(shape, torch.float64, device, seed=200, requires_grad=True)
    inputs = label(q, k, v, 3, causal=True) + "; queries 0-2 see no key"
    out, _ = tiled(learner, q, k, v, block_size=3, causal=True)
    if torch.isnan(out).any():
        fail(f"out has NaN for {inputs}: a row with no allowed key has l = 0 and acc = 0; return 0 there, "
             "and keep exp(-inf - (-inf)) out of the running max.")
    compare("out", out, reference.tiled_attention(q, k, v, block_size=3, causal=True), inputs=inputs,
            mistakes=tiled_mistakes(q, k, v, 3, causal=True))
    compare_gradients(out, reference.tiled_attention(q, k, v, block_size=3, causal=True), {"q": q, "k": k, "v": v},
                      inputs=inputs, nonfinite="mask with masked_fill and replace the zero sum l by 1 before "
                                               "dividing, rather than letting 0 / 0 or -inf - -inf happen.")


@check("matches torch's scaled_dot_product_attention (causal given to it as a bottom-right boolean mask)")
def check_matches_builtin(learner, device):
    for dtype in DTYPES:
        for seed, shape in enumerate([(2, 3, 5, 7, 4, 6, 3), (1, 2, 8, 8, 4, 4, 3)]):
            q, k, v = make_qkv(shape, dtype, device, seed=300 + 10 * seed)
            L, S = q.size(-2), k.size(-2)
            for causal in (False, True):
                out, _ = tiled(learner, q, k, v, block_size=3, causal=causal)
                # torch's is_causal=True is top-left aligned, so pass the bottom-right mask explicitly
                mask = causal_allowed(L, S, device) if causal else None
                expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, Dv)
                compare("out against torch's scaled_dot_product_attention", out, expected,
                        inputs=label(q, k, v, 3, causal), mistakes=tiled_mistakes(q, k, v, 3, causal))


@check("never holds an L x S matrix: no tensor reaches L*S elements (L = S = 64, block_size 8)")
def check_never_full_scores(learner, reference, device):
    B, H, L, S, D = 1, 2, 64, 64, 4
    q, k, v = make_qkv((B, H, L, S, D, D, 8), torch.float64, device, seed=400)
    for causal in (False, True):
        inputs = label(q, k, v, 8, causal)
        out, watch = tiled(learner, q, k, v, block_size=8, causal=causal)
        numel, op, shape = watch.largest
        if numel >= L * S:
            fail(f"you computed the full L x S score matrix: for {inputs} your code created a tensor of shape "
                 f"{list(shape)} ({numel} elements, from {op}), but no tensor may reach L*S = {L * S} elements. "
                 f"A loop over key blocks needs at most about B*H*L*block_size = {B * H * L * 8}: compute each "
                 "block's scores (and its part of any causal mask) inside the loop.", FULL_SCORES.key)
        compare("out", out, reference.tiled_attention(q, k, v, block_size=8, causal=causal), inputs=inputs,
                mistakes=tiled_mistakes(q, k, v, 8, causal))


@check("large logits (about 1e4) give finite, correct results")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        for causal in (False, True):
            q, k, v = make_qkv((2, 2, 6, 9, 4, 3, 4), dtype, device, seed=500)
            q, k = q * 100, k * 100  # scores of order 1e4
            inputs = label(q, k, v, 4, causal) + ", scores near 1e4"
            out, _ = tiled(learner, q, k, v, block_size=4, causal=causal)
            if not torch.isfinite(out).all():
                fail(f"out overflows to inf/NaN for {inputs}: exponentiate scores minus the running max, "
                     "never the raw scores.")
            compare("out", out, reference.tiled_attention(q, k, v, block_size=4, causal=causal), inputs=inputs,
                    mistakes=tiled_mistakes(q, k, v, 4, causal))


@check("an explicit scale replaces 1/sqrt(D)")
def check_explicit_scale(learner, reference, device):
    for causal in (False, True):
        q, k, v = make_qkv((2, 3, 5, 7, 4, 6, 3), torch.float64, device, seed=600)
        out, _ = tiled(learner, q, k, v, block_size=3, causal=causal, scale=0.37)
        mask = causal_allowed(5, 7, device) if causal else None
        compare("out", out, reference.tiled_attention(q, k, v, block_size=3, causal=causal, scale=0.37),
                inputs=label(q, k, v, 3, causal, 0.37),
                mistakes=[(SCALE_IGNORED, lambda: attention(q, k, v, mask)[0])]
                + tiled_mistakes(q, k, v, 3, causal, scale=0.37))


@check("gradients with respect to q, k and v match the reference (autograd through your loop)")
def check_gradients(learner, reference, device):
    for seed, (shape, causal) in enumerate([((2, 2, 5, 7, 4, 3, 3), False), ((1, 2, 6, 6, 3, 4, 4), True)]):
        q, k, v = make_qkv(shape, torch.float64, device, seed=700 + 10 * seed, requires_grad=True)
        block = shape[-1]
        inputs = label(q, k, v, block, causal)
        out, _ = tiled(learner, q, k, v, block_size=block, causal=causal)
        compare_gradients(out, reference.tiled_attention(q, k, v, block_size=block, causal=causal),
                          {"q": q, "k": k, "v": v}, inputs=inputs)


@check("bad arguments raise ValueError naming the argument")
def check_bad_arguments(learner, device):
    def t(*shape):
        return randn(*shape, device=device)

    learner.raises("block_size=0", ("block_size",), "tiled_attention", t(1, 2, 5, 4), t(1, 2, 7, 4), t(1, 2, 7, 4),
                   block_size=0)
    learner.raises("q (1, 2, 5, 4) and k (1, 2, 7, 3) of different widths", ("q", "k"),
                   "tiled_attention", t(1, 2, 5, 4), t(1, 2, 7, 3), t(1, 2, 7, 4))
    learner.raises("k (1, 2, 7, 4) and v (1, 2, 6, 4) of different lengths", ("k", "v"),
                   "tiled_attention", t(1, 2, 5, 4), t(1, 2, 7, 4), t(1, 2, 6, 4))
