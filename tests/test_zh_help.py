"""`--help` in Chinese (issue 9, item 19): every command's and option's help, click's own words,
wrapped by display width at 80 columns; and line breaks in mixed Chinese and English text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer
from rich.cells import cell_len
from rich.console import Console

from attn_drill import cli as attn_cli
from attn_drill import helptext, linebreak

ZH = {"LANG": "zh_CN.UTF-8", "COLUMNS": "80"}
EN = {"LANG": "en_US.UTF-8", "COLUMNS": "80"}
COMMANDS = sorted(typer.main.get_command(attn_cli.app).commands)


def english_app() -> click.Group:
    helptext.speak_click("en")
    return typer.main.get_command(attn_cli.app)


def test_every_command_and_parameter_has_its_chinese_help_and_no_entry_is_stale():
    root, entries = english_app(), helptext.zh_texts()["commands"]
    expected = {helptext.TOP: root, **root.commands}
    assert set(entries) == set(expected), "help_zh.toml's commands differ from the CLI's"
    for name, command in expected.items():
        assert entries[name].get("help"), name
        documented = {p.name for p in command.params if getattr(p, "help", None) and not p.hidden}
        assert set(entries[name].get("params", {})) == documented, name


def test_every_click_word_translated_is_one_click_or_typer_says():
    sources = "".join(Path(module.__file__).read_text() for module in
                      (click.core, click.decorators, click.exceptions, click.formatting, click.parser, click.types,
                       typer.core))
    for english, chinese in helptext.zh_texts()["click"].items():
        assert repr(english) in sources or json.dumps(english) in sources, f"stale: {english!r}"
        assert set(re.findall(r"{\w+(?:!r)?}", english)) == set(re.findall(r"{\w+(?:!r)?}", chinese)), english


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_chinese_and_fits_80_columns(cli, command):
    args = ["--help"] if command is None else [command, "--help"]
    zh, en = cli("--lang", "zh", *args, env=EN), cli(*args, env=EN)
    assert zh.code == 0 and en.code == 0, zh.stderr
    assert zh.stdout.startswith("用法:") and "选项:" in zh.stdout and "显示这条帮助后退出。" in zh.stdout
    root = english_app()
    shown = root if command is None else root.commands[command]
    for param in shown.params:
        if param.help and not param.hidden:
            assert param.help[:30] not in zh.stdout, (command, param.help)  # no English left
    summary = (shown.help or "").split("\n\n")[0]
    assert summary in en.stdout.replace("\n  ", " ") and summary not in zh.stdout
    for line in zh.stdout.splitlines():
        assert cell_len(line) <= 80, line
    if "\b\nExample:\n" in (shown.help or ""):
        assert "示例：" in zh.stdout and "Example:" not in zh.stdout


def test_the_locale_alone_gives_chinese_help_and_help_command_matches(cli):
    by_locale = cli("check", "-h", env=ZH).stdout
    assert by_locale.startswith("用法:") and "用隐藏检查评测你的答案。" in by_locale
    assert cli("help", "check", env=ZH).stdout == by_locale
    assert cli("--lang", "en", "check", "-h", env=ZH).stdout.startswith("Usage:")


def test_quiz_help_lists_the_topics_with_their_chinese_names(cli):
    shown = cli("quiz", "--help", env=ZH).stdout
    flat = re.sub(r"\s+", "", shown)
    assert "self-attention（自注意力）" in flat and "information-leakage（信息泄漏）" in flat


def test_click_usage_errors_are_chinese_then_english_again(cli):
    wrong = cli("check", "--no-such-option", env=ZH)
    assert wrong.code == 2 and wrong.stderr.startswith("用法错误：没有选项 '--no-such-option'。")
    assert "用法: attn-drill check" in wrong.stderr
    bad = cli("check", "ex1", "--jobs", "many", env=ZH)
    assert bad.code == 2 and "'--jobs' 的值无效" in bad.stderr
    english = cli("check", "--no-such-option", env=EN)   # the same process: click's words are English again
    assert "No such option" in english.stderr and "没有" not in english.stderr


def test_english_help_is_click_unchanged(cli):
    shown = cli("check", "--help", env=EN).stdout
    assert shown.startswith("Usage: attn-drill check") and "Show this message and exit." in shown
    assert "Exercise to grade" in shown   # an argument's help is shown (click 8.5 would drop it under Typer)


# ---------------------------------------------------------------------------------------------
# Line breaks

MIXED = ("只考这个主题；可以重复，也可以用逗号分隔多个主题。主题：self-attention（自注意力）、"
         "scaled-dot-product（缩放点积注意力）、masking（掩码）、information-leakage（信息泄漏）。"
         "按 FSRS 间隔重复安排复习；输入 q、quit 或 exit，或按 Ctrl-C 结束。")


@pytest.mark.parametrize("width", [20, 33, 40, 57, 80])
def test_mixed_text_breaks_between_cjk_characters_and_never_inside_a_word(width):
    console = Console(width=width, file=None, no_color=True)
    with console.capture() as captured:
        console.print(MIXED, soft_wrap=False)
    lines = captured.get().splitlines()
    assert "".join(line.strip() for line in lines).replace(" ", "") == MIXED.replace(" ", "")
    for i, line in enumerate(lines):
        assert cell_len(line) <= width
        assert line.strip()[0] not in linebreak.NO_LINE_START, line
        assert line.rstrip()[-1] not in linebreak.NO_LINE_END, line
        if i:  # no English word cut: the break never falls between two ASCII letters
            assert not (lines[i - 1].rstrip()[-1].isascii() and lines[i - 1].rstrip()[-1].isalnum()
                        and line.lstrip()[0].isascii() and line.lstrip()[0].isalnum()), (lines[i - 1], line)
    # lines are filled: none but the last is shorter than the width by more than a word or two characters
    assert all(cell_len(line.rstrip()) >= width - 20 for line in lines[:-1]), lines


def test_ascii_text_is_split_exactly_as_rich_splits_it():
    rich_words = __import__("re").compile(r"\s*\S+\s*")
    for text in ("", "   ", "one", "  lead and trail  ", "a-b (c) d.e,  f\tg", "x" * 50):
        expected = [(m.start(), m.end(), m.group()) for m in rich_words.finditer(text)] if text.strip() else []
        assert list(linebreak.words(text)) == expected, text
