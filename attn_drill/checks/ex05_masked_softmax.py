"""Hidden checks for ex5: masked_softmax and the bottom-right aligned causal mask."""

import math

import torch

from attn_drill.checks.harness import (
    DTYPES, Mistake, check, compare, describe, expect_tensor, fail, fail_naming, grad_of, randn,
    random_mask, require_defined,
)
from attn_drill.checks.mistakes import (
    CAUSAL_INVERTED, CAUSAL_TOP_LEFT, MASK_AFTER_SOFTMAX, MASK_IGNORED, MASK_INVERTED,
)

SOFTMAX_OVERFLOW = Mistake(
    "softmax-overflow", "a softmax without max subtraction: exp() of large logits overflows to inf "
    "(or underflows to 0 / 0), so it gives NaN")
FULLY_MASKED_NAN = Mistake(
    "fully-masked-nan", "the right weights except that fully-masked rows give NaN: the softmax of a row "
    "that is all -inf is 0 / 0")
FULLY_MASKED_UNIFORM = Mistake(
    "fully-masked-uniform", "the right weights except that fully-masked rows are spread uniformly (1/S): "
    "a finite fill such as -1e9 cannot make a fully-masked row zero")
DIM_IGNORED = Mistake("dim-ignored", "a softmax over the last dimension: the dim argument was ignored")
CAUSAL_OFF_BY_ONE = Mistake(
    "causal-off-by-one", "a causal mask off by one (strict j < i + (S - L) instead of <=): a position "
    "cannot see itself")

# (scores shape, mask shape): broadcasting from (L, S), (B, 1, L, S) and key padding (B, 1, 1, S);
# batch 1, length 1, L != S, odd sizes, S = 1.
CASES = [((2, 3, 5, 7), (5, 7)), ((2, 3, 5, 7), (2, 1, 5, 7)), ((2, 2, 4, 6), (2, 1, 1, 6)),
         ((1, 1, 4), (1, 4)), ((3, 4, 3), (4, 3)), ((2, 5, 1), (5, 1)), ((1, 6, 6), (1, 6, 6))]


# ---------------------------------------------------------------------------------------
# Known mistakes of a masked softmax, computed on the checks' own inputs


def softmax_variant(scores, mask, dim=-1, *, invert=False, ignore=False, after=False, nan_rows=False,
                    uniform_rows=False):
    """A masked softmax with switches that reproduce the classic mistakes."""
    with torch.no_grad():
        scores = scores.detach()
        mask = (~mask if invert else mask).expand_as(scores)
        if ignore:
            return torch.softmax(scores, dim=dim)
        if after:
            return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)
        if uniform_rows:
            return torch.softmax(scores.masked_fill(~mask, -1e9), dim=dim)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)
        return weights if nan_rows else weights.nan_to_num(0.0)


def softmax_mistakes(scores, mask, dim=-1):
    candidates = [
        (MASK_INVERTED, lambda: softmax_variant(scores, mask, dim, invert=True)),
        (MASK_IGNORED, lambda: softmax_variant(scores, mask, dim, ignore=True)),
        (MASK_AFTER_SOFTMAX, lambda: softmax_variant(scores, mask, dim, after=True)),
        (FULLY_MASKED_NAN, lambda: softmax_variant(scores, mask, dim, nan_rows=True)),
        (FULLY_MASKED_UNIFORM, lambda: softmax_variant(scores, mask, dim, uniform_rows=True)),
    ]
    if dim not in (-1, scores.dim() - 1):
        candidates.append((DIM_IGNORED, lambda: softmax_variant(scores, mask, -1)))
    return candidates


def masked_softmax(learner, scores, mask, dim=None):
    kwargs = {} if dim is None else {"dim": dim}
    return expect_tensor(learner.call("masked_softmax", scores, mask, **kwargs), "masked_softmax()")


# ---------------------------------------------------------------------------------------
# Boolean masks: compared exactly (the harness's `compare` is for floating-point results)


def offsets(L, S, device=None):
    """(L, S) tensor of j - i: key index minus query index."""
    return torch.arange(S, device=device)[None, :] - torch.arange(L, device=device)[:, None]


def expected_causal(L, S, device=None):
    """j <= i + (S - L): the same as torch.ones(L, S).tril(diagonal=S - L).bool()."""
    return offsets(L, S, device) <= S - L  # (L, S)


def causal_mistakes(L, S, device=None):
    return [
        (CAUSAL_TOP_LEFT, lambda: offsets(L, S, device) <= 0),                 # tril() without the S - L offset
        (CAUSAL_INVERTED, lambda: offsets(L, S, device) > S - L),              # ~mask
        (CAUSAL_INVERTED, lambda: offsets(L, S, device) >= S - L),             # triu(diagonal=S - L)
        (CAUSAL_OFF_BY_ONE, lambda: offsets(L, S, device) < S - L),            # strict <
    ]


def compare_mask(what, got, expected, *, inputs, mistakes=()):
    """Fail unless ``got`` is a boolean tensor equal to ``expected``; name a known mistaken mask."""
    got = expect_tensor(got, what)
    if got.shape != expected.shape:
        fail(f"{what} is wrong for {inputs}: shape {tuple(got.shape)}, expected (L, S) = {tuple(expected.shape)}.")
    if got.dtype != torch.bool:
        fail(f"{what} is wrong for {inputs}: dtype {got.dtype}, expected torch.bool (True = may attend).")
    if got.device != expected.device:
        fail(f"{what} is wrong for {inputs}: on device {got.device}, expected {expected.device}: "
             "create it on the device argument.")
    if torch.equal(got, expected):
        return
    wrong = (got != expected).nonzero()
    count = len(wrong)
    i, j = wrong[0].tolist()
    problem = (f"{what} is wrong for {inputs}: {count} entr{'y differs' if count == 1 else 'ies differ'}, "
               f"first at [{i}, {j}] (got {bool(got[i, j])}, expected {bool(expected[i, j])}: query {i} "
               f"{'may' if expected[i, j] else 'may not'} see key {j}).")
    for mistake, compute in mistakes:
        if torch.equal(got, compute()):
            fail(f"{problem}\nYour mask equals {mistake.says}.", mistake.key)
    fail(problem)


def compare_loose(what, got, expected, *, inputs, atol):
    """Values within ``atol``; for float32 at 1e4, where correct stable methods round differently."""
    got = expect_tensor(got, what)
    if got.shape != expected.shape or got.dtype != expected.dtype:
        compare(what, got, expected, inputs=inputs)  # reports the shape or dtype
    diff = (got.detach().double() - expected.detach().double()).abs().nan_to_num(nan=math.inf)
    if diff.max().item() > atol:
        where = [int(i) for i in (diff == diff.max()).nonzero()[0]]
        fail(f"{what} is wrong for {inputs}: largest difference {diff.max().item():.3g} at {where} "
             f"(got {got[tuple(where)].item():.6g}, expected {expected[tuple(where)].item():.6g}; "
             f"tolerance atol={atol:g}).")


# ---------------------------------------------------------------------------------------
# Checks


@check("your file imports and defines masked_softmax and causal_mask")
def check_defines(learner):
    require_defined(learner)


@check("masked_softmax matches the reference (float64 and float32, masks broadcast from (L, S), "
       "(B, 1, L, S) and (B, 1, 1, S))")
def check_matches_reference(learner, reference, device):
    for dtype in DTYPES:
        for seed, (shape, mask_shape) in enumerate(CASES):
            scores = 3 * randn(*shape, dtype=dtype, device=device, seed=seed)
            mask = random_mask(*mask_shape, device=device, seed=seed)
            got = masked_softmax(learner, scores, mask)
            compare("masked_softmax", got, reference.masked_softmax(scores, mask),
                    inputs=describe(scores=scores, mask=mask), mistakes=softmax_mistakes(scores, mask))


@check("masked positions get exactly 0 and the allowed positions of each row sum to 1")
def check_rows(learner, device):
    scores = 3 * randn(2, 3, 5, 7, device=device, seed=20)
    mask = random_mask(2, 1, 5, 7, device=device, seed=21)
    inputs = describe(scores=scores, mask=mask)
    got = masked_softmax(learner, scores, mask)
    if got.shape != scores.shape:
        fail(f"masked_softmax returned shape {tuple(got.shape)} for {inputs}; expected the scores' shape "
             f"{tuple(scores.shape)}.")
    candidates = softmax_mistakes(scores, mask)
    leaked = got.detach()[~mask.expand_as(got)].abs()
    if leaked.max().item() != 0:
        fail_naming(f"a masked position got weight {leaked.max().item():.3g} for {inputs}: positions where the "
                    "mask is False must get exactly 0 (True means 'may attend').", got, candidates)
    worst = (got.detach().sum(-1) - 1).abs().max().item()
    if worst > 1e-9:
        fail_naming(f"the weights of a row do not sum to 1 for {inputs} (off by up to {worst:.3g}): normalise "
                    "over the allowed positions of dim=-1.", got, candidates)


@check("a fully-masked row gives zeros, with finite gradients (also where a 0 / -inf additive mask would give NaN)")
def check_fully_masked(learner, reference, device):
    for dtype in DTYPES:
        for seed, (shape, mask_shape, rows) in enumerate([((2, 3, 5, 7), (5, 7), "row 2 of the mask"),
                                                          ((3, 2, 4, 6), (3, 1, 1, 6), "batch 1 (key padding)")]):
            scores = randn(*shape, dtype=dtype, device=device, seed=30 + seed, requires_grad=True)
            mask = random_mask(*mask_shape, device=device, seed=31 + seed)
            if len(mask_shape) == 2:
                mask[2] = False   # query 2 may attend to nothing
            else:
                mask[1] = False   # every key of sequence 1 is padding
            inputs = describe(scores=scores, mask=mask) + f", {rows} all False"
            got = masked_softmax(learner, scores, mask)
            expected = reference.masked_softmax(scores, mask)
            compare("masked_softmax", got, expected, inputs=inputs, mistakes=softmax_mistakes(scores, mask))
            grad = grad_of("masked_softmax", got, {"scores": scores})["scores"]
            if not torch.isfinite(grad).all():
                fail(f"the gradient with respect to scores has NaN or inf for {inputs}: a fully-masked row is "
                     "all -inf, its softmax is NaN, and the NaN flows back even if the forward result is zeroed "
                     "afterwards (this is what an additive 0 / -inf mask does). Fill the masked scores with "
                     "masked_fill (its backward gives those positions a zero gradient), or avoid the 0 / 0.",
                     FULLY_MASKED_NAN.key)
            want = grad_of("the reference's masked_softmax", expected, {"scores": scores})["scores"]
            compare("the gradient with respect to scores", grad, want, inputs=inputs)


@check("gradients with respect to scores match the reference")
def check_gradients(learner, reference, device):
    for dtype in DTYPES:
        scores = 2 * randn(2, 3, 5, 7, dtype=dtype, device=device, seed=40)
        scores.requires_grad_(True)
        mask = random_mask(2, 1, 5, 7, device=device, seed=41)
        inputs = describe(scores=scores, mask=mask)
        got = grad_of("masked_softmax", masked_softmax(learner, scores, mask), {"scores": scores})["scores"]
        want = grad_of("the reference's masked_softmax", reference.masked_softmax(scores, mask),
                       {"scores": scores})["scores"]
        compare("the gradient with respect to scores", got, want, inputs=inputs)


@check("large logits (about 1e4, float64 and float32) give finite, correct weights")
def check_large_logits(learner, reference, device):
    cases = [(torch.float64, 1e4, 3.0), (torch.float64, -1e4, 3.0), (torch.float64, 0.0, 1e4),
             (torch.float32, 0.0, 1e4), (torch.float32, 1e4, 3.0), (torch.float32, -1e4, 3.0)]
    for seed, (dtype, offset, spread) in enumerate(cases):
        scores = offset + spread * randn(2, 4, 6, dtype=dtype, device=device, seed=50 + seed)
        mask = random_mask(4, 6, device=device, seed=51 + seed)
        inputs = describe(scores=scores, mask=mask) + f", scores {offset:g} + {spread:g} * randn"
        got = masked_softmax(learner, scores, mask)
        if got.shape == scores.shape and not torch.isfinite(got).all():
            bad = [int(i) for i in (~torch.isfinite(got)).nonzero()[0]]
            fail(f"masked_softmax gives {got[tuple(bad)].item()} at {bad} for {inputs} (no row is fully masked): "
                 f"exp() of about {abs(offset) + spread:g} overflows (or underflows to 0 / 0). Subtract each row's "
                 "maximum before exp (torch.softmax does this for you).\n"
                 f"Your output equals {SOFTMAX_OVERFLOW.says}.", SOFTMAX_OVERFLOW.key)
        expected = reference.masked_softmax(scores, mask)
        if dtype == torch.float32 and offset != 0:
            # float32 holds 1e4 to about 1e-3: correct stable methods (log-sum-exp) may differ by that much.
            compare_loose("masked_softmax", got, expected, inputs=inputs, atol=5e-3)
        else:
            compare("masked_softmax", got, expected, inputs=inputs, mistakes=softmax_mistakes(scores, mask))


@check("dim is honoured: the softmax runs over dim=0, dim=1 and dim=-2 of 3-D scores")
def check_dim(learner, reference, device):
    for dtype in DTYPES:
        scores = 3 * randn(3, 4, 5, dtype=dtype, device=device, seed=60)
        masks = {
            0: random_mask(4, 5, 3, device=device, seed=61).movedim(-1, 0),   # (3, 4, 5), rows along dim 0
            1: random_mask(3, 5, 4, device=device, seed=62).movedim(-1, 1),   # (3, 4, 5), rows along dim 1
            -2: random_mask(1, 4, device=device, seed=63).T,                  # (4, 1), broadcast
        }
        for dim, mask in masks.items():
            inputs = describe(scores=scores, mask=mask) + f", dim={dim}"
            got = masked_softmax(learner, scores, mask, dim=dim)
            compare(f"masked_softmax(dim={dim})", got, reference.masked_softmax(scores, mask, dim=dim),
                    inputs=inputs, mistakes=softmax_mistakes(scores, mask, dim))


@check("causal_mask is bottom-right aligned: j <= i + (S - L), for L == S, L < S and L > S")
def check_causal_mask(learner, device):
    for L, S in [(4, 4), (1, 1), (3, 7), (1, 5), (2, 6), (5, 5), (6, 3), (4, 1)]:
        got = learner.call("causal_mask", L, S, device=device)
        compare_mask(f"causal_mask({L}, {S})", got, expected_causal(L, S, device),
                     inputs=f"L={L}, S={S}", mistakes=causal_mistakes(L, S, device))
    for L in (1, 5):
        got = learner.call("causal_mask", L, device=device)
        compare_mask(f"causal_mask({L}) (num_keys defaults to num_queries)", got,
                     expected_causal(L, L, device), inputs=f"L=S={L}",
                     mistakes=causal_mistakes(L, L, device))


@check("causal_mask is a bool tensor on the device asked for (the CPU by default)")
def check_causal_device(learner, device):
    for label, where in (("device=torch.device", device), ("device as a string", str(device))):
        got = learner.call("causal_mask", 3, 5, device=where)
        compare_mask(f"causal_mask(3, 5, {label})", got, expected_causal(3, 5, device), inputs="L=3, S=5")
    got = learner.call("causal_mask", 3, 5)
    compare_mask("causal_mask(3, 5) with no device", got, expected_causal(3, 5), inputs="L=3, S=5")


@check("masked_softmax with causal_mask(L, S): query i attends to keys 0 .. i + S - L")
def check_together(learner, reference, device):
    scores = randn(2, 3, 7, device=device, seed=70)
    mask = learner.call("causal_mask", 3, 7, device=device)
    got = masked_softmax(learner, scores, mask)
    expected = reference.masked_softmax(scores, expected_causal(3, 7, device))
    wrong_masks = [(mistake, lambda make=make: reference.masked_softmax(scores, make()))
                   for mistake, make in causal_mistakes(3, 7, device)]
    compare("masked_softmax(scores, causal_mask(3, 7))", got, expected, inputs=describe(scores=scores) + ", L=3, S=7",
            mistakes=softmax_mistakes(scores, expected_causal(3, 7, device)) + wrong_masks)


@check("a mask that is not boolean raises ValueError naming mask")
def check_bad_mask(learner, device):
    scores = randn(2, 5, 7, device=device)
    keep = random_mask(5, 7, device=device, seed=80)
    learner.raises("a float 0 / 1 mask", ("mask",), "masked_softmax", scores, keep.double())
    additive = torch.zeros(5, 7, dtype=torch.float64, device=device).masked_fill(~keep, float("-inf"))
    learner.raises("an additive float 0 / -inf mask", ("mask",), "masked_softmax", scores, additive)
    learner.raises("an integer (int64) mask", ("mask",), "masked_softmax", scores, keep.long())
