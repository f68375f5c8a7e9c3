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


def _mha_from(in_weight, in_bias, out_proj, num_heads):
    embed_dim = in_weight.size(1)
    builtin = nn.MultiheadAttention(embed_dim, num_heads, bias=in_bias is not None, batch_first=True,
                                    dtype=in_weight.dtype).eval()
    with torch.no_grad():
        builtin.in_proj_weight.copy_(in_weight)
        if in_bias is not None:
            builtin.in_proj_bias.copy_(in_bias)
        builtin.out_proj.load_state_dict(out_proj.state_dict())
    return builtin


def test_ex5_causal_mask_is_bottom_right_tril():
    ref = reference("ex5")
    for L, S in ((4, 4), (3, 7), (1, 5)):
        assert torch.equal(ref.causal_mask(L, S), torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L))
    scores, mask = torch.randn(2, 4, 6, dtype=torch.float64), ref.causal_mask(4, 6)
    torch.testing.assert_close(ref.masked_softmax(scores, mask),
                               torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1))


def test_ex6_matches_nn_multihead_attention_with_a_causal_mask():
    ref = reference("ex6")
    torch.manual_seed(1)
    mine = ref.CausalSelfAttention(8, 2).double().eval()
    builtin = _mha_from(mine.qkv.weight, mine.qkv.bias, mine.out_proj, 2)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    future = torch.ones(5, 5, dtype=torch.bool).triu(diagonal=1)  # True = NOT allowed, nn.MultiheadAttention's polarity
    torch.testing.assert_close(mine(x), builtin(x, x, x, attn_mask=future, need_weights=False)[0])


def test_ex9_matches_sdpa_grouped_query_path():
    ref = reference("ex9")
    torch.manual_seed(2)
    E, H, H_kv, B, T = 12, 6, 2, 2, 5
    mine = ref.GroupedQueryAttention(E, H, H_kv).double().eval()
    x = torch.randn(B, T, E, dtype=torch.float64)
    D = E // H
    q = mine.q_proj(x).view(B, T, H, D).transpose(1, 2)       # (B, H, T, D)
    k = mine.k_proj(x).view(B, T, H_kv, D).transpose(1, 2)    # (B, H_kv, T, D)
    v = mine.v_proj(x).view(B, T, H_kv, D).transpose(1, 2)    # (B, H_kv, T, D)
    if "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or ""):
        heads = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    else:
        heads = F.scaled_dot_product_attention(q, k.repeat_interleave(H // H_kv, 1), v.repeat_interleave(H // H_kv, 1))
    expected = mine.out_proj(heads.transpose(1, 2).reshape(B, T, E))
    torch.testing.assert_close(mine(x), expected)


def test_ex11_matches_autograd():
    ref = reference("ex11")
    q, k, v = (torch.randn(2, n, 4, dtype=torch.float64, requires_grad=True) for n in (3, 5, 5))
    grad_out = torch.randn(2, 3, 4, dtype=torch.float64)
    out = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v
    expected = torch.autograd.grad(out, (q, k, v), grad_out)
    for got, want in zip(ref.attention_backward(q.detach(), k.detach(), v.detach(), grad_out), expected):
        torch.testing.assert_close(got, want)


def test_ex12_matches_transformer_encoder_layer():
    ref = reference("ex12")
    torch.manual_seed(3)
    E, H, F_ = 8, 2, 16
    block = ref.TransformerBlock(E, H, F_).double().eval()
    layer = nn.TransformerEncoderLayer(E, H, F_, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True, dtype=torch.float64).eval()
    a = block.attn
    layer.self_attn = _mha_from(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                                torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]), a.out_proj, H)
    layer.linear1.load_state_dict(block.ffn.fc1.state_dict())
    layer.linear2.load_state_dict(block.ffn.fc2.state_dict())
    layer.norm1.load_state_dict(block.ln1.state_dict())
    layer.norm2.load_state_dict(block.ln2.state_dict())
    x = torch.randn(2, 5, E, dtype=torch.float64)
    mask = torch.rand(5, 5) < 0.7
    mask[:, 0] = True
    torch.testing.assert_close(block(x), layer(x))
    torch.testing.assert_close(block(x, mask=mask), layer(x, src_mask=~mask))
