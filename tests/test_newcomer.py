"""The newcomer's first hour (issue 9), driven through the real CLI at 80 columns: every
command a message suggests runs as printed, and no input gives a traceback."""

import json
import os
import re
import shlex
import stat

import pytest

from attn_drill.catalog import find_exercise

NARROW = {"COLUMNS": "80"}


@pytest.fixture
def workspace(cli, tmp_path):
    folder = tmp_path / "my drills"
    assert cli("init", folder).code == 0
    return folder


def suggested_commands(text: str) -> list[str]:
    return re.findall(r"`(attn-drill [^`]*)`", text)


def test_solution_at_80_columns_loses_no_character(cli):
    shown = cli("solution", "ex2", "--force", env=NARROW).stdout
    code = find_exercise("ex2").solution_path.read_text()
    def squeeze(text):  # no spaces, borders or digits (the line numbers): what wrapping cannot change
        return re.sub(r"[\s│╭╮╰╯─┃\d]", "", text)

    visible = squeeze(shown)
    for line in code.splitlines():
        assert squeeze(line) in visible, line


def test_every_command_a_hint_suggests_runs_as_printed(cli, workspace):
    for _ in find_exercise("ex1").hints:
        last = cli("hint", "ex1", cwd=workspace, env=NARROW).stdout
    commands = suggested_commands(last.replace("\n", " "))
    assert "attn-drill solution ex1 --force" in commands
    for command in commands:
        assert cli(*shlex.split(command)[1:], cwd=workspace).code == 0, command


def test_hint_shows_every_hint_revealed_so_far_newest_last(cli, workspace):
    hints = find_exercise("ex1").hints
    cli("hint", "ex1", cwd=workspace)
    second = cli("hint", "ex1", cwd=workspace).stdout
    assert "hint 1 of" in second and "hint 2 of" in second
    assert second.index("hint 1 of") < second.index("hint 2 of")
    assert hints[0].split()[0] in second


def test_reset_outside_a_workspace_says_what_to_do(cli):
    result = cli("reset", "ex1")
    assert result.code == 2 and "--file" not in result.stderr and "attn-drill init DIR" in result.stderr


def test_check_file_infers_the_exercise_from_its_name(cli, tmp_path):
    named = tmp_path / "ex02_multi_head_attention.py"
    named.write_text(find_exercise("ex2").solution_path.read_text())
    result = cli("check", "--file", named, "--json")
    assert result.code == 0 and json.loads(result.stdout)["exercise"] == "ex2"
    other = tmp_path / "mine.py"
    other.write_text("x = 1\n")
    unnamed = cli("check", "--file", other)
    assert unnamed.code == 2 and "cannot tell which exercise mine.py is for" in unnamed.stderr


@pytest.mark.parametrize(("target", "words"), [("/bin/ls", "not a Python file"), ("folder", "is a directory")])
def test_files_that_are_not_python_are_one_clear_line(cli, tmp_path, target, words):
    (tmp_path / "folder").mkdir()
    path = target if target.startswith("/") else tmp_path / target
    result = cli("check", "ex1", "--file", path)
    assert result.code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "unexpectedly" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(cli, value):
    result = cli("check", "ex2", "--file", find_exercise("ex2").solution_path, "--timeout", value)
    assert result.code == 2 and "--timeout" in result.stderr and "unexpectedly" not in result.stderr


def test_init_follows_the_umask_and_quotes_the_path(cli, workspace, tmp_path):
    mode = stat.S_IMODE(os.stat(workspace / "exercises" / "ex01_self_attention.py").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    again = cli("init", workspace).stdout
    assert f"cd {shlex.quote(str(workspace))}" in again


def test_progress_belongs_to_the_workspace(cli, workspace, tmp_path):
    mine = workspace / "exercises" / "ex01_self_attention.py"
    mine.write_text(find_exercise("ex1").solution_path.read_text())
    passed = cli("check", "ex1", cwd=workspace, env=NARROW)
    assert passed.code == 0
    assert "Next: ex2 Multi-head attention: `attn-drill check ex2`." in " ".join(passed.stdout.split())
    assert "edit exercises/ex02" in cli("init", workspace).stdout          # a second init knows ex1 is done
    fresh = tmp_path / "fresh"
    cli("init", fresh)
    assert json.loads(cli("stats", "--json", cwd=fresh).stdout)["exercises"]["ex1"]["status"] == "pending"
    assert json.loads(cli("stats", "--json", cwd=workspace).stdout)["exercises"]["ex1"]["status"] == "passed"
    assert cli("reset", "ex1", cwd=workspace).code == 0
    assert json.loads(cli("stats", "--json", cwd=workspace).stdout)["exercises"]["ex1"]["status"] == "pending"
    assert cli("solution", "ex1", cwd=workspace).code == 0   # once passed, the solution stays unlocked


def test_show_renders_the_statement_in_one_language(cli):
    english = cli("show", "ex2", env=NARROW).stdout
    assert "``" not in english and "**" not in english and "中文" not in english
    assert english.count("Multi-head attention") == 1          # the title, once
    chinese = cli("--lang", "zh", "show", "ex2", env=NARROW).stdout
    assert "多头注意力" in chinese and "Write class MultiHeadAttention" not in chinese


def test_failure_messages_keep_their_indent_when_wrapped(cli, tmp_path):
    broken = tmp_path / "ex01_self_attention.py"
    broken.write_text(find_exercise("ex1").solution_path.read_text().replace("* scale  # (..., L, S)", "  # (..., L, S)"))
    out = cli("check", "ex1", "--file", broken, env=NARROW).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "is wrong for" in line)
    message = lines[start:start + 3]
    assert all(line.startswith("     ") for line in message), message
    titles = [line for line in lines if line.startswith((" ✓", " ✗"))]
    assert titles and all(not line or line.startswith((" ✓", " ✗", "   ", "ex1", "Fix", "Next", "1", "All"))
                          for line in lines[:lines.index(titles[-1]) + 1]), out  # wrapped titles stay indented


def test_a_traceback_in_a_message_keeps_its_deeper_indent_when_wrapped(cli):
    out = cli("check", "ex1", "--file", find_exercise("ex1").starter_path, env={"COLUMNS": "60"}).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ex01_self_attention.py, line"))
    assert lines[start].startswith("       ") and lines[start + 1].startswith("       "), lines[start:start + 3]


def test_help_keeps_examples_on_their_own_lines(cli):
    shown = cli("check", "--help", env=NARROW).stdout
    assert "\n  Example:\n" in shown and "    attn-drill check ex1\n" in shown
    assert cli("help", "check", env=NARROW).stdout == shown
    assert cli("-h").code == 0 and "Commands:" in cli("-h").stdout
    assert re.fullmatch(r"attn-drill \d+\.\d+\.\d+\n", cli("--version").stdout)
    quiz = cli("quiz", "--help").stdout.replace("\n", " ")
    assert "masking" in quiz and "information-leakage" in quiz


def test_check_all_is_one_line_per_exercise(cli, workspace):
    result = cli("check", "--all", cwd=workspace, env=NARROW)
    assert result.code == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) <= 15 and "0 of 13 exercises passed." in result.stdout


def test_a_deleted_exercise_file_suggests_reset(cli, workspace):
    (workspace / "exercises" / "ex03_sinusoidal_encoding.py").unlink()
    result = cli("check", "ex3", cwd=workspace)
    assert result.code == 2 and "`attn-drill reset ex3`" in result.stderr
    assert cli("reset", "ex3", cwd=workspace).code == 0


def test_json_and_gradescope_together_is_a_usage_error(cli):
    result = cli("check", "ex1", "--file", find_exercise("ex1").solution_path, "--json", "--format", "gradescope")
    assert result.code == 2 and "choose one" in result.stderr
    assert "docs/json.md" in cli("check", "--help").stdout


def test_the_cli_in_chinese(cli, workspace):
    listed = cli("--lang", "zh", "list", cwd=workspace).stdout
    assert "编号" in listed and "未开始" in listed and "多头注意力" in listed and "位置编码" in listed
    checked = cli("--lang", "zh", "check", "ex1", cwd=workspace).stdout
    assert "项检查中通过" in checked
    by_locale = cli("list", cwd=workspace, env={"LANG": "zh_CN.UTF-8"}).stdout
    assert "编号" in by_locale


def test_completion_offers_exercise_ids():
    from attn_drill.cli import _exercise_ids

    assert _exercise_ids("ex1") == ["ex1", "ex10", "ex11", "ex12", "ex13"]
