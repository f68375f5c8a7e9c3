"""Hidden checks for ex8: a KV cache and causal self-attention that decodes through it."""

import torch

from attn_drill.checks.harness import DTYPES, check, compare, describe, fail, mistake, projection, randn
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    CAUSAL_BUILTIN, causal_builtin, causal_mistakes, check_defines, check_static_scan, dropout_train_only,
    eval_is_deterministic, every_parameter_learns, fused_causal_attention, indivisible_heads_raise, outputs, twin,
)

NAME = "CachedCausalSelfAttention"


def pair(learner, reference, E, H, *, dtype=torch.float64, device=None, seed=0, **options):
    return twin(learner, reference.CachedCausalSelfAttention, NAME, E, H, dtype=dtype, device=device, seed=seed,
                **options)


def forward(learner, mine, x, cache=None):
    what = f"{NAME}.forward" + ("" if cache is None else " with a cache")
    return outputs(learner.run(mine, x, what=what, **({} if cache is None else {"cache": cache})), 1, what)[0]


def append(learner, cache, k_new, v_new):
    return outputs(learner.method(cache, "append", k_new, v_new), 2, "KVCache.append()")


def decode_mistakes(ref, seen, new, H):
    def variant(context, **switches):
        return lambda: fused_causal_attention(ref, new, H, context, **switches)

    later = [(mistake("causal-top-left"), variant(seen, causal="top-left")),
             (mistake("cache-overwritten"), variant(None))]
    return (later if seen.size(1) else []) + [
        (mistake("chunk-causal-missing"), variant(seen, causal="none")),
        (mistake("causal-off-by-one"), variant(seen, causal="strict", nan_rows=seen.size(1) + new.size(1) > 1))]


def decode(learner, mine, ref, x, chunks, *, inputs):
    """Feed x through one fresh cache in chunks of these sizes; each step must equal one full pass's rows."""
    B, _, E = x.shape
    full, cache, start = ref(x), learner.new("KVCache"), 0  # (B, T, E): one causal pass, no cache
    for size in chunks:
        chunk = x[:, start:start + size]  # (B, size, E)
        where = (f"positions {start} .. {start + size - 1} fed with len(cache) = {start} before the call "
                 f"({inputs}, chunks {chunks})")
        out = forward(learner, mine, chunk, cache)
        if out.shape == (B, start + size, E) and start > 0:
            known = mistake("queries-cached")
            fail(f"the output has shape {tuple(out.shape)} for {where}; expected one output per new token, "
                 f"{tuple(chunk.shape)}.\nYour output equals {known.says}.", known.key)
        compare("the decoded output", out, full[:, start:start + size], inputs=where,
                mistakes=decode_mistakes(ref, x[:, :start], chunk, ref.num_heads))
        n = learner.length(cache)
        if n != start + size:
            overwritten = n == size and start > 0
            fail(f"len(cache) is {n} after {where}; expected {start} + {size} = {start + size}: the cache must grow by "
                 "exactly the new tokens" + (", but it holds only the newest ones: it is overwritten instead of "
                                             "appended." if overwritten else "."),
                 "cache-overwritten" if overwritten else None)
        start += size
    return cache


@check("KVCache starts empty, append concatenates along time and returns the full keys and values")
def check_kv_cache(learner, device):
    for dtype, (B, H, D) in zip(DTYPES, ((2, 3, 4), (1, 1, 5))):
        cache, sent = learner.new("KVCache"), {"k": [], "v": []}
        if learner.length(cache) != 0 or any(learner.attr(cache, name) is not None for name in sent):
            fail("a new KVCache() should be empty: len(cache) == 0 and the attributes cache.k and cache.v are None "
                 "(set them in __init__).")
        for step, T_new in enumerate((3, 1, 2, 1)):
            for i, name in enumerate(sent):
                sent[name].append(randn(B, H, T_new, D, dtype=dtype, device=device, seed=10 * i + step))  # (B, H, T, D)
            got = dict(zip(sent, append(learner, cache, sent["k"][-1], sent["v"][-1])))
            if step == 0:
                first = got  # read back after the later appends
            inputs = (f"appends of {[t.size(2) for t in sent['k']]} positions, k_new and v_new "
                      f"{tuple(sent['k'][-1].shape)} (B, H, T_new, D), {str(dtype).replace('torch.', '')}")
            for name, parts in sent.items():
                for what, value in ((f"{name} returned by append", got[name]),
                                    (f"cache.{name} after append", learner.attr(cache, name))):
                    compare(what, value, torch.cat(parts, dim=2), inputs=inputs,  # (B, H, T_cached, D)
                            mistakes=[(mistake("cache-overwritten"), lambda: parts[-1])])
            if learner.length(cache) != sum(t.size(2) for t in sent["k"]):
                fail(f"len(cache) is {learner.length(cache)} after {inputs}; expected "
                     f"{sum(t.size(2) for t in sent['k'])}, the number of positions cached.")
        again = append(learner, learner.new("KVCache"), first["k"], first["v"])
        for name, value in zip(sent, again):
            compare(f"the {name} the first append returned, after three more appends", value, sent[name][0],
                    inputs=inputs)


@check("embed_dim not divisible by num_heads raises ValueError naming both")
def check_bad_arguments(learner):
    indivisible_heads_raise(learner, NAME)


@check("without a cache: plain causal self-attention, matching the reference and nn.MultiheadAttention; "
       "every parameter gets a gradient")
def check_no_cache(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, bias) in enumerate([(2, 5, 8, 2, True), (1, 1, 6, 3, False), (3, 4, 4, 1, True)]):
            mine, ref = pair(learner, reference, E, H, bias=bias, dtype=dtype, device=device, seed=seed)
            x = 2 * randn(B, T, E, dtype=dtype, device=device, seed=30 + seed)  # (B, T, E)
            out, inputs = forward(learner, mine, x), describe(x=x, num_heads=H, bias=bias)
            for expected, note in ((ref(x), ""), (causal_builtin(ref, H, x), CAUSAL_BUILTIN)):
                compare("the output with cache=None", out, expected, inputs=inputs + note,
                        mistakes=causal_mistakes(ref, x, H))
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=9)
    x = 2 * randn(2, 5, 8, device=device, seed=39)  # (B, T, E)
    every_parameter_learns(learner, NAME, mine, ref, lambda: forward(learner, mine, x), lambda: ref(x),
                           inputs=describe(x=x, num_heads=2) + ", cache=None")


@check("prefill then one token at a time equals one full causal pass (prompts of 1, 3 and 7 tokens)")
def check_token_by_token(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, E, H, prompt, steps) in enumerate([(2, 8, 2, 3, 3), (2, 8, 2, 1, 3), (1, 6, 3, 7, 12),
                                                         (3, 4, 1, 3, 3)]):
            mine, ref = pair(learner, reference, E, H, bias=seed != 1, dtype=dtype, device=device, seed=10 + seed)
            x = 2 * randn(B, prompt + steps, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            decode(learner, mine, ref, x, [prompt] + [1] * steps, inputs=describe(x=x, num_heads=H))


@check("decoding in chunks of several tokens equals one full pass (the mask inside a chunk is bottom-right aligned)")
def check_chunks(learner, reference, device):
    for dtype in DTYPES:
        for seed, chunks in enumerate([[3, 2, 2, 2], [1, 2, 3, 2], [2, 2, 2]]):
            mine, ref = pair(learner, reference, 8, 2, dtype=dtype, device=device, seed=20 + seed)
            x = 2 * randn(2, sum(chunks), 8, dtype=dtype, device=device, seed=60 + seed)  # (B, T, E)
            decode(learner, mine, ref, x, chunks, inputs=describe(x=x, num_heads=2))


@check("the cache grows by exactly the new tokens and holds every position's keys and values, (B, H, T, D)")
def check_cache_contents(learner, reference, device):
    B, E, H = 2, 8, 2
    mine, ref = pair(learner, reference, E, H, device=device, seed=30)
    x = 2 * randn(B, 6, E, device=device, seed=70)  # (B, T, E)
    cache = decode(learner, mine, ref, x, (3, 1, 2), inputs=describe(x=x, num_heads=H))
    with torch.no_grad():
        _, k, v = (t.view(B, 6, H, E // H).transpose(1, 2) for t in ref.qkv(x).split(E, dim=2))  # (B, H, T, D)
    inputs = describe(x=x, num_heads=H) + "; chunks (3, 1, 2), after 6 positions"
    compare("cache.k (the keys of every position so far, in heads)", learner.attr(cache, "k"), k, inputs=inputs,
            mistakes=[(mistake("cache-overwritten"), lambda: k[:, :, -2:])])
    compare("cache.v (the values of every position so far, in heads)", learner.attr(cache, "v"), v, inputs=inputs)


@check("two caches used in turn stay independent, and cache=None afterwards is a plain pass: the state lives in "
       "each KVCache, not in the module or the class")
def check_independent_caches(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=40)
    xs = [2 * randn(2, 5, 8, device=device, seed=80 + i) for i in range(2)]  # two sequences (B, T, E)
    caches = [learner.new("KVCache"), learner.new("KVCache")]
    for start, size in ((0, 2), (2, 1), (3, 2)):
        for i, (x, cache) in enumerate(zip(xs, caches)):
            compare(f"the output of sequence {i}", forward(learner, mine, x[:, start:start + size], cache),
                    ref(x)[:, start:start + size], inputs=f"two sequences x {tuple(x.shape)} decoded in turn with a "
                    f"KVCache each (chunks 2, 1, 2), positions {start} .. {start + size - 1}, float64",
                    mistakes=decode_mistakes(ref, x[:, :start], x[:, start:start + size], 2))
    x = 2 * randn(2, 4, 8, device=device, seed=82)  # (B, T, E)
    compare("the output with cache=None", forward(learner, mine, x), ref(x), inputs=describe(x=x, num_heads=2) +
            ", after two sequences were decoded through caches: forward(x) must not use an earlier cache")
    if learner.length(caches[0]) != 5 or learner.length(caches[1]) != 5:
        fail("a forward(x) with cache=None changed a cache used before: without a cache, touch none.")
    fresh = learner.new("KVCache")
    if learner.length(fresh) != 0 or learner.attr(fresh, "k") is not None:
        fail("a new KVCache() is not empty after other caches were used: keep k and v on the instance "
             "(set them in __init__), not on the class.")


@check("gradients flow through the cache: decoding in chunks gives the full pass's gradients for x and every "
       "parameter")
def check_gradients(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=45)
    parts = [randn(2, n, 8, device=device, seed=85 + i, requires_grad=True) for i, n in enumerate((3, 1, 2))]
    cache = learner.new("KVCache")
    got = [forward(learner, mine, part, cache) for part in parts]  # 3 x (B, T_new, E)
    if not all(out._worker_requires_grad for out in got):
        fail("a decoded output is cut off from the graph (no grad_fn): do not detach.")
    pulls = [projection(out, seed=99 + i) for i, out in enumerate(got)]
    grads, params = learner.grad(got, pulls, parts, module=mine)
    full = ref(torch.cat(parts, dim=1))  # (B, 6, E)
    names = [name for name, _ in ref.named_parameters()]
    want = torch.autograd.grad(full, parts + list(ref.parameters()), torch.cat(pulls, dim=1))
    inputs = describe(x=full, num_heads=2) + ", decoded in chunks (3, 1, 2) through one KVCache"
    labels = [f"x[:, {s}:{s + part.size(1)}]" for s, part in zip((0, 3, 4), parts)] + names
    for name, grad, expected in zip(labels, [*grads, *(params.get(n) for n in names)], want):
        if grad is None:
            fail(f"{name} received no gradient for {inputs}: is part of the computation, or of the cache, detached? "
                 "The cached keys and values must stay in the graph.")
        compare(f"the gradient of {name}", grad, expected, inputs=inputs)


@check("dropout acts on the weights in training mode only, with a cache and without")
def check_dropout(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=50, dropout=0.5)
    x = 2 * randn(2, 5, 8, device=device, seed=51)  # (B, T, E)
    inputs = describe(x=x, num_heads=2, dropout=0.5)

    def plain():  # (B, T, E)
        return forward(learner, mine, x)

    def decoded():  # prefill 3 tokens, then 2 single steps, through a fresh cache: (B, T, E)
        cache = learner.new("KVCache")
        return torch.cat([forward(learner, mine, x[:, a:b], cache) for a, b in ((0, 3), (3, 4), (4, 5))], dim=1)

    eval_is_deterministic(learner, "the output", mine, plain, inputs=inputs)  # without a cache: no state to leak
    for what, run in (("the output", plain), ("the decoded output", decoded)):
        dropout_train_only(learner, what, mine, run, lambda: ref(x), inputs=inputs,
                           advice="apply dropout to the attention weights while training (nn.Dropout does this).")
