"""ex5 · Masked softmax and the causal mask

Write two functions.

``masked_softmax(scores, mask, dim=-1) -> weights``

    weights = softmax(scores over dim, counting only the positions where mask is True)

- ``scores`` is a floating-point tensor of any shape; ``weights`` has its shape, dtype and
  device. ``dim`` is the dimension the softmax runs over (default the last, the keys).
- ``mask`` is a boolean tensor that broadcasts to ``scores.shape``: **True = may attend**
  (the convention of ``torch.nn.functional.scaled_dot_product_attention``). A position
  where the mask is False gets weight exactly 0; the weights over the allowed positions sum
  to 1.
- A slice along ``dim`` whose positions are all masked gets all-zero weights: never NaN,
  in the forward pass or in the gradient with respect to ``scores`` (that gradient is 0
  there). Careful: adding a float mask of 0 / -inf to the scores gives a row of -inf whose
  softmax is NaN, and the NaN comes back in the backward pass even if you zero the
  forward result afterwards.
- Stable for large logits: scores of about 1e4 (float32 and float64) must not overflow.
  Subtract each slice's maximum before ``exp`` (``torch.softmax`` does this for you).
- Raise ``ValueError`` naming ``mask`` when the mask is not a boolean tensor (a float
  0 / 1 or 0 / -inf mask, an integer mask).
- Never modify an input in place.

``causal_mask(num_queries, num_keys=None, *, device=None) -> mask``

    mask[i, j] = True  iff  j <= i + (S - L)          L = num_queries, S = num_keys

- Returns a boolean tensor of shape ``(L, S)`` on ``device`` (``None``: the default
  device, the CPU). ``num_keys`` defaults to ``num_queries``.
- The mask is aligned to the bottom-right corner: the last query sees every key. This is
  what a KV cache needs, where the ``L`` new queries are the last ``L`` of ``S`` positions.
  With ``L == S`` it is the usual lower-triangular mask ``torch.ones(L, L).tril()``; in
  general it equals ``torch.ones(L, S).tril(diagonal=S - L).bool()``.
- ``num_keys < num_queries`` is allowed and follows the same rule: the first ``L - S``
  queries see no key at all (fully-masked rows, which ``masked_softmax`` turns into zeros).

Forbidden here: ``torch.nn.functional.scaled_dot_product_attention``.

中文：

实现两个函数。``masked_softmax(scores, mask, dim=-1)``：在 ``dim`` 维上做 softmax，只计入
mask 为 True 的位置，返回与 ``scores`` 形状、dtype、device 相同的权重。``mask`` 为布尔张量，
可广播到 ``scores`` 的形状，**True 表示可以关注**；mask 为 False 的位置权重必须恰好为 0，
允许位置的权重之和为 1。某一切片（沿 ``dim``）全部被屏蔽时，权重全为 0：前向和对 ``scores``
的梯度中都不能出现 NaN（该处梯度为 0）。注意：把 0 / -inf 的浮点 mask 加到 scores 上，全为
-inf 的行经 softmax 得到 NaN，即使事后把前向结果置零，反向传播中仍会出现 NaN。对约 1e4 的大
logits（float32 与 float64）必须数值稳定，不能溢出：先减去每个切片的最大值再取 exp
（``torch.softmax`` 已经这样做）。mask 不是布尔张量（0/1 或 0/-inf 的浮点 mask、整数 mask）时
抛出写明 ``mask`` 的 ``ValueError``。不要原地修改输入。

``causal_mask(num_queries, num_keys=None, *, device=None)``：返回形状 ``(L, S)`` 的布尔张量，
``mask[i, j] = True`` 当且仅当 ``j <= i + (S - L)``（L = num_queries，S = num_keys，默认等于
num_queries），放在 ``device`` 上（``None`` 表示默认设备 CPU）。mask 与右下角对齐：最后一个
query 能看到所有 key，这正是 KV cache 的需要（L 个新 query 是 S 个位置中的最后 L 个）。
``L == S`` 时就是下三角 ``torch.ones(L, L).tril()``；一般情况下等于
``torch.ones(L, S).tril(diagonal=S - L).bool()``。允许 ``num_keys < num_queries``，规则不变：
前 ``L - S`` 个 query 看不到任何 key（整行被屏蔽，由 ``masked_softmax`` 输出全 0）。

禁止使用：``torch.nn.functional.scaled_dot_product_attention``。
"""

import torch


def masked_softmax(scores, mask, dim=-1):
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a boolean tensor (True = may attend), got {got}")
    mask = mask.expand_as(scores)  # (..., L, S): the mask broadcast to the scores

    # 1) masked positions get -inf, so exp() makes them exactly 0; masked_fill also
    #    gives them a zero gradient, so a fully-masked row cannot send NaN backwards
    scores = scores.masked_fill(~mask, float("-inf"))  # (..., L, S)

    # 2) subtract each slice's maximum (stability for large logits); a fully-masked
    #    slice has maximum -inf, which is replaced by 0 so that -inf - max stays -inf
    row_max = scores.amax(dim=dim, keepdim=True).detach()  # (..., 1, S) or (..., L, 1)
    row_max = row_max.masked_fill(torch.isinf(row_max), 0.0)
    exp = torch.exp(scores - row_max)  # (..., L, S), 0 where masked

    # 3) normalise; a fully-masked slice sums to 0 and is divided by 1 instead, giving zeros
    total = exp.sum(dim=dim, keepdim=True)  # (..., 1, S) or (..., L, 1)
    total = total.masked_fill(total == 0, 1.0)
    return exp / total  # (..., L, S)


def causal_mask(num_queries, num_keys=None, *, device=None):
    L = num_queries
    S = num_queries if num_keys is None else num_keys

    # query i is position i + (S - L) of the S keys: it sees keys 0 .. i + (S - L)
    ones = torch.ones(L, S, dtype=torch.bool, device=device)  # (L, S)
    return torch.tril(ones, diagonal=S - L)  # (L, S), True = may attend
