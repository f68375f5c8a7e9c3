"""Checks, with torch, the claims made by the question-bank files for the topics
self-attention, scaled-dot-product, multi-head and cross-attention.

Self-contained on purpose: it reads the TOML files directly and imports nothing from
attn_drill. Questions are referenced by id.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
# The formulas torch's FlopCounterMode uses. Called directly: entering FlopCounterMode
# imports torch._dynamo, which takes seconds.
from torch.utils.flop_counter import bmm_flop, sdpa_flop_count

QDIR = Path(__file__).resolve().parent.parent / "attn_drill" / "questions"
TOPICS = {
    "self-attention": "sa",
    "scaled-dot-product": "sdp",
    "multi-head": "mh",
    "cross-attention": "ca",
}
TAGS = set(
    """qkv-projection scale softmax-dim weighted-sum permutation-equivariance head-split
    output-projection cross-attention sinusoidal learned-positions rope alibi
    relative-positions mask-polarity padding-mask causal-mask causal-alignment
    fully-masked-rows numerical-stability leakage kv-cache gqa-mqa flash-attention
    complexity sliding-window layernorm residual ffn dropout fresh-layers backward""".split()
)
MIN_KINDS = {  # topic -> minimum counts asked for in the brief
    "self-attention": {"numeric": 2, "code": 2, "card": 2},
    "scaled-dot-product": {"numeric": 3, "code": 1, "card": 2},
    "multi-head": {"numeric": 3, "code": 2, "card": 2},
    "cross-attention": {"numeric": 2, "code": 1, "card": 2},
}


def _load():
    files, questions = {}, {}
    for topic in TOPICS:
        data = tomllib.loads((QDIR / f"{topic}.toml").read_text(encoding="utf-8"))
        files[topic] = data
        for q in data["questions"]:
            assert q["id"] not in questions, f"duplicate id {q['id']}"
            questions[q["id"]] = q
    return files, questions


FILES, Q = _load()


# ---------------------------------------------------------------- helpers


def correct_choice(qid: str) -> str:
    q = Q[qid]
    return q["choices"][ord(q["answer"]) - ord("a")]["en"]


def correct_choices(qid: str) -> list[str]:
    q = Q[qid]
    return [q["choices"][ord(a) - ord("a")]["en"] for a in q["answer"]]


def starts(texts: list[str]) -> list[str]:
    return sorted(t.split()[0] for t in texts)


def code_line(qid: str, n: int) -> str:
    """Line n (1-based) of a code question, as the quiz numbers it."""
    return Q[qid]["code"].splitlines()[n - 1]


def run_snippet(qid: str, code: str | None = None) -> tuple[dict, str]:
    torch.manual_seed(0)
    ns: dict = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code if code is not None else Q[qid]["code"], qid, "exec"), ns)
    return ns, buf.getvalue().strip()


def patched(qid: str, old: str, new: str) -> str:
    code = Q[qid]["code"]
    assert code.count(old) == 1, f"{qid}: {old!r} must occur once"
    return code.replace(old, new)


_FUNCS = {"sqrt": math.sqrt, "log2": math.log2, "ceil": math.ceil, "floor": math.floor,
          "min": min, "max": max}
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
          ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Pow, ast.USub, ast.UAdd)


def evaluate(formula: str, params: dict) -> float:
    tree = ast.parse(formula, mode="eval")
    for node in ast.walk(tree):
        assert isinstance(node, _NODES), f"disallowed syntax {type(node).__name__} in {formula!r}"
        if isinstance(node, ast.Name):
            assert node.id in params or node.id in _FUNCS, f"unknown name {node.id!r}"
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in _FUNCS
    return eval(compile(tree, "<formula>", "eval"), {"__builtins__": {}, **_FUNCS}, dict(params))


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def matmul_flops(a_shape, b_shape) -> int:
    """FLOPs of a @ b for (..., m, k) @ (..., k, n), by torch's own bmm formula."""
    assert a_shape[:-2] == b_shape[:-2] and a_shape[-1] == b_shape[-2]
    batch = math.prod(a_shape[:-2])
    return bmm_flop((batch, *a_shape[-2:]), (batch, *b_shape[-2:]))


def meta_bytes(shape, dtype) -> int:
    t = torch.empty(shape, dtype=dtype, device="meta")
    return t.numel() * t.element_size()


def ref_attention(q, k, v, allowed=None, scale=None):
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    s = q @ k.transpose(-2, -1) * scale
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return s.softmax(-1) @ v


def mixed_mask(L, S, seed=0):
    """Random bool mask in which every row has at least one True and one False."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(L, S, generator=g) > 0.5
    m[:, 0], m[:, 1] = True, False
    return m


# ---------------------------------------------------------------- the files themselves


def test_files_shape_and_counts():
    for topic, prefix in TOPICS.items():
        data = FILES[topic]
        assert data["format_version"] == 1
        assert data["topic"] == topic
        qs = data["questions"]
        assert len(qs) == 13
        kinds = [q["kind"] for q in qs]
        for kind, n in MIN_KINDS[topic].items():
            assert kinds.count(kind) >= n, (topic, kind)
        assert {"single", "multi", "bool"} <= set(kinds), topic
        assert [q["id"] for q in qs] == [f"{prefix}-{i:02d}" for i in range(1, 14)]
        assert {q["difficulty"] for q in qs} == {1, 2, 3}, topic


@pytest.mark.parametrize("qid", sorted(Q))
def test_question_fields(qid):
    q = Q[qid]
    assert q["tags"] and set(q["tags"]) <= TAGS, qid
    for field in ("prompt", "explanation", "model_answer", "unit"):
        if field in q:
            assert set(q[field]) == {"en", "zh"} and all(q[field].values()), (qid, field)
    for c in q.get("choices", []):
        assert set(c) == {"en", "zh"} and c["en"] and c["zh"], qid
    kind = q["kind"]
    sel = q.get("select") if kind == "code" else kind
    if kind == "card":
        assert "answer" not in q and q["model_answer"]["en"]
        return
    if kind == "bool":
        assert isinstance(q["answer"], bool)
    if kind == "numeric":
        assert {"params", "formula", "tolerance"} <= set(q)
    if sel in ("single", "multi"):
        letters = [chr(ord("a") + i) for i in range(len(q["choices"]))]
        if sel == "single":
            assert 2 <= len(letters) <= 6 and q["answer"] in letters
        else:
            assert 3 <= len(letters) <= 6 and len(q["answer"]) >= 2
            assert set(q["answer"]) <= set(letters)
        assert len({c["en"] for c in q["choices"]}) == len(letters), "duplicate choices"
    if kind == "code":
        assert q["code"].splitlines()[0].strip(), f"{qid}: code must start on line 1"


def test_correct_letters_vary():
    singles = [q["answer"] for q in Q.values() if isinstance(q.get("answer"), str)]
    assert len(set(singles)) >= 4


# ---------------------------------------------------------------- numeric formulas


@pytest.mark.parametrize("qid", sorted(k for k, q in Q.items() if q["kind"] == "numeric"))
def test_numeric_formula_matches_answer(qid):
    q = Q[qid]
    value = evaluate(q["formula"], q["params"])
    tol = q["tolerance"]
    assert math.isclose(value, q["answer"], rel_tol=tol, abs_tol=0 if tol else 1e-9), (qid, value)


# ---- parameter counts, from the real modules


def test_sa07_three_linears():
    p = Q["sa-07"]["params"]
    layers = [nn.Linear(p["E"], p["d"]) for _ in range(3)]
    assert n_params(*layers) == Q["sa-07"]["answer"]


def test_mh02_multihead_param_count_and_independent_of_heads():
    p = Q["mh-02"]["params"]
    counts = {h: n_params(nn.MultiheadAttention(p["E"], h)) for h in (1, p["H"], 16)}
    assert set(counts.values()) == {Q["mh-02"]["answer"]}


def test_ca03_kdim_vdim_param_count():
    p = Q["ca-03"]["params"]
    m = nn.MultiheadAttention(p["E"], 8, kdim=p["kdim"], vdim=p["vdim"])
    assert n_params(m) == Q["ca-03"]["answer"]
    assert m.k_proj_weight.shape == (p["E"], p["kdim"])
    # with kdim = vdim = E it is 4E^2 + 4E
    E = p["E"]
    assert evaluate(Q["ca-03"]["formula"], {"E": E, "kdim": E, "vdim": E}) == 4 * E * E + 4 * E


# ---- FLOPs, counted by torch's flop counter on meta tensors


def test_sdp03_flops():
    p = Q["sdp-03"]["params"]
    B, H, L, S, D = (p[k] for k in "BHLSD")
    assert matmul_flops((B, H, L, D), (B, H, D, S)) == Q["sdp-03"]["answer"]


def test_ca02_flops_rectangular():
    p = Q["ca-02"]["params"]
    B, H, L, S, D = (p[k] for k in "BHLSD")
    assert matmul_flops((B, H, L, D), (B, H, D, S)) == Q["ca-02"]["answer"]


def test_mh03_flops_equal_one_full_width_head():
    p = Q["mh-03"]["params"]
    B, E, H, L, S = p["B"], p["E"], p["H"], p["L"], p["S"]
    multi = matmul_flops((B, H, L, E // H), (B, H, E // H, S))
    single = matmul_flops((B, 1, L, E), (B, 1, E, S))
    assert multi == single == Q["mh-03"]["answer"]


def test_mh11_mha_flops_and_params_do_not_grow_with_heads():
    assert Q["mh-11"]["answer"] is False
    B, T, E = 2, 32, 64
    flops, params = set(), set()
    for h in (1, 8, 16):
        shape = (B, h, T, E // h)
        flops.add(sdpa_flop_count(shape, shape, shape))  # QK^T and weights @ V, all heads
        params.add(n_params(nn.MultiheadAttention(E, h)))  # projections: E x E whatever h is
    assert flops == {2 * 2 * B * T * T * E} and len(params) == 1


# ---- memory of the score / weight matrix


def test_sa06_weight_matrix_bytes():
    p = Q["sa-06"]["params"]
    assert meta_bytes((p["B"], p["T"], p["T"]), torch.float32) == Q["sa-06"]["answer"]


def test_sdp04_score_matrix_gib():
    p = Q["sdp-04"]["params"]
    b = meta_bytes((p["B"], p["H"], p["L"], p["S"]), torch.float16)
    assert b / 2**30 == Q["sdp-04"]["answer"]


def test_mh04_weights_mib_grow_with_heads():
    p = Q["mh-04"]["params"]
    b = meta_bytes((p["B"], p["H"], p["L"], p["S"]), torch.float32)
    assert b / 2**20 == Q["mh-04"]["answer"]
    assert meta_bytes((p["B"], 2 * p["H"], p["L"], p["S"]), torch.float32) == 2 * b


def test_sdp02_std_of_raw_dot_product():
    d = Q["sdp-02"]["params"]["d_k"]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(20_000, d, generator=g)
    k = torch.randn(20_000, d, generator=g)
    s = (q * k).sum(-1)
    assert abs(s.std().item() - Q["sdp-02"]["answer"]) < 0.2
    assert abs((s / math.sqrt(d)).std().item() - 1) < 0.025


# ---------------------------------------------------------------- shape questions


@pytest.mark.parametrize("qid", ["sa-08", "sdp-05", "mh-05", "ca-04"])
def test_shape_snippet_prints_the_correct_choice(qid):
    _, printed = run_snippet(qid)
    assert printed == correct_choice(qid)
    others = [c["en"] for c in Q[qid]["choices"] if c["en"] != correct_choice(qid)]
    assert printed not in others
    # the question asks about the print line
    n = int(re.search(r"line (\d+)", Q[qid]["prompt"]["en"]).group(1))
    assert code_line(qid, n).startswith("print(")


def test_mh05_ca04_per_head_weights_need_average_false():
    ns, _ = run_snippet("mh-05")
    _, attn = ns["mha"](ns["x"], ns["x"], ns["x"], average_attn_weights=False)
    assert tuple(attn.shape) == (2, 8, 10, 10)
    ns, _ = run_snippet("ca-04")
    _, w = ns["attn"](ns["dec"], ns["enc"], ns["enc"], average_attn_weights=False)
    assert tuple(w.shape) == (3, 4, 12, 40)


def test_ca06_query_length_sets_output_length():
    assert Q["ca-06"]["answer"] is True
    q, k, v = torch.randn(1, 5, 16), torch.randn(1, 9, 16), torch.randn(1, 9, 24)
    assert F.scaled_dot_product_attention(q, k, v).shape == (1, 5, 24)


# ---------------------------------------------------------------- "which line is wrong"


def test_sa09_softmax_over_queries():
    assert correct_choice("sa-09").startswith("Line 8")
    assert "dim=1" in code_line("sa-09", 8)
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    w_q, w_k, w_v = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 5)
    expected = F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)
    buggy = run_snippet("sa-09")[0]["self_attention"](x, w_q, w_k, w_v)
    fixed = run_snippet("sa-09", patched("sa-09", "dim=1)", "dim=-1)"))[0]["self_attention"]
    assert not torch.allclose(buggy, expected, atol=1e-5)
    assert torch.allclose(fixed(x, w_q, w_k, w_v), expected, atol=1e-5)


def test_sa10_fresh_linear_in_forward():
    assert correct_choice("sa-10").startswith("Line 10")
    assert "nn.Linear" in code_line("sa-10", 10)
    cls = run_snippet("sa-10")[0]["SelfAttention"]
    m = cls(8, 4)
    assert n_params(m) == 0  # the optimizer would get nothing
    x = torch.randn(1, 5, 8)
    assert not torch.allclose(m(x), m(x))  # new random weights on every call


def test_sdp06_scale_uses_sequence_length():
    assert correct_choice("sdp-06").startswith("Line 6")
    assert "k.size(-2)" in code_line("sdp-06", 6) and "~mask" in code_line("sdp-06", 7)
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 16), torch.randn(2, 9, 16), torch.randn(2, 9, 8)
    mask = mixed_mask(4, 9)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    buggy = run_snippet("sdp-06")[0]["attention"]
    fixed_src = patched("sdp-06", "k.size(-2)", "q.size(-1)")
    fixed = run_snippet("sdp-06", fixed_src)[0]["attention"]
    assert not torch.allclose(buggy(q, k, v, mask), expected, atol=1e-5)
    assert torch.allclose(fixed(q, k, v, mask), expected, atol=1e-5)
    # the bug hides when S == D
    k2, v2 = torch.randn(2, 16, 16), torch.randn(2, 16, 8)
    m2 = mixed_mask(4, 16)
    assert torch.allclose(buggy(q, k2, v2, m2),
                          F.scaled_dot_product_attention(q, k2, v2, attn_mask=m2), atol=1e-5)
    # the line-7 distractor (masked_fill(mask, ...)) would be wrong
    wrong7 = fixed_src.replace("masked_fill(~mask", "masked_fill(mask")
    assert not torch.allclose(run_snippet("sdp-06", wrong7)[0]["attention"](q, k, v, mask),
                              expected, atol=1e-5)


def test_mh06_reshape_splits_sequence_not_width():
    assert correct_choice("mh-06").startswith("Line 15")
    assert "reshape(b, self.h, t" in code_line("mh-06", 15)
    bad = "z.reshape(b, self.h, t, e // self.h)"
    good = "z.reshape(b, t, self.h, e // self.h).transpose(1, 2)"

    def compare(src):
        torch.manual_seed(0)
        m = run_snippet("mh-06", src)[0]["MHA"](16, 4)
        ref = nn.MultiheadAttention(16, 4, batch_first=True)
        with torch.no_grad():
            ref.in_proj_weight.copy_(m.qkv.weight)
            ref.in_proj_bias.copy_(m.qkv.bias)
            ref.out_proj.weight.copy_(m.proj.weight)
            ref.out_proj.bias.copy_(m.proj.bias)
            x = torch.randn(2, 8, 16)
            return torch.allclose(m(x), ref(x, x, x, need_weights=False)[0], atol=1e-5)

    assert not compare(Q["mh-06"]["code"])
    fixed = patched("mh-06", bad, good)
    assert compare(fixed)
    # distractor: dropping the transpose on line 17 breaks it again
    assert not compare(fixed.replace("y.transpose(1, 2).reshape(b, t, e)", "y.reshape(b, t, e)"))
    # distractor: scale 1/sqrt(e) instead of the default 1/sqrt(e/h) is wrong
    scaled = fixed.replace("attention(q, k, v)", "attention(q, k, v, scale=1 / e ** 0.5)")
    assert not compare(scaled)


def test_ca05_key_padding_mask_polarity():
    assert correct_choice("ca-05").startswith("Line 8")
    assert "<" in code_line("ca-05", 8) and "key_padding_mask" in code_line("ca-05", 9)
    ns, _ = run_snippet("ca-05")
    out, w = ns["out"], ns["w"]
    assert tuple(w.shape) == (2, 6, 9)
    # second example: weight only on the 4 padding keys
    assert torch.all(w[1, :, :5] == 0) and torch.all(w[1, :, 5:] > 0)
    # first example: every key masked -> NaN
    assert torch.isnan(out[0]).all()
    out2, w2 = ns["attn"](ns["dec"], ns["enc"], ns["enc"], key_padding_mask=~ns["src_mask"])
    assert not torch.isnan(out2).any()
    assert torch.all(w2[1, :, 5:] == 0)


# ---------------------------------------------------------------- mask polarity


def test_sdp10_mh10_bool_mask_polarity_differs():
    assert Q["sdp-10"]["answer"] is False
    assert "NOT allowed" in correct_choice("mh-10")
    torch.manual_seed(0)
    L = S = 6
    E = 8
    mask = mixed_mask(L, S)
    # F.scaled_dot_product_attention: True = may attend
    q, k, v = torch.randn(1, L, E), torch.randn(1, S, E), torch.randn(1, S, E)
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                          ref_attention(q, k, v, allowed=mask), atol=1e-5)
    # nn.MultiheadAttention: True = not allowed
    mha = nn.MultiheadAttention(E, 2, batch_first=True)
    x = torch.randn(1, L, E)
    _, w = mha(x, x, x, attn_mask=mask)
    assert torch.all(w[0][mask] == 0) and torch.all(w[0][~mask] > 0)


# ---------------------------------------------------------------- self-attention facts


def _self_attn(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
    return w @ v, w


def test_sa03_permutation_equivariance():
    assert Q["sa-03"]["answer"] is True
    torch.manual_seed(0)
    x = torch.randn(7, 8, dtype=torch.float64)
    ws = [torch.randn(8, 4, dtype=torch.float64) for _ in range(3)]
    perm = torch.randperm(7)
    out, _ = _self_attn(x, *ws)
    out_p, _ = _self_attn(x[perm], *ws)
    assert torch.allclose(out_p, out[perm])


def test_sa04_weights_not_symmetric():
    assert Q["sa-04"]["answer"] is False
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    _, w = _self_attn(x, torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 4))
    assert not torch.allclose(w, w.T, atol=1e-3)
    # even with W_Q = W_K (symmetric scores) the row softmax breaks symmetry
    wq = torch.randn(8, 4)
    _, w = _self_attn(x, wq, wq, wq)
    assert not torch.allclose(w, w.T, atol=1e-3)


def test_sa05_convex_combination_and_full_context():
    assert starts(correct_choices("sa-05")) == ["Each", "Every", "The"]
    assert "n×n" in correct_choices("sa-05")[1]
    torch.manual_seed(0)
    x = torch.randn(6, 8, requires_grad=True)
    out, w = _self_attn(x, torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 4))
    assert torch.all(w > 0) and torch.allclose(w.sum(-1), torch.ones(6))
    # position 0 depends on the last position (no causal restriction)
    out[0].sum().backward()
    assert x.grad[-1].abs().sum() > 0


# ---------------------------------------------------------------- scaled dot-product facts


def test_sdp07_shift_but_not_scale_invariant():
    assert starts(correct_choices("sdp-07")) == ["Adding", "Q", "V"]
    s = torch.randn(4, 9, dtype=torch.float64)
    assert torch.allclose((s + 3.7).softmax(-1), s.softmax(-1))
    assert not torch.allclose((s * 3.7).softmax(-1), s.softmax(-1))
    q, k, v = torch.randn(1, 4, 16), torch.randn(1, 9, 16), torch.randn(1, 9, 5)
    assert F.scaled_dot_product_attention(q, k, v).shape == (1, 4, 5)
    with pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(q, torch.randn(1, 9, 12), v)


def test_sdp08_unscaled_softmax_saturates():
    assert Q["sdp-08"]["answer"] is True
    g = torch.Generator().manual_seed(0)
    d = 1024
    q = torch.randn(64, 32, d, generator=g)
    k = torch.randn(64, 32, d, generator=g)
    stats = {}
    for name, scale in (("raw", 1.0), ("scaled", 1 / math.sqrt(d))):
        s = (q @ k.transpose(-2, -1) * scale).requires_grad_()
        w = s.softmax(-1)
        (w * torch.randn(w.shape, generator=g)).sum().backward()
        stats[name] = (w.max(-1).values.mean().item(), s.grad.abs().mean().item())
    assert stats["raw"][0] > 0.85 and stats["scaled"][0] < 0.4
    assert stats["raw"][1] < stats["scaled"][1] / 5


def test_sdp09_subtracting_max_is_exact_and_avoids_overflow():
    s = torch.randn(3, 7, dtype=torch.float64)
    stable = (s - s.max(-1, keepdim=True).values).exp()
    stable = stable / stable.sum(-1, keepdim=True)
    naive = s.exp() / s.exp().sum(-1, keepdim=True)
    assert torch.allclose(stable, naive)
    big = torch.tensor([1000.0, 999.0])
    assert torch.isnan(big.exp() / big.exp().sum()).all()
    assert torch.allclose(big.softmax(-1), torch.tensor([1.0, 1.0 / math.e]) / (1 + 1 / math.e))


def test_sdp11_default_scale_is_query_dim():
    assert correct_choice("sdp-11").startswith("1 / sqrt(64)")
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 64), torch.randn(1, 2, 5, 64), torch.randn(1, 2, 5, 128)
    out = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, ref_attention(q, k, v, scale=1 / 8), atol=1e-5)
    assert not torch.allclose(out, ref_attention(q, k, v, scale=1 / math.sqrt(128)), atol=1e-5)


def test_sdp13_fully_masked_row_is_nan_and_fp16_max():
    s = torch.randn(2, 4)
    allowed = torch.tensor([[True, False, True, False], [False] * 4])
    w = s.masked_fill(~allowed, float("-inf")).softmax(-1)
    assert not torch.isnan(w[0]).any() and torch.isnan(w[1]).all()
    w_fin = s.masked_fill(~allowed, torch.finfo(s.dtype).min).softmax(-1)
    assert torch.allclose(w_fin[1], torch.full((4,), 0.25))  # uniform over masked keys
    assert torch.finfo(torch.float16).max == 65504


# ---------------------------------------------------------------- multi-head facts


def test_mh01_mh07_every_head_sees_the_whole_sequence_only_mask_stops_leakage():
    assert Q["mh-07"]["answer"] is False
    assert "whole sequence" in correct_choice("mh-01")
    torch.manual_seed(0)
    T, E = 8, 16
    mha = nn.MultiheadAttention(E, 4, batch_first=True)
    x = torch.randn(1, T, E, requires_grad=True)
    out, _ = mha(x, x, x, need_weights=False)
    out[0, 0].sum().backward()
    assert x.grad[0, -1].abs().sum() > 0  # 4 heads, no mask: token 0 sees the last token
    x.grad = None
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = blocked
    out, _ = mha(x, x, x, attn_mask=causal, need_weights=False)
    out[0, 0].sum().backward()
    assert torch.all(x.grad[0, 1:] == 0)
    # per-head weights: every head spreads weight over all T keys
    _, w = mha(x, x, x, average_attn_weights=False)
    assert torch.all(w > 0)


def test_mh08_head_dim():
    assert starts(correct_choices("mh-08")) == ["Each", "Each", "The"]
    assert not any("1/8" in c or "doubles" in c for c in correct_choices("mh-08"))
    m = nn.MultiheadAttention(512, 8)
    assert m.head_dim == 64


# ---------------------------------------------------------------- cross-attention facts


def test_ca08_cached_cross_kv_and_shape():
    assert starts(correct_choices("ca-08")) == ["During", "Every", "Per"]
    # the encoder output is fixed, so K/V for cross-attention can be reused step to step
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    enc, dec = torch.randn(1, 11, 16), torch.randn(1, 5, 16)
    full, w = attn(dec, enc, enc)
    steps = torch.cat([attn(dec[:, t:t + 1], enc, enc)[0] for t in range(5)], dim=1)
    assert torch.allclose(full, steps, atol=1e-5) and tuple(w.shape) == (1, 5, 11)


def test_ca10_cross_attention_invariant_to_source_order():
    assert correct_choice("ca-10") == "It is unchanged"
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    dec, enc = torch.randn(2, 5, 16), torch.randn(2, 11, 16)
    perm = torch.randperm(11)
    out, _ = attn(dec, enc, enc, need_weights=False)
    out_p, _ = attn(dec, enc[:, perm], enc[:, perm], need_weights=False)
    assert torch.allclose(out, out_p, atol=1e-5)


def test_ca01_output_follows_queries():
    assert correct_choice("ca-01").startswith("Queries from the decoder")
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    dec, enc = torch.randn(2, 5, 16), torch.randn(2, 11, 16)
    assert attn(dec, enc, enc)[0].shape == (2, 5, 16)
    assert attn(enc, dec, dec)[0].shape == (2, 11, 16)  # swapped roles: one row per source token
