"""The CLI in Chinese (issue 9, item 19): with `--lang zh` or a Chinese locale, hints, known
mistakes and errors are Chinese; without either, the English output is unchanged."""

import re

import pytest

from attn_drill.catalog import _read_catalog, find_exercise, load_catalog
from attn_drill.checks.harness import mistake_table
from attn_drill.errors import ContentError, DrillError

CJK = re.compile(r"[\u4e00-\u9fff]")
ZH_LOCALE = {"LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
EN_LOCALE = {"LANG": "en_US.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_every_built_in_exercise_has_its_hints_in_chinese():
    for exercise in load_catalog():
        assert len(exercise.hints_zh) == len(exercise.hints), exercise.id
        assert all(CJK.search(text) for text in exercise.hints_zh), exercise.id
        assert exercise.hints_in("zh") == exercise.hints_zh and exercise.hints_in("en") == exercise.hints


def test_hints_in_chinese_with_lang_zh_and_with_the_locale(cli):
    ex1 = find_exercise("ex1")
    first = cli("--lang", "zh", "hint", "ex1", env=EN_LOCALE)
    assert first.code == 0 and "提示 1 / 4" in first.stdout
    assert ex1.hints_zh[0][:10] in first.stdout and ex1.hints[0][:20] not in first.stdout
    second = cli("hint", "ex1", env=ZH_LOCALE).stdout   # the locale alone; both hints revealed so far
    assert "提示 1 / 4" in second and "提示 2 / 4" in second and "显示下一条" in second
    assert "只转置 k 的最后两个维度" in second and "k.transpose(-2, -1)" in second   # code stays code
    english = cli("hint", "ex1", env=EN_LOCALE).stdout
    assert "hint 3 of 4" in english and not CJK.search(english)


def test_a_pack_without_hints_zh_falls_back_to_english(cli, tmp_path):
    pack = tmp_path / "pack"
    made = cli("new", "ex14_rope_scaling", "--pack", pack)
    assert made.code == 0, made.stderr
    assert find_exercise("ex1").hints_zh   # the built-in ones stay Chinese beside it
    shown = cli("--lang", "zh", "--pack", pack, "hint", "ex14")
    assert shown.code == 0 and "提示 1 / 3" in shown.stdout and "TODO: the vaguest hint first" in shown.stdout


def test_hints_zh_must_match_hints_one_for_one(tmp_path):
    entry = '''format_version = 1
[[exercises]]
id = "ex14"
name = "x"
title = "X"
title_zh = "X"
topic = "math"
difficulty = 1
defines = ["f"]
forbidden = []
hints = ["a", "b", "c"]
'''
    good = tmp_path / "good.toml"
    good.write_text(entry + 'hints_zh = ["甲", "乙", "丙"]\n', encoding="utf-8")
    assert _read_catalog(good)[0].hints_zh == ("甲", "乙", "丙")
    missing = tmp_path / "missing.toml"
    missing.write_text(entry, encoding="utf-8")
    assert _read_catalog(missing)[0].hints_zh == () and _read_catalog(missing)[0].hints_in("zh") == ("a", "b", "c")
    short = tmp_path / "short.toml"
    short.write_text(entry + 'hints_zh = ["甲", "乙"]\n', encoding="utf-8")
    with pytest.raises(ContentError, match="hints_zh") as raised:
        _read_catalog(short)
    assert "hints_zh" in raised.value.text("zh") and CJK.search(raised.value.text("zh"))


def test_every_built_in_mistake_says_it_in_chinese():
    table = mistake_table()
    assert len(table) >= 20
    for key, known in table.items():
        assert known.says.strip() and CJK.search(known.says_zh), key


def test_an_error_keeps_english_as_its_str_and_falls_back_to_it():
    error = DrillError("no such thing.", zh="没有这个东西。")
    assert str(error) == "no such thing." and error.text("zh") == "没有这个东西。" and error.text("en") == str(error)
    assert DrillError("only English.").text("zh") == "only English."


def test_an_unknown_exercise_is_one_chinese_line_exit_2(cli):
    for result in (cli("--lang", "zh", "check", "ex99", env=EN_LOCALE), cli("show", "ex99", env=ZH_LOCALE),
                   cli("show", "ex99", "--lang", "zh")):
        line = one_line(result.stderr)
        assert result.code == 2 and line.startswith("错误：没有名为 'ex99' 的练习") and "attn-drill list" in line
        assert "Traceback" not in result.stderr and "no exercise named" not in result.stderr


def test_the_solution_before_a_pass_is_refused_in_chinese(cli):
    result = cli("--lang", "zh", "solution", "ex2")
    line = one_line(result.stderr)
    assert result.code == 2 and "还没有通过" in line and "`attn-drill solution ex2 --force`" in line
    assert "`attn-drill hint ex2`" in line and "has not passed" not in line


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--timeout", "-1", "--timeout 必须是正的秒数"),
    ("--timeout", "nan", "--timeout 必须是正的秒数"),
    ("--memory-limit", "lots", "--memory-limit 必须是 2GiB 或 512MiB 这样的大小"),
])
def test_bad_option_values_are_chinese(cli, option, value, words):
    result = cli("--lang", "zh", "check", "ex2", "--file", find_exercise("ex2").solution_path, option, value)
    assert result.code == 2 and one_line(result.stderr).startswith("错误：") and words in result.stderr


def test_newcomer_errors_are_chinese(cli, tmp_path):
    (tmp_path / "folder").mkdir()
    unnamed = tmp_path / "mine.py"
    unnamed.write_text("x = 1\n")
    for args, words in [
        (("check", "ex1"), "没有 attn-drill 工作区"),
        (("reset", "ex1"), "再放回 ex1 的初始代码"),
        (("check", "ex1", "--file", "missing.py"), "missing.py 处没有文件"),
        (("check", "ex1", "--file", tmp_path / "folder"), "是一个目录"),
        (("check", "ex1", "--file", "/bin/ls"), "不是 Python 文件"),
        (("check", "--file", unnamed), "看不出 mine.py 是哪个练习的文件"),
        (("check", "--all", "ex1"), "--all 评测整个工作区"),
        (("check", "ex1", "--file", unnamed, "--json", "--format", "gradescope"), "请只选一个"),
        (("--lang", "xx", "list"), "--lang 必须是 en 或 zh"),
        (("new", "ex14"), "请指定要写入的练习包文件夹"),
        (("new", "nonsense", "--pack", tmp_path / "pack"), "练习 id 应形如 ex14"),
    ]:
        result = cli(*args, env=ZH_LOCALE)
        assert result.code == 2, (args, result.stderr)
        line = one_line(result.stderr)
        assert line.startswith("错误：") and words in line, (args, line)


def test_a_click_usage_error_starts_with_a_chinese_line(cli):
    result = cli("--lang", "zh", "check", "--no-such-option")
    first = result.stderr.strip().splitlines()[0]
    assert result.code == 2 and first.startswith("用法错误：") and "--no-such-option" in first
    missing = cli("show", env=ZH_LOCALE)
    assert missing.code == 2 and missing.stderr.startswith("用法错误：") and "EXERCISE" in missing.stderr
    english = cli("check", "--no-such-option", env=EN_LOCALE)
    assert english.code == 2 and "No such option" in english.stderr and not CJK.search(english.stderr)


def test_english_is_unchanged_without_lang(cli):
    for args, start in [(("check", "ex99"), "error: no exercise named 'ex99'. Try one of: ex1,"),
                        (("solution", "ex2"), "error: ex2 has not passed yet, so its solution stays hidden."),
                        (("reset", "ex1"), "error: no attn-drill workspace here or above: cd into one to put ex1's")]:
        result = cli(*args, env=EN_LOCALE)
        assert result.code == 2 and one_line(result.stderr).startswith(start) and not CJK.search(result.stderr)
    shown = cli("hint", "ex2", env=EN_LOCALE).stdout
    assert find_exercise("ex2").hints[0][:30] in shown and not CJK.search(shown)


def test_quiz_errors_are_chinese_exit_2(cli):
    for args in (("quiz", "--topic", "nonsense"), ("quiz", "-n", "0"), ("quiz", "--review", "--leeches")):
        result = cli("--lang", "zh", *args, env=EN_LOCALE)
        assert result.code == 2, result.stderr
        assert CJK.search(one_line(result.stderr)), result.stderr
    english = cli("quiz", "--topic", "nonsense", env=EN_LOCALE)
    assert english.code == 2 and "no quiz topic named 'nonsense'. Try one of:" in english.stderr
    assert not CJK.search(english.stderr)


def test_grade_on_a_missing_folder_is_chinese(cli, tmp_path):
    missing = tmp_path / "nowhere"
    result = cli("--lang", "zh", "grade", str(missing), "--exercise", "ex2", env=EN_LOCALE)
    assert result.code == 2 and "不存在" in result.stderr, result.stderr
    english = cli("grade", str(missing), "--exercise", "ex2", env=EN_LOCALE)
    assert english.code == 2 and "is not a folder of submissions (it does not exist)." in english.stderr


def test_bench_errors_and_lines_are_chinese(cli):
    from attn_drill.bench import zh_text

    result = cli("--lang", "zh", "bench", "ex1", "--lengths", "abc", env=EN_LOCALE)
    assert result.code == 2 and CJK.search(result.stderr), result.stderr
    assert zh_text("stopped at L=128: out of memory.") == "在 L=128 处停止：内存不足。"
    assert zh_text("something new") == "something new"


def test_ungradeable_submissions_give_chinese_reasons(tmp_path):
    from attn_drill.batch import find_submissions

    (tmp_path / "ann").mkdir()
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "a.py").write_text("")
    (tmp_path / "bob" / "b.py").write_text("")
    exercise = find_exercise("ex2")
    zh = {s.student: s.problem for s in find_submissions(tmp_path, exercise, "zh")[0]}
    en = {s.student: s.problem for s in find_submissions(tmp_path, exercise)[0]}
    assert "没有 Python 文件" in zh["ann"] and "无法确定" in zh["bob"]
    assert en["ann"].startswith("no Python file in ann/") and "cannot tell which to grade" in en["bob"]


def test_a_damaged_store_is_warned_about_in_chinese(cli, tmp_path, monkeypatch):
    import os

    from attn_drill.store import DB_NAME, home

    path = home() / DB_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database" * 100)
    result = cli("--lang", "zh", "list", env=EN_LOCALE)
    assert "警告：进度存储" in result.stderr, result.stderr
    assert os.path.exists(path)


def test_init_speaks_chinese_punctuation(cli, tmp_path):
    made = cli("--lang", "zh", "init", tmp_path / "ws")
    assert made.code == 0 and made.stdout.splitlines()[0].endswith("道练习。"), made.stdout


def test_stats_in_chinese(cli):
    shown = cli("--lang", "zh", "stats", env=EN_LOCALE)
    assert shown.code == 0 and "各主题的测验掌握程度" in shown.stdout and "合计" in shown.stdout
    assert "自注意力" in shown.stdout and "已通过练习：0/13。" in shown.stdout and "复习记录，最近" in shown.stdout
    assert not re.search(r"Quiz mastery|Reviews, last|Exercises passed|\btotal\b", shown.stdout), shown.stdout


def test_the_instructor_commands_in_chinese(cli, tmp_path):
    pack = tmp_path / "pack"
    made = cli("--lang", "zh", "new", "ex14_weights", "--pack", pack)
    assert made.code == 0 and "ex14：已写出骨架：" in made.stdout and "下一步：补全 TODO" in made.stdout
    proved = cli("--lang", "zh", "validate", "--exercise", "ex14", "--pack", pack)
    assert proved.code == 0, proved.stdout + proved.stderr
    assert "参考答案通过" in proved.stdout and "内容有效。" in proved.stdout and "题目：" in proved.stdout
    assert not re.search(r"Content is valid|Questions:|reference passes", proved.stdout)
