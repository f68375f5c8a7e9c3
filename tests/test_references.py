"""The reference solutions agree with PyTorch's own implementations, in this process."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_drill.catalog import find_exercise


def reference(key):
    exercise = find_exercise(key)
    spec = importlib.util.spec_from_file_location(f"ref_{exercise.id}", exercise.solution_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ex1_matches_sdpa(dtype):
    ref = reference("ex1")
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 4, dtype=dtype), torch.randn(2, 3, 7, 4, dtype=dtype), torch.randn(2, 3, 7, 6, dtype=dtype)
    mask = torch.rand(5, 7) < 0.7
    mask[:, 0] = True
    for kwargs in ({}, {"attn_mask": mask}, {"scale": 0.3}):
        expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
        mine_kwargs = {"mask": kwargs.get("attn_mask"), "scale": kwargs.get("scale")}
        torch.testing.assert_close(ref.scaled_dot_product_attention(q, k, v, **mine_kwargs)[0], expected)


def test_ex1_fully_masked_row_is_zero_with_finite_gradients():
    ref = reference("ex1")
    q = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    out, weights = ref.scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(out[0, 1], torch.zeros(2, dtype=torch.float64)) and weights[0, 1].abs().sum() == 0
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ex2_matches_nn_multihead_attention(dtype):
    ref = reference("ex2")
    torch.manual_seed(0)
    E, H = 12, 3
    mine = ref.MultiHeadAttention(E, H).to(dtype).eval()
    builtin = nn.MultiheadAttention(E, H, batch_first=True).to(dtype).eval()
    with torch.no_grad():
        builtin.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
        builtin.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        builtin.out_proj.load_state_dict(mine.out_proj.state_dict())
    query, memory = torch.randn(2, 4, E, dtype=dtype), torch.randn(2, 6, E, dtype=dtype)
    mask = torch.rand(4, 6) < 0.7
    mask[:, 0] = True
    expected, expected_weights = builtin(query, memory, memory, attn_mask=~mask, average_attn_weights=False)
    out, weights = mine(query, memory, memory, mask=mask, need_weights=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)
