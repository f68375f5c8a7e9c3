"""Facts behind the efficient-attention, inference and architecture questions, checked with torch.

Self-contained on purpose: it reads the TOML files directly and imports nothing from
attn_drill. Questions are referenced by id; a code question's snippet is executed as shown,
then with the line its correct choice names patched, so the bug's effect is visible.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

QUESTIONS_DIR = Path(__file__).resolve().parents[1] / "attn_drill" / "questions"
TOPICS = {"efficient-attention": "eff", "inference": "inf", "architecture": "arch"}

TAGS = set(
    "qkv-projection scale softmax-dim weighted-sum permutation-equivariance head-split "
    "output-projection cross-attention sinusoidal learned-positions rope alibi "
    "relative-positions mask-polarity padding-mask causal-mask causal-alignment "
    "fully-masked-rows numerical-stability leakage kv-cache gqa-mqa flash-attention "
    "complexity sliding-window layernorm residual ffn dropout fresh-layers backward".split()
)
MATH_NAMES = {"sqrt": math.sqrt, "log2": math.log2, "ceil": math.ceil, "floor": math.floor, "min": min, "max": max}


def _load(topic: str) -> dict:
    with open(QUESTIONS_DIR / f"{topic}.toml", "rb") as f:
        return tomllib.load(f)


BANK = {q["id"]: q for topic in TOPICS for q in _load(topic)["questions"]}


def q(qid: str) -> dict:
    return BANK[qid]


def evaluate(formula: str, params: dict) -> float:
    """The bank's formula language: arithmetic over params plus a few math names."""
    return eval(compile(formula, "<formula>", "eval"), {"__builtins__": {}}, {**MATH_NAMES, **params})


def answer_of(qid: str) -> float:
    question = q(qid)
    return evaluate(question["formula"], question["params"])


def with_params(qid: str, **overrides) -> float:
    """The question's formula, evaluated on its params with some replaced (tiny analogues)."""
    question = q(qid)
    return evaluate(question["formula"], {**question["params"], **overrides})


def snippet(qid: str) -> list[str]:
    return q(qid)["code"].splitlines()


def correct_line(qid: str) -> int:
    """The line number that the correct choice of a single-select code question names."""
    question = q(qid)
    choice = question["choices"][ord(question["answer"]) - ord("a")]
    return int(re.match(r"Line (\d+):", choice["en"]).group(1))


def run_snippet(lines: list[str]) -> dict:
    namespace = {"torch": torch, "nn": nn, "F": F}
    exec("\n".join(lines), namespace)
    return namespace


def patched(qid: str, new_text: str) -> list[str]:
    """The snippet with the line named by the correct choice replaced (same indentation)."""
    lines = snippet(qid)
    n = correct_line(qid)
    indent = lines[n - 1][: len(lines[n - 1]) - len(lines[n - 1].lstrip())]
    return lines[: n - 1] + [indent + new_text] + lines[n:]


def reference_attention(q_, k_, v_, allowed=None):
    scores = q_ @ k_.transpose(-2, -1) / q_.shape[-1] ** 0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v_


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    """torch.testing.assert_close without its import cost (it pulls in torch.distributed)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (actual - expected).abs().max()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- the bank's shape


def test_each_topic_has_the_promised_mix():
    for topic, prefix in TOPICS.items():
        data = _load(topic)
        assert data["format_version"] == 1 and data["topic"] == topic
        questions = data["questions"]
        kinds = [x["kind"] for x in questions]
        assert len(questions) == 13, topic
        assert kinds.count("numeric") >= 3 and kinds.count("card") == 2, topic
        assert kinds.count("code") >= (1 if prefix == "eff" else 2), topic
        assert [x["id"] for x in questions] == [f"{prefix}-{i:02d}" for i in range(1, 14)]
        for x in questions:
            assert set(x["tags"]) <= TAGS, x["id"]
            assert x["difficulty"] in (1, 2, 3), x["id"]
            for field in ("prompt", "explanation", "model_answer", "unit"):
                if field in x:
                    assert x[field]["en"].strip() and x[field]["zh"].strip(), (x["id"], field)
            for choice in x.get("choices", []):
                assert choice["en"].strip() and choice["zh"].strip(), x["id"]


@pytest.mark.parametrize("qid", [i for i, x in BANK.items() if x["kind"] == "numeric"])
def test_numeric_answer_is_the_formula(qid):
    question = q(qid)
    assert math.isclose(answer_of(qid), question["answer"], rel_tol=1e-12), qid


@pytest.mark.parametrize("qid", [i for i, x in BANK.items() if x["kind"] == "code"])
def test_code_snippets_compile_and_the_correct_line_exists(qid):
    lines = snippet(qid)
    compile("\n".join(lines), qid, "exec")
    assert 1 <= correct_line(qid) <= len(lines)


# ---------------------------------------------------------------- efficient-attention


def test_eff_02_score_matrix_bytes():
    p = q("eff-02")["params"]
    scores = torch.empty(1, p["heads"], p["n"], p["n"], dtype=torch.float16, device="meta")
    assert scores.nbytes / 2**30 == answer_of("eff-02") == 4


def test_eff_06_projection_vs_attention_flops_and_heads_do_not_multiply_cost():
    """Count the matmul FLOPs of an attention layer that reproduces nn.MultiheadAttention."""
    torch.manual_seed(0)
    n, d = 8, 16  # the same ratio 2d/n = 4 as the question's n=2048, d=4096
    for heads in (1, 4):
        mha = nn.MultiheadAttention(d, heads, bias=False, batch_first=True)  # dropout 0
        x = torch.randn(1, n, d)
        flops = {"proj": 0, "attn": 0}

        def mm(a, b, kind):
            flops[kind] += 2 * a.shape[:-1].numel() * a.shape[-1] * b.shape[-1]
            return a @ b

        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        split = lambda t: t.view(1, n, heads, d // heads).transpose(1, 2)  # (B, H, T, D)
        q_, k_, v_ = (split(mm(x, w.T, "proj")) for w in (w_q, w_k, w_v))
        weights = (mm(q_, k_.transpose(-2, -1), "attn") / (d // heads) ** 0.5).softmax(-1)
        merged = mm(weights, v_, "attn").transpose(1, 2).reshape(1, n, d)
        out = mm(merged, mha.out_proj.weight.T, "proj")
        assert_close(out, mha(x, x, x, need_weights=False)[0])
        assert flops["attn"] == 4 * n * n * d  # independent of the number of heads
        assert flops["proj"] / flops["attn"] == with_params("eff-06", n=n, d=d) == 2 * d / n


def test_eff_07_sliding_window_span_composes_over_layers():
    layers, window, n = 3, 4, 20
    i = torch.arange(n)
    one_layer = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] <= window)  # self + W back
    reach = torch.eye(n, dtype=torch.bool)
    for _ in range(layers):
        reach = (one_layer.int() @ reach.int()) > 0
    furthest = (i[:, None] - i[None, :])[reach].max().item()
    assert furthest == with_params("eff-07", layers=layers, window=window) == layers * window


def blockwise_fixed():
    return run_snippet(
        patched("eff-11", "acc = acc * torch.exp(m - m_new) + p @ v[s:s + block]")
    )["blockwise_attention"]


def test_eff_11_online_softmax_bug_and_fix():
    assert "acc = acc + p @ v" in snippet("eff-11")[correct_line("eff-11") - 1]
    buggy = run_snippet(snippet("eff-11"))["blockwise_attention"]
    torch.manual_seed(0)
    q_, k_, v_ = torch.randn(5, 8, dtype=torch.float64), torch.randn(32, 8, dtype=torch.float64), torch.randn(32, 8, dtype=torch.float64)
    k_[24:] *= 4  # the last block holds the largest scores
    expected = reference_attention(q_, k_, v_)
    assert_close(blockwise_fixed()(q_, k_, v_, block=8), expected)
    assert not torch.allclose(buggy(q_, k_, v_, block=8), expected)
    # with one block there is nothing to rescale, which is why the bug hides in small tests
    assert_close(buggy(q_, k_, v_, block=64), expected)


def test_eff_03_eff_10_flash_style_kernels_are_exact_the_others_are_not():
    torch.manual_seed(0)
    q_, k_, v_ = (torch.randn(1, 2, 64, 16, dtype=torch.float64) for _ in range(3))
    expected = reference_attention(q_, k_, v_)
    # tiled + online softmax gives exactly the same result (FlashAttention's algorithm)
    tiled = blockwise_fixed()
    assert_close(tiled(q_[0, 0], k_[0, 0], v_[0, 0], block=16), expected[0, 0])
    # PyTorch's fused SDPA kernel matches the textbook formula
    assert_close(F.scaled_dot_product_attention(q_, k_, v_), expected)
    # a sliding window shorter than the sequence is a different model
    i = torch.arange(64)
    window = (i[:, None] - i[None, :]).abs() <= 8
    assert not torch.allclose(reference_attention(q_, k_, v_, window), expected)
    # linear attention (elu + 1 feature map) is not softmax attention
    phi_q, phi_k = F.elu(q_) + 1, F.elu(k_) + 1
    linear = (phi_q @ (phi_k.transpose(-2, -1) @ v_)) / (phi_q @ phi_k.sum(-2, keepdim=True).transpose(-2, -1))
    assert not torch.allclose(linear, expected, atol=1e-2)


def test_eff_08_eff_09_gqa_shares_kv_heads_but_keeps_score_work():
    torch.manual_seed(0)
    h_q, h_kv, t, dh = 8, 2, 6, 4
    q_, k_, v_ = torch.randn(1, h_q, t, dh), torch.randn(1, h_kv, t, dh), torch.randn(1, h_kv, t, dh)
    grouped = F.scaled_dot_product_attention(q_, k_, v_, enable_gqa=True)
    k_rep, v_rep = k_.repeat_interleave(h_q // h_kv, 1), v_.repeat_interleave(h_q // h_kv, 1)
    assert_close(grouped, reference_attention(q_, k_rep, v_rep))
    scores = q_ @ k_rep.transpose(-2, -1)
    assert scores.shape == (1, h_q, t, t)  # every query head still scores every key
    assert k_rep.numel() // k_.numel() == h_q // h_kv  # what is stored shrinks by H/G


# ---------------------------------------------------------------- inference


def kv_cache_bytes(layers, kv_heads, head_dim, seq_len, batch, dtype, device="cpu"):
    """A cache as a decoder keeps it: per layer, keys and values of shape (B, H_kv, T, D)."""
    cache = [
        (torch.empty(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device),
         torch.empty(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device))
        for _ in range(layers)
    ]
    return sum(k.nbytes + v.nbytes for k, v in cache)


@pytest.mark.parametrize("qid", ["inf-02", "inf-03"])
def test_inf_02_03_kv_cache_size(qid):
    p = q(qid)["params"]
    dtype = {2: torch.float16, 4: torch.float32}[p["bytes_per_elem"]]
    tiny = dict(layers=3, kv_heads=2, head_dim=5, seq_len=7, batch=2)
    assert kv_cache_bytes(**tiny, dtype=dtype) / 2**30 == with_params(qid, **tiny)
    full = {k: p[k] for k in tiny}
    assert kv_cache_bytes(**full, dtype=dtype, device="meta") / 2**30 == answer_of(qid)


def test_inf_03_04_query_heads_do_not_enter_the_cache():
    assert q("inf-03")["params"]["kv_heads"] == 8
    per_token = kv_cache_bytes(80, 8, 128, 1, 1, torch.float16, device="meta")
    assert per_token == 320 * 1024
    assert 40 * 2**30 // per_token == answer_of("inf-04") == 131072
    assert 40 * 2**30 // kv_cache_bytes(80, 64, 128, 1, 1, torch.float16, device="meta") == 16384


def test_inf_05_memory_bound_decoding():
    weight_bytes = 8e9 * 2
    assert 3200e9 / weight_bytes == answer_of("inf-05") == 200


def decode_all(decode_step, x, w_q, w_k, w_v):
    cache, outputs = {}, []
    for t in range(x.shape[1]):
        out, cache = decode_step(x[:, t : t + 1], w_q, w_k, w_v, cache)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


def test_inf_06_cache_overwritten_instead_of_grown():
    assert 'cache["k"], cache["v"] = k[:, -1:], v[:, -1:]' in snippet("inf-06")[correct_line("inf-06") - 1]
    torch.manual_seed(0)
    x, w_q, w_k, w_v = torch.randn(2, 6, 8), torch.randn(8, 8), torch.randn(8, 8), torch.randn(8, 8)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    expected = reference_attention(x @ w_q, x @ w_k, x @ w_v, causal)  # from scratch, no cache
    buggy = decode_all(run_snippet(snippet("inf-06"))["decode_step"], x, w_q, w_k, w_v)
    assert_close(buggy[:, :2], expected[:, :2])  # the first two tokens are right
    assert not torch.allclose(buggy[:, 2], expected[:, 2])  # from the third on they are not
    fixed = run_snippet(patched("inf-06", 'cache["k"], cache["v"] = k, v'))["decode_step"]
    # no queries cached and no mask needed: incremental decoding equals full causal attention
    assert_close(decode_all(fixed, x, w_q, w_k, w_v), expected)


def test_inf_07_bottom_right_alignment_with_a_cache():
    assert ".tril()" in snippet("inf-07")[correct_line("inf-07") - 1]
    torch.manual_seed(0)
    s, t_new = 7, 3
    q_all, k_, v_ = (torch.randn(1, 2, s, 4) for _ in range(3))
    q_new = q_all[:, :, -t_new:]  # the last T_new tokens arrive as a chunk
    expected = reference_attention(q_all, k_, v_, torch.ones(s, s, dtype=torch.bool).tril())[:, :, -t_new:]
    buggy = run_snippet(snippet("inf-07"))["attend_with_cache"](q_new, k_, v_)
    assert not torch.isnan(buggy).any()  # no row is fully masked: the NaN distractor is wrong
    assert not torch.allclose(buggy, expected)
    fix = "allowed = torch.ones(T_new, S, dtype=torch.bool).tril(diagonal=S - T_new)"
    fixed = run_snippet(patched("inf-07", fix))["attend_with_cache"](q_new, k_, v_)
    assert_close(fixed, expected)
    # SDPA's is_causal is top-left aligned for non-square masks, like the bug
    assert_close(F.scaled_dot_product_attention(q_new, k_, v_, is_causal=True), buggy)


# ---------------------------------------------------------------- architecture


def test_arch_02_ffn_parameters():
    d = q("arch-02")["params"]["d"]
    ffn = nn.Sequential(nn.Linear(d, 4 * d, device="meta"), nn.GELU(), nn.Linear(4 * d, d, device="meta"))
    assert n_params(ffn) == answer_of("arch-02") == 4_722_432


def test_arch_03_encoder_layer_parameters_do_not_depend_on_heads():
    p = q("arch-03")["params"]
    for nhead in (1, 8):
        layer = nn.TransformerEncoderLayer(p["d"], nhead, p["ff"], device="meta")
        assert n_params(layer) == answer_of("arch-03") == 3_152_384


def test_arch_04_gpt2_small_non_embedding_estimate():
    p = q("arch-04")["params"]
    d = p["d"]
    blocks = [nn.TransformerEncoderLayer(d, 12, 4 * d, device="meta") for _ in range(p["layers"])]
    exact = sum(n_params(b) for b in blocks)
    assert exact == 85_054_464
    assert abs(answer_of("arch-04") - exact) / exact <= q("arch-04")["tolerance"]


def test_arch_05_layernorm_created_in_forward_is_never_trained():
    assert "nn.LayerNorm(x.shape[-1])" in snippet("arch-05")[correct_line("arch-05") - 1]
    torch.manual_seed(0)
    block = run_snippet(snippet("arch-05"))["Block"](8, 2)
    fixed_lines = patched("arch-05", "x = x + self.ffn(self.ln2(x))")
    fixed_lines.insert(4, "        self.ln2 = nn.LayerNorm(d_model)")
    fixed = run_snippet(fixed_lines)["Block"](8, 2)
    assert n_params(fixed) - n_params(block) == 2 * 8  # the inline LayerNorm's weight and bias
    assert not any(k.startswith("ln2") for k in block.state_dict())
    # train a step: the inline LayerNorm is rebuilt at 1 and 0 on every call
    seen = []
    original = nn.LayerNorm.forward

    def spy(self, x):
        seen.append(self)
        return original(self, x)

    nn.LayerNorm.forward = spy
    try:
        for _ in range(2):  # two plain SGD steps (torch.optim is slow to import)
            block.zero_grad()
            block(torch.randn(2, 5, 8)).pow(2).mean().backward()
            with torch.no_grad():
                for p in block.parameters():
                    p -= 0.1 * p.grad
    finally:
        nn.LayerNorm.forward = original
    inline = [m for m in seen if m is not block.ln1]
    assert len(inline) == 2 and inline[0] is not inline[1]  # a fresh module on each call
    assert all(torch.equal(m.weight, torch.ones(8)) for m in inline)


def test_arch_06_missing_residual_erases_the_stream():
    assert "self.ln2(self.drop(self.ffn(x)))" in snippet("arch-06")[correct_line("arch-06") - 1]
    torch.manual_seed(0)
    buggy = run_snippet(snippet("arch-06"))["PostNormBlock"](8, 2, p=0.0)
    fixed = run_snippet(patched("arch-06", "x = self.ln2(x + self.drop(self.ffn(x)))"))["PostNormBlock"](8, 2, p=0.0)
    fixed.load_state_dict(buggy.state_dict())
    for block in (buggy, fixed):
        nn.init.zeros_(block.ffn[2].weight)  # an FFN that contributes nothing yet
        nn.init.zeros_(block.ffn[2].bias)
    x = torch.randn(1, 5, 8)
    out = buggy(x)
    assert torch.allclose(out, out[:, :1].expand_as(out))  # every position identical: input lost
    after_attn = fixed.ln1(x + fixed.attn(x, x, x, need_weights=False)[0])
    assert_close(fixed(x), fixed.ln2(after_attn))  # with x +, the stream survives


def test_arch_09_layernorm_is_per_token():
    torch.manual_seed(0)
    ln = nn.LayerNorm(8)
    x = torch.randn(3, 4, 8)
    y = x.clone()
    y[1:] *= 10  # change the rest of the batch
    y[0, 1:] += 5  # and the other tokens of the first sequence
    assert_close(ln(x)[0, 0], ln(y)[0, 0])
    assert_close(ln.train()(x), ln.eval()(x))


def test_arch_11_ffn_is_position_wise():
    torch.manual_seed(0)
    ffn = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
    x = torch.randn(1, 4, 8)
    y = x.clone()
    y[:, 0] += 1.0
    assert_close(ffn(x)[:, 1:], ffn(y)[:, 1:])
