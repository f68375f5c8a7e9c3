"""ex9 · Grouped-query attention (GQA)

Write one module, ``class GroupedQueryAttention(nn.Module)``: self-attention whose H query
heads share a smaller number H_kv of key/value heads, which shrinks the KV cache by H / H_kv.

``__init__(embed_dim, num_heads, num_kv_heads, bias=False)``

    D = embed_dim // num_heads                                    the head width
    q_proj   = nn.Linear(embed_dim, embed_dim, bias=bias)         E -> H * D
    k_proj   = nn.Linear(embed_dim, num_kv_heads * D, bias=bias)  E -> H_kv * D
    v_proj   = nn.Linear(embed_dim, num_kv_heads * D, bias=bias)  E -> H_kv * D
    out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)         E -> E

- Use exactly these four submodules and no other parameters or buffers.
- Raise ``ValueError`` naming the argument when ``embed_dim`` is not divisible by
  ``num_heads``, or when ``num_kv_heads`` is below 1 or does not divide ``num_heads``
  (for example ``num_heads (4) must be divisible by num_kv_heads (3)``).

``forward(x, mask=None) -> out``

    q = q_proj(x), k = k_proj(x), v = v_proj(x), split into heads
    head h:  softmax(q_h @ k_j^T / sqrt(D)) @ v_j     with j = h // (H / H_kv)
    out = out_proj(heads concatenated in order)

- x ``(B, T, E)``; out ``(B, T, E)``. Queries, keys and values all come from x.
- Heads: columns ``h*D : (h+1)*D`` of ``q_proj(x)`` are query head h; columns
  ``j*D : (j+1)*D`` of ``k_proj(x)`` and ``v_proj(x)`` are key/value head j. The output of
  head h goes back to columns ``h*D : (h+1)*D`` before ``out_proj``.
- Groups: the H query heads form H_kv groups of G = H / H_kv *consecutive* heads, and query
  head h uses key/value head ``h // G`` (what ``repeat_interleave(G, dim=1)`` on
  ``(B, H_kv, T, D)`` gives, and what ``scaled_dot_product_attention(..., enable_gqa=True)``
  does). ``num_kv_heads = 1`` is multi-query attention; ``num_kv_heads = num_heads`` is
  ordinary multi-head attention.
- ``mask`` is a boolean tensor that broadcasts to ``(B, H, T, T)``: **True = may attend**.
  Masked keys get weight exactly 0. A query whose keys are all masked gets zero attention
  output (so its ``out`` is just ``out_proj``'s bias): never NaN, forward or backward.
- The module must work after ``.to(dtype)`` (float64, float32) and on any device; keep the
  input's dtype and device and never modify an input in place. Every parameter must
  receive a gradient.

Forbidden here: ``torch.nn.MultiheadAttention``,
``torch.nn.functional.multi_head_attention_forward``,
``torch.nn.functional.scaled_dot_product_attention``.

中文：

实现模块 ``GroupedQueryAttention``：分组查询注意力（GQA）。H 个 query 头共享数量更少的 H_kv 个
key/value 头，KV cache 因此缩小为原来的 H_kv / H。

``__init__(embed_dim, num_heads, num_kv_heads, bias=False)``：头宽 ``D = embed_dim // num_heads``；
子模块恰好为 ``q_proj = nn.Linear(E, E)``、``k_proj`` 与 ``v_proj = nn.Linear(E, num_kv_heads * D)``、
``out_proj = nn.Linear(E, E)``（都使用参数 ``bias``），不要有其他参数或 buffer。``embed_dim`` 不能被
``num_heads`` 整除，或 ``num_kv_heads`` 小于 1、不能整除 ``num_heads`` 时，抛出写明参数名的
``ValueError``。

``forward(x, mask=None)``：x ``(B, T, E)``，输出 ``(B, T, E)``，q、k、v 都来自 x。
``q_proj(x)`` 的第 ``h*D : (h+1)*D`` 列是第 h 个 query 头，``k_proj(x)``、``v_proj(x)`` 的第
``j*D : (j+1)*D`` 列是第 j 个 key/value 头。H 个 query 头按顺序分成 H_kv 组，每组 G = H / H_kv 个
**相邻**的头：第 h 个 query 头使用第 ``h // G`` 个 key/value 头（即对 ``(B, H_kv, T, D)`` 做
``repeat_interleave(G, dim=1)``，也是 ``scaled_dot_product_attention(..., enable_gqa=True)`` 的做法）。
每个头计算 ``softmax(q k^T / sqrt(D)) v``，再按顺序拼回各头并经过 ``out_proj``。
``num_kv_heads = 1`` 即多查询注意力（MQA），``num_kv_heads = num_heads`` 即普通多头注意力。
``mask`` 为可广播到 ``(B, H, T, T)`` 的布尔张量，**True 表示可以关注**；被屏蔽的 key 权重恰好
为 0；所有 key 都被屏蔽的 query 注意力输出为 0（其 ``out`` 即 ``out_proj`` 的偏置），前向与梯度
中都不能出现 NaN。保持输入的 dtype 与 device，不要原地修改输入，每个参数都要得到梯度。

禁止使用：``torch.nn.MultiheadAttention``、``torch.nn.functional.multi_head_attention_forward``、
``torch.nn.functional.scaled_dot_product_attention``。
"""

import math

import torch
import torch.nn as nn


def grouped_attention(q, k, v, mask=None):
    """Attention where H query heads share H_kv key/value heads.

    q (B, H, T, D), k and v (B, H_kv, S, D), mask broadcasting to (B, H, T, S) -> (B, H, T, D).
    """
    H, H_kv = q.size(1), k.size(1)
    group = H // H_kv  # G: consecutive query heads per key/value head
    d_k = q.size(-1)

    # 1) give every query head its key/value head: head h uses kv head h // G
    k = k.repeat_interleave(group, dim=1)  # (B, H_kv, S, D) -> (B, H, S, D)
    v = v.repeat_interleave(group, dim=1)  # (B, H_kv, S, D) -> (B, H, S, D)

    # 2) scores: (B, H, T, D) x (B, H, D, S) -> (B, H, T, S)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (B, H, T, S)

    # 3) softmax over the keys; a fully-masked row is NaN here and is set to 0
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)  # (B, H, T, S)

    # 4) weighted sum of the values: (B, H, T, S) x (B, H, S, D) -> (B, H, T, D)
    return weights @ v  # (B, H, T, D)


class GroupedQueryAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, num_kv_heads, bias=False):
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads}), "
                             "and num_kv_heads must be at least 1")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads  # D
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)                      # E -> H * D
        self.k_proj = nn.Linear(embed_dim, num_kv_heads * self.head_dim, bias=bias)   # E -> H_kv * D
        self.v_proj = nn.Linear(embed_dim, num_kv_heads * self.head_dim, bias=bias)   # E -> H_kv * D
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)                    # E -> E

    def forward(self, x, mask=None):
        B, T, E = x.size()  # batch, time, embedding width
        H, H_kv, D = self.num_heads, self.num_kv_heads, self.head_dim

        # 1) project, then split the heads: (B, T, H * D) -> (B, T, H, D) -> (B, H, T, D)
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)     # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.v_proj(x).view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)

        # 2) attend, each group of query heads sharing one key/value head
        y = grouped_attention(q, k, v, mask)  # (B, H, T, D)

        # 3) merge the heads back in order: (B, H, T, D) -> (B, T, H, D) -> (B, T, E)
        y = y.transpose(1, 2).contiguous().view(B, T, E)  # (B, T, E)

        # 4) output projection
        return self.out_proj(y)  # (B, T, E)
