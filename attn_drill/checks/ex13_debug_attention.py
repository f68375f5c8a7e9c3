"""Hidden checks for ex13: a buggy self-attention interview answer, debugged.

ex1's self_attention checks are reused as they are (imported below, after the import check
so that it stays the first check); the checks here each aim at one of the planted bugs.
"""

import math

import torch
import torch.nn.functional as F

from attn_drill.checks.harness import (
    DTYPES, CheckFailure, Mistake, check, compare, compare_gradients, describe, expect_tensor, expect_tuple,
    fail, fail_naming, randn, random_mask, require_defined,
)
from attn_drill.checks.mistakes import attention, attention_mistakes

FRESH_LAYERNORM = Mistake(
    "fresh-layernorm",
    "attention with a LayerNorm created inside the function: a layer made inside the function gets fresh "
    "weights each call and is never trained, and the formula has no normalisation")
RELU_INSIDE = Mistake(
    "relu-in-attention",
    "attention with a ReLU inside it: attention has no nonlinearity besides the softmax")
PROJECTION_TRANSPOSED = Mistake(
    "projection-transposed",
    "attention with a projection multiplied by the transposed weight (x @ w.T): the weights here are "
    "(E, D), so q = x @ w_q, k = x @ w_k, v = x @ w_v")
PROJECTION_WRONG_WEIGHT = Mistake(
    "projection-wrong-weight",
    "attention with a projection made with another projection's weight (k = x @ w_q, say): q, k and v each "
    "have their own weight")
SOFTMAX_OVER_BATCH = Mistake("softmax-dim", "attention with the softmax over the batch (dim=0) instead of the keys")
SCALE_BY_EMBED = Mistake(
    "scale-by-embed-dim",
    "attention scaled by 1/sqrt(E), the input width, instead of 1/sqrt(D), the query/key width")


def project(x, w_q, w_k, w_v):
    return x @ w_q, x @ w_k, x @ w_v  # (B, T, D), (B, T, D), (B, T, Dv)


def relu_scores_attention(q, k, v, mask):
    """Attention with a ReLU on the scores before masking and the softmax."""
    scores = torch.relu(q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def debug_mistakes(x, w_q, w_k, w_v, mask=None, part=0):
    """Every known mistake of this exercise on these inputs: ``part`` 0 is out, 1 the weights."""
    x, w_q, w_k, w_v = (t.detach() for t in (x, w_q, w_k, w_v))
    q, k, v = project(x, w_q, w_k, w_v)
    E = x.size(-1)

    def layer_norm(t):  # a fresh nn.LayerNorm: weight 1, bias 0
        return F.layer_norm(t, t.shape[-1:])

    def transposed(which):
        def compute():
            ws = [w.T if name in which else w for name, w in (("q", w_q), ("k", w_k), ("v", w_v))]
            if any(w.size(0) != E for w in ws):
                return None  # cannot even run on these shapes
            return attention(*project(x, *ws), mask)[part]
        return compute

    def relu_out():
        out, weights = attention(q, k, v, mask)
        return (torch.relu(out), weights)[part]

    def layer_norm_out():
        out, weights = attention(q, k, v, mask)
        return (layer_norm(out), weights)[part]

    def no_grad(compute):
        def run():
            with torch.no_grad():
                return compute()
        return run

    own = [
        (SOFTMAX_OVER_BATCH, lambda: attention(q, k, v, mask, softmax_dim=0)[part]),
        (PROJECTION_WRONG_WEIGHT, lambda: attention(q, q, v, mask)[part]),   # k = x @ w_q
        (PROJECTION_WRONG_WEIGHT, lambda: attention(k, k, v, mask)[part]),   # q = x @ w_k
        (SCALE_BY_EMBED, lambda: attention(q, k, v, mask, scale=1 / math.sqrt(E))[part]),
        (FRESH_LAYERNORM, lambda: attention(*project(layer_norm(x), w_q, w_k, w_v), mask)[part]),
        (FRESH_LAYERNORM, lambda: attention(layer_norm(q), layer_norm(k), v, mask)[part]),
        (FRESH_LAYERNORM, layer_norm_out),
        (RELU_INSIDE, relu_out),
        (RELU_INSIDE, lambda: relu_scores_attention(q, k, v, mask)[part]),
        (RELU_INSIDE, lambda: attention(*(torch.relu(t) for t in (q, k, v)), mask)[part]),
    ] + [(PROJECTION_TRANSPOSED, transposed(which)) for which in ("q", "k", "v", "qkv")]
    return attention_mistakes(q, k, v, mask, part=part) + [(m, no_grad(c)) for m, c in own]


def weights_of(E, D, Dv, dtype, device, seed):
    """w_q, w_k (E, D) and w_v (E, Dv), scaled so that scores stay of order 1."""
    return tuple(randn(E, d, dtype=dtype, device=device, seed=seed + i) / E ** 0.5 for i, d in enumerate((D, D, Dv)))


def attend(learner, x, w_q, w_k, w_v, mask=None):
    out, weights = expect_tuple(learner.call("self_attention", x, w_q, w_k, w_v, mask=mask), 2, "self_attention()")
    return expect_tensor(out, "out"), expect_tensor(weights, "weights")


def compare_both(out, weights, expected, x, w_q, w_k, w_v, mask=None, inputs=None, what="self_attention"):
    inputs = inputs or describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask)
    compare(f"{what} weights", weights, expected[1], inputs=inputs,
            mistakes=debug_mistakes(x, w_q, w_k, w_v, mask, part=1))
    compare(f"{what} out", out, expected[0], inputs=inputs, mistakes=debug_mistakes(x, w_q, w_k, w_v, mask))


@check("your file imports and defines self_attention")
def check_defines(learner):
    require_defined(learner)


# ex1's own checks of self_attention: pytest collects them from this module's namespace, in
# definition order, so they are imported here to run after the import check.
from attn_drill.checks.ex01_self_attention import (  # noqa: E402,F401
    check_self_attention, check_permutation_equivariance,
)


@check("no fresh layers: the same inputs give the same output twice, and the function has no parameters of its own")
def check_no_own_parameters(learner, device):
    for dtype in DTYPES:
        x = randn(2, 5, 6, dtype=dtype, device=device, seed=50)  # (B, T, E)
        w_q, w_k, w_v = weights_of(6, 4, 3, dtype, device, seed=51)
        mask = random_mask(5, 5, device=device, seed=52)
        inputs = describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask)
        out, _ = attend(learner, x, w_q, w_k, w_v, mask)
        again, _ = attend(learner, x, w_q, w_k, w_v, mask)
        try:
            compare("a second call's out", again, out.detach(), inputs=inputs + " (the same inputs twice)")
        except CheckFailure as failure:
            fail(f"{failure.message}\nThe same inputs gave a different out the second time: something inside the "
                 "function is random or freshly initialised (an nn.Linear created there gets new random weights "
                 "each call). Compute only from x, w_q, w_k, w_v and the mask.")
        if out.requires_grad:
            fail_naming(f"out requires grad although no input does ({inputs}): something inside the function has "
                        "parameters of its own (an nn.Linear or nn.LayerNorm created there gets fresh, untrained "
                        "weights each call). Compute only from x, w_q, w_k, w_v and the mask.",
                        out, debug_mistakes(x, w_q, w_k, w_v, mask))


@check("with square weights (E == D) q, k and v are x @ w_q, x @ w_k, x @ w_v, not x @ w.T (float64 and float32)")
def check_square_projections(learner, reference, device):
    for dtype in DTYPES:
        x = randn(2, 5, 4, dtype=dtype, device=device, seed=60)                # (B, T, E)
        w_q, w_k, w_v = weights_of(4, 4, 4, dtype, device, seed=61)            # (E, E) each
        for mask in (None, random_mask(2, 5, 5, device=device, seed=62)):
            out, weights = attend(learner, x, w_q, w_k, w_v, mask)
            compare_both(out, weights, reference.self_attention(x, w_q, w_k, w_v, mask=mask), x, w_q, w_k, w_v, mask)


@check("scores are divided by sqrt(D), D the query/key width (E = 6, D = 4, Dv = 3)")
def check_scale(learner, reference, device):
    x = randn(3, 4, 6, device=device, seed=70)             # (B, T, E)
    w_q, w_k, w_v = (w * 2 for w in weights_of(6, 4, 3, torch.float64, device, seed=71))
    out, weights = attend(learner, x, w_q, w_k, w_v)
    compare_both(out, weights, reference.self_attention(x, w_q, w_k, w_v), x, w_q, w_k, w_v)


@check("weights rows sum to 1 over the keys (dim=-1) and masked keys get exactly 0")
def check_softmax_over_keys(learner, device):
    x = randn(2, 6, 5, device=device, seed=80)             # (B, T, E)
    w_q, w_k, w_v = weights_of(5, 3, 4, torch.float64, device, seed=81)
    mask = random_mask(2, 6, 6, device=device, seed=82)
    _, weights = attend(learner, x, w_q, w_k, w_v, mask)
    inputs = describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask)
    if weights.shape != (2, 6, 6):
        fail(f"weights have shape {tuple(weights.shape)} for {inputs}; expected (B, T, T) = (2, 6, 6).")
    candidates = debug_mistakes(x, w_q, w_k, w_v, mask, part=1)
    worst = (weights.detach().sum(-1) - 1).abs().max().item()
    if not worst <= 1e-9:
        fail_naming(f"weights rows do not sum to 1 for {inputs} (off by up to {worst:.3g}): the softmax must run "
                    "over the keys, dim=-1.", weights, candidates)
    leaked = weights.detach()[~mask].abs()
    if leaked.max().item() != 0:
        fail_naming(f"a masked key got weight {leaked.max().item():.3g} for {inputs}: masked keys (mask False) "
                    "must get exactly 0; True means 'may attend'.", weights, candidates)


@check("with a boolean mask, out matches torch's scaled_dot_product_attention on the projections (True = may attend)")
def check_matches_builtin(learner, device):
    for dtype in DTYPES:
        x = randn(2, 5, 6, dtype=dtype, device=device, seed=90)           # (B, T, E)
        w_q, w_k, w_v = weights_of(6, 4, 3, dtype, device, seed=91)
        for mask in (random_mask(5, 5, device=device, seed=92), random_mask(2, 5, 5, device=device, seed=93)):
            expected = F.scaled_dot_product_attention(*project(x, w_q, w_k, w_v), attn_mask=mask)  # (B, T, Dv)
            out, _ = attend(learner, x, w_q, w_k, w_v, mask)
            compare("self_attention out", out, expected, inputs=describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask),
                    mistakes=debug_mistakes(x, w_q, w_k, w_v, mask))


@check("a query whose keys are all masked gets zero weights, zero output and finite gradients")
def check_fully_masked_rows(learner, reference, device):
    x = randn(2, 5, 6, device=device, seed=100, requires_grad=True)     # (B, T, E)
    w_q, w_k, w_v = (w.requires_grad_() for w in weights_of(6, 4, 3, torch.float64, device, seed=101))
    mask = random_mask(2, 5, 5, device=device, seed=102)
    mask[:, 2] = False  # query 2 may attend to nothing
    inputs = describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask) + ", row 2 fully masked"
    out, weights = attend(learner, x, w_q, w_k, w_v, mask)
    for name, value in (("out", out), ("weights", weights)):
        if torch.isnan(value).any():
            fail(f"{name} has NaN for {inputs}: the softmax of a row of -inf is NaN; set that row's weights to 0 "
                 "(weights.masked_fill(~mask, 0.0)).")
    expected = reference.self_attention(x, w_q, w_k, w_v, mask=mask)
    compare_both(out, weights, expected, x, w_q, w_k, w_v, mask, inputs=inputs)
    named = {"x": x, "w_q": w_q, "w_k": w_k, "w_v": w_v}
    compare_gradients(out, expected[0], named, inputs=inputs,
                      nonfinite="a fully-masked row must not poison the backward pass (mask the scores with "
                                "masked_fill, then zero the NaN weights with masked_fill).")


@check("large logits (about 1e4) give finite, correct results (float64 and float32)")
def check_large_logits(learner, reference, device):
    for dtype in DTYPES:
        x = randn(2, 4, 6, dtype=dtype, device=device, seed=110) * 40     # scores of order 1e4
        w_q, w_k, w_v = weights_of(6, 4, 3, dtype, device, seed=111)
        mask = random_mask(4, 4, device=device, seed=112)
        inputs = describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask) + ", scores near 1e4"
        out, weights = attend(learner, x, w_q, w_k, w_v, mask)
        if not (torch.isfinite(out).all() and torch.isfinite(weights).all()):
            fail(f"out or weights overflow to inf/NaN for {inputs}: subtract each row's maximum before exp "
                 "(torch.softmax does this for you).")
        compare_both(out, weights, reference.self_attention(x, w_q, w_k, w_v, mask=mask), x, w_q, w_k, w_v, mask,
                     inputs=inputs)


@check("nothing is applied after the weighted sum: out is linear in the values (w_v times -2 gives out times -2)")
def check_linear_in_values(learner, device):
    x = randn(2, 5, 6, device=device, seed=120)            # (B, T, E)
    w_q, w_k, w_v = weights_of(6, 4, 3, torch.float64, device, seed=121)
    mask = random_mask(5, 5, device=device, seed=122)
    out, _ = attend(learner, x, w_q, w_k, w_v, mask)
    flipped, _ = attend(learner, x, w_q, w_k, w_v * -2, mask)
    compare("out with w_v * -2", flipped, out.detach() * -2,
            inputs=describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask) + " (out = weights @ v is linear in v)",
            mistakes=debug_mistakes(x, w_q, w_k, w_v * -2, mask))


@check("gradients with respect to x, w_q, w_k and w_v match the reference")
def check_gradients(learner, reference, device):
    x = randn(2, 5, 6, device=device, seed=130, requires_grad=True)
    w_q, w_k, w_v = (w.requires_grad_() for w in weights_of(6, 4, 3, torch.float64, device, seed=131))
    mask = random_mask(5, 5, device=device, seed=132)
    inputs = describe(x=x, w_q=w_q, w_k=w_k, w_v=w_v, mask=mask)
    named = {"x": x, "w_q": w_q, "w_k": w_k, "w_v": w_v}
    out, _ = attend(learner, x, w_q, w_k, w_v, mask)
    compare_gradients(out, reference.self_attention(x, w_q, w_k, w_v, mask=mask)[0], named, inputs=inputs)


@check("bad arguments raise ValueError naming the argument")
def check_bad_arguments(learner, device):
    def t(*shape):
        return randn(*shape, device=device)

    learner.raises("w_k of shape (5, 4) for E = 6", ("w_k",), "self_attention", t(2, 3, 6), t(6, 4), t(5, 4), t(6, 4))
    learner.raises("w_v of shape (3, 6) for E = 6", ("w_v",), "self_attention", t(2, 3, 6), t(6, 4), t(6, 4), t(3, 6))
    learner.raises("a float mask", ("mask",), "self_attention", t(2, 3, 6), t(6, 4), t(6, 4), t(6, 2),
                   mask=torch.ones(3, 3, device=device))
