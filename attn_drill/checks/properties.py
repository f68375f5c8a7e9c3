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
    Learner, MistakeCandidates, RemoteObject, _t, check, compare, compare_parameter_grads, config, copy_parameters,
    current_lang, equals_line, expect_tensor, expect_tuple, fail, require_defined, seed_modules,
)

# ---------------------------------------------------------------------------------------
# The two checks of every exercise


@check("your file imports and defines {defines}", zh="你的文件能够导入，并定义了 {defines}")
def check_defines(learner):
    require_defined(learner)


@check("your file calls no forbidden built-in and reaches into no grader machinery",
       zh="你的文件没有调用被禁止的内置函数，也没有触及评分程序的内部机制")
def check_static_scan():
    from attn_drill.engine.scan import scan

    cfg = config()
    findings = scan(cfg.learner_file.read_text(encoding="utf-8"), cfg.forbidden, allowed_names=cfg.defines)
    if findings:
        if current_lang() == "zh":
            shown = "\n".join(f"  {cfg.learner_name}，{_finding_zh(finding)}" for finding in findings[:5])
            more = f"\n  ……另有 {len(findings) - 5} 处" if len(findings) > 5 else ""
            fail(f"你的文件用到了本练习不允许的东西：\n{shown}{more}\n请只用普通的张量运算来实现。")
        shown = "\n".join(f"  {cfg.learner_name}, {finding}" for finding in findings[:5])
        more = f"\n  ... and {len(findings) - 5} more" if len(findings) > 5 else ""
        fail(f"your file uses what this exercise does not allow:\n{shown}{more}\nWrite it with plain tensor "
             "operations.")


ESCAPE_HATCHES_ZH = {  # attn_drill.engine.scan.ESCAPE_HATCHES, in Chinese
    "torch._C": "torch 的 C 内部接口", "torch.ops": "直接调用算子", "torch._dynamo": "torch 编译器的内部接口",
    "torch.overrides": "torch-function 覆盖", "torch.utils._python_dispatch": "dispatch 模式",
    "_disable_torch_function": "关闭 torch-function 模式", "__torch_function__": "torch-function 覆盖",
    "__torch_dispatch__": "dispatch 覆盖", "TorchFunctionMode": "torch-function 模式",
    "TorchDispatchMode": "dispatch 模式", "settrace": "跟踪评分程序（sys.settrace）",
    "setprofile": "性能分析钩子（sys.setprofile）", "_getframe": "读取调用者的栈帧", "gc": "垃圾回收器的对象列表",
    "ctypes": "直接访问内存", "importlib": "重新导入模块", "reload": "重新加载模块", "__import__": "运行时按名字导入",
    "builtins": "builtins 模块", "inspect": "检查调用者", "signal": "信号", "subprocess": "启动程序",
    "multiprocessing": "启动进程", "socket": "网络", "pickle": "反序列化（unpickle）",
}


def _finding_zh(finding) -> str:
    """A static-scan finding ("line 3: name (why)") in Chinese."""
    from attn_drill.engine.scan import ESCAPE_HATCHES

    why = finding.why
    if why.endswith(" is off limits in this exercise"):
        why = f"{why.removesuffix(' is off limits in this exercise')} 在本练习中不允许使用"
    else:
        hatch = next((key for key, text in ESCAPE_HATCHES.items() if why == f"{text} is not allowed in exercise code"),
                     None)
        if hatch is not None:
            why = f"{ESCAPE_HATCHES_ZH.get(hatch, ESCAPE_HATCHES[hatch])}在练习代码中是不允许的"
    return f"第 {finding.line} 行：{finding.name}（{why}）"


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
    seed_modules(seed)
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
            fail(_t(f"{what} has NaN or inf for {inputs}: {advice}", f"{what} 含有 NaN 或 inf（输入：{inputs}）：{advice}"))


def rows_sum_to_one(weights: torch.Tensor, *, inputs: str, rows=slice(None), tolerance: float = 1e-9,
                    mistakes: MistakeCandidates = ()) -> None:
    from attn_drill.checks.harness import fail_naming

    sums = weights.detach().sum(-1)[..., rows]
    worst = (sums - 1).abs().max().item() if sums.numel() else 0.0
    if worst > tolerance:
        fail_naming(_t(f"weights rows do not sum to 1 for {inputs} (off by up to {worst:.3g}): the softmax must run "
                       "over the keys, dim=-1.",
                       f"weights 的行之和不为 1（输入：{inputs}；最多相差 {worst:.3g}）：softmax 必须沿 key 的维度"
                       "（dim=-1）计算。"), weights, mistakes)


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
    compare(_t(f"{what} in eval mode with dropout=0.5", f"{what}（eval 模式，dropout=0.5）"), run_mine(), run_ref(),
            inputs=inputs)
    learner.train(mine)
    learner.seed(0)
    first, second = run_mine(), run_mine()
    learner.eval(mine)
    evaluated = run_mine()
    if torch.allclose(first, evaluated) or torch.allclose(first, second):
        fail(_t(f"with dropout=0.5 in training mode {what} equals eval mode (or repeats itself) for {inputs}: {advice}",
                f"dropout=0.5 时，{what} 在训练模式下与 eval 模式相同（或两次调用完全相同；输入：{inputs}）：{advice}"))


# ---------------------------------------------------------------------------------------
# Added with the ex3, ex4, ex5 and ex7 ports


def masked_get_zero(weights: torch.Tensor, mask: torch.Tensor, *, inputs: str, mistakes: MistakeCandidates = ()) -> None:
    """Every weight where ``mask`` (broadcast to the weights' shape, which the caller has checked)
    is False is exactly 0."""
    from attn_drill.checks.harness import fail_naming

    leaked = weights.detach()[~mask.to(weights.device).expand_as(weights)].abs()
    if leaked.numel() and leaked.max().item() != 0:
        fail_naming(_t(f"a masked position got weight {leaked.max().item():.3g} for {inputs}: positions where the mask "
                       "is False must get exactly 0 (True means 'may attend').",
                       f"一个被屏蔽的位置得到了权重 {leaked.max().item():.3g}（输入：{inputs}）：mask 为 False 的位置"
                       "必须恰好得到 0（True 表示“可以关注”）。"), weights, mistakes)


def device_honoured(learner: Learner, name: str, *args, **kwargs) -> None:
    """The ``device`` argument of the learner's ``name(*args, **kwargs, device=...)`` is used,
    provable without a GPU: on a machine without CUDA, device="cuda" must not quietly give a CPU
    tensor (code that honours it raises there, which is not held against it). Where CUDA is
    present the checks run there and ``compare`` checks every output's device directly."""
    from attn_drill.checks.harness import CheckFailure

    if torch.cuda.is_available():
        return
    try:
        got = learner.call(name, *args, **kwargs, device=torch.device("cuda"))
    except CheckFailure:
        if learner.remote.broken is not None:
            raise
        return
    if isinstance(got, torch.Tensor):
        shown = ", ".join([*map(repr, args), *(f"{k}={v}" for k, v in kwargs.items()), "device='cuda'"])
        fail(_t(f"{name}({shown}) returned a tensor on {got.device} on this machine, which has no GPU: honouring "
                "device='cuda' would have failed, so the device argument is ignored. Create the result with "
                "device=device.",
                f"在这台没有 GPU 的机器上，{name}({shown}) 返回了位于 {got.device} 的张量：如果遵从 device='cuda'，"
                "调用本应失败，所以 device 参数被忽略了。请用 device=device 创建结果。"))


class _Forward(RemoteObject):
    def __str__(self) -> str:
        return f"{self.type_name}.forward"


def forward_raises(learner: Learner, case: str, names: Sequence[str], module: RemoteObject, *args, **kwargs) -> None:
    """``Learner.raises`` for a learner module's forward: fail unless ``module(*args, **kwargs)``
    raises ValueError whose message names one of ``names``."""
    learner.raises(case, names, _Forward(module.remote, module.handle, module.type_name, module.is_module),
                   *args, **kwargs)


# ---------------------------------------------------------------------------------------
# Added with the ex6, ex8 and ex9 ports


def eval_is_deterministic(learner: Learner, what: str, mine: RemoteObject, run_mine: Callable[[], torch.Tensor], *,
                          inputs: str) -> None:
    """In eval mode two passes agree exactly; otherwise dropout is still on (names dropout-in-eval)."""
    from attn_drill.checks.harness import mistake

    learner.eval(mine)
    first, second = run_mine(), run_mine()
    if not torch.equal(first.nan_to_num(0.5), second.nan_to_num(0.5)):
        known = mistake("dropout-in-eval")
        fail(_t(f"in eval() mode {what} changed from one call to the next for {inputs}: dropout must be off in eval "
                "mode (use nn.Dropout, or F.dropout(..., training=self.training)).",
                f"在 eval() 模式下，{what} 每次调用的结果都不同（输入：{inputs}）：eval 模式下 dropout 必须关闭"
                "（用 nn.Dropout，或 F.dropout(..., training=self.training)）。") + equals_line(known), known.key)


# ---------------------------------------------------------------------------------------
# Causal self-attention of a module with a fused qkv (ex6, ex8), computed in the judge

CAUSAL_BUILTIN = ("; compared with nn.MultiheadAttention given in_proj_weight = qkv.weight, in_proj_bias = qkv.bias, "
                  "your out_proj, and attn_mask = triu(ones(T, T), 1) (its boolean mask means True = NOT allowed, the "
                  "opposite of ours)")
CAUSAL_BUILTIN_ZH = ("；对照的是 nn.MultiheadAttention，给它 in_proj_weight = qkv.weight、in_proj_bias = qkv.bias、"
                     "你的 out_proj 和 attn_mask = triu(ones(T, T), 1)（它的布尔掩码中 True 表示不允许，与我们的约定相反）")


def causal_builtin_note() -> str:
    """CAUSAL_BUILTIN in the grading's language."""
    return _t(CAUSAL_BUILTIN, CAUSAL_BUILTIN_ZH)


def fused_causal_attention(module: torch.nn.Module, x: torch.Tensor, num_heads: int, seen: torch.Tensor | None = None,
                           *, causal: str = "bottom-right", order=(0, 1, 2), split_view: bool = False,
                           merge_view: bool = False, nan_rows: bool = False, scale: float | None = None,
                           **switches) -> torch.Tensor:
    """The causal self-attention of ``module`` (``qkv`` holding q, k, v, then ``out_proj``) for the
    new tokens ``x`` (B, T, E) after the cached tokens ``seen`` (B, P, E); the keywords reproduce
    known mistakes. ``causal``: the keys query i sees, "bottom-right" j <= i + P (right), "top-left"
    j <= i, "strict" j < i + P, "none", "future" j > i + P, "future-and-self" j >= i + P; ``order``:
    where q, k, v sit in qkv; ``split_view``/``merge_view``: heads without a transpose; ``nan_rows``:
    a query that sees no key gets NaN (softmax 0 / 0), not 0; ``scale`` and ``switches`` go to
    ``mistakes.attention``."""
    import torch.nn.functional as F

    from attn_drill.checks.mistakes import attention

    with torch.no_grad():
        B, T, E = x.shape
        H, D = num_heads, E // num_heads
        context = x if seen is None else torch.cat([seen, x], dim=1)  # (B, S, E)
        S = context.size(1)

        def heads(t):  # (B, n, E) -> (B, H, n, D)
            n = t.size(1)
            return t.reshape(B, H, n, D) if split_view else t.view(B, n, H, D).transpose(1, 2)

        q = heads(F.linear(x, module.qkv.weight, module.qkv.bias).split(E, dim=2)[order[0]])        # (B, H, T, D)
        k, v = (heads(F.linear(context, module.qkv.weight, module.qkv.bias).split(E, dim=2)[i])
                for i in order[1:])                                                                 # (B, H, S, D)
        j, i = torch.arange(S, device=x.device)[None, :], torch.arange(T, device=x.device)[:, None]
        offset = j - i - (S - T)  # (T, S): 0 on the bottom-right aligned diagonal
        allowed = {"bottom-right": offset <= 0, "top-left": j <= i, "strict": offset < 0, "none": None,
                   "future": offset > 0, "future-and-self": offset >= 0}[causal]
        y = attention(q, k, v, allowed, scale, **switches)[0]                                       # (B, H, T, D)
        if nan_rows and allowed is not None:
            y = y.masked_fill(~allowed.any(-1)[:, None], float("nan"))                              # (B, H, T, D)
        y = y.reshape(B, T, E) if merge_view else y.transpose(1, 2).reshape(B, T, E)                # (B, T, E)
        return F.linear(y, module.out_proj.weight, module.out_proj.bias)                            # (B, T, E)


def causal_builtin(module: torch.nn.Module, num_heads: int, x: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention given ``module``'s qkv and out_proj, under a causal mask: (B, T, E)."""
    from attn_drill.checks.harness import builtin_multihead

    T = x.size(1)
    mha = builtin_multihead(num_heads, module.qkv.weight, module.qkv.bias, module.out_proj.weight,
                            module.out_proj.bias)
    not_allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)  # (T, T), True = NOT allowed
    with torch.no_grad():
        return mha(x, x, x, attn_mask=not_allowed, need_weights=False)[0]  # (B, T, E)


def indivisible_heads_raise(learner: Learner, name: str, *args) -> None:
    """``name(E, H, *args)`` raises ValueError naming embed_dim, and naming num_heads, when H does not divide E."""
    for E, H in ((10, 4), (6, 4)):
        for argument in ("embed_dim", "num_heads"):
            learner.raises(f"embed_dim={E}, num_heads={H}", (argument,), name, E, H, *args)


def causal_mistakes(module: torch.nn.Module, x: torch.Tensor, num_heads: int) -> MistakeCandidates:
    """Known mistakes of causal self-attention with a fused qkv (ex6, ex8) on the input x (B, T, E)."""
    import itertools

    from attn_drill.checks.harness import mistake

    def variant(**switches):
        return lambda: fused_causal_attention(module, x, num_heads, **switches)

    candidates = [(mistake("causal-missing"), variant(causal="none")),
                  (mistake("causal-inverted"), variant(causal="future")),
                  (mistake("causal-inverted"), variant(causal="future-and-self")),
                  (mistake("causal-off-by-one"), variant(causal="strict")),
                  (mistake("no-scale"), variant(scale_kind="none")),
                  (mistake("softmax-dim"), variant(softmax_dim=-2))]
    if x.size(1) > 1:  # NaN where a query sees no key (all NaN for T = 1 would match anything)
        candidates += [(mistake("causal-inverted"), variant(causal="future", nan_rows=True)),
                       (mistake("causal-off-by-one"), variant(causal="strict", nan_rows=True))]
    if num_heads > 1:
        candidates += [(mistake("heads-split-without-transpose"), variant(split_view=True)),
                       (mistake("heads-merged-without-transpose"), variant(merge_view=True)),
                       (mistake("scale-by-embed-dim"), variant(scale=x.size(2) ** -0.5))]
    return candidates + [(mistake("qkv-order"), variant(order=order))
                         for order in itertools.permutations(range(3)) if order != (0, 1, 2)]
