"""Facts behind the efficient-attention, inference and architecture questions, checked with torch.

Self-contained on purpose: it reads the TOML files directly and imports nothing from
attn_drill. Questions are referenced by id; a code question's snippet is executed as shown,
then with the line its correct choice names patched, so the bug's effect is visible.
Everything runs on the CPU with tiny tensors (or on the meta device for full-size shapes).
"""

from __future__ import annotations

import inspect
import math
import re
import tomllib
from collections import Counter
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
    "complexity sliding-window layernorm residual ffn dropout fresh-layers backward "
    # the tags added for the depth questions
    "mla paged-attention continuous-batching linear-attention attention-sinks sparse-attention "
    "speculative-decoding kv-compression normalization flops softmax-alternatives".split()
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


def replace_lines(lines: list[str], replacements: dict[int, str]) -> list[str]:
    """The snippet with lines (1-based) replaced, keeping each line's indentation."""
    out = list(lines)
    for n, new_text in replacements.items():
        indent = lines[n - 1][: len(lines[n - 1]) - len(lines[n - 1].lstrip())]
        out[n - 1] = indent + new_text
    return out


def patched(qid: str, new_text: str) -> list[str]:
    """The snippet with the line named by the correct choice replaced (same indentation)."""
    return replace_lines(snippet(qid), {correct_line(qid): new_text})


def reference_attention(q_, k_, v_, allowed=None):
    scores = q_ @ k_.transpose(-2, -1) / q_.shape[-1] ** 0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v_


def causal(n: int, s: int | None = None) -> torch.Tensor:
    """True = may attend, aligned bottom-right (query i is position s - n + i)."""
    s = n if s is None else s
    return torch.ones(n, s, dtype=torch.bool).tril(diagonal=s - n)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    """torch.testing.assert_close without its import cost (it pulls in torch.distributed)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (actual - expected).abs().max()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def en_text(question: dict) -> str:
    """Every English text of a question, for checking what it mentions."""
    parts = [question["prompt"]["en"], question["explanation"]["en"], question.get("code", "")]
    parts += [c["en"] for c in question.get("choices", [])]
    if "model_answer" in question:
        parts.append(question["model_answer"]["en"])
    return "\n".join(parts)


# ---------------------------------------------------------------- the bank's shape and form

EXPECTED = {  # topic -> (number of questions, minimum numeric, minimum code, minimum cards)
    "efficient-attention": (30, 6, 3, 4),
    "inference": (23, 9, 3, 3),
    "architecture": (26, 7, 5, 4),
}


def test_each_topic_has_the_promised_mix():
    for topic, prefix in TOPICS.items():
        data = _load(topic)
        assert data["format_version"] == 1 and data["topic"] == topic
        questions = data["questions"]
        kinds = Counter(x["kind"] for x in questions)
        total, numeric, code, cards = EXPECTED[topic]
        assert len(questions) == total, topic
        assert kinds["numeric"] >= numeric and kinds["code"] >= code and kinds["card"] >= cards, (topic, kinds)
        assert [x["id"] for x in questions] == [f"{prefix}-{i:02d}" for i in range(1, total + 1)]
        for x in questions:
            assert x["tags"] and set(x["tags"]) <= TAGS, x["id"]
            assert len(set(x["tags"])) == len(x["tags"]), x["id"]
            assert x["difficulty"] in (1, 2, 3), x["id"]
            for field in ("prompt", "explanation", "model_answer", "unit"):
                if field in x:
                    assert x[field]["en"].strip() and x[field]["zh"].strip(), (x["id"], field)
            for choice in x.get("choices", []):
                assert choice["en"].strip() and choice["zh"].strip(), x["id"]


def test_the_depth_questions_are_there():
    """At least 30 new questions (beyond the 13 per file there were), of every kind asked for."""
    new = [x for qid, x in BANK.items() if int(qid.split("-")[1]) > 13]
    kinds = Counter(x["kind"] for x in new)
    assert len(new) >= 30 and kinds["numeric"] >= 10 and kinds["code"] >= 4 and kinds["card"] >= 4, kinds
    for tag in ("mla", "paged-attention", "continuous-batching", "linear-attention", "kv-compression",
                "normalization", "flops", "attention-sinks", "speculative-decoding"):
        assert any(tag in x["tags"] for x in BANK.values()), tag


def _single_answer(x: dict) -> bool:
    return x["kind"] == "single" or (x["kind"] == "code" and x.get("select") == "single")


def _multi_answer(x: dict) -> bool:
    return x["kind"] == "multi" or (x["kind"] == "code" and x.get("select") == "multi")


def test_form_gives_nothing_away():
    """Across the three files: the key is the strictly longest choice (English) in at most 35%
    of single-answer questions, keys use every position a-d, 40-60% of bool answers are true,
    and multi-answer questions have 2, 3 and 4 keys."""
    singles = [x for x in BANK.values() if _single_answer(x)]
    longest = []
    for x in singles:
        lengths = [len(c["en"]) for c in x["choices"]]
        key = ord(x["answer"]) - ord("a")
        if all(lengths[key] > n for i, n in enumerate(lengths) if i != key):
            longest.append(x["id"])
    assert len(longest) <= 0.35 * len(singles), longest
    assert set(Counter(x["answer"] for x in singles)) == set("abcd")
    bools = [x["answer"] for x in BANK.values() if x["kind"] == "bool"]
    assert 0.40 <= sum(bools) / len(bools) <= 0.60, bools
    assert {2, 3, 4} <= {len(x["answer"]) for x in BANK.values() if _multi_answer(x)}


@pytest.mark.parametrize("qid", [i for i, x in BANK.items() if x["kind"] == "numeric"])
def test_numeric_prompts_state_tolerance_and_units(qid):
    x = q(qid)
    en, zh = x["prompt"]["en"], x["prompt"]["zh"]
    if x["tolerance"] == 0:
        assert re.search(r"\bexact\b", en) and "精确" in zh, qid
    else:
        assert x["tolerance"] == 0.01 and "1%" in en and "1%" in zh, qid
    if abs(x["answer"]) > 10_000:
        assert x["tolerance"] == 0.01 or ("exact" in en and "精确" in zh), qid
    base = re.compile(r"[KMGT]iB|10\^\d|2\^\d|1000|1024")
    for text in (en + " " + x.get("unit", {}).get("en", ""), zh + " " + x.get("unit", {}).get("zh", "")):
        if re.search(r"\bbytes?\b|字节|(?<![A-Za-z])[KMGT]i?B\b", text):
            assert base.search(text), (qid, text)


@pytest.mark.parametrize("qid", [i for i, x in BANK.items() if x["kind"] == "numeric"])
def test_numeric_answer_is_the_formula(qid):
    question = q(qid)
    assert math.isclose(answer_of(qid), question["answer"], rel_tol=1e-12), qid


@pytest.mark.parametrize("qid", [i for i, x in BANK.items() if x["kind"] == "code"])
def test_code_snippets_compile_and_name_existing_lines(qid):
    lines = snippet(qid)
    compile("\n".join(lines), qid, "exec")
    for choice in q(qid)["choices"]:
        n = int(re.match(r"Line (\d+):", choice["en"]).group(1))
        assert 1 <= n <= len(lines) and lines[n - 1].strip(), (qid, n)
        assert choice["zh"].startswith(f"第 {n} 行"), (qid, choice["zh"])


MISTAKE_IDEAS = {  # mistake key -> what a question must say about it (English, regex)
    "full-score-matrix": r"(never|not) (materialis|written|write)|never leave|never holds? .*N×N|full score matrix",
    "online-softmax-no-rescale": r"exp\(m_old − m_new\)|exp\(m - m_new\)|rescal",
    "online-softmax-not-normalised": r"divid\w*[^.]*(running sum|by ℓ|by l\b|normaliser)",
    "cache-overwritten": r"overwrit",
    "queries-cached": r"[Qq]ueries are (never|not) cached|[Ee]arlier queries are never",
    "chunk-causal-missing": r"(chunk|several new tokens)[^.]*causal mask|causal mask within",
    "post-norm": r"post-norm",
    "no-residual": r"[Ww]ithout the x \+|residual is missing|no skip path",
    "residual-from-normalized": r"un-normalised x|raw x|raw, un-normalised x",
    "same-layernorm": r"own LayerNorm|separate LayerNorm|two separate (norms|LayerNorms)",
    "relu-not-gelu": r"ReLU[\s\S]*GELU|GELU[\s\S]*ReLU",
    "gelu-tanh": r"tanh",
    "dropout-in-eval": r"eval",
    "fresh-layernorm": r"inside forward|built inside|fresh",
}


@pytest.mark.parametrize("key", sorted(MISTAKE_IDEAS))
def test_each_mistake_brings_back_two_questions_that_teach_it(key):
    table = tomllib.loads((QUESTIONS_DIR / "mistakes.toml").read_text(encoding="utf-8"))["mistakes"]
    if isinstance(table, list):  # format 2: [[mistakes]] entries with key, says and tags
        table = {entry["key"]: entry["tags"] for entry in table}
    tags = set(table[key])
    teaching = [qid for qid, x in BANK.items()
                if tags <= set(x["tags"]) and re.search(MISTAKE_IDEAS[key], en_text(x))]
    assert len(teaching) >= 2, (key, tags, teaching)


# ---------------------------------------------------------------- efficient-attention: tiles


def test_eff_02_eff_19_causal_tiles_and_the_work_saved():
    # tiny analogue: count, from a real causal mask, the tiles with any allowed entry
    n, block = 12, 4
    allowed = causal(n)
    tiles = allowed.view(n // block, block, n // block, block).any(dim=(1, 3))
    assert tiles.sum().item() == with_params("eff-02", n=n, block=block) == 6
    # full size: a tile (query block a, key block b) is needed iff b <= a
    t = q("eff-02")["params"]["n"] // q("eff-02")["params"]["block"]
    blocks = torch.arange(t)
    needed = (blocks[None, :] <= blocks[:, None]).sum().item()
    assert needed == answer_of("eff-02") == 2080 and needed / t**2 == pytest.approx(0.5078, abs=1e-4)
    assert t * t - needed == 2016 and (blocks[None, :] == blocks[:, None]).sum() == 64


def causal_tiled_fixed():
    mask = ('s = (q[i:i + block] @ k[j:j + block].T * scale).masked_fill(torch.arange(j, j + k[j:j + block].shape[0])'
            ' > torch.arange(i, i + q[i:i + block].shape[0])[:, None], float("-inf"))')
    return run_snippet(patched("eff-20", mask))["causal_tiled"]


def test_eff_20_diagonal_tile_needs_the_mask_and_skipping_the_rest_is_exact():
    assert "k[j:j + block].T * scale" in snippet("eff-20")[correct_line("eff-20") - 1]
    torch.manual_seed(0)
    t, d = 10, 4  # not a multiple of the block: a short last block
    q_, k_, v_ = (torch.randn(t, d, dtype=torch.float64) for _ in range(3))
    expected = reference_attention(q_, k_, v_, causal(t))
    buggy = run_snippet(snippet("eff-20"))["causal_tiled"]
    assert not torch.allclose(buggy(q_, k_, v_), expected)
    k2, v2 = k_.clone(), v_.clone()
    k2[1], v2[1] = 0.0, 5.0  # change token 1: the buggy output at token 0 moves (leakage)
    assert not torch.allclose(buggy(q_, k2, v2)[0], buggy(q_, k_, v_)[0])
    fixed = causal_tiled_fixed()
    assert_close(fixed(q_, k_, v_), expected)  # tiles above the diagonal skipped: still exact
    assert_close(fixed(q_, k2, v2)[0], fixed(q_, k_, v_)[0])
    # visiting every tile (the first distractor) with the mask gives the same result: skipping is exact
    every = run_snippet(replace_lines(patched("eff-20", causal_tiled_src_line()), {9: "for j in range(0, T, block):"}))
    assert_close(every["causal_tiled"](q_, k_, v_), expected)
    assert not torch.isnan(fixed(q_, k_, v_)).any()  # -inf as the start of m is safe


def causal_tiled_src_line():
    return ('s = (q[i:i + block] @ k[j:j + block].T * scale).masked_fill(torch.arange(j, j + k[j:j + block].shape[0])'
            ' > torch.arange(i, i + q[i:i + block].shape[0])[:, None], float("-inf"))')


# ---------------------------------------------------------------- efficient-attention: FlashAttention


def flash1_forward(q_, k_, v_, m_sram):
    """FlashAttention-1's Algorithm 1 for one head: key/value blocks outside, query blocks inside,
    the output kept normalised after every block. Returns the output and how many times the
    whole of Q was loaded."""
    n, d = q_.shape
    b_c = math.ceil(m_sram / (4 * d))
    b_r = min(math.ceil(m_sram / (4 * d)), d)
    scale = d ** -0.5
    out = torch.zeros_like(v_)
    l_ = torch.zeros(n, 1, dtype=q_.dtype)
    m_ = torch.full((n, 1), float("-inf"), dtype=q_.dtype)
    q_rows_loaded = 0
    for j in range(0, n, b_c):
        k_j, v_j = k_[j:j + b_c], v_[j:j + b_c]
        for i in range(0, n, b_r):
            q_i, o_i, l_i, m_i = q_[i:i + b_r], out[i:i + b_r], l_[i:i + b_r], m_[i:i + b_r]
            q_rows_loaded += q_i.shape[0]
            s = q_i @ k_j.T * scale
            m_t = s.amax(-1, keepdim=True)
            p = torch.exp(s - m_t)
            l_t = p.sum(-1, keepdim=True)
            m_new = torch.maximum(m_i, m_t)
            l_new = torch.exp(m_i - m_new) * l_i + torch.exp(m_t - m_new) * l_t
            out[i:i + b_r] = (l_i * torch.exp(m_i - m_new) * o_i + torch.exp(m_t - m_new) * (p @ v_j)) / l_new
            l_[i:i + b_r], m_[i:i + b_r] = l_new, m_new
    return out, q_rows_loaded / n, (m_, l_)


def test_eff_16_flash1_reads_q_once_per_key_block():
    torch.manual_seed(0)
    n, d, m_sram = 64, 4, 256  # B_c = 16 keys per block, so 4 passes over Q
    q_, k_, v_ = (torch.randn(n, d, dtype=torch.float64) for _ in range(3))
    out, q_reads, _ = flash1_forward(q_, k_, v_, m_sram)
    assert_close(out, reference_attention(q_, k_, v_))
    assert q_reads == with_params("eff-16", n=n, d=d, m=m_sram) == 4
    p = q("eff-16")["params"]
    assert math.ceil(p["m"] / (4 * p["d"])) == 256 and answer_of("eff-16") == 16
    # the HBM traffic grows like N²d²/M: quadrupling N quadruples the passes times the rows
    _, reads_4n, _ = flash1_forward(*(torch.randn(4 * n, d, dtype=torch.float64) for _ in range(3)), m_sram)
    assert reads_4n == 4 * q_reads


def test_eff_14_eff_15_statistics_logsumexp_and_recomputation_in_backward():
    torch.manual_seed(0)
    n, d = 32, 8
    q_, k_, v_ = (torch.randn(n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, _, (m_, l_) = flash1_forward(q_.detach(), k_.detach(), v_.detach(), 128)
    scale = d ** -0.5
    s = (q_ @ k_.T * scale).detach()
    lse = m_ + torch.log(l_)  # FlashAttention-2 keeps only this, one number per row
    assert_close(lse.squeeze(-1), torch.logsumexp(s, dim=-1))
    # the backward pass recomputes P from Q, K and the logsumexp; no N×N tensor was saved
    p = torch.exp(s - lse)
    assert_close(p, s.softmax(-1))
    d_out = torch.randn(n, d, dtype=torch.float64)
    d_v = p.T @ d_out
    d_p = d_out @ v_.detach().T
    d_s = p * (d_p - (d_out * out).sum(-1, keepdim=True))
    d_q, d_k = d_s @ k_.detach() * scale, d_s.T @ q_.detach() * scale
    reference_attention(q_, k_, v_).backward(d_out)
    for mine, autograd in ((d_q, q_.grad), (d_k, k_.grad), (d_v, v_.grad)):
        assert_close(mine, autograd)
    # FlashAttention-2's deferred normalisation: un-normalised accumulator, one division at the end
    acc, l2, m2 = torch.zeros(n, d, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.float64), torch.full((n, 1), float("-inf"), dtype=torch.float64)
    for j in range(0, n, 8):
        s_j = s[:, j:j + 8]
        m_new = torch.maximum(m2, s_j.amax(-1, keepdim=True))
        p_j = torch.exp(s_j - m_new)
        l2 = l2 * torch.exp(m2 - m_new) + p_j.sum(-1, keepdim=True)
        acc = acc * torch.exp(m2 - m_new) + p_j @ v_.detach()[j:j + 8]
        m2 = m_new
    assert_close(acc / l2, out)
    assert not torch.allclose(acc, out)  # without the final division it is not attention
    # exact to rounding in fp64, far better than the 1e-3 of the last distractor
    assert (out - reference_attention(q_, k_, v_).detach()).abs().max() < 1e-12


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
    # starting the running max at -inf gives no NaN (the distractor on line 4)
    assert torch.exp(torch.tensor(float("-inf")) - torch.tensor(3.0)) == 0


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


# ---------------------------------------------------------------- efficient-attention: sliding window


def test_eff_07_eff_30_sliding_window_span_composes_over_layers():
    layers, window, n = 3, 4, 20
    i = torch.arange(n)
    one_layer = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] <= window)  # self + W back
    reach = torch.eye(n, dtype=torch.bool)
    for depth in range(1, layers + 1):
        reach = (one_layer.int() @ reach.int()) > 0
        # after `depth` layers, exactly depth * W positions back are reachable, never directly beyond W
        assert (i[:, None] - i[None, :])[reach].max().item() == depth * window
    assert (i[:, None] - i[None, :])[one_layer].max().item() == window  # each layer attends only W back
    assert with_params("eff-07", layers=layers, window=window) == layers * window
    # Mistral 7B v0.1: 20,000 tokens back needs ceil(20000 / 4096) = 5 layers of hops
    assert math.ceil(20_000 / 4096) == 5 <= q("eff-07")["params"]["layers"]
    # "131k" is graded right: within the question's 1%
    assert abs(131_000 - q("eff-07")["answer"]) <= q("eff-07")["tolerance"] * q("eff-07")["answer"]


# ---------------------------------------------------------------- efficient-attention: MLA


def test_eff_21_inf_17_mla_cache_sizes():
    p = q("eff-21")["params"]
    per_layer = p["kv_lora_rank"] + p["rope_dim"]
    assert per_layer == 576 and 2 * answer_of("eff-21") * p["head_dim"] == per_layer and answer_of("eff-21") == 2.25
    assert 2 * 128 * 128 / per_layer == pytest.approx(56.9, abs=0.05)  # "about 57× more" for MHA
    # the cache as MLA keeps it, in bf16 on the meta device: a latent and one shared RoPE key per layer
    pi = q("inf-17")["params"]
    cache = [(torch.empty(1, pi["kv_lora_rank"], dtype=torch.bfloat16, device="meta"),
              torch.empty(1, pi["rope_dim"], dtype=torch.bfloat16, device="meta")) for _ in range(pi["layers"])]
    total = sum(c.nbytes + r.nbytes for c, r in cache)
    assert total == 69_120 and total / 1024 == answer_of("inf-17") == 67.5
    mha = 2 * 128 * 128 * 2 * pi["layers"]
    assert mha == 3_932_160 and mha / 2**20 == 3.75


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the last dimension (pairs of adjacent features), positions `pos`."""
    d = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    angle = pos[:, None].to(x.dtype) * theta[None, :]
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def test_eff_22_eff_23_mla_absorption_and_why_rope_is_decoupled():
    torch.manual_seed(0)
    t, d_model, d_c, heads, d_h, d_r = 6, 32, 16, 4, 8, 4
    dt = torch.float64
    h = torch.randn(t, d_model, dtype=dt)
    w_dkv = torch.randn(d_c, d_model, dtype=dt) / d_model ** 0.5      # down-projection to the latent
    w_uk = torch.randn(heads, d_h, d_c, dtype=dt) / d_c ** 0.5        # per-head up-projections
    w_uv = torch.randn(heads, d_h, d_c, dtype=dt) / d_c ** 0.5
    w_q = torch.randn(heads, d_h, d_model, dtype=dt) / d_model ** 0.5
    w_qr = torch.randn(heads, d_r, d_model, dtype=dt) / d_model ** 0.5  # decoupled RoPE query, per head
    w_kr = torch.randn(d_r, d_model, dtype=dt) / d_model ** 0.5         # decoupled RoPE key, shared
    w_o = torch.randn(d_model, heads * d_h, dtype=dt) / (heads * d_h) ** 0.5
    pos = torch.arange(t)
    c = h @ w_dkv.T                                   # (t, d_c): the cached latent
    k_r = rope(h @ w_kr.T, pos)                       # (t, d_r): the cached, shared RoPE key
    assert c.shape[1] + k_r.shape[1] == d_c + d_r     # all that is cached per token
    allowed = causal(t)

    # explicit: materialise every head's keys and values
    k = torch.einsum("hec,tc->hte", w_uk, c)
    v = torch.einsum("hec,tc->hte", w_uv, c)
    q_c = torch.einsum("hed,td->hte", w_q, h)
    q_r = rope(torch.einsum("hed,td->hte", w_qr, h), pos)
    scale = (d_h + d_r) ** -0.5
    scores = (q_c @ k.transpose(-2, -1) + q_r @ k_r.T) * scale
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out_explicit = (weights @ v).transpose(0, 1).reshape(t, heads * d_h) @ w_o.T
    assert not torch.allclose(k[0], k[1])  # heads keep their own keys (choice d)

    # absorbed: W_UK folded into the query, W_UV into the output projection; only c and k_r are read
    q_latent = torch.einsum("hec,hte->htc", w_uk, q_c)           # (W_UKᵀ q) per head
    scores_abs = (q_latent @ c.T + q_r @ k_r.T) * scale
    assert_close(scores_abs, scores)
    weights_abs = scores_abs.masked_fill(~allowed, float("-inf")).softmax(-1)
    w_ov = torch.einsum("dhe,hec->hdc", w_o.view(d_model, heads, d_h), w_uv)   # W_O·W_UV per head
    out_abs = torch.einsum("hts,sc,hdc->td", weights_abs, c, w_ov)
    assert_close(out_abs, out_explicit)

    # with RoPE on the up-projected keys there is no single absorbed matrix: the rotation between
    # W_Q and W_UK depends on the positions, so the same (query, key) vectors score differently
    k_rot = rope(k[0], pos)
    q_rot = rope(q_c[0], pos)
    m_abs = w_q[0].T @ w_uk[0]                        # what absorbing would precompute
    assert not torch.allclose(q_rot @ k_rot.T, h @ m_abs @ c.T)
    # and rotating the latent before the up-projection is not the same as rotating the keys
    assert not torch.allclose(torch.einsum("ec,tc->te", w_uk[0], rope(c, pos)), k_rot)


# ---------------------------------------------------------------- efficient-attention: linear attention


def test_eff_25_eff_26_linear_attention_orders_agree_and_their_flops():
    torch.manual_seed(0)
    n, d = 64, 8
    q_, k_, v_ = (torch.randn(n, d, dtype=torch.float64) for _ in range(3))
    phi_q, phi_k = F.elu(q_) + 1, F.elu(k_) + 1
    assert (phi_q > 0).all() and (phi_k > 0).all()   # no score is zero, no weight negative
    quadratic = (phi_q @ phi_k.T) @ v_                # builds an N×N matrix
    linear = phi_q @ (phi_k.T @ v_)                   # builds a d×d one
    assert_close(linear, quadratic)
    assert_close(linear / (phi_q @ phi_k.sum(0)[:, None]), quadratic / (phi_q @ phi_k.T).sum(-1, keepdim=True))
    flops = lambda a, b: 2 * a.shape[0] * a.shape[1] * b.shape[1]
    softmax_flops = flops(q_, k_.T) + flops(torch.empty(n, n), v_)
    linear_flops = flops(phi_k.T, v_) + flops(phi_q, torch.empty(d, d))
    assert softmax_flops / linear_flops == with_params("eff-26", n=n, d=d) == n / d
    assert answer_of("eff-26") == 32768 / 128


def causal_linear_fixed():
    return run_snippet(patched("eff-27", "state = kv.cumsum(dim=0)"))["causal_linear_attention"]


def test_eff_27_causal_linear_attention_needs_running_sums():
    assert "kv.sum(dim=0" in snippet("eff-27")[correct_line("eff-27") - 1]
    torch.manual_seed(0)
    t, d, dv = 7, 4, 3
    q_, k_, v_ = torch.randn(t, d, dtype=torch.float64), torch.randn(t, d, dtype=torch.float64), torch.randn(t, dv, dtype=torch.float64)
    phi_q, phi_k = F.elu(q_) + 1, F.elu(k_) + 1
    sim = (phi_q @ phi_k.T) * causal(t)               # the quadratic, masked form
    expected = (sim @ v_) / sim.sum(-1, keepdim=True)
    fixed = causal_linear_fixed()
    assert_close(fixed(q_, k_, v_, eps=0.0), expected)
    buggy = run_snippet(snippet("eff-27"))["causal_linear_attention"]
    v2 = v_.clone()
    v2[-1] += 10.0                                    # change only the last token
    assert not torch.allclose(buggy(q_, k_, v2)[0], buggy(q_, k_, v_)[0])   # position 0 sees it
    assert_close(fixed(q_, k_, v2)[:-1], fixed(q_, k_, v_)[:-1])
    # the "consistent" distractor (z a full sum too) is non-causal linear attention: still leaks
    both_full = run_snippet(replace_lines(snippet("eff-27"), {6: "z = phi_k.sum(dim=0, keepdim=True)"}))
    assert not torch.allclose(both_full["causal_linear_attention"](q_, k_, v2)[0],
                              both_full["causal_linear_attention"](q_, k_, v_)[0])
    # the RNN view: one d×dv state updated per token gives the same outputs
    state, z, outs = torch.zeros(d, dv, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), []
    for i in range(t):
        state, z = state + phi_k[i][:, None] * v_[i][None, :], z + phi_k[i]
        outs.append(phi_q[i] @ state / (phi_q[i] @ z))
    assert_close(torch.stack(outs), expected)


def test_eff_28_a_fixed_state_cannot_store_more_than_d_pairs_exactly():
    torch.manual_seed(0)
    d, dv = 8, 8
    keys = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]   # d orthonormal keys
    values = torch.randn(d, dv, dtype=torch.float64)
    state = keys.T @ values                           # S = Σ k_j v_jᵀ
    assert_close(keys @ state, values)                # up to d orthogonal keys: exact recall
    many_keys, many_values = torch.randn(4 * d, d, dtype=torch.float64), torch.randn(4 * d, dv, dtype=torch.float64)
    best = torch.linalg.lstsq(many_keys, many_values).solution   # the best possible d×dv state
    assert (many_keys @ best - many_values).abs().max() > 0.1    # no state recalls 4d pairs exactly
    # softmax attention over a cache of all 4d pairs can pick one out: sharp scores recall it
    unit_keys = F.normalize(many_keys, dim=-1)
    recalled = (unit_keys[:1] @ unit_keys.T * 100.0).softmax(-1) @ many_values
    assert_close(recalled, many_values[:1], atol=1e-3, rtol=1e-3)


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


def test_inf_02_llama2_7b_bytes_per_token():
    per_token = kv_cache_bytes(32, 32, 128, 1, 1, torch.float16, device="meta")
    assert per_token == 2 * 32 * 4096 * 2 == 524_288 == 512 * 1024


def test_inf_03_04_14_query_heads_do_not_enter_the_cache():
    assert q("inf-03")["params"]["kv_heads"] == 8
    per_token = kv_cache_bytes(80, 8, 128, 1, 1, torch.float16, device="meta")
    assert per_token == 320 * 1024
    assert 40 * 2**30 // per_token == answer_of("inf-04") == 131072
    assert 40 * 2**30 // kv_cache_bytes(80, 64, 128, 1, 1, torch.float16, device="meta") == 16384
    p = q("inf-14")["params"]
    full = kv_cache_bytes(p["layers"], p["kv_heads"], p["head_dim"], p["seq_len"], 1, torch.bfloat16, device="meta")
    assert full / 2**30 == answer_of("inf-14") == 40
    assert kv_cache_bytes(80, 64, 128, p["seq_len"], 1, torch.bfloat16, device="meta") / 2**30 == 320


def test_inf_05_memory_bound_decoding():
    weight_bytes = 8e9 * 2
    assert 3200e9 / weight_bytes == answer_of("inf-05") == 200


def decode_all(decode_step, x, w_q, w_k, w_v):
    cache, outputs = {}, []
    for t in range(x.shape[1]):
        out, cache = decode_step(x[:, t : t + 1], w_q, w_k, w_v, cache)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


def decode_step_fixed():
    return run_snippet(patched("inf-06", 'cache["k"], cache["v"] = k, v'))["decode_step"]


def test_inf_06_cache_overwritten_instead_of_grown():
    assert 'cache["k"], cache["v"] = k[:, -1:], v[:, -1:]' in snippet("inf-06")[correct_line("inf-06") - 1]
    torch.manual_seed(0)
    x, w_q, w_k, w_v = torch.randn(2, 6, 8), torch.randn(8, 8), torch.randn(8, 8), torch.randn(8, 8)
    expected = reference_attention(x @ w_q, x @ w_k, x @ w_v, causal(6))  # from scratch, no cache
    buggy = decode_all(run_snippet(snippet("inf-06"))["decode_step"], x, w_q, w_k, w_v)
    assert_close(buggy[:, :2], expected[:, :2])  # the first two tokens are right
    assert not torch.allclose(buggy[:, 2], expected[:, 2])  # from the third on they are not
    # no queries cached and no mask needed: incremental decoding equals full causal attention
    assert_close(decode_all(decode_step_fixed(), x, w_q, w_k, w_v), expected)
    # the softmax over dim=-2 of size 1 (the last distractor) gives every key weight 1
    assert torch.equal(torch.randn(1, 1, 5).softmax(dim=-2), torch.ones(1, 1, 5))


def verify_fixed():
    mask = ("scores = (q @ k.transpose(-2, -1) / k.shape[-1] ** 0.5).masked_fill(~torch.ones(q.shape[1], "
            "k.shape[1], dtype=torch.bool).tril(diagonal=k.shape[1] - q.shape[1]), float('-inf'))")
    return run_snippet(patched("inf-07", mask))["verify_drafts"]


def test_inf_07_inf_23_verifying_drafts_needs_a_causal_mask_within_the_chunk():
    assert "scores = q @ k.transpose" in snippet("inf-07")[correct_line("inf-07") - 1]
    torch.manual_seed(0)
    b, p_len, g, c = 2, 5, 4, 8
    x = torch.randn(b, p_len + g, c)
    w_q, w_k, w_v = torch.randn(c, c), torch.randn(c, c), torch.randn(c, c)
    sequential = decode_all(decode_step_fixed(), x, w_q, w_k, w_v)[:, p_len:]   # drafts one at a time
    cache = {"k": x[:, :p_len] @ w_k, "v": x[:, :p_len] @ w_v}
    drafts = x[:, p_len:]
    buggy, grown = run_snippet(snippet("inf-07"))["verify_drafts"](drafts, w_q, w_k, w_v, dict(cache))
    assert not torch.allclose(buggy[:, 0], sequential[:, 0])   # draft 0 saw the later drafts
    assert_close(buggy[:, -1], sequential[:, -1])              # the last draft has no later drafts
    fixed, grown = verify_fixed()(drafts, w_q, w_k, w_v, dict(cache))
    assert_close(fixed, sequential)
    assert grown["k"].shape[1] == p_len + g                     # the cache grew: append, not overwrite
    # inf-23's masks, on the same scores: bottom-right causal is right, the distractors are not
    q_, k_, v_ = drafts @ w_q, torch.cat([cache["k"], drafts @ w_k], 1), torch.cat([cache["v"], drafts @ w_v], 1)
    assert_close(reference_attention(q_, k_, v_, causal(g, p_len + g)), sequential)
    from torch.nn.attention.bias import causal_lower_right
    assert_close(F.scaled_dot_product_attention(q_, k_, v_, attn_mask=causal_lower_right(g, p_len + g)), sequential)
    top_left = F.scaled_dot_product_attention(q_, k_, v_, is_causal=True)
    assert not torch.allclose(top_left, sequential)
    self_only = torch.cat([torch.ones(g, p_len, dtype=torch.bool), torch.eye(g, dtype=torch.bool)], dim=1)
    assert not torch.allclose(reference_attention(q_, k_, v_, self_only)[:, 1:], sequential[:, 1:])
    assert not torch.allclose(reference_attention(q_, k_, v_)[:, 0], sequential[:, 0])   # no mask


def test_inf_09_continuous_batching_frees_slots_at_every_step():
    """A toy scheduler: requests of different lengths on 2 slots, static vs iteration-level."""
    lengths, slots = [8, 2, 2, 2, 2, 8], 2

    def static():
        steps, queue = 0, list(lengths)
        while queue:
            batch, queue = queue[:slots], queue[slots:]
            steps += max(batch)          # the batch runs until its longest request ends
        return steps

    def continuous():
        steps, queue, running = 0, list(lengths), []
        while queue or running:
            while queue and len(running) < slots:
                running.append(queue.pop(0))   # a waiting request joins at the next step
            running = [r - 1 for r in running]
            running = [r for r in running if r > 0]   # finished requests leave at once
            steps += 1
        return steps

    assert (static(), continuous()) == (18, 16)
    # idle slot-steps: 2·18 − 24 = 12 with static batching, 2·16 − 24 = 8 with continuous batching
    assert slots * static() - sum(lengths) > slots * continuous() - sum(lengths)


def test_inf_15_int4_kv_with_group_scales():
    torch.manual_seed(0)
    p = q("inf-15")["params"]
    values = torch.randn(2 * p["layers"] * p["kv_heads"] * p["head_dim"], dtype=torch.float16)
    groups = values.float().view(-1, p["group"])
    scale = (groups.abs().amax(-1, keepdim=True) / 7).half()
    codes = (torch.round(groups / scale.float()).clamp(-8, 7) + 8).to(torch.uint8)   # 16 levels
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)                                  # two per byte
    stored = packed.nbytes + scale.nbytes
    assert stored == 139_264 and stored / 1024 == answer_of("inf-15") == 136
    assert 2 * values.numel() / stored == pytest.approx(3.76, abs=0.01)     # vs fp16: not quite 4×
    low, high = (packed & 0xF).int() - 8, (packed >> 4).int() - 8
    restored = torch.stack((low, high), -1).flatten(-2).float() * scale.float()
    assert (restored - groups).abs().max() > 0                             # lossy
    assert (restored - groups).abs().max() <= scale.float().max() / 2 + 1e-3


def test_inf_16_rolling_buffer_equals_sliding_window_attention():
    torch.manual_seed(0)
    t, w, c = 12, 4, 6
    x = torch.randn(t, c, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(c, c, dtype=torch.float64) for _ in range(3))
    i = torch.arange(t)
    window = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < w)     # the last W positions
    expected = reference_attention(x @ w_q, x @ w_k, x @ w_v, window)
    buf_k, buf_v = torch.zeros(w, c, dtype=torch.float64), torch.zeros(w, c, dtype=torch.float64)
    outs = []
    for pos in range(t):
        buf_k[pos % w], buf_v[pos % w] = x[pos] @ w_k, x[pos] @ w_v   # overwrite the slot that left
        filled = min(pos + 1, w)
        outs.append(reference_attention((x[pos] @ w_q)[None], buf_k[:filled], buf_v[:filled])[0])
    assert_close(torch.stack(outs), expected)   # slot order does not matter: attention is a set op
    p = q("inf-16")["params"]
    rolling = kv_cache_bytes(p["layers"], p["kv_heads"], p["head_dim"], p["window"], 1, torch.float16, "meta")
    full = kv_cache_bytes(p["layers"], p["kv_heads"], p["head_dim"], p["seq_len"], 1, torch.float16, "meta")
    assert rolling / 2**20 == answer_of("inf-16") == 512 and full == 8 * rolling == 4 * 2**30


def test_inf_18_static_reservation_vs_paged_blocks():
    p = q("inf-18")["params"]
    assert answer_of("inf-18") == (4096 - 1000) / 2 == 1548
    blocks = math.ceil(p["used"] / 16)
    assert blocks == 63 and (blocks * 16 - p["used"]) * p["kib_per_token"] / 1024 == 4


def test_inf_19_quantisation_halves_and_eviction_is_not_exact():
    assert torch.empty(0, dtype=torch.int8).element_size() * 2 == torch.empty(0, dtype=torch.float16).element_size()
    torch.manual_seed(0)
    q_, k_, v_ = torch.randn(1, 8), torch.randn(64, 8), torch.randn(64, 8)
    assert not torch.allclose(reference_attention(q_, k_[-16:], v_[-16:]), reference_attention(q_, k_, v_), atol=1e-3)


def paged_fns(fixed: bool):
    lines = patched("inf-21", "block_table.append(free_blocks.pop())") if fixed else snippet("inf-21")
    ns = run_snippet(lines)
    return ns["append_kv"], ns["gather_kv"]


def test_inf_21_a_free_block_must_leave_the_free_list():
    assert "free_blocks[0]" in snippet("inf-21")[correct_line("inf-21") - 1]
    torch.manual_seed(0)
    heads, dim, bs = 2, 3, 4
    keys = {"A": torch.randn(10, heads, dim), "B": torch.randn(7, heads, dim)}
    for fixed in (False, True):
        append_kv, gather_kv = paged_fns(fixed)
        pool = torch.zeros(8, bs, heads, dim)
        free = list(range(8))
        tables, lens = {"A": [], "B": []}, {"A": 0, "B": 0}
        for step in range(10):  # the two sequences decode in turn
            for name in ("A", "B"):
                if lens[name] < len(keys[name]):
                    lens[name] = append_kv(pool, tables[name], lens[name], keys[name][lens[name]], free, block_size=bs)
        same = all(torch.equal(gather_kv(pool, tables[n], lens[n], block_size=bs), keys[n]) for n in keys)
        assert same == fixed
        if fixed:
            assert set(tables["A"]).isdisjoint(tables["B"]) and len(tables["A"]) == math.ceil(10 / bs)


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


def test_arch_05_arch_26_layernorm_created_in_forward_is_never_trained():
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
        for model in (block, fixed):
            for _ in range(2):  # two plain SGD steps (torch.optim is slow to import)
                model.zero_grad()
                model(torch.randn(2, 5, 8)).pow(2).mean().backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p -= 0.1 * p.grad
    finally:
        nn.LayerNorm.forward = original
    inline = [m for m in seen if m is not block.ln1 and m is not fixed.ln1 and m is not fixed.ln2]
    assert len(inline) == 2 and inline[0] is not inline[1]  # a fresh module on each call
    assert all(torch.equal(m.weight, torch.ones(8)) for m in inline)
    assert not torch.equal(fixed.ln2.weight, torch.ones(8))  # the one made in __init__ learned


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


def test_arch_09_layernorm_is_per_token_and_each_sublayer_has_its_own():
    torch.manual_seed(0)
    ln = nn.LayerNorm(8)
    x = torch.randn(3, 4, 8)
    y = x.clone()
    y[1:] *= 10  # change the rest of the batch
    y[0, 1:] += 5  # and the other tokens of the first sequence
    assert_close(ln(x)[0, 0], ln(y)[0, 0])
    assert_close(ln.train()(x), ln.eval()(x))
    layer = nn.TransformerEncoderLayer(8, 2, 16, norm_first=True)
    assert layer.norm1 is not layer.norm2 and layer.norm1.weight is not layer.norm2.weight


def test_arch_11_default_gelu_is_exact_and_gpt2_uses_tanh():
    x = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    assert_close(nn.GELU()(x), x * 0.5 * (1 + torch.erf(x / math.sqrt(2))), atol=1e-12, rtol=0)
    gpt2 = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert_close(nn.GELU(approximate="tanh")(x), gpt2, atol=1e-12, rtol=0)
    gap = (nn.GELU()(x) - gpt2).abs()
    assert 4e-4 < gap.max() < 5e-4 and abs(x[gap.argmax()].item() + 2.7) < 0.05
    assert (F.relu(x) - nn.GELU()(x)).abs().max() > 0.1  # ReLU is far further away


def copy_into_encoder_layer(ln1, ln2, attn, fc1, fc2, d, h):
    """An nn.TransformerEncoderLayer(norm_first=True, gelu, no dropout) with the given weights."""
    layer = nn.TransformerEncoderLayer(d, h, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    layer.self_attn.load_state_dict(attn.state_dict())
    for mine, theirs in ((ln1, layer.norm1), (ln2, layer.norm2), (fc1, layer.linear1), (fc2, layer.linear2)):
        theirs.load_state_dict(mine.state_dict())
    return layer.eval()


def randomise_norms(*norms):
    with torch.no_grad():
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)


def test_arch_14_residual_from_the_normalised_input():
    assert snippet("arch-14")[correct_line("arch-14") - 1].strip() == "x = self.ln1(x)"
    torch.manual_seed(0)
    d, h = 8, 2
    buggy = run_snippet(snippet("arch-14"))["PreNormBlock"](d, h).eval()
    fixed_lines = replace_lines(snippet("arch-14"), {11: "h = self.ln1(x)", 12: "x = x + self.attn(h, h, h, need_weights=False)[0]"})
    fixed = run_snippet(fixed_lines)["PreNormBlock"](d, h).eval()
    randomise_norms(buggy.ln1, buggy.ln2)
    fixed.load_state_dict(buggy.state_dict())
    reference = copy_into_encoder_layer(fixed.ln1, fixed.ln2, fixed.attn, fixed.ffn[0], fixed.ffn[2], d, h)
    x = torch.randn(2, 5, d)
    assert_close(fixed(x), reference(x))
    assert not torch.allclose(buggy(x), reference(x), atol=1e-3)
    # the distractor "reuse ln1 for the FFN" does not match either
    same_ln = run_snippet(replace_lines(fixed_lines, {13: "x = x + self.ffn(self.ln1(x))"}))["PreNormBlock"](d, h).eval()
    same_ln.load_state_dict(fixed.state_dict())
    assert not torch.allclose(same_ln(x), reference(x), atol=1e-3)


def test_arch_15_three_deviations_from_the_encoder_layer():
    question = q("arch-15")
    lines = snippet("arch-15")
    keys = {int(re.match(r"Line (\d+):", question["choices"][ord(a) - 97]["en"]).group(1)) for a in question["answer"]}
    assert keys == {9, 14, 15}
    fixes = {9: "self.act = nn.GELU()",
             14: "x = x + F.dropout(self.attn(h, h, h, need_weights=False)[0], self.p, self.training)",
             15: "h = self.ln2(x)"}
    torch.manual_seed(0)
    d, h = 8, 2
    x = torch.randn(2, 5, d)

    def build(src):
        block = run_snippet(src)["Block"](d, h, p=0.3)
        randomise_norms(block.ln1, block.ln2)
        return block.eval()

    fixed = build(replace_lines(lines, fixes))
    reference = copy_into_encoder_layer(fixed.ln1, fixed.ln2, fixed.attn, fixed.fc1, fixed.fc2, d, h)
    assert_close(fixed(x), reference(x))
    assert_close(fixed(x), fixed(x))  # deterministic in eval
    for left_out in fixes:  # each deviation alone breaks the match
        partial = build(replace_lines(lines, {n: t for n, t in fixes.items() if n != left_out}))
        partial.load_state_dict(fixed.state_dict())
        assert not torch.allclose(partial(x), reference(x), atol=1e-6), left_out
    # the last distractor: the encoder layer does drop inside its FFN (and `fixed`, which adds the raw x, matches it)
    layer = nn.TransformerEncoderLayer(d, h, 4 * d, dropout=0.3, norm_first=True)
    assert isinstance(layer.dropout, nn.Dropout) and "self.dropout(self.activation(self.linear1(x)))" in inspect.getsource(type(layer)._ff_block)


def test_arch_16_arch_17_llama2_7b_parameters():
    p = q("arch-17")["params"]
    d, ff, vocab = p["d"], p["ff"], p["vocab"]
    meta = dict(bias=False, device="meta")
    ffn = nn.ModuleDict(dict(gate=nn.Linear(d, ff, **meta), up=nn.Linear(d, ff, **meta), down=nn.Linear(ff, d, **meta)))
    assert n_params(ffn) == answer_of("arch-16") == with_params("arch-16", d=d, ff=ff) == 135_266_304
    assert 256 * math.ceil(int(2 * 4 * d / 3) / 256) == ff  # 2/3 of 4d, rounded up to a multiple of 256
    layer = nn.ModuleDict(dict(
        q=nn.Linear(d, d, **meta), k=nn.Linear(d, d, **meta), v=nn.Linear(d, d, **meta), o=nn.Linear(d, d, **meta),
        ffn=ffn, norm1=nn.RMSNorm(d, device="meta"), norm2=nn.RMSNorm(d, device="meta")))
    total = (p["layers"] * n_params(layer) + n_params(nn.RMSNorm(d, device="meta"))
             + n_params(nn.Embedding(vocab, d, device="meta")) + n_params(nn.Linear(d, vocab, **meta)))
    assert total == answer_of("arch-17") == 6_738_415_616
    assert n_params(nn.RMSNorm(d, device="meta")) * 2 == n_params(nn.LayerNorm(d, device="meta"))


def test_arch_18_rmsnorm_against_torch():
    torch.manual_seed(0)
    d, eps = 16, 1e-6
    x = torch.randn(3, 5, d, dtype=torch.float64) + 2.0   # not zero-mean
    norm = nn.RMSNorm(d, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    by_hand = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight
    assert_close(norm(x), by_hand)
    ln = nn.LayerNorm(d, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(norm.weight)
    assert not torch.allclose(norm(x), ln(x), atol=1e-3)             # it does not re-centre
    centred = x - x.mean(-1, keepdim=True)
    assert_close(norm(centred), ln(centred), atol=1e-6, rtol=1e-6)   # zero-mean input: same as LayerNorm
    # "subtract the mean, then divide by the RMS" is just LayerNorm
    assert_close(centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * ln.weight, ln(x))
    y = x.clone()
    y[1:] *= 7
    assert_close(norm(y)[0], norm(x)[0])                             # per token, no batch statistics
    assert n_params(norm) == d and n_params(ln) == 2 * d


def test_arch_19_rmsnorm_sum_instead_of_mean():
    assert ".sum(dim=-1" in snippet("arch-19")[correct_line("arch-19") - 1]
    torch.manual_seed(0)
    d = 64
    x = torch.randn(4, d, dtype=torch.float64)
    reference = nn.RMSNorm(d, eps=1e-6, dtype=torch.float64)
    buggy = run_snippet(snippet("arch-19"))["RMSNorm"](d).double()
    fixed = run_snippet(patched("arch-19", "ms = x.pow(2).mean(dim=-1, keepdim=True)"))["RMSNorm"](d).double()
    assert_close(fixed(x), reference(x))
    assert_close(buggy(x) * math.sqrt(d), reference(x), atol=1e-6, rtol=1e-6)   # √d too small
    # eps inside the square root, as line 10 has it, is what torch.nn.RMSNorm does
    tiny = torch.full((1, d), 1e-4, dtype=torch.float64)
    outside = tiny / (torch.sqrt(tiny.pow(2).mean(-1, keepdim=True)) + 1e-6)
    assert_close(fixed(tiny), reference(tiny)) and not torch.allclose(outside, reference(tiny))


def test_arch_20_parallel_block_shares_the_input_and_fuses_matmuls():
    torch.manual_seed(0)
    d, h = 8, 2
    ln = nn.LayerNorm(d)
    attn = nn.MultiheadAttention(d, h, batch_first=True)
    fc1, fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
    ffn = lambda t: fc2(F.gelu(fc1(t)))
    x = torch.randn(2, 5, d)
    n = ln(x)
    parallel = x + attn(n, n, n, need_weights=False)[0] + ffn(n)
    # both branches read ln(x): their input projections are one matmul with the weights stacked
    fused_w = torch.cat([attn.in_proj_weight, fc1.weight])
    fused_b = torch.cat([attn.in_proj_bias, fc1.bias])
    fused = n @ fused_w.T + fused_b
    assert_close(fused[..., 3 * d:], fc1(n), atol=1e-6)
    assert_close(fused[..., :3 * d], n @ attn.in_proj_weight.T + attn.in_proj_bias, atol=1e-6)
    ln2 = nn.LayerNorm(d)
    mid = x + attn(n, n, n, need_weights=False)[0]
    sequential = mid + ffn(ln2(mid))
    assert not torch.allclose(parallel, sequential, atol=1e-3)   # a different block


def test_arch_21_arch_22_whole_model_flops():
    assert answer_of("arch-21") == pytest.approx(5.88e23, rel=1e-12)
    p = q("arch-22")["params"]
    assert answer_of("arch-22") == 12 * p["d_model"] / p["n_ctx"] == 72
    assert 1 / 72 == pytest.approx(0.0139, abs=1e-4)       # "only about 1.4%"
    assert 12 * 768 / 32768 == pytest.approx(0.28, abs=0.01)
    # N ≈ 12·n_layer·d²: a bias-free encoder layer has exactly 12d² weights besides its LayerNorm gains
    d = 16
    layer = nn.TransformerEncoderLayer(d, 2, 4 * d, bias=False, device="meta")
    assert n_params(layer) - 2 * d == 12 * d * d
    # Kaplan's 2·n_ctx·d per layer per token: QKᵀ and weights·V over the keys a causal token sees
    n_ctx, width = 16, 8
    seen = causal(n_ctx).sum().item()                        # (query, key) pairs actually computed
    flops_per_token = 2 * (2 * width * seen) / n_ctx         # two matmuls, 2 FLOPs per multiply-add
    assert flops_per_token == 2 * (n_ctx + 1) * width        # ≈ 2·n_ctx·d: n_ctx/2 keys on average
    assert 2 * (2 * width * n_ctx * n_ctx) / n_ctx == 4 * n_ctx * width   # all keys: twice as much


def test_arch_25_functional_dropout_ignores_eval_mode():
    assert inspect.signature(F.dropout).parameters["training"].default is True

    class Functional(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5)

    torch.manual_seed(0)
    x = torch.ones(1000)
    model = Functional().eval()
    assert not torch.equal(model(x), x)                       # still dropping after .eval()
    assert set(model(x).unique().tolist()) <= {0.0, 2.0}      # kept units scaled by 1/(1 - p)
    module = nn.Dropout(0.5).eval()
    assert torch.equal(module(x), x)
    assert torch.equal(F.dropout(x, 0.5, training=model.training), x)
