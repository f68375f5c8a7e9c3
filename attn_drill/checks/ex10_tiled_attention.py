"""Hidden checks for ex10: tiled attention with an online softmax (the FlashAttention forward).
Whether an L x S matrix is held is judged on the worker's memory as the kernel measures it; the
largest tensor the worker reports only makes the message precise."""

import math
import os

import torch
import torch.nn.functional as F

from attn_drill.checks.harness import (DTYPES, TRIPPED, _t, check, compare, compare_gradients, describe, fail, mistake,
                                      randn)
from attn_drill.checks.mistakes import attention, attention_mistakes
from attn_drill.checks.properties import check_defines, check_static_scan, finite, outputs  # noqa: F401

# (B, H, L, S, D, Dv, block_size): length 1, L != S, S not divisible by the block, block 1, block >= S.
SHAPES = [(1, 1, 1, 3, 4, 4, 2), (2, 3, 5, 7, 4, 6, 3), (2, 2, 9, 9, 8, 8, 4), (1, 2, 4, 10, 3, 5, 64),
          (2, 1, 6, 5, 4, 4, 1), (1, 2, 7, 13, 5, 3, 5)]
# Causal: L == S, L < S (a cache), ragged last block, block 1, block >= S, one query.
CAUSAL_SHAPES = [(2, 2, 9, 9, 4, 4, 4), (2, 3, 5, 7, 4, 6, 3), (1, 2, 6, 11, 3, 5, 4), (2, 1, 5, 5, 4, 3, 1),
                 (1, 1, 4, 6, 4, 4, 16), (1, 2, 1, 6, 4, 4, 4)]
# The memory check: a float32 L x S matrix is 160 MiB, a bool one 40 MiB (both above glibc's 32 MiB
# mmap threshold: always fresh pages, which the kernel counts); a blocked loop's (L, block)
# temporaries come to a few MiB (about 20 computing in float64). The bound: 3/4 of the bool matrix.
BIG = (1, 1, 1024, 40960, 4, 4, 256)
MEMORY_BOUND = BIG[2] * BIG[3] * 3 // 4


def make_qkv(shape, dtype, device, seed=0, requires_grad=False):
    B, H, L, S, D, Dv, _ = shape  # q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv)
    return tuple(randn(B, H, T, W, dtype=dtype, device=device, seed=seed + i, requires_grad=requires_grad)
                 for i, (T, W) in enumerate(((L, D), (S, D), (S, Dv))))


def causal_allowed(L, S, device, offset=None):
    """(L, S) bool, True = may attend: j <= i + offset; bottom-right alignment is offset S - L."""
    rows = torch.arange(L, device=device).unsqueeze(-1)                                   # (L, 1)
    return torch.arange(S, device=device) <= rows + (S - L if offset is None else offset)  # (L, S)


def online(q, k, v, block, causal=False, scale=None, *, rescale_acc=True, rescale_sum=True, normalise=True):
    """The online-softmax loop with switches that reproduce wrong updates."""
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    m = q.new_full((*q.shape[:-1], 1), float("-inf"))                           # (B, H, L, 1)
    l, acc = q.new_zeros((*q.shape[:-1], 1)), q.new_zeros((*q.shape[:-1], v.size(-1)))  # (B, H, L, 1), (B, H, L, Dv)
    allowed = causal_allowed(q.size(-2), k.size(-2), q.device)                  # (L, S), fine in the check itself
    for start in range(0, k.size(-2), block):
        scores = q @ k[..., start:start + block, :].transpose(-2, -1) * scale   # (B, H, L, Bk)
        if causal:
            scores = scores.masked_fill(~allowed[:, start:start + block], float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
        alpha, p = torch.exp(m - m_safe), torch.exp(scores - m_safe)            # (B, H, L, 1), (B, H, L, Bk)
        l = (l * alpha if rescale_sum else l) + p.sum(-1, keepdim=True)
        acc, m = (acc * alpha if rescale_acc else acc) + p @ v[..., start:start + block, :], m_new
    return acc / l.masked_fill(l == 0, 1.0) if normalise else acc


def tiled_mistakes(q, k, v, block, causal=False, scale=None):
    """Known mistakes for tiled attention on these inputs, each computing the output it would give."""
    q, k, v = q.detach(), k.detach(), v.detach()
    L, S = q.size(-2), k.size(-2)

    def loop(**switches):
        return lambda: online(q, k, v, block, causal, scale, **switches)

    def masked(offset, invert=False):
        return lambda: attention(q, k, v, None if offset is None else causal_allowed(L, S, q.device, offset) ^ invert,
                                 scale)[0]

    no_rescale = mistake("online-softmax-no-rescale")
    found = [(no_rescale, loop(rescale_acc=False)), (no_rescale, loop(rescale_acc=False, rescale_sum=False)),
             (no_rescale, loop(rescale_sum=False)), (mistake("online-softmax-not-normalised"), loop(normalise=False))]
    if causal:
        found += [(mistake("causal-top-left"), masked(0)), (mistake("causal-excludes-diagonal"), masked(S - L - 1)),
                  (mistake("causal-inverted"), masked(S - L - 1, True)), (mistake("causal-ignored"), masked(None))]
    return found + attention_mistakes(q, k, v, causal_allowed(L, S, q.device) if causal else None, scale)


def tiled(learner, q, k, v, **kwargs):
    return outputs(learner.call("tiled_attention", q, k, v, **kwargs), 1, "tiled_attention()")[0]


def expect(learner, reference, q, k, v, block, causal=False, scale=None, *, note="", extra=(), builtin=False):
    """The learner's tiled_attention equals the reference's (or torch's sdpa) on these inputs; returns it."""
    out = tiled(learner, q, k, v, block_size=block, causal=causal, scale=scale)
    inputs = describe(q=q, k=k, v=v, block_size=block, causal=causal or None, scale=scale) + note
    finite("out", [out], inputs=inputs, advice=_t("exponentiate the scores minus the running max, never the raw "
                                                  "scores; a row with no allowed key has l = 0 and acc = 0: return 0 "
                                                  "there, not 0 / 0.",
                                                  "对分数减去当前的最大值后再取 exp，绝不要对原始分数取 exp；没有任何"
                                                  "允许的 key 的行 l = 0 且 acc = 0：在那里返回 0，而不是 0 / 0。"))
    if builtin:  # torch's is_causal=True is top-left aligned: give it the bottom-right mask (True = may attend)
        mask = causal_allowed(q.size(-2), k.size(-2), q.device) if causal else None
        want, what = F.scaled_dot_product_attention(q, k, v, attn_mask=mask), _t("out against torch's sdpa",
                                                                                 "out 对照 torch 的 sdpa")
    else:
        want, what = reference.tiled_attention(q, k, v, block_size=block, causal=causal, scale=scale), "out"
    compare(what, out, want, inputs=inputs, mistakes=[*extra, *tiled_mistakes(q, k, v, block, causal, scale)])
    return out, want


@check("out matches the reference (float64 and float32; ragged last block, block_size 1 and >= S, L != S)",
       zh="out 与参考实现一致（float64 和 float32；最后一块不完整，block_size 为 1 和 >= S，L != S）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(SHAPES):
            expect(learner, reference, *make_qkv(shape, dtype, device, seed=10 * seed), shape[-1])


@check("causal=True matches the reference, bottom-right aligned: query i sees key j iff j <= i + (S - L)",
       zh="使用因果掩码（causal=True）时与参考实现一致，右下对齐：query i 能看到 key j 当且仅当 j <= i + (S - L)")
def check_causal(learner, reference, device):
    for dtype in DTYPES:
        for seed, shape in enumerate(CAUSAL_SHAPES):
            expect(learner, reference, *make_qkv(shape, dtype, device, seed=100 + 10 * seed), shape[-1], True)


@check("causal with L > S: the first L - S queries see no key and get 0, never NaN (forward and gradients)",
       zh="因果掩码且 L > S：前 L - S 个 query 看不到任何 key，得到 0，绝不是 NaN（前向和梯度）")
def check_causal_rows_without_keys(learner, reference, device):
    q, k, v = make_qkv((2, 2, 7, 4, 4, 3, 3), torch.float64, device, seed=200, requires_grad=True)  # L 7 > S 4
    compare_gradients(learner, *expect(learner, reference, q, k, v, 3, True,
                                       note=_t("; queries 0-2 see no key", "；query 0-2 看不到任何 key")),
                      {"q": q, "k": k, "v": v}, inputs=describe(q=q, k=k, v=v, block_size=3, causal=True),
                      nonfinite=_t("mask with masked_fill and replace the zero sum l by 1 before dividing, rather "
                                   "than letting 0 / 0 or -inf - -inf happen.",
                                   "用 masked_fill 屏蔽，并在相除之前把为零的和 l 换成 1，不要让 0 / 0 或 "
                                   "-inf - -inf 发生。"))


@check("matches torch's scaled_dot_product_attention (causal given to it as a bottom-right boolean mask)",
       zh="与 torch 的 scaled_dot_product_attention 一致（因果掩码以右下对齐的布尔掩码传给它）")
def check_matches_builtin(learner, device):
    for dtype in DTYPES:
        for seed, shape in enumerate([(2, 3, 5, 7, 4, 6, 3), (1, 2, 8, 8, 4, 4, 3)]):
            for causal in (False, True):
                expect(learner, None, *make_qkv(shape, dtype, device, seed=300 + 10 * seed), 3, causal, builtin=True)


@check("large logits (about 1e4) give finite, correct results",
       zh="很大的 logits（约 1e4）给出有限且正确的结果")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        for causal in (False, True):
            q, k, v = make_qkv((2, 2, 6, 9, 4, 3, 4), dtype, device, seed=500)
            expect(learner, reference, q * 100, k * 100, v, 4, causal, note=_t(", scores near 1e4", "，分数约为 1e4"))


@check("an explicit scale replaces 1/sqrt(D)",
       zh="显式给出的 scale 取代 1/sqrt(D)")
def check_explicit_scale(learner, reference, device):
    for causal in (False, True):
        q, k, v = make_qkv((2, 3, 5, 7, 4, 6, 3), torch.float64, device, seed=600)
        mask = causal_allowed(5, 7, device) if causal else None
        expect(learner, reference, q, k, v, 3, causal, 0.37,
               extra=[(mistake("scale-ignored"), lambda: attention(q, k, v, mask)[0])])


@check("gradients with respect to q, k and v match the reference (autograd through your loop)",
       zh="对 q、k、v 的梯度与参考实现一致（autograd 穿过你的循环）")
def check_gradients(learner, reference, device):
    for seed, (shape, causal) in enumerate([((2, 2, 5, 7, 4, 3, 3), False), ((1, 2, 6, 6, 3, 4, 4), True)]):
        q, k, v = make_qkv(shape, torch.float64, device, seed=700 + 10 * seed, requires_grad=True)
        compare_gradients(learner, *expect(learner, reference, q, k, v, shape[-1], causal), {"q": q, "k": k, "v": v},
                          inputs=describe(q=q, k=k, v=v, block_size=shape[-1], causal=causal))


@check("bad arguments raise ValueError naming the argument",
       zh="错误的参数会抛出指明该参数的 ValueError")
def check_bad_arguments(learner, device):
    q, k, v, k3, v6 = (randn(1, 2, *shape, device=device) for shape in ((5, 4), (7, 4), (7, 4), (7, 3), (6, 4)))
    for block_size in (0, -3):
        learner.raises(f"block_size={block_size}", ("block_size",), "tiled_attention", q, k, v, block_size=block_size)
    learner.raises(_t("q (1, 2, 5, 4) and k (1, 2, 7, 3) of different widths",
                      "q (1, 2, 5, 4) 与 k (1, 2, 7, 3) 的宽度不同"),
                   ("q", "k"), "tiled_attention", q, k3, v)
    learner.raises(_t("k (1, 2, 7, 4) and v (1, 2, 6, 4) of different lengths",
                      "k (1, 2, 7, 4) 与 v (1, 2, 6, 4) 的长度不同"),
                   ("k", "v"), "tiled_attention", q, k, v6)


@check(f"never holds an L x S matrix: memory rises by far less than one bool L x S mask (L = {BIG[2]}, "
       f"S = {BIG[3]})",
       zh=f"从不持有 L x S 矩阵：内存的增长远小于一个 bool 类型的 L x S 掩码（L = {BIG[2]}，S = {BIG[3]}）")
def check_never_full_scores(learner):
    # Last: full matrices that exhaust the worker's memory come after every other verdict. On CPU
    # whatever the device, since the kernel measures host memory.
    B, H, L, S, D, _, block = BIG
    q, k, v = make_qkv(BIG, torch.float32, "cpu", seed=400)
    for causal in (False, True):  # not measured: the allocator's first growth, with the same (L, block) temporaries
        tiled(learner, q, k[..., :4 * block, :], v[..., :4 * block, :], block_size=block, causal=causal)
    for causal in (False, True):
        inputs = describe(q=q, k=k, v=v, block_size=block, causal=causal or None)
        def measured(stop_above=None):
            return learner.peak_memory(lambda: learner.call_watched("tiled_attention", q, k, v, block_size=block,
                                                                    causal=causal, stop_above=stop_above))
        (out, largest), rise = measured(stop_above=MEMORY_BOUND)  # ended at the first tensor of the bound's size
        if out is TRIPPED and rise < MEMORY_BOUND:                 # made but never filled: run it whole
            (out, largest), rise = measured()
        if rise >= MEMORY_BOUND:
            fail(_t(f"you computed the full L x S score matrix (or mask): for {inputs} your worker's memory rose by "
                    f"{rise / 2**20:.0f} MiB (a float32 L x S matrix is {L * S * 4 >> 20} MiB, a bool one "
                    f"{L * S >> 20} MiB; the bound is {MEMORY_BOUND >> 20} MiB). Your largest tensor [elements, op, "
                    f"shape]: {largest}; a loop over key blocks needs about B*H*L*block_size = {B * H * L * block} "
                    "elements. Compute each block's scores (and its part of any causal mask) inside the loop.",
                    f"你计算了完整的 L x S 分数矩阵（或掩码）：输入为 {inputs} 时，你的 worker 的内存增长了 "
                    f"{rise / 2**20:.0f} MiB（一个 float32 的 L x S 矩阵是 {L * S * 4 >> 20} MiB，bool 的是 "
                    f"{L * S >> 20} MiB；上限是 {MEMORY_BOUND >> 20} MiB）。你最大的张量 [元素数, 算子, 形状]："
                    f"{largest}；按 key 块循环只需要约 B*H*L*block_size = {B * H * L * block} 个元素。请在循环内"
                    "计算每一块的分数（以及它那一部分的因果掩码）。"),
                 mistake("full-score-matrix").key)
        # Checked on rows drawn afresh at each grading (rows are independent): the reference for all
        # of them would cost the judge as much as the learner's two runs.
        rows = torch.randperm(L, generator=torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little")))[:64]
        allowed = causal_allowed(L, S, "cpu")[rows] if causal else None                    # (64, S)
        want = F.scaled_dot_product_attention(q[..., rows, :], k, v, attn_mask=allowed)    # (B, H, 64, Dv)
        compare("out", outputs(out, 1, "tiled_attention()")[0][..., rows, :], want,
                inputs=inputs + _t(f" (rows {rows[:4].tolist()}...)", f"（第 {rows[:4].tolist()}... 行）"))
