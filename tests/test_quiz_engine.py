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
    LEECH_MISSES, InvalidAnswer, Quiz, default_lang, format_answer, format_compact, format_number, grade, mastery,
    number_feedback, parse_answer, parse_number, read_number, resolve_topics, review_mistakes, run_quiz,
    select_leeches, select_questions, start_quiz,
)
from attn_drill.quiz.stats import calendar, leeches, retention, stats, study_day
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
               unit=Text("parameters", "个参数"), prompt=Text("How many parameters, exactly?", "精确地说有多少个参数？"))
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
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert store.progress()["ex1"].attempts == 2 and store.take_hint("ex1", 3) == 3   # kept, outside any workspace
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


# ---------------------------------------------------------------- numbers: units, binary prefixes, tolerance

@pytest.mark.parametrize("text, value", [
    ("1050624 params", 1050624), ("36 entries", 36), ("1,050,624 parameters", 1050624), ("36个位置", 36),
    ("5 tokens", 5), ("1.5k tokens", 1500), ("7B params", 7e9), ("2^30 bytes", 2**30),
    ("1KiB", 1024), ("2 MiB", 2 * 2**20), ("2GiB", 2 * 2**30), ("1 TiB", 2**40), ("3Mi", 3 * 2**20),
    ("1KB", 1000), ("2 MB", 2e6), ("2GB", 2e9), ("2 gb", 2e9), ("1.5 kB", 1500), ("12 KB", 12000),
    ("3千", 3000), ("2百万", 2e6), ("1.2亿", 1.2e8), ("34.4G", 34.4e9),
])
def test_units_and_binary_prefixes(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["2 gigabytes", "3 million", "1 e", "2 x", "5 kilo"])
def test_spelled_out_magnitudes_and_stray_letters_are_asked_again(text):
    with pytest.raises(InvalidAnswer):
        parse_number(text)


def test_the_reading_keeps_what_was_typed_without_the_unit():
    assert read_number("34.4G FLOPs").typed == "34.4G"
    assert read_number("1050624 params").typed == "1050624"
    assert read_number("2^30 bytes").typed == "2^30"
    assert read_number("500 MiB", ["MiB"]) == read_number("500")     # the question's own unit is a word


BIG = make("numeric", qid="t-big", answer=34359738368, tolerance=0.0, params={}, formula="2**35",
           prompt=T("How many FLOPs?"), unit=Text("FLOPs", "FLOPs"))
BIG_EXACT = make("numeric", qid="t-exact", answer=1050624, tolerance=0.0, params={}, formula="1050624",
                 prompt=Text("Give the exact parameter count.", "给出精确的参数量。"))
SMALL = make("numeric", qid="t-small", answer=9999, tolerance=0.0, params={}, formula="9999")


def test_answers_above_10000_take_1_percent_unless_the_prompt_says_exact():
    assert verdict(BIG, "34.4G") and verdict(BIG, "3.42e10") and not verdict(BIG, "3.3e10")
    assert "within 1% counts" in format_answer(BIG) and "误差 1% 以内算对" in format_answer(BIG, "zh")
    assert verdict(BIG_EXACT, "1050624") and not verdict(BIG_EXACT, "1.05M") and not verdict(BIG_EXACT, "1050625")
    assert "within" not in format_answer(BIG_EXACT)
    assert verdict(SMALL, "9999") and not verdict(SMALL, "9998")                # 10,000 and below: as set
    assert not verdict(NUMERIC, "999999")                                       # "exactly" in the prompt


def test_format_compact():
    assert [format_compact(v) for v in (36, 98000, 0.5, 34.4e9, 1050600, -1.25, 0)] == [
        "36", "98,000", "0.5", "3.44e10", "1.0506e6", "-1.25", "0"]
    assert format_compact(34359738368, 4) == "3.436e10"


def test_a_wrong_number_is_echoed_as_it_was_read():
    assert number_feedback(BIG, read_number("33G")) == {
        "typed": "33G", "read": "3.3e10", "answer": "3.436e10", "tolerance": 0.01, "unit": BIG.unit}
    exact = number_feedback(BIG_EXACT, read_number("1.05M"))
    assert exact["answer"] == "1,050,624" and exact["tolerance"] == 0 and exact["read"] == "1.05e6"
    quiz = session([BIG])
    result = quiz.answer(BIG, "33G FLOPs")
    assert not result.correct and result.reading.value == 33e9 and result.reading.typed == "33G"


# ---------------------------------------------------------------- the session: quit words, partial multi, missed

def test_a_partly_wrong_multi_answer_says_what_was_missing_and_extra():
    six = tuple(T(x) for x in "uvwxyz")
    question = make("multi", choices=six, answer=("a", "c", "e"))
    quiz = session([question])
    result = quiz.answer(question, "a,b,c")
    assert not result.correct and result.missing == ("e",) and result.extra == ("b",)
    assert quiz.answer(question, "ace").missing == () and quiz.answer(question, "ace").extra == ()
    assert quiz.answer(question, "?").missing == ()           # don't know: only the answer is shown


@pytest.mark.parametrize("word", ["q", "Q", "quit", "exit", " exit ", "退出"])
def test_q_quit_or_exit_at_any_prompt_ends_the_quiz_keeping_answers(word):
    questions = [make("bool", qid="t-01", answer=True), make("card", qid="t-02", model_answer=T("m")),
                 make("bool", qid="t-03", answer=True)]
    ui = ScriptedUI(["t", "", word, "t"])                     # the quit word at a card's rating prompt
    summary = run_quiz(session(questions), ui)
    assert summary.ended_early and summary.answered == 1 and len(open_store().answers()) == 1
    summary = run_quiz(session(questions), ScriptedUI([word]))  # at the first answer prompt
    assert summary.ended_early and summary.answered == 0


def test_the_summary_lists_the_questions_missed_in_order():
    questions = [make("bool", qid=f"t-{i}", answer=True) for i in range(4)] + [make("card", qid="t-c", model_answer=T("m"))]
    summary = run_quiz(session(questions), ScriptedUI(["f", "t", "?", "t", "", "1"]))
    assert [q.id for q in summary.missed] == ["t-0", "t-2", "t-c"]     # a card rated Again is missed too
    assert summary.due_today == 3


def test_minus_n_must_be_at_least_1_and_review_asks_everything_due():
    bank = small_bank()
    for bad in (0, -1):
        with pytest.raises(DrillError) as caught:
            start_quiz(open_store(), count=bad, bank=bank)
        assert "-n must be 1 or more" in str(caught.value)
    assert len(start_quiz(open_store(), bank=bank, seed=1).questions) == 10      # the default
    quiz = Quiz(open_store(), bank, [])
    for question in bank.questions[:13]:
        quiz.answer(question, "f")                                               # 13 due today
    assert len(start_quiz(open_store(), review=True, bank=bank).questions) == 13
    assert len(start_quiz(open_store(), review=True, count=4, bank=bank).questions) == 4   # -n given: a cap
    with pytest.raises(DrillError):
        start_quiz(open_store(), review=True, leeches=True, bank=bank)


def test_leeches_are_questions_missed_4_times_or_more_most_missed_first():
    bank, store = small_bank(), open_store()
    quiz = Quiz(store, bank, [])
    by_id = bank.by_id()
    for qid, misses in (("mas-01", 5), ("inf-02", LEECH_MISSES), ("mas-03", LEECH_MISSES - 1)):
        for _ in range(misses):
            quiz.answer(by_id[qid], "f")
    quiz.answer(by_id["mas-03"], "t")
    assert [q.id for q in select_leeches(bank, store)] == ["mas-01", "inf-02"]
    assert [q.id for q in select_leeches(bank, store, topics=("inference",))] == ["inf-02"]
    session_ = start_quiz(store, leeches=True, bank=bank)
    assert [q.id for q in session_.questions] == ["mas-01", "inf-02"] and session_.leeches
    assert [q.id for q in start_quiz(store, leeches=True, count=1, bank=bank).questions] == ["mas-01"]


# ---------------------------------------------------------------- stats: due reviews, retention, calendar, leeches

def test_an_answer_records_whether_it_was_a_due_review():
    bank, store = small_bank(), open_store()
    quiz = Quiz(store, bank, [])
    by_id = bank.by_id()
    quiz.answer(by_id["mas-01"], "t")          # first answer: not a due review
    quiz.answer(by_id["mas-01"], "t")          # asked again early (due in days): not one either
    quiz.answer(by_id["mas-02"], "f")          # wrong: due in a minute...
    store.make_due([("mas-02", "masking")], lambda qid, card: scheduling.bring_due(card, qid))
    quiz.answer(by_id["mas-02"], "t")          # ...and answered when due: a due review, right
    review_mistakes(store, ["no-scale"], bank)  # a mistake makes mas-00 due: a card, due now
    quiz.answer(by_id["mas-00"], "f")
    assert [a["was_due"] for a in store.answers()] == [0, 0, 0, 1, 1]


def test_retention_is_the_share_of_due_reviews_answered_right():
    answers = [
        {"question": "a", "topic": "masking", "correct": 1, "was_due": 1},
        {"question": "b", "topic": "masking", "correct": 0, "was_due": 1},
        {"question": "c", "topic": "masking", "correct": 1, "was_due": 1},
        {"question": "d", "topic": "masking", "correct": 0, "was_due": 0},      # not due: not counted
        {"question": "e", "topic": "masking", "correct": 0, "was_due": None},   # unknown (old store)
    ]
    assert retention(answers, ["masking", "inference"]) == {"masking": 0.6667, "inference": None}


def test_the_calendar_counts_reviews_per_study_day_for_12_weeks():
    now = datetime(2026, 3, 20, 12, 0, tzinfo=timezone.utc).astimezone()
    today = study_day(now)
    at = lambda delta: {"at": (now - delta).isoformat()}                       # noqa: E731
    answers = [at(timedelta(0)), at(timedelta(hours=1)), at(timedelta(days=3)), at(timedelta(days=83)),
               at(timedelta(days=84)), at(timedelta(days=400))]
    days = calendar(answers, today)
    assert len(days) == 84 and list(days)[-1] == today.isoformat()
    assert list(days) == sorted(days)
    assert days[today.isoformat()] == 2 and days[(today - timedelta(days=3)).isoformat()] == 1
    assert days[(today - timedelta(days=83)).isoformat()] == 1 and sum(days.values()) == 4


def test_a_study_day_ends_at_4_am_local_time():
    local = datetime(2026, 3, 20, 3, 30).astimezone()
    assert study_day(local).isoformat() == "2026-03-19"
    assert study_day(local.replace(hour=4, minute=1)).isoformat() == "2026-03-20"


def test_leeches_from_answers():
    bank = small_bank()
    answers = [{"question": "mas-01", "correct": 0}] * 4 + [{"question": "mas-01", "correct": 1}] + \
              [{"question": "gone-01", "correct": 0}] * 9 + [{"question": "inf-01", "correct": 0}] * 3
    found = leeches(answers, bank)
    assert [(x.id, x.topic, x.missed, x.answers) for x in found] == [("mas-01", "masking", 4, 5)]


def test_stats_gathers_retention_calendar_and_leeches():
    bank, store = small_bank(), open_store()
    quiz = Quiz(store, bank, [])
    question = bank.by_id()["mas-01"]
    for _ in range(LEECH_MISSES):
        quiz.answer(question, "f")
        store.make_due([(question.id, question.topic)], lambda qid, card: scheduling.bring_due(card, qid))
    shown = stats(store, bank)
    data = shown.to_dict()
    assert data["quiz"]["leeches"] == ["mas-01"]
    assert data["quiz"]["topics"]["masking"]["retention"] == 0.0 and data["quiz"]["topics"]["inference"]["retention"] is None
    assert set(data["quiz"]["topics"]["masking"]) == {"questions", "answered", "correct", "due", "retention"}
    assert sum(data["quiz"]["calendar"].values()) == LEECH_MISSES and len(data["quiz"]["calendar"]) == 84
    assert data["quiz"]["retention"] == 0.0


V2_ANSWERS = """
CREATE TABLE quiz_answers (id INTEGER PRIMARY KEY AUTOINCREMENT, question TEXT NOT NULL, topic TEXT NOT NULL,
    correct INTEGER NOT NULL, rating INTEGER NOT NULL, answer TEXT NOT NULL, at TEXT NOT NULL);
INSERT INTO quiz_answers (question, topic, correct, rating, answer, at)
    VALUES ('q-1', 'masking', 1, 3, 't', '2026-01-01T00:00:00+00:00');
PRAGMA user_version = 2;
"""


def test_a_version_2_store_gains_the_due_review_column(drill_home):
    drill_home.mkdir(parents=True)
    db = sqlite3.connect(drill_home / DB_NAME)
    db.executescript(V2_ANSWERS)
    db.close()
    store = open_store()
    assert store.warnings == [] and store._db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert [a["was_due"] for a in store.answers()] == [None]        # not known for old answers
    store.record_answer("q-1", "masking", correct=True, rating=3, answer="t",
                        review=lambda card: scheduling.review(card, "q-1", 3))
    assert [a["was_due"] for a in store.answers()] == [None, 0]
    store.close()
    assert open_store().answers()[0]["answer"] == "t"               # opening again changes nothing
