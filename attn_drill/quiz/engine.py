"""The quiz engine: parse and grade answers of every kind, pick questions, keep each answer
as a review, and sum a session up. No terminal code: :func:`run_quiz` talks to the person
through the small :class:`QuizUI` interface the CLI passes in.

Answer formats (case does not matter, spaces around are ignored):

- single: one letter (``b``, ``(b)``, ``b.``).
- multi: the letters in any order: ``a,c``, ``ac``, ``a c``, ``c, a``; graded as an exact set.
- bool: ``t``/``f``, ``true``/``false``, ``y``/``n``, ``yes``/``no``, ``对``/``错``, ``是``/``否``.
- numeric: ``1e6``, ``1_000_000``, ``1,000,000``, ``1M``, ``1.5k``, ``2G``/``2B``, ``-1.25``, an
  arithmetic expression such as ``2^30`` or ``4096*4096*2``, optionally followed by the
  question's unit; right when within the question's relative tolerance.
- code: as its ``select`` kind (single or multi).
- card: Enter (or a written answer), then a self-rating ``1``-``4`` or again/hard/good/easy.
- ``?`` means "I don't know": graded wrong, the answer is shown.

Input that is none of these raises :class:`InvalidAnswer`; the CLI asks again.
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping, Protocol

from attn_drill.errors import DrillError
from attn_drill.quiz import scheduling
from attn_drill.quiz.bank import Bank, FormulaError, Question, close_enough, evaluate, load_bank
from attn_drill.store import Store, day_end

LANGS = ("en", "zh")
DONT_KNOW = frozenset({"?", "？", "idk", "不知道"})


def default_lang(environ: Mapping[str, str] | None = None) -> str:
    """The language the locale asks for: the first of LC_ALL, LC_MESSAGES, LANG that is set
    (POSIX order) decides; "zh..." gives Chinese, anything else English."""
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


class InvalidAnswer(ValueError):
    """Input that is not an answer of the question's kind; the message says what to type."""

    def __init__(self, en: str, zh: str):
        super().__init__(en)
        self.en, self.zh = en, zh

    def text(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


# ---------------------------------------------------------------------------------------
# Parsing


def _span(question: Question) -> str:
    letters = question.letters()
    return f"a-{letters[-1]}" if letters else "a"


def parse_letter(question: Question, text: str) -> str:
    cleaned = text.strip().strip("()（）.。)、").lower()
    if len(cleaned) == 1 and cleaned in question.letters():
        return cleaned
    raise InvalidAnswer(f"Type one letter, {_span(question)}.", f"请输入一个字母（{_span(question)}）。")


def parse_letters(question: Question, text: str) -> tuple[str, ...]:
    cleaned = re.sub(r"[\s,;，；、+/&()（）.。]+", "", text.strip().lower())
    cleaned = re.sub(r"(?<=[a-z])and(?=[a-z])", "", cleaned)
    if cleaned and all(ch in question.letters() for ch in cleaned):
        return tuple(sorted(set(cleaned)))
    raise InvalidAnswer(f"Type every right letter ({_span(question)}), in any order: a,c or ac or a c.",
                        f"请输入所有正确选项的字母（{_span(question)}），顺序不限：a,c 或 ac 或 a c。")


TRUE_WORDS = frozenset({"t", "true", "y", "yes", "对", "是", "正确", "真", "√", "✓"})
FALSE_WORDS = frozenset({"f", "false", "n", "no", "错", "否", "错误", "假", "×", "✗"})


def parse_bool(text: str) -> bool:
    cleaned = text.strip().strip(".。!！").lower()
    if cleaned in TRUE_WORDS:
        return True
    if cleaned in FALSE_WORDS:
        return False
    raise InvalidAnswer("Type t or f (true/false, y/n, yes/no).", "请输入 对 或 错（也可输入 是/否、t/f、y/n）。")


_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12, "万": 1e4, "亿": 1e8}
_NUMBER = re.compile(r"""
    (?P<sign>[-+]?)\s*
    (?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)? | \d+(?:_\d+)*(?:\.\d*)? | \.\d+)
    (?:[eE](?P<exp>[-+]?\d+))?
    \s*(?P<suffix>[kKmMgGbBtT万亿])?
""", re.VERBOSE)


def parse_number(text: str, units: Iterable[str] = ()) -> float:
    """A number as people type it: 1e6, 1_000_000, 1,000,000, 1M, 1.5k, 2G, 2B, -3, 2^30, 4096*2."""
    cleaned = text.strip().replace("−", "-").replace("，", ",").replace("×", "*").replace("·", "*")
    for unit in sorted((u.strip() for u in units if u and u.strip()), key=len, reverse=True):
        if cleaned.lower().endswith(unit.lower()) and len(cleaned) > len(unit):
            cleaned = cleaned[: -len(unit)].strip()
            break
    match = _NUMBER.fullmatch(cleaned)
    if match:
        value = float(match["digits"].replace(",", "").replace("_", ""))
        if match["exp"]:
            value *= 10.0 ** int(match["exp"])
        if match["suffix"]:
            value *= _SUFFIXES[match["suffix"].lower()]
        return -value if match["sign"] == "-" else value
    if cleaned and len(cleaned) <= 200 and re.search(r"\d", cleaned) and re.fullmatch(r"[\d\s.eE+\-*/^()_a-z0-9,]+", cleaned):
        try:
            value = evaluate(cleaned.replace("^", "**").replace("_", ""), {})
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
        except (FormulaError, OverflowError):
            pass
    raise InvalidAnswer("Type a number: 12288, 1.5e6, 1_000_000, 1,000, 1M, 1.5k, 2G or 2^30.",
                        "请输入一个数：12288、1.5e6、1_000_000、1,000、1M、1.5k、2G、2^30 或 1万。")


RATING_WORDS = {
    "1": 1, "again": 1, "a": 1, "重来": 1, "忘了": 1,
    "2": 2, "hard": 2, "h": 2, "困难": 2, "难": 2,
    "3": 3, "good": 3, "g": 3, "良好": 3, "好": 3,
    "4": 4, "easy": 4, "e": 4, "简单": 4, "容易": 4,
}


def parse_rating(text: str) -> int:
    rating = RATING_WORDS.get(text.strip().strip(".。").lower())
    if rating is None:
        raise InvalidAnswer("Rate yourself: 1 again, 2 hard, 3 good, 4 easy.",
                            "请自评：1 重来，2 困难，3 良好，4 简单。")
    return rating


def parse_answer(question: Question, text: str):
    """The answer ``text`` means for ``question`` (a letter, letters, a bool, a number, or a
    card's rating); raises InvalidAnswer when it is not an answer of that kind."""
    kind = question.answer_kind
    if kind == "single":
        return parse_letter(question, text)
    if kind == "multi":
        return parse_letters(question, text)
    if kind == "bool":
        return parse_bool(text)
    if kind == "numeric":
        units = (question.unit.en, question.unit.zh) if question.unit else ()
        return parse_number(text, units)
    if kind == "card":
        return parse_rating(text)
    raise ValueError(f"unknown question kind {kind!r}")


def grade(question: Question, value) -> bool:
    """Whether a parsed answer is right (a card: whether the self-rating is a pass)."""
    kind = question.answer_kind
    if kind == "multi":
        return tuple(sorted(set(value))) == tuple(question.answer)
    if kind == "numeric":
        return close_enough(float(value), float(question.answer), question.tolerance or 0.0)
    if kind == "card":
        return scheduling.is_pass(value)
    return value == question.answer


# ---------------------------------------------------------------------------------------
# Showing the right answer


def format_number(value: float) -> str:
    """12,288 · 1,073,741,824 (≈ 1.07e9) · 62.8319 · -1.25"""
    if float(value).is_integer() and abs(value) < 1e18:
        whole = f"{int(value):,}"
        return whole + (f" (≈ {value:.3g})" if abs(value) >= 1e6 else "")
    return f"{value:.6g}"


def format_answer(question: Question, lang: str = "en") -> str:
    """The correct answer as a person reads it."""
    kind = question.answer_kind
    if kind == "single":
        return f"{question.answer}) {question.choices[ord(question.answer) - 97].get(lang)}"
    if kind == "multi":
        return "\n".join(f"{letter}) {question.choices[ord(letter) - 97].get(lang)}" for letter in question.answer)
    if kind == "bool":
        if lang == "zh":
            return "对（true）" if question.answer else "错（false）"
        return "true" if question.answer else "false"
    if kind == "numeric":
        text = format_number(float(question.answer))
        if question.unit:
            text += f" {question.unit.get(lang)}"
        if question.tolerance:
            text += (f"（误差 {question.tolerance:.0%} 以内算对）" if lang == "zh"
                     else f" (within {question.tolerance:.1%} counts)".replace(".0%", "%"))
        return text
    if kind == "card":
        return question.model_answer.get(lang) if question.model_answer else ""
    return str(question.answer)


# ---------------------------------------------------------------------------------------
# A session


@dataclass(frozen=True)
class AnswerResult:
    """One answer, graded and kept."""

    question: Question
    given: str             # what was typed
    correct: bool          # a card: rated Hard or better
    rating: int            # FSRS rating: 1 Again, 2 Hard, 3 Good, 4 Easy
    expected: str          # the correct answer (a card: the model answer), in the session's language
    explanation: str
    next_due: datetime     # when spaced repetition asks it again
    dont_know: bool = False


@dataclass(frozen=True)
class TopicScore:
    topic: str
    answered: int
    correct: int


@dataclass(frozen=True)
class Summary:
    """The end of a session: the score by topic, and what spaced repetition has next."""

    rows: tuple[TopicScore, ...]
    planned: int               # questions picked for the session
    ended_early: bool          # Ctrl-C or the end of input before the last question
    review: bool
    due_today: int             # questions due today, after this session
    next_due: datetime | None  # the earliest due time of a question not due today

    @property
    def answered(self) -> int:
        return sum(row.answered for row in self.rows)

    @property
    def correct(self) -> int:
        return sum(row.correct for row in self.rows)

    @property
    def exit_code(self) -> int:
        """The CLI contract: 1 when an answer was wrong, else 0 (an early end is not an error)."""
        return 1 if self.correct < self.answered else 0


class QuizUI(Protocol):
    """What :func:`run_quiz` needs from a front end. ``read_*`` return a line of input and
    raise EOFError at the end of input (or KeyboardInterrupt on Ctrl-C): the quiz then ends,
    keeping every answer already given."""

    def question(self, question: Question, number: int, total: int) -> None: ...
    def read_answer(self, question: Question) -> str: ...
    def invalid(self, question: Question, message: str) -> None: ...
    def reveal(self, question: Question) -> None: ...
    def read_rating(self, question: Question) -> str: ...
    def result(self, result: AnswerResult) -> None: ...


@dataclass
class Quiz:
    """A session: the questions picked, and every answer as it is given (each one is
    committed to the store at once, with its FSRS review)."""

    store: Store
    bank: Bank
    questions: list[Question]
    lang: str = "en"
    review: bool = False
    results: list[AnswerResult] = field(default_factory=list)
    ended_early: bool = False

    def answer(self, question: Question, text: str) -> AnswerResult:
        """Grade and keep an answer to a question that is not a card."""
        if question.kind == "card":
            raise ValueError("a card is answered with rate()")
        given = text.strip()
        if given.lower() in DONT_KNOW:
            return self._keep(question, given, False, scheduling.AGAIN, dont_know=True)
        correct = grade(question, parse_answer(question, given))
        return self._keep(question, given, correct, scheduling.rating_for(correct))

    def rate(self, question: Question, rating_text: str, given: str = "") -> AnswerResult:
        """Keep a card's self-rating (``given``: what the learner wrote before seeing the model answer)."""
        rating = parse_rating(rating_text)
        return self._keep(question, given.strip(), scheduling.is_pass(rating), rating)

    def _keep(self, question: Question, given: str, correct: bool, rating: int, *, dont_know: bool = False) -> AnswerResult:
        at = datetime.now(timezone.utc)
        due: list[float] = []

        def review(card: str | None) -> tuple[str, float]:
            new_card, new_due = scheduling.review(card, question.id, rating, at)
            due.append(new_due)
            return new_card, new_due

        self.store.record_answer(question.id, question.topic, correct=correct, rating=rating, answer=given, review=review)
        result = AnswerResult(question, given, correct, rating, format_answer(question, self.lang),
                              question.explanation.get(self.lang), datetime.fromtimestamp(due[-1], timezone.utc),
                              dont_know)
        self.results.append(result)
        return result

    def summary(self) -> Summary:
        rows = []
        for topic in self.bank.topics:
            mine = [r for r in self.results if r.question.topic == topic]
            if mine:
                rows.append(TopicScore(topic, len(mine), sum(r.correct for r in mine)))
        cutoff = day_end()
        dues = due_times(self.store, self.bank)
        later = [d for d in dues.values() if d > cutoff]
        return Summary(tuple(rows), len(self.questions), self.ended_early, self.review,
                       sum(d <= cutoff for d in dues.values()),
                       datetime.fromtimestamp(min(later), timezone.utc) if later else None)


def run_quiz(quiz: Quiz, ui: QuizUI) -> Summary:
    """Ask every question through ``ui``, re-asking on input that is not an answer. Ctrl-C or
    the end of input ends the session cleanly; answers already given are kept."""
    total = len(quiz.questions)
    try:
        for number, question in enumerate(quiz.questions, start=1):
            ui.question(question, number, total)
            if question.kind == "card":
                given = ui.read_answer(question)
                ui.reveal(question)
                while True:
                    try:
                        result = quiz.rate(question, ui.read_rating(question), given)
                        break
                    except InvalidAnswer as problem:
                        ui.invalid(question, problem.text(quiz.lang))
            else:
                while True:
                    try:
                        result = quiz.answer(question, ui.read_answer(question))
                        break
                    except InvalidAnswer as problem:
                        ui.invalid(question, problem.text(quiz.lang))
            ui.result(result)
    except (EOFError, KeyboardInterrupt):
        quiz.ended_early = True
    return quiz.summary()


# ---------------------------------------------------------------------------------------
# Picking questions


def resolve_topics(bank: Bank, topics: Iterable[str] | None) -> tuple[str, ...]:
    """``--topic`` values (repeated or comma-separated) -> topics of the bank; an unknown one
    raises DrillError listing them all."""
    wanted: list[str] = []
    for item in topics or ():
        for name in item.split(","):
            name = name.strip().lower().replace("_", "-").replace(" ", "-")
            if not name:
                continue
            if name not in bank.topics:
                raise DrillError(f"no quiz topic named '{name}'. Try one of: {', '.join(bank.topics)}.")
            if name not in wanted:
                wanted.append(name)
    return tuple(wanted)


def due_times(store: Store, bank: Bank) -> dict[str, float]:
    """Due time of every question of the bank that has been seen (Unix seconds)."""
    known = bank.by_id()
    return {qid: due for qid, due in store.card_dues().items() if qid in known}


def select_questions(bank: Bank, store: Store, *, topics: Iterable[str] | None = None, count: int = 10,
                     seed: int | None = None, review: bool = False, at: float | None = None) -> list[Question]:
    """The questions of a session.

    ``review``: the questions due by ``at`` (default: the end of today, see store.day_end, so
    a question missed a minute ago is asked again at once), most overdue first. Otherwise a
    random pick (the same for the same ``seed`` and history): questions due first, then ones
    never seen, then the rest, soonest due first; the pick is then shuffled."""
    if count <= 0:
        return []
    at = day_end() if at is None else at
    pool = sorted(bank.in_topics(tuple(topics or ())), key=lambda q: q.id)
    dues = due_times(store, bank)
    if review:
        due = sorted((dues[q.id], q.id) for q in pool if q.id in dues and dues[q.id] <= at)
        by_id = {q.id: q for q in pool}
        return [by_id[qid] for _, qid in due[:count]]
    rng = random.Random(seed)
    rng.shuffle(pool)

    def priority(q: Question) -> tuple[int, float]:
        if q.id not in dues:
            return (1, 0.0)
        return (0, 0.0) if dues[q.id] <= at else (2, dues[q.id])

    chosen = sorted(pool, key=priority)[:count]
    rng.shuffle(chosen)
    return chosen


def start_quiz(store: Store, *, topics: Iterable[str] | None = None, count: int = 10, review: bool = False,
               seed: int | None = None, lang: str | None = None, bank: Bank | None = None) -> Quiz:
    """Load the bank and pick the session's questions."""
    bank = bank or load_bank()
    if count < 0:
        raise DrillError(f"-n must be 0 or more, got {count}.")
    if lang is not None and lang not in LANGS:
        raise DrillError(f"--lang must be one of {', '.join(LANGS)}, got '{lang}'.")
    chosen = resolve_topics(bank, topics)
    questions = select_questions(bank, store, topics=chosen, count=count, seed=seed, review=review)
    return Quiz(store, bank, questions, lang or default_lang(), review)


# ---------------------------------------------------------------------------------------
# Mistakes from the exercises, and mastery


def review_mistakes(store: Store, mistakes: Iterable[str], bank: Bank | None = None) -> list[Question]:
    """Make the questions on the concepts behind the named mistakes due now (a mistake key
    maps to concept tags in questions/mistakes.toml); returns those questions."""
    mistakes = [m for m in mistakes if m]
    if not mistakes:
        return []
    bank = bank or load_bank()
    questions = bank.tagged(bank.concepts_for(mistakes))
    if questions:
        at = datetime.now(timezone.utc)
        store.make_due(((q.id, q.topic) for q in questions),
                       lambda qid, card: scheduling.bring_due(card, qid, at))
    return questions


@dataclass(frozen=True)
class TopicMastery:
    questions: int   # in the bank
    answered: int    # distinct questions answered at least once
    correct: int     # of those, how many were right the last time
    due: int         # due today (what `quiz --review` asks)


def mastery(store: Store, bank: Bank | None = None, at: float | None = None) -> dict[str, TopicMastery]:
    """Quiz mastery by topic, every topic of the bank."""
    bank = bank or load_bank()
    at = day_end() if at is None else at
    answers = store.answer_summary()
    dues = due_times(store, bank)
    table = {}
    for topic in bank.topics:
        ids = [q.id for q in bank.questions if q.topic == topic]
        table[topic] = TopicMastery(
            questions=len(ids),
            answered=sum(qid in answers for qid in ids),
            correct=sum(answers[qid][1] for qid in ids if qid in answers),
            due=sum(qid in dues and dues[qid] <= at for qid in ids),
        )
    return table
