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
    # 0) check the shapes agree
    if q.size(-1) != k.size(-1):
        raise ValueError(f"q and k must share their last dimension D, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.size(-2) != v.size(-2):
        raise ValueError(f"k and v must share their key length S, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}")
    d_k = q.size(-1)
    if scale is None:
        scale = 1.0 / math.sqrt(d_k)

    # 1) scores: (..., L, D) x (..., D, S) -> (..., L, S)
    scores = q @ k.transpose(-2, -1) * scale  # (..., L, S)

    # 2) masked keys get -inf, so their weight becomes exactly 0
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (..., L, S)

    # 3) softmax over the keys; a fully-masked row is all NaN here and is set to 0
    weights = torch.softmax(scores, dim=-1)  # (..., L, S)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)  # (..., L, S)

    # 4) weighted sum of the values: (..., L, S) x (..., S, Dv) -> (..., L, Dv)
    out = weights @ v  # (..., L, Dv)
    return out, weights


def self_attention(x, w_q, w_k, w_v, mask=None):
    B, T, E = x.shape  # batch, time, embedding width
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        if w.dim() != 2 or w.size(0) != E:
            raise ValueError(f"{name} must have shape (E, D) with E = {E}, got {tuple(w.shape)}")

    # 1) learned projections to queries, keys and values
    q = x @ w_q  # (B, T, E) x (E, D) -> (B, T, D)
    k = x @ w_k  # (B, T, E) x (E, D) -> (B, T, D)
    v = x @ w_v  # (B, T, E) x (E, Dv) -> (B, T, Dv)

    # 2) attend
    return scaled_dot_product_attention(q, k, v, mask)  # (B, T, Dv), (B, T, T)
