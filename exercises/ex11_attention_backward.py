"""ex11 · The backward pass of attention, by hand

Write one function.

``attention_backward(q, k, v, grad_out, scale=None) -> (dq, dk, dv)``

The forward pass is unmasked softmax attention (scale defaults to 1 / sqrt(D)):

    S = q @ k^T * scale          (..., L, S)   the scores
    P = softmax(S, over the keys) (..., L, S)   the weights
    O = P @ v                    (..., L, Dv)  the output

Given ``grad_out`` = dL/dO, return the gradients of the same loss L with respect to q, k and v:

    dv = P^T @ grad_out
    dP = grad_out @ v^T
    dS = P * (dP - rowsum(dP * P))          the softmax backward, row by row
    dq = scale * dS @ k
    dk = scale * dS^T @ q

- q ``(..., L, D)``, k ``(..., S, D)``, v ``(..., S, Dv)``, grad_out ``(..., L, Dv)``, with the same
  leading dimensions (none, batch, or batch and heads). Return a tuple of three tensors
  ``(dq, dk, dv)`` shaped like q, k and v, in their dtype and on their device.
- Recompute P from q and k (as FlashAttention's backward does); be stable for scores of
  order 1e4 (no overflow).
- By hand means no automatic differentiation: ``torch.autograd.grad``,
  ``torch.autograd.backward`` and ``Tensor.backward`` are forbidden (``torch.func.vjp`` and
  ``torch.autograd.functional`` call them, so they fail too), and no backward kernel of torch
  (an aten op with ``backward`` in its name, such as ``torch._softmax_backward_data``) may run
  inside your code. Plain tensor operations (``@``, ``torch.softmax``, ``sum``, ...) are what
  you use.
- Never modify an input in place.
- Raise ``ValueError`` naming the argument when q and k disagree on D, when k and v disagree
  on S, or when grad_out is not shaped ``(..., L, Dv)``.

Forbidden here: ``torch.autograd.grad``, ``torch.autograd.backward``, ``torch.Tensor.backward``.

中文：

实现函数 ``attention_backward``：手写注意力的反向传播。前向为不带掩码的 softmax 注意力：
``S = q @ k^T * scale``（scale 默认 ``1/sqrt(D)``），``P = softmax(S)``（在 key 维度上），
``O = P @ v``。已知 ``grad_out = dL/dO``，返回同一损失对 q、k、v 的梯度：
``dv = P^T @ grad_out``，``dP = grad_out @ v^T``，``dS = P * (dP - rowsum(dP * P))``（逐行的
softmax 反向），``dq = scale * dS @ k``，``dk = scale * dS^T @ q``。
q ``(..., L, D)``，k ``(..., S, D)``，v ``(..., S, Dv)``，grad_out ``(..., L, Dv)``，前导维度相同
（可以没有，也可以是 batch 或 batch 与头）。返回三个张量组成的元组 ``(dq, dk, dv)``，形状、
dtype 与 device 分别和 q、k、v 相同。由 q、k 重新计算 P（FlashAttention 的反向也是如此）；分数
达到 1e4 量级时不能溢出。“手写”意味着不能使用自动求导：禁止 ``torch.autograd.grad``、
``torch.autograd.backward`` 与 ``Tensor.backward``，``torch.func.vjp`` 与 ``torch.autograd.functional`` 会调用它们，同样会失败；你的代码里也
不能运行 torch 的反向算子（名字里带 ``backward`` 的 aten 算子，例如 ``torch._softmax_backward_data``）；只用普通张量运算（``@``、``torch.softmax``、
``sum`` 等）。不要原地修改输入。q 与 k 的 D 不一致、k 与 v 的 S 不一致或 grad_out 的形状不是
``(..., L, Dv)`` 时，抛出写明参数名的 ``ValueError``。

禁止使用：``torch.autograd.grad``、``torch.autograd.backward``、``torch.Tensor.backward``。
"""

import math

import torch


def attention_backward(q, k, v, grad_out, scale=None):
    # TODO: write this function (see the statement above).
    raise NotImplementedError
