"""ex3 · Sinusoidal positional encoding

Write one function.

``sinusoidal_positional_encoding(num_positions, d_model, base=10000.0, *, dtype=torch.float32, device=None)``

    PE[p, 2i]     = sin(p / base**(2i / d_model))
    PE[p, 2i + 1] = cos(p / base**(2i / d_model))

- Returns a tensor of shape ``(num_positions, d_model)``: row ``p`` encodes position ``p``,
  counted from 0 (so row 0 is ``[0, 1, 0, 1, ...]``).
- ``i`` counts the (sin, cos) pairs, ``i = 0 .. d_model/2 - 1``: the two columns of pair ``i``
  share one frequency ``1 / base**(2i / d_model)``. The columns are interleaved (sin in even
  columns, cos in odd ones), not laid out as a block of sines followed by a block of cosines.
- ``base`` replaces 10000 in the formula (Vaswani et al. 2017, section 3.5).
- The result has the requested ``dtype`` and lies on ``device`` (``None``: torch's default
  device). Compute in that dtype (float64 results are checked to about 1e-9).
- Raise ``ValueError`` naming ``d_model`` when ``d_model`` is odd.

Why it works: for every shift ``k`` there is one matrix ``M_k``, the same for every ``p``, with
``PE[p + k] = M_k @ PE[p]``: it rotates each pair ``(2i, 2i + 1)`` by the angle
``k / base**(2i / d_model)``. Relative positions are linear functions of the encoding.

Nothing is forbidden here.

中文：

实现一个函数 ``sinusoidal_positional_encoding``，返回形状为 ``(num_positions, d_model)`` 的张量：
``PE[p, 2i] = sin(p / base**(2i/d_model))``，``PE[p, 2i+1] = cos(p / base**(2i/d_model))``。
位置 ``p`` 从 0 开始计数（第 0 行为 ``[0, 1, 0, 1, ...]``）；``i`` 是 (sin, cos) 对的编号，
同一对的两列共用频率 ``1/base**(2i/d_model)``；sin 放在偶数列、cos 放在奇数列，交错排列，
而不是前一半全是 sin、后一半全是 cos。``base`` 替换公式中的 10000。结果使用参数给定的
``dtype``，位于 ``device`` 上（``None`` 表示 torch 的默认设备），请在该 dtype 下计算（float64
的结果按约 1e-9 的精度检查）。``d_model`` 为奇数时抛出写明 ``d_model`` 的 ``ValueError``。

原理：对每个偏移 ``k`` 都存在一个与 ``p`` 无关的矩阵 ``M_k``，使 ``PE[p+k] = M_k @ PE[p]``：
它把每一对 ``(2i, 2i+1)`` 旋转角度 ``k / base**(2i/d_model)``。相对位置是编码的线性函数。

本题没有禁止使用的函数。
"""

import math

import torch


def sinusoidal_positional_encoding(num_positions, d_model, base=10000.0, *, dtype=torch.float32, device=None):
    # 0) sin and cos come in pairs, so the width must be even
    if d_model % 2 != 0:
        raise ValueError(f"d_model must be even (sin and cos come in pairs), got d_model = {d_model}")

    # 1) positions p = 0 .. num_positions - 1, as a column
    position = torch.arange(num_positions, dtype=dtype, device=device).unsqueeze(1)  # (P, 1)

    # 2) one frequency per pair i: 1 / base**(2i / d_model), via exp for stability
    two_i = torch.arange(0, d_model, 2, dtype=dtype, device=device)  # (d_model/2,)
    div_term = torch.exp(two_i * (-math.log(base) / d_model))  # (d_model/2,)

    # 3) the angle of pair i at position p
    angles = position * div_term  # (P, 1) * (d_model/2,) -> (P, d_model/2)

    # 4) interleave: sin in the even columns, cos in the odd ones
    pe = torch.zeros(num_positions, d_model, dtype=dtype, device=device)  # (P, d_model)
    pe[:, 0::2] = torch.sin(angles)  # (P, d_model/2)
    pe[:, 1::2] = torch.cos(angles)  # (P, d_model/2)
    return pe
