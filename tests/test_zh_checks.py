"""The hidden checks' output in Chinese (issue 9 item 19): with lang="zh" every check title and
failure message the judge and the supervisor write is Chinese, with the terms of
docs/glossary.md; with lang="en" (the default) it is the English it always was."""

import importlib
import pkgutil

import pytest

from attn_drill.catalog import find_exercise
from attn_drill.quiz.glossary import drift_in

from conftest import FIXTURES

NO_SCALE = ("* scale  # (..., L, S)", "  # (..., L, S)")  # ex1's reference without the 1/sqrt(d) scale


def _no_scale(tmp_path):
    source = find_exercise("ex1").solution_path.read_text(encoding="utf-8")
    assert source.count(NO_SCALE[0]) == 1
    mutant = tmp_path / "ex01_self_attention.py"
    mutant.write_text(source.replace(*NO_SCALE), encoding="utf-8")
    return mutant


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _by_name(report, title: str):
    return next(c for c in report.checks if c.name == title)


# ---------------------------------------------------------------------------------------------
# Through the real engine


def test_starter_in_chinese(graded):
    report = graded("ex1", find_exercise("ex1").starter_path, lang="zh")
    assert not report.passed
    assert all(not c.name.isascii() for c in report.checks), [c.name for c in report.checks]
    names = [c.name for c in report.checks]
    assert names[0] == "你的文件能够导入，并定义了 scaled_dot_product_attention、self_attention"
    assert "out 和 weights 与参考实现一致（float64 和 float32，五种形状）" in names
    failed = [c for c in report.checks if not c.passed]
    assert failed and all(_has_chinese(c.message) for c in failed)
    assert "scaled_dot_product_attention() 还没有实现：它抛出了 NotImplementedError。" in failed[0].message
    bad = _by_name(report, "错误的参数会抛出指明该参数的 ValueError")
    assert bad.message.startswith("scaled_dot_product_attention()（q (2, 5, 4) 与 k (2, 7, 3) 的宽度不同）还没有实现")
    for check in report.checks:
        assert not drift_in(check.name), check.name


def test_named_mistake_in_chinese(graded, tmp_path):
    report = graded("ex1", _no_scale(tmp_path), lang="zh")
    assert "no-scale" in report.mistakes
    check = _by_name(report, "out 和 weights 与参考实现一致（float64 和 float32，五种形状）")
    assert not check.passed and check.mistake == "no-scale"
    first, named = check.message.splitlines()
    assert first.startswith("weights 不正确（输入：q (1, 1, 1, 4), k (1, 1, 3, 4), v (1, 1, 3, 4), float64）：最大差异 ")
    assert "（得到 " in first and "，应为 " in first and "；容差 atol=1e-09，rtol=1e-07）。" in first
    assert named.startswith("你的输出等于") and named.endswith("。") and _has_chinese(named.removeprefix("你的输出等于"))
    gradients = _by_name(report, "对 q、k、v 的梯度与参考实现一致")
    assert gradients.message.startswith("q 的梯度不正确（输入：")
    assert all(not c.name.isascii() for c in report.checks)


def test_time_limit_in_chinese(graded):
    report = graded("ex1", FIXTURES / "hostile" / "loop_in_call.py", lang="zh", timeout=0.25)
    failed = [c for c in report.checks if not c.passed]
    assert failed and all(not c.name.isascii() for c in report.checks)
    assert any(c.message == "你的代码在 scaled_dot_product_attention() 期间超出了 0.25 s 的时间限制。" for c in failed), \
        [c.message for c in failed]
    assert any(c.message == "未运行：你的代码在之前的一项检查中超出了 0.25 s 的时间限制（见上文）。" for c in failed)
    assert all("ran past" not in c.message for c in failed)


def test_english_is_unchanged(graded, tmp_path):
    starter = graded("ex1", find_exercise("ex1").starter_path, lang="en")
    default = graded("ex1", find_exercise("ex1").starter_path)
    assert [(c.name, c.message) for c in starter.checks] == [(c.name, c.message) for c in default.checks]
    assert starter.checks[0].name == "your file imports and defines scaled_dot_product_attention and self_attention"
    assert all(c.name.isascii() and not _has_chinese(c.message) for c in starter.checks)
    assert "scaled_dot_product_attention() is not written yet: it raises NotImplementedError." in \
        starter.checks[2].message

    mutant = graded("ex1", _no_scale(tmp_path), lang="en")
    check = _by_name(mutant, "out and weights match the reference (float64 and float32, five shapes)")
    first, named = check.message.splitlines()
    assert first.startswith("weights is wrong for q (1, 1, 1, 4), k (1, 1, 3, 4), v (1, 1, 3, 4), float64: "
                            "largest difference ")
    assert named == "Your output equals attention without the 1/sqrt(d) scale."
    assert all(not _has_chinese(c.name + c.message) for c in mutant.checks)

    hang = graded("ex1", FIXTURES / "hostile" / "loop_in_call.py", lang="en", timeout=0.25)
    assert any("your code ran past the time limit of 0.25 s during scaled_dot_product_attention()" in c.message
               for c in hang.checks if not c.passed)
    assert all(not _has_chinese(c.name + c.message) for c in hang.checks)


# ---------------------------------------------------------------------------------------------
# Without the engine


def _check_functions():
    import attn_drill.checks as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("ex") or info.name == "properties":
            module = importlib.import_module(f"attn_drill.checks.{info.name}")
            for name in dir(module):
                if name.startswith("check_") and callable(getattr(module, name)):
                    yield f"{info.name}.{name}", getattr(module, name)


def test_every_check_has_a_chinese_title_in_the_glossary_terms():
    checks = list(_check_functions())
    assert len(checks) > 100
    for where, function in checks:
        zh = getattr(function, "__check_title_zh__", None)
        assert zh and _has_chinese(zh), f"{where} has no Chinese title"
        assert not drift_in(zh), (where, [str(d) for d in drift_in(zh)])


def test_supervisor_messages_in_chinese():
    from attn_drill.grading import _exit_cause, _outcomes, _Run

    run = _Run(lang="zh", done=True, worker_end=_exit_cause(-11, "zh"))
    run.collected = [{"id": "a", "name": "甲"}, {"id": "b", "name": "乙"}]
    run.results = {"a": {"check": "a", "passed": False, "message": "", "lost": "scaled_dot_product_attention()"}}
    first, second = _outcomes(run, 1)
    assert first.message == "你的代码在 scaled_dot_product_attention() 期间因信号 SIGSEGV 而崩溃。"
    assert second.message == "未运行：评分在这项检查运行之前就结束了"
    assert _exit_cause(3, "zh") == "退出了进程（退出码 3）" and _exit_cause(3) == "exited the process (exit code 3)"

    english = _Run(done=True, worker_end=_exit_cause(-11))
    english.collected, english.results = run.collected, run.results
    assert _outcomes(english, 1)[0].message == ("your code crashed with signal SIGSEGV during "
                                                "scaled_dot_product_attention().")

    nothing = _Run(lang="zh", stopped="评分耗时过长，已被终止")
    (only,) = _outcomes(nothing, None)
    assert only.name == "评分开始" and only.message.startswith("评分耗时过长，已被终止；这是 attn-drill 的问题")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_named_mistake_line(lang, monkeypatch):
    from attn_drill.checks import harness

    monkeypatch.setattr(harness, "CONFIG", type("Config", (), {"lang": lang})())
    known = harness.mistake("no-scale")
    assert harness.says(known, "en") == known.says
    if lang == "en":
        assert harness.equals_line(known) == "\nYour output equals attention without the 1/sqrt(d) scale."
        assert harness.says(known) == known.says
        return
    said = harness.says(known)
    assert said == (getattr(known, "says_zh", "") or known.says)
    assert harness.equals_line(known) in (f"\n你的输出等于{said}。", f"\n你的输出等于 {said}。")
    assert harness.equals_line(known, "mask").startswith("\n你的掩码等于")
    assert harness._tidy("q 的梯度 不正确（输入：x (2, 3)） 之后") == "q 的梯度不正确（输入：x (2, 3)）之后"
