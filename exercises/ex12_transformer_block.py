"""ex12 · A pre-norm Transformer block

Write two classes in this file: the multi-head attention of ex2 again (your ex2 solution
fits as it is), and the pre-norm block of GPT-2 / nanoGPT built on it:

    x = x + Dropout(attn(ln1(x)))       the attention sublayer
    x = x + Dropout(ffn(ln2(x)))        the feed-forward sublayer,  ffn(h) = fc2(Dropout(GELU(fc1(h))))

``class MultiHeadAttention(nn.Module)``, exactly ex2's contract:

- ``__init__(embed_dim, num_heads, dropout=0.0, bias=True)`` with submodules ``q_proj``,
  ``k_proj``, ``v_proj``, ``out_proj``, each ``nn.Linear(embed_dim, embed_dim, bias=bias)``;
  ``embed_dim`` not divisible by ``num_heads`` raises ``ValueError`` naming both.
- ``forward(query, key=None, value=None, mask=None, need_weights=False) -> (out, weights)``:
  query ``(B, L, E)``, key and value ``(B, S, E)`` (key defaults to query, value to key);
  ``H`` heads of width ``D = E / H``, scale ``1 / sqrt(D)``; out ``(B, L, E)``; weights
  ``(B, H, L, S)`` (before dropout) when ``need_weights``, else ``None``. Dropout on the
  attention weights in training mode only.

``class TransformerBlock(nn.Module)``

``__init__(embed_dim, num_heads, ffn_dim, dropout=0.0)``

- ``ln1`` and ``ln2``: ``nn.LayerNorm(embed_dim)`` (default eps 1e-5), one per sublayer.
- ``attn``: ``MultiHeadAttention(embed_dim, num_heads, dropout=dropout)`` (with bias).
- ``ffn``: a module whose ``fc1 = nn.Linear(embed_dim, ffn_dim)`` and
  ``fc2 = nn.Linear(ffn_dim, embed_dim)`` are reachable as ``ffn.fc1`` and ``ffn.fc2``, with the
  exact GELU (``nn.GELU()``, not the tanh approximation) between them, for example
  ``nn.Sequential(OrderedDict(fc1=..., act=nn.GELU(), drop=nn.Dropout(dropout), fc2=...))``.
- No other parameters: the state-dict keys are ``ln1.weight``, ``ln1.bias``,
  ``attn.{q,k,v,out}_proj.{weight,bias}``, ``ln2.weight``, ``ln2.bias``, ``ffn.fc1.weight``,
  ``ffn.fc1.bias``, ``ffn.fc2.weight``, ``ffn.fc2.bias``.
- ``embed_dim`` not divisible by ``num_heads`` raises ``ValueError`` naming both.
- ``dropout`` is a probability used in training mode only; in eval mode nothing is dropped.
  Where you drop is up to you (``nn.TransformerEncoderLayer`` drops the attention weights,
  the FFN's hidden activations and each sublayer's output before the residual add).

``forward(x, mask=None) -> out``

- x ``(B, T, E)``; returns out ``(B, T, E)``, a tensor (not a tuple).
- ``mask`` is boolean, **True = may attend**, and broadcasts to ``(B, H, T, T)``
  (``(T, T)``, ``(B, 1, T, T)``); it goes to the attention. A query whose keys are all
  masked gets zero attention weights (its attention output is ``out_proj`` of zeros), never NaN.
- With the same weights the block equals ``nn.TransformerEncoderLayer(d_model=E, nhead=H,
  dim_feedforward=F, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)``,
  whose boolean ``src_mask`` has the opposite polarity (True = NOT allowed): it gets ``~mask``.
- Keep the input's dtype and device; never modify an input in place.

Forbidden here: ``torch.nn.TransformerEncoderLayer``, ``torch.nn.MultiheadAttention``,
``torch.nn.functional.multi_head_attention_forward``, ``torch.nn.functional.scaled_dot_product_attention``.

中文：

在本文件中实现两个类：ex2 的多头注意力（直接用你的 ex2 答案即可），以及基于它的 pre-norm
Transformer 块（GPT-2 / nanoGPT 的写法）：``x = x + Dropout(attn(ln1(x)))``，然后
``x = x + Dropout(ffn(ln2(x)))``，其中 ``ffn(h) = fc2(Dropout(GELU(fc1(h))))``。

``MultiHeadAttention`` 与 ex2 的约定完全相同：``q_proj``、``k_proj``、``v_proj``、``out_proj`` 四个
``nn.Linear(embed_dim, embed_dim, bias=bias)``；``forward(query, key=None, value=None, mask=None,
need_weights=False)`` 返回 ``(out, weights)``，每个头宽 ``D = E / H``，缩放因子 ``1 / sqrt(D)``。

``TransformerBlock.__init__(embed_dim, num_heads, ffn_dim, dropout=0.0)``：两个 ``nn.LayerNorm(embed_dim)``
（``ln1``、``ln2``，每个子层各用一个）；``attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout)``；
``ffn`` 中的 ``fc1 = nn.Linear(embed_dim, ffn_dim)`` 与 ``fc2 = nn.Linear(ffn_dim, embed_dim)`` 必须能以
``ffn.fc1``、``ffn.fc2`` 访问，中间是精确的 GELU（``nn.GELU()``，不是 tanh 近似）。除此之外没有其他参数，
state-dict 的键见上文。``embed_dim`` 不能被 ``num_heads`` 整除时抛出写明两个参数的 ``ValueError``。
``dropout`` 只在训练模式下生效，eval 模式下不丢弃任何东西；在哪里做 dropout 由你决定。

``forward(x, mask=None)``：x ``(B, T, E)``，返回 ``(B, T, E)`` 的张量（不是元组）。``mask`` 为布尔张量，
**True 表示可以关注**，可广播到 ``(B, H, T, T)``，交给注意力层；整行被屏蔽的 query 注意力权重为 0，
不得出现 NaN。权重相同时，结果必须等于 ``nn.TransformerEncoderLayer(..., activation="gelu",
batch_first=True, norm_first=True)``；注意它的布尔 ``src_mask`` 极性相反（True 表示不允许），要传 ``~mask``。
保持输入的 dtype 与 device，不要原地修改输入。

禁止使用：``torch.nn.TransformerEncoderLayer``、``torch.nn.MultiheadAttention``、
``torch.nn.functional.multi_head_attention_forward``、``torch.nn.functional.scaled_dot_product_attention``。
"""

import math
from collections import OrderedDict

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
        # TODO: write this method (see the statement above).
        raise NotImplementedError

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        # TODO: write this method (see the statement above).
        raise NotImplementedError


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, ffn_dim, dropout=0.0):
        # TODO: write this method (see the statement above).
        raise NotImplementedError

    def forward(self, x, mask=None):
        # TODO: write this method (see the statement above).
        raise NotImplementedError
