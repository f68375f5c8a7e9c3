"""Hidden checks for ex12: a pre-norm Transformer block (and the multi-head attention inside it)."""

import torch
import torch.nn.functional as F
from torch import nn

from attn_drill.checks.harness import (
    DTYPES, CheckFailure, Mistake, check, compare, copy_parameters, describe, expect_every_parameter_has_grad,
    expect_tensor, expect_tuple, fail, grad_of, load_multihead, randn, random_mask, require_defined,
)
from attn_drill.checks.mistakes import ATTENTION_VARIANTS, MASK_INVERTED, attention

POST_NORM = Mistake(
    "post-norm",
    "a post-norm block, LayerNorm after the residual add (x = ln1(x + attn(x))); this block is "
    "pre-norm: x = x + attn(ln1(x)), then x = x + ffn(ln2(x))")
NO_ATTN_RESIDUAL = Mistake(
    "no-residual",
    "the block with the residual connection around attention missing (x = attn(ln1(x)) instead of "
    "x + attn(ln1(x)))")
NO_FFN_RESIDUAL = Mistake(
    "no-residual",
    "the block with the residual connection around the FFN missing (x = ffn(ln2(x)) instead of "
    "x + ffn(ln2(x)))")
NO_RESIDUALS = Mistake("no-residual", "the block with both residual connections missing (around attention and the FFN)")
SILENCED_TO_ZERO = Mistake(
    "no-residual",
    "zero: with both sublayers silenced, only the residual connections carry x through, so at least one of them "
    "(around attention or around the FFN) is missing")
RESIDUAL_FROM_NORMALISED = Mistake(
    "residual-from-normalized",
    "the block whose residual starts from the normalised input (h = ln1(x); x = h + attn(h)) "
    "instead of the raw x (x = x + attn(ln1(x)))")
RELU_NOT_GELU = Mistake("relu-not-gelu", "the block with ReLU instead of GELU in the FFN")
GELU_TANH = Mistake(
    "gelu-tanh",
    "the block with the tanh approximation of GELU; use the exact GELU (nn.GELU(), approximate='none'), "
    "as nn.TransformerEncoderLayer's activation=\"gelu\" does")
SAME_LAYERNORM = Mistake(
    "same-layernorm",
    "the block with the same LayerNorm used twice (ln1 for both sublayers): the FFN sublayer "
    "normalises with its own ln2")
BLOCK_MASK_INVERTED = Mistake(
    "mask-inverted",
    "the block with the mask inverted. nn.TransformerEncoderLayer's (and nn.MultiheadAttention's) "
    "boolean src_mask means True = NOT allowed; this exercise uses True = may attend, so the "
    "layer is given ~mask")

DROPOUT_IN_EVAL = Mistake(
    "dropout-in-eval",
    "a block that still drops in eval mode (nn.Dropout is a no-op after .eval(); F.dropout needs "
    "training=self.training)")

BLOCK_VARIANTS = [
    (POST_NORM, {"post_norm": True}),
    (NO_ATTN_RESIDUAL, {"attn_residual": False}),
    (NO_FFN_RESIDUAL, {"ffn_residual": False}),
    (NO_RESIDUALS, {"attn_residual": False, "ffn_residual": False}),
    (RESIDUAL_FROM_NORMALISED, {"residual_from_normalised": ("attn",)}),
    (RESIDUAL_FROM_NORMALISED, {"residual_from_normalised": ("ffn",)}),
    (RESIDUAL_FROM_NORMALISED, {"residual_from_normalised": ("attn", "ffn")}),
    (RELU_NOT_GELU, {"activation": "relu"}),
    (GELU_TANH, {"activation": "tanh"}),
    (SAME_LAYERNORM, {"same_layernorm": True}),
] + [(BLOCK_MASK_INVERTED if m is MASK_INVERTED else m, s) for m, s in ATTENTION_VARIANTS]

# (B, T, E, H, F): batch 1, length 1, odd widths, one head, F < E.
SHAPES = [(1, 1, 4, 2, 8), (2, 5, 6, 3, 10), (3, 4, 8, 1, 7), (2, 7, 12, 4, 16), (1, 6, 10, 2, 5)]


def blocks(learner, reference, E, H, F_, dtype, device, seed=0, dropout=0.0, edit=None):
    """The learner's block and the reference with the same weights, both in eval mode.

    The LayerNorms get random affine parameters so ln1 and ln2 differ; ``edit(ref)`` may
    change the reference's weights before they are copied.
    """
    torch.manual_seed(seed)
    ref = reference.TransformerBlock(E, H, F_, dropout=dropout)
    with torch.no_grad():
        for i, norm in enumerate((ref.ln1, ref.ln2)):
            norm.weight.copy_(1 + 0.5 * randn(E, seed=1000 + 10 * seed + i))
            norm.bias.copy_(0.3 * randn(E, seed=2000 + 10 * seed + i))
        if edit is not None:
            edit(ref)
    ref = ref.to(device=device, dtype=dtype).eval()
    mine = learner.new("TransformerBlock", E, H, F_, dropout=dropout)
    copy_parameters(f"TransformerBlock({E}, {H}, {F_})", mine, ref)
    return mine.to(device=device, dtype=dtype).eval(), ref


def forward(learner, block, *args, **kwargs):
    return expect_tensor(learner.run(block, *args, **kwargs), "TransformerBlock.forward's result")


def block_variant(ref, x, mask=None, *, post_norm=False, attn_residual=True, ffn_residual=True,
                  residual_from_normalised=(), activation="gelu", same_layernorm=False, **switches):
    """The reference block's forward pass with one classic mistake switched on."""
    act = {"gelu": F.gelu, "relu": F.relu, "tanh": lambda h: F.gelu(h, approximate="tanh")}[activation]
    ln1, ln2 = ref.ln1, (ref.ln1 if same_layernorm else ref.ln2)
    mha = ref.attn

    def attn(h):
        B, T, E = h.shape
        H = mha.num_heads
        D = E // H

        def split(t):  # (B, T, E) -> (B, H, T, D)
            return t.view(B, T, H, D).transpose(1, 2)

        result = attention(split(mha.q_proj(h)), split(mha.k_proj(h)), split(mha.v_proj(h)), mask, **switches)
        if result is None:
            return None
        return mha.out_proj(result[0].transpose(1, 2).reshape(B, T, E))  # (B, T, E)

    def ffn(h):
        return ref.ffn.fc2(act(ref.ffn.fc1(h)))  # (B, T, E)

    def sublayer(x, norm, f, residual, name):
        if x is None:
            return None
        if post_norm:
            y = f(x)
            return None if y is None else norm(x + y if residual else y)
        h = norm(x)
        y = f(h)
        if y is None or not residual:
            return y
        return (h if name in residual_from_normalised else x) + y

    return sublayer(sublayer(x, ln1, attn, attn_residual, "attn"), ln2, ffn, ffn_residual, "ffn")


def block_mistakes(ref, x, mask=None):
    """Known block mistakes on these inputs, each computing the output it would give."""
    def thunk(options):
        def compute():
            with torch.no_grad():
                return block_variant(ref, x.detach(), mask, **options)
        return compute

    return [(mistake, thunk(options)) for mistake, options in BLOCK_VARIANTS
            if mask is not None or not mistake.key.startswith("mask")]


def builtin_layer(ref, E, H, F_, dtype, device):
    """nn.TransformerEncoderLayer with the reference block's weights."""
    layer = nn.TransformerEncoderLayer(d_model=E, nhead=H, dim_feedforward=F_, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True).to(device=device, dtype=dtype).eval()
    a = ref.attn
    load_multihead(layer.self_attn, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                   torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]), a.out_proj.weight, a.out_proj.bias)
    with torch.no_grad():
        for mine, theirs in ((ref.ffn.fc1, layer.linear1), (ref.ffn.fc2, layer.linear2),
                             (ref.ln1, layer.norm1), (ref.ln2, layer.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    return layer


@check("your file imports and defines MultiHeadAttention and TransformerBlock")
def check_defines(learner):
    require_defined(learner)


@check("parameters are ln1, attn.{q,k,v,out}_proj, ln2, ffn.fc1 and ffn.fc2 with the statement's shapes, nothing else")
def check_parameters(learner, reference):
    block = learner.new("TransformerBlock", 12, 4, 20)
    expected = reference.TransformerBlock(12, 4, 20)
    copy_parameters("TransformerBlock(12, 4, 20)", block, expected)
    count, want = len(list(block.parameters())), len(list(expected.parameters()))
    if count != want:
        fail(f"TransformerBlock(12, 4, 20) has {count} distinct parameter tensors, expected {want}: is one "
             "submodule the same object as another (ln2 = ln1)? Each sublayer needs its own LayerNorm.")


@check("embed_dim not divisible by num_heads raises ValueError naming both")
def check_indivisible(learner):
    learner.raises("embed_dim 10 and num_heads 4", ("embed_dim", "num_heads"), "TransformerBlock", 10, 4, 16)
    learner.raises("embed_dim 10 and num_heads 4", ("embed_dim", "num_heads"), "MultiHeadAttention", 10, 4)


@check("MultiHeadAttention on its own follows ex2's contract (cross-attention with a mask, weights included)")
def check_multi_head_attention(learner, reference, device):
    torch.manual_seed(3)
    ref = reference.MultiHeadAttention(8, 2).to(device=device, dtype=torch.float64).eval()
    mine = learner.new("MultiHeadAttention", 8, 2)
    copy_parameters("MultiHeadAttention(8, 2)", mine, ref)
    mine = mine.to(device=device, dtype=torch.float64).eval()
    query = randn(2, 4, 8, device=device, seed=1)    # (B, L, E)
    memory = randn(2, 6, 8, device=device, seed=2)   # (B, S, E)
    mask = random_mask(2, 1, 4, 6, device=device, seed=3)
    inputs = describe(query=query, key=memory, value=memory, mask=mask, num_heads=2)
    out, weights = expect_tuple(learner.run(mine, query, memory, memory, mask=mask, need_weights=True), 2,
                                "MultiHeadAttention.forward")
    expected_out, expected_weights = ref(query, memory, memory, mask=mask, need_weights=True)
    compare("MultiHeadAttention weights", weights, expected_weights, inputs=inputs)
    compare("MultiHeadAttention out", out, expected_out, inputs=inputs)
    _, none = expect_tuple(learner.run(mine, query), 2, "MultiHeadAttention.forward")
    if none is not None:
        fail(f"MultiHeadAttention.forward returned weights for need_weights=False; return None then "
             f"(got {type(none).__name__}).")


@check("the block matches the reference (float64 and float32, five shapes, with and without a mask)")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (B, T, E, H, F_) in enumerate(SHAPES):
            mine, ref = blocks(learner, reference, E, H, F_, dtype, device, seed=seed)
            x = randn(B, T, E, dtype=dtype, device=device, seed=seed)  # (B, T, E)
            shape = (B, 1, T, T) if seed % 2 else (T, T)
            for mask in (None, random_mask(*shape, device=device, seed=seed)):
                out = forward(learner, mine, x, mask=mask)
                compare("out", out, ref(x, mask=mask), inputs=describe(x=x, mask=mask, num_heads=H, ffn_dim=F_),
                        mistakes=block_mistakes(ref, x, mask))


@check("matches nn.TransformerEncoderLayer(norm_first=True, activation=\"gelu\") with the same weights "
       "(its src_mask gets ~mask)")
def check_matches_builtin(learner, reference, device):
    B, T, E, H, F_ = 2, 5, 8, 2, 12
    for dtype in DTYPES:
        mine, ref = blocks(learner, reference, E, H, F_, dtype, device, seed=7)
        layer = builtin_layer(ref, E, H, F_, dtype, device)
        x = randn(B, T, E, dtype=dtype, device=device, seed=70)  # (B, T, E)
        per_batch = random_mask(B, 1, T, T, device=device, seed=72)
        cases = [
            (None, None),
            (random_mask(T, T, device=device, seed=71), None),
            # a per-batch mask: the layer takes it as (B * H, T, T)
            (per_batch, per_batch.expand(B, H, T, T).reshape(B * H, T, T)),
        ]
        for mask, layer_mask in cases:
            if mask is not None and layer_mask is None:
                layer_mask = mask
            # nn.TransformerEncoderLayer's boolean src_mask means True = NOT allowed: invert ours.
            expected = layer(x, src_mask=None if layer_mask is None else ~layer_mask)
            out = forward(learner, mine, x, mask=mask)
            compare("out against nn.TransformerEncoderLayer", out, expected,
                    inputs=describe(x=x, mask=mask, num_heads=H, ffn_dim=F_), mistakes=block_mistakes(ref, x, mask))


@check("a query whose keys are all masked gives a finite output (attention adds out_proj of zeros) "
       "and finite gradients")
def check_fully_masked_rows(learner, reference, device):
    mine, ref = blocks(learner, reference, 8, 2, 12, torch.float64, device, seed=8)
    x = randn(2, 5, 8, device=device, seed=80, requires_grad=True)
    mask = random_mask(2, 1, 5, 5, device=device, seed=81)
    mask[:, :, 3] = False  # query 3 may attend to nothing
    inputs = describe(x=x, mask=mask, num_heads=2) + ", row 3 fully masked"
    out = forward(learner, mine, x, mask=mask)
    if torch.isnan(out).any():
        fail(f"out has NaN for {inputs}: a fully-masked row must get zero attention weights, not the "
             "softmax of a row of -inf.")
    expected = ref(x, mask=mask)
    compare("out", out, expected, inputs=inputs, mistakes=block_mistakes(ref, x, mask))
    got = grad_of("out", out, {"x": x})["x"]
    if not torch.isfinite(got).all():
        fail(f"the gradient of x has NaN or inf for {inputs}: zero the fully-masked weights with "
             "masked_fill, not arithmetic.")
    compare("the gradient of x", got, grad_of("the reference's out", expected, {"x": x})["x"], inputs=inputs)


@check("residuals are present: with attn.out_proj and ffn.fc2 zeroed, the block returns x unchanged")
def check_residuals(learner, reference, device):
    def silence(ref):  # both sublayers now output exactly 0
        for linear in (ref.attn.out_proj, ref.ffn.fc2):
            linear.weight.zero_()
            linear.bias.zero_()

    mine, ref = blocks(learner, reference, 8, 2, 12, torch.float64, device, seed=9, edit=silence)
    x = randn(2, 5, 8, device=device, seed=90)
    out = forward(learner, mine, x)
    # Every missing residual gives 0 here, so name that plainly rather than guess which one.
    mistakes = [(SILENCED_TO_ZERO, lambda: torch.zeros_like(x))]
    mistakes += [(m, compute) for m, compute in block_mistakes(ref, x) if m.key != "no-residual"]
    compare("out with both sublayers silenced", out, x,
            inputs=describe(x=x, num_heads=2) + " (each sublayer outputs 0, so x + 0 + 0 = x is expected)",
            mistakes=mistakes)
    mine, ref = blocks(learner, reference, 8, 2, 12, torch.float64, device, seed=9,
                       edit=lambda ref: (ref.ffn.fc2.weight.zero_(), ref.ffn.fc2.bias.zero_()))
    compare("out with the FFN silenced", forward(learner, mine, x), ref(x),
            inputs=describe(x=x, num_heads=2) + " (the FFN outputs 0, so x + attn(ln1(x)) is expected)",
            mistakes=block_mistakes(ref, x))


@check("large attention logits (thousands) give finite, correct results")
def check_large_logits(learner, reference, device):
    def sharpen(ref):
        ref.attn.q_proj.weight.mul_(60)
        ref.attn.k_proj.weight.mul_(60)

    for dtype in DTYPES:
        mine, ref = blocks(learner, reference, 8, 2, 12, dtype, device, seed=10, edit=sharpen)
        x = randn(2, 5, 8, dtype=dtype, device=device, seed=100)
        mask = random_mask(5, 5, device=device, seed=101)
        inputs = describe(x=x, mask=mask, num_heads=2) + ", attention logits in the thousands"
        out = forward(learner, mine, x, mask=mask)
        if not torch.isfinite(out).all():
            fail(f"out overflows to inf/NaN for {inputs}: use a stable softmax (torch.softmax).")
        compare("out", out, ref(x, mask=mask), inputs=inputs, mistakes=block_mistakes(ref, x, mask))


@check("dropout acts in training mode only: eval is deterministic even with dropout=0.5, training "
       "with dropout=0.5 is random, training with dropout=0 equals eval")
def check_dropout(learner, reference, device):
    mine, ref = blocks(learner, reference, 8, 2, 16, torch.float64, device, seed=11, dropout=0.5)
    x = randn(2, 6, 8, device=device, seed=110)
    inputs = describe(x=x, num_heads=2, ffn_dim=16)
    first = forward(learner, mine, x).detach()
    try:
        compare("a second eval-mode call with dropout=0.5", forward(learner, mine, x), first,
                inputs=inputs + " (the same inputs twice)")
    except CheckFailure as failure:
        fail(f"{failure.message}\nYour output equals {DROPOUT_IN_EVAL.says}.", DROPOUT_IN_EVAL.key)
    compare("out in eval mode with dropout=0.5", first, ref(x), inputs=inputs, mistakes=block_mistakes(ref, x))
    mine.train()
    torch.manual_seed(0)
    trained = forward(learner, mine, x).detach()
    again = forward(learner, mine, x).detach()
    if torch.allclose(trained, first):
        fail(f"with dropout=0.5 in training mode the output equals eval mode for {inputs}: drop with "
             "probability dropout while self.training is True (nn.Dropout does this).")
    if torch.allclose(trained, again):
        fail(f"two training-mode calls with dropout=0.5 gave the same output for {inputs}: dropout must "
             "draw a new random mask every call.")
    plain, ref = blocks(learner, reference, 8, 2, 16, torch.float64, device, seed=11)
    plain.train()
    compare("out in training mode with dropout=0.0", forward(learner, plain, x), ref(x),
            inputs=inputs + " (dropout=0.0, so training mode must equal eval mode)")


@check("gradients of x and of every parameter match the reference (every parameter gets one)")
def check_gradients(learner, reference, device):
    mine, ref = blocks(learner, reference, 8, 2, 12, torch.float64, device, seed=12)
    x = randn(2, 5, 8, device=device, seed=120, requires_grad=True)
    mask = random_mask(2, 1, 5, 5, device=device, seed=121)
    inputs = describe(x=x, mask=mask, num_heads=2)
    out = forward(learner, mine, x, mask=mask)
    expected = ref(x, mask=mask)
    compare("the gradient of x", grad_of("out", out, {"x": x})["x"],
            grad_of("the reference's out", expected, {"x": x})["x"], inputs=inputs)
    mine.zero_grad()
    ref.zero_grad()
    forward(learner, mine, x, mask=mask).square().sum().backward()
    ref(x, mask=mask).square().sum().backward()
    expect_every_parameter_has_grad("TransformerBlock", mine)
    wanted = dict(ref.named_parameters())
    for name, parameter in mine.named_parameters():
        if name in wanted:
            compare(f"the gradient of {name}", parameter.grad, wanted[name].grad, inputs=inputs)
