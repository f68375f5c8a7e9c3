"""Forbidden built-ins: what each name the catalog forbids means at the operator level.

The catalog names what a learner may not call (``torch.nn.functional.scaled_dot_product_attention``).
The worker enforces it while learner code runs, by two modes that see what a Python-level
rebinding cannot: every torch function call whatever the alias (``F``, ``torch._C._nn``,
``torch.ops.aten``), and every aten kernel after dispatch (the fused kernels behind SDPA and
``nn.MultiheadAttention``'s fast path). The judge also scans the learner's file (``scan``).
"""

from __future__ import annotations

SDPA_OPS = [
    "scaled_dot_product_attention", "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps", "_fused_sdp_choice", "_flash_attention_forward",
    "_efficient_attention_forward",
]
MHA_OPS = ["multi_head_attention_forward", "_native_multi_head_attention"]
BACKWARD_KERNELS = "*backward*"   # a pattern: every aten backward kernel (torch._softmax_backward_data, ...)

# catalog name -> (the Python objects to match, the operator names to match)
RULES: dict[str, tuple[list[str], list[str]]] = {
    "torch.nn.functional.scaled_dot_product_attention": (["torch.nn.functional.scaled_dot_product_attention"],
                                                         SDPA_OPS),
    "torch.nn.functional.multi_head_attention_forward": (["torch.nn.functional.multi_head_attention_forward"],
                                                         MHA_OPS),
    "torch.nn.MultiheadAttention": (["torch.nn.functional.multi_head_attention_forward"], MHA_OPS),
    "torch.nn.TransformerEncoderLayer": ([], ["_transformer_encoder_layer_fwd", *MHA_OPS]),
    "torch.autograd.grad": (["torch.autograd.grad"], [BACKWARD_KERNELS]),
    "torch.autograd.backward": (["torch.autograd.backward"], [BACKWARD_KERNELS]),
    "torch.Tensor.backward": (["torch.Tensor.backward"], [BACKWARD_KERNELS]),
}


def known(name: str) -> bool:
    return name in RULES


def worker_rules(names) -> list[dict]:
    """The worker's settings for these catalog names: a label and what to match."""
    rules = []
    for name in names:
        functions, ops = RULES.get(name, ([name], []))
        rules.append({"label": name, "functions": functions, "ops": ops})
    return rules
