"""ex4 · Learned positional embedding

Write one class.

``class LearnedPositionalEmbedding(nn.Module)``

``__init__(max_len, d_model)``

- Hold one learned vector per position in a parameter named ``weight`` of shape
  ``(max_len, d_model)``, registered directly on the module:
  ``self.weight = nn.Parameter(...)``. Then ``module.weight`` is that parameter,
  ``parameters()`` yields it and ``state_dict()`` has the key ``"weight"``. A plain tensor
  or a buffer is not trained, so it does not count. (``nn.Embedding`` is allowed, but a
  submodule ``self.emb = nn.Embedding(...)`` would keep its table as ``emb.weight``; if you
  want its lookup, call ``torch.nn.functional.embedding(ids, self.weight)``.)
- Initialise it as you like (GPT-2 uses a normal with std 0.02); the checks load their own
  values into ``weight``.

``forward(x, offset=0)``

    out = x + weight[offset : offset + T]

- x ``(B, T, E)`` with ``E = d_model``; out ``(B, T, E)``. Row ``t`` of every sequence in the
  batch gets the vector of position ``offset + t``: the same ``(T, E)`` slice is added to
  each of the ``B`` sequences.
- ``offset`` is the position of the first token, for decoding piece by piece: a sequence fed
  as ``x[:, :3]`` with ``offset=0`` then ``x[:, 3:]`` with ``offset=3`` gets the same result as
  fed whole.
- Raise ``ValueError`` naming ``max_len`` when ``offset + T > max_len``
  (``offset + T == max_len`` is fine).
- Keep x's dtype and device (the checks move the module with ``.to(dtype, device)``); never
  modify x or ``weight`` in place. Gradients flow to ``weight``: only the rows used receive
  one, summed over the batch.

Nothing is forbidden here.

中文：

实现类 ``LearnedPositionalEmbedding(nn.Module)``。``__init__(max_len, d_model)``：每个位置一个
可学习向量，存放在直接注册在模块上的参数 ``weight`` 中，形状 ``(max_len, d_model)``：
``self.weight = nn.Parameter(...)``。这样 ``module.weight`` 就是该参数，``parameters()`` 会返回
它，``state_dict()`` 含有键 ``"weight"``。普通张量或 buffer 不会被训练，不符合要求。（可以使用
``nn.Embedding``，但子模块 ``self.emb = nn.Embedding(...)`` 的表会叫 ``emb.weight``；如需它的查表
功能，请调用 ``torch.nn.functional.embedding(ids, self.weight)``。）初始化方式随意（GPT-2 使用
标准差 0.02 的正态分布），检查会把自己的数值载入 ``weight``。

``forward(x, offset=0)`` 返回 ``x + weight[offset : offset + T]``：x 形状 ``(B, T, E)``，
``E = d_model``，输出形状相同；批内每条序列的第 ``t`` 行都加上位置 ``offset + t`` 的向量。
``offset`` 是第一个 token 的位置，用于分段解码：先用 ``offset=0`` 输入 ``x[:, :3]``，再用
``offset=3`` 输入 ``x[:, 3:]``，结果与一次输入整段相同。``offset + T > max_len`` 时抛出写明
``max_len`` 的 ``ValueError``（等于 ``max_len`` 是允许的）。保持 x 的 dtype 与 device（检查会用
``.to(dtype, device)`` 移动模块），不要原地修改 x 或 ``weight``。梯度流向 ``weight``：只有用到的
行得到梯度，并在 batch 上求和。

本题没有禁止使用的函数。
"""

import torch
import torch.nn as nn


class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model):
        # TODO: write this method (see the statement above).
        raise NotImplementedError

    def forward(self, x, offset=0):
        # TODO: write this method (see the statement above).
        raise NotImplementedError
