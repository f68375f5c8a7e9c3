"""ex7 · Rotary position embedding (RoPE)

Write one function.

``apply_rotary_embedding(x, positions=None, base=10000.0) -> (..., T, D)``

    theta_i = base**(-2i / D)                        i = 0 .. D/2 - 1
    a, b    = x[..., i], x[..., i + D/2]             at position p
    out[..., i]       = a * cos(p * theta_i) - b * sin(p * theta_i)
    out[..., i + D/2] = a * sin(p * theta_i) + b * cos(p * theta_i)

- x ``(..., T, D)``: any leading dimensions (batch, heads), then time, then an even width D.
  The output has the same shape.
- The "rotate half" (half-split) convention of GPT-NeoX and Llama: dimension ``i`` pairs with
  ``i + D/2`` (not with its neighbour ``i + 1``), and each pair is rotated
  counter-clockwise by the angle ``p * theta_i``. In one line:
  ``out = x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)``, where
  ``x1, x2`` are the first and second halves of the last dimension and ``cos``, ``sin`` repeat
  the ``D/2`` angles twice.
- ``positions`` is an integer tensor of shape ``(T,)`` giving the position of each time step
  (default ``torch.arange(T)``); the same positions apply to every leading index.
- ``base`` replaces 10000 in the frequencies (Su et al. 2021, RoFormer).
- Raise ``ValueError`` naming ``x`` when D is odd.
- Keep x's dtype and device; compute the angles in x's dtype (float64 results are checked to
  about 1e-9). Never modify x in place.

Why it works: a rotation keeps each vector's length, position 0 leaves x unchanged, and the
score between a query rotated at position m and a key rotated at position n depends only on
``m - n``.

Nothing is forbidden here.

中文：

实现函数 ``apply_rotary_embedding(x, positions=None, base=10000.0)``，输出形状与 x 相同。
x 形状为 ``(..., T, D)``（前面可以有 batch 维、头维等维度），D 为偶数。频率
``theta_i = base**(-2i/D)``（``i = 0 .. D/2-1``）。采用 GPT-NeoX / Llama 的"rotate half"
（前后两半配对）约定：第 ``i`` 维与第 ``i + D/2`` 维配成一对（不是与相邻的 ``i + 1`` 维），在位置
``p`` 处按角度 ``p * theta_i`` 逆时针旋转：``out[i] = a cos - b sin``，
``out[i + D/2] = a sin + b cos``，其中 ``a = x[..., i]``，``b = x[..., i + D/2]``。等价写法：
``out = x * cos + rotate_half(x) * sin``，``rotate_half(x) = cat(-x2, x1)``。``positions`` 是形状
``(T,)`` 的整数张量，给出每个时间步的位置（默认 ``torch.arange(T)``），对所有前导维度相同。
``base`` 替换频率中的 10000。D 为奇数时抛出写明 ``x`` 的 ``ValueError``。保持 x 的 dtype 与
device，在 x 的 dtype 下计算角度（float64 的结果按约 1e-9 的精度检查），不要原地修改 x。

原理：旋转不改变向量长度；位置 0 不改变 x；在位置 m 旋转的 query 与在位置 n 旋转的 key 的
点积只取决于 ``m - n``。

本题没有禁止使用的函数。
"""

import torch


def apply_rotary_embedding(x, positions=None, base=10000.0):
    T, D = x.shape[-2], x.shape[-1]  # time, head width
    if D % 2 != 0:
        raise ValueError(f"the last dimension of x must be even to form pairs, got x of shape {tuple(x.shape)}")
    if positions is None:
        positions = torch.arange(T, device=x.device)  # (T,)
    half = D // 2

    # 1) one frequency per pair i: theta_i = base**(-2i / D) (RoFormer, eq. 15)
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=x.dtype, device=x.device) / D))  # (D/2,)

    # 2) the angle of pair i at each position
    angles = positions.to(x.dtype)[:, None] * inv_freq[None, :]  # (T, 1) * (1, D/2) -> (T, D/2)
    cos, sin = angles.cos(), angles.sin()  # (T, D/2) each, broadcast over the leading dims

    # 3) rotate each pair (x_i, x_{i + D/2}) by its angle ("rotate half", GPT-NeoX / Llama)
    x1, x2 = x[..., :half], x[..., half:]  # (..., T, D/2) each
    out1 = x1 * cos - x2 * sin  # (..., T, D/2)
    out2 = x1 * sin + x2 * cos  # (..., T, D/2)
    return torch.cat([out1, out2], dim=-1)  # (..., T, D)
