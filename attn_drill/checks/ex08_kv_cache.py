"""Hidden checks for ex8: a KV cache and causal self-attention that decodes through it."""

import torch

from attn_drill.checks.harness import (
    DTYPES, _t, check, compare, describe, equals_line, fail, mistake, projection, randn,
)
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    causal_builtin, causal_builtin_note, causal_mistakes, check_defines, check_static_scan, dropout_train_only,
    eval_is_deterministic, every_parameter_learns, fused_causal_attention, indivisible_heads_raise, outputs, twin,
)

NAME = "CachedCausalSelfAttention"


def pair(learner, reference, E, H, *, dtype=torch.float64, device=None, seed=0, **options):
    return twin(learner, reference.CachedCausalSelfAttention, NAME, E, H, dtype=dtype, device=device, seed=seed,
                **options)


def forward(learner, mine, x, cache=None):
    what = f"{NAME}.forward" + ("" if cache is None else _t(" with a cache", "（带 cache）"))
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
        where = _t(f"positions {start} .. {start + size - 1} fed with len(cache) = {start} before the call "
                   f"({inputs}, chunks {chunks})",
                   f"在调用前 len(cache) = {start} 时输入位置 {start} .. {start + size - 1}（{inputs}，分块 {chunks}）")
        out = forward(learner, mine, chunk, cache)
        if out.shape == (B, start + size, E) and start > 0:
            known = mistake("queries-cached")
            fail(_t(f"the output has shape {tuple(out.shape)} for {where}; expected one output per new token, "
                    f"{tuple(chunk.shape)}.",
                    f"输出的形状为 {tuple(out.shape)}（{where}）；应为每个新 token 一个输出，即 {tuple(chunk.shape)}。")
                 + equals_line(known), known.key)
        compare(_t("the decoded output", "解码得到的输出"), out, full[:, start:start + size], inputs=where,
                mistakes=decode_mistakes(ref, x[:, :start], chunk, ref.num_heads))
        n = learner.length(cache)
        if n != start + size:
            overwritten = n == size and start > 0
            fail(_t(f"len(cache) is {n} after {where}; expected {start} + {size} = {start + size}: the cache must "
                    "grow by exactly the new tokens" + (", but it holds only the newest ones: it is overwritten "
                                                        "instead of appended." if overwritten else "."),
                    f"{where} 之后 len(cache) 为 {n}；应为 {start} + {size} = {start + size}：cache 必须恰好增长"
                    "新 token 的数量" + ("，但它只保存了最新的那些：它被覆盖了，而不是追加。" if overwritten else "。")),
                 "cache-overwritten" if overwritten else None)
        start += size
    return cache


@check("KVCache starts empty, append concatenates along time and returns the full keys and values",
       zh="KVCache 一开始为空，append 沿时间维拼接，并返回完整的 key 和 value")
def check_kv_cache(learner, device):
    for dtype, (B, H, D) in zip(DTYPES, ((2, 3, 4), (1, 1, 5))):
        cache, sent = learner.new("KVCache"), {"k": [], "v": []}
        if learner.length(cache) != 0 or any(learner.attr(cache, name) is not None for name in sent):
            fail(_t("a new KVCache() should be empty: len(cache) == 0 and the attributes cache.k and cache.v are None "
                    "(set them in __init__).",
                    "新建的 KVCache() 应当为空：len(cache) == 0，且属性 cache.k 和 cache.v 为 None（在 __init__ 中"
                    "设置它们）。"))
        for step, T_new in enumerate((3, 1, 2, 1)):
            for i, name in enumerate(sent):
                sent[name].append(randn(B, H, T_new, D, dtype=dtype, device=device, seed=10 * i + step))  # (B, H, T, D)
            got = dict(zip(sent, append(learner, cache, sent["k"][-1], sent["v"][-1])))
            if step == 0:
                first = got  # read back after the later appends
            inputs = _t(f"appends of {[t.size(2) for t in sent['k']]} positions, k_new and v_new "
                        f"{tuple(sent['k'][-1].shape)} (B, H, T_new, D), {str(dtype).replace('torch.', '')}",
                        f"依次 append {[t.size(2) for t in sent['k']]} 个位置，k_new 和 v_new 为 "
                        f"{tuple(sent['k'][-1].shape)} (B, H, T_new, D)，{str(dtype).replace('torch.', '')}")
            for name, parts in sent.items():
                for what, value in ((_t(f"{name} returned by append", f"append 返回的 {name}"), got[name]),
                                    (_t(f"cache.{name} after append", f"append 之后的 cache.{name}"),
                                     learner.attr(cache, name))):
                    compare(what, value, torch.cat(parts, dim=2), inputs=inputs,  # (B, H, T_cached, D)
                            mistakes=[(mistake("cache-overwritten"), lambda: parts[-1])])
            if learner.length(cache) != sum(t.size(2) for t in sent["k"]):
                cached = sum(t.size(2) for t in sent['k'])
                fail(_t(f"len(cache) is {learner.length(cache)} after {inputs}; expected {cached}, the number of "
                        "positions cached.",
                        f"{inputs} 之后 len(cache) 为 {learner.length(cache)}；应为 {cached}，即已缓存的位置数。"))
        again = append(learner, learner.new("KVCache"), first["k"], first["v"])
        for name, value in zip(sent, again):
            compare(_t(f"the {name} the first append returned, after three more appends",
                       f"第一次 append 返回的 {name}（又 append 了三次之后）"), value, sent[name][0],
                    inputs=inputs)


@check("embed_dim not divisible by num_heads raises ValueError naming both",
       zh="embed_dim 不能被 num_heads 整除时抛出 ValueError，并指明这两个参数")
def check_bad_arguments(learner):
    indivisible_heads_raise(learner, NAME)


@check("without a cache: plain causal self-attention, matching the reference and nn.MultiheadAttention; "
       "every parameter gets a gradient",
       zh="不带 KV cache 时：普通的因果自注意力，与参考实现和 nn.MultiheadAttention 一致；每个参数都得到梯度")
def check_no_cache(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, bias) in enumerate([(2, 5, 8, 2, True), (1, 1, 6, 3, False), (3, 4, 4, 1, True)]):
            mine, ref = pair(learner, reference, E, H, bias=bias, dtype=dtype, device=device, seed=seed)
            x = 2 * randn(B, T, E, dtype=dtype, device=device, seed=30 + seed)  # (B, T, E)
            out, inputs = forward(learner, mine, x), describe(x=x, num_heads=H, bias=bias)
            for expected, note in ((ref(x), ""), (causal_builtin(ref, H, x), causal_builtin_note())):
                compare(_t("the output with cache=None", "cache=None 时的输出"), out, expected, inputs=inputs + note,
                        mistakes=causal_mistakes(ref, x, H))
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=9)
    x = 2 * randn(2, 5, 8, device=device, seed=39)  # (B, T, E)
    every_parameter_learns(learner, NAME, mine, ref, lambda: forward(learner, mine, x), lambda: ref(x),
                           inputs=describe(x=x, num_heads=2) + ", cache=None")


@check("prefill then one token at a time equals one full causal pass (prompts of 1, 3 and 7 tokens)",
       zh="先 prefill 再逐个 token 解码，等于一次完整的因果计算（prompt 长 1、3 和 7 个 token）")
def check_token_by_token(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, E, H, prompt, steps) in enumerate([(2, 8, 2, 3, 3), (2, 8, 2, 1, 3), (1, 6, 3, 7, 12),
                                                         (3, 4, 1, 3, 3)]):
            mine, ref = pair(learner, reference, E, H, bias=seed != 1, dtype=dtype, device=device, seed=10 + seed)
            x = 2 * randn(B, prompt + steps, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            decode(learner, mine, ref, x, [prompt] + [1] * steps, inputs=describe(x=x, num_heads=H))


@check("decoding in chunks of several tokens equals one full pass (the mask inside a chunk is bottom-right aligned)",
       zh="以多个 token 为一块解码，等于一次完整计算（块内的掩码右下对齐）")
def check_chunks(learner, reference, device):
    for dtype in DTYPES:
        for seed, chunks in enumerate([[3, 2, 2, 2], [1, 2, 3, 2], [2, 2, 2]]):
            mine, ref = pair(learner, reference, 8, 2, dtype=dtype, device=device, seed=20 + seed)
            x = 2 * randn(2, sum(chunks), 8, dtype=dtype, device=device, seed=60 + seed)  # (B, T, E)
            decode(learner, mine, ref, x, chunks, inputs=describe(x=x, num_heads=2))


@check("the cache grows by exactly the new tokens and holds every position's keys and values, (B, H, T, D)",
       zh="KV cache 恰好增长新 token 的数量，并保存每个位置的 key 和 value，形状 (B, H, T, D)")
def check_cache_contents(learner, reference, device):
    B, E, H = 2, 8, 2
    mine, ref = pair(learner, reference, E, H, device=device, seed=30)
    x = 2 * randn(B, 6, E, device=device, seed=70)  # (B, T, E)
    cache = decode(learner, mine, ref, x, (3, 1, 2), inputs=describe(x=x, num_heads=H))
    with torch.no_grad():
        _, k, v = (t.view(B, 6, H, E // H).transpose(1, 2) for t in ref.qkv(x).split(E, dim=2))  # (B, H, T, D)
    inputs = describe(x=x, num_heads=H) + _t("; chunks (3, 1, 2), after 6 positions", "；分块 (3, 1, 2)，6 个位置之后")
    compare(_t("cache.k (the keys of every position so far, in heads)", "cache.k（到目前为止每个位置的 key，按头拆分）"),
            learner.attr(cache, "k"), k, inputs=inputs, mistakes=[(mistake("cache-overwritten"), lambda: k[:, :, -2:])])
    compare(_t("cache.v (the values of every position so far, in heads)",
               "cache.v（到目前为止每个位置的 value，按头拆分）"), learner.attr(cache, "v"), v, inputs=inputs)


@check("two caches used in turn stay independent, and cache=None afterwards is a plain pass: the state lives in "
       "each KVCache, not in the module or the class",
       zh="轮流使用的两个 KV cache 互不影响，之后 cache=None 是一次普通计算：状态保存在每个 KVCache 中，而不在模块或类中")
def check_independent_caches(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=40)
    xs = [2 * randn(2, 5, 8, device=device, seed=80 + i) for i in range(2)]  # two sequences (B, T, E)
    caches = [learner.new("KVCache"), learner.new("KVCache")]
    for start, size in ((0, 2), (2, 1), (3, 2)):
        for i, (x, cache) in enumerate(zip(xs, caches)):
            compare(_t(f"the output of sequence {i}", f"序列 {i} 的输出"),
                    forward(learner, mine, x[:, start:start + size], cache), ref(x)[:, start:start + size],
                    inputs=_t(f"two sequences x {tuple(x.shape)} decoded in turn with a KVCache each (chunks 2, 1, 2), "
                              f"positions {start} .. {start + size - 1}, float64",
                              f"两个序列 x {tuple(x.shape)}，各用一个 KVCache 轮流解码（分块 2, 1, 2），位置 {start} .. "
                              f"{start + size - 1}，float64"),
                    mistakes=decode_mistakes(ref, x[:, :start], x[:, start:start + size], 2))
    x = 2 * randn(2, 4, 8, device=device, seed=82)  # (B, T, E)
    compare(_t("the output with cache=None", "cache=None 时的输出"), forward(learner, mine, x), ref(x),
            inputs=describe(x=x, num_heads=2) + _t(", after two sequences were decoded through caches: forward(x) "
                                                   "must not use an earlier cache",
                                                   "，在两个序列都通过 KV cache 解码之后：forward(x) 不能使用之前的 cache"))
    if learner.length(caches[0]) != 5 or learner.length(caches[1]) != 5:
        fail(_t("a forward(x) with cache=None changed a cache used before: without a cache, touch none.",
                "cache=None 的 forward(x) 改变了之前用过的 cache：不带 cache 时，不要动任何 cache。"))
    fresh = learner.new("KVCache")
    if learner.length(fresh) != 0 or learner.attr(fresh, "k") is not None:
        fail(_t("a new KVCache() is not empty after other caches were used: keep k and v on the instance "
                "(set them in __init__), not on the class.",
                "在用过其他 cache 之后，新建的 KVCache() 不是空的：把 k 和 v 放在实例上（在 __init__ 中设置），"
                "而不是放在类上。"))


@check("gradients flow through the cache: decoding in chunks gives the full pass's gradients for x and every "
       "parameter",
       zh="梯度流经 KV cache：分块解码得到的 x 和每个参数的梯度与完整计算相同")
def check_gradients(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=45)
    parts = [randn(2, n, 8, device=device, seed=85 + i, requires_grad=True) for i, n in enumerate((3, 1, 2))]
    cache = learner.new("KVCache")
    got = [forward(learner, mine, part, cache) for part in parts]  # 3 x (B, T_new, E)
    if not all(out._worker_requires_grad for out in got):
        fail(_t("a decoded output is cut off from the graph (no grad_fn): do not detach.",
                "有一个解码输出与计算图断开了（没有 grad_fn）：不要 detach。"))
    pulls = [projection(out, seed=99 + i) for i, out in enumerate(got)]
    grads, params = learner.grad(got, pulls, parts, module=mine)
    full = ref(torch.cat(parts, dim=1))  # (B, 6, E)
    names = [name for name, _ in ref.named_parameters()]
    want = torch.autograd.grad(full, parts + list(ref.parameters()), torch.cat(pulls, dim=1))
    inputs = describe(x=full, num_heads=2) + _t(", decoded in chunks (3, 1, 2) through one KVCache",
                                                "，通过同一个 KVCache 分块 (3, 1, 2) 解码")
    labels = [f"x[:, {s}:{s + part.size(1)}]" for s, part in zip((0, 3, 4), parts)] + names
    for name, grad, expected in zip(labels, [*grads, *(params.get(n) for n in names)], want):
        if grad is None:
            fail(_t(f"{name} received no gradient for {inputs}: is part of the computation, or of the cache, "
                    "detached? The cached keys and values must stay in the graph.",
                    f"{name} 没有收到梯度（输入：{inputs}）：是不是计算或 cache 的一部分被 detach 了？缓存的 key 和 "
                    "value 必须留在计算图中。"))
        compare(_t(f"the gradient of {name}", f"{name} 的梯度"), grad, expected, inputs=inputs)


@check("dropout acts on the weights in training mode only, with a cache and without",
       zh="dropout 只在训练模式下作用于注意力权重，带与不带 KV cache 都是如此")
def check_dropout(learner, reference, device):
    mine, ref = pair(learner, reference, 8, 2, device=device, seed=50, dropout=0.5)
    x = 2 * randn(2, 5, 8, device=device, seed=51)  # (B, T, E)
    inputs = describe(x=x, num_heads=2, dropout=0.5)

    def plain():  # (B, T, E)
        return forward(learner, mine, x)

    def decoded():  # prefill 3 tokens, then 2 single steps, through a fresh cache: (B, T, E)
        cache = learner.new("KVCache")
        return torch.cat([forward(learner, mine, x[:, a:b], cache) for a, b in ((0, 3), (3, 4), (4, 5))], dim=1)

    eval_is_deterministic(learner, _t("the output", "输出"), mine, plain, inputs=inputs)  # without a cache: no state
    for what, run in ((_t("the output", "输出"), plain), (_t("the decoded output", "解码得到的输出"), decoded)):
        dropout_train_only(learner, what, mine, run, lambda: ref(x), inputs=inputs,
                           advice=_t("apply dropout to the attention weights while training (nn.Dropout does this).",
                                     "训练时对注意力权重应用 dropout（nn.Dropout 会这样做）。"))
