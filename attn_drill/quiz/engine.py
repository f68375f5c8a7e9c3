"""The quiz engine: parse and grade answers of every kind, pick questions, keep each answer
as a review, and sum a session up. No terminal code: :func:`run_quiz` talks to the person
through the small :class:`QuizUI` interface the CLI passes in.

Answer formats (case does not matter, spaces around are ignored):

- single: one letter (``b``, ``(b)``, ``b.``).
- multi: the letters in any order: ``a,c``, ``ac``, ``a c``, ``c, a``; graded as an exact set.
- bool: ``t``/``f``, ``true``/``false``, ``y``/``n``, ``yes``/``no``, ``对``/``错``, ``是``/``否``.
- numeric: ``1e6``, ``1_000_000``, ``1,000,000``, ``1M``, ``1.5k``, ``2G``/``2B``, ``-1.25``, an
  arithmetic expression such as ``2^30`` or ``4096*4096*2``, optionally followed by a unit
  word (``1050624 params``, ``36 entries``); K/M/G/T are powers of 1000 (KB/MB/GB too), KiB/MiB/
  GiB/TiB powers of 1024. Right when within the question's relative tolerance; an answer above
  10,000 whose question sets 0 takes 1% unless the prompt asks for an exact count.
- code: as its ``select`` kind (single or multi).
- card: Enter (or a written answer), then a self-rating ``1``-``4`` or again/hard/good/easy.
- ``?`` means "I don't know": graded wrong, the answer is shown.
- ``q``, ``quit``, ``exit`` (or 退出) at any prompt ends the quiz, as Ctrl-C does: answers kept.

Input that is none of these raises :class:`InvalidAnswer`; the CLI asks again.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Protocol

from attn_drill.errors import DrillError
from attn_drill.quiz import scheduling
from attn_drill.quiz.bank import (
    Bank, FormulaError, Question, close_enough, evaluate, load_bank, numeric_tolerance,
)
from attn_drill.i18n import LANGS, default_lang  # noqa: F401  (part of this module's API)
from attn_drill.store import Store, day_end

DONT_KNOW = frozenset({"?", "？", "idk", "不知道"})
QUIT_WORDS = frozenset({"q", "quit", "exit", "退出"})
LEECH_MISSES = 4    # a question missed this many times (or more) is a leech, as Anki calls it


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


_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "b": 1e9,
             "千": 1e3, "万": 1e4, "百万": 1e6, "千万": 1e7, "亿": 1e8, "十亿": 1e9,
             "ki": 2.0 ** 10, "mi": 2.0 ** 20, "gi": 2.0 ** 30, "ti": 2.0 ** 40}
_NUMBER = re.compile(r"""
    (?P<sign>[-+]?)\s*
    (?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)? | \d+(?:_\d+)*(?:\.\d*)? | \.\d+)
    (?:[eE](?P<exp>[-+]?\d+))?
    \s*
    (?:                                                    # a multiplier, then maybe "B" (bytes)
        (?P<binary>[kKmMgGtT]i)(?:[bB]|bytes?)?(?![A-Za-z])      # KiB, MiB, GiB, TiB: powers of 1024
      | (?P<suffix>[kKmMgGtT])(?:[bB]|bytes?)?(?![A-Za-z])   # k, K, M, G, T, KB, MB, GB: powers of 1000
      | (?P<billion>[bB])(?![A-Za-z])                       # 7B: billion
      | (?P<cjk>百万|千万|十亿|[千万亿])
    )?
    (?:\s*(?P<unit>[A-Za-z]{2,}[A-Za-z/]*(?:\s+[A-Za-z][A-Za-z/]*)? | [\u4e00-\u9fff]+))?   # params, entries, 个参数
""", re.VERBOSE)
_MAGNITUDE_WORD = re.compile(r"(?i)^(?:kilo|mega|giga|tera|kibi|mebi|gibi|tebi|thousand|million|billion|trillion)|^[千万亿]")
_TRAILING_UNIT = re.compile(r"\s*(?:[A-Za-z]{2,}[A-Za-z/]*|[\u4e00-\u9fff]+)$")


@dataclass(frozen=True)
class NumberReading:
    """How a typed number was read: ``typed`` is the input without its unit word."""

    value: float
    typed: str


def read_number(text: str, units: Iterable[str] = ()) -> NumberReading:
    """A number as people type it: 1e6, 1_000_000, 1,000,000, 1M, 1.5k, 2G, 2B (billion), -3,
    2^30, 4096*2; K/M/G/T are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024 (KB, MB, GB: 1000);
    a trailing unit word (the question's own, or any: ``1050624 params``, ``36 entries``) is
    ignored. Raises InvalidAnswer when it is not a number."""
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
        multiplier = match["binary"] or match["suffix"] or match["billion"] or match["cjk"]
        if multiplier:
            value *= _SUFFIXES[multiplier.lower()]
        if match["unit"] and _MAGNITUDE_WORD.search(match["unit"]):
            raise InvalidAnswer(f"Write '{match['unit']}' as a letter: 2G (10^9), 2GiB (2^30), 3M, 1.5k.",
                                f"请把“{match['unit']}”写成字母或数字：2G（10^9）、2GiB（2^30）、3M、1.5k、1万。")
        typed = cleaned[: match.start("unit")].strip() if match["unit"] else cleaned
        return NumberReading(-value if match["sign"] == "-" else value, typed)
    for expression in dict.fromkeys((cleaned, _TRAILING_UNIT.sub("", cleaned))):
        if (expression and len(expression) <= 200 and re.search(r"\d", expression)
                and re.fullmatch(r"[\d\s.eE+\-*/^()_a-z0-9,]+", expression)):
            try:
                value = evaluate(expression.replace("^", "**").replace("_", ""), {})
                if isinstance(value, (int, float)) and math.isfinite(value):
                    return NumberReading(float(value), expression.strip())
            except (FormulaError, OverflowError):
                pass
    raise InvalidAnswer("Type a number: 12288, 1.5e6, 1_000_000, 1,000, 1M, 1.5k, 2G, 2GiB or 2^30.",
                        "请输入一个数：12288、1.5e6、1_000_000、1,000、1M、1.5k、2G、2GiB、2^30 或 1万。")


def parse_number(text: str, units: Iterable[str] = ()) -> float:
    """The value of a typed number (see read_number)."""
    return read_number(text, units).value


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


def _units(question: Question) -> tuple[str, ...]:
    return (question.unit.en, question.unit.zh) if question.unit else ()


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
        return parse_number(text, _units(question))
    if kind == "card":
        return parse_rating(text)
    raise ValueError(f"unknown question kind {kind!r}")


def grade(question: Question, value) -> bool:
    """Whether a parsed answer is right (a card: whether the self-rating is a pass)."""
    kind = question.answer_kind
    if kind == "multi":
        return tuple(sorted(set(value))) == tuple(question.answer)
    if kind == "numeric":
        return close_enough(float(value), float(question.answer), numeric_tolerance(question))
    if kind == "card":
        return scheduling.is_pass(value)
    return value == question.answer


# ---------------------------------------------------------------------------------------
# Showing the right answer


def format_percent(share: float) -> str:
    """0.01 -> 1% · 0.001 -> 0.1% · 0.025 -> 2.5%"""
    return f"{share * 100:.3g}%"


def format_number(value: float) -> str:
    """12,288 · 1,073,741,824 (≈ 1.07e9) · 62.8319 · -1.25"""
    if float(value).is_integer() and abs(value) < 1e18:
        whole = f"{int(value):,}"
        return whole + (f" (≈ {value:.3g})" if abs(value) >= 1e6 else "")
    return f"{value:.6g}"


def format_compact(value: float, digits: int = 10) -> str:
    """A number in a few characters: 36 · 98,000 · 0.5 · 3.44e10 · 1.0506e6 (``digits``
    significant digits at most, trailing zeros dropped; 1e6 and above in e-notation)."""
    value = float(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}e{int(exponent)}"
    return f"{value:,.{digits}g}"


def number_feedback(question: Question, reading: NumberReading) -> dict:
    """What to echo after a wrong numeric answer: how the input was read and the answer, as
    ``{"typed": "34.4G", "read": "3.44e10", "answer": "3.436e10", "tolerance": 0.01, "unit": Text}``
    (tolerance 0: the answer is exact, and shown in full; unit: the question's, or None)."""
    tolerance = numeric_tolerance(question)
    answer = float(question.answer)
    shown = format_compact(answer, 4) if tolerance else (
        f"{int(answer):,}" if answer.is_integer() and abs(answer) < 1e18 else f"{answer:.10g}")
    return {"typed": reading.typed, "read": format_compact(reading.value), "answer": shown, "tolerance": tolerance,
            "unit": question.unit}


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
        tolerance = numeric_tolerance(question)
        if tolerance:
            text += (f"（误差 {format_percent(tolerance)} 以内算对）" if lang == "zh"
                     else f" (within {format_percent(tolerance)} counts)")
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
    reading: NumberReading | None = None   # numeric: how the input was read
    missing: tuple[str, ...] = ()          # multi, wrong: the right letters not given
    extra: tuple[str, ...] = ()            # multi, wrong: the letters given that are wrong


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
    due_today: int             # questions still due today, after this session
    next_due: datetime | None  # the earliest due time of a question not due today
    missed: tuple[Question, ...] = ()   # answered wrong (a card: rated Again), in the order asked

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
    leeches: bool = False       # a session of leeches (`quiz --leeches`)

    def answer(self, question: Question, text: str) -> AnswerResult:
        """Grade and keep an answer to a question that is not a card."""
        if question.kind == "card":
            raise ValueError("a card is answered with rate()")
        given = text.strip()
        if given.lower() in DONT_KNOW:
            return self._keep(question, given, False, scheduling.AGAIN, dont_know=True)
        details: dict = {}
        if question.answer_kind == "numeric":
            details["reading"] = read_number(given, _units(question))
            value = details["reading"].value
        else:
            value = parse_answer(question, given)
        correct = grade(question, value)
        if question.answer_kind == "multi" and not correct:
            details["missing"] = tuple(sorted(set(question.answer) - set(value)))
            details["extra"] = tuple(sorted(set(value) - set(question.answer)))
        return self._keep(question, given, correct, scheduling.rating_for(correct), **details)

    def rate(self, question: Question, rating_text: str, given: str = "") -> AnswerResult:
        """Keep a card's self-rating (``given``: what the learner wrote before seeing the model answer)."""
        rating = parse_rating(rating_text)
        return self._keep(question, given.strip(), scheduling.is_pass(rating), rating)

    def _keep(self, question: Question, given: str, correct: bool, rating: int, *, dont_know: bool = False,
              **details) -> AnswerResult:
        at = datetime.now(timezone.utc)
        due: list[float] = []

        def review(card: str | None) -> tuple[str, float]:
            new_card, new_due = scheduling.review(card, question.id, rating, at)
            due.append(new_due)
            return new_card, new_due

        self.store.record_answer(question.id, question.topic, correct=correct, rating=rating, answer=given, review=review)
        result = AnswerResult(question, given, correct, rating, format_answer(question, self.lang),
                              question.explanation.get(self.lang), datetime.fromtimestamp(due[-1], timezone.utc),
                              dont_know, **details)
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
        missed = {r.question.id: r.question for r in self.results if not r.correct}
        return Summary(tuple(rows), len(self.questions), self.ended_early, self.review,
                       sum(d <= cutoff for d in dues.values()),
                       datetime.fromtimestamp(min(later), timezone.utc) if later else None,
                       tuple(missed.values()))


class QuitQuiz(Exception):
    """The learner typed q, quit or exit: the quiz ends as on Ctrl-C."""


def _line(read, question: Question) -> str:
    line = read(question)
    if line.strip().lower() in QUIT_WORDS:
        raise QuitQuiz
    return line


def run_quiz(quiz: Quiz, ui: QuizUI) -> Summary:
    """Ask every question through ``ui``, re-asking on input that is not an answer. Ctrl-C,
    the end of input, or q/quit/exit at any prompt ends the session cleanly; answers already
    given are kept."""
    total = len(quiz.questions)
    try:
        for number, question in enumerate(quiz.questions, start=1):
            ui.question(question, number, total)
            if question.kind == "card":
                given = _line(ui.read_answer, question)
                ui.reveal(question)
                while True:
                    try:
                        result = quiz.rate(question, _line(ui.read_rating, question), given)
                        break
                    except InvalidAnswer as problem:
                        ui.invalid(question, problem.text(quiz.lang))
            else:
                while True:
                    try:
                        result = quiz.answer(question, _line(ui.read_answer, question))
                        break
                    except InvalidAnswer as problem:
                        ui.invalid(question, problem.text(quiz.lang))
            ui.result(result)
    except (EOFError, KeyboardInterrupt, QuitQuiz):
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
                raise DrillError(f"no quiz topic named '{name}'. Try one of: {', '.join(bank.topics)}.",
                                 zh=f"没有名为 '{name}' 的测验主题。可选：{'、'.join(bank.topics)}。")
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


def missed_counts(store: Store) -> dict[str, int]:
    """How many times each question was answered wrong (a card: rated Again), ever."""
    missed: dict[str, int] = {}
    for answer in store.answers():
        if not answer["correct"]:
            missed[answer["question"]] = missed.get(answer["question"], 0) + 1
    return missed


def select_leeches(bank: Bank, store: Store, *, topics: Iterable[str] | None = None,
                   count: int | None = None) -> list[Question]:
    """The leeches: questions missed LEECH_MISSES (4) times or more, most missed first."""
    missed = missed_counts(store)
    pool = [q for q in bank.in_topics(tuple(topics or ())) if missed.get(q.id, 0) >= LEECH_MISSES]
    pool.sort(key=lambda q: (-missed[q.id], q.id))
    return pool if count is None else pool[:count]


DEFAULT_COUNT = 10


def start_quiz(store: Store, *, topics: Iterable[str] | None = None, count: int | None = None,
               review: bool = False, seed: int | None = None, lang: str | None = None,
               bank: Bank | None = None, leeches: bool = False) -> Quiz:
    """Load the bank and pick the session's questions: ``count`` of them (default 10), or with
    ``review`` every question due today and with ``leeches`` every leech (``count``, when
    given, caps those at the most overdue / most missed)."""
    if count is not None and count < 1:
        raise DrillError(f"-n must be 1 or more, got {count}. Leave it out for 10 questions "
                         "(with --review: every question due).",
                         zh=f"-n 必须是 1 或更大，而不是 {count}。不写则出 10 道题（加 --review 时：所有到期的题）。")
    if review and leeches:
        raise DrillError("--review and --leeches are two different quizzes: pick one.",
                         zh="--review 和 --leeches 是两种不同的测验：请只选一个。")
    if lang is not None and lang not in LANGS:
        raise DrillError(f"--lang must be one of {', '.join(LANGS)}, got '{lang}'.",
                         zh=f"--lang 必须是 {', '.join(LANGS)} 之一，而不是 '{lang}'。")
    bank = bank or load_bank()
    chosen = resolve_topics(bank, topics)
    if leeches:
        questions = select_leeches(bank, store, topics=chosen, count=count)
    else:
        if count is None:
            count = len(bank.questions) if review else DEFAULT_COUNT
        questions = select_questions(bank, store, topics=chosen, count=count, seed=seed, review=review)
    return Quiz(store, bank, questions, lang or default_lang(), review, leeches=leeches)


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
