"""`attn-drill quiz`, `stats` and the status line, driven as a user types them (the CLI's entry
point with scripted stdin; child processes for Ctrl-C, kill -9 and start-up): whole quizzes, Chinese, the end of input, Ctrl-C and kill -9
mid-quiz, a damaged store, two quizzes at once, fast start; and mistakes in the exercises
bringing quiz questions back."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from rich.console import Console

from attn_drill.catalog import find_exercise, load_catalog
from attn_drill.quiz.bank import load_bank
from attn_drill.quiz.engine import select_questions
from attn_drill.store import DB_NAME, open_store

CHINESE = re.compile(r"[\u4e00-\u9fff]")


def pick(count, seed, topics=()):
    """The questions `quiz -n COUNT --seed SEED` asks with the current history."""
    store = open_store()
    try:
        return select_questions(load_bank(), store, topics=topics, count=count, seed=seed)
    finally:
        store.close()


def answer_lines(question, right=True) -> list[str]:
    kind = question.answer_kind
    if kind == "card":
        return ["", "3" if right else "1"]          # Enter, then the self-rating
    if kind == "single":
        return [question.answer if right else next(x for x in question.letters() if x != question.answer)]
    if kind == "multi":
        return [",".join(question.answer) if right else question.answer[0]]
    if kind == "bool":
        return ["true" if question.answer == right else "false"]
    return [repr(question.answer) if right else repr(question.answer * 3 + 7)]


def script(questions, right) -> str:
    rights = right if isinstance(right, list) else [right] * len(questions)
    return "".join(line + "\n" for q, ok in zip(questions, rights) for line in answer_lines(q, ok))


def totals(stats: dict) -> tuple[int, int, int]:
    topics = stats["quiz"]["topics"].values()
    return sum(t["answered"] for t in topics), sum(t["correct"] for t in topics), sum(t["due"] for t in topics)


def stats_json(cli) -> dict:
    result = cli("stats", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def answers_kept(drill_home) -> int:
    try:
        db = sqlite3.connect(drill_home / DB_NAME, timeout=10)
        try:
            return db.execute("SELECT COUNT(*) FROM quiz_answers").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:   # not created yet
        return 0


# ---------------------------------------------------------------- whole quizzes

def test_a_whole_quiz_then_stats_json(cli):
    questions = pick(8, seed=11)
    right = [True, True, False, True, True, False, True, True]
    result = cli("quiz", "-n", 8, "--seed", 11, "--lang", "en", input=script(questions, right))
    assert result.code == 1, result.stderr          # the contract: 1 when an answer was wrong
    assert "Traceback" not in result.stderr
    out = result.stdout
    for number in range(1, 9):
        assert f"Question {number}/8" in out
    assert out.count("✓ Right.") == sum(right[i] for i, q in enumerate(questions) if q.kind != "card")
    assert "✗ Wrong." in out or all(q.kind == "card" for q, ok in zip(questions, right) if not ok)
    assert "Score by topic" in out and "total" in out
    assert "ended early" not in out

    stats = stats_json(cli)
    assert set(stats) == {"exercises", "quiz"}
    assert set(stats["exercises"]) == {ex.id for ex in load_catalog()}
    assert all(v == {"status": "pending"} for v in stats["exercises"].values())
    bank = load_bank()
    assert set(stats["quiz"]["topics"]) == set(bank.topics)
    for topic, row in stats["quiz"]["topics"].items():
        assert set(row) == {"questions", "answered", "correct", "due", "retention"}   # the contract's four, + retention
        assert row["retention"] is None                 # first answers are not due reviews
        assert row["questions"] == sum(q.topic == topic for q in bank.questions)
    answered, correct, due = totals(stats)
    assert (answered, correct, due) == (8, 6, 2)    # the two wrong ones are due again today
    assert set(stats["quiz"]) == {"topics", "retention", "calendar", "leeches"}
    assert sum(stats["quiz"]["calendar"].values()) == 8 and stats["quiz"]["leeches"] == []

    status = cli()
    assert status.code == 0 and "Quiz cards due today: 2" in status.stdout


def test_all_right_exits_0_and_stats_table(cli):
    questions = pick(4, seed=3, topics=("masking",))
    result = cli("quiz", "--topic", "masking", "-n", 4, "--seed", 3, input=script(questions, True))
    assert result.code == 0, result.stdout + result.stderr
    assert "100%" in result.stdout
    table = cli("stats")
    assert table.code == 0 and "Quiz mastery by topic" in table.stdout and "masking" in table.stdout
    assert "ex1" in table.stdout and "Exercises passed: 0/" in table.stdout


def test_invalid_input_is_asked_again(cli):
    questions = pick(1, seed=5, topics=("scaled-dot-product",))
    lines = "nonsense\n\n" + script(questions, True)
    result = cli("quiz", "-t", "scaled-dot-product", "-n", 1, "--seed", 5, input=lines)
    assert result.code == 0, result.stdout
    assert re.search(r"Type |Rate yourself:", result.stdout)
    assert totals(stats_json(cli))[:2] == (1, 1)


def test_topics_repeated_or_comma_separated_and_unknown_topics(cli):
    questions = pick(6, seed=2, topics=("masking", "inference"))
    result = cli("quiz", "--topic", "masking,inference", "-n", 6, "--seed", 2, input=script(questions, True))
    assert result.code == 0
    assert {q.topic for q in questions} <= {"masking", "inference"}
    again = cli("quiz", "--topic", "masking", "--topic", "bogus")
    assert again.code == 2 and "no quiz topic named 'bogus'" in again.stderr
    assert "masking" in again.stderr and "architecture" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_review_asks_what_was_missed_until_it_is_right(cli):
    questions = pick(3, seed=8, topics=("multi-head",))
    first = cli("quiz", "-t", "multi-head", "-n", 3, "--seed", 8, input=script(questions, False))
    assert first.code == 1
    review = cli("quiz", "--review", input=script(questions, True))
    assert "Review: 3 questions due" in review.stdout and review.code == 0, review.stdout
    done = cli("quiz", "--review")
    assert done.code == 0 and "Nothing is due for review." in done.stdout and "next question is due in" in done.stdout
    assert totals(stats_json(cli)) == (3, 3, 0)


def test_lang_zh_shows_chinese(cli):
    questions = pick(2, seed=4, topics=("masking",))
    result = cli("quiz", "-t", "masking", "-n", 2, "--seed", 4, "--lang", "zh", input=script(questions, True))
    assert result.code == 0
    assert "第 1/2 题" in result.stdout and "各主题得分" in result.stdout
    assert questions[0].prompt.zh[:10] in result.stdout.replace("\n", "")
    assert len(CHINESE.findall(result.stdout)) > 30


def test_the_default_language_follows_the_locale(cli):
    questions = pick(1, seed=9, topics=("masking",))
    env = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "zh_CN.UTF-8", "PYTHONIOENCODING": "utf-8"}
    chinese = cli("quiz", "-t", "masking", "-n", 1, "--seed", 9, input=script(questions, True), env=env)
    assert "第 1/1 题" in chinese.stdout, chinese.stdout + chinese.stderr
    english = cli("quiz", "-t", "masking", "-n", 1, "--seed", 9, input=script(questions, True),
                  env={**env, "LANG": "en_US.UTF-8"})
    assert "Question 1/1" in english.stdout


# ---------------------------------------------------------------- ending early, and surviving

def test_end_of_input_mid_quiz_keeps_what_was_answered(cli):
    questions = pick(5, seed=21)
    result = cli("quiz", "-n", 5, "--seed", 21, input=script(questions[:2], True))
    assert result.code == 0, result.stdout + result.stderr    # every answer given was right
    assert "Quiz ended early. Answers saved: 2." in result.stdout and "Traceback" not in result.stderr
    assert totals(stats_json(cli))[:2] == (2, 2)


def test_closed_input_ends_at_once(cli):
    result = cli("quiz", "-n", 3, input="")
    assert result.code == 0 and "Answers saved: 0" in result.stdout


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_quiz_keeps_the_answers_committed_before(cli, drill_home, tmp_path, how):
    questions = pick(6, seed=31)
    env = {**os.environ, "ATTN_DRILL_HOME": str(drill_home), "COLUMNS": "120"}
    child = subprocess.Popen([sys.executable, "-m", "attn_drill", "quiz", "-n", "6", "--seed", "31"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=tmp_path)
    try:
        child.stdin.write(script(questions[:3], True))
        child.stdin.flush()
        deadline = time.monotonic() + 60
        while answers_kept(drill_home) < 3:
            assert time.monotonic() < deadline, "the three answers were never committed"
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.05)
        time.sleep(0.3)                       # now waiting on the fourth question
        child.send_signal(how)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    if how == signal.SIGINT:
        assert child.returncode == 0, err     # ends cleanly, like the end of input
        assert "Answers saved: 3" in out and "Traceback" not in err
    else:
        assert child.returncode == -signal.SIGKILL
    db = sqlite3.connect(drill_home / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert totals(stats_json(cli))[:2] == (3, 3)


def test_a_damaged_store_is_reported_set_aside_and_the_quiz_goes_on(cli, drill_home):
    questions = pick(2, seed=41)   # what a fresh store asks
    for path in drill_home.glob(f"{DB_NAME}*"):
        path.unlink()
    garbage = b"\x00\xffnot sqlite at all\x13" * 300
    (drill_home / DB_NAME).write_bytes(garbage)
    result = cli("quiz", "-n", 2, "--seed", 41, input=script(questions, True))
    assert result.code == 0, result.stdout + result.stderr
    assert "damaged" in result.stderr and "kept as" in result.stderr and "Traceback" not in result.stderr
    kept = list(drill_home.glob(f"{DB_NAME}.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == garbage
    assert totals(stats_json(cli))[:2] == (2, 2)


def test_stats_and_status_on_a_damaged_store(cli, drill_home):
    drill_home.mkdir(parents=True)
    (drill_home / DB_NAME).write_bytes(b"garbage" * 500)
    result = cli("stats", "--json")
    assert result.code == 0 and "damaged" in result.stderr
    assert totals(json.loads(result.stdout)) == (0, 0, 0)
    assert len(list(drill_home.glob(f"{DB_NAME}.damaged-*"))) == 1


def test_two_quizzes_at_once_lose_nothing(drill_home, tmp_path):
    plans = [(("masking", "inference", "architecture"), 1), (("multi-head", "self-attention", "cross-attention"), 2)]
    env = {**os.environ, "ATTN_DRILL_HOME": str(drill_home), "COLUMNS": "120"}
    children, expected = [], 0
    for topics, seed in plans:
        questions = pick(20, seed=seed, topics=topics)
        expected += len(questions)
        child = subprocess.Popen([sys.executable, "-m", "attn_drill", "quiz", "-t", ",".join(topics), "-n", "20",
                                  "--seed", str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        children.append((child, script(questions, True)))
    outputs = [child.communicate(lines, timeout=180) for child, lines in children]
    for (child, _), (out, err) in zip(children, outputs):
        assert child.returncode == 0, out[-2000:] + err
        assert "ended early" not in out
    store = open_store()
    assert len(store.answers()) == expected == 40
    assert len(store.cards()) == 40


# ---------------------------------------------------------------- fast start

@pytest.mark.parametrize("args", [["quiz", "-n", "1"], ["quiz", "--review"], ["quiz", "--leeches"], ["stats"],
                                  ["stats", "--json"], []])
def test_quiz_stats_and_status_never_import_torch(drill_home, tmp_path, args):
    env = {**os.environ, "ATTN_DRILL_HOME": str(drill_home)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "attn_drill", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "attn_drill.cli" in imported
    assert [name for name in imported if name == "torch" or name.startswith("torch.")] == []


# ---------------------------------------------------------------- rendering

def test_code_questions_are_highlighted_with_line_numbers_and_lettered_choices():
    from attn_drill.render import TerminalQuiz

    question = next(q for q in load_bank().questions if q.kind == "code")
    console = Console(record=True, width=120, color_system="truecolor", force_terminal=True)
    TerminalQuiz(console, "en").question(question, 1, 1)
    text = console.export_text(clear=False)
    lines = question.code.rstrip("\n").splitlines()
    assert re.search(rf"1 .*{re.escape(lines[0].strip()[:20])}", text)
    assert re.search(rf"{len(lines)} ", text)
    for letter in question.letters():
        assert f"{letter}) " in text
    assert "\x1b[" in console.export_text(styles=True)   # coloured


# ---------------------------------------------------------------- mistakes feed the quiz

def test_a_graded_mistake_makes_its_concept_due(tmp_path, warm_engines):
    from attn_drill import practice

    reference = find_exercise("ex1").solution_path.read_text(encoding="utf-8")
    broken = reference.replace("scores = q @ k.transpose(-2, -1) * scale", "scores = q @ k.transpose(-2, -1)")
    assert broken != reference
    path = tmp_path / "ex01_self_attention.py"
    path.write_text(broken, encoding="utf-8")
    store = open_store()
    bank = load_bank()
    assert select_questions(bank, store, review=True) == []
    report = practice.check(store, "ex1", file=path, device="cpu")
    assert not report.passed
    assert set(report.mistakes) & {"no-scale", "scale-ignored"}, report.mistakes
    due = select_questions(bank, store, review=True, count=100)
    assert any("scale" in q.tags for q in due)
    assert all(set(q.tags) & set(bank.concepts_for(report.mistakes)) for q in due)


# ---------------------------------------------------------------- in-process, with CliRunner, on a small bank

import click
from click.testing import CliRunner

from attn_drill import cli as cli_module
from attn_drill.cli import main
from attn_drill.quiz import engine as quiz_engine, scheduling, stats as quiz_stats
from attn_drill.quiz.bank import Bank, Question, Text


def _q(kind, qid, topic="masking", **fields) -> Question:
    base = dict(id=qid, topic=topic, kind=kind, difficulty=1, tags=("scale",), prompt=Text(f"Prompt of {qid}?", f"{qid} 的题目？"),
                explanation=Text(f"Because {qid}.", f"因为 {qid}。"))
    return Question(**{**base, **fields})


FOUR = tuple(Text(f"choice {c}", f"选项 {c}") for c in "abcd")
SMALL_BANK = Bank((
    _q("numeric", "n-flops", answer=34359738368, tolerance=0.0, params={}, formula="2**35",
       prompt=Text("How many FLOPs does QK^T take?", "QK^T 需要多少 FLOPs？"), unit=Text("FLOPs", "FLOPs")),
    _q("numeric", "n-exact", answer=1050624, tolerance=0.0, params={}, formula="1050624",
       prompt=Text("The exact parameter count?", "精确的参数量是多少？"), unit=Text("parameters", "个参数")),
    _q("multi", "m-three", choices=FOUR, answer=("a", "b", "d")),
    _q("single", "s-one", choices=FOUR, answer="c", prompt=Text("A long prompt " * 12, "很长的题目" * 20)),
    _q("bool", "b-true", topic="inference", answer=True),
) + tuple(_q("bool", f"b-{i:02d}", topic="inference", answer=False) for i in range(12)))


@pytest.fixture
def drill(monkeypatch):
    """Run `attn-drill ARGS` in this process with CliRunner, on SMALL_BANK."""
    monkeypatch.setattr(quiz_engine, "load_bank", lambda *a, **k: SMALL_BANK)
    monkeypatch.setattr(quiz_stats, "load_bank", lambda *a, **k: SMALL_BANK)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(cli_module.out, "width", 200)  # the console may predate COLUMNS in this process

    @click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                     "help_option_names": []})
    @click.pass_context
    def entry(ctx):
        main(list(ctx.args))

    def run(*args, input=None):
        return CliRunner().invoke(entry, list(args), input=input)

    return run


def by_ids(*ids):
    known = SMALL_BANK.by_id()
    return [known[qid] for qid in ids]


def ask(drill, ids, lines, *extra):
    """A quiz on exactly these questions (in this order) with these input lines."""
    questions = by_ids(*ids)
    original = quiz_engine.select_questions
    quiz_engine.select_questions = lambda *a, **k: list(questions)
    try:
        return drill("quiz", *extra, input="".join(line + "\n" for line in lines))
    finally:
        quiz_engine.select_questions = original


def test_minus_n_0_is_a_usage_error_on_one_line(drill):
    result = drill("quiz", "-n", "0")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "-n must be 1 or more" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("word", ["q", "quit", "exit"])
def test_q_quit_or_exit_ends_the_quiz_keeping_answers(drill, word):
    result = ask(drill, ["b-true", "b-00", "b-01"], ["t", word, "f"])
    assert result.exit_code == 0, result.output
    assert "Quiz ended early. Answers saved: 1." in result.stdout
    store = open_store()
    assert [a["question"] for a in store.answers()] == ["b-true"]


def test_a_wrong_number_is_echoed_in_english_and_chinese(drill):
    result = ask(drill, ["n-flops", "n-exact"], ["33G", "1.05M params"])
    assert result.exit_code == 1
    assert "You typed 33G = 3.3e10; the answer is 3.436e10 FLOPs within 1%." in result.stdout
    assert "You typed 1.05M = 1.05e6; the answer is exactly 1,050,624 parameters." in result.stdout
    result = ask(drill, ["n-flops"], ["33G"], "--lang", "zh")
    assert "你输入的 33G 读作 3.3e10；答案是 3.436e10 FLOPs，误差 1% 以内算对。" in result.stdout
    right = ask(drill, ["n-flops"], ["34.4G FLOPs"])           # 1% above 10,000: 34.4G is right
    assert right.exit_code == 0 and "Right" in right.stdout and "You typed" not in right.stdout


def test_a_partly_wrong_multi_answer_names_the_missing_and_extra_letters(drill):
    result = ask(drill, ["m-three"], ["a,c"])
    assert "Missing: b, d · extra (wrong): c." in result.stdout
    assert "漏选：b, d；多选（错误）：c。" in ask(drill, ["m-three"], ["a c"], "--lang", "zh").stdout


def test_the_end_lists_the_questions_missed_and_ends_with_the_review_command(drill):
    result = ask(drill, ["s-one", "b-true", "m-three"], ["a", "t", "a,b"])
    assert result.exit_code == 1
    out = result.stdout
    assert "Missed (2):" in out
    missed = out.split("Missed (2):", 1)[1].strip().splitlines()
    assert missed[0].split()[0] == "s-one" and missed[1].split()[0] == "m-three"
    assert missed[0].endswith("…") and len(missed[0]) < 90          # one line each
    assert "b-true" not in out.split("Missed (2):", 1)[1]
    assert out.rstrip().splitlines()[-1] == ("Still due today, after this quiz: 2. "
                                             "Review them: `attn-drill quiz --review`")
    zh = ask(drill, ["s-one"], ["a"], "--lang", "zh").stdout
    assert "答错的题（1 道）：" in zh and zh.rstrip().endswith("复习它们：`attn-drill quiz --review`")


def test_nothing_missed_says_nothing_more_is_due(drill):
    out = ask(drill, ["b-true"], ["t"]).stdout
    assert "Missed" not in out and "Nothing more is due today." in out
    assert "The next question due after today: in " in out


def test_review_asks_every_due_question_whatever_the_default_count(drill):
    falses = [f"b-{i:02d}" for i in range(12)]
    assert ask(drill, falses, ["t"] * 12).exit_code == 1       # 12 wrong: 12 due today
    result = drill("quiz", "--review", input="q\n")
    assert "Review: 12 questions due, most overdue first." in result.stdout   # not the default 10
    assert "Question 1/12" in result.stdout
    capped = drill("quiz", "--review", "-n", "3", input="q\n")   # -n given: at most that many
    assert "Review: 3 questions due" in capped.stdout


def test_stats_shows_the_calendar_retention_and_leeches_and_quiz_leeches_drills_them(drill):
    for _ in range(4):                                          # s-one missed 4 times: a leech
        ask(drill, ["s-one"], ["a"])
    store = open_store()
    store.make_due([("s-one", "masking")], lambda qid, card: scheduling.bring_due(card, qid))
    store.close()
    ask(drill, ["s-one"], ["c"])                                # a due review, right
    shown = drill("stats")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "Reviews, last 12 weeks" in out and ": 5 reviews on 1 day" in out
    assert "retention" in out and "Leeches: 1 question missed 4 times or more" in out
    assert "s-one" in out and "`attn-drill quiz --leeches`" in out
    data = json.loads(drill("stats", "--json").stdout)
    quiz = data["quiz"]
    assert set(quiz["topics"]["masking"]) == {"questions", "answered", "correct", "due", "retention"}
    assert quiz["leeches"] == ["s-one"] and len(quiz["calendar"]) == 84 and sum(quiz["calendar"].values()) == 5
    assert 0 < quiz["topics"]["masking"]["retention"] <= 1 and quiz["topics"]["inference"]["retention"] is None
    assert "exercises" in data
    drilled = drill("quiz", "--leeches", input="c\n")
    assert "Leeches: 1 question you have missed 4 times or more" in drilled.stdout and drilled.exit_code == 0
    assert "No leeches" in drill("quiz", "--leeches", "-t", "inference").stdout
    both = drill("quiz", "--leeches", "--review")
    assert both.exit_code == 2 and "pick one" in both.stderr
