"""Hidden checks for ex5: masked_softmax and the bottom-right aligned causal mask."""

import torch

from attn_drill.checks.harness import (
    DTYPES, _t, check, compare, describe, equals_line, expect_tensor, fail, mistake, projection, randn, random_mask,
    reference_grads,
)
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    check_defines, check_static_scan, device_honoured, masked_get_zero, rows_sum_to_one,
)

# (scores shape, mask shape): broadcasting from (L, S), (B, 1, L, S) and key padding (B, 1, 1, S);
# batch 1, length 1, L != S, odd sizes, S = 1.
CASES = [((2, 3, 5, 7), (5, 7)), ((2, 3, 5, 7), (2, 1, 5, 7)), ((2, 2, 4, 6), (2, 1, 1, 6)),
         ((1, 1, 4), (1, 4)), ((3, 4, 3), (4, 3)), ((2, 5, 1), (5, 1)), ((1, 6, 6), (1, 6, 6))]
SWITCHES = [("mask-inverted", {"invert": True}), ("mask-ignored", {"ignore": True}),
            ("mask-after-softmax", {"after": True}), ("fully-masked-nan", {"nan_rows": True}),
            ("fully-masked-uniform", {"fill": -1e9})]


def variant(scores, mask, dim=-1, *, invert=False, ignore=False, after=False, nan_rows=False, fill=float("-inf")):
    """A masked softmax with switches that reproduce the classic mistakes."""
    scores, mask = scores.detach(), (~mask if invert else mask).expand_as(scores)  # (..., L, S) each
    if ignore or after:
        weights = torch.softmax(scores, dim=dim)
        return weights.masked_fill(~mask, 0.0) if after else weights
    weights = torch.softmax(scores.masked_fill(~mask, fill), dim=dim)
    return weights if nan_rows else weights.nan_to_num(0.0)


def softmax_mistakes(scores, mask, dim=-1):
    candidates = [(mistake(key), lambda s=switches: variant(scores, mask, dim, **s)) for key, switches in SWITCHES]
    if dim not in (-1, scores.dim() - 1):
        candidates.append((mistake("dim-ignored"), lambda: variant(scores, mask)))
    return candidates


def softmax_agrees(learner, reference, scores, mask, note="", **dim):
    """The learner's masked_softmax equals the reference's on these inputs: (got, expected, inputs)."""
    inputs = describe(scores=scores, mask=mask, **dim) + note
    got = expect_tensor(learner.call("masked_softmax", scores, mask, **dim), "masked_softmax()")
    expected = reference.masked_softmax(scores, mask, **dim)
    compare("masked_softmax", got, expected, inputs=inputs, mistakes=softmax_mistakes(scores, mask, **dim))
    return got, expected, inputs


def compare_scores_grad(learner, got, expected, scores, *, inputs):
    """The gradient with respect to scores is finite (a NaN names fully-masked-nan) and equals the reference's."""
    if not got._worker_requires_grad:
        fail(_t(f"masked_softmax's output is cut off from the graph (no grad_fn) for {inputs}: do not detach it.",
                f"masked_softmax 的输出与计算图断开了（没有 grad_fn；输入：{inputs}）：不要 detach 它。"))
    (grad,), _ = learner.grad([got], [projection(got)], [scores])
    if grad is None:
        fail(_t(f"masked_softmax's output does not depend on scores through autograd for {inputs}.",
                f"masked_softmax 的输出没有通过 autograd 依赖于 scores（输入：{inputs}）。"))
    if not torch.isfinite(grad).all():
        fail(_t(f"the gradient with respect to scores has NaN or inf for {inputs}: a fully-masked row is all -inf, "
                "its softmax NaN, and the NaN flows back even if the forward result is zeroed afterwards (as with an "
                "additive 0 / -inf mask). Fill the masked scores with masked_fill (zero gradient there), or avoid the "
                "0 / 0.",
                f"对 scores 的梯度含有 NaN 或 inf（输入：{inputs}）：全部被屏蔽的行全是 -inf，它的 softmax 是 NaN，"
                "即使之后把前向结果置零，NaN 也会在反向传播中流回（加性 0 / -inf 掩码就是这样）。请用 masked_fill "
                "填充被屏蔽的分数（那里的梯度为零），或者避免 0 / 0。"),
             "fully-masked-nan")
    compare(_t("the gradient with respect to scores", "对 scores 的梯度"), grad,
            reference_grads(expected, {"scores": scores})["scores"],
            inputs=inputs)


def causal(L, S, device=None):
    """The bottom-right aligned mask j <= i + (S - L) (tril(diagonal=S - L)), and known mistaken masks."""
    d = torch.arange(S, device=device)[None, :] - torch.arange(L, device=device)[:, None]  # (L, S): j - i
    return d <= S - L, [(mistake("causal-top-left"), d <= 0), (mistake("causal-inverted"), d > S - L),
                        (mistake("causal-inverted"), d >= S - L), (mistake("causal-off-by-one"), d < S - L)]


def compare_mask(what, got, expected, *, inputs, mistakes=()):
    """Fail unless ``got`` is a boolean tensor equal to ``expected`` (compare is for floating-point
    results); name a known mistaken mask."""
    got = expect_tensor(got, what)
    if got.shape != expected.shape or got.dtype != torch.bool or got.device.type != expected.device.type:
        fail(_t(f"{what} is wrong for {inputs}: got {tuple(got.shape)} {got.dtype} on {got.device}, expected (L, S) "
                f"= {tuple(expected.shape)} torch.bool (True = may attend) on {expected.device}, the device asked for.",
                f"{what} 不正确（输入：{inputs}）：得到的是位于 {got.device} 的 {tuple(got.shape)} {got.dtype}，应为位于"
                f"所要求的 device {expected.device} 上的 (L, S) = {tuple(expected.shape)} torch.bool"
                "（True = 可以关注）。"))
    if not torch.equal(got, expected):
        i, j = (got != expected).nonzero()[0].tolist()
        count = int((got != expected).sum())
        problem = _t(f"{what} is wrong for {inputs}: {count} entries differ, first at [{i}, {j}] "
                     f"(query {i} {'may' if expected[i, j] else 'may not'} see key {j}).",
                     f"{what} 不正确（输入：{inputs}）：有 {count} 个位置不同，第一个在 [{i}, {j}]"
                     f"（query {i} {'可以' if expected[i, j] else '不可以'}关注 key {j}）。")
        found = [known for known, wrong in mistakes if torch.equal(got, wrong)]
        fail(problem + equals_line(found[0], "mask") if found else problem, found[0].key if found else None)


@check("masked_softmax matches the reference (float64 and float32, masks broadcast from (L, S), "
       "(B, 1, L, S) and (B, 1, 1, S))",
       zh="masked_softmax 与参考实现一致（float64 和 float32，掩码从 (L, S)、(B, 1, L, S) 和 (B, 1, 1, S) 广播）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (shape, mask_shape) in enumerate(CASES):
            scores = 3 * randn(*shape, dtype=dtype, device=device, seed=seed)  # (..., L, S), both signs
            softmax_agrees(learner, reference, scores, random_mask(*mask_shape, device=device, seed=seed))


@check("masked positions get exactly 0 and the allowed positions of each row sum to 1",
       zh="被屏蔽的位置恰好得到 0，每行允许的位置之和为 1")
def check_rows(learner, reference, device):
    scores = 3 * randn(2, 3, 5, 7, device=device, seed=20)  # (B, H, L, S)
    mask = random_mask(2, 1, 5, 7, device=device, seed=21)  # (B, 1, L, S), every row allowed somewhere
    got = expect_tensor(learner.call("masked_softmax", scores, mask), "masked_softmax()")
    inputs = describe(scores=scores, mask=mask)
    if got.shape != scores.shape:
        fail(_t(f"masked_softmax returned shape {tuple(got.shape)} for {inputs}; expected the scores' shape "
                "(2, 3, 5, 7).",
                f"masked_softmax 返回的形状为 {tuple(got.shape)}（输入：{inputs}）；应为 scores 的形状 (2, 3, 5, 7)。"))
    masked_get_zero(got, mask, inputs=inputs, mistakes=softmax_mistakes(scores, mask))
    rows_sum_to_one(got, inputs=inputs, mistakes=softmax_mistakes(scores, mask))


@check("a fully-masked row gives zeros, with finite gradients (also where a 0 / -inf additive mask would give NaN)",
       zh="全部被屏蔽的行得到全零，梯度有限（在 0 / -inf 加性掩码会给出 NaN 的情况下也是如此）")
def check_fully_masked(learner, reference, device):
    for dtype in DTYPES:
        for seed, (shape, mask_shape, rows) in enumerate([((2, 3, 5, 7), (5, 7), _t("row 2 of the mask", "掩码的第 2 行")),
                                                          ((3, 2, 4, 6), (3, 1, 1, 6),
                                                           _t("batch 1 (key padding)", "batch 1（key 填充）"))]):
            scores = randn(*shape, dtype=dtype, device=device, seed=30 + seed, requires_grad=True)
            mask = random_mask(*mask_shape, device=device, seed=31 + seed)
            mask[2 if len(mask_shape) == 2 else 1] = False  # query 2 sees nothing / every key of sequence 1 is padding
            got, expected, inputs = softmax_agrees(learner, reference, scores, mask,
                                                   _t(f", {rows} all False", f"，{rows}全为 False"))
            compare_scores_grad(learner, got, expected, scores, inputs=inputs)


@check("gradients with respect to scores match the reference",
       zh="对 scores 的梯度与参考实现一致")
def check_gradients(learner, reference, device):
    for dtype in DTYPES:
        scores = (2 * randn(2, 3, 5, 7, dtype=dtype, device=device, seed=40)).requires_grad_()  # (B, H, L, S)
        mask = random_mask(2, 1, 5, 7, device=device, seed=41)
        got = expect_tensor(learner.call("masked_softmax", scores, mask), "masked_softmax()")
        compare_scores_grad(learner, got, reference.masked_softmax(scores, mask), scores,
                            inputs=describe(scores=scores, mask=mask))


@check("large logits (about 1e4, float64 and float32) give finite, correct weights",
       zh="很大的 logits（约 1e4，float64 和 float32）给出有限且正确的权重")
def check_large_logits(learner, reference, device):
    cases = [(torch.float64, 1e4, 3.0), (torch.float64, -1e4, 3.0), (torch.float64, 0.0, 1e4),
             (torch.float32, 0.0, 1e4), (torch.float32, 1e4, 3.0), (torch.float32, -1e4, 3.0)]
    for seed, (dtype, offset, spread) in enumerate(cases):
        scores = offset + spread * randn(2, 4, 6, dtype=dtype, device=device, seed=50 + seed)  # (B, L, S)
        mask = random_mask(4, 6, device=device, seed=51 + seed)
        inputs = describe(scores=scores, mask=mask) + _t(f", scores {offset:g} + {spread:g} * randn",
                                                         f"，scores 为 {offset:g} + {spread:g} * randn")
        got = expect_tensor(learner.call("masked_softmax", scores, mask), "masked_softmax()")
        if got.shape == scores.shape and not torch.isfinite(got).all():
            fail(_t(f"masked_softmax gives NaN or inf for {inputs} (no row is fully masked): exp() of about "
                    f"{abs(offset) + spread:g} overflows (or underflows to 0 / 0). Subtract each row's maximum before "
                    "exp (torch.softmax does this for you).",
                    f"masked_softmax 给出了 NaN 或 inf（输入：{inputs}；没有一行是全部被屏蔽的）：约 "
                    f"{abs(offset) + spread:g} 的 exp() 溢出了（或下溢成 0 / 0）。在 exp 之前减去每行的最大值"
                    "（torch.softmax 会替你这样做）。") + equals_line(mistake("softmax-overflow")),
                 "softmax-overflow")
        # float32 holds 1e4 to about 1e-3: correct stable methods (log-sum-exp) may differ by that much.
        expected, loose = reference.masked_softmax(scores, mask), dtype == torch.float32 and offset != 0
        if not (loose and got.shape == scores.shape and got.dtype == dtype and (got - expected).abs().max() <= 5e-3):
            compare("masked_softmax", got, expected,
                    inputs=inputs + (_t(", held to atol=5e-3", "，按 atol=5e-3 判定") if loose else ""),
                    mistakes=softmax_mistakes(scores, mask))


@check("dim is honoured: the softmax runs over dim=0, dim=1 and dim=-2 of 3-D scores",
       zh="遵从 dim：softmax 分别沿三维 scores 的 dim=0、dim=1 和 dim=-2 计算")
def check_dim(learner, reference, device):
    for dtype in DTYPES:
        scores = 3 * randn(3, 4, 5, dtype=dtype, device=device, seed=60)  # (3, 4, 5)
        for dim, mask in ((0, random_mask(4, 5, 3, device=device, seed=61).movedim(-1, 0)),  # (3, 4, 5): rows on dim 0
                          (1, random_mask(3, 5, 4, device=device, seed=62).movedim(-1, 1)),  # (3, 4, 5): rows on dim 1
                          (-2, random_mask(1, 4, device=device, seed=63).T)):                # (4, 1), broadcast
            softmax_agrees(learner, reference, scores, mask, dim=dim)


@check("causal_mask is bottom-right aligned: j <= i + (S - L), for L == S, L < S and L > S",
       zh="causal_mask 右下对齐：j <= i + (S - L)，覆盖 L == S、L < S 和 L > S")
def check_causal_mask(learner, device):
    for args in [(4, 4), (1, 1), (3, 7), (1, 5), (2, 6), (5, 5), (6, 3), (4, 1), (1,), (5,)]:
        expected, mistakes = causal(args[0], args[-1], device)
        compare_mask(f"causal_mask({', '.join(map(str, args))})", learner.call("causal_mask", *args, device=device),
                     expected, inputs=f"L={args[0]}, S={args[-1]}" + (
                         _t(" (num_keys defaults to num_queries)", "（num_keys 默认等于 num_queries）")
                         if len(args) == 1 else ""), mistakes=mistakes)


@check("causal_mask is a bool tensor on the device asked for (the CPU by default)",
       zh="causal_mask 是位于所要求的 device 上的 bool 张量（默认在 CPU 上）")
def check_causal_device(learner, device):
    for label, where in (("device=torch.device", device), (_t("device as a string", "device 为字符串"), str(device)),
                         (_t("no device", "不给 device"), None)):
        got = learner.call("causal_mask", 3, 5, **({} if where is None else {"device": where}))
        compare_mask(_t(f"causal_mask(3, 5) with {label}", f"causal_mask(3, 5)（{label}）"), got,
                     causal(3, 5, where and device)[0], inputs="L=3, S=5")
    device_honoured(learner, "causal_mask", 3, 5)


@check("masked_softmax with causal_mask(L, S): query i attends to keys 0 .. i + S - L",
       zh="masked_softmax 配合 causal_mask(L, S)：query i 关注 key 0 .. i + S - L")
def check_together(learner, reference, device):
    scores, (expected, wrong) = randn(2, 3, 7, device=device, seed=70), causal(3, 7, device)  # (B, L, S), (L, S)
    got = expect_tensor(learner.call("masked_softmax", scores, learner.call("causal_mask", 3, 7, device=device)),
                        "masked_softmax(scores, causal_mask(3, 7))")
    compare("masked_softmax(scores, causal_mask(3, 7))", got, reference.masked_softmax(scores, expected),
            inputs=describe(scores=scores) + ", L=3, S=7", mistakes=softmax_mistakes(scores, expected) + [
                (known, lambda mask=mask: reference.masked_softmax(scores, mask)) for known, mask in wrong])


@check("a mask that is not boolean raises ValueError naming mask",
       zh="不是布尔类型的掩码抛出指明 mask 的 ValueError")
def check_bad_mask(learner, device):
    scores, keep = randn(2, 5, 7, device=device), random_mask(5, 7, device=device, seed=80)
    additive = torch.zeros(5, 7, dtype=torch.float64, device=device).masked_fill(~keep, float("-inf"))
    for case, mask in ((_t("a float 0 / 1 mask", "float 类型的 0 / 1 mask"), keep.double()),
                       (_t("an additive float 0 / -inf mask", "float 类型的加性 0 / -inf mask"), additive),
                       (_t("an integer (int64) mask", "整数（int64）类型的 mask"), keep.long())):
        learner.raises(case, ("mask",), "masked_softmax", scores, mask)
