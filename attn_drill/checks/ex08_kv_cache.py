"""Hidden checks for ex8: a KV cache and causal self-attention that decodes through it."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attn_drill.checks.harness import (
    DTYPES, Mistake, builtin_multihead, check, compare, copy_parameters, describe, expect_every_parameter_has_grad,
    expect_tensor, expect_tuple, fail, randn, require_defined,
)
from attn_drill.checks.mistakes import CAUSAL_TOP_LEFT

CACHE_OVERWRITTEN = Mistake(
    "cache-overwritten", "attention over the newest tokens only: the cache is overwritten instead of appended")
CACHE_OVERWRITTEN_KEYS = Mistake(
    "cache-overwritten", "the newest keys or values only: the cache is overwritten instead of appended")
CHUNK_CAUSAL_MISSING = Mistake(
    "chunk-causal-missing", "attention with no causal mask within the new chunk: a new token sees the later "
    "tokens of its own chunk")
QUERIES_CACHED = Mistake(
    "queries-cached", "one output per cached position: the queries were cached too, but only the new tokens need "
    "an output (queries are never cached)")
CAUSAL_MISSING = Mistake(
    "causal-missing", "attention without the causal mask: every position sees the whole sequence, its future included")

NAME = "CachedCausalSelfAttention"


# ---------------------------------------------------------------------------------------
# Modules, caches and calls


def make_pair(learner, reference, E, H, *, bias=True, dtype=torch.float64, device=None, seed=0):
    """(the learner's module, the reference module) with the same reproducible weights, in eval mode."""
    ref = reference.CachedCausalSelfAttention(E, H, bias=bias).to(dtype=dtype, device=device)
    with torch.no_grad():
        for i, parameter in enumerate(ref.parameters()):
            parameter.copy_(randn(*parameter.shape, dtype=dtype, device=device, seed=1000 * seed + i) / math.sqrt(E))
    mine = learner.new(NAME, E, H, bias=bias)
    if not isinstance(mine, nn.Module):
        fail(f"{NAME}(...) should be a torch.nn.Module, got {type(mine).__name__}.")
    mine = mine.to(dtype=dtype, device=device)
    copy_parameters(NAME, mine, ref)
    return mine.eval(), ref.eval()


def new_cache(learner):
    return learner.new("KVCache")


def cache_length(learner, cache):
    n = learner.run(cache.__len__, what="len(cache)")
    if not isinstance(n, int):
        fail(f"len(cache) should be an int, got {type(n).__name__}.")
    return n


def forward(learner, module, x, cache=None):
    what = f"{NAME}.forward" + ("" if cache is None else " with a cache")
    kwargs = {} if cache is None else {"cache": cache}
    return expect_tensor(learner.run(module, x, what=what, **kwargs), what)


def decode(learner, mine, ref, x, chunks, *, inputs):
    """Feed x through one fresh cache in chunks of the given sizes; compare each step with one full pass."""
    B, T, E = x.shape
    H = ref.num_heads
    with torch.no_grad():
        full = ref(x)  # (B, T, E): one causal pass, no cache
    cache = new_cache(learner)
    start = 0
    for size in chunks:
        chunk = x[:, start:start + size]  # (B, size, E)
        where = (f"positions {start} .. {start + size - 1} fed with len(cache) = {start} before the call "
                 f"({inputs}, chunks {chunks})")
        with torch.no_grad():
            out = forward(learner, mine, chunk, cache)
        if out.shape != chunk.shape:
            if out.shape == (B, start + size, E) and start > 0:
                fail(f"the output has shape {tuple(out.shape)} for {where}; expected one output per new token, "
                     f"{tuple(chunk.shape)}.\nYour output equals {QUERIES_CACHED.says}.", QUERIES_CACHED.key)
            fail(f"the output has shape {tuple(out.shape)} for {where}; expected (B, T_new, E) = {tuple(chunk.shape)}.")
        compare("the decoded output", out, full[:, start:start + size], inputs=where,
                mistakes=decode_mistakes(ref, x[:, :start], chunk, H))
        n = cache_length(learner, cache)
        if n != start + size:
            if n == size and start > 0:
                fail(f"len(cache) is {n} after {where}; expected {start + size}: the cache must grow by the new "
                     "tokens, but it holds only the newest ones: it is overwritten instead of appended.",
                     CACHE_OVERWRITTEN.key)
            fail(f"len(cache) is {n} after {where}; expected {start} + {size} = {start + size}: the cache must grow "
                 "by exactly the new tokens.")
        start += size
    return cache


# ---------------------------------------------------------------------------------------
# Known mistakes, computed from the reference module's weights


def split_qkv(ref, x, H):
    """q, k, v of x in heads: 3 x (B, H, T, D)."""
    B, T, E = x.shape
    q, k, v = F.linear(x, ref.qkv.weight, ref.qkv.bias).split(E, dim=2)  # 3 x (B, T, E)
    return tuple(t.view(B, T, H, E // H).transpose(1, 2) for t in (q, k, v))


def decode_variant(ref, seen, new, H, kind):
    """The output for the tokens ``new`` after ``seen`` were cached, as a known mistake computes it."""
    with torch.no_grad():
        B, T, E = new.shape
        q, _, _ = split_qkv(ref, new, H)  # (B, H, T, D)
        _, k, v = split_qkv(ref, new if kind == "overwritten" else torch.cat([seen, new], dim=1), H)  # (B, H, S, D)
        S = k.size(2)
        offset = torch.arange(S, device=new.device)[None, :] - torch.arange(T, device=new.device)[:, None]  # j - i
        allowed = {"top-left": offset <= 0, "unmasked": offset == offset, "overwritten": offset <= 0}[kind]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(E // H)  # (B, H, T, S)
        att = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, E)  # (B, T, E)
        return F.linear(y, ref.out_proj.weight, ref.out_proj.bias)


def decode_mistakes(ref, seen, new, H):
    candidates = [(CHUNK_CAUSAL_MISSING, lambda: decode_variant(ref, seen, new, H, "unmasked"))]
    if seen.size(1):
        candidates = [(CAUSAL_TOP_LEFT, lambda: decode_variant(ref, seen, new, H, "top-left")),
                      (CACHE_OVERWRITTEN, lambda: decode_variant(ref, seen, new, H, "overwritten")),
                      *candidates]
    return candidates


# ---------------------------------------------------------------------------------------
# Checks


@check("your file imports and defines KVCache and CachedCausalSelfAttention")
def check_defines(learner):
    require_defined(learner)


@check("KVCache starts empty, append concatenates along time and returns the full keys and values")
def check_kv_cache(learner, device):
    for dtype in DTYPES:
        cache = new_cache(learner)
        empty = getattr(cache, "k", 0) is None and getattr(cache, "v", 0) is None
        if cache_length(learner, cache) != 0 or not empty:
            fail("a new KVCache() should be empty: len(cache) == 0 and the attributes cache.k and cache.v are None "
                 "(set them in __init__).")
        seen_k, seen_v = [], []
        for step, T_new in enumerate((3, 1, 2)):
            k_new = randn(2, 3, T_new, 4, dtype=dtype, device=device, seed=10 + step)  # (B, H, T_new, D)
            v_new = randn(2, 3, T_new, 4, dtype=dtype, device=device, seed=20 + step)  # (B, H, T_new, D)
            seen_k.append(k_new)
            seen_v.append(v_new)
            want_k, want_v = torch.cat(seen_k, dim=2), torch.cat(seen_v, dim=2)  # (B, H, T_cached, D)
            result = learner.run(cache.append, k_new, v_new, what="KVCache.append")
            k, v = expect_tuple(result, 2, "KVCache.append()")
            inputs = (f"appends of {[t.size(2) for t in seen_k]} positions, k_new and v_new "
                      f"{tuple(k_new.shape)} (B, H, T_new, D), {str(dtype).replace('torch.', '')}")
            overwritten = [(CACHE_OVERWRITTEN_KEYS, lambda k_new=k_new: k_new)]
            compare("k returned by append", k, want_k, inputs=inputs, mistakes=overwritten)
            compare("v returned by append", v, want_v, inputs=inputs,
                    mistakes=[(CACHE_OVERWRITTEN_KEYS, lambda v_new=v_new: v_new)])
            compare("cache.k after append", getattr(cache, "k", None), want_k, inputs=inputs, mistakes=overwritten)
            compare("cache.v after append", getattr(cache, "v", None), want_v, inputs=inputs)
            n = cache_length(learner, cache)
            if n != want_k.size(2):
                fail(f"len(cache) is {n} after {inputs}; expected {want_k.size(2)}, the number of positions cached.")


@check("embed_dim not divisible by num_heads raises ValueError naming both")
def check_bad_arguments(learner):
    for E, H in ((10, 4), (6, 4)):
        for name in ("embed_dim", "num_heads"):
            learner.raises(f"embed_dim={E}, num_heads={H}", (name,), NAME, E, H)


@check("without a cache: plain causal self-attention, matching the reference and nn.MultiheadAttention; "
       "every parameter gets a gradient")
def check_no_cache(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, bias) in enumerate([(2, 5, 8, 2, True), (1, 1, 6, 3, False), (3, 4, 4, 1, True)]):
            mine, ref = make_pair(learner, reference, E, H, bias=bias, dtype=dtype, device=device, seed=seed)
            x = 2 * randn(B, T, E, dtype=dtype, device=device, seed=30 + seed)  # (B, T, E)
            inputs = describe(x=x, num_heads=H, bias=bias)
            causal_missing = [(CAUSAL_MISSING, lambda: decode_variant(ref, x[:, :0], x, H, "unmasked"))]
            compare("the output with cache=None", forward(learner, mine, x), ref(x), inputs=inputs,
                    mistakes=causal_missing)
            mha = builtin_multihead(H, ref.qkv.weight, ref.qkv.bias, ref.out_proj.weight, ref.out_proj.bias)
            with torch.no_grad():
                # nn.MultiheadAttention's boolean attn_mask has the opposite polarity: True = NOT allowed.
                not_allowed = torch.ones(T, T, dtype=torch.bool, device=device).triu(diagonal=1)  # (T, T)
                expected, _ = mha(x, x, x, attn_mask=not_allowed, need_weights=False)  # (B, T, E)
            compare("the output with cache=None", forward(learner, mine, x), expected,
                    inputs=inputs + "; compared with nn.MultiheadAttention given in_proj_weight = qkv.weight, "
                    "in_proj_bias = qkv.bias, your out_proj, and attn_mask = triu(ones(T, T), 1) (its boolean "
                    "mask means True = NOT allowed, the opposite of ours)", mistakes=causal_missing)
    mine, ref = make_pair(learner, reference, 8, 2, device=device, seed=9)
    mine.train()
    x = 2 * randn(2, 5, 8, device=device, seed=39)
    out = forward(learner, mine, x)
    if not out.requires_grad:
        fail(f"the output with cache=None is cut off from the graph (no grad_fn) for x {tuple(x.shape)}: "
             "do not detach.")
    (out * randn(*out.shape, device=device, seed=40)).sum().backward()
    expect_every_parameter_has_grad(NAME, mine)


@check("prefill then one token at a time equals one full causal pass (prompts of 1, 3 and 7 tokens)")
def check_token_by_token(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, E, H, prompt) in enumerate([(2, 8, 2, 3), (2, 8, 2, 1), (1, 6, 3, 7), (3, 4, 1, 3)]):
            mine, ref = make_pair(learner, reference, E, H, bias=seed != 1, dtype=dtype, device=device, seed=10 + seed)
            T = prompt + 3
            x = 2 * randn(B, T, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            decode(learner, mine, ref, x, [prompt] + [1] * 3, inputs=describe(x=x, num_heads=H))


@check("decoding in chunks of several tokens equals one full pass (the mask inside a chunk is bottom-right aligned)")
def check_chunks(learner, reference, device):
    for dtype in DTYPES:
        for seed, chunks in enumerate([[3, 2, 2, 2], [1, 2, 3, 2], [2, 2, 2]]):
            mine, ref = make_pair(learner, reference, 8, 2, dtype=dtype, device=device, seed=20 + seed)
            x = 2 * randn(2, sum(chunks), 8, dtype=dtype, device=device, seed=60 + seed)  # (B, T, E)
            decode(learner, mine, ref, x, chunks, inputs=describe(x=x, num_heads=2))


@check("the cache grows by exactly the new tokens and holds every position's keys and values, (B, H, T, D)")
def check_cache_contents(learner, reference, device):
    B, E, H = 2, 8, 2
    mine, ref = make_pair(learner, reference, E, H, device=device, seed=30)
    x = 2 * randn(B, 6, E, device=device, seed=70)  # (B, T, E)
    cache = new_cache(learner)
    start = 0
    for size in (3, 1, 2):
        with torch.no_grad():
            forward(learner, mine, x[:, start:start + size], cache)
        start += size
        n = cache_length(learner, cache)
        inputs = f"x {tuple(x.shape)}, num_heads={H}, float64; chunks (3, 1, 2), after {start} positions"
        if n != start:
            fail(f"len(cache) is {n} for {inputs}; expected {start}: the cache grows by exactly the new tokens.",
                 CACHE_OVERWRITTEN.key if n == size and start > size else None)
        with torch.no_grad():
            _, want_k, want_v = split_qkv(ref, x[:, :start], H)  # (B, H, start, D)
        compare("cache.k (the keys of every position so far, in heads)", getattr(cache, "k", None), want_k,
                inputs=inputs, mistakes=[(CACHE_OVERWRITTEN_KEYS, lambda size=size: want_k[:, :, -size:])])
        compare("cache.v (the values of every position so far, in heads)", getattr(cache, "v", None), want_v,
                inputs=inputs)


@check("two caches used in turn stay independent: the state lives in each KVCache, not in the module or the class")
def check_independent_caches(learner, reference, device):
    mine, ref = make_pair(learner, reference, 8, 2, device=device, seed=40)
    xs = [2 * randn(2, 5, 8, device=device, seed=80 + i) for i in range(2)]  # two sequences (B, T, E)
    with torch.no_grad():
        fulls = [ref(x) for x in xs]
    caches = [new_cache(learner), new_cache(learner)]
    for start, size in ((0, 2), (2, 1), (3, 2)):
        for i in (0, 1):
            with torch.no_grad():
                out = forward(learner, mine, xs[i][:, start:start + size], caches[i])
            compare(f"the output of sequence {i}", out, fulls[i][:, start:start + size],
                    inputs=f"two sequences x {tuple(xs[i].shape)} decoded in turn with a KVCache each "
                    "(chunks 2, 1, 2), "
                    f"positions {start} .. {start + size - 1}, float64",
                    mistakes=decode_mistakes(ref, xs[i][:, :start], xs[i][:, start:start + size], 2))
    fresh = new_cache(learner)
    if cache_length(learner, fresh) != 0 or getattr(fresh, "k", 0) is not None:
        fail("a new KVCache() is not empty after other caches were used: keep k and v on the instance "
             "(set them in __init__), not on the class.")
