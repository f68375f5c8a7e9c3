"""ex2 · Multi-head attention

Write ``class MultiHeadAttention(nn.Module)``, the layer of "Attention Is All You Need":

    head_h = softmax(Q_h K_h^T / sqrt(D)) V_h        Q_h, K_h, V_h: head h's slice of the projections
    out    = out_proj(concat(head_1, ..., head_H))    D = E / H

``__init__(embed_dim, num_heads, dropout=0.0, bias=True)``

- Submodules ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, each
  ``nn.Linear(embed_dim, embed_dim, bias=bias)``; nothing else with parameters.
- ``embed_dim`` not divisible by ``num_heads`` raises ``ValueError`` naming both, e.g.
  ``embed_dim (10) must be divisible by num_heads (4)``.
- ``dropout`` is the probability of dropping attention weights, in training mode only.

``forward(query, key=None, value=None, mask=None, need_weights=False) -> (out, weights)``

- query ``(B, L, E)``, key and value ``(B, S, E)``; ``key`` defaults to ``query`` and
  ``value`` to ``key`` (so ``forward(x)`` is self-attention).
- Split the width into ``H`` heads of ``D = E / H``: every head attends over the whole
  sequence with its own slice of the projections. Scale by ``1 / sqrt(D)``.
- ``mask`` is boolean, **True = may attend**, and broadcasts to ``(B, H, L, S)``
  (``(L, S)``, ``(B, 1, L, S)``, ...). Masked keys get weight exactly 0; a query whose
  keys are all masked gets zero weights (its output is then ``out_proj`` of zeros), never NaN.
- Returns out ``(B, L, E)`` and, when ``need_weights``, the weights ``(B, H, L, S)`` before
  dropout (each row sums to 1); otherwise ``None``.
- Keep the input's dtype and device; never modify an input in place.

Forbidden here: ``torch.nn.MultiheadAttention``, ``torch.nn.functional.multi_head_attention_forward``,
``torch.nn.functional.scaled_dot_product_attention``.

中文：

实现 ``MultiHeadAttention``（多头注意力）。``__init__`` 中创建 ``q_proj``、``k_proj``、``v_proj``、
``out_proj`` 四个 ``nn.Linear(embed_dim, embed_dim, bias=bias)``；``embed_dim`` 不能被 ``num_heads``
整除时抛出同时写明两个参数的 ``ValueError``。``dropout`` 只在训练模式下作用于注意力权重。

``forward``：query ``(B, L, E)``，key/value ``(B, S, E)``；key 默认为 query，value 默认为 key。
把宽度 E 切成 H 个头，每个头宽 ``D = E / H``，每个头都在整个序列上做注意力（切分的是宽度，不是序列），
缩放因子为 ``1 / sqrt(D)``。``mask`` 为布尔张量，**True 表示可以关注**，可广播到 ``(B, H, L, S)``；
被屏蔽的 key 权重为 0，整行被屏蔽时权重为 0（输出为 ``out_proj`` 作用于 0），不得出现 NaN。
返回 out ``(B, L, E)``；``need_weights`` 为真时返回 dropout 之前的权重 ``(B, H, L, S)``，否则返回 ``None``。
保持输入的 dtype 与 device，不要原地修改输入。

禁止使用：``torch.nn.MultiheadAttention``、``torch.nn.functional.multi_head_attention_forward``、
``torch.nn.functional.scaled_dot_product_attention``。
"""

import math

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
        # TODO: write this method (see the statement above).
        raise NotImplementedError

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        # TODO: write this method (see the statement above).
        raise NotImplementedError
