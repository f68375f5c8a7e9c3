"""ex1 · Scaled dot-product self-attention

Write two functions.

``scaled_dot_product_attention(q, k, v, mask=None, scale=None) -> (out, weights)``

    weights = softmax(q @ k^T * scale, over the keys)      scale defaults to 1 / sqrt(D)
    out     = weights @ v

- q ``(..., L, D)``, k ``(..., S, D)``, v ``(..., S, Dv)``; out ``(..., L, Dv)``,
  weights ``(..., L, S)``. Leading dimensions (batch, heads) are kept as they are.
- ``mask`` is a boolean tensor that broadcasts to ``(..., L, S)``: **True = may attend**
  (the convention of ``torch.nn.functional.scaled_dot_product_attention``). Masked keys get
  weight exactly 0. A query whose keys are all masked gets all-zero weights and a zero
  output: never NaN, in the forward pass or in gradients.
- Raise ``ValueError`` naming the argument when q and k disagree on D, when k and v
  disagree on S, or when the mask is not boolean.
- Keep the inputs' dtype and device; never modify an input in place.

``self_attention(x, w_q, w_k, w_v, mask=None) -> (out, weights)``

    q, k, v = x @ w_q, x @ w_k, x @ w_v,  then scaled_dot_product_attention(q, k, v, mask)

- x ``(B, T, E)``; ``w_q`` and ``w_k`` ``(E, D)``; ``w_v`` ``(E, Dv)``; out ``(B, T, Dv)``.
- Raise ``ValueError`` naming the argument when a weight's first dimension is not E.

Forbidden here: ``torch.nn.functional.scaled_dot_product_attention``.

中文：

实现两个函数。``scaled_dot_product_attention``：``weights = softmax(q @ k^T * scale)``（在 key
维度上做 softmax，scale 默认 ``1/sqrt(D)``），``out = weights @ v``。q ``(..., L, D)``，
k ``(..., S, D)``，v ``(..., S, Dv)``。``mask`` 为布尔张量，**True 表示可以关注**；被屏蔽的
key 权重必须恰好为 0；某个 query 的所有 key 都被屏蔽时，权重和输出都为 0，前向与梯度中都
不能出现 NaN。q 与 k 的 D 不一致、k 与 v 的 S 不一致或 mask 不是布尔类型时，抛出写明参数名
的 ``ValueError``。保持输入的 dtype 与 device，不要原地修改输入。

``self_attention``：先计算 ``q, k, v = x @ w_q, x @ w_k, x @ w_v``，再调用上面的函数。
x ``(B, T, E)``，权重 ``(E, D)``；权重第一维不是 E 时抛出 ``ValueError``。

禁止使用：``torch.nn.functional.scaled_dot_product_attention``。
"""

import math

import torch


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    # TODO: write this function (see the statement above).
    raise NotImplementedError


def self_attention(x, w_q, w_k, w_v, mask=None):
    # TODO: write this function (see the statement above).
    raise NotImplementedError
