"""ex8 · A KV cache for fast decoding

Write a cache and the causal self-attention that uses it. Generating one token at a time,
a decoder would recompute the keys and values of the whole prefix at every step; a KV cache
keeps them, so each step only projects the new tokens.

``class KVCache``

- ``KVCache()`` is empty: ``cache.k`` and ``cache.v`` are ``None`` and ``len(cache) == 0``.
- ``cache.append(k_new, v_new) -> (k, v)``: ``k_new`` and ``v_new`` are ``(B, H, T_new, D)``.
  Appends them after what is cached, along the time dimension (dim 2), stores the results
  in ``cache.k`` and ``cache.v`` and returns them: ``(B, H, T_cached + T_new, D)`` each.
- ``len(cache)`` is ``T_cached``, the number of positions cached so far.
- All state lives in the cache object: two caches never share tensors or lists.

``class CachedCausalSelfAttention(nn.Module)``

``__init__(embed_dim, num_heads, dropout=0.0, bias=True)``: exactly as ex6, with the same
parameters ``self.qkv = nn.Linear(E, 3E, bias=bias)`` (q, k, v in that order along the
output) and ``self.out_proj = nn.Linear(E, E, bias=bias)`` and nothing else in the
``state_dict``; ``H = num_heads`` heads of width ``D = E // H``; ``ValueError`` naming
``embed_dim`` and ``num_heads`` when E is not divisible by H; dropout on the attention
weights in training mode only.

``forward(x, cache=None) -> out``

- x ``(B, T_new, E)``: the new tokens; out ``(B, T_new, E)``, one output per new token.
- ``cache=None``: plain causal self-attention over x, exactly ex6.
- With a ``KVCache``: the new tokens are positions ``P .. P + T_new - 1`` where
  ``P = len(cache)`` before the call. Project x to q, k, v; ``cache.append`` the new k and v
  (split into heads, ``(B, H, T_new, D)``); the ``T_new`` new queries attend to all
  ``S = P + T_new`` cached keys, new query ``i`` seeing keys ``j <= i + (S - T_new)``: the
  causal mask aligned to the bottom-right corner. Queries are never cached. The cache given
  is updated in place (it grows by exactly ``T_new``); forward returns only ``out``.
- So prefill then decoding reproduces one full pass: for any split of x into chunks
  ``x[:, :a], x[:, a:b], ...`` fed in order through one cache, the outputs concatenated
  equal ``forward(x)`` with no cache. Chunks of one token or several are both allowed.
- Never modify the input in place.

Forbidden here: ``torch.nn.MultiheadAttention``, ``torch.nn.functional.multi_head_attention_forward``,
``torch.nn.functional.scaled_dot_product_attention``.

中文：

实现一个 KV cache 以及使用它的因果自注意力。逐个生成 token 时，若不缓存，每一步都要重新计算
整个前缀的 key 和 value；KV cache 把它们保存下来，每步只需投影新 token。

``KVCache``：``KVCache()`` 为空，``cache.k``、``cache.v`` 为 ``None``，``len(cache) == 0``。
``cache.append(k_new, v_new)``：``k_new``、``v_new`` 形状 ``(B, H, T_new, D)``，沿时间维（第 2 维）
接在已缓存内容之后，结果存入 ``cache.k``、``cache.v`` 并返回，各为
``(B, H, T_cached + T_new, D)``。``len(cache)`` 为已缓存的位置数 ``T_cached``。所有状态都保存在
cache 对象中：两个 cache 之间不共享任何张量或列表。

``CachedCausalSelfAttention``：``__init__(embed_dim, num_heads, dropout=0.0, bias=True)`` 与 ex6
完全相同，参数为 ``self.qkv = nn.Linear(E, 3E, bias=bias)``（输出按 q、k、v 顺序）和
``self.out_proj = nn.Linear(E, E, bias=bias)``，``state_dict`` 中没有其他内容；E 不能被 H 整除时
抛出写明 ``embed_dim`` 和 ``num_heads`` 的 ``ValueError``；dropout 只在训练模式下作用于注意力权重。

``forward(x, cache=None)``：x ``(B, T_new, E)`` 是新 token，返回 ``(B, T_new, E)``，每个新 token
一个输出。``cache=None`` 时就是 ex6 的普通因果自注意力。传入 ``KVCache`` 时，新 token 位于位置
``P .. P + T_new - 1``（``P`` 为调用前的 ``len(cache)``）：把 x 投影为 q、k、v，把新的 k、v（拆成
多头，``(B, H, T_new, D)``）``append`` 进 cache；``T_new`` 个新 query 对全部 ``S = P + T_new`` 个
key 做注意力，第 ``i`` 个新 query 只能看到 ``j <= i + (S - T_new)`` 的 key，即与右下角对齐的因果
掩码。query 永远不缓存。传入的 cache 被原地更新（恰好增长 ``T_new``）；forward 只返回 ``out``。
因此预填充加逐步解码与一次完整前向结果相同：把 x 按顺序切成若干块，用同一个 cache 依次输入，
拼接后的输出等于不带 cache 的 ``forward(x)``；每块可以是一个或多个 token。不要原地修改输入。

禁止使用：``torch.nn.MultiheadAttention``、``torch.nn.functional.multi_head_attention_forward``、
``torch.nn.functional.scaled_dot_product_attention``。
"""

import math

import torch
import torch.nn as nn


class KVCache:
    def __init__(self):
        self.k = None  # (B, H, T_cached, D) once something is cached
        self.v = None  # (B, H, T_cached, D)

    def append(self, k_new, v_new):
        # k_new, v_new: (B, H, T_new, D); concatenate along time, after what is cached
        if self.k is None:
            self.k, self.v = k_new, v_new  # (B, H, T_new, D)
        else:
            self.k = torch.cat([self.k, k_new], dim=2)  # (B, H, T_cached + T_new, D)
            self.v = torch.cat([self.v, v_new], dim=2)  # (B, H, T_cached + T_new, D)
        return self.k, self.v

    def __len__(self):
        return 0 if self.k is None else self.k.size(2)


class CachedCausalSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        # key, query, value projections for all heads, fused into one matmul
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        # output projection
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        # dropout on the attention weights (training mode only)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x, cache=None):
        B, T, E = x.size()  # batch size, number of new tokens, embedding width
        H, D = self.num_heads, self.head_dim

        # 1) q, k, v of the new tokens only, split into heads
        q, k, v = self.qkv(x).split(E, dim=2)  # 3 x (B, T, E)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)

        # 2) with a cache, keys and values of all positions so far (queries are not cached)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D), S = T_cached + T
        S = k.size(2)

        # 3) scores of the T new queries against all S keys: (B, H, T, D) x (B, H, D, S)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, S)

        # 4) causal mask aligned bottom-right: new query i is position i + (S - T)
        causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)  # (T, S)
        att = att.masked_fill(~causal, float("-inf"))  # (B, H, T, S)

        # 5) softmax over the keys, dropout (training mode only)
        att = torch.softmax(att, dim=-1)  # (B, H, T, S)
        att = self.attn_dropout(att)  # (B, H, T, S)

        # 6) weighted sum of the values, heads merged back, output projection
        y = att @ v  # (B, H, T, S) x (B, H, S, D) -> (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, E)  # (B, T, E)
        return self.out_proj(y)  # (B, T, E)
