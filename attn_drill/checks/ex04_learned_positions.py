"""Hidden checks for ex4: the learned positional embedding."""

import torch

from attn_drill.checks.harness import DTYPES, CheckFailure, _t, check, compare, describe, fail, mistake, randn
from attn_drill.checks.properties import check_defines, check_static_scan, forward_raises, outputs, twin  # noqa: F401

CLASS = "LearnedPositionalEmbedding"
NOT_PARAMETER = "learned-pos-not-parameter"
# (B, T, E, max_len, offset): B != T everywhere, batch 1, length 1, odd widths, offset + T == max_len.
SHAPES = [(2, 5, 6, 10, 0), (1, 1, 4, 8, 0), (3, 4, 6, 10, 3), (2, 3, 5, 7, 4), (4, 2, 3, 5, 1), (1, 6, 4, 6, 0)]


def pair(learner, reference, max_len, E, dtype=torch.float64, device=None, seed=0):
    """The learner's module and the reference with the same weight, drawn from N(0, 1): values of
    both signs as large as x's (the 0.02 initialisation would hide a wrong slice less well)."""
    def build(*args):
        module = reference.LearnedPositionalEmbedding(*args)
        torch.nn.init.normal_(module.weight)  # twin seeded the generator
        return module
    return twin(learner, build, CLASS, max_len, E, dtype=dtype, device=device, seed=seed)


def forward(learner, mine, x, offset=None):
    kwargs = {} if offset is None else {"offset": offset}
    what = _t(f"{CLASS}.forward on x {tuple(x.shape)}, {f'offset={offset}' if kwargs else 'offset at its default'}",
              f"{CLASS}.forward（x {tuple(x.shape)}，{f'offset={offset}' if kwargs else 'offset 取默认值'}）")
    return outputs(learner.run(mine, x, what=what, **kwargs), 1, what)[0]


def forward_mistakes(x, weight, offset):
    """Known mistakes on these inputs; one that cannot run on them gives None."""
    (B, T, _), max_len = x.shape, weight.size(0)
    return [(mistake("learned-pos-offset-ignored"), lambda: x + weight[:T]),
            (mistake("learned-pos-batch-broadcast"),
             lambda: x + weight[offset: offset + B, None] if offset + B <= max_len else None),  # (B, 1, E)
            (mistake("learned-pos-shifted-by-one"),
             lambda: x + weight[offset + 1: offset + 1 + T] if offset + 1 + T <= max_len else None)]  # (T, E)


def inputs(x, max_len, offset):
    return f"{CLASS}({max_len}, {x.size(-1)}), {describe(x=x)}, offset={offset}"


@check("weight is a registered nn.Parameter of shape (max_len, d_model), in parameters() and state_dict()",
       zh="weight 是已注册的 nn.Parameter，形状为 (max_len, d_model)，出现在 parameters() 和 state_dict() 中")
def check_parameter(learner):
    for max_len, d_model in ((10, 6), (3, 8), (7, 1)):
        what = f"{CLASS}({max_len}, {d_model})"
        mine = learner.module(CLASS, max_len, d_model)
        params, state = learner.parameters(mine), learner.state(mine)
        if "weight" not in params:
            try:
                learner.attr(mine, "weight")
            except CheckFailure:
                fail(_t(f"{what} has no attribute weight (its parameters: {sorted(params) or 'none'}). The "
                        "statement asks for self.weight = nn.Parameter(...) of shape (max_len, d_model), on the module "
                        "itself.",
                        f"{what} 没有 weight 属性（它的参数：{sorted(params) or '无'}）。题目要求在模块本身上设置 "
                        "self.weight = nn.Parameter(...)，形状为 (max_len, d_model)。"))
            kind = _t("a buffer" if "weight" in state else "a plain attribute",
                      "一个 buffer" if "weight" in state else "一个普通属性")
            fail(_t(f"{what}.weight is {kind}, not an nn.Parameter: parameters() does not yield it and no optimiser "
                    "ever trains it. Write self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02).",
                    f"{what}.weight 是{kind}，而不是 nn.Parameter：parameters() 不会给出它，任何优化器都不会训练它。"
                    "请写 self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)。"), NOT_PARAMETER)
        if not learner.trainable(mine)["weight"]:   # not its values: the statement leaves the init free
            fail(_t(f"{what}.weight has requires_grad=False, so it is never trained.",
                    f"{what}.weight 的 requires_grad=False，所以它永远不会被训练。"), NOT_PARAMETER)
        if params["weight"] != (max_len, d_model):
            fail(_t(f"{what}.weight has shape {params['weight']}, expected (max_len, d_model) = ({max_len}, "
                    f"{d_model}).",
                    f"{what}.weight 的形状为 {params['weight']}，应为 (max_len, d_model) = ({max_len}, {d_model})。"))


@check("forward adds weight[offset:offset+T] to every sequence (six shapes and offsets, float64 and float32)",
       zh="forward 给每个序列加上 weight[offset:offset+T]（六种形状和 offset，float64 和 float32）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, max_len, offset) in enumerate(SHAPES):
            mine, ref = pair(learner, reference, max_len, E, dtype, device, seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=50 + seed)  # (B, T, E)
            compare("out", forward(learner, mine, x, offset or None), ref(x, offset=offset),
                    inputs=inputs(x, max_len, offset) + ("" if offset else _t(" (the default)", "（默认值）")),
                    mistakes=forward_mistakes(x, ref.weight.detach(), offset))


@check("offsets for decoding: a sequence fed in pieces, or one token at a time, equals one full pass",
       zh="解码时的 offset：把序列分段输入或逐个 token 输入，结果都与一次完整计算相同")
def check_decoding(learner, reference, device):
    max_len, (B, T, E) = 8, (2, 6, 4)
    mine, ref = pair(learner, reference, max_len, E, device=device, seed=60)
    x, weight = randn(B, T, E, device=device, seed=61), ref.weight.detach()  # (B, T, E), (max_len, E)
    for cuts in ((0, 3, 4, 6), tuple(range(T + 1))):
        spans = list(zip(cuts, cuts[1:]))
        pieces = [forward(learner, mine, x[:, a:b], a) for a, b in spans]  # (B, b - a, E) each
        if [tuple(piece.shape) for piece in pieces] != [(B, b - a, E) for a, b in spans]:
            shapes = [tuple(piece.shape) for piece in pieces]
            fail(_t(f"forward on the pieces of x {tuple(x.shape)} cut at {list(cuts)} returned shapes {shapes}.",
                    f"对 x {tuple(x.shape)} 在 {list(cuts)} 处切开的各段调用 forward，返回的形状是 {shapes}。"))
        ignored = lambda: torch.cat([x[:, a:b] + weight[: b - a] for a, b in spans], dim=1)  # noqa: E731
        compare(_t("the pieces joined along T", "沿 T 拼接起来的各段"), torch.cat(pieces, dim=1), ref(x),
                inputs=_t(f"{CLASS}({max_len}, {E}), {describe(x=x)} fed as "
                          + ", ".join(f"x[:, {a}:{b}] at offset={a}" for a, b in spans),
                          f"{CLASS}({max_len}, {E})，{describe(x=x)}，按 "
                          + "、".join(f"x[:, {a}:{b}]（offset={a}）" for a, b in spans) + " 输入"),
                mistakes=[(mistake("learned-pos-offset-ignored"), ignored)])


@check("the gradient trains exactly the rows used, summed over the batch (so one SGD step moves only those)",
       zh="梯度恰好只训练用到的行，并在 batch 上求和（所以一步 SGD 只改变这些行）")
def check_training(learner, reference, device):
    max_len, (B, T, E), offset = 9, (3, 4, 5), 2
    mine, _ = pair(learner, reference, max_len, E, device=device, seed=70)
    x = randn(B, T, E, device=device, seed=71, requires_grad=True)  # (B, T, E)
    upstream = randn(B, T, E, device=device, seed=72)  # (B, T, E): d loss / d out
    what, used = inputs(x, max_len, offset), _t(f"rows {offset}..{offset + T - 1}", f"第 {offset}..{offset + T - 1} 行")
    out = forward(learner, mine, x, offset)
    if not out._worker_requires_grad:
        fail(_t(f"out is cut off from the graph for {what} (no grad_fn): do not detach it.",
                f"out 与计算图断开了（输入：{what}；没有 grad_fn）：不要 detach 它。"))
    (grad_x,), params = learner.grad([out], [upstream], [x], module=mine)
    grad = params.get("weight")  # (max_len, E)
    if grad is None:
        fail(_t(f"{CLASS}.weight received no gradient for {what}: add a slice of self.weight itself (not .data, "
                "not a detached copy).",
                f"{CLASS}.weight 没有收到梯度（输入：{what}）：请加上 self.weight 本身的切片（不是 .data，"
                "也不是 detach 后的副本）。"))
    want = torch.zeros(max_len, E, dtype=torch.float64, device=device)  # (max_len, E)
    want[offset: offset + T] = upstream.sum(0)  # the rows used get the batch sum
    stray = [i for i in range(max_len) if not offset <= i < offset + T and grad[i].abs().max().item() != 0]
    if stray:
        fail(_t(f"rows {stray} of weight got a nonzero gradient for {what}, but forward uses only {used}: slice "
                "weight[offset:offset + T], do not mix in the rest of the table.",
                f"weight 的第 {stray} 行得到了非零梯度（输入：{what}），但 forward 只用到{used}：请切片 "
                "weight[offset:offset + T]，不要混入表的其余部分。"))
    compare(_t("the gradient of weight", "weight 的梯度"), grad, want,
            inputs=_t(f"{what} ({used} get the upstream gradient summed over the batch, every other row 0)",
                      f"{what}（{used}得到在 batch 上求和的上游梯度，其余各行为 0）"))
    if grad_x is None:
        fail(_t(f"x received no gradient for {what}: out must be x plus the position vectors.",
                f"x 没有收到梯度（输入：{what}）：out 必须是 x 加上位置向量。"))
    compare(_t("the gradient of x", "x 的梯度"), grad_x, upstream,
            inputs=_t(f"{what} (out = x + ..., so it passes unchanged)", f"{what}（out = x + ...，所以梯度原样传回）"))


@check("offset + T > max_len raises ValueError naming max_len",
       zh="offset + T > max_len 时抛出指明 max_len 的 ValueError")
def check_too_long(learner, reference, device):
    mine, _ = pair(learner, reference, 6, 4, device=device, seed=80)
    for (B, T), offset in (((2, 7), 0), ((2, 3), 4), ((1, 1), 6)):
        case = _t(f"max_len = 6, x ({B}, {T}, 4), offset={offset} (offset + T = {offset + T})",
                  f"max_len = 6，x ({B}, {T}, 4)，offset={offset}（offset + T = {offset + T}）")
        forward_raises(learner, case, ("max_len",), mine, randn(B, T, 4, device=device, seed=81), offset=offset)


@check("out keeps x's dtype and device; x and weight are not modified",
       zh="out 保持 x 的 dtype 和 device；x 和 weight 都没有被修改")
def check_untouched(learner, reference, device):
    for dtype in DTYPES:
        mine, ref = pair(learner, reference, 7, 4, dtype, device, seed=90)
        x = randn(3, 5, 4, dtype=dtype, device=device, seed=91)  # (B, T, E); modifying it fails in the worker
        compare("out", forward(learner, mine, x, 1), ref(x, offset=1), inputs=inputs(x, 7, 1))
        compare(_t("weight after forward", "forward 之后的 weight"), learner.attr(mine, "weight"), ref.weight.detach(),
                inputs=inputs(x, 7, 1) + _t(": forward must not modify weight in place", "：forward 不能原地修改 weight"))
