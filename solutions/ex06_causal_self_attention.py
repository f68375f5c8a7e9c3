"""ex6 · Causal self-attention: no peeking at the future

Write one module, the attention of a GPT decoder.

``class CausalSelfAttention(nn.Module)``

``__init__(embed_dim, num_heads, dropout=0.0, bias=True)``

- ``self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)``: one fused projection whose
  output holds q, k and v in that order, each ``embed_dim`` wide.
- ``self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)``.
- These are the only parameters (the module's ``state_dict`` holds ``qkv.*`` and
  ``out_proj.*`` only: build the causal mask in ``forward``, or register it with
  ``persistent=False``).
- ``H = num_heads`` heads of width ``D = embed_dim // num_heads``; raise ``ValueError`` naming
  both when ``embed_dim`` is not divisible by ``num_heads`` (for example
  ``embed_dim (10) must be divisible by num_heads (4)``).
- ``dropout`` is applied to the attention weights in training mode only; in ``eval()``
  mode the module is deterministic.

``forward(x) -> out``

    q, k, v = split(qkv(x))                      each (B, T, E), then heads: (B, H, T, D)
    head    = softmax(q @ k^T / sqrt(D) + causal) @ v          query t sees keys 0 .. t
    out     = out_proj(concatenated heads)                      (B, T, E)

- x ``(B, T, E)``; out ``(B, T, E)``, same dtype and device.
- Split a ``(B, T, E)`` tensor into heads with ``view(B, T, H, D).transpose(1, 2)``: head
  ``h`` uses features ``h*D .. (h+1)*D - 1`` of q, k and v (the layout of
  ``nn.MultiheadAttention``); merge back with the inverse.
- **Causal**: no position may see a later one. Changing the tokens after position ``t`` must
  leave outputs ``0 .. t`` unchanged, and the gradient of output ``t`` with respect to any
  later input is exactly zero.
- With ``nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)`` given
  ``in_proj_weight = qkv.weight``, ``in_proj_bias = qkv.bias`` and the same ``out_proj``,
  your output equals its output under a causal mask. (Its boolean ``attn_mask`` means the
  opposite of ours: True = NOT allowed.)
- Never modify the input in place.

Forbidden here: ``torch.nn.MultiheadAttention``, ``torch.nn.functional.multi_head_attention_forward``,
``torch.nn.functional.scaled_dot_product_attention``.

中文：

实现 GPT 解码器中的因果自注意力模块 ``CausalSelfAttention``。``__init__(embed_dim, num_heads,
dropout=0.0, bias=True)``：``self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)`` 是融合的
投影，输出按顺序依次为 q、k、v（各宽 ``embed_dim``）；``self.out_proj = nn.Linear(embed_dim,
embed_dim, bias=bias)``。模块只有这两组参数（``state_dict`` 中只有 ``qkv.*`` 和 ``out_proj.*``：
因果掩码在 ``forward`` 中构造，或用 ``persistent=False`` 注册）。共 ``H = num_heads`` 个头，
每头宽 ``D = embed_dim // num_heads``；``embed_dim`` 不能被 ``num_heads`` 整除时抛出同时写明两个
参数名的 ``ValueError``。``dropout`` 只在训练模式下作用于注意力权重；``eval()`` 模式下结果确定。

``forward(x)``：x ``(B, T, E)``，返回 ``(B, T, E)``，保持 dtype 与 device。用
``view(B, T, H, D).transpose(1, 2)`` 把张量拆成多头（第 h 个头使用 q、k、v 的第
``h*D .. (h+1)*D - 1`` 个特征，与 ``nn.MultiheadAttention`` 的布局一致），再用逆操作合并。
**因果性**：任何位置都不能看到之后的位置。改变位置 ``t`` 之后的 token，输出 ``0 .. t`` 不变；
输出 ``t`` 对之后任何输入的梯度恰好为 0。把 ``in_proj_weight = qkv.weight``、
``in_proj_bias = qkv.bias`` 和相同的 ``out_proj`` 交给
``nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)``，在因果掩码下
输出应与你的相同（它的布尔 ``attn_mask`` 含义相反：True 表示不允许关注）。不要原地修改输入。

禁止使用：``torch.nn.MultiheadAttention``、``torch.nn.functional.multi_head_attention_forward``、
``torch.nn.functional.scaled_dot_product_attention``。
"""

import math

import torch
import torch.nn as nn


class CausalSelfAttention(nn.Module):
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

    def forward(self, x):
        B, T, E = x.size()  # batch size, sequence length, embedding width
        H, D = self.num_heads, self.head_dim

        # 1) q, k, v for all heads in one projection, then split the heads out
        q, k, v = self.qkv(x).split(E, dim=2)  # 3 x (B, T, E)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)

        # 2) scaled dot-product scores: (B, H, T, D) x (B, H, D, T) -> (B, H, T, T)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, T)

        # 3) causal mask: query t may attend to keys 0 .. t only (True = may attend)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        att = att.masked_fill(~causal, float("-inf"))  # (B, H, T, T)

        # 4) softmax over the keys (no row is fully masked: t always sees itself), dropout
        att = torch.softmax(att, dim=-1)  # (B, H, T, T)
        att = self.attn_dropout(att)  # (B, H, T, T)

        # 5) weighted sum of the values, then re-assemble all head outputs side by side
        y = att @ v  # (B, H, T, T) x (B, H, T, D) -> (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, E)  # (B, T, E)

        # 6) output projection
        return self.out_proj(y)  # (B, T, E)
