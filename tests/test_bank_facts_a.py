"""Checks, with torch, the claims made by the question-bank files for the topics
self-attention, scaled-dot-product, multi-head and cross-attention.

Self-contained on purpose: it reads the TOML files directly and imports nothing from
attn_drill. Questions are referenced by id. Every numeric answer is recomputed from its
formula, and every fact that PyTorch can show (shapes, NaN behaviour, gradient formulas
against autograd, parameter counts against nn modules, FLOPs by torch's own counter
formulas) is shown here. The form of the four files together (no give-aways) is checked
too.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
# The formulas torch's FlopCounterMode uses. Called directly: entering FlopCounterMode
# imports torch._dynamo, which takes seconds.
from torch.utils.flop_counter import bmm_flop, mm_flop, sdpa_flop_count

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
    complexity sliding-window layernorm residual ffn dropout fresh-layers backward
    softmax-alternatives linear-attention logit-stability normalization flops
    length-scaling context-extension""".split()
)
MIN_KINDS = {  # topic -> minimum counts
    "self-attention": {"numeric": 3, "code": 4, "card": 3},
    "scaled-dot-product": {"numeric": 5, "code": 3, "card": 3},
    "multi-head": {"numeric": 4, "code": 3, "card": 3},
    "cross-attention": {"numeric": 4, "code": 3, "card": 3},
}
ORIGINAL = 13      # questions per file before the depth issue
NEW_AT_LEAST = 30  # new ids (number > ORIGINAL) across the four files


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


def choice(qid: str, letter: str) -> str:
    return Q[qid]["choices"][ord(letter) - ord("a")]["en"]


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


def patched(qid: str, old: str, new: str, code: str | None = None) -> str:
    code = Q[qid]["code"] if code is None else code
    assert code.count(old) == 1, f"{qid}: {old!r} must occur once"
    return code.replace(old, new)


def all_text(q: dict, lang: str = "en") -> str:
    parts = [q["prompt"][lang], q["explanation"][lang]]
    parts += [c[lang] for c in q.get("choices", [])]
    if "model_answer" in q:
        parts.append(q["model_answer"][lang])
    if lang == "en" and "code" in q:
        parts.append(q["code"])
    return "\n".join(parts)


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


def torch_version() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", torch.__version__).groups()
    return int(major), int(minor)


def autograd_attention_grads(q, k, v, d_out, scale=None):
    """dQ, dK, dV of softmax(q k^T * scale) v by autograd (float64 leaves)."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref_attention(q, k, v, scale=scale).backward(d_out)
    return q.grad, k.grad, v.grad


def qkv64(L, S, D, Dv, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    shape = lambda *s: (*batch, *s)  # noqa: E731
    return (torch.randn(shape(L, D), generator=g, dtype=torch.float64),
            torch.randn(shape(S, D), generator=g, dtype=torch.float64),
            torch.randn(shape(S, Dv), generator=g, dtype=torch.float64),
            torch.randn(shape(L, Dv), generator=g, dtype=torch.float64))


# ---------------------------------------------------------------- the files themselves


def test_files_shape_and_counts():
    new = 0
    for topic, prefix in TOPICS.items():
        data = FILES[topic]
        assert data["format_version"] == 1
        assert data["topic"] == topic
        qs = data["questions"]
        assert len(qs) >= 20, topic
        kinds = [q["kind"] for q in qs]
        for kind, n in MIN_KINDS[topic].items():
            assert kinds.count(kind) >= n, (topic, kind)
        assert {"single", "multi", "bool"} <= set(kinds), topic
        assert [q["id"] for q in qs] == [f"{prefix}-{i:02d}" for i in range(1, len(qs) + 1)]
        assert {q["difficulty"] for q in qs} == {1, 2, 3}, topic
        new += len(qs) - ORIGINAL
    assert new >= NEW_AT_LEAST


def test_new_questions_mix_of_kinds():
    """Among the new ids: at least 8 numeric, 5 code and 4 cards."""
    kinds = Counter(q["kind"] for qid, q in Q.items() if int(qid.split("-")[1]) > ORIGINAL)
    assert kinds["numeric"] >= 8 and kinds["code"] >= 5 and kinds["card"] >= 4, kinds


@pytest.mark.parametrize("qid", sorted(Q))
def test_question_fields(qid):
    q = Q[qid]
    assert q["tags"] and set(q["tags"]) <= TAGS, qid
    assert len(set(q["tags"])) == len(q["tags"]), qid
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
        assert len({c["zh"] for c in q["choices"]}) == len(letters), "duplicate zh choices"
    if kind == "code":
        assert q["code"].splitlines()[0].strip(), f"{qid}: code must start on line 1"


# ---------------------------------------------------------------- form: no give-aways


def _singles():
    return [q for q in Q.values() if (q.get("select") if q["kind"] == "code" else q["kind"]) == "single"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_key_is_rarely_the_longest_choice(lang):
    """At most 35% of single-answer questions have the key as the longest choice (a tie for
    longest counts as longest), and the key is not systematically the shortest either."""
    singles = _singles()
    longest = shortest = 0
    for q in singles:
        lengths = [len(c[lang]) for c in q["choices"]]
        key = lengths[ord(q["answer"]) - ord("a")]
        longest += key == max(lengths)
        shortest += key == min(lengths)
    assert longest / len(singles) <= 0.35, (lang, longest, len(singles))
    assert shortest / len(singles) <= 0.35, (lang, shortest, len(singles))


def test_keys_use_every_position():
    positions = Counter(q["answer"] for q in _singles())
    assert {"a", "b", "c", "d"} <= set(positions), positions
    assert max(positions.values()) <= 0.4 * sum(positions.values()), positions


def test_bool_answers_balanced():
    bools = [q["answer"] for q in Q.values() if q["kind"] == "bool"]
    assert 0.40 <= sum(bools) / len(bools) <= 0.60, (sum(bools), len(bools))


def test_multi_answers_vary_in_size():
    sizes = {len(q["answer"]) for q in Q.values()
             if (q.get("select") if q["kind"] == "code" else q["kind"]) == "multi"}
    assert {2, 3, 4} <= sizes, sizes


# ---------------------------------------------------------------- numbers: tolerance and units


@pytest.mark.parametrize("qid", sorted(k for k, q in Q.items() if q["kind"] == "numeric"))
def test_numeric_tolerance_and_units_are_stated(qid):
    q = Q[qid]
    en, zh = q["prompt"]["en"], q["prompt"]["zh"]
    if abs(q["answer"]) > 10_000:
        if q["tolerance"] == 0:
            assert "exact" in en and "精确" in zh, f"{qid}: an exact count must say so"
        else:
            assert q["tolerance"] == 0.01, qid
    if q["tolerance"]:
        assert "within 1%" in en and "1%" in zh, f"{qid}: say the tolerance in the prompt"
    unit = q.get("unit", {"en": "", "zh": ""})
    for text, unit_text in ((en, unit["en"]), (zh, unit["zh"])):
        if re.search(r"\b[KMGT]i?B\b|bytes|字节", text + " " + unit_text):
            assert re.search(r"\b[KMGT]iB\b|1000|1024|10\^\d+|2\^\d+", text), \
                f"{qid}: a prompt about bytes says whether K/M/G are powers of 1000 or 1024"


@pytest.mark.parametrize("qid", sorted(k for k, q in Q.items() if q["kind"] == "numeric"))
def test_numeric_formula_matches_answer(qid):
    q = Q[qid]
    value = evaluate(q["formula"], q["params"])
    tol = q["tolerance"]
    assert math.isclose(value, q["answer"], rel_tol=tol, abs_tol=0 if tol else 1e-9), (qid, value)


# ---------------------------------------------------------------- Chinese: the glossary's terms


@pytest.mark.parametrize("qid", sorted(Q))
def test_chinese_terms(qid):
    """The terms the brief fixed before the glossary (tests/test_glossary.py checks the rest):
    no 注意 as a transitive verb, 泄漏 not 泄露, 因果掩码 not 因果 mask."""
    zh = all_text(Q[qid], "zh")
    assert not re.search(r"注意(?!力)", zh), qid
    assert "泄露" not in zh and not re.search(r"因果\s*mask", zh), qid


# ---------------------------------------------------------------- mistakes bring questions back


MISTAKE_IDEAS = {  # key -> (tags it maps to in mistakes.toml, regex of its idea in the text)
    "softmax-backward-no-rowsum": (["backward", "softmax-dim"], r"rowsum"),
    "backward-scale-missing": (["backward", "scale"], r"dQ = dS K (/ sqrt\(d\)|· scale)"),
    "dk-without-transpose": (["backward"], r"dK = dSᵀ Q"),
    "dv-without-transpose": (["backward", "weighted-sum"], r"dV = Pᵀ dO"),
    "kv-repeat-order": (["gqa-mqa"], r"repeat_interleave"),
    "dropout-in-eval": (["dropout"], r"eval"),
    "heads-split-without-transpose": (["head-split"], r"transpose"),
    "heads-merged-without-transpose": (["head-split"], r"transpose\(1, 2\)"),
    "scale-by-embed-dim": (["scale", "head-split"], r"sqrt\(E\)|sqrt\(e\)|d_model / H|embedding width"),
    "qk-swapped": (["qkv-projection", "softmax-dim"], r"k @ q|K Qᵀ|swapped"),
    "no-softmax": (["softmax-dim", "weighted-sum"], r"[Dd]ropping the softmax|no softmax|without any normalisation|[Dd]ropping the normalisation"),
    "softmax-dim": (["softmax-dim"], r"dim=-1"),
    "no-scale": (["scale"], r"[Ll]eaving the scale out|no-scale|[Ww]ith no scale|[Ww]ithout the scale"),
    "scale-by-d": (["scale"], r"[Dd]ividing by d_k|/ d_k\b"),
    "scale-multiplied": (["scale"], r"[Mm]ultiplying by sqrt\(d_k\)|· sqrt\(d_k\)"),
}


def mistake_tags() -> dict[str, list[str]]:
    """mistakes.toml as key -> tags (format 1: a [mistakes] table; format 2: [[mistakes]])."""
    data = tomllib.loads((QDIR / "mistakes.toml").read_text(encoding="utf-8"))["mistakes"]
    return data if isinstance(data, dict) else {m["key"]: m["tags"] for m in data}


@pytest.mark.parametrize("key", sorted(MISTAKE_IDEAS))
def test_each_mistake_brings_back_two_questions_about_it(key):
    tags, idea = MISTAKE_IDEAS[key]
    mapping = mistake_tags()
    assert set(mapping[key]) == set(tags), key
    hits = [qid for qid, q in Q.items() if set(tags) <= set(q["tags"]) and re.search(idea, all_text(q))]
    assert len(hits) >= 2, (key, hits)


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


def test_mh14_mistral_kv_projection_params():
    p = Q["mh-14"]["params"]
    E, kv = p["d_model"], p["kv_heads"] * p["head_dim"]
    assert E // 32 == p["head_dim"]  # 32 query heads of 128 make d_model
    k_proj = nn.Linear(E, kv, bias=False, device="meta")
    v_proj = nn.Linear(E, kv, bias=False, device="meta")
    assert p["layers"] * n_params(k_proj, v_proj) == Q["mh-14"]["answer"]
    mha = nn.Linear(E, E, bias=False, device="meta")
    assert p["layers"] * 2 * n_params(mha) == 4 * Q["mh-14"]["answer"]  # 32 KV heads: 4x
    assert math.isclose(p["layers"] * 2 * (n_params(mha) - n_params(k_proj)), 805_306_368)


def test_ca15_t5_base_cross_attention_params():
    p = Q["ca-15"]["params"]
    E, inner = p["d_model"], p["heads"] * p["d_kv"]
    per_layer = n_params(*(nn.Linear(E, inner, bias=False, device="meta") for _ in range(3)),
                         nn.Linear(inner, E, bias=False, device="meta"))
    assert p["layers"] * per_layer == Q["ca-15"]["answer"]
    assert n_params(nn.MultiheadAttention(E, p["heads"], bias=False)) == per_layer


# ---- FLOPs, counted by torch's flop-counter formulas on shapes


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


def _gpt2_layer_flops(T, E=768, H=12):
    projections = 4 * mm_flop((T, E), (E, E))
    scores = sdpa_flop_count((1, H, T, E // H), (1, H, T, E // H), (1, H, T, E // H))
    return projections, scores


def test_sa06_gpt2_small_attention_layer_flops():
    p = Q["sa-06"]["params"]
    projections, scores = _gpt2_layer_flops(p["T"], p["E"])
    assert projections + scores == Q["sa-06"]["answer"]
    assert math.isclose(scores / (projections + scores), 0.4)  # "40% of the layer"


def test_sa18_crossover_length_is_twice_the_width():
    T = Q["sa-18"]["answer"]
    assert T == 2 * 768
    projections, scores = _gpt2_layer_flops(T)
    assert projections == scores
    shorter, longer = _gpt2_layer_flops(T // 2), _gpt2_layer_flops(2 * T)
    assert shorter[0] > shorter[1] and longer[0] < longer[1]


def test_sa11_cost_is_not_the_reason_and_xxt_is_symmetric_with_a_dominant_diagonal():
    assert correct_choice("sa-11").startswith("X Xᵀ is symmetric")
    T, E, d = 2048, 768, 64
    raw = matmul_flops((T, E), (E, T))
    projected = 2 * mm_flop((T, E), (E, d)) + matmul_flops((T, d), (d, T))
    assert raw == 2 * T * T * E and projected == 2 * 2 * T * E * d + 2 * T * T * d
    # both quadratic in T: doubling T about quadruples the projected score cost too
    projected2 = 2 * mm_flop((2 * T, E), (E, d)) + matmul_flops((2 * T, d), (d, 2 * T))
    assert projected2 / projected > 3
    torch.manual_seed(0)
    x = torch.randn(16, 64)
    s = x @ x.T
    assert torch.allclose(s, s.T) and torch.equal(s.argmax(-1), torch.arange(16))
    w_q, w_k = torch.randn(64, 16), torch.randn(64, 16)
    sp = (x @ w_q) @ (x @ w_k).T
    assert not torch.allclose(sp, sp.T, atol=1e-3)
    assert sp.abs().max() > 1  # projected scores are not cosines in [-1, 1]


# ---- memory and bytes


def test_sdp04_score_matrix_gib():
    p = Q["sdp-04"]["params"]
    b = meta_bytes((p["B"], p["H"], p["L"], p["S"]), torch.float16)
    assert b / 2**30 == Q["sdp-04"]["answer"]


def test_mh04_llama3_8b_kv_bytes_per_token():
    p = Q["mh-04"]["params"]
    assert 4096 // 32 == p["head_dim"]
    per_layer = 2 * meta_bytes((1, p["kv_heads"], 1, p["head_dim"]), torch.float16)  # K and V
    assert p["layers"] * per_layer == 131072 == Q["mh-04"]["answer"] * 1024
    mha = p["layers"] * 2 * meta_bytes((1, 32, 1, p["head_dim"]), torch.float16)
    assert mha == 512 * 1024
    assert 8192 * p["layers"] * per_layer == 2**30  # 8192 tokens: 1 GiB


def test_ca14_t5_base_cross_cache_mib():
    p = Q["ca-14"]["params"]
    per_layer = 2 * meta_bytes((1, p["heads"], p["S"], p["d_kv"]), torch.float32)
    assert p["layers"] * per_layer / 2**20 == Q["ca-14"]["answer"]
    assert p["layers"] * per_layer == 37_748_736
    assert p["heads"] * p["d_kv"] == 768


def test_sa05_flash_attention_memory_is_not_quadratic():
    """A naive implementation allocates the L x S matrix; the fused FlashAttention kernel
    (here PyTorch's CPU one) does not. Measured with the profiler's memory accounting."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    largest = {}
    for L in (1024, 4096):
        q, k, v = (torch.randn(1, 1, L, 64) for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), \
                profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            F.scaled_dot_product_attention(q, k, v)
        largest[L] = max(e.cpu_memory_usage for e in prof.events())
    assert largest[4096] < 4096 * 4096 * 4 / 16  # far below one fp32 L x L matrix (64 MiB)
    assert largest[4096] < 6 * largest[1024]     # a quadratic buffer would grow 16x


# ---------------------------------------------------------------- scale


def test_sdp02_std_of_raw_dot_product_and_the_scale_mistakes():
    d = Q["sdp-02"]["params"]["d_k"]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(20_000, d, generator=g)
    k = torch.randn(20_000, d, generator=g)
    s = (q * k).sum(-1)
    assert abs(s.std().item() - Q["sdp-02"]["answer"]) < 0.2
    assert abs((s / math.sqrt(d)).std().item() - 1) < 0.025
    assert abs((s / d).std().item() - 1 / 8) < 0.01          # scale-by-d: too flat
    assert abs((s * math.sqrt(d)).std().item() - 64) < 1.6   # scale-multiplied


def test_sdp01_scale_keeps_the_softmax_from_saturating():
    assert correct_choice("sdp-01").startswith("To keep the scores' variance near 1")
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
    # rows sum to 1 with or without the scale
    assert torch.allclose((q[0] @ k[0].T).softmax(-1).sum(-1), torch.ones(32))


def test_sdp24_equivalent_expressions():
    assert starts(correct_choices("sdp-24")) == ["F.scaled_dot_product_attention(Q,", "softmax((Q", "softmax(Q"]
    torch.manual_seed(0)
    d = 16
    q, k, v = torch.randn(4, d, dtype=torch.float64), torch.randn(9, d, dtype=torch.float64), \
        torch.randn(9, 5, dtype=torch.float64)
    ref = ((q @ k.T) / math.sqrt(d)).softmax(-1) @ v
    same = {
        "a": ((q / math.sqrt(d)) @ k.T).softmax(-1) @ v,
        "d": ((q @ k.T) / math.sqrt(d) + 3.7).softmax(-1) @ v,
        "f": F.scaled_dot_product_attention(q[None], k[None], v[None])[0],
    }
    differ = {
        "b": ((q @ k.T) / d).softmax(-1) @ v,
        "c": ((q @ k.T) * math.sqrt(d)).softmax(-1) @ v,
        "e": (q @ k.T).softmax(-1) @ v / math.sqrt(d),
    }
    assert sorted(same) == Q["sdp-24"]["answer"]
    assert all(torch.allclose(out, ref) for out in same.values())
    assert not any(torch.allclose(out, ref, atol=1e-3) for out in differ.values())


# ---------------------------------------------------------------- shape questions


@pytest.mark.parametrize("qid", ["sa-08", "sdp-05", "mh-05", "ca-04"])
def test_shape_snippet_prints_the_correct_choice(qid):
    _, printed = run_snippet(qid)  # runs without error
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


def test_ca17_cross_cache_has_the_source_length():
    assert correct_choice("ca-17").startswith("(4, 12, 300, 64)")
    memory = torch.empty(4, 300, 768, device="meta")
    w_k = nn.Linear(768, 12 * 64, bias=False, device="meta")
    k = w_k(memory).view(4, 300, 12, 64).transpose(1, 2)
    assert tuple(k.shape) == (4, 12, 300, 64)
    q = torch.empty(4, 12, 17, 64, device="meta")
    assert tuple((q @ k.transpose(-2, -1)).shape) == (4, 12, 17, 300)  # the weights, not a cache


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
    # the no-softmax distractor: raw scores as weights are not a weighted average
    scores = (x @ w_q) @ (x @ w_k).transpose(-2, -1) / 2
    assert (scores < 0).any() and not torch.allclose(scores.sum(-1), torch.ones(2, 6))


def test_sa10_fresh_linear_in_forward():
    assert correct_choice("sa-10").startswith("Line 10")
    assert "nn.Linear" in code_line("sa-10", 10)
    cls = run_snippet("sa-10")[0]["SelfAttention"]
    m = cls(8, 4)
    assert n_params(m) == 0  # the optimizer would get nothing
    x = torch.randn(1, 5, 8)
    assert not torch.allclose(m(x), m(x))  # new random weights on every call


def test_sa19_queries_and_keys_swapped():
    assert correct_choice("sa-19").startswith("Line 9")
    assert "k @ q.transpose" in code_line("sa-19", 9)
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(8, 4, dtype=torch.float64) for _ in range(3))
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    expected = F.scaled_dot_product_attention(q, k, v)
    buggy = run_snippet("sa-19")[0]["self_attention"](x, w_q, w_k, w_v)
    assert buggy.shape == expected.shape and not torch.allclose(buggy, expected)
    fixed = run_snippet("sa-19", patched("sa-19", "k @ q.transpose", "q @ k.transpose"))[0]["self_attention"]
    assert torch.allclose(fixed(x, w_q, w_k, w_v), expected)
    # row i of the buggy weights is key i normalised over the queries
    w_bug = (k @ q.transpose(-2, -1) / 2).softmax(-1)
    assert torch.allclose(w_bug, (q @ k.transpose(-2, -1) / 2).softmax(-2).transpose(-2, -1))
    # the line-11 distractor (transposing the weights) does not fix it
    alt = patched("sa-19", "return weights @ v", "return weights.transpose(-2, -1) @ v")
    assert not torch.allclose(run_snippet("sa-19", alt)[0]["self_attention"](x, w_q, w_k, w_v), expected)


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


def _compare_mha(src, cls="MHA"):
    torch.manual_seed(0)
    m = run_snippet("mh-06", src)[0][cls](16, 4)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(m.qkv.weight)
        ref.in_proj_bias.copy_(m.qkv.bias)
        ref.out_proj.weight.copy_(m.proj.weight)
        ref.out_proj.bias.copy_(m.proj.bias)
        x = torch.randn(2, 8, 16)
        return torch.allclose(m(x), ref(x, x, x, need_weights=False)[0], atol=1e-5)


def test_mh06_reshape_splits_sequence_not_width():
    assert correct_choice("mh-06").startswith("Line 15")
    assert "reshape(b, self.h, t" in code_line("mh-06", 15)
    bad = "z.reshape(b, self.h, t, e // self.h)"
    good = "z.reshape(b, t, self.h, e // self.h).transpose(1, 2)"
    assert not _compare_mha(Q["mh-06"]["code"])
    fixed = patched("mh-06", bad, good)
    assert _compare_mha(fixed)
    # distractor: dropping the transpose on line 17 breaks it again
    assert not _compare_mha(fixed.replace("y.transpose(1, 2).reshape(b, t, e)", "y.reshape(b, t, e)"))
    # distractor: scale 1/sqrt(e) instead of the default 1/sqrt(e/h) is wrong
    assert not _compare_mha(fixed.replace("attention(q, k, v)", "attention(q, k, v, scale=1 / e ** 0.5)"))


def test_mh21_merge_without_transpose():
    assert correct_choice("mh-21").startswith("False: merge_heads")
    assert "reshape(b, t, h * d)" in code_line("mh-21", 11) and code_line("mh-21", 14).startswith("print(")
    _, printed = run_snippet("mh-21")
    assert printed == "False"
    fixed = patched("mh-21", "y.reshape(b, t, h * d)", "y.transpose(1, 2).reshape(b, t, h * d)")
    assert run_snippet("mh-21", fixed)[1] == "True"
    # split and merge both without transpose: the round trip passes, yet heads hold sequence chunks
    both = patched("mh-21", "x.view(b, t, h, e // h).transpose(1, 2)", "x.view(b, h, t, e // h)")
    ns, printed = run_snippet("mh-21", both)
    assert printed == "True"
    x = torch.randn(2, 6, 12)
    head0 = ns["split_heads"](x, 3)[:, 0]                # (B, T, E/h)
    assert torch.equal(head0.reshape(2, -1), x[:, :2].reshape(2, -1))  # tokens 0-1 only


def test_sa17_functional_dropout_ignores_eval():
    assert correct_choice("sa-17").startswith("Line 15: F.dropout defaults")
    assert "F.dropout(" in code_line("sa-17", 15)
    ns, _ = run_snippet("sa-17")
    m = ns["Attention"](8, p=0.5).eval()
    x = torch.randn(2, 6, 8)
    assert not torch.allclose(m(x), m(x))  # random in eval
    fixed_src = patched("sa-17", "p=self.p)", "p=self.p, training=self.training)")
    fixed = run_snippet("sa-17", fixed_src)[0]["Attention"](8, p=0.5)
    fixed.load_state_dict(m.state_dict())
    fixed.eval()
    no_drop = run_snippet("sa-17", fixed_src)[0]["Attention"](8, p=0.0)
    no_drop.load_state_dict(m.state_dict())
    assert torch.equal(fixed(x), fixed(x)) and torch.allclose(fixed(x), no_drop(x))
    fixed.train()
    assert not torch.allclose(fixed(x), fixed(x))  # still drops in training
    # distractor: dropout on the scores before the softmax is still random in eval
    before = patched("sa-17", "F.dropout(scores.softmax(dim=-1), p=self.p)",
                     "F.dropout(scores, p=self.p).softmax(dim=-1)")
    b = run_snippet("sa-17", before)[0]["Attention"](8, p=0.5).eval()
    assert not torch.allclose(b(x), b(x))
    # a zeroed score still gets weight
    assert torch.tensor([0.0, 1.0]).softmax(-1)[0] > 0


def test_sa16_sa21_mh22_attention_dropout_is_train_only():
    assert Q["sa-16"]["answer"] is False and Q["sa-21"]["answer"] is True
    assert correct_choice("mh-22").startswith("The attention weights after the softmax")
    torch.manual_seed(0)
    E, H = 16, 2
    m = nn.MultiheadAttention(E, H, dropout=0.5, batch_first=True)
    twin = nn.MultiheadAttention(E, H, dropout=0.0, batch_first=True)
    twin.load_state_dict(m.state_dict())
    x = torch.randn(3, 7, E)
    # training: weights dropped, kept ones scaled by 1/(1-p); rows sum to 1 only on average
    out, w = m(x, x, x, average_attn_weights=False)
    assert (w == 0).any() and not torch.allclose(w.sum(-1), torch.ones(3, H, 7))
    _, w_clean = twin(x, x, x, average_attn_weights=False)
    kept = w != 0
    assert torch.allclose(w[kept], w_clean[kept] / 0.5)
    # the returned weights are the ones that multiplied V
    v = F.linear(x, m.in_proj_weight[2 * E:], m.in_proj_bias[2 * E:]).view(3, 7, H, E // H).transpose(1, 2)
    merged = (w @ v).transpose(1, 2).reshape(3, 7, E)
    assert torch.allclose(m.out_proj(merged), out, atol=1e-5)
    # eval: off, deterministic, equal to the dropout-0 twin, rows sum to exactly 1
    m.eval()
    out1, w1 = m(x, x, x)
    out2, _ = m(x, x, x)
    assert torch.equal(out1, out2) and torch.allclose(out1, twin(x, x, x)[0], atol=1e-6)
    assert torch.allclose(w1.sum(-1), torch.ones(3, 7))
    # sa-21: inverted dropout keeps each weight right in expectation
    p = torch.full((20_000, 8), 1 / 8)
    drop = nn.Dropout(0.1)
    sums = drop(p).sum(-1)
    assert abs(sums.mean().item() - 1) < 0.01 and sums.std() > 0.05
    assert torch.equal(drop.eval()(p).sum(-1), p.sum(-1))


def test_ca05_key_padding_mask_polarity_and_fully_masked_rows():
    assert correct_choice("ca-05").startswith("Line 8")
    assert "<" in code_line("ca-05", 8) and "key_padding_mask" in code_line("ca-05", 9)
    ns, _ = run_snippet("ca-05")
    out, w = ns["out"], ns["w"]
    assert tuple(w.shape) == (2, 6, 9)
    # second example: weight only on the 4 padding keys
    assert torch.all(w[1, :, :5] == 0) and torch.all(w[1, :, 5:] > 0)
    # first example: every key masked -> NaN on this (need_weights=True) path
    assert torch.isnan(out[0]).all()
    attn, dec, enc, bad = ns["attn"], ns["dec"], ns["enc"], ns["src_mask"]
    out_fast, _ = attn(dec, enc, enc, key_padding_mask=bad, need_weights=False)
    assert not torch.isnan(out_fast).any()
    assert torch.allclose(out_fast[0], attn.out_proj.bias.expand(6, -1))  # attention part is 0
    out2, w2 = attn(dec, enc, enc, key_padding_mask=~bad)
    assert not torch.isnan(out2).any()
    assert torch.all(w2[1, :, 5:] == 0)


def test_sdpa_returns_zero_for_a_fully_masked_row():
    """ca-05 and sdp-13 say so for recent PyTorch, checked on 2.13."""
    if torch_version() < (2, 13):
        pytest.skip(f"the bank states this for torch 2.13; installed {torch.__version__}")
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    allowed = torch.ones(3, 4, dtype=torch.bool)
    allowed[1] = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert torch.all(out[:, :, 1] == 0) and not torch.isnan(out).any()
    # a hand-written masked softmax gives NaN for the same row
    assert torch.isnan(ref_attention(q, k, v, allowed=allowed)[:, :, 1]).all()


def test_ca16_cross_cache_must_not_grow():
    assert correct_choice("ca-16").startswith("Lines 9-10")
    assert "torch.cat" in code_line("ca-16", 9) and "torch.cat" in code_line("ca-16", 10)
    torch.manual_seed(0)
    E, S, T = 8, 5, 4
    memory, hs = torch.randn(1, S, E), torch.randn(1, T, E)
    w_q, w_k, w_v = (torch.randn(E, E) for _ in range(3))
    reference = F.scaled_dot_product_attention(hs @ w_q, memory @ w_k, memory @ w_v)  # (1, T, E)

    def run(src):
        step = run_snippet("ca-16", src)[0]["cross_step"]
        cache: dict = {}
        outs = [step(hs[:, t:t + 1], memory, w_q, w_k, w_v, cache) for t in range(T)]
        return torch.cat(outs, dim=1), cache

    buggy, cache = run(Q["ca-16"]["code"])
    assert cache["k"].shape[1] == S + T and not torch.allclose(buggy, reference, atol=1e-5)
    lines = Q["ca-16"]["code"].splitlines()
    fixed_src = "\n".join(lines[:8] + lines[10:])  # drop lines 9-10
    fixed, cache = run(fixed_src)
    assert cache["k"].shape[1] == S and torch.allclose(fixed, reference, atol=1e-5)


def test_mh16_repeat_tiles_heads_in_the_wrong_order():
    assert correct_choice("mh-16").startswith("Line 7: repeat tiles")
    assert ".repeat(1, group" in code_line("mh-16", 7)
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 5, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    buggy = run_snippet("mh-16")[0]["gqa"]
    assert not torch.allclose(buggy(q, k, v), expected, atol=1e-5)
    fixed_src = patched("mh-16", "k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)",
                        "k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)")
    assert torch.allclose(run_snippet("mh-16", fixed_src)[0]["gqa"](q, k, v), expected, atol=1e-5)
    # the bug hides with MQA (one KV head)
    k1, v1 = k[:, :1], v[:, :1]
    assert torch.allclose(buggy(q, k1, v1),
                          F.scaled_dot_product_attention(q, k1, v1, is_causal=True, enable_gqa=True), atol=1e-5)
    # the averaging distractor is a different model
    avg = F.scaled_dot_product_attention(q, k.mean(1, keepdim=True).expand(-1, 8, -1, -1),
                                         v.mean(1, keepdim=True).expand(-1, 8, -1, -1), is_causal=True)
    assert not torch.allclose(avg, expected, atol=1e-5)


def test_mh15_query_head_to_kv_head():
    p = Q["mh-15"]["params"]
    H, H_kv, h = p["H"], p["H_kv"], p["h"]
    ids = torch.arange(H_kv).view(1, H_kv, 1, 1).float()
    assert ids.repeat_interleave(H // H_kv, dim=1)[0, h].item() == Q["mh-15"]["answer"] == 3
    assert ids.repeat(1, H // H_kv, 1, 1)[0, h].item() == h % H_kv == 5
    # SDPA's enable_gqa uses the repeat_interleave layout (as Hugging Face's repeat_kv does)
    torch.manual_seed(0)
    q, k, v = torch.randn(1, H, 3, 8), torch.randn(1, H_kv, 3, 8), torch.randn(1, H_kv, 3, 8)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert torch.allclose(out[:, h], F.scaled_dot_product_attention(q[:, h], k[:, 3], v[:, 3]), atol=1e-6)
    hf_repeat_kv = k[:, :, None].expand(1, H_kv, H // H_kv, 3, 8).reshape(1, H, 3, 8)
    assert torch.equal(hf_repeat_kv, k.repeat_interleave(H // H_kv, dim=1))


def test_mh17_mean_pooling_converts_mha_to_gqa():
    assert correct_choice("mh-17").startswith("Mean-pool")
    torch.manual_seed(0)
    H, H_kv, d, T, E = 8, 2, 4, 6, 32
    g = H // H_kv
    x = torch.randn(1, T, E, dtype=torch.float64)
    w_q = torch.randn(H, E, d, dtype=torch.float64)
    # an MHA whose K/V heads happen to agree within each consecutive group
    base_k, base_v = torch.randn(H_kv, E, d, dtype=torch.float64), torch.randn(H_kv, E, d, dtype=torch.float64)
    w_k = base_k.repeat_interleave(g, dim=0)
    w_v = base_v.repeat_interleave(g, dim=0)
    heads = lambda w: torch.einsum("bte,hed->bhtd", x, w)  # noqa: E731
    mha = F.scaled_dot_product_attention(heads(w_q), heads(w_k), heads(w_v))

    def gqa(pool):
        pk, pv = pool(w_k), pool(w_v)
        return F.scaled_dot_product_attention(heads(w_q), heads(pk), heads(pv), enable_gqa=True)

    mean = gqa(lambda w: w.view(H_kv, g, E, d).mean(1))
    summed = gqa(lambda w: w.view(H_kv, g, E, d).sum(1))
    strided = gqa(lambda w: w.view(g, H_kv, E, d).mean(0))   # pooling the wrong heads together
    assert torch.allclose(mean, mha)
    assert not torch.allclose(summed, mha, atol=1e-2) and not torch.allclose(strided, mha, atol=1e-2)


def test_mh18_mh19_gqa_cache_shrinks_flops_do_not():
    assert Q["mh-18"]["answer"] is True
    assert starts(correct_choices("mh-19")) == ["Decoding", "MQA"]
    B, H, H_kv, T, d = 1, 32, 8, 128, 128
    mha_cache = 2 * meta_bytes((B, H, T, d), torch.float16)
    gqa_cache = 2 * meta_bytes((B, H_kv, T, d), torch.float16)
    assert mha_cache == (H // H_kv) * gqa_cache
    # each query head still scores its own T x T matrix: the FLOPs follow the H query heads
    one_head = sdpa_flop_count((B, 1, T, d), (B, 1, T, d), (B, 1, T, d))
    assert sdpa_flop_count((B, H, T, d), (B, H, T, d), (B, H, T, d)) == H * one_head
    # MHA is GQA with H_kv = H
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8)
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                          F.scaled_dot_product_attention(q, k, v))


# ---------------------------------------------------------------- the backward pass


def test_sdp14_softmax_jacobian():
    assert correct_choice("sdp-14").startswith("p_i (δ_ij − p_j)")
    torch.manual_seed(0)
    s = torch.randn(6, dtype=torch.float64)
    p = s.softmax(-1)
    jac = torch.autograd.functional.jacobian(lambda z: z.softmax(-1), s)
    assert torch.allclose(jac, torch.diag(p) - torch.outer(p, p))
    assert torch.allclose(jac.sum(0), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    assert not torch.allclose(jac, torch.diag(p * (1 - p)))      # sigmoid-like
    assert not torch.allclose(jac, torch.diag(p))                # denominator held constant
    g = torch.randn(6, dtype=torch.float64)
    assert torch.allclose(jac.T @ g, p * (g - (p * g).sum()))    # the rowsum term


def _backward_check(fn, L, S, batch=()):
    q, k, v, d_out = qkv64(L, S, 8, 5, batch=batch)
    expected = autograd_attention_grads(q, k, v, d_out)
    return [torch.allclose(a, b) for a, b in zip(fn(q, k, v, d_out), expected)]


def test_sdp15_softmax_backward_without_rowsum():
    assert correct_choice("sdp-15").startswith("Line 10")
    assert code_line("sdp-15", 10).split("#")[0].strip() == "d_s = p * d_p"
    buggy = run_snippet("sdp-15")[0]["attention_backward"]
    assert _backward_check(buggy, 4, 7) == [False, False, True]   # dQ, dK wrong; dV right
    fixed_src = patched("sdp-15", "d_s = p * d_p ", "d_s = p * (d_p - (d_p * p).sum(-1, keepdim=True)) ")
    fixed = run_snippet("sdp-15", fixed_src)[0]["attention_backward"]
    assert _backward_check(fixed, 4, 7) == [True, True, True]
    # distractors: each "fix" breaks the correct version
    with pytest.raises(RuntimeError):  # d_out @ p.T: (L, Dv) @ (S, L)
        _backward_check(run_snippet("sdp-15", patched("sdp-15", "p.T @ d_out", "d_out @ p.T", fixed_src))[0]
                        ["attention_backward"], 4, 7)
    no_scale = patched("sdp-15", "d_s @ k * scale", "d_s @ k", fixed_src)
    assert _backward_check(run_snippet("sdp-15", no_scale)[0]["attention_backward"], 4, 7)[0] is False
    with pytest.raises(RuntimeError):  # d_s @ q: (L, S) @ (L, D)
        _backward_check(run_snippet("sdp-15", patched("sdp-15", "d_s.T @ q", "d_s @ q", fixed_src))[0]
                        ["attention_backward"], 4, 7)


def test_sdp16_dk_needs_the_transpose():
    assert correct_choice("sdp-16").startswith("Line 11")
    assert "d_s @ q" in code_line("sdp-16", 11)
    T = 6
    buggy = run_snippet("sdp-16")[0]["attention_backward"]

    def with_p(fn):
        def call(q, k, v, d_out):
            p = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
            return fn(q, k, v, p, d_out)
        return call

    assert _backward_check(with_p(buggy), T, T, batch=(2,)) == [True, False, True]
    fixed_src = patched("sdp-16", "d_k = d_s @ q", "d_k = d_s.transpose(-2, -1) @ q")
    assert _backward_check(with_p(run_snippet("sdp-16", fixed_src)[0]["attention_backward"]), T, T,
                           batch=(2,)) == [True, True, True]
    for old, new in (("p.transpose(-2, -1) @ d_out", "p @ d_out"),
                     ("(d_p * p).sum(-1, keepdim=True)", "(d_p * p).sum(-2, keepdim=True)"),
                     ("d_s @ k * scale", "d_s @ k / scale")):
        wrong = run_snippet("sdp-16", patched("sdp-16", old, new, fixed_src))[0]["attention_backward"]
        assert not all(_backward_check(with_p(wrong), T, T, batch=(2,))), old


def test_sdp17_sdp18_backward_formulas_against_autograd():
    assert Q["sdp-17"]["answer"] == ["a", "b", "d", "e"]
    for L, S in ((4, 7), (6, 6)):
        q, k, v, d_out = qkv64(L, S, 8, 5)
        d = q.size(-1)
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        s = (qq @ kk.T / math.sqrt(d))
        s.retain_grad()
        p = s.softmax(-1)
        p.retain_grad()
        (p @ vv).backward(d_out)
        P, dP, dS = p.detach(), p.grad, s.grad
        assert torch.allclose(vv.grad, P.T @ d_out)                                   # a
        assert torch.allclose(dP, d_out @ v.T)                                        # b
        assert not torch.allclose(dS, P * dP)                                         # c
        assert torch.allclose(dS, P * (dP - (dP * P).sum(-1, keepdim=True)))          # d
        assert torch.allclose(qq.grad, dS @ k / math.sqrt(d))                         # e
        assert torch.allclose(kk.grad, dS.T @ q / math.sqrt(d))                       # dK = dS^T Q / sqrt(d)
        if L == S:
            assert not torch.allclose(kk.grad, dS @ q / math.sqrt(d))                 # f
        else:
            with pytest.raises(RuntimeError):
                dS @ q                                                                # f: wrong shape
    # masked positions (P = 0) get dS = 0 automatically
    q, k, v, d_out = qkv64(4, 7, 8, 5)
    s = (q @ k.T / math.sqrt(8)).masked_fill(~mixed_mask(4, 7), float("-inf")).requires_grad_()
    (s.softmax(-1) @ v).backward(d_out)
    assert torch.all(s.grad[~mixed_mask(4, 7)] == 0)


def test_sdp08_rowsum_equals_rowsum_of_do_times_o():
    assert Q["sdp-08"]["answer"] is True
    q, k, v, d_out = qkv64(5, 9, 8, 6)
    P = (q @ k.T / math.sqrt(8)).softmax(-1)
    O, dP = P @ v, d_out @ v.T
    assert torch.allclose((dP * P).sum(-1), (d_out * O).sum(-1))


# ---------------------------------------------------------------- logit stability


def test_sdp19_fp16_dot_product_overflow():
    a = Q["sdp-19"]["answer"]
    p = Q["sdp-19"]["params"]
    assert torch.finfo(torch.float16).max == p["max_fp16"] == 65504
    d = p["d"]
    below = torch.full((1, d), 22.6, dtype=torch.float16)
    above = torch.full((1, d), 22.7, dtype=torch.float16)
    assert 22.6 < a < 22.7
    assert torch.isfinite(below @ below.T).all() and torch.isinf(above @ above.T).all()
    # the same product in fp32 is fine: only the fp16 result overflows
    assert torch.isfinite(above.float() @ above.float().T).all()


def test_sdp20_qk_norm_bounds_the_logits():
    assert correct_choice("sdp-20").startswith("It applies LayerNorm or RMSNorm")
    torch.manual_seed(0)
    d = 64
    x = torch.randn(10, 128)
    w_q, w_k = torch.randn(128, d), torch.randn(128, d)

    def logits(scale):
        q = F.rms_norm(x @ (w_q * scale), (d,))
        k = F.rms_norm(x @ (w_k * scale), (d,))
        return q @ k.T / math.sqrt(d)

    assert logits(1.0).abs().max() <= math.sqrt(d) + 1e-3  # |q·k| <= ||q|| ||k|| = d
    assert torch.allclose(logits(1.0), logits(100.0), atol=1e-3)  # growing weights do not grow logits
    raw = (x @ (w_q * 100)) @ (x @ (w_k * 100)).T / math.sqrt(d)
    assert raw.abs().max() > 1e4
    # hard clipping kills the gradient of clipped scores; tanh soft-capping does not
    s = torch.tensor([80.0, 5.0], requires_grad=True)
    s.clamp(-50, 50).sum().backward()
    assert s.grad[0] == 0
    s.grad = None
    (50 * torch.tanh(s / 50)).sum().backward()
    assert s.grad[0] > 0


def test_sdp21_gemma2_soft_capping():
    p = Q["sdp-21"]["params"]
    assert math.isclose(p["e"], math.e)
    capped = p["c"] * torch.tanh(torch.tensor(p["s"] / p["c"], dtype=torch.float64))
    assert math.isclose(capped.item(), Q["sdp-21"]["answer"], rel_tol=0.01)
    small = 50 * torch.tanh(torch.tensor(5.0, dtype=torch.float64) / 50)
    assert round(small.item(), 2) == 4.98
    assert (50 * torch.tanh(torch.tensor([1e4, -1e4]) / 50)).abs().max() <= 50


# ---------------------------------------------------------------- length scaling


def _entropy(logits):
    p = logits.softmax(-1)
    return -(p * p.clamp_min(1e-30).log()).sum(-1).mean().item()


def test_sdp22_sdp23_log_n_scaling():
    assert correct_choice("sdp-22").startswith("With more keys the softmax spreads out")
    p = Q["sdp-23"]["params"]
    assert math.isclose(math.log(p["n"]) / math.log(p["m"]), Q["sdp-23"]["answer"])
    g = torch.Generator().manual_seed(0)
    m, n = 512, 4096
    short, long = torch.randn(64, m, generator=g) * 2, torch.randn(64, n, generator=g) * 2
    assert _entropy(long) > _entropy(short) + 0.5 * math.log(n / m)   # entropy rises with n
    factor = math.log(n) / math.log(m)
    assert factor > 1
    assert _entropy(long * factor) < _entropy(long)                  # the factor sharpens it
    assert math.log(m) / math.log(m) == 1                            # no change at n = m


# ---------------------------------------------------------------- softmax alternatives


def sparsemax(z):
    """Martins & Astudillo (2016): the Euclidean projection of z onto the simplex."""
    zs, _ = z.sort(-1, descending=True)
    k = torch.arange(1, z.size(-1) + 1, dtype=z.dtype)
    cumsum = zs.cumsum(-1)
    support = 1 + k * zs > cumsum
    k_z = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z
    return (z - tau).clamp_min(0)


def test_sa14_sa15_softmax_alternatives():
    assert correct_choice("sa-14").startswith("Keys stop competing")
    assert starts(correct_choices("sa-15")) == ["In", "Linear", "Sparsemax"]
    g = torch.Generator().manual_seed(0)
    # sigmoid: each weight in (0, 1) on its own; the row total grows with n unless b = -log n
    sums, sums_b = {}, {}
    for n in (64, 4096):
        s = torch.randn(32, n, generator=g)
        w = torch.sigmoid(s)
        assert (w > 0).all() and (w < 1).all()
        sums[n] = w.sum(-1).mean().item()
        sums_b[n] = torch.sigmoid(s - math.log(n)).sum(-1).mean().item()
    assert sums[4096] > 50 * sums[64] and 0.5 < sums_b[4096] / sums_b[64] < 1.5
    # a sigmoid is a softmax over the two logits {s, 0}, not over a row
    s = torch.randn(5, generator=g)
    assert torch.allclose(torch.sigmoid(s), torch.stack([s, torch.zeros(5)], -1).softmax(-1)[:, 0])
    assert not torch.allclose(torch.sigmoid(s), s.softmax(-1))
    # sparsemax: rows sum to 1 with exact zeros; softmax: all positive
    z = torch.tensor([[3.0, 1.0, 0.2, -1.0], [0.5, 0.4, 0.3, 0.2]])
    sp = sparsemax(z)
    assert torch.allclose(sp.sum(-1), torch.ones(2)) and (sp == 0).any() and (sp >= 0).all()
    assert (z.softmax(-1) > 0).all()
    # linear attention: associativity gives the O(n) form
    phi = lambda t: F.elu(t) + 1  # noqa: E731
    q, k, v = (torch.randn(50, 8, generator=g, dtype=torch.float64) for _ in range(3))
    assert torch.allclose((phi(q) @ phi(k).T) @ v, phi(q) @ (phi(k).T @ v))
    # sum-normalising raw scores gives negative or exploding weights
    raw = torch.tensor([2.0, -1.9, 0.1])
    w = raw / raw.sum()
    assert (w < 0).any() and w.abs().max() > 1


# ---------------------------------------------------------------- mask polarity


def test_sdp10_mh10_bool_mask_polarity_differs():
    assert Q["sdp-10"]["answer"] is False
    assert "NOT" in correct_choice("mh-10")
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
    assert starts(correct_choices("sa-05")) == ["Computing", "Each", "Every"]
    torch.manual_seed(0)
    x = torch.randn(6, 8, requires_grad=True)
    out, w = _self_attn(x, torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 4))
    assert torch.all(w > 0) and torch.allclose(w.sum(-1), torch.ones(6))
    # position 0 depends on the last position (no causal restriction)
    out[0].sum().backward()
    assert x.grad[-1].abs().sum() > 0


def test_sa01_projections_are_learned_parameters():
    assert correct_choice("sa-01").startswith("Q = X W_Q, K = X W_K")
    m = nn.MultiheadAttention(16, 1, batch_first=True)
    assert m.in_proj_weight.requires_grad and m.in_proj_weight.shape == (48, 16)


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


def test_sdp09_subtracting_max_is_exact_and_avoids_overflow():
    assert correct_choice("sdp-09").startswith("Softmax ignores a constant")
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
    assert "k of shape (B, H, S, 64)" in Q["sdp-11"]["prompt"]["en"]
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 64), torch.randn(1, 2, 5, 64), torch.randn(1, 2, 5, 128)
    out = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, ref_attention(q, k, v, scale=1 / 8), atol=1e-5)
    assert not torch.allclose(out, ref_attention(q, k, v, scale=1 / math.sqrt(128)), atol=1e-5)
    assert not torch.allclose(out, ref_attention(q, k, v, scale=1 / math.sqrt(5)), atol=1e-5)
    assert not torch.allclose(out, ref_attention(q, k, v, scale=1 / math.sqrt(128 * 2)), atol=1e-5)


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
    assert "all T tokens" in correct_choice("mh-01")
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


def test_mh09_output_projection_mixes_heads():
    assert correct_choice("mh-09").startswith("It mixes the concatenated head outputs")
    m = nn.MultiheadAttention(16, 4)
    assert m.out_proj.weight.shape == (16, 16)  # every output feature sees every head's channels


# ---------------------------------------------------------------- cross-attention facts


def test_ca06_cross_attention_step_cost_does_not_grow():
    assert Q["ca-06"]["answer"] is True
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    enc, dec = torch.randn(1, 11, 16), torch.randn(1, 5, 16)
    full, _ = attn(dec, enc, enc)
    last, _ = attn(dec[:, -1:], enc, enc)  # one new query against the same S keys
    assert torch.allclose(full[:, -1:], last, atol=1e-5)
    S, H, d = 11, 4, 4
    per_step = {t: sdpa_flop_count((1, H, 1, d), (1, H, S, d), (1, H, S, d)) for t in (1, 100, 1000)}
    assert len(set(per_step.values())) == 1
    self_steps = {t: sdpa_flop_count((1, H, 1, d), (1, H, t, d), (1, H, t, d)) for t in (1, 100)}
    assert self_steps[100] == 100 * self_steps[1]  # the self-attention step grows with t


def test_ca08_cached_cross_kv_and_shape():
    assert starts(correct_choices("ca-08")) == ["During", "Every", "Per"]
    # the encoder output is fixed, so K/V for cross-attention can be reused step to step
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    enc, dec = torch.randn(1, 11, 16), torch.randn(1, 5, 16)
    full, w = attn(dec, enc, enc)
    steps = torch.cat([attn(dec[:, t:t + 1], enc, enc)[0] for t in range(5)], dim=1)
    assert torch.allclose(full, steps, atol=1e-5) and tuple(w.shape) == (1, 5, 11)


def test_ca18_each_decoder_layer_has_its_own_cross_projections():
    assert starts(correct_choices("ca-18")) == ["Each", "For"]
    layer = nn.TransformerDecoderLayer(16, 4, batch_first=True)
    dec = nn.TransformerDecoder(layer, num_layers=3)
    weights = [m.multihead_attn.in_proj_weight for m in dec.layers]
    assert len({w.data_ptr() for w in weights}) == 3  # separate tensors, trained separately
    # fixed-size cross cache: 2 * layers * S * H * d_k values
    layers, S, H, d_k = 3, 11, 4, 4
    cache = [torch.empty(2, 1, H, S, d_k, device="meta") for _ in range(layers)]
    assert sum(c.numel() for c in cache) == 2 * layers * S * H * d_k


def test_ca19_swapped_scores_fail_in_cross_attention():
    assert correct_choice("ca-19").startswith("The scores are S × L")
    torch.manual_seed(0)
    L, S, d = 4, 7, 8
    q, k, v = torch.randn(L, d), torch.randn(S, d), torch.randn(S, 5)
    w = (k @ q.T / math.sqrt(d)).softmax(-1)
    assert w.shape == (S, L) and torch.allclose(w.sum(-1), torch.ones(S))  # normalised over queries
    with pytest.raises(RuntimeError):
        w @ v
    # square case: runs silently, wrong
    q2 = torch.randn(S, d)
    swapped = (k @ q2.T / math.sqrt(d)).softmax(-1) @ v
    assert not torch.allclose(swapped, ref_attention(q2, k, v), atol=1e-4)


def test_ca21_key_padding_mask_covers_source_keys_only():
    assert Q["ca-21"]["answer"] is True
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    dec, enc = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    src_pad = torch.zeros(2, 9, dtype=torch.bool)
    src_pad[1, 6:] = True
    out, _ = attn(dec, enc, enc, key_padding_mask=src_pad)
    assert out.shape == (2, 5, 16)
    with pytest.raises((RuntimeError, AssertionError)):
        attn(dec, enc, enc, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))


def test_ca10_cross_attention_invariant_to_source_order():
    assert correct_choice("ca-10").startswith("It is unchanged")
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
