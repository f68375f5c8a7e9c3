"""Property checks every exercise shares, written once.

An exercise's check file composes these with a few lines of its own: what to call, on which
shapes, and how to build its module and the reference twin with the same weights. Two checks
here run for every exercise as they are (each check file imports them): ``check_defines``
(the file imports and defines what the statement asks for) and ``check_static_scan``
(no forbidden built-in, no reaching into the grader's machinery).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from attn_drill.checks.harness import (
    Learner, MistakeCandidates, RemoteObject, check, compare, compare_parameter_grads, config, copy_parameters,
    expect_tensor, expect_tuple, fail, require_defined,
)

# ---------------------------------------------------------------------------------------
# The two checks of every exercise


@check("your file imports and defines {defines}")
def check_defines(learner):
    require_defined(learner)


@check("your file calls no forbidden built-in and reaches into no grader machinery")
def check_static_scan():
    from attn_drill.engine.scan import scan

    cfg = config()
    findings = scan(cfg.learner_file.read_text(encoding="utf-8"), cfg.forbidden, allowed_names=cfg.defines)
    if findings:
        shown = "\n".join(f"  {cfg.learner_name}, {finding}" for finding in findings[:5])
        more = f"\n  ... and {len(findings) - 5} more" if len(findings) > 5 else ""
        fail(f"your file uses what this exercise does not allow:\n{shown}{more}\nWrite it with plain tensor "
             "operations.")


# ---------------------------------------------------------------------------------------
# Calling learner code


def outputs(result: Any, count: int, what: str) -> tuple[torch.Tensor, ...]:
    """``result`` as ``count`` tensors (one tensor when count is 1)."""
    if count == 1:
        return (expect_tensor(result, what),)
    values = expect_tuple(result, count, what)
    return tuple(value if value is None else expect_tensor(value, f"{what}[{i}]") for i, value in enumerate(values))


def twin(learner: Learner, build: Callable[..., torch.nn.Module], name: str, *args, dtype=torch.float64,
         device=None, seed: int = 0, what: str | None = None, **kwargs) -> tuple[RemoteObject, torch.nn.Module]:
    """The learner's module ``name(*args, **kwargs)`` and the reference ``build(*args, **kwargs)``
    with the same (seeded) weights, in ``dtype`` on ``device``, both in eval mode."""
    torch.manual_seed(seed)
    ref = build(*args, **kwargs).to(dtype=dtype, device=device).eval()
    mine = learner.module(name, *args, **kwargs)
    label = what or f"{name}({', '.join(map(repr, args))})"
    copy_parameters(learner, label, mine, ref)
    learner.to(mine, dtype=dtype, device=device)
    return learner.eval(mine), ref


def agree(names: Sequence[str], got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], *, inputs: str,
          mistakes: Callable[[int], MistakeCandidates] = lambda part: ()) -> None:
    """Each output equals the reference's (``mistakes(i)`` names known mistakes for output i)."""
    for i, (name, mine, want) in enumerate(zip(names, got, expected)):
        compare(name, mine, want, inputs=inputs, mistakes=mistakes(i))


# ---------------------------------------------------------------------------------------
# Properties


def finite(what: str, tensors: Sequence[torch.Tensor], *, inputs: str, advice: str) -> None:
    """No NaN or inf in any of ``tensors``."""
    for tensor in tensors:
        if tensor is not None and not torch.isfinite(tensor).all():
            fail(f"{what} has NaN or inf for {inputs}: {advice}")


def rows_sum_to_one(weights: torch.Tensor, *, inputs: str, rows=slice(None), tolerance: float = 1e-9,
                    mistakes: MistakeCandidates = ()) -> None:
    from attn_drill.checks.harness import fail_naming

    sums = weights.detach().sum(-1)[..., rows]
    worst = (sums - 1).abs().max().item() if sums.numel() else 0.0
    if worst > tolerance:
        fail_naming(f"weights rows do not sum to 1 for {inputs} (off by up to {worst:.3g}): the softmax must run "
                    "over the keys, dim=-1.", weights, mistakes)


def every_parameter_learns(learner: Learner, what: str, mine: RemoteObject, ref: torch.nn.Module,
                           run_mine: Callable[[], Any], run_ref: Callable[[], torch.Tensor], *, inputs: str) -> None:
    """In training mode, every parameter of the learner's module receives the reference's
    gradient (``run_mine`` and ``run_ref`` make the same forward pass and return its output)."""
    learner.train(mine)
    ref.train()
    compare_parameter_grads(learner, what, mine, run_mine(), ref, run_ref(), inputs=inputs)
    learner.eval(mine)
    ref.eval()


def dropout_train_only(learner: Learner, what: str, mine: RemoteObject, run_mine: Callable[[], torch.Tensor],
                       run_ref: Callable[[], torch.Tensor], *, inputs: str, advice: str) -> None:
    """With dropout=0.5: eval mode matches the reference (in eval mode) exactly, training mode
    differs from eval, and two training passes differ (fresh randomness each call)."""
    compare(f"{what} in eval mode with dropout=0.5", run_mine(), run_ref(), inputs=inputs)
    learner.train(mine)
    learner.seed(0)
    first, second = run_mine(), run_mine()
    learner.eval(mine)
    evaluated = run_mine()
    if torch.allclose(first, evaluated) or torch.allclose(first, second):
        fail(f"with dropout=0.5 in training mode {what} equals eval mode (or repeats itself) for {inputs}: {advice}")
