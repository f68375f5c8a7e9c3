"""Checks, with torch, the claims of the positional-encoding, masking and information-leakage banks.

Self-contained: reads the TOML files directly and imports nothing from attn_drill.
"""

from __future__ import annotations

import contextlib
import io
import math
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

QUESTIONS_DIR = Path(__file__).resolve().parent.parent / "attn_drill" / "questions"
TOPICS = {"positional-encoding": "pe", "masking": "mask", "information-leakage": "leak"}
KINDS = {"single", "multi", "bool", "numeric", "code", "card"}
TAGS = set("""
qkv-projection scale softmax-dim weighted-sum permutation-equivariance head-split
output-projection cross-attention sinusoidal learned-positions rope alibi relative-positions
mask-polarity padding-mask causal-mask causal-alignment fully-masked-rows numerical-stability
leakage kv-cache gqa-mqa flash-attention complexity sliding-window layernorm residual ffn
dropout fresh-layers backward
""".split())
SAFE_FUNCS = {"sqrt": math.sqrt, "log2": math.log2, "ceil": math.ceil, "floor": math.floor,
              "min": min, "max": max}


def _load() -> dict[str, dict]:
    bank = {}
    for topic in TOPICS:
        data = tomllib.loads((QUESTIONS_DIR / f"{topic}.toml").read_text(encoding="utf-8"))
        assert data["format_version"] == 1
        assert data["topic"] == topic
        for q in data["questions"]:
            q["_topic"] = topic
            assert q["id"] not in bank, q["id"]
            bank[q["id"]] = q
    return bank


BANK = _load()


def q(qid: str) -> dict:
    return BANK[qid]


def letter(index: int) -> str:
    return "abcdef"[index]


def answer_choice(qid: str, lang: str = "en") -> str:
    item = q(qid)
    return item["choices"]["abcdef".index(item["answer"])][lang]


def lines(qid: str) -> list[str]:
    return q(qid)["code"].splitlines()


def run_snippet(qid: str, **namespace) -> tuple[str, dict]:
    ns = {"__name__": "__snippet__", **namespace}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(q(qid)["code"], qid, "exec"), ns)
    return out.getvalue().strip(), ns


def safe_eval(formula: str, params: dict) -> float:
    code = compile(formula, "<formula>", "eval")
    allowed = set(SAFE_FUNCS) | set(params)
    assert set(code.co_names) <= allowed, f"formula uses {set(code.co_names) - allowed}"
    return eval(code, {"__builtins__": {}}, {**SAFE_FUNCS, **params})


# ---------------------------------------------------------------- structure

def test_counts_and_kinds():
    for topic, prefix in TOPICS.items():
        items = [x for x in BANK.values() if x["_topic"] == topic]
        assert len(items) == 13, topic
        assert [x["id"] for x in items] == [f"{prefix}-{i:02d}" for i in range(1, 14)]
        kinds = [x["kind"] for x in items]
        assert kinds.count("numeric") >= 2
        assert kinds.count("code") >= (1 if topic == "positional-encoding" else 2)
        assert kinds.count("card") == 2


@pytest.mark.parametrize("qid", sorted(BANK))
def test_fields(qid):
    item = q(qid)
    kind = item["kind"]
    assert kind in KINDS
    assert item["difficulty"] in (1, 2, 3)
    assert item["tags"] and set(item["tags"]) <= TAGS, set(item["tags"]) - TAGS
    if kind in ("single", "multi", "code"):
        choices = item["choices"]
        lo = 3 if (kind == "multi" or item.get("select") == "multi") else 2
        assert lo <= len(choices) <= 6
        for c in choices:
            assert c["en"].strip() and c["zh"].strip()
        select = item.get("select", kind)
        if kind == "code":
            assert select in ("single", "multi")
            compile(item["code"], qid, "exec")
        if select == "single":
            assert isinstance(item["answer"], str) and item["answer"] in "abcdef"[: len(choices)]
        else:
            assert isinstance(item["answer"], list) and len(item["answer"]) >= 2
            assert set(item["answer"]) <= set("abcdef"[: len(choices)])
    elif kind == "bool":
        assert isinstance(item["answer"], bool)
    elif kind == "numeric":
        assert {"params", "formula", "tolerance", "answer"} <= set(item)
    elif kind == "card":
        assert "answer" not in item and "model_answer" in item
    for name in ("prompt", "explanation", "model_answer", "unit"):
        if name in item:
            assert item[name]["en"].strip() and item[name]["zh"].strip(), (qid, name)


# ---------------------------------------------------------------- numeric formulas

NUMERIC = sorted(k for k, v in BANK.items() if v["kind"] == "numeric")


@pytest.mark.parametrize("qid", NUMERIC)
def test_numeric_formula_gives_answer(qid):
    item = q(qid)
    value = safe_eval(item["formula"], item["params"])
    if item["tolerance"] == 0:
        assert value == item["answer"]
    else:
        assert math.isclose(value, item["answer"], rel_tol=item["tolerance"] / 10)


def test_mask_01_causal_count():
    L = q("mask-01")["params"]["L"]
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))
    assert allowed.sum().item() == q("mask-01")["answer"]
    assert (~allowed).sum().item() == L * (L - 1) // 2


def _bottom_right(L, S):
    return torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L)


def _top_left(L, S):
    return torch.ones(L, S, dtype=torch.bool).tril()


def test_mask_02_bottom_right_count():
    p = q("mask-02")["params"]
    L, S = p["L"], p["S"]
    br = _bottom_right(L, S)
    assert br.sum().item() == q("mask-02")["answer"]
    # query i (the new token at position S - L + i) sees keys 0 .. S - L + i
    expected = torch.arange(S)[None, :] <= (S - L + torch.arange(L))[:, None]
    assert torch.equal(br, expected)


def test_leak_06_top_left_hides_cached_pairs():
    p = q("leak-06")["params"]
    L, S = p["L"], p["S"]
    br, tl = _bottom_right(L, S), _top_left(L, S)
    assert (br & ~tl).sum().item() == q("leak-06")["answer"]
    assert not (tl & ~br).any()
    assert tl.sum().item() == L * (L + 1) // 2 and br.sum().item() == 34
    # is_causal=True in SDPA is the top-left mask when L != S
    torch.manual_seed(0)
    qq, k, v = torch.randn(1, 1, L, 8), torch.randn(1, 1, S, 8), torch.randn(1, 1, S, 8)
    a = F.scaled_dot_product_attention(qq, k, v, is_causal=True)
    assert torch.allclose(a, F.scaled_dot_product_attention(qq, k, v, attn_mask=tl), atol=1e-6)
    assert not torch.allclose(a, F.scaled_dot_product_attention(qq, k, v, attn_mask=br), atol=1e-4)


def test_leak_07_no_mask_chunk_leaks():
    L, P = q("leak-07")["params"]["L"], 100
    S = P + L
    no_mask = torch.ones(L, S, dtype=torch.bool)
    assert (no_mask & ~_bottom_right(L, S)).sum().item() == q("leak-07")["answer"]


def test_pe_03_sinusoid_wavelength():
    p = q("pe-03")["params"]
    d, i = p["d"], p["i"]
    # the usual implementation of the original encoding
    div_term = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    pos = torch.arange(0, 200, dtype=torch.float64)[:, None]
    pe = torch.zeros(200, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div_term), torch.cos(pos * div_term)
    wavelength = 2 * math.pi / div_term[i].item()
    assert math.isclose(wavelength, q("pe-03")["answer"], rel_tol=1e-9)
    assert torch.allclose(pe[:, 2 * i], torch.sin(2 * math.pi * pos[:, 0] / wavelength))


def _rope():
    _, ns = run_snippet("pe-08")
    return ns["rope"]


def test_pe_04_rope_angle():
    p = q("pe-04")["params"]
    rope, d, i, m = _rope(), p["d"], p["i"], p["m"]
    x = torch.zeros(1, d, dtype=torch.float64)
    x[0, 2 * i] = 1.0                                    # unit vector on the first axis of pair i
    y = rope(x, torch.tensor([float(m)], dtype=torch.float64))
    angle = math.atan2(y[0, 2 * i + 1].item(), y[0, 2 * i].item())
    assert math.isclose(angle, q("pe-04")["answer"], rel_tol=1e-6)


def test_pe_05_alibi_bias():
    p = q("pe-05")["params"]
    H = p["H"]
    slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1) / H)
    assert torch.equal(slopes, torch.tensor([1 / 2 ** k for k in range(1, 9)]))
    dist = torch.arange(16)
    bias = -slopes[p["h"] - 1] * dist                    # bias of head h for a key `dist` back
    assert bias[p["dist"]].item() == q("pe-05")["answer"]


# ---------------------------------------------------------------- what does this print

@pytest.mark.parametrize("qid", ["pe-07", "pe-08", "leak-11"])
def test_printed_output_is_the_answer(qid):
    printed, _ = run_snippet(qid)
    assert printed == answer_choice(qid)
    others = [c["en"] for c in q(qid)["choices"]]
    assert others.count(printed) == 1


def test_leak_11_distractor_is_sdpa_reading():
    """[0, 0, 1, 1, 1, 1] is what the same mask gives with True = may attend."""
    torch.manual_seed(0)
    T, d = 6, 8
    x = torch.randn(1, 1, T, d, requires_grad=True)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    y = F.scaled_dot_product_attention(x, x, x, attn_mask=mask)
    y[0, 0, 2].sum().backward()
    got = (x.grad[0, 0].abs().sum(-1) > 0).int().tolist()
    assert got == [0, 0, 1, 1, 1, 1]
    assert str(got) == q("leak-11")["choices"][0]["en"]


# ---------------------------------------------------------------- positions

def test_pe_06_causal_mask_breaks_permutation_equivariance():
    assert q("pe-06")["answer"] is False
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(1, 5, 16)
    perm = torch.tensor([4, 2, 0, 3, 1])
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    y, _ = attn(x, x, x, attn_mask=causal)
    y_p, _ = attn(x[:, perm], x[:, perm], x[:, perm], attn_mask=causal)
    assert not torch.allclose(y[:, perm], y_p, atol=1e-4)
    # the first position sees only itself: its output is the value of its own token
    y0, _ = attn(x[:, :1], x[:, :1], x[:, :1])
    assert torch.allclose(y[:, :1], y0, atol=1e-6)


def test_pe_10_rope_on_qk_gives_relative_scores():
    assert q("pe-10")["answer"] is True
    rope = _rope()
    torch.manual_seed(1)
    qv, kv = torch.randn(6, 32), torch.randn(6, 32)
    pos = torch.arange(6.0)
    s = rope(qv, pos) @ rope(kv, pos).T
    shifted = rope(qv, pos + 37) @ rope(kv, pos + 37).T
    assert torch.allclose(s, shifted, atol=1e-3)       # depends only on offsets


# ---------------------------------------------------------------- polarity

def _mha_by_hand(mha: nn.MultiheadAttention, x: torch.Tensor, sdpa_mask: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention's computation, spelled out with F.scaled_dot_product_attention."""
    B, T, E = x.shape
    H = mha.num_heads
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    qq, k, v = (t.view(B, T, H, E // H).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    out = F.scaled_dot_product_attention(qq, k, v, attn_mask=sdpa_mask)
    return mha.out_proj(out.transpose(1, 2).reshape(B, T, E))


def test_polarity_mha_true_blocks_sdpa_true_allows():
    assert q("mask-08")["answer"] is True
    torch.manual_seed(0)
    T, E = 5, 16
    mha = nn.MultiheadAttention(E, 4, batch_first=True)
    x = torch.randn(2, T, E)
    blocked = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    y_mha, _ = mha(x, x, x, attn_mask=blocked)
    assert torch.allclose(y_mha, _mha_by_hand(mha, x, ~blocked), atol=1e-5)
    assert not torch.allclose(y_mha, _mha_by_hand(mha, x, blocked), atol=1e-3)
    # key_padding_mask: True = pad (ignored)
    pad = torch.tensor([[False, False, False, True, True], [False] * 5])
    y_pad, _ = mha(x, x, x, key_padding_mask=pad)
    allowed = (~pad)[:, None, None, :]
    assert torch.allclose(y_pad, _mha_by_hand(mha, x, allowed), atol=1e-5)


def test_mask_03_lower_triangle_in_mha_blocks_past_and_nans_last_row():
    torch.manual_seed(0)
    assert "line 7" in answer_choice("mask-03").lower() or "attn_mask" in lines("mask-03")[6]
    _, ns = run_snippet("mask-03")
    out, mha, x, allowed = ns["out"], ns["mha"], ns["x"], ns["allowed"]
    nan_rows = out.isnan().any(-1)
    assert nan_rows[:, -1].all() and not nan_rows[:, :-1].any()
    _, w = mha(x, x, x, attn_mask=allowed)
    L = allowed.shape[0]
    strictly_future = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    ok = w[:, :-1]
    assert (ok[..., ~strictly_future[:-1]] == 0).all()          # past and self get no weight
    assert (ok[..., strictly_future[:-1]] > 0).all()            # only later positions
    fixed, _ = mha(x, x, x, attn_mask=~allowed)
    assert not fixed.isnan().any()


# ---------------------------------------------------------------- masked softmax

def test_mask_04_inverted_masked_fill():
    code = lines("mask-04")
    assert "masked_fill(allowed" in code[6]                       # line 7 is the bug
    assert answer_choice("mask-04").startswith("Line 7")
    _, ns = run_snippet("mask-04", torch=torch)
    fn = ns["masked_attention"]
    torch.manual_seed(0)
    B, T, d = 2, 5, 8
    qq, k, v = torch.randn(B, T, d), torch.randn(B, T, d), torch.randn(B, T, d)
    lengths = torch.tensor([3, 5])
    bad = fn(qq, k, v, lengths)
    assert bad[1].isnan().all()                                   # the unpadded sequence
    fixed_ns = {"torch": torch}
    exec(q("mask-04")["code"].replace("masked_fill(allowed", "masked_fill(~allowed"), fixed_ns)
    good = fixed_ns["masked_attention"](qq, k, v, lengths)
    key_ok = (torch.arange(T)[None, :] < lengths[:, None])[:, None, :]
    ref = F.scaled_dot_product_attention(qq, k, v, attn_mask=key_ok)
    assert torch.allclose(good, ref, atol=1e-6)


def test_mask_05_zero_scores_still_get_weight():
    s = torch.tensor([2.0, 1.0, 0.5, -1.0])
    masked = torch.tensor([False, False, True, True])
    w_inf = s.masked_fill(masked, float("-inf")).softmax(-1)
    assert (w_inf[masked] == 0).all() and math.isclose(w_inf.sum().item(), 1.0, rel_tol=1e-6)
    w_zero = s.masked_fill(masked, 0.0).softmax(-1)
    assert (w_zero[masked] > 0).all()
    w_after = s.softmax(-1) * (~masked)
    assert w_after.sum().item() < 0.99


def test_mask_06_fully_masked_row_is_nan_not_uniform():
    assert q("mask-06")["answer"] is False
    row = torch.full((4,), float("-inf"))
    assert row.softmax(-1).isnan().all()
    finite = torch.full((4,), -1e9)
    assert torch.allclose(finite.softmax(-1), torch.full((4,), 0.25))
    finfo = torch.full((4,), torch.finfo(torch.float32).min)
    assert torch.allclose(finfo.softmax(-1), torch.full((4,), 0.25))


def test_mask_07_handling_fully_masked_rows():
    assert sorted(q("mask-07")["answer"]) == ["a", "c", "e"]
    ninf = torch.tensor(float("-inf"))
    assert (ninf + 1e-6).item() == float("-inf")                # option b does nothing
    assert (ninf / math.sqrt(64)).item() == float("-inf")       # option d does nothing
    scores = torch.randn(2, 4, requires_grad=True)
    allowed = torch.tensor([[True, True, False, False], [False] * 4])
    # option a: zero the rows after the softmax; outputs and gradients stay finite
    w = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    w = torch.where(allowed.any(-1, keepdim=True), w, 0.0)
    (w * torch.randn(2, 4)).sum().backward()
    assert torch.isfinite(w).all() and torch.isfinite(scores.grad).all()
    # option c: a finite minimum keeps the softmax finite
    w_c = scores.detach().masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1)
    assert torch.isfinite(w_c).all()
    # option e: letting a query attend to itself removes the fully masked row
    assert (allowed | torch.eye(2, 4, dtype=torch.bool)).any(-1).all()


def test_mask_10_causal_mask_expressions():
    L = 5
    ref = torch.arange(L)[:, None] >= torch.arange(L)[None, :]
    correct = []
    for i, choice in enumerate(q("mask-10")["choices"]):
        m = eval(choice["en"], {"torch": torch, "L": L})
        if m.dtype == torch.bool and torch.equal(m, ref):
            correct.append(letter(i))
    assert correct == sorted(q("mask-10")["answer"])


def test_mask_11_fp16_large_negative_overflows():
    scores = torch.randn(2, 4, dtype=torch.float16)
    blocked = torch.tensor([[False, True, False, True]] * 2)
    with pytest.raises(RuntimeError, match="overflow"):
        scores.masked_fill(blocked, -1e9)
    for value in (float("-inf"), torch.finfo(scores.dtype).min):
        w = scores.masked_fill(blocked, value).float().softmax(-1)
        assert (w[blocked] == 0).all()
    assert torch.finfo(torch.float16).max == 65504


def test_mask_card_float_01_mask_masks_nothing():
    """mask-13: a 0/1 float mask is added to the scores, so future keys keep weight."""
    torch.manual_seed(0)
    L = 4
    x = torch.randn(1, 1, L, 8)
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))
    scores = x @ x.transpose(-2, -1) / math.sqrt(8) + allowed.float()
    w = scores.softmax(-1)
    assert (w[0, 0][~allowed] > 0).all()


# ---------------------------------------------------------------- leakage

def _future_dependence(fn, T=6, E=16):
    """1 where output 2 depends on input j."""
    torch.manual_seed(0)
    x = torch.randn(1, T, E, requires_grad=True)
    probe = torch.randn(E)                     # a plain sum of a LayerNorm output has zero gradient
    (fn(x)[0, 2] * probe).sum().backward()
    return (x.grad[0].abs().sum(-1) > 0).int().tolist()


def test_leak_03_triu_leaks_tril_does_not():
    code = lines("leak-03")
    assert "torch.triu" in code[5] and answer_choice("leak-03").startswith("Line 6")
    torch.manual_seed(0)
    E, H = 16, 4
    w = torch.randn(E, 3 * E) / math.sqrt(E)
    _, ns = run_snippet("leak-03", torch=torch)
    assert _future_dependence(lambda x: ns["causal_self_attention"](x, w, H)) == [0, 0, 1, 1, 1, 1]
    fixed = {"torch": torch}
    exec(q("leak-03")["code"].replace("torch.triu(", "torch.tril("), fixed)
    assert _future_dependence(lambda x: fixed["causal_self_attention"](x, w, H)) == [1, 1, 1, 0, 0, 0]
    x = torch.randn(2, 6, E)
    qq, k, v = (t.view(2, 6, H, E // H).transpose(1, 2) for t in (x @ w).split(E, dim=-1))
    ref = F.scaled_dot_product_attention(qq, k, v, is_causal=True).transpose(1, 2).reshape(2, 6, E)
    assert torch.allclose(fixed["causal_self_attention"](x, w, H), ref, atol=1e-5)


def test_leak_04_unshifted_targets_let_a_copy_model_win():
    torch.manual_seed(0)
    V, B, T = 50, 4, 12
    tokens = torch.randint(0, V, (B, T))
    copy_model = lambda t: 30.0 * F.one_hot(t, V).float()     # strictly per-position: no future access
    logits = copy_model(tokens)
    unshifted = F.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1))
    logits = copy_model(tokens[:, :-1])
    shifted = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
    assert unshifted.item() < 1e-6 < 1.0 < shifted.item()


def test_leak_05_kv_cache_masks():
    import torch.nn.attention.bias  # noqa: F401  (choice e; this import pulls in torch._dynamo, about 1 s)
    torch.manual_seed(0)
    B, H, P, L, d = 1, 2, 6, 4, 8
    S = P + L
    qf, kf, vf = (torch.randn(B, H, S, d) for _ in range(3))
    full = F.scaled_dot_product_attention(qf, kf, vf, is_causal=True)[:, :, P:]
    k_cache, v_cache, k, v, qq = kf[:, :, :P], vf[:, :, :P], kf[:, :, P:], vf[:, :, P:], qf[:, :, P:]
    code = q("leak-05")["code"]
    correct = []
    for i, choice in enumerate(q("leak-05")["choices"]):
        expr = choice["en"].split(":")[0] if choice["en"].startswith("None") else choice["en"]
        ns = {"torch": torch, "F": F, "k_cache": k_cache, "v_cache": v_cache, "q": qq, "k": k, "v": v}
        exec(code.replace("MASK", expr), ns)
        if torch.allclose(ns["out"], full, atol=1e-5):
            correct.append(letter(i))
    assert correct == sorted(q("leak-05")["answer"])


def test_leak_08_normalisation_over_time_leaks():
    torch.manual_seed(0)
    B, T, E = 2, 6, 8
    x = torch.randn(B, T, E)
    x2 = x.clone()
    x2[:, -1] += 5.0                                              # change only the last token
    bn = nn.BatchNorm1d(E).train()
    changed = lambda f: not torch.allclose(f(x)[:, 0], f(x2)[:, 0], atol=1e-6)
    assert changed(lambda t: bn(t.transpose(1, 2)).transpose(1, 2))            # a: leaks
    assert not changed(nn.LayerNorm(E))                                         # b: does not
    assert changed(lambda t: (t - t.mean(1, keepdim=True)) / t.std(1, keepdim=True))  # c: leaks
    drop = nn.Dropout(0.5).train()
    w = torch.ones(T, T).tril().softmax(-1).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), 0)
    assert (drop(w)[~torch.ones(T, T, dtype=torch.bool).tril()] == 0).all()   # e: masked stays 0


def test_leak_09_masked_decoder_stack_does_not_leak():
    assert q("leak-09")["answer"] is True
    torch.manual_seed(0)
    T, E = 6, 16
    layer = nn.TransformerEncoderLayer(E, 4, dim_feedforward=32, dropout=0.0, batch_first=True)
    stack = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    assert _future_dependence(lambda x: stack(x, mask=mask)) == [1, 1, 1, 0, 0, 0]
    assert _future_dependence(lambda x: stack(x)) == [1] * T      # one missing mask: everything leaks


def test_leak_10_padding_without_mask_depends_on_batch():
    torch.manual_seed(0)
    E = 16
    enc = nn.MultiheadAttention(E, 4, batch_first=True).eval()
    s = torch.randn(1, 3, E)
    padded = lambda n: torch.cat([s, torch.zeros(1, n, E)], 1)
    kpm = lambda n: torch.tensor([[False] * 3 + [True] * n])
    with torch.no_grad():
        a, _ = enc(padded(2), padded(2), padded(2))
        b, _ = enc(padded(5), padded(5), padded(5))
        assert not torch.allclose(a[:, :3], b[:, :3], atol=1e-4)
        a, _ = enc(padded(2), padded(2), padded(2), key_padding_mask=kpm(2))
        b, _ = enc(padded(5), padded(5), padded(5), key_padding_mask=kpm(5))
        assert torch.allclose(a[:, :3], b[:, :3], atol=1e-5)


def test_leak_02_one_unmasked_head_leaks():
    assert q("leak-02")["answer"] is False
    torch.manual_seed(0)
    T, E, H = 6, 16, 4
    mha = nn.MultiheadAttention(E, H, batch_first=True)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    per_head = causal.expand(H, T, T).clone()
    per_head[0] = False                                           # head 0 left unmasked
    assert _future_dependence(lambda x: mha(x, x, x, attn_mask=per_head)[0]) == [1] * T
    assert _future_dependence(lambda x: mha(x, x, x, attn_mask=causal)[0]) == [1, 1, 1, 0, 0, 0]
