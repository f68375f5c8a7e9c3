"""Checks, with torch, the claims of the positional-encoding, masking and information-leakage banks.

Self-contained: reads the TOML files directly and imports nothing from attn_drill. Every numeric
answer is recomputed from its formula, every fact that PyTorch can show (masks, NaN behaviour
and gradients, the RoPE conventions and their relative-position property, sinusoid values,
context-extension formulas, tree and packing masks) is shown here, and the form of the three
files (no give-aways) is measured.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import tomllib
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

QUESTIONS_DIR = Path(__file__).resolve().parent.parent / "attn_drill" / "questions"
TOPICS = {"positional-encoding": "pe", "masking": "mask", "information-leakage": "leak"}
SIZES = {"positional-encoding": 36, "masking": 28, "information-leakage": 22}
FIRST_NEW = 14          # questions 14 and up of each file were added by the depth audit
KINDS = {"single", "multi", "bool", "numeric", "code", "card"}
TAGS = set("""
qkv-projection scale softmax-dim weighted-sum permutation-equivariance head-split
output-projection cross-attention sinusoidal learned-positions rope alibi relative-positions
mask-polarity padding-mask causal-mask causal-alignment fully-masked-rows numerical-stability
leakage kv-cache gqa-mqa flash-attention complexity sliding-window layernorm residual ffn
dropout fresh-layers backward
context-extension attention-sinks sparse-attention document-packing speculative-decoding
normalization length-scaling
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


def choice(qid: str, key: str, lang: str = "en") -> str:
    return q(qid)["choices"]["abcdef".index(key)][lang]


def lines(qid: str) -> list[str]:
    return q(qid)["code"].splitlines()


def run_snippet(qid: str, code: str | None = None, **namespace) -> tuple[str, dict]:
    ns = {"__name__": "__snippet__", **namespace}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code if code is not None else q(qid)["code"], qid, "exec"), ns)
    return out.getvalue().strip(), ns


def patched(qid: str, old: str, new: str) -> str:
    code = q(qid)["code"]
    assert code.count(old) == 1, (qid, old)
    return code.replace(old, new)


def safe_eval(formula: str, params: dict) -> float:
    code = compile(formula, "<formula>", "eval")
    allowed = set(SAFE_FUNCS) | set(params)
    assert set(code.co_names) <= allowed, f"formula uses {set(code.co_names) - allowed}"
    return eval(code, {"__builtins__": {}}, {**SAFE_FUNCS, **params})


def en_text(item: dict) -> str:
    parts = [item["prompt"]["en"], item["explanation"]["en"]]
    parts += [c["en"] for c in item.get("choices", [])]
    if "model_answer" in item:
        parts.append(item["model_answer"]["en"])
    return "\n".join(parts)


def single_answer(item: dict) -> bool:
    return item["kind"] == "single" or (item["kind"] == "code" and item["select"] == "single")


def multi_answer(item: dict) -> bool:
    return item["kind"] == "multi" or (item["kind"] == "code" and item["select"] == "multi")


# ---------------------------------------------------------------- structure

def test_counts_and_kinds():
    for topic, prefix in TOPICS.items():
        items = [x for x in BANK.values() if x["_topic"] == topic]
        assert len(items) == SIZES[topic], topic
        assert [x["id"] for x in items] == [f"{prefix}-{i:02d}" for i in range(1, SIZES[topic] + 1)]
        kinds = Counter(x["kind"] for x in items)
        assert kinds["numeric"] >= 3 and kinds["code"] >= 3 and kinds["card"] >= 3, (topic, kinds)
    new = [x for x in BANK.values() if int(x["id"].split("-")[1]) >= FIRST_NEW]
    assert len(new) >= 30
    kinds = Counter(x["kind"] for x in new)
    assert kinds["numeric"] >= 8 and kinds["code"] >= 5 and kinds["card"] >= 4, kinds
    assert kinds["single"] + kinds["multi"] + kinds["bool"] >= 10, kinds


@pytest.mark.parametrize("qid", sorted(BANK))
def test_fields(qid):
    item = q(qid)
    kind = item["kind"]
    assert kind in KINDS
    assert item["difficulty"] in (1, 2, 3)
    assert item["tags"] and set(item["tags"]) <= TAGS, set(item["tags"]) - TAGS
    if kind in ("single", "multi", "code"):
        choices = item["choices"]
        lo = 3 if multi_answer(item) else 2
        assert lo <= len(choices) <= 6
        for c in choices:
            assert c["en"].strip() and c["zh"].strip()
        assert len({c["en"] for c in choices}) == len(choices)
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


# ---------------------------------------------------------------- form: no give-aways

def _key_is_longest(item: dict, lang: str) -> bool:
    """The key is at least as long as every other choice (a tie counts against us)."""
    lengths = [len(c[lang]) for c in item["choices"]]
    key = "abcdef".index(item["answer"])
    return lengths[key] >= max(length for i, length in enumerate(lengths) if i != key)


def test_form_single_answer_keys_are_not_the_longest_and_spread_over_positions():
    singles = [x for x in BANK.values() if single_answer(x)]
    assert len(singles) >= 30
    for lang in ("en", "zh"):
        longest = [x["id"] for x in singles if _key_is_longest(x, lang)]
        assert len(longest) <= 0.35 * len(singles), (lang, longest)
        # ...nor so rarely that "never pick the longest" pays: near the 1-in-4 of chance
        strictly = [x["id"] for x in singles if _key_is_longest(x, lang)
                    and [len(c[lang]) for c in x["choices"]].count(len(answer_choice(x["id"], lang))) == 1]
        assert len(strictly) >= 0.15 * len(singles), (lang, strictly)
    positions = Counter(x["answer"] for x in singles)
    assert set("abcd") <= set(positions), positions
    assert min(positions[k] for k in "abcd") >= 0.15 * len(singles), positions


def test_form_bool_answers_are_balanced():
    bools = [x["answer"] for x in BANK.values() if x["kind"] == "bool"]
    assert 0.40 <= sum(bools) / len(bools) <= 0.60, (sum(bools), len(bools))


def test_form_multi_answers_vary_in_their_number_of_keys():
    counts = {len(x["answer"]) for x in BANK.values() if multi_answer(x)}
    assert {2, 3, 4} <= counts, counts
    for x in BANK.values():
        if multi_answer(x):
            assert len(x["answer"]) < len(x["choices"]), x["id"]       # never "all of the above"


@pytest.mark.parametrize("qid", sorted(k for k, v in BANK.items() if v["kind"] == "numeric"))
def test_numeric_prompt_states_its_tolerance(qid):
    item = q(qid)
    en, zh, tol = item["prompt"]["en"], item["prompt"]["zh"], item["tolerance"]
    if abs(item["answer"]) > 10_000:
        assert tol == 0.01 or (tol == 0 and "exact" in en.lower() and "精确" in zh), qid
    if tol == 0:
        assert "(Exact.)" in en and "精确" in zh, qid
    else:
        pct = f"{tol * 100:g}%"
        assert f"(Within {pct}.)" in en and f"误差 {pct} 以内" in zh, (qid, pct)


def test_byte_prompts_say_which_kilo():
    for item in BANK.values():
        for lang in ("en", "zh"):
            text = item["prompt"][lang]
            if re.search(r"\b[KMG]i?B\b|bytes|字节", text):
                assert re.search(r"2\^(10|20|30)|1024|1000", text), (item["id"], lang)


def test_chinese_target_offset_and_gibberish_wording():
    for qid in ("leak-01", "leak-04", "leak-12", "leak-13"):
        texts = [v for k, v in _zh_fields(q(qid))]
        joined = "\n".join(texts)
        assert "右移" not in joined and "乱码" not in joined, qid
        assert "错开一位" in joined and "tokens[:, 1:]" in joined, qid
    assert "无意义的文本" in q("leak-04")["prompt"]["zh"] and "重复" in q("leak-04")["prompt"]["zh"]
    assert "teacher forcing" not in choice("leak-01", "d").lower()


def _zh_fields(item: dict):
    for name in ("prompt", "explanation", "model_answer", "unit"):
        if name in item:
            yield name, item[name]["zh"]
    for i, c in enumerate(item.get("choices", [])):
        yield f"choices[{i}]", c["zh"]


# Each mistake the grader names brings back the questions tagged with its concepts; at least
# two of ours carry those tags and talk about the idea of the mistake.
MISTAKE_IDEAS = {
    "rope-adjacent-pairs": (("rope",), r"i \+ [dD]/2|rotate-half"),
    "rope-rotation-reversed": (("rope",), r"−mθ|counter-clockwise"),
    "rope-frequency-inverted": (("rope",), r"base\^\(\+2i/[dD]\)"),
    "rope-exponent-i-over-d": (("rope",), r"base\^\(-i/d\)|2i, not i"),
    "rope-positions-ignored": (("rope", "relative-positions"), r"own (true )?position|true (absolute )?position|positions ignored"),
    "learned-pos-offset-ignored": (("learned-positions", "kv-cache"), r"offset"),
    "learned-pos-not-parameter": (("learned-positions",), r"nn\.Parameter"),
    "sinusoid-sin-cos-swapped": (("sinusoidal",), r"swap"),
    "sinusoid-exponent-i-over-d": (("sinusoidal",), r"i/d_model"),
    "sinusoid-halves-concatenated": (("sinusoidal",), r"block of sines|all sines"),
    "mask-inverted": (("mask-polarity",), r"invert|opposite"),
    "mask-ignored": (("padding-mask", "causal-mask"), r"ignore"),
    "mask-after-softmax": (("padding-mask", "causal-mask"), r"after the softmax"),
    "fully-masked-nan": (("fully-masked-rows",), r"NaN"),
    "causal-top-left": (("causal-alignment", "kv-cache"), r"top-left"),
    "causal-off-by-one": (("causal-mask", "causal-alignment"), r"diagonal"),
    "causal-excludes-diagonal": (("causal-mask", "causal-alignment"), r"diagonal"),
    "causal-missing": (("causal-mask", "leakage"), r"without the mask|unmasked|left out|no mask"),
    "chunk-causal-missing": (("causal-alignment", "kv-cache", "leakage"), r"chunk"),
}


def _mistake_tags() -> dict[str, list[str]]:
    """key -> tags from mistakes.toml (format 1: a [mistakes] table; format 2: [[mistakes]] entries)."""
    table = tomllib.loads((QUESTIONS_DIR / "mistakes.toml").read_text(encoding="utf-8"))["mistakes"]
    if isinstance(table, dict):
        return table
    return {entry["key"]: entry["tags"] for entry in table}


@pytest.mark.parametrize("key", sorted(MISTAKE_IDEAS))
def test_mistakes_bring_back_questions_about_them(key):
    mapping = _mistake_tags()
    tags, idea = MISTAKE_IDEAS[key]
    assert set(mapping[key]) == set(tags), key
    found = [x["id"] for x in BANK.values() if set(tags) <= set(x["tags"]) and re.search(idea, en_text(x))]
    assert len(found) >= 2, (key, found)


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


def _bottom_right(L, S):
    return torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L)


def _top_left(L, S):
    return torch.ones(L, S, dtype=torch.bool).tril()


def test_mask_02_bottom_right_count():
    p = q("mask-02")["params"]
    L, S = p["L"], p["S"]
    br = _bottom_right(L, S)
    assert br.sum().item() == q("mask-02")["answer"]
    # query i (the new token at position S - L + i) sees keys 0 .. S - L + i, itself included
    expected = torch.arange(S)[None, :] <= (S - L + torch.arange(L))[:, None]
    assert torch.equal(br, expected)
    no_diagonal = torch.arange(S)[None, :] < (S - L + torch.arange(L))[:, None]
    assert no_diagonal.sum().item() == 18 and _top_left(L, S).sum().item() == 6


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


# ---------------------------------------------------------------- sinusoids

def _sinusoid(P, d, base=10000.0, *, layout="paper", exponent="2i"):
    """The original encoding and the usual mistakes (ex3's mistake list)."""
    pos = torch.arange(P, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)                   # counts the (sin, cos) pairs
    freq = base ** (-(2 * i if exponent == "2i" else i) / d)
    ang = pos * freq
    if layout == "paper":
        return torch.stack([ang.sin(), ang.cos()], -1).flatten(-2)  # sin in 2i, cos in 2i + 1
    if layout == "swapped":
        return torch.stack([ang.cos(), ang.sin()], -1).flatten(-2)
    assert layout == "halves"
    return torch.cat([ang.sin(), ang.cos()], -1)


def _row(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in t.tolist()) + "]"


def test_pe_01_sinusoid_row_and_its_mistakes():
    row = lambda **kw: _row(_sinusoid(2, 6, **kw)[1])
    assert row() == answer_choice("pe-01")
    assert row(layout="swapped") == choice("pe-01", "a")
    assert row(layout="halves") == choice("pe-01", "b")
    assert row(exponent="i") == choice("pe-01", "c")
    assert _sinusoid(1, 8)[0].tolist() == [0.0, 1.0] * 4               # row 0 is [0, 1, 0, 1, ...]


def test_pe_03_sinusoid_wavelength():
    p = q("pe-03")["params"]
    d, i = p["d"], p["i"]
    # the usual implementation of the original encoding
    div_term = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    pos = torch.arange(0, 200, dtype=torch.float64)[:, None]
    pe = torch.zeros(200, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div_term), torch.cos(pos * div_term)
    assert torch.allclose(pe, _sinusoid(200, d), atol=1e-9)
    wavelength = 2 * math.pi / div_term[i].item()
    assert math.isclose(wavelength, q("pe-03")["answer"], rel_tol=1e-9)
    assert torch.allclose(pe[:, 2 * i], torch.sin(2 * math.pi * pos[:, 0] / wavelength))
    assert round(2 * math.pi * 10000 ** (i / d), 1) == 19.9                 # the i/d slip


def test_pe_32_sinusoid_halves_concatenated():
    code = lines("pe-32")
    assert "torch.cat" in code[4] and answer_choice("pe-32").startswith("Line 5")
    P, d = 50, 16
    _, ns = run_snippet("pe-32", torch=torch)
    got = ns["sinusoidal"](P, d)
    assert torch.allclose(got, _sinusoid(P, d, layout="halves"))
    assert not torch.allclose(got, _sinusoid(P, d), atol=1e-3)
    fixed = patched("pe-32", "torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)",
                    "torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2)")
    _, ns = run_snippet("pe-32", fixed, torch=torch)
    assert torch.allclose(ns["sinusoidal"](P, d), _sinusoid(P, d), atol=1e-12)
    # the distractors' "fixes" are the mistakes, not the formula
    assert not torch.allclose(_sinusoid(P, d, exponent="i"), _sinusoid(P, d), atol=1e-3)
    assert not torch.allclose(_sinusoid(P, d, layout="swapped"), _sinusoid(P, d), atol=1e-3)
    # the halves layout is a fixed permutation of the paper's columns
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    assert torch.allclose(_sinusoid(P, d)[:, perm], _sinusoid(P, d, layout="halves"))


# ---------------------------------------------------------------- RoPE: the two conventions

def _rope():
    """The interleaved RoPE of pe-08 (pairs (2i, 2i+1), GPT-J / RoFormer)."""
    _, ns = run_snippet("pe-08")
    return ns["rope"]


def _rope_half(x, pos, base=10000.0):
    """Rotate-half RoPE from its formula (ex7's contract, GPT-NeoX / Llama in HF): dimension i
    pairs with i + D/2, (a, b) -> (a cos - b sin, a sin + b cos) at the angle pos * base^(-2i/D)."""
    D = x.shape[-1]
    h = D // 2
    theta = base ** (-2 * torch.arange(h, dtype=x.dtype) / D)
    ang = pos[:, None].to(x.dtype) * theta
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()], -1)


def _relative(rope, D=16, dtype=torch.float64) -> bool:
    torch.manual_seed(3)
    qv, kv = torch.randn(5, D, dtype=dtype), torch.randn(5, D, dtype=dtype)
    pos = torch.arange(5, dtype=dtype)
    s = rope(qv, pos) @ rope(kv, pos).T
    return torch.allclose(s, rope(qv, pos + 11) @ rope(kv, pos + 11).T, atol=1e-6)


def test_pe_04_rope_angle():
    p = q("pe-04")["params"]
    rope, d, i, m = _rope(), p["d"], p["i"], p["m"]
    x = torch.zeros(1, d, dtype=torch.float64)
    x[0, 2 * i] = 1.0                                    # unit vector on the first axis of pair i
    y = rope(x, torch.tensor([float(m)], dtype=torch.float64))
    angle = math.atan2(y[0, 2 * i + 1].item(), y[0, 2 * i].item())
    assert math.isclose(angle, q("pe-04")["answer"], rel_tol=1e-6)   # counter-clockwise, +m·θ_i
    # the rotate-half convention turns pair i = (i, i + d/2) by the same angle
    x = torch.zeros(1, d, dtype=torch.float64)
    x[0, i] = 1.0
    y = _rope_half(x, torch.tensor([float(m)], dtype=torch.float64))
    assert math.isclose(math.atan2(y[0, i + d // 2].item(), y[0, i].item()), q("pe-04")["answer"], rel_tol=1e-6)


def test_pe_14_frequency_inverted_rotate_half():
    code = lines("pe-14")
    assert "inv_freq" in code[8] and answer_choice("pe-14").startswith("Line 9")
    assert "torch.cat((-x2, x1)" in code[4] and "torch.cat((ang, ang)" in code[10] and "+ rotate_half" in code[11]
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    pos = torch.arange(6)
    reference = _rope_half(x, pos)

    def build(source):
        _, ns = run_snippet("pe-14", source)
        return ns["apply_rope"]

    buggy = build(q("pe-14")["code"])
    assert not torch.allclose(buggy(x, pos), reference, atol=1e-6)
    assert _relative(buggy)                                             # a relative test misses it
    assert torch.allclose(buggy(x, pos).norm(dim=-1), x.norm(dim=-1))   # so does a norm test
    fix9 = patched("pe-14", "base ** (torch.arange(0, D, 2, dtype=x.dtype) / D)",
                   "base ** (-torch.arange(0, D, 2, dtype=x.dtype) / D)")
    assert torch.allclose(build(fix9)(x, pos), reference, atol=1e-12)
    # lines 5, 11 and 12 are the reference: changing them as the distractors say breaks it
    for old, new in [("torch.cat((-x2, x1), dim=-1)", "torch.cat((x2, -x1), dim=-1)"),
                     ("ang = torch.cat((ang, ang), dim=-1)", "ang = ang.repeat_interleave(2, dim=-1)"),
                     ("x * ang.cos() + rotate_half(x) * ang.sin()", "x * ang.cos() - rotate_half(x) * ang.sin()")]:
        assert fix9.count(old) == 1
        assert not torch.allclose(build(fix9.replace(old, new))(x, pos), reference, atol=1e-6), new
    # rotating by -m·θ (choices a and d) is the mirror image: still relative, still a rotation
    mirrored = build(fix9.replace("torch.cat((-x2, x1), dim=-1)", "torch.cat((x2, -x1), dim=-1)"))
    assert torch.allclose(mirrored(x, pos), _rope_half(x, -pos), atol=1e-12) and _relative(mirrored)


def _interleaved_to_half(D: int) -> torch.Tensor:
    """Within a head: new dimension j < D/2 takes old 2j, new j >= D/2 takes old 2(j - D/2) + 1."""
    return torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])


def test_pe_15_pe_16_conventions_differ_by_a_permutation_of_wq_wk():
    torch.manual_seed(0)
    T, E, H, D = 7, 24, 3, 8
    x = torch.randn(T, E, dtype=torch.float64)
    w_q, w_k = torch.randn(H * D, E, dtype=torch.float64), torch.randn(H * D, E, dtype=torch.float64)
    pos = torch.arange(T, dtype=torch.float64)
    rope_inter = _rope()

    def heads(w):                                        # (H, T, D)
        return (x @ w.T).view(T, H, D).transpose(0, 1)

    def scores(rope, wq, wk):
        return torch.stack([rope(qh, pos) @ rope(kh, pos).T for qh, kh in zip(heads(wq), heads(wk))])

    meta = scores(rope_inter, w_q, w_k)                  # Meta's checkpoint under Meta's code
    perm = _interleaved_to_half(D)
    permute = lambda w: w.view(H, D, E)[:, perm].reshape(H * D, E)
    # the Hugging Face conversion script's permute is the same row permutation
    hf_permute = lambda w: w.view(H, D // 2, 2, E).transpose(1, 2).reshape(H * D, E)
    assert torch.equal(permute(w_q), hf_permute(w_q))
    assert torch.allclose(scores(_rope_half, permute(w_q), permute(w_k)), meta, atol=1e-9)   # pe-15 b
    assert not torch.allclose(scores(_rope_half, w_q, w_k), meta, atol=1e-3)                # pe-15 a, pe-16
    assert q("pe-15")["answer"] == "b" and q("pe-16")["answer"] is False
    # pe-15 d: swapping sin and cos in the rotate-half code is no rotation: position 0 is not the identity
    def swapped(t, p):
        h = t.shape[-1] // 2
        ang = p[:, None] * 10000.0 ** (-2 * torch.arange(h, dtype=t.dtype) / t.shape[-1])
        a, b = t[..., :h], t[..., h:]
        return torch.cat([a * ang.sin() - b * ang.cos(), a * ang.cos() + b * ang.sin()], -1)

    z = torch.zeros(1, dtype=torch.float64)
    x0 = x[:1, :D]
    assert not torch.allclose(swapped(x0, z), x0)
    assert torch.allclose(_rope_half(x0, z), x0) and torch.allclose(rope_inter(x0, z), x0)
    assert not torch.allclose(scores(swapped, w_q, w_k), meta, atol=1e-3)
    # values are not rotated: W_v and W_o stay; permuting them too (choice c) changes the output
    w_v = torch.randn(H * D, E, dtype=torch.float64)
    w_o = torch.randn(E, H * D, dtype=torch.float64)

    def output(rope, wq, wk, wv, wo):
        weights = (scores(rope, wq, wk) / math.sqrt(D)).softmax(-1)         # (H, T, T)
        return (weights @ heads(wv)).transpose(0, 1).reshape(T, H * D) @ wo.T

    reference = output(rope_inter, w_q, w_k, w_v, w_o)
    assert torch.allclose(output(_rope_half, permute(w_q), permute(w_k), w_v, w_o), reference, atol=1e-9)
    assert E == H * D                                    # so that W_o's rows can be permuted the same way
    assert not torch.allclose(output(_rope_half, permute(w_q), permute(w_k), permute(w_v), permute(w_o)),
                              reference, atol=1e-3)


def test_pe_08_pe_10_rope_on_qk_gives_relative_scores():
    assert q("pe-10")["answer"] is True
    rope = _rope()
    torch.manual_seed(1)
    qv, kv = torch.randn(6, 32), torch.randn(6, 32)
    pos = torch.arange(6.0)
    s = rope(qv, pos) @ rope(kv, pos).T
    shifted = rope(qv, pos + 37) @ rope(kv, pos + 37).T
    assert torch.allclose(s, shifted, atol=1e-3)       # depends only on offsets
    # ...provided each vector is rotated at its own position: ignoring the key's offset breaks it
    wrong = rope(qv, pos + 37) @ rope(kv, pos).T
    assert not torch.allclose(s, wrong, atol=1e-3)


# ---------------------------------------------------------------- RoPE context extension

def test_pe_17_position_interpolation():
    p = q("pe-17")["params"]
    L, Lp = p["L"], p["Lp"]
    positions = torch.arange(Lp, dtype=torch.float64) * L / Lp
    assert positions.max().item() < L and positions[p["m"]].item() == q("pe-17")["answer"]
    # rotating at m * L / L' is what every angle sees: inside the trained range of angles
    torch.manual_seed(0)
    x = torch.randn(1, 128, dtype=torch.float64)
    m = torch.tensor([float(p["m"])], dtype=torch.float64)
    assert torch.allclose(_rope_half(x, m * L / Lp), _rope_half(x, torch.tensor([2500.0], dtype=torch.float64)))


def test_pe_18_ntk_aware_base():
    p = q("pe-18")["params"]
    base, s, D = p["base"], p["s"], p["D"]
    theta = lambda b: b ** (-2 * torch.arange(D // 2, dtype=torch.float64) / D)
    old, new = theta(base), theta(q("pe-18")["answer"])
    assert new[0].item() == old[0].item() == 1.0                      # the fastest pair is unchanged
    assert math.isclose(new[-1].item(), old[-1].item() / s, rel_tol=1e-9)   # the slowest is divided by s
    assert (new[1:] < old[1:]).all()
    assert round(q("pe-18")["answer"], -1) == 40890


def test_pe_19_pe_20_larger_base():
    D = q("pe-19")["params"]["D"]
    inv_freq = lambda b: b ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    wavelength = lambda b: 2 * math.pi / inv_freq(b)[-1].item()
    assert math.isclose(wavelength(500000), q("pe-19")["answer"], rel_tol=1e-9)
    assert round(wavelength(10000), -2) == 54400                      # Llama 2, as the explanation says
    assert len(inv_freq(10000)) == len(inv_freq(1_000_000)) == D // 2       # pe-20: no more pairs
    assert inv_freq(10000)[0] == inv_freq(1_000_000)[0] == 1.0               # the first pair never changes
    assert (inv_freq(1_000_000)[1:] < inv_freq(10000)[1:]).all()             # all others slow down
    assert q("pe-20")["answer"] == "c"


def test_pe_22_yarn_temperature():
    s = q("pe-22")["params"]["s"]
    m = 0.1 * math.log(s) + 1
    assert math.isclose(m, q("pe-22")["answer"], rel_tol=1e-12)
    assert round(m, 3) == 1.277 and round(m * m, 2) == 1.63
    # scaling cos and sin by m scales both q and k, so each q·k by m²
    torch.manual_seed(0)
    qv, kv = torch.randn(4, 16, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64)
    pos = torch.arange(4, dtype=torch.float64)
    assert torch.allclose((m * _rope_half(qv, pos)) @ (m * _rope_half(kv, pos)).T,
                          m * m * (_rope_half(qv, pos) @ _rope_half(kv, pos).T))


# ---------------------------------------------------------------- ALiBi

def test_pe_05_pe_25_alibi_bias():
    p = q("pe-05")["params"]
    H = p["H"]
    slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1) / H)
    assert torch.equal(slopes, torch.tensor([1 / 2 ** k for k in range(1, 9)]))
    dist = torch.arange(16)
    bias = -slopes[p["h"] - 1] * dist                    # bias of head h for a key `dist` back
    assert bias[p["dist"]].item() == q("pe-05")["answer"]
    p = q("pe-25")["params"]
    slopes = 2.0 ** (-8.0 * torch.arange(1, p["H"] + 1, dtype=torch.float64) / p["H"])
    assert slopes[-1].item() == 1 / 256 and round(slopes[0].item(), 2) == 0.84
    assert round(p["penalty"] / slopes[0].item()) == 12
    assert (slopes[-1] * q("pe-25")["answer"]).item() == p["penalty"]


def test_pe_23_alibi_as_key_position_bias():
    assert q("pe-23")["answer"] is True
    torch.manual_seed(0)
    T, m = 7, 0.25
    scores = torch.randn(T, T, dtype=torch.float64)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    causal = j <= i
    paper = (scores - m * (i - j)).masked_fill(~causal, float("-inf")).softmax(-1)
    bloom = (scores + m * j).masked_fill(~causal, float("-inf")).softmax(-1)
    assert torch.allclose(paper, bloom, atol=1e-12)
    symmetric = (scores - m * (i - j).abs()).softmax(-1)              # no mask
    assert not torch.allclose(symmetric, (scores + m * j).softmax(-1), atol=1e-3)


# ---------------------------------------------------------------- T5 buckets

def _t5_bucket(relative_position, bidirectional, num_buckets=32, max_distance=128):
    """T5's bucketing (memory_position - query_position), as in the T5 / Hugging Face code."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


def test_pe_26_t5_bucket():
    p = q("pe-26")["params"]
    back = lambda d: _t5_bucket(torch.tensor([-d]), bidirectional=False).item()
    assert back(p["d"]) == q("pe-26")["answer"] == 30
    assert [back(d) for d in range(16)] == list(range(16))              # 0..15 exact
    assert {back(d) for d in (128, 129, 500, 10_000)} == {31}            # far keys share bucket 31
    for d in range(16, 400):                                             # the prompt's formula
        assert back(d) == safe_eval(q("pe-26")["formula"], {**p, "d": d}), d
    both = lambda r: _t5_bucket(torch.tensor([r]), bidirectional=True).item()
    assert [both(-d) for d in range(8)] == list(range(8))               # encoder: 8 exact per direction
    assert both(-127) <= 15 and both(5) == 16 + 5 and both(500) == 31


# ---------------------------------------------------------------- positions with a KV cache

class _Cache:
    def __init__(self):
        self.k = self.v = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(1)


class _CachedBlock(nn.Module):
    """One single-head causal attention layer that appends this call's k, v to the cache."""

    def __init__(self, E):
        super().__init__()
        self.qkv, self.out = nn.Linear(E, 3 * E), nn.Linear(E, E)

    def forward(self, x, cache):
        qq, k, v = self.qkv(x).chunk(3, dim=-1)
        if cache is None:
            return x + self.out(F.scaled_dot_product_attention(qq, k, v, is_causal=True))
        cache.k = k if cache.k is None else torch.cat([cache.k, k], 1)
        cache.v = v if cache.v is None else torch.cat([cache.v, v], 1)
        S, T = cache.k.size(1), x.size(1)
        y = F.scaled_dot_product_attention(qq, cache.k, cache.v, attn_mask=_bottom_right(T, S))
        return x + self.out(y)


def _gpt(code: str, V=20, E=16, max_len=32):
    _, ns = run_snippet("pe-28", code, torch=torch, nn=nn)
    torch.manual_seed(0)
    model = ns["GPT"]()
    model.wte, model.wpe = nn.Embedding(V, E), nn.Embedding(max_len, E)
    model.blocks = nn.ModuleList([_CachedBlock(E)])
    model.ln_f, model.lm_head = nn.LayerNorm(E), nn.Linear(E, V)
    return model


def _cached_matches_full(model, idx, prompt_len):
    with torch.no_grad():
        full = model(idx)
        cache = _Cache()
        steps = [model(idx[:, :prompt_len], cache)]
        for t in range(prompt_len, idx.size(1)):
            steps.append(model(idx[:, t:t + 1], cache))
        return torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_pe_28_pe_34_learned_positions_need_the_offset():
    assert "torch.arange(T" in lines("pe-28")[4] and answer_choice("pe-28").startswith("Line 5")
    torch.manual_seed(1)
    idx = torch.randint(0, 20, (2, 9))
    assert not _cached_matches_full(_gpt(q("pe-28")["code"]), idx, prompt_len=5)
    fixed = patched("pe-28", "torch.arange(T, device=idx.device)", "torch.arange(past, past + T, device=idx.device)")
    assert _cached_matches_full(_gpt(fixed), idx, prompt_len=5)
    # pe-34: after a 700-token prompt the next token uses row 700 (positions count from 0)
    rows = []
    _, ns = run_snippet("pe-28", fixed, torch=torch, nn=nn)
    model = ns["GPT"]()
    model.wte, model.ln_f, model.lm_head = nn.Embedding(5, 4), nn.Identity(), nn.Identity()
    model.wpe = lambda pos: rows.append(pos.tolist()) or torch.zeros(len(pos), 4)
    model.blocks = []
    cache = _Cache()
    cache.k = torch.zeros(1, 700, 4)
    model(torch.zeros(1, 1, dtype=torch.long), cache)
    assert rows == [[700]] and answer_choice("pe-34").startswith("Row 700")


def test_pe_29_pe_30_rope_with_a_kv_cache():
    assert "torch.arange(T)" in lines("pe-29")[3] and answer_choice("pe-29").startswith("Line 4")
    torch.manual_seed(0)
    B, S, E = 2, 9, 16
    x = torch.randn(B, S, E, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(E, E, dtype=torch.float64) / 4 for _ in range(3))
    pos = torch.arange(S)
    full = F.scaled_dot_product_attention(_rope_half(x @ w_q, pos), _rope_half(x @ w_k, pos), x @ w_v, is_causal=True)

    def decode(code):
        _, ns = run_snippet("pe-29", code, torch=torch, F=F)
        cache = {"k": torch.zeros(B, 0, E, dtype=torch.float64), "v": torch.zeros(B, 0, E, dtype=torch.float64)}
        chunks = [(0, 4), (4, 5), (5, 6), (6, 9)]                     # a prompt, two steps, a chunk
        out = torch.cat([ns["attend_step"](x[:, a:b], cache, _rope_half, w_q, w_k, w_v) for a, b in chunks], 1)
        return out, cache

    buggy, _ = decode(q("pe-29")["code"])
    assert torch.allclose(buggy[:, :4], full[:, :4]) and not torch.allclose(buggy, full, atol=1e-6)
    fixed_code = patched("pe-29", "pos = torch.arange(T)", "pos = torch.arange(P, P + T)")
    fixed, cache = decode(fixed_code)
    assert torch.allclose(fixed, full, atol=1e-10)
    # pe-30: the cache holds each key rotated once, at its absolute position, never again
    assert q("pe-30")["answer"] is True
    assert torch.allclose(cache["k"], _rope_half(x @ w_k, pos), atol=1e-12)
    # choice b: rotating the cached keys again breaks it; choice c: unrotated queries lose the offset
    again = fixed_code.replace('cache["k"] = torch.cat([cache["k"], k], dim=1)',
                               'cache["k"] = torch.cat([rope(cache["k"], torch.full((P,), T)), k], dim=1)')
    assert again != fixed_code and not torch.allclose(decode(again)[0], full, atol=1e-6)
    no_q = fixed_code.replace("q = rope(x @ w_q, pos)", "q = x @ w_q")
    assert no_q != fixed_code and not torch.allclose(decode(no_q)[0], full, atol=1e-6)


def test_pe_31_streaming_positions_within_the_cache():
    sinks, window, seen = 4, 1020, 10_000
    kept = list(range(sinks)) + list(range(seen - window, seen))
    assert kept[sinks] == 8980 and kept[-1] == 9999
    cache_positions = torch.arange(len(kept))
    assert cache_positions.max().item() == 1023                     # every distance is within 1023
    assert kept[-1] - kept[0] == 9999                                # original positions: almost 10,000 apart
    assert q("pe-31")["answer"] == "b"


def test_pe_33_plain_tensor_is_not_a_parameter():
    assert q("pe-33")["answer"] is False

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = torch.randn(8, 4) * 0.02

    class Registered(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.randn(8, 4) * 0.02)

    plain, registered = Plain(), Registered()
    assert list(plain.parameters()) == [] and "pos" not in plain.state_dict() and not plain.pos.requires_grad
    assert [p is registered.pos for p in registered.parameters()] == [True] and "pos" in registered.state_dict()
    with pytest.raises(ValueError):                                  # an optimiser has nothing to train
        torch.optim.SGD(plain.parameters(), lr=0.1)


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
    """PyTorch 2.13: NaN on the need_weights=True path, zeros through SDPA (need_weights=False)."""
    torch.manual_seed(0)
    assert "attn_mask=allowed" in lines("mask-03")[6] and "need_weights=True" in answer_choice("mask-03")
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
    silent, _ = mha(x, x, x, attn_mask=allowed, need_weights=False)
    assert not silent.isnan().any()
    assert torch.allclose(silent[:, -1], mha.out_proj.bias.expand(2, -1))   # a zero row, through out_proj
    assert torch.allclose(silent[:, :-1], out[:, :-1], atol=1e-5)
    fixed, _ = mha(x, x, x, attn_mask=~allowed)
    assert not fixed.isnan().any()
    # F.scaled_dot_product_attention itself: a fully masked row is zeros, and its gradient is finite
    qq = torch.randn(1, 1, 3, 4, requires_grad=True)
    k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    rows = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    y = F.scaled_dot_product_attention(qq, k, v, attn_mask=rows)
    assert (y[0, 0, 1] == 0).all() and torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(qq.grad).all()
    additive = torch.zeros(3, 3).masked_fill(~rows, float("-inf"))
    assert (F.scaled_dot_product_attention(qq.detach(), k, v, attn_mask=additive)[0, 0, 1] == 0).all()


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
    _, fixed_ns = run_snippet("mask-04", patched("mask-04", "masked_fill(allowed", "masked_fill(~allowed"), torch=torch)
    good = fixed_ns["masked_attention"](qq, k, v, lengths)
    key_ok = (torch.arange(T)[None, :] < lengths[:, None])[:, None, :]
    ref = F.scaled_dot_product_attention(qq, k, v, attn_mask=key_ok)
    assert torch.allclose(good, ref, atol=1e-6)


def test_mask_05_zero_weight_and_rows_summing_to_one():
    assert q("mask-05")["answer"] == "c"
    s = torch.tensor([2.0, 1.0, 0.5, -1.0])
    masked = torch.tensor([False, False, True, True])
    w_inf = s.masked_fill(masked, float("-inf")).softmax(-1)            # c: zero weight, sums to 1
    assert (w_inf[masked] == 0).all() and math.isclose(w_inf.sum().item(), 1.0, rel_tol=1e-6)
    w_zero = s.masked_fill(masked, 0.0).softmax(-1)                     # a: masked keys keep weight
    assert (w_zero[masked] > 0).all()
    w_after = s.softmax(-1) * (~masked)                                 # b: zero weight, but the row
    assert (w_after[masked] == 0).all() and w_after.sum().item() < 0.99  # no longer sums to 1
    assert torch.allclose(w_after / w_after.sum(), w_inf)              # unless renormalised
    scaled = s / math.sqrt(64)                                          # d: sqrt(d_k) rescales, it does not normalise
    assert not math.isclose(scaled[~masked].sum().item(), 1.0, rel_tol=1e-3)


def test_mask_06_fully_masked_row_is_nan_not_uniform():
    assert q("mask-06")["answer"] is False
    row = torch.full((4,), float("-inf"))
    assert row.softmax(-1).isnan().all()
    finite = torch.full((4,), -1e9)
    assert torch.allclose(finite.softmax(-1), torch.full((4,), 0.25))
    finfo = torch.full((4,), torch.finfo(torch.float32).min)
    assert torch.allclose(finfo.softmax(-1), torch.full((4,), 0.25))


def test_mask_07_handling_fully_masked_rows_forward_and_backward():
    assert sorted(q("mask-07")["answer"]) == ["a", "c", "e"]
    assert "masked_fill" in choice("mask-07", "a") and "additive" in choice("mask-07", "f")
    ninf = torch.tensor(float("-inf"))
    assert (ninf + 1e-6).item() == float("-inf")                # option b does nothing
    assert (ninf / math.sqrt(64)).item() == float("-inf")       # option d does nothing
    torch.manual_seed(0)
    allowed = torch.tensor([[True, True, False, False], [False] * 4])
    has_key = allowed.any(-1, keepdim=True)
    upstream = torch.randn(2, 4)

    def grad_of(weights_from_scores):
        scores = torch.randn(2, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
        w = weights_from_scores(scores)
        (w * upstream).sum().backward()
        return w, scores.grad

    # a: masked_fill, softmax, torch.where: outputs and gradients finite
    w, g = grad_of(lambda s: torch.where(has_key, s.masked_fill(~allowed, float("-inf")).softmax(-1), 0.0))
    assert torch.isfinite(w).all() and torch.isfinite(g).all() and (g[1] == 0).all()
    # f: an additive -inf mask, softmax, torch.where: the same forward values, a NaN backward
    additive = torch.zeros(2, 4).masked_fill(~allowed, float("-inf"))
    w_f, g_f = grad_of(lambda s: torch.where(has_key, (s + additive).softmax(-1), 0.0))
    assert torch.equal(w_f, w) and g_f[1].isnan().all() and torch.isfinite(g_f[0]).all()
    # ... and nan_to_num after the softmax does not rescue it either
    _, g_n = grad_of(lambda s: (s + additive).softmax(-1).nan_to_num(0.0))
    assert g_n[1].isnan().all()
    # c: a finite minimum keeps the softmax finite, forward and backward
    w_c, g_c = grad_of(lambda s: s.masked_fill(~allowed, torch.finfo(s.dtype).min).softmax(-1))
    assert torch.isfinite(w_c).all() and torch.isfinite(g_c).all()
    # e: letting a query attend to itself removes the fully masked row
    assert (allowed | torch.eye(2, 4, dtype=torch.bool)).any(-1).all()


def test_mask_10_causal_mask_expressions():
    L = 5
    ref = torch.arange(L)[:, None] >= torch.arange(L)[None, :]
    correct = []
    for i, c in enumerate(q("mask-10")["choices"]):
        m = eval(c["en"], {"torch": torch, "L": L})
        if m.dtype == torch.bool and torch.equal(m, ref):
            correct.append(letter(i))
    assert correct == sorted(q("mask-10")["answer"])
    assert ref.diagonal().all()                                   # every position sees itself


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


def test_mask_14_is_causal_is_top_left():
    assert q("mask-14")["answer"] is True
    from torch.nn.attention.bias import causal_lower_right
    torch.manual_seed(0)
    L, S = 2, 5
    qq = torch.randn(1, 1, L, 8)
    k = torch.randn(1, 1, S, 8, requires_grad=True)
    v = torch.randn(1, 1, S, 8)
    F.scaled_dot_product_attention(qq, k, v, is_causal=True)[0, 0, -1].sum().backward()
    assert (k.grad[0, 0].abs().sum(-1) > 0).tolist() == [True, True, False, False, False]
    a = F.scaled_dot_product_attention(qq, k.detach(), v, attn_mask=causal_lower_right(L, S))
    b = F.scaled_dot_product_attention(qq, k.detach(), v, attn_mask=_bottom_right(L, S))
    assert torch.allclose(a, b, atol=1e-6)


def test_mask_27_triu_blocks_the_diagonal():
    assert "torch.triu(" in lines("mask-27")[4] and "diagonal" not in lines("mask-27")[4]
    torch.manual_seed(0)
    qq, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    _, ns = run_snippet("mask-27", torch=torch, math=math)
    out = ns["causal_attention"](qq, k, v)
    assert out[..., 0, :].isnan().all() and not out[..., 1:, :].isnan().any()
    # row t > 0 averages the values of keys 0 .. t - 1 only (off by one)
    blocked = torch.triu(torch.ones(5, 5, dtype=torch.bool))
    assert torch.allclose(out[..., 1:, :], F.scaled_dot_product_attention(qq, k, v, attn_mask=~blocked)[..., 1:, :], atol=1e-6)
    _, fixed = run_snippet("mask-27", patched("mask-27", "dtype=torch.bool, device=q.device))",
                                              "dtype=torch.bool, device=q.device), diagonal=1)"), torch=torch, math=math)
    assert torch.allclose(fixed["causal_attention"](qq, k, v), F.scaled_dot_product_attention(qq, k, v, is_causal=True), atol=1e-6)


def test_mask_28_a_test_that_masks_nothing_misses_an_ignored_mask():
    assert q("mask-28")["answer"] is False
    torch.manual_seed(0)
    ignores_mask = lambda qq, k, v, mask: F.scaled_dot_product_attention(qq, k, v)
    B, S, d = 2, 6, 8
    qq, k, v = torch.randn(B, 1, S, d), torch.randn(B, 1, S, d), torch.randn(B, 1, S, d)
    no_pads = torch.ones(B, 1, 1, S, dtype=torch.bool)
    assert torch.allclose(ignores_mask(qq, k, v, no_pads), F.scaled_dot_product_attention(qq, k, v, attn_mask=no_pads), atol=1e-6)
    last = qq[:, :, -1:]
    causal_last = _bottom_right(1, S)
    assert torch.allclose(ignores_mask(last, k, v, causal_last), F.scaled_dot_product_attention(last, k, v, attn_mask=causal_last), atol=1e-6)
    pads = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])[:, None, None, :]
    assert not torch.allclose(ignores_mask(qq, k, v, pads), F.scaled_dot_product_attention(qq, k, v, attn_mask=pads), atol=1e-3)
    causal = _bottom_right(S, S)
    assert not torch.allclose(ignores_mask(qq, k, v, causal), F.scaled_dot_product_attention(qq, k, v, attn_mask=causal), atol=1e-3)


# ---------------------------------------------------------------- document packing and prefix LM

def _doc_ids(lengths):
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))


def _block_causal(lengths):
    doc = _doc_ids(lengths)
    T = len(doc)
    return (doc[:, None] == doc[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()


def test_mask_01_leak_20_block_diagonal_counts():
    p = q("mask-01")["params"]
    lengths = [p["a"], p["b"], p["c"]]
    mask = _block_causal(lengths)
    assert mask.sum().item() == q("mask-01")["answer"]
    T = sum(lengths)
    assert _top_left(T, T).sum().item() == 55 and (_top_left(T, T) & ~mask).sum().item() == 31
    p = q("leak-20")["params"]
    lengths = [p["a"], p["b"], p["c"]]
    T = sum(lengths)
    doc = _doc_ids(lengths)
    # count row by row: query t sees t + 1 keys under is_causal, of which the ones before its document are foreign
    starts = torch.tensor([0] + list(torch.cumsum(torch.tensor(lengths), 0)[:-1]))[doc]
    cross = starts.sum().item()
    assert cross == q("leak-20")["answer"] and T * (T + 1) // 2 == 8_390_656
    assert round(cross / (T * (T + 1) // 2), 2) == 0.62


def test_mask_16_cu_seqlens():
    lengths = torch.tensor([12, 7, 9])
    cu = F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)
    assert torch.equal(cu, eval(answer_choice("mask-16"), {"torch": torch}))
    for key in "abc":
        other = eval(choice("mask-16", key), {"torch": torch})
        assert other.shape != cu.shape or not torch.equal(other, cu)
    # document b occupies rows cu[b] : cu[b + 1] of the packed tensor
    packed = _doc_ids(lengths.tolist())
    for b in range(3):
        assert (packed[cu[b]:cu[b + 1]] == b).all() and cu[b + 1] - cu[b] == lengths[b]
    assert len(cu) == len(lengths) + 1 and cu.dtype == torch.int32 and (cu[1:] - cu[:-1]).max() == 12


def _varlen_like(qq, k, v, cu):
    """What flash_attn_varlen_func(..., causal=True) computes: causal attention per segment."""
    out = torch.empty_like(qq)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        out[..., a:b, :] = F.scaled_dot_product_attention(qq[..., a:b, :], k[..., a:b, :], v[..., a:b, :], is_causal=True)
    return out


def test_mask_08_mask_15_mask_26_flex_attention_and_packing():
    from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention
    lengths = [3, 5, 2]
    doc = _doc_ids(lengths)
    T = len(doc)
    # mask-01 / mask-15 b: FlexAttention's document mask_mod is the block-diagonal causal mask
    doc_causal = lambda b, h, q_idx, kv_idx: (doc[q_idx] == doc[kv_idx]) & (kv_idx <= q_idx)
    dense = create_mask(doc_causal, 1, 1, T, T, device="cpu")[0, 0]
    assert torch.equal(dense, _block_causal(lengths)) and dense.sum().item() == q("mask-01")["answer"]
    # mask-08: which prefix-LM mask_mod is right (True = may attend)
    P, N = 4, 9
    qi, ki = torch.arange(N)[:, None], torch.arange(N)[None, :]
    prefix_lm = (ki <= qi) | (ki < P)
    right = [letter(i) for i, c in enumerate(q("mask-08")["choices"])
             if torch.equal(eval(c["en"], {"P": P})(0, 0, qi, ki), prefix_lm)]
    assert right == [q("mask-08")["answer"]]
    fn = eval(answer_choice("mask-08"), {"P": P})
    assert torch.equal(create_mask(fn, 1, 1, N, N, device="cpu")[0, 0], prefix_lm)
    # mask-15: a, b, c and e give every document exactly its own causal attention; d and f do not
    torch.manual_seed(0)
    qq, k, v = (torch.randn(1, 2, T, 8) for _ in range(3))
    per_doc = _varlen_like(qq, k, v, F.pad(torch.cumsum(torch.tensor(lengths), 0), (1, 0)))    # a
    block_mask = create_block_mask(doc_causal, 1, 1, T, T, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flex = flex_attention(qq, k, v, block_mask=block_mask)                                  # b
    dense_out = F.scaled_dot_product_attention(qq, k, v, attn_mask=dense)                      # c
    rows = []                                                                                   # e
    for a, b in zip([0, 3, 8], [3, 8, 10]):
        n, pad = b - a, max(lengths) - (b - a)
        padded = [F.pad(t[..., a:b, :], (0, 0, 0, pad)) for t in (qq, k, v)]
        mask_e = torch.ones(max(lengths), max(lengths), dtype=torch.bool).tril() & (torch.arange(max(lengths)) < n)[None, :]
        rows.append(F.scaled_dot_product_attention(*padded, attn_mask=mask_e)[..., :n, :])
    unpacked = torch.cat(rows, dim=-2)
    for got in (flex, dense_out, unpacked):
        assert torch.allclose(got, per_doc, atol=1e-5)
    plain = F.scaled_dot_product_attention(qq, k, v, is_causal=True)                          # d
    assert not torch.allclose(plain, per_doc, atol=1e-3)
    eos = torch.tensor([i in (2, 7) for i in range(T)])                                         # f
    f_mask = _top_left(T, T) & ~eos[None, :]
    assert not torch.allclose(F.scaled_dot_product_attention(qq, k, v, attn_mask=f_mask), per_doc, atol=1e-3)
    assert sorted(q("mask-15")["answer"]) == ["a", "b", "c", "e"]
    # mask-26: BlockMask works on 128 x 128 blocks, and mask_mods combine
    from torch.nn.attention.flex_attention import and_masks, or_masks
    assert block_mask.BLOCK_SIZE == (128, 128)
    causal = lambda b, h, q_idx, kv_idx: kv_idx <= q_idx
    in_prefix = lambda b, h, q_idx, kv_idx: kv_idx < P
    assert torch.equal(create_mask(or_masks(causal, in_prefix), 1, 1, N, N, device="cpu")[0, 0], prefix_lm)
    window = lambda b, h, q_idx, kv_idx: (q_idx - kv_idx) < 3
    sliding = create_mask(and_masks(causal, window), 1, 1, N, N, device="cpu")[0, 0]
    assert torch.equal(sliding, (ki <= qi) & (qi - ki < 3))


def test_leak_19_prefix_lm_loss_on_the_prefix_leaks():
    assert q("leak-19")["answer"] is True
    torch.manual_seed(0)
    P, N, d = 4, 7, 8
    qi, ki = torch.arange(N)[:, None], torch.arange(N)[None, :]
    mask = (ki <= qi) | (ki < P)
    x = torch.randn(1, 1, N, d, requires_grad=True)
    depends = []
    for t in range(N):
        x.grad = None
        F.scaled_dot_product_attention(x, x, x, attn_mask=mask)[0, 0, t].sum().backward()
        depends.append((x.grad[0, 0].abs().sum(-1) > 0).tolist())
    assert all(depends[t][t + 1] for t in range(P - 1))             # prefix position t sees token t + 1
    assert not any(depends[P - 1][P:])                              # the last prefix position sees only the prefix
    assert all(not any(depends[t][t + 1:]) for t in range(P - 1, N))  # from there on, causal


# ---------------------------------------------------------------- speculative decoding and trees

def test_mask_17_verification_outputs():
    torch.manual_seed(0)
    V, E = 11, 16
    emb, head = nn.Embedding(V, E), nn.Linear(E, V)
    block = _CachedBlock(E)
    target = lambda ids: head(block(emb(ids), None))               # a tiny causal LM
    prefix = torch.randint(0, V, (1, 5))                           # ... ending with the accepted token x
    drafts = torch.randint(0, V, (1, 3))
    with torch.no_grad():
        one_pass = target(torch.cat([prefix, drafts], 1))
        for j in range(1, 4):                                      # d_j is judged at the position before it
            step = target(torch.cat([prefix, drafts[:, : j - 1]], 1))[:, -1]
            assert torch.allclose(one_pass[:, prefix.size(1) - 2 + j], step, atol=1e-5)
        bonus = target(torch.cat([prefix, drafts], 1))[:, -1]
        assert torch.allclose(one_pass[:, -1], bonus)
    assert q("mask-17")["answer"] == "b"


def test_mask_18_expected_tokens_per_pass():
    p = q("mask-18")["params"]
    a, g = p["alpha"], p["gamma"]
    exact = sum((n + 1) * a ** n * (1 - a) for n in range(g)) + (g + 1) * a ** g
    assert math.isclose(exact, q("mask-18")["answer"], rel_tol=1e-12)
    gen = torch.Generator().manual_seed(0)
    accepted = torch.rand(200_000, g, generator=gen) < a
    produced = accepted.int().cumprod(1).sum(1) + 1               # accepted run + one target token
    assert abs(produced.float().mean().item() - exact) < 0.02
    assert 1 <= exact <= g + 1


def _tree():
    """2 candidates for the next token, each followed by 3: parents of the 8 nodes (-1 = the prefix)."""
    parents = [-1, -1, 0, 0, 0, 1, 1, 1]
    depth = [1 if p < 0 else 2 for p in parents]
    n = len(parents)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:                                              # itself and its ancestors
            mask[i, j] = True
            j = parents[j]
    return parents, depth, mask


def test_mask_19_mask_20_tree_attention():
    parents, depth, tree = _tree()
    assert tree.sum().item() == q("mask-19")["answer"] and _top_left(8, 8).sum().item() == 36
    assert q("mask-20")["answer"] is True
    torch.manual_seed(0)
    P, E = 3, 16
    prefix, nodes = torch.randn(P, E, dtype=torch.float64), torch.randn(8, E, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(E, E, dtype=torch.float64) / 4 for _ in range(3))
    seq = torch.cat([prefix, nodes])
    pos = torch.cat([torch.arange(P), P + torch.tensor(depth) - 1])     # siblings share a position
    assert pos[P] == pos[P + 1] and pos[P + 2] == pos[P + 7]
    full_mask = torch.cat([torch.ones(8, P, dtype=torch.bool), tree], 1)
    qq, k = _rope_half(nodes @ w_q, pos[P:]), _rope_half(seq @ w_k, pos)
    tree_out = F.scaled_dot_product_attention(qq, k, seq @ w_v, attn_mask=full_mask)
    for i in range(8):
        path = [i] if parents[i] < 0 else [parents[i], i]
        s = torch.cat([prefix, nodes[path]])
        p = torch.arange(len(s))
        plain = F.scaled_dot_product_attention(_rope_half(s @ w_q, p), _rope_half(s @ w_k, p), s @ w_v, is_causal=True)
        assert torch.allclose(tree_out[i], plain[-1], atol=1e-10), i
    # a plain causal mask over the flattened tree mixes the branches
    flat = F.scaled_dot_product_attention(qq, k, seq @ w_v, attn_mask=_bottom_right(8, P + 8))
    assert not torch.allclose(flat, tree_out, atol=1e-6)


# ---------------------------------------------------------------- sparse patterns and sinks

def _longformer(n, w, global_tokens=(0,)):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    mask = (i - j).abs() <= w
    for g in global_tokens:
        mask[g, :] = True
        mask[:, g] = True
    return mask


def test_mask_22_longformer_count():
    p = q("mask-22")["params"]
    for n, w in [(16, 2), (64, 5), (300, 31)]:                          # exhaustive on small sizes
        assert _longformer(n, w).sum().item() == safe_eval(q("mask-22")["formula"], {"n": n, "w": w})
    n, w = p["n"], p["w"]
    rows = torch.arange(n)
    band = (torch.clamp(rows + w, max=n - 1) - torch.clamp(rows - w, min=0) + 1).sum().item()
    assert band == 2_035_456
    assert band + 2 * (n - 1 - w) == q("mask-22")["answer"]
    assert round(q("mask-22")["answer"] / n ** 2, 2) == 0.12


def test_mask_25_sink_cache_bytes():
    p = q("mask-25")["params"]
    cache = torch.empty(2, p["layers"], p["kv_heads"], p["sinks"] + p["window"], p["head_dim"],
                        dtype=torch.float16, device="meta")
    assert cache.element_size() == p["bytes"]
    assert cache.numel() * cache.element_size() / 2 ** 20 == q("mask-25")["answer"]
    per_token = 2 * p["layers"] * p["kv_heads"] * p["head_dim"] * p["bytes"]
    assert per_token == 512 * 1024


# ---------------------------------------------------------------- leakage

def _future_dependence(fn, T=6, E=16, t=2):
    """1 where output t depends on input j."""
    torch.manual_seed(0)
    x = torch.randn(1, T, E, requires_grad=True)
    probe = torch.randn(E)                     # a plain sum of a LayerNorm output has zero gradient
    (fn(x)[0, t] * probe).sum().backward()
    return (x.grad[0].abs().sum(-1) > 0).int().tolist()


def test_leak_03_triu_leaks_tril_does_not():
    code = lines("leak-03")
    assert "torch.triu" in code[5] and answer_choice("leak-03").startswith("Line 6")
    torch.manual_seed(0)
    E, H = 16, 4
    w = torch.randn(E, 3 * E) / math.sqrt(E)
    _, ns = run_snippet("leak-03", torch=torch)
    assert _future_dependence(lambda x: ns["causal_self_attention"](x, w, H)) == [0, 0, 1, 1, 1, 1]
    _, fixed = run_snippet("leak-03", patched("leak-03", "torch.triu(", "torch.tril("), torch=torch)
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
    # generation with the copy model repeats the last token forever
    seq = [3, 7]
    for _ in range(4):
        seq.append(copy_model(torch.tensor(seq))[-1].argmax().item())
    assert seq[2:] == [7, 7, 7, 7]


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
    for i, c in enumerate(q("leak-05")["choices"]):
        expr = c["en"].split(":")[0] if c["en"].startswith("None") else c["en"]
        ns = {"torch": torch, "F": F, "k_cache": k_cache, "v_cache": v_cache, "q": qq, "k": k, "v": v}
        exec(code.replace("MASK", expr), ns)
        if torch.allclose(ns["out"], full, atol=1e-5):
            correct.append(letter(i))
    assert correct == sorted(q("leak-05")["answer"])


def test_leak_08_normalisation_over_time_leaks():
    assert sorted(q("leak-08")["answer"]) == ["a", "c", "e", "f"]
    torch.manual_seed(0)
    B, T, E = 2, 6, 8
    x = torch.randn(B, T, E)
    x2 = x.clone()
    x2[:, -1] += 5.0                                              # change only the last token
    changed = lambda f: not torch.allclose(f(x)[:, 0], f(x2)[:, 0], atol=1e-6)
    over_time = lambda norm: (lambda t: norm(t.transpose(1, 2)).transpose(1, 2))
    assert changed(over_time(nn.BatchNorm1d(E).train()))                        # a: leaks
    assert not changed(nn.LayerNorm(E))                                         # b: does not
    assert changed(lambda t: (t - t.mean(1, keepdim=True)) / t.std(1, keepdim=True))  # c: leaks
    assert changed(over_time(nn.InstanceNorm1d(E)))                             # e: leaks
    # d: more heads, each masked, add no leak
    mha = nn.MultiheadAttention(16, 16, batch_first=True)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert _future_dependence(lambda t: mha(t, t, t, attn_mask=causal)[0]) == [1, 1, 1, 0, 0, 0]


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


class _CausalSelfAttention(nn.Module):
    def __init__(self, E, H):
        super().__init__()
        self.H, self.qkv, self.out = H, nn.Linear(E, 3 * E), nn.Linear(E, E)

    def forward(self, x):
        B, T, E = x.shape
        qq, k, v = (t.view(B, T, self.H, E // self.H).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        return self.out(F.scaled_dot_product_attention(qq, k, v, is_causal=True).transpose(1, 2).reshape(B, T, E))


def test_leak_14_centred_convolution_leaks():
    code = lines("leak-14")
    assert "padding=1" in code[4] and answer_choice("leak-14").startswith("Line 5")

    def block(source):
        _, ns = run_snippet("leak-14", source, torch=torch, nn=nn, F=F, CausalSelfAttention=_CausalSelfAttention)
        torch.manual_seed(0)
        return ns["Block"](16, 4)

    assert _future_dependence(block(q("leak-14")["code"])) == [1, 1, 1, 1, 0, 0]    # output 2 reads input 3
    causal_conv = patched("leak-14", "padding=1, groups=E)", "padding=0, groups=E)").replace(
        "self.conv(self.ln1(x).transpose(1, 2))", "self.conv(F.pad(self.ln1(x).transpose(1, 2), (2, 0)))")
    assert _future_dependence(block(causal_conv)) == [1, 1, 1, 0, 0, 0]
    trimmed = patched("leak-14", "padding=1, groups=E)", "padding=2, groups=E)").replace(
        "h = self.conv(self.ln1(x).transpose(1, 2))", "h = self.conv(self.ln1(x).transpose(1, 2))[..., :-2]")
    assert _future_dependence(block(trimmed)) == [1, 1, 1, 0, 0, 0]


def test_leak_15_which_losses_are_next_token_prediction():
    """Record which (position, target position) pairs each loss scores."""
    T = 7
    tokens = torch.arange(T)[None, :]                       # token t has value t: a target names its position

    def model(ids):                                          # the logits at position t predict class t
        return 50.0 * F.one_hot(torch.arange(ids.size(1)), T).float()[None]

    pairs = []

    class RecordingF:
        @staticmethod
        def cross_entropy(logits, targets):
            pairs.extend(zip(logits.argmax(-1).tolist(), targets.tolist()))
            return F.cross_entropy(logits, targets)

    ns = {"batch": {"input_ids": tokens}, "model": model, "F": RecordingF, "torch": torch}
    exec(q("leak-15")["code"], ns)
    right = []
    for i, c in enumerate(q("leak-15")["choices"]):
        pairs.clear()
        eval(c["en"], ns)
        leak = any(target <= position for position, target in pairs)
        next_token = all(target == position + 1 for position, target in pairs) and len(pairs) == T - 1
        assert leak != next_token, c["en"]
        if next_token:
            right.append(letter(i))
    assert right == sorted(q("leak-15")["answer"])


def test_leak_17_transformer_encoder_as_a_decoder():
    torch.manual_seed(0)
    T, E = 6, 16
    blocks = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, 4, dim_feedforward=32, dropout=0.0, batch_first=True),
                                   num_layers=2, enable_nested_tensor=False)
    assert _future_dependence(lambda x: blocks(x)) == [1] * T                                    # b: bidirectional
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):  # c: raises
        blocks(torch.randn(1, T, E), is_causal=True)
    causal = nn.Transformer.generate_square_subsequent_mask(T)
    assert _future_dependence(lambda x: blocks(x, mask=causal)) == [1, 1, 1, 0, 0, 0]           # a
    assert _future_dependence(lambda x: blocks(x, mask=causal, is_causal=True)) == [1, 1, 1, 0, 0, 0]
    tril = torch.tril(torch.ones(T, T, dtype=torch.bool))                                       # d: inverted
    assert _future_dependence(lambda x: blocks(x, mask=tril)) != [1, 1, 1, 0, 0, 0]
    assert torch.equal(causal == 0, tril)                          # -inf exactly above the diagonal
    assert q("leak-17")["answer"] == "a"


def test_leak_18_padding_carries_the_label():
    torch.manual_seed(0)
    E, n_real = 16, 30
    enc = nn.MultiheadAttention(E, 4, batch_first=True).eval()
    review = torch.randn(1, n_real, E)

    def pooled(total, masked):
        """The same review padded to `total` tokens, then mean-pooled."""
        x = torch.cat([review, torch.zeros(1, total - n_real, E)], 1)
        pad = (torch.arange(total) >= n_real)[None]
        with torch.no_grad():
            y, _ = enc(x, x, x, key_padding_mask=pad if masked else None)
        return y[0, :n_real].mean(0) if masked else y[0].mean(0)

    assert not torch.allclose(pooled(34, False), pooled(60, False), atol=1e-3)   # the pad count gets through
    assert torch.allclose(pooled(34, True), pooled(60, True), atol=1e-5)         # masks and masked pooling stop it
    assert q("leak-18")["answer"] == "b"


def test_leak_21_whole_series_statistics_leak():
    torch.manual_seed(0)
    series = torch.randn(50, dtype=torch.float64).cumsum(0)
    future = series.clone()
    future[40:] += 10.0                                           # change only the steps to forecast
    t = 30
    whole = lambda s: (s - s.mean()) / s.std()
    frozen_mu, frozen_sd = series[:20].mean(), series[:20].std()
    frozen = lambda s: (s - frozen_mu) / frozen_sd
    diff = lambda s: torch.cat([torch.zeros(1, dtype=s.dtype), s[1:] - s[:-1]])
    revin = lambda s: (s[t - 10:t + 1] - s[t - 10:t + 1].mean()) / s[t - 10:t + 1].std()
    assert whole(series)[t] != whole(future)[t]                   # a leaks
    for f in (frozen, diff):
        assert f(series)[t] == f(future)[t]
    assert torch.equal(revin(series), revin(future))
    assert q("leak-21")["answer"] == "a"
