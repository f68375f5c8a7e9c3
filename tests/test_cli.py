"""The learner's commands, driven as a user types them, through the CLI's entry point (conftest's
``cli``: the real parsing, commands, error boundary and exit codes, on warm engines)."""

import json

from attn_drill.catalog import find_exercise, load_catalog


def test_init_list_show_check_flow(cli, tmp_path):
    workspace = tmp_path / "drills"
    made = cli("init", workspace)
    assert made.code == 0 and "Workspace ready" in made.stdout
    starter = workspace / "exercises" / "ex01_self_attention.py"
    assert starter.read_text() == find_exercise("ex1").starter_path.read_text()

    listed = cli("list", cwd=workspace)
    assert listed.code == 0
    for exercise in load_catalog():
        assert exercise.id in listed.stdout
    assert "pending" in listed.stdout

    shown = cli("show", "ex01", cwd=workspace)
    assert shown.code == 0 and "scaled_dot_product_attention" in shown.stdout and str(starter) in shown.stdout

    failed = cli("check", "ex1", cwd=workspace / "exercises")
    assert failed.code == 1 and "not written yet" in failed.stdout

    starter.write_text(find_exercise("ex1").solution_path.read_text())
    passed = cli("check", cwd=workspace)  # no id: the next exercise not passed, ex1
    assert passed.code == 0 and "All" in passed.stdout

    status = cli(cwd=workspace)
    assert status.code == 0 and "1/" in status.stdout and "next: ex2" in status.stdout
    listed = cli("list", cwd=workspace)
    assert "passed" in listed.stdout


def test_init_never_overwrites_learner_files(cli, tmp_path):
    workspace = tmp_path / "drills"
    cli("init", workspace)
    mine = workspace / "exercises" / "ex01_self_attention.py"
    mine.write_text("# my work\n")
    again = cli("init", workspace)
    assert again.code == 0 and "kept" in again.stdout
    assert mine.read_text() == "# my work\n"


def test_hints_are_progressive(cli):
    total = len(find_exercise("ex1").hints)
    seen = [cli("hint", "ex1").stdout for _ in range(total + 1)]
    assert "hint 1 of" in seen[0] and f"hint 2 of {total}" in seen[1]
    assert f"hint {total} of {total}" in seen[-1]  # stays on the last one


def test_solution_only_after_a_pass_or_with_force(cli):
    hidden = cli("solution", "ex2")
    assert hidden.code == 2 and "--force" in hidden.stderr and "Traceback" not in hidden.stderr
    forced = cli("solution", "ex2", "--force")
    assert forced.code == 0 and "class MultiHeadAttention" in forced.stdout
    cli("check", "ex1", "--file", find_exercise("ex1").solution_path)
    assert cli("solution", "ex1").code == 0


def test_reset_keeps_a_backup(cli, tmp_path, drill_home):
    workspace = tmp_path / "drills"
    cli("init", workspace)
    mine = workspace / "exercises" / "ex02_multi_head_attention.py"
    mine.write_text("# half done\n")
    result = cli("reset", "ex2", cwd=workspace)
    assert result.code == 0
    assert mine.read_text() == find_exercise("ex2").starter_path.read_text()
    backups = list((drill_home / "backups").glob("ex02_multi_head_attention-*.py"))
    assert len(backups) == 1 and backups[0].read_text() == "# half done\n"


def test_usage_errors_are_one_line_exit_2(cli):
    for args, words in [
        (("check", "ex99"), "no exercise named 'ex99'"),
        (("show", "nonsense"), "no exercise named 'nonsense'"),
        (("check", "ex1"), "no attn-drill workspace"),
        (("check", "ex1", "--file", "missing.py"), "no file at missing.py"),
        (("reset", "ex1"), "no attn-drill workspace"),
    ]:
        result = cli(*args)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert words in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_option_value_exits_2(cli):
    result = cli("check", "ex1", "--device", "tpu")
    assert result.code == 2 and "Traceback" not in result.stderr


def test_verbose_shows_the_traceback(cli):
    result = cli("check", "ex99", "--verbose")
    assert result.code == 2 and "Traceback" in result.stderr


def test_check_all_in_a_workspace(cli, tmp_path):
    workspace = tmp_path / "drills"
    cli("init", workspace)
    result = cli("check", "--all", "--json", cwd=workspace)
    assert result.code == 1
    payload = json.loads(result.stdout)
    assert payload["passed"] is False
    assert [r["exercise"] for r in payload["exercises"]] == [ex.id for ex in load_catalog()]


def test_validate_exercises(cli):
    """Two exercises: every reference and starter is graded in test_grading, this is the command."""
    result = cli("validate", "--json", "--exercise", "ex3", "-e", "ex13")
    report = json.loads(result.stdout)
    assert set(report) == {"exercises", "questions", "problems", "warnings"}
    assert report["exercises"] == {key: {"reference_passes": True, "starter_fails": True} for key in ("ex3", "ex13")}
    assert report["questions"] and result.code == (1 if report["problems"] else 0)


def test_a_named_mistake_brings_its_quiz_questions_back(cli, tmp_path):
    broken = tmp_path / "ex01_self_attention.py"
    broken.write_text(find_exercise("ex1").solution_path.read_text().replace("* scale  # (..., L, S)", "  # (..., L, S)"))
    result = cli("check", "ex1", "--file", broken)
    assert result.code == 1
    assert "Your output equals attention without the 1/sqrt(d) scale" in result.stdout
    assert "quiz questions on the idea behind your mistake are due now" in result.stdout
    due = json.loads(cli("stats", "--json").stdout)["quiz"]["topics"]
    assert sum(topic["due"] for topic in due.values()) > 0
