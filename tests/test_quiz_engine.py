"""The quiz engine, called directly: parsing and grading every kind and answer format, the
picking of questions, a session driven by a scripted front end, FSRS scheduling, and the
store's quiz tables (one transaction per answer, upgrade from v1, two processes at once)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from attn_drill.errors import DrillError
from attn_drill.quiz import scheduling
from attn_drill.quiz.bank import Bank, Question, Text
from attn_drill.quiz.engine import (
    InvalidAnswer, Quiz, default_lang, format_answer, format_number, grade, mastery, parse_answer,
    parse_number, resolve_topics, review_mistakes, run_quiz, select_questions, start_quiz,
)
from attn_drill.store import DB_NAME, SCHEMA_VERSION, open_store


def T(text: str) -> Text:
    return Text(text, f"中文：{text}")


def make(kind: str, qid: str = "t-01", topic: str = "masking", **fields) -> Question:
    defaults = dict(id=qid, topic=topic, kind=kind, difficulty=1, tags=("scale",), prompt=T(f"prompt {qid}"),
                    explanation=T(f"because {qid}"))
    return Question(**{**defaults, **fields})


CHOICES4 = tuple(T(x) for x in ("zero", "one", "two", "three"))
SINGLE = make("single", choices=CHOICES4, answer="b")
MULTI = make("multi", choices=CHOICES4, answer=("a", "c"))
TRUE = make("bool", answer=True)
FALSE = make("bool", answer=False)
NUMERIC = make("numeric", answer=1_000_000, tolerance=0.0, params={"n": 1000}, formula="n * n",
               unit=Text("parameters", "个参数"))
NUMERIC_TOL = make("numeric", answer=62.83185307179586, tolerance=0.01, params={}, formula="2*3.14159")
NEGATIVE = make("numeric", answer=-1.25, tolerance=0.0, params={}, formula="-1.25")
CODE_SINGLE = make("code", code="x = 1\ny = 2\n", select="single", choices=CHOICES4[:3], answer="c")
CODE_MULTI = make("code", code="x = 1\n", select="multi", choices=CHOICES4, answer=("b", "d"))
CARD = make("card", model_answer=T("the model answer"))


def verdict(question: Question, text: str) -> bool:
    return grade(question, parse_answer(question, text))


# ---------------------------------------------------------------- single and code

@pytest.mark.parametrize("text", ["b", "B", " b ", "(b)", "b.", "b)"])
def test_single_accepts_one_letter(text):
    assert verdict(SINGLE, text) is True


@pytest.mark.parametrize("text", ["a", "c", "d"])
def test_single_other_letters_are_wrong(text):
    assert verdict(SINGLE, text) is False


@pytest.mark.parametrize("text", ["", "e", "z", "ab", "1", "bee", "b,c"])
def test_single_invalid_input_is_reported_not_graded(text):
    with pytest.raises(InvalidAnswer) as caught:
        parse_answer(SINGLE, text)
    assert "a-d" in caught.value.text("en") and "a-d" in caught.value.text("zh")


def test_code_questions_are_answered_as_their_select_kind():
    assert verdict(CODE_SINGLE, "c") and not verdict(CODE_SINGLE, "a")
    with pytest.raises(InvalidAnswer):
        parse_answer(CODE_SINGLE, "d")  # only three choices
    assert verdict(CODE_MULTI, "d,b") and not verdict(CODE_MULTI, "b")


# ---------------------------------------------------------------- multi

@pytest.mark.parametrize("text", ["a,c", "ac", "a c", "c,a", "CA", "a, c", "a;c", " c  a ", "a,c,c", "a、c", "a and c"])
def test_multi_any_order_and_separator(text):
    assert verdict(MULTI, text) is True


@pytest.mark.parametrize("text", ["a", "c", "a,b,c", "abcd", "b,d"])
def test_multi_is_an_exact_set(text):
    assert verdict(MULTI, text) is False


@pytest.mark.parametrize("text", ["", "a,e", "x", "1,3", "a-c"])
def test_multi_invalid_input(text):
    with pytest.raises(InvalidAnswer):
        parse_answer(MULTI, text)


# ---------------------------------------------------------------- bool

@pytest.mark.parametrize("text", ["t", "T", "true", "True", "y", "yes", "YES", "对", "是", "正确", "true."])
def test_bool_true_words(text):
    assert parse_answer(TRUE, text) is True
    assert verdict(TRUE, text) and not verdict(FALSE, text)


@pytest.mark.parametrize("text", ["f", "false", "n", "no", "No", "错", "否", "错误"])
def test_bool_false_words(text):
    assert parse_answer(FALSE, text) is False
    assert verdict(FALSE, text) and not verdict(TRUE, text)


@pytest.mark.parametrize("text", ["", "maybe", "a", "1", "tf"])
def test_bool_invalid_input(text):
    with pytest.raises(InvalidAnswer) as caught:
        parse_answer(TRUE, text)
    assert "对" in caught.value.text("zh")


# ---------------------------------------------------------------- numeric

@pytest.mark.parametrize("text, value", [
    ("1000000", 1e6), ("1e6", 1e6), ("1E6", 1e6), ("1_000_000", 1e6), ("1,000,000", 1e6), ("1M", 1e6),
    ("1m", 1e6), ("1.5k", 1500), ("1.5K", 1500), ("2G", 2e9), ("2B", 2e9), ("2b", 2e9), ("1,000", 1000),
    ("-1.25", -1.25), ("−3", -3), ("+7", 7), (".5", 0.5), ("2.5e-3", 0.0025), ("3 k", 3000), ("1T", 1e12),
    ("2^30", 2**30), ("2**10", 1024), ("4096*4096*2", 4096 * 4096 * 2), ("(1+2)*3", 9), ("1万", 1e4),
    ("1.2亿", 1.2e8), ("12,288", 12288),
])
def test_numbers_as_people_type_them(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "1,00", "1.2.3", "12 34", "1e", "--", "1,5", "__import__('os')",
                                  "2**99999", "x*2", "1/0"])
def test_numbers_that_are_not(text):
    with pytest.raises(InvalidAnswer):
        parse_number(text)


def test_numeric_grading_exact_and_with_the_unit():
    for text in ("1000000", "1e6", "1_000_000", "1M", "1,000,000", "1000000 parameters", "1000000个参数", "1000k"):
        assert verdict(NUMERIC, text), text
    for text in ("999999", "1.1M", "1e5", "-1e6"):
        assert not verdict(NUMERIC, text), text


def test_numeric_grading_within_the_relative_tolerance():
    assert verdict(NUMERIC_TOL, "62.83") and verdict(NUMERIC_TOL, "63") and verdict(NUMERIC_TOL, "62.3")
    assert not verdict(NUMERIC_TOL, "62") and not verdict(NUMERIC_TOL, "64")


def test_negative_answers():
    assert verdict(NEGATIVE, "-1.25") and not verdict(NEGATIVE, "1.25")


# ---------------------------------------------------------------- cards

@pytest.mark.parametrize("text, rating", [("1", 1), ("again", 1), ("Again", 1), ("2", 2), ("hard", 2), ("3", 3),
                                          ("good", 3), ("4", 4), ("easy", 4), ("重来", 1), ("简单", 4)])
def test_card_self_ratings(text, rating):
    assert parse_answer(CARD, text) == rating
    assert verdict(CARD, text) is (rating != 1)   # FSRS: only Again is a lapse


@pytest.mark.parametrize("text", ["", "5", "0", "ok", "a,c"])
def test_card_invalid_rating(text):
    with pytest.raises(InvalidAnswer):
        parse_answer(CARD, text)


# ---------------------------------------------------------------- showing answers and languages

def test_the_correct_answer_formatted_for_display():
    assert format_answer(SINGLE) == "b) one" and format_answer(SINGLE, "zh") == "b) 中文：one"
    assert format_answer(MULTI) == "a) zero\nc) two"
    assert format_answer(TRUE) == "true" and "对" in format_answer(TRUE, "zh") and "错" in format_answer(FALSE, "zh")
    assert format_answer(NUMERIC) == "1,000,000 (≈ 1e+06) parameters"
    assert format_answer(NUMERIC, "zh").endswith("个参数")
    assert "1%" in format_answer(NUMERIC_TOL)
    assert format_answer(CARD) == "the model answer"
    assert format_number(12288) == "12,288" and format_number(0.5) == "0.5" and format_number(-1.25) == "-1.25"


@pytest.mark.parametrize("env, lang", [
    ({}, "en"), ({"LANG": "zh_CN.UTF-8"}, "zh"), ({"LANG": "en_US.UTF-8"}, "en"), ({"LANG": "C.UTF-8"}, "en"),
    ({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US"}, "zh"), ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_MESSAGES": "zh_CN", "LANG": "en_US"}, "zh"), ({"LC_ALL": "", "LANG": "zh_CN"}, "zh"),
])
def test_default_language_follows_the_locale(env, lang):
    assert default_lang(env) == lang


# ---------------------------------------------------------------- picking questions

def small_bank() -> Bank:
    questions = []
    for topic in ("masking", "inference"):
        for i in range(8):
            questions.append(make("bool", qid=f"{topic[:3]}-{i:02d}", topic=topic, answer=True,
                                  tags=("scale",) if i == 0 else ("kv-cache",)))
    return Bank(tuple(questions), {"no-scale": ("scale",), "cache-overwritten": ("kv-cache",)})


def test_selection_by_topic_count_and_seed_is_deterministic():
    bank, store = small_bank(), open_store()
    first = select_questions(bank, store, topics=("masking",), count=5, seed=7)
    again = select_questions(bank, store, topics=("masking",), count=5, seed=7)
    other = select_questions(bank, store, topics=("masking",), count=5, seed=8)
    assert [q.id for q in first] == [q.id for q in again] and len(first) == 5
    assert {q.topic for q in first} == {"masking"}
    assert [q.id for q in first] != [q.id for q in other]
    assert len(select_questions(bank, store, count=100, seed=1)) == 16
    assert select_questions(bank, store, count=0) == []


def test_resolve_topics_repeated_or_comma_separated():
    bank = small_bank()
    assert resolve_topics(bank, ["masking,inference", "masking"]) == ("masking", "inference")
    assert resolve_topics(bank, None) == ()
    with pytest.raises(DrillError) as caught:
        resolve_topics(bank, ["maskin"])
    assert "maskin" in str(caught.value) and "masking, inference" in str(caught.value)


def test_unseen_questions_come_before_ones_answered_right():
    bank, store = small_bank(), open_store()
    quiz = Quiz(store, bank, [])
    for question in bank.questions[:7]:          # masking 0..6 answered right: due in days
        quiz.answer(question, "t")
    picked = select_questions(bank, store, topics=("masking",), count=1, seed=3)
    assert [q.id for q in picked] == ["mas-07"]


def test_review_asks_what_is_due_most_overdue_first():
    bank, store = small_bank(), open_store()
    assert select_questions(bank, store, review=True) == []
    quiz = Quiz(store, bank, [])
    by_id = bank.by_id()
    quiz.answer(by_id["mas-03"], "f")            # wrong: due again in a minute, that is today
    time.sleep(0.01)
    quiz.answer(by_id["inf-05"], "f")
    quiz.answer(by_id["mas-04"], "t")            # right: due in days
    due = select_questions(bank, store, review=True)
    assert [q.id for q in due] == ["mas-03", "inf-05"]
    assert [q.id for q in select_questions(bank, store, review=True, topics=("inference",))] == ["inf-05"]
    assert [q.id for q in select_questions(bank, store, review=True, count=1)] == ["mas-03"]
    # most overdue first, whatever the order the answers came in
    now = datetime.now(timezone.utc)
    store.make_due([("inf-05", "inference")], lambda qid, card: scheduling.bring_due(card, qid, now - timedelta(days=3)))
    assert [q.id for q in select_questions(bank, store, review=True)][0] == "inf-05"
    # a plain quiz asks what is due first
    assert {q.id for q in select_questions(bank, store, count=2, seed=0)} == {"mas-03", "inf-05"}


def test_mistakes_make_their_concepts_due_now():
    bank, store = small_bank(), open_store()
    made_due = review_mistakes(store, ["no-scale", "not-a-known-mistake"], bank)
    assert [q.id for q in made_due] == ["mas-00", "inf-00"]
    assert {q.id for q in select_questions(bank, store, review=True)} == {"mas-00", "inf-00"}
    assert review_mistakes(store, [], bank) == []


def test_a_mistake_brings_back_a_question_already_learned():
    bank, store = small_bank(), open_store()
    quiz = Quiz(store, bank, [])
    quiz.answer(bank.by_id()["mas-00"], "t")      # right: not due for days
    assert select_questions(bank, store, review=True) == []
    review_mistakes(store, ["no-scale"], bank)
    assert {q.id for q in select_questions(bank, store, review=True)} == {"mas-00", "inf-00"}
    card = scheduling._card(store.cards()["mas-00"], "mas-00", datetime.now(timezone.utc))
    assert card.stability is not None            # its memory state was kept, only the due time moved


# ---------------------------------------------------------------- a session through a scripted front end

class ScriptedUI:
    def __init__(self, lines, *, interrupt_after=None):
        self.lines = list(lines)
        self.shown, self.invalids, self.results, self.revealed = [], [], [], []
        self.interrupt_after = interrupt_after

    def question(self, question, number, total):
        self.shown.append((question.id, number, total))

    def _next(self):
        if self.interrupt_after is not None and len(self.results) >= self.interrupt_after:
            raise KeyboardInterrupt
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)

    def read_answer(self, question):
        return self._next()

    read_rating = read_answer

    def invalid(self, question, message):
        self.invalids.append(message)

    def reveal(self, question):
        self.revealed.append(question.id)

    def result(self, result):
        self.results.append(result)


def session(questions, lang="en"):
    bank = Bank(tuple(questions))
    return Quiz(open_store(), bank, list(questions), lang)


def test_a_whole_session_with_invalid_input_reasked():
    quiz = session([SINGLE, make("multi", qid="t-02", choices=CHOICES4, answer=("a", "c")),
                    make("card", qid="t-03", model_answer=T("m")), make("bool", qid="t-04", answer=False)])
    ui = ScriptedUI(["e", "b", "ca", "what I said", "7", "good", "?"])
    summary = run_quiz(quiz, ui)
    assert ui.invalids == ["Type one letter, a-d.", "Rate yourself: 1 again, 2 hard, 3 good, 4 easy."]
    assert [r.correct for r in ui.results] == [True, True, True, False]
    assert ui.revealed == ["t-03"] and ui.results[2].rating == scheduling.GOOD and ui.results[2].given == "what I said"
    assert ui.results[3].dont_know and ui.results[3].expected == "false"
    assert ui.results[0].explanation == "because t-01"
    assert not summary.ended_early and summary.answered == 4 and summary.correct == 3
    assert summary.exit_code == 1
    assert [(r.topic, r.answered, r.correct) for r in summary.rows] == [("masking", 4, 3)]
    kept = open_store().answers()
    assert [(a["question"], a["correct"], a["rating"], a["answer"]) for a in kept] == [
        ("t-01", 1, 3, "b"), ("t-02", 1, 3, "ca"), ("t-03", 1, 3, "what I said"), ("t-04", 0, 1, "?")]


def test_chinese_session_messages():
    quiz = session([SINGLE], lang="zh")
    ui = ScriptedUI(["x", "a"])
    run_quiz(quiz, ui)
    assert ui.invalids == ["请输入一个字母（a-d）。"]
    assert ui.results[0].expected == "b) 中文：one" and ui.results[0].explanation == "中文：because t-01"


@pytest.mark.parametrize("stop", ["eof", "interrupt"])
def test_end_of_input_or_ctrl_c_ends_cleanly_keeping_answers(stop):
    questions = [make("bool", qid=f"t-{i:02d}", answer=True) for i in range(5)]
    quiz = session(questions)
    ui = ScriptedUI(["t", "y", "yes"] + ([] if stop == "eof" else ["t", "t"]),
                    interrupt_after=None if stop == "eof" else 3)
    summary = run_quiz(quiz, ui)
    assert summary.ended_early and summary.answered == 3 and summary.planned == 5
    assert summary.exit_code == 0   # every answer given was right
    assert len(open_store().answers()) == 3


def test_start_quiz_checks_its_arguments():
    bank = small_bank()
    with pytest.raises(DrillError):
        start_quiz(open_store(), topics=["nope"], bank=bank)
    with pytest.raises(DrillError):
        start_quiz(open_store(), count=-1, bank=bank)
    with pytest.raises(DrillError):
        start_quiz(open_store(), lang="fr", bank=bank)
    quiz = start_quiz(open_store(), topics=["inference"], count=3, seed=1, lang="zh", bank=bank)
    assert len(quiz.questions) == 3 and quiz.lang == "zh"


# ---------------------------------------------------------------- scheduling

def test_a_wrong_answer_is_due_again_soon_a_right_one_later():
    now = datetime.now(timezone.utc)
    _, wrong_due = scheduling.review(None, "q", scheduling.rating_for(False), now)
    _, right_due = scheduling.review(None, "q", scheduling.rating_for(True), now)
    assert wrong_due - now.timestamp() <= 10 * 60            # minutes
    assert right_due - now.timestamp() >= 24 * 3600          # days
    ratings = [scheduling.review(None, "q", r, now)[1] for r in scheduling.RATINGS]
    assert ratings == sorted(ratings) and ratings[0] < ratings[-1]


def test_cards_round_trip_as_json_and_intervals_grow():
    now = datetime.now(timezone.utc)
    card, due = scheduling.review(None, "q", scheduling.GOOD, now)
    first = due - now.timestamp()
    later = datetime.fromtimestamp(due, timezone.utc)
    card, due2 = scheduling.review(card, "q", scheduling.GOOD, later)
    assert due2 - due > first                                # a second success waits longer
    lapse, due3 = scheduling.review(card, "q", scheduling.AGAIN, datetime.fromtimestamp(due2, timezone.utc))
    assert due3 - due2 <= 10 * 60                            # a lapse comes back within minutes
    assert scheduling.due_of(lapse).timestamp() == pytest.approx(due3)


def test_session_answers_schedule_the_questions():
    quiz = session([make("bool", qid="t-01", answer=True), make("bool", qid="t-02", answer=True)])
    run_quiz(quiz, ScriptedUI(["t", "f"]))
    right, wrong = quiz.results
    assert right.next_due - datetime.now(timezone.utc) > timedelta(days=1)
    assert wrong.next_due - datetime.now(timezone.utc) < timedelta(minutes=5)
    table = mastery(quiz.store, quiz.bank)
    assert table["masking"].answered == 2 and table["masking"].correct == 1 and table["masking"].due == 1


# ---------------------------------------------------------------- the store's quiz tables

def test_an_answer_and_its_review_are_one_transaction():
    store = open_store()

    def failing_review(card):
        raise RuntimeError("scheduler broke")

    with pytest.raises(RuntimeError):
        store.record_answer("q-1", "masking", correct=True, rating=3, answer="a", review=failing_review)
    assert store.answers() == [] and store.cards() == {}   # nothing half-written
    store.record_answer("q-1", "masking", correct=True, rating=3, answer="a",
                        review=lambda card: scheduling.review(card, "q-1", 3))
    assert len(store.answers()) == 1 and "q-1" in store.cards()


V1_SCHEMA = """
CREATE TABLE exercise_progress (exercise TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('passed', 'failed')),
    ever_passed INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
CREATE TABLE check_history (id INTEGER PRIMARY KEY AUTOINCREMENT, exercise TEXT NOT NULL, passed INTEGER NOT NULL,
    mistakes TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE hints (exercise TEXT PRIMARY KEY, hints_shown INTEGER NOT NULL);
INSERT INTO exercise_progress VALUES ('ex1', 'passed', 1, 2, '2026-01-01T00:00:00+00:00');
INSERT INTO hints VALUES ('ex1', 2);
PRAGMA user_version = 1;
"""


def test_a_version_1_store_upgrades_in_place(drill_home):
    drill_home.mkdir(parents=True)
    db = sqlite3.connect(drill_home / DB_NAME)
    db.executescript(V1_SCHEMA)
    db.close()
    store = open_store()
    assert store.warnings == []                                  # not treated as damaged
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert store.progress()["ex1"].attempts == 2 and store.take_hint("ex1", 3) == 3
    store.record_answer("q-1", "masking", correct=False, rating=1, answer="x",
                        review=lambda card: scheduling.review(card, "q-1", 1))
    assert store.due_count() == 1
    assert list(drill_home.glob(f"{DB_NAME}.damaged-*")) == []


def test_two_processes_answering_at_once_lose_nothing(drill_home):
    script = (
        "import sys\nfrom attn_drill.store import open_store\nfrom attn_drill.quiz import scheduling\n"
        "s = open_store()\n"
        "for i in range(40):\n"
        "    qid = f'{sys.argv[1]}-{i % 7}'\n"
        "    s.record_answer(qid, 'masking', correct=i % 2 == 0, rating=3 if i % 2 == 0 else 1, answer=str(i),\n"
        "                    review=lambda card: scheduling.review(card, qid, 3 if i % 2 == 0 else 1))\n")
    open_store().close()
    children = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("p", "q")]
    assert all(child.wait(timeout=120) == 0 for child in children)
    store = open_store()
    answers = store.answers()
    assert len(answers) == 80
    assert sorted(a["answer"] for a in answers if a["question"].startswith("p-")) == sorted(map(str, range(40)))
    assert len(store.cards()) == 14
    assert {qid: n for qid, (n, _) in store.answer_summary().items()}["p-0"] == 6
