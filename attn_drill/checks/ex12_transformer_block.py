"""Hidden checks for ex12: a pre-norm Transformer block (and the multi-head attention inside it)."""

import torch
import torch.nn.functional as F
from torch import nn

from attn_drill.checks.harness import (
    DTYPES, _t, check, compare, compare_gradients, copy_parameters, describe, fail, mistake, randn, random_mask,
    seed_modules,
)
from attn_drill.checks.mistakes import ATTENTION_VARIANTS, attention
from attn_drill.checks.properties import (  # noqa: F401  (check_* are collected here)
    agree, check_defines, check_static_scan, dropout_train_only, eval_is_deterministic, every_parameter_learns,
    finite, indivisible_heads_raise, outputs, twin,
)

NAME = "TransformerBlock"
# (B, T, E, H, F): batch 1, length 1, odd widths, one head, F < E.
SHAPES = [(1, 1, 4, 2, 8), (2, 5, 6, 3, 10), (3, 4, 8, 1, 7), (2, 7, 12, 4, 16), (1, 6, 10, 2, 5)]
BLOCK_VARIANTS = [("post-norm", {"post_norm": True}), ("no-residual", {"residual": ()}),
                  ("no-residual", {"residual": ("attn",)}), ("no-residual", {"residual": ("ffn",)}),
                  ("residual-from-normalized", {"from_normalised": ("attn",)}),
                  ("residual-from-normalized", {"from_normalised": ("ffn",)}),
                  ("residual-from-normalized", {"from_normalised": ("attn", "ffn")}),
                  ("relu-not-gelu", {"act": F.relu}), ("gelu-tanh", {"act": lambda h: F.gelu(h, approximate="tanh")}),
                  ("same-layernorm", {"same_layernorm": True}), ("scale-by-embed-dim", {"embed_scale": True}),
                  ("heads-split-without-transpose", {"split_view": "qkv"}),
                  ("heads-split-without-transpose", {"split_view": "q"}),
                  ("heads-merged-without-transpose", {"merge_view": True})]


def blocks(learner, reference, E, H, F_, dtype=torch.float64, device=None, seed=0, dropout=0.0, edit=None):
    """The learner's block and the reference with the same weights, in eval mode; the LayerNorms
    get random affine parameters (so ln1 and ln2 differ), then ``edit(ref)`` may change any weight."""
    seed_modules(seed)
    ref = reference.TransformerBlock(E, H, F_, dropout=dropout)
    with torch.no_grad():
        for i, norm in enumerate((ref.ln1, ref.ln2)):
            norm.weight.copy_(1 + 0.5 * randn(E, seed=1000 + 10 * seed + i))
            norm.bias.copy_(0.3 * randn(E, seed=2000 + 10 * seed + i))
        if edit is not None:
            edit(ref)
    ref = ref.to(device=device, dtype=dtype).eval()
    mine = learner.module(NAME, E, H, F_, dropout=dropout)
    copy_parameters(learner, f"{NAME}({E}, {H}, {F_})", mine, ref)
    return learner.eval(learner.to(mine, device=device, dtype=dtype)), ref


def forward(learner, block, x, mask=None):
    return outputs(learner.run(block, x, mask=mask), 1, f"{NAME}.forward")[0]


def block_variant(ref, x, mask=None, *, post_norm=False, residual=("attn", "ffn"), from_normalised=(), act=F.gelu,
                  same_layernorm=False, split_view="", merge_view=False, embed_scale=False, **switches):
    """The reference block's forward pass with one classic mistake switched on (None if it cannot run)."""
    B, T, E = x.shape
    H, mha = ref.attn.num_heads, ref.attn

    def attn(h):
        def split(t, name):  # (B, T, E) -> (B, H, T, D); split_view names the projections split without a transpose
            return t.reshape(B, H, T, E // H) if name in split_view else t.view(B, T, H, E // H).transpose(1, 2)

        result = attention(*(split(getattr(mha, f"{n}_proj")(h), n) for n in "qkv"), mask,
                           E ** -0.5 if embed_scale else None, **switches)
        if result is None:
            return None
        heads = result[0]  # (B, H, T, D)
        return mha.out_proj(heads.reshape(B, T, E) if merge_view else heads.transpose(1, 2).reshape(B, T, E))

    def sublayer(x, norm, f, name):
        y = None if x is None else f(x if post_norm else norm(x))  # (B, T, E)
        if y is not None and name in residual:
            y = y + (norm(x) if name in from_normalised else x)
        return norm(y) if post_norm and y is not None else y

    with torch.no_grad():
        x = sublayer(x.detach(), ref.ln1, attn, "attn")
        return sublayer(x, ref.ln1 if same_layernorm else ref.ln2, lambda h: ref.ffn.fc2(act(ref.ffn.fc1(h))), "ffn")


def block_mistakes(ref, x, mask=None):
    """Known block mistakes on these inputs, each computing the output it would give."""
    variants = [(mistake(key), switches) for key, switches in BLOCK_VARIANTS]
    variants += [(m, s) for m, s in ATTENTION_VARIANTS if mask is not None or not m.key.startswith("mask")]
    return [(known, lambda switches=switches: block_variant(ref, x, mask, **switches)) for known, switches in variants]


def expect(learner, mine, ref, x, mask=None, *, what="out", note="", want=None, mistakes=None):
    """The learner's block is finite and equals ``want`` (the reference's output by default) on x:
    (its output, want)."""
    out, want = forward(learner, mine, x, mask), ref(x, mask=mask) if want is None else want
    inputs = describe(x=x, mask=mask, num_heads=ref.attn.num_heads) + note
    finite(what, [out], inputs=inputs, advice=_t("a fully-masked row must get zero attention weights, not the softmax "
                                                 "of a row of -inf, and the softmax must subtract each row's maximum "
                                                 "(torch.softmax does).",
                                                 "全部被屏蔽的行必须得到全零的注意力权重，而不是一整行 -inf 的 softmax；"
                                                 "softmax 还必须减去每行的最大值（torch.softmax 会这样做）。"))
    compare(what, out, want, inputs=inputs, mistakes=block_mistakes(ref, x, mask) if mistakes is None else mistakes)
    return out, want


def builtin_layer(ref, E, H, F_):
    """nn.TransformerEncoderLayer(norm_first=True, activation="gelu") with the reference block's weights."""
    own = dict(ref.named_parameters())
    state = {f"{theirs}.{kind}": own[f"{mine}.{kind}"] for kind in ("weight", "bias") for theirs, mine in
             (("linear1", "ffn.fc1"), ("linear2", "ffn.fc2"), ("norm1", "ln1"), ("norm2", "ln2"),
              ("self_attn.out_proj", "attn.out_proj"))}
    state.update({f"self_attn.in_proj_{kind}": torch.cat([own[f"attn.{n}_proj.{kind}"] for n in "qkv"])
                  for kind in ("weight", "bias")})  # (3E, E), (3E,): q, k, v stacked
    layer = nn.TransformerEncoderLayer(E, H, F_, dropout=0.0, activation="gelu", batch_first=True, norm_first=True,
                                       device=own["ln1.weight"].device, dtype=own["ln1.weight"].dtype)
    layer.load_state_dict(state)
    return layer.eval()


@check("parameters are ln1, attn.{q,k,v,out}_proj, ln2, ffn.fc1 and ffn.fc2 with the statement's shapes, nothing else",
       zh="参数是 ln1、attn.{q,k,v,out}_proj、ln2、ffn.fc1 和 ffn.fc2，形状与题目说明一致，没有别的参数")
def check_parameters(learner, reference):
    mine, ref = blocks(learner, reference, 12, 4, 20)
    count, want = len(learner.parameters(mine)), len(list(ref.parameters()))
    if count != want:
        fail(_t(f"{NAME}(12, 4, 20) has {count} distinct parameter tensors, expected {want}: is one submodule the "
                "same object as another (ln2 = ln1)? Each sublayer needs its own LayerNorm.",
                f"{NAME}(12, 4, 20) 有 {count} 个不同的参数张量，应为 {want} 个：是不是有一个子模块和另一个是同一个"
                "对象（ln2 = ln1）？每个子层都需要自己的 LayerNorm。"))


@check("embed_dim not divisible by num_heads raises ValueError naming both",
       zh="embed_dim 不能被 num_heads 整除时抛出 ValueError，并指明这两个参数")
def check_indivisible(learner):
    indivisible_heads_raise(learner, NAME, 16)
    indivisible_heads_raise(learner, "MultiHeadAttention")


@check("MultiHeadAttention on its own follows ex2's contract (cross-attention with a mask, weights included)",
       zh="单独的 MultiHeadAttention 遵循 ex2 的约定（带掩码的交叉注意力，包括 weights）")
def check_multi_head_attention(learner, reference, device):
    mine, ref = twin(learner, reference.MultiHeadAttention, "MultiHeadAttention", 8, 2, device=device, seed=3)
    query, memory = randn(2, 4, 8, device=device, seed=1), randn(2, 6, 8, device=device, seed=2)  # (B, L, E), (B, S, E)
    mask = random_mask(2, 1, 4, 6, device=device, seed=3)                                         # (B, 1, L, S)
    got = outputs(learner.run(mine, query, memory, memory, mask=mask, need_weights=True), 2, "MultiHeadAttention")
    agree(("MultiHeadAttention out", "MultiHeadAttention weights"), got, ref(query, memory, memory, mask=mask,
          need_weights=True), inputs=describe(query=query, key=memory, value=memory, mask=mask, num_heads=2))
    _, none = outputs(learner.run(mine, query), 2, "MultiHeadAttention.forward")
    if none is not None:
        fail(_t(f"MultiHeadAttention.forward returned weights for need_weights=False; return None then (got {none}).",
                f"need_weights=False 时 MultiHeadAttention.forward 返回了 weights；这时应返回 None（得到的是 {none}）。"))


@check("the block matches the reference (float64 and float32, five shapes, with and without a mask)",
       zh="整个块与参考实现一致（float64 和 float32，五种形状，有无掩码）")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, F_) in enumerate(SHAPES):
            mine, ref = blocks(learner, reference, E, H, F_, dtype, device, seed=seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=seed)  # (B, T, E)
            for mask in (None, random_mask(*((B, 1, T, T) if seed % 2 else (T, T)), device=device, seed=seed)):
                expect(learner, mine, ref, x, mask, note=f", ffn_dim={F_}")


@check("matches nn.TransformerEncoderLayer(norm_first=True, activation=\"gelu\") with the same weights "
       "(its src_mask gets ~mask)",
       zh="权重相同时与 nn.TransformerEncoderLayer(norm_first=True, activation=\"gelu\") 一致（它的 src_mask 取 ~mask）")
def check_matches_builtin(learner, reference, device):
    B, T, E, H, F_ = 2, 5, 8, 2, 12
    for dtype in DTYPES:
        mine, ref = blocks(learner, reference, E, H, F_, dtype, device, seed=7)
        layer, x = builtin_layer(ref, E, H, F_), randn(B, T, E, dtype=dtype, device=device, seed=70)  # (B, T, E)
        per_batch = random_mask(B, 1, T, T, device=device, seed=72)                                  # (B, 1, T, T)
        # the layer's boolean src_mask means True = NOT allowed, so it gets ~mask; a per-batch mask as (B * H, T, T)
        for mask, theirs in ((None, None), (random_mask(T, T, device=device, seed=71),) * 2,
                             (per_batch, per_batch.expand(B, H, T, T).reshape(B * H, T, T))):
            expect(learner, mine, ref, x, mask,
                   what=_t("out against nn.TransformerEncoderLayer", "out 对照 nn.TransformerEncoderLayer"),
                   want=layer(x, src_mask=None if theirs is None else ~theirs))


@check("a query whose keys are all masked gives a finite output (attention adds out_proj of zeros) "
       "and finite gradients",
       zh="key 全部被屏蔽的 query 给出有限的输出（注意力部分加上的是全零向量经过 out_proj 的结果）和有限的梯度")
def check_fully_masked_rows(learner, reference, device):
    mine, ref = blocks(learner, reference, 8, 2, 12, device=device, seed=8)
    x = randn(2, 5, 8, device=device, seed=80, requires_grad=True)  # (B, T, E)
    mask = random_mask(2, 1, 5, 5, device=device, seed=81)
    mask[:, :, 3] = False  # query 3 may attend to nothing
    row = _t(", row 3 fully masked", "，第 3 行全部被屏蔽")
    compare_gradients(learner, *expect(learner, mine, ref, x, mask, note=row), {"x": x},
                      inputs=describe(x=x, mask=mask, num_heads=2) + row,
                      nonfinite=_t("zero the fully-masked weights with masked_fill, not arithmetic.",
                                   "用 masked_fill 而不是算术运算把全部被屏蔽的权重置零。"))


@check("residuals are present: with attn.out_proj and ffn.fc2 zeroed, the block returns x unchanged",
       zh="有残差连接：把 attn.out_proj 和 ffn.fc2 置零后，块原样返回 x")
def check_residuals(learner, reference, device):
    def silence(*names):  # these layers now output exactly 0
        return lambda ref: [p.zero_() for name in names for p in ref.get_submodule(name).parameters()]

    x = randn(2, 5, 8, device=device, seed=90)  # (B, T, E)
    mine, ref = blocks(learner, reference, 8, 2, 12, device=device, seed=9, edit=silence("attn.out_proj", "ffn.fc2"))
    # every missing residual gives 0 here, so that is named plainly rather than guessed
    expect(learner, mine, ref, x, want=x, what=_t("out with both sublayers silenced", "两个子层都被静音时的 out"),
           note=_t(" (each sublayer outputs 0, so x + 0 + 0 = x is expected; 0 means a residual is missing)",
                   "（每个子层输出 0，所以应得到 x + 0 + 0 = x；得到 0 说明缺少残差连接）"),
           mistakes=[(mistake("no-residual"), lambda: torch.zeros_like(x)),
                     *[(m, c) for m, c in block_mistakes(ref, x) if m.key != "no-residual"]])
    mine, ref = blocks(learner, reference, 8, 2, 12, device=device, seed=9, edit=silence("ffn.fc2"))
    expect(learner, mine, ref, x, what=_t("out with the FFN silenced", "FFN 被静音时的 out"),
           note=_t(" (so x + attn(ln1(x)) is expected)", "（所以应得到 x + attn(ln1(x))）"))


@check("large attention logits (thousands) give finite, correct results",
       zh="很大的注意力 logits（数千）给出有限且正确的结果")
def check_large_logits(learner, reference, device):
    def sharpen(ref):
        ref.attn.q_proj.weight.mul_(60)
        ref.attn.k_proj.weight.mul_(60)

    for dtype in DTYPES:
        mine, ref = blocks(learner, reference, 8, 2, 12, dtype, device, seed=10, edit=sharpen)
        x, mask = randn(2, 5, 8, dtype=dtype, device=device, seed=100), random_mask(5, 5, device=device, seed=101)
        expect(learner, mine, ref, x, mask, note=_t(", attention logits in the thousands", "，注意力 logits 达数千"))


@check("dropout acts in training mode only: eval is deterministic even with dropout=0.5, training "
       "with dropout=0.5 is random, training with dropout=0 equals eval",
       zh="dropout 只在训练模式下起作用：即使 dropout=0.5，eval 的结果也是确定的；dropout=0.5 时训练是随机的；dropout=0 时训练等于 eval")
def check_dropout(learner, reference, device):
    mine, ref = blocks(learner, reference, 8, 2, 16, device=device, seed=11, dropout=0.5)
    x = randn(2, 6, 8, device=device, seed=110)  # (B, T, E)
    inputs = describe(x=x, num_heads=2, ffn_dim=16)
    eval_is_deterministic(learner, "out", mine, lambda: forward(learner, mine, x), inputs=inputs)
    dropout_train_only(learner, "out", mine, lambda: forward(learner, mine, x), lambda: ref(x), inputs=inputs,
                       advice=_t("drop with probability dropout while self.training is True, with a fresh random "
                                 "mask every call (nn.Dropout does this).",
                                 "在 self.training 为 True 时以概率 dropout 丢弃，每次调用都用新的随机掩码"
                                 "（nn.Dropout 会这样做）。"))
    plain, ref = blocks(learner, reference, 8, 2, 16, device=device, seed=11)
    learner.train(plain)
    expect(learner, plain, ref, x, what=_t("out in training mode with dropout=0.0", "out（训练模式，dropout=0.0）"),
           note=_t(" (so it must equal eval mode)", "（所以必须等于 eval 模式）"))


@check("gradients of x and of every parameter match the reference (every parameter gets one)",
       zh="x 和每个参数的梯度都与参考实现一致（每个参数都得到梯度）")
def check_gradients(learner, reference, device):
    mine, ref = blocks(learner, reference, 8, 2, 12, device=device, seed=12)
    x = randn(2, 5, 8, device=device, seed=120, requires_grad=True)  # (B, T, E)
    mask = random_mask(2, 1, 5, 5, device=device, seed=121)
    inputs = describe(x=x, mask=mask, num_heads=2)
    compare_gradients(learner, *expect(learner, mine, ref, x, mask), {"x": x}, inputs=inputs)
    every_parameter_learns(learner, NAME, mine, ref, lambda: forward(learner, mine, x, mask), lambda: ref(x, mask=mask),
                           inputs=inputs)
