"""ex13 · Debug a self-attention interview answer

The starter is what a candidate wrote in an interview: ``self_attention`` with the contract
of ex1. It imports and runs, but it has **seven bugs**. Find them and fix them all, keeping
the signature and the contract below. Each check's message is a clue: it says what was
compared and, when your output equals a classic mistake, which one.

``self_attention(x, w_q, w_k, w_v, mask=None) -> (out, weights)``

    q, k, v = x @ w_q, x @ w_k, x @ w_v
    weights = softmax(q @ k^T / sqrt(D), over the keys)
    out     = weights @ v

- x ``(B, T, E)``; ``w_q`` and ``w_k`` ``(E, D)``; ``w_v`` ``(E, Dv)``; out ``(B, T, Dv)``,
  weights ``(B, T, T)``. ``D`` is the query/key width, so E, D and Dv may all differ.
- ``mask`` is a boolean tensor that broadcasts to ``(B, T, T)``: **True = may attend**
  (the convention of ``torch.nn.functional.scaled_dot_product_attention``). Masked keys get
  weight exactly 0. A query whose keys are all masked gets all-zero weights and a zero
  output: never NaN, in the forward pass or in gradients.
- Raise ``ValueError`` naming the argument when a weight's first dimension is not E, or
  when the mask is not boolean.
- The function computes exactly these formulas, from its arguments only: the same inputs
  always give the same output. Keep the inputs' dtype and device; never modify an input in
  place.

Forbidden here: ``torch.nn.functional.scaled_dot_product_attention``.

中文：

起始代码是一位候选人在面试中写的 ``self_attention``，约定与 ex1 相同。它能导入、能运行，但里面有
**七个 bug**。找出并全部修复，签名和下面的约定保持不变。每条检查的失败信息都是线索：它说明比较了
什么；当你的输出恰好等于某个经典错误时，还会说出是哪一个。

``self_attention(x, w_q, w_k, w_v, mask=None)``：``q, k, v = x @ w_q, x @ w_k, x @ w_v``，
``weights = softmax(q @ k^T / sqrt(D))``（在 key 维度上做 softmax），``out = weights @ v``。
x ``(B, T, E)``，``w_q``、``w_k`` 为 ``(E, D)``，``w_v`` 为 ``(E, Dv)``；out ``(B, T, Dv)``，
weights ``(B, T, T)``。``mask`` 为布尔张量，**True 表示可以关注**；被屏蔽的 key 权重必须恰好为 0；
某个 query 的所有 key 都被屏蔽时，权重和输出都为 0，前向与梯度中都不能出现 NaN。权重第一维不是 E
或 mask 不是布尔类型时，抛出写明参数名的 ``ValueError``。函数只根据参数精确计算上述公式：相同的
输入永远得到相同的输出。保持输入的 dtype 与 device，不要原地修改输入。

禁止使用：``torch.nn.functional.scaled_dot_product_attention``。
"""

import math

import torch


def self_attention(x, w_q, w_k, w_v, mask=None):
    B, T, E = x.shape  # batch, time, embedding width
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        if w.dim() != 2 or w.size(0) != E:
            raise ValueError(f"{name} must have shape (E, D) with E = {E}, got {tuple(w.shape)}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}")

    # 1) learned projections of the raw input (no normalisation here)
    q = x @ w_q  # (B, T, E) x (E, D) -> (B, T, D)
    k = x @ w_k  # (B, T, E) x (E, D) -> (B, T, D)
    v = x @ w_v  # (B, T, E) x (E, Dv) -> (B, T, Dv)

    # 2) scaled scores: (B, T, D) x (B, D, T) -> (B, T, T)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, T, T)

    # 3) masked keys get -inf, so their weight becomes exactly 0
    if mask is not None:
        blocked = ~mask  # True where a key may NOT be attended; broadcasts to (B, T, T)
        scores = scores.masked_fill(blocked, float("-inf"))  # (B, T, T)

    # 4) softmax over the keys; a fully-masked row is all NaN here and is set to 0
    weights = torch.softmax(scores, dim=-1)  # (B, T, T)
    if mask is not None:
        weights = weights.masked_fill(blocked, 0.0)  # (B, T, T)

    # 5) weighted sum of the values, with nothing applied after it
    out = weights @ v  # (B, T, T) x (B, T, Dv) -> (B, T, Dv)
    return out, weights
