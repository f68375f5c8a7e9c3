"""Hidden checks for ex9: grouped-query attention (GQA), with multi-query and multi-head as its ends."""

import torch
import torch.nn.functional as F

from attn_drill.checks.harness import (
    DTYPES, _t, builtin_multihead, check, compare, compare_gradients, copy_parameters, describe, fail, fail_naming,
    mistake,
    randn, random_mask,
)
from attn_drill.checks.mistakes import ATTENTION_VARIANTS, attention
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    check_defines, check_static_scan, every_parameter_learns, outputs, twin,
)

NAME = "GroupedQueryAttention"
# (E, H, H_kv, B, T, bias): real groups (1 < H_kv < H), MQA, MHA, batch 1, length 1, odd sizes.
CONFIGS = [(8, 4, 2, 2, 5, False), (12, 6, 3, 1, 4, True), (6, 3, 1, 3, 4, False), (8, 2, 2, 2, 3, True),
           (16, 8, 2, 2, 6, False), (12, 6, 2, 2, 1, True)]


def pair(learner, reference, config, dtype=torch.float64, device=None, seed=0):
    E, H, H_kv, _, _, bias = config
    return twin(learner, reference.GroupedQueryAttention, NAME, E, H, H_kv, bias=bias, dtype=dtype, device=device,
                seed=seed)


def forward(learner, mine, x, mask=None):
    return outputs(learner.run(mine, x, mask=mask), 1, f"{NAME}.forward")[0]


def heads(t, n, view=False):  # (B, T, n * D) -> (B, n, T, D); a direct view mixes time steps and heads
    B, T, W = t.shape
    return t.reshape(B, n, T, W // n) if view else t.view(B, T, n, W // n).transpose(1, 2)


def gqa(x, ref, H, H_kv, mask=None, *, repeat=False, split_view=False, merge_view=False, **switches):
    """Grouped-query attention with ``ref``'s weights; the keywords reproduce known mistakes."""
    with torch.no_grad():
        B, T, E = x.shape
        q, k, v = (heads(getattr(ref, f"{n}_proj")(x), h, split_view) for n, h in (("q", H), ("k", H_kv), ("v", H_kv)))
        G = H // H_kv
        k, v = ((t.repeat(1, G, 1, 1) if repeat else t.repeat_interleave(G, dim=1)) for t in (k, v))  # (B, H, T, D)
        result = attention(q, k, v, mask, **switches)
        if result is None:
            return None  # the mistake cannot run on these shapes
        y = result[0].reshape(B, T, E) if merge_view else result[0].transpose(1, 2).reshape(B, T, E)  # (B, T, E)
        return ref.out_proj(y)  # (B, T, E)


def gqa_mistakes(x, ref, H, H_kv, mask=None):
    variants = [(mistake("kv-repeat-order"), {"repeat": True}),
                (mistake("heads-split-without-transpose"), {"split_view": True, "merge_view": True}),
                (mistake("heads-split-without-transpose"), {"split_view": True}),
                (mistake("heads-merged-without-transpose"), {"merge_view": True})]
    variants += [(m, s) for m, s in ATTENTION_VARIANTS if mask is not None or not m.key.startswith("mask")]
    return [(known, lambda s=switches: gqa(x, ref, H, H_kv, mask, **s)) for known, switches in variants]


def label(config, x, mask=None):
    E, H, H_kv, _, _, bias = config
    return f"embed_dim={E}, num_heads={H}, num_kv_heads={H_kv}, bias={bias}, " + describe(x=x, mask=mask)


def compare_out(what, out, expected, config, x, ref, mask=None, inputs=None):
    E, H, H_kv, *_ = config
    compare(what, out, expected, inputs=inputs or label(config, x, mask), mistakes=gqa_mistakes(x, ref, H, H_kv, mask))


@check("out matches the reference with the same weights (float64 and float32, six shapes, with masks)",
       zh="权重相同时 out 与参考实现一致（float64 和 float32，六种形状，带掩码）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, config in enumerate(CONFIGS):
            E, H, H_kv, B, T, _ = config
            mine, ref = pair(learner, reference, config, dtype, device, seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            # no mask, a (T, T) mask and a per-batch (B, 1, T, T) mask, both polarities present
            for mask in (None, random_mask(T, T, device=device, seed=seed), random_mask(B, 1, T, T, device=device)):
                compare_out("out", forward(learner, mine, x, mask), ref(x, mask=mask), config, x, ref, mask)


@check("num_kv_heads = num_heads is ordinary multi-head attention (and matches nn.MultiheadAttention)",
       zh="num_kv_heads = num_heads 时就是普通的多头注意力（并与 nn.MultiheadAttention 一致）")
def check_multi_head(learner, reference, device):
    config = (12, 4, 4, 2, 5, True)
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, config, dtype, device, 7)
        x = randn(2, 5, 12, dtype=dtype, device=device, seed=70)  # (B, T, E)
        mask = random_mask(5, 5, device=device, seed=71)          # (T, T), True = may attend
        out = forward(learner, mine, x, mask)
        compare_out(_t("out (multi-head case)", "out（多头注意力的情况）"), out, ref(x, mask=mask), config, x, ref, mask)
        mha = builtin_multihead(4, torch.cat([ref.q_proj.weight, ref.k_proj.weight, ref.v_proj.weight]),
                                torch.cat([ref.q_proj.bias, ref.k_proj.bias, ref.v_proj.bias]),
                                ref.out_proj.weight, ref.out_proj.bias)
        with torch.no_grad():  # nn.MultiheadAttention's boolean mask has the opposite polarity: True = NOT allowed
            builtin, _ = mha(x, x, x, attn_mask=~mask, need_weights=False)  # (B, T, E)
        compare_out(_t("out against nn.MultiheadAttention (its mask polarity converted: True = not allowed)",
                       "out 对照 nn.MultiheadAttention（掩码极性已转换：True = 不允许）"), out, builtin, config, x, ref,
                    mask)


@check("num_kv_heads = 1 is multi-query attention: every query head uses the single key/value head",
       zh="num_kv_heads = 1 时是多查询注意力（MQA）：每个 query 头都使用唯一的 key/value 头")
def check_multi_query(learner, reference, device):
    config = (12, 6, 1, 2, 5, False)
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, config, dtype, device, 8)
        x = randn(2, 5, 12, dtype=dtype, device=device, seed=80)  # (B, T, E)
        mask = random_mask(2, 1, 5, 5, device=device, seed=81)
        with torch.no_grad():  # the single kv head (B, 1, T, D) broadcasts over the 6 query heads
            y = attention(heads(ref.q_proj(x), 6), ref.k_proj(x)[:, None], ref.v_proj(x)[:, None], mask)[0]
            expected = ref.out_proj(y.transpose(1, 2).reshape(2, 5, 12))  # (B, T, E)
        compare_out(_t("out (multi-query case)", "out（多查询注意力的情况）"), forward(learner, mine, x, mask), expected,
                    config, x, ref, mask)


@check("matches torch's grouped-query path: scaled_dot_product_attention(..., enable_gqa=True)",
       zh="与 torch 的分组查询注意力路径一致：scaled_dot_product_attention(..., enable_gqa=True)")
def check_matches_torch_gqa(learner, reference, device):
    for dtype in DTYPES:
        for seed, config in enumerate([(16, 8, 2, 2, 6, True), (12, 6, 3, 1, 5, False)]):
            E, H, H_kv, B, T, _ = config
            mine, ref = pair(learner, reference, config, dtype, device, 20 + seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=90 + seed)  # (B, T, E)
            mask = random_mask(B, 1, T, T, device=device, seed=91 + seed)
            with torch.no_grad():
                q, k, v = heads(ref.q_proj(x), H), heads(ref.k_proj(x), H_kv), heads(ref.v_proj(x), H_kv)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (B, H, T, D)
                expected = ref.out_proj(y.transpose(1, 2).reshape(B, T, E))                  # (B, T, E)
            compare_out(_t("out against torch's scaled_dot_product_attention(enable_gqa=True)",
                           "out 对照 torch 的 scaled_dot_product_attention(enable_gqa=True)"),
                        forward(learner, mine, x, mask), expected, config, x, ref, mask)


@check("k_proj and v_proj project to num_kv_heads * D: the parameter count shrinks with num_kv_heads",
       zh="k_proj 和 v_proj 投影到 num_kv_heads * D：参数量随 num_kv_heads 减少")
def check_parameter_counts(learner, reference):
    for E, H, H_kv, bias in [(12, 6, 2, False), (12, 6, 3, True), (8, 4, 1, True), (8, 4, 4, False)]:
        what, D = f"{NAME}({E}, {H}, {H_kv}, bias={bias})", E // H
        mine = learner.module(NAME, E, H, H_kv, bias=bias)
        shapes = learner.parameters(mine)
        for name in ("k_proj.weight", "v_proj.weight"):
            if shapes.get(name, (H_kv * D, E)) != (H_kv * D, E):
                fail(_t(f"{what}.{name} has shape {shapes[name]}, expected ({H_kv * D}, {E}): it maps "
                        f"E = {E} -> num_kv_heads * D = {H_kv} * {D} features.",
                        f"{what}.{name} 的形状为 {shapes[name]}，应为 ({H_kv * D}, {E})：它把 E = {E} 映射到 "
                        f"num_kv_heads * D = {H_kv} * {D} 个特征。"))
        copy_parameters(learner, what, mine, reference.GroupedQueryAttention(E, H, H_kv, bias=bias))


@check("a query whose keys are all masked gets zero attention output (out = out_proj's bias), no NaN",
       zh="key 全部被屏蔽的 query 得到全零的注意力输出（out = out_proj 的 bias），没有 NaN")
def check_fully_masked_rows(learner, reference, device):
    config = (8, 4, 2, 2, 5, True)
    mine, ref = pair(learner, reference, config, device=device, seed=30)
    x = randn(2, 5, 8, device=device, seed=31, requires_grad=True)  # (B, T, E)
    mask = random_mask(5, 5, device=device, seed=32)
    mask[2] = False  # query 2 may attend to nothing
    inputs = label(config, x, mask) + _t(", row 2 fully masked", "，第 2 行全部被屏蔽")
    out, expected = forward(learner, mine, x, mask), ref(x, mask=mask)
    if not torch.isfinite(out).all():
        nan = expected.detach().clone()
        nan[:, 2] = float("nan")
        fail_naming(_t(f"out has NaN or inf for {inputs}: the softmax of a row of -inf is NaN; set those weights to 0.",
                       f"out 含有 NaN 或 inf（输入：{inputs}）：一整行 -inf 的 softmax 是 NaN；把这些权重设为 0。"),
                    out, [(mistake("fully-masked-nan"), lambda: nan)])
    compare_out("out", out, expected, config, x, ref, mask, inputs)
    compare(_t("out at the fully-masked query 2", "全部被屏蔽的 query 2 处的 out"), out[:, 2],
            ref.out_proj.bias.expand(2, 8), inputs=inputs)
    compare_gradients(learner, out, expected, {"x": x}, inputs=inputs,
                      nonfinite=_t("a fully-masked row must not poison the backward pass (zero the NaN weights with "
                                   "masked_fill, not arithmetic).",
                                   "全部被屏蔽的行不能破坏反向传播（用 masked_fill 而不是算术运算把 NaN 权重置零）。"))


@check("large logits (about 1e4) give finite, correct results",
       zh="很大的 logits（约 1e4）给出有限且正确的结果")
def check_large_logits(learner, reference, device):
    config = (8, 4, 2, 2, 5, False)
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, config, dtype, device, 40)
        x = 300 * randn(2, 5, 8, dtype=dtype, device=device, seed=41)  # (B, T, E): scores of order 1e4
        inputs = label(config, x) + _t(", scores near 1e4", "，分数约为 1e4")
        out = forward(learner, mine, x)
        if not torch.isfinite(out).all():
            fail(_t(f"out overflows to inf/NaN for {inputs}: subtract each row's maximum before exp "
                    "(torch.softmax does this for you).",
                    f"out 溢出成了 inf/NaN（输入：{inputs}）：在 exp 之前减去每行的最大值（torch.softmax 会替你这样做）。"))
        compare_out("out", out, ref(x), config, x, ref, inputs=inputs)


@check("gradients of x and of every parameter match the reference; every parameter gets one",
       zh="x 和每个参数的梯度都与参考实现一致；每个参数都得到梯度")
def check_gradients(learner, reference, device):
    for seed, config in enumerate([(12, 6, 2, 2, 5, True), (8, 4, 1, 1, 3, False)]):
        E, H, H_kv, B, T, _ = config
        mine, ref = pair(learner, reference, config, device=device, seed=50 + seed)
        x = randn(B, T, E, device=device, seed=51 + seed, requires_grad=True)  # (B, T, E)
        mask = random_mask(B, 1, T, T, device=device, seed=52 + seed)
        inputs = label(config, x, mask)
        compare_gradients(learner, forward(learner, mine, x, mask), ref(x, mask=mask), {"x": x}, inputs=inputs)
        every_parameter_learns(learner, f"{NAME}({E}, {H}, {H_kv})", mine, ref,
                               lambda: forward(learner, mine, x, mask), lambda: ref(x, mask=mask), inputs=inputs)


@check("head counts that do not divide raise ValueError naming the argument",
       zh="头数不能整除时抛出指明该参数的 ValueError")
def check_bad_arguments(learner):
    learner.raises(_t("embed_dim=10, num_heads=4 (10 is not divisible by 4)", "embed_dim=10，num_heads=4（10 不能被 4 整除）"),
                   ("embed_dim", "num_heads"), NAME, 10, 4, 2)
    for case, args in [(_t("num_heads=4, num_kv_heads=3 (4 is not divisible by 3)",
                           "num_heads=4，num_kv_heads=3（4 不能被 3 整除）"), (8, 4, 3)),
                       (_t("num_heads=4, num_kv_heads=8 (more kv heads than query heads)",
                           "num_heads=4，num_kv_heads=8（KV 头比 query 头多）"), (8, 4, 8)),
                       ("num_kv_heads=0", (8, 4, 0))]:
        learner.raises(case, ("num_kv_heads",), NAME, *args)
