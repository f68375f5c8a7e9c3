"""The question bank: one TOML file per topic in ``attn_drill/questions/``, loaded into frozen
dataclasses and checked against the schema of ``docs/question-bank.md`` on load.

Every problem names the file, the question id and the field, and ends in what to do.
:func:`load_bank` raises the first one as a ContentError; :func:`review_bank` lists them
all for ``attn-drill validate``, with the rules on numbers (:func:`number_problems`) and, as
warnings, the form statistics (:func:`form_report`) and glossary drift. :func:`evaluate` is the
safe formula evaluator that both the schema check and the numeric answers use.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from attn_drill import content
from attn_drill.i18n import QUIZ_TOPICS
from attn_drill.errors import ContentError

FORMAT_VERSION = 1
QUESTIONS_DIR = content.QUESTIONS_DIR
MISTAKES_FILE = "mistakes.toml"   # mistake key -> concept tags; not a topic

TOPICS = QUIZ_TOPICS  # the documented topics, in teaching order (file stems)
KINDS = ("single", "multi", "bool", "numeric", "code", "card")
TAGS = frozenset("""
    qkv-projection scale softmax-dim weighted-sum permutation-equivariance head-split
    output-projection cross-attention sinusoidal learned-positions rope alibi relative-positions
    mask-polarity padding-mask causal-mask causal-alignment fully-masked-rows numerical-stability
    leakage kv-cache gqa-mqa flash-attention complexity sliding-window layernorm residual ffn
    dropout fresh-layers backward
    context-extension mla paged-attention continuous-batching linear-attention attention-sinks
    sparse-attention document-packing speculative-decoding logit-stability kv-compression
    normalization flops softmax-alternatives length-scaling
""".split())
LANGS = ("en", "zh")

COMMON_FIELDS = ("id", "kind", "difficulty", "tags", "prompt", "explanation")
KIND_FIELDS = {   # required beyond COMMON_FIELDS
    "single": ("choices", "answer"),
    "multi": ("choices", "answer"),
    "bool": ("answer",),
    "numeric": ("params", "formula", "tolerance", "answer"),
    "code": ("code", "select", "choices", "answer"),
    "card": ("model_answer",),
}
OPTIONAL_FIELDS = {"numeric": ("unit",)}
CHOICE_COUNTS = {"single": (2, 6), "multi": (3, 6)}
ID_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


# ---------------------------------------------------------------------------------------
# The data


@dataclass(frozen=True)
class Text:
    """A text in both languages of the bank."""

    en: str
    zh: str

    def get(self, lang: str) -> str:
        """The text in ``lang`` ("en" or "zh"), falling back to English."""
        return self.zh if lang == "zh" and self.zh else self.en


@dataclass(frozen=True)
class Question:
    """One question of the bank (see docs/question-bank.md for what each field means)."""

    id: str
    topic: str
    kind: str                      # single | multi | bool | numeric | code | card
    difficulty: int                # 1 easy .. 3 hard
    tags: tuple[str, ...]
    prompt: Text
    explanation: Text
    choices: tuple[Text, ...] = ()
    answer: str | tuple[str, ...] | bool | int | float | None = None   # multi: sorted letters
    model_answer: Text | None = None
    unit: Text | None = None
    tolerance: float | None = None  # relative; 0 means exact
    params: Mapping[str, int | float] = field(default_factory=dict, hash=False)
    formula: str | None = None
    code: str | None = None
    select: str | None = None       # code questions: "single" or "multi"
    source: str = ""                # the file it came from

    @property
    def answer_kind(self) -> str:
        """How the answer is given: a code question is answered as its ``select`` kind."""
        return self.select if self.kind == "code" and self.select else self.kind

    def letters(self) -> str:
        """The choice letters, "abcd" for four choices."""
        return "abcdefghijklmnopqrstuvwxyz"[: len(self.choices)]


@dataclass(frozen=True)
class Bank:
    questions: tuple[Question, ...]
    mistakes: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)  # key -> tags

    @property
    def topics(self) -> tuple[str, ...]:
        """Topics present, the documented ones in teaching order first."""
        present = {q.topic for q in self.questions}
        return tuple(t for t in TOPICS if t in present) + tuple(sorted(present - set(TOPICS)))

    def by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}

    def in_topics(self, topics: tuple[str, ...] | list[str] | None) -> list[Question]:
        return [q for q in self.questions if not topics or q.topic in topics]

    def tagged(self, tags) -> list[Question]:
        wanted = set(tags)
        return [q for q in self.questions if wanted.intersection(q.tags)]

    def concepts_for(self, mistakes) -> list[str]:
        """The concept tags that the named mistakes (keys from the hidden checks) point to."""
        found: list[str] = []
        for key in mistakes:
            for tag in self.mistakes.get(key, ()):
                if tag not in found:
                    found.append(tag)
        return found


# ---------------------------------------------------------------------------------------
# The safe formula evaluator


class FormulaError(ValueError):
    """A formula that is not plain arithmetic over its params, or cannot be computed."""


FUNCTIONS = {"sqrt": math.sqrt, "log2": math.log2, "ceil": math.ceil, "floor": math.floor, "min": min, "max": max}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
MAX_FORMULA_CHARS = 1000
MAX_EXPONENT = 4096


def evaluate(formula: str, params: Mapping[str, int | float] | None = None) -> int | float:
    """Compute ``formula``: numbers, the names in ``params``, ``+ - * / // **``, unary minus,
    parentheses and sqrt/log2/ceil/floor/min/max. Anything else raises FormulaError."""
    params = params or {}
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError("the formula is empty")
    if len(formula) > MAX_FORMULA_CHARS:
        raise FormulaError(f"the formula is longer than {MAX_FORMULA_CHARS} characters")
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"it is not an arithmetic expression ({exc.msg})") from None
    try:
        return _eval(tree.body, params)
    except FormulaError:
        raise
    except ZeroDivisionError:
        raise FormulaError("it divides by zero") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise FormulaError(f"it cannot be computed ({exc})") from None
    except RecursionError:
        raise FormulaError("it is nested too deeply") from None


def _eval(node: ast.AST, params: Mapping[str, int | float]) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.Name):
        if node.id in params:
            return params[node.id]
        raise FormulaError(f"'{node.id}' is not one of the params ({', '.join(params) or 'none'})")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, params)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, params), _eval(node.right, params)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise FormulaError(f"the exponent {right} is too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex):
            raise FormulaError("it gives a complex number")
        return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if node.keywords or not node.args or any(isinstance(a, ast.Starred) for a in node.args):
            raise FormulaError(f"call {node.func.id}() with plain arguments")
        args = [_eval(arg, params) for arg in node.args]
        if node.func.id in ("sqrt", "log2", "ceil", "floor") and len(args) != 1:
            raise FormulaError(f"{node.func.id}() takes one argument")
        return FUNCTIONS[node.func.id](*args)
    what = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
    raise FormulaError(f"'{what}' is not allowed: use numbers, the params, + - * / // ** ( ) "
                       f"and {', '.join(FUNCTIONS)}")


RELATIVE_ABOVE = 10_000          # numeric answers above this are graded within a relative tolerance...
DEFAULT_TOLERANCE = 0.01         # ...of 1% when the question sets 0 and its prompt does not ask for an exact count
EXACT_WORDS = {"en": re.compile(r"\bexact(?:ly)?\b", re.IGNORECASE), "zh": re.compile("精确")}


def says_exact(text: "Text", lang: str = "en") -> bool:
    """Whether a prompt asks for an exact count ("exact" in English, 精确 in Chinese)."""
    return bool(EXACT_WORDS[lang].search(text.zh if lang == "zh" else text.en))


def numeric_tolerance(question: "Question") -> float:
    """The relative tolerance a numeric answer is graded with: the question's own, except that
    an answer above 10,000 with tolerance 0 takes 1% unless the prompt says "exact" (`validate`
    reports such a question as a problem; a learner is not failed for its slip)."""
    tolerance = question.tolerance or 0.0
    if (tolerance == 0 and _is_number(question.answer) and abs(question.answer) > RELATIVE_ABOVE
            and not says_exact(question.prompt, "en")):
        return DEFAULT_TOLERANCE
    return tolerance


def close_enough(value: float, expected: float, tolerance: float) -> bool:
    """``value`` within the relative ``tolerance`` of ``expected``; 0 means exact (up to float noise)."""
    if tolerance <= 0:
        return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)
    return abs(value - expected) <= tolerance * abs(expected) + 1e-12


# ---------------------------------------------------------------------------------------
# Reading and checking the files


@dataclass(frozen=True)
class Scan:
    """Everything read from the bank's files: the good questions, the problems, and a census
    of every entry (good or not) for `validate`'s counts."""

    questions: tuple[Question, ...]
    problems: tuple[str, ...]
    entries: tuple[tuple[str, str, bool], ...]   # (topic, kind, has every Chinese text)
    mistakes: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)


class _Problems(list):
    def add(self, file: str, qid: str, fieldname: str, message: str) -> None:
        self.append(f"{file}: {qid}: field '{fieldname}': {message}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(raw, where: tuple[str, str, str], problems: _Problems, *, required: bool = True) -> tuple[Text | None, bool]:
    """Parse an {en, zh} table; returns the Text (None when unusable) and whether zh is there."""
    file, qid, name = where
    if raw is None:   # reported as a missing field, not as missing Chinese
        if required:
            problems.add(file, qid, name, f"missing. Add {name}.en and {name}.zh.")
        return None, True
    if not isinstance(raw, dict):
        problems.add(file, qid, name, f"must be a table with 'en' and 'zh' texts, not {type(raw).__name__}.")
        return None, False
    unknown = sorted(set(raw) - set(LANGS))
    if unknown:
        problems.add(file, qid, name, f"unknown languages {unknown}; use only 'en' and 'zh'.")
    has_zh = isinstance(raw.get("zh"), str) and bool(raw["zh"].strip())
    for lang in LANGS:
        value = raw.get(lang)
        if not isinstance(value, str) or not value.strip():
            problems.add(file, qid, f"{name}.{lang}", "missing or empty. Write the "
                         + ("English" if lang == "en" else "Chinese") + " text.")
    en = raw.get("en") if isinstance(raw.get("en"), str) else ""
    zh = raw.get("zh") if isinstance(raw.get("zh"), str) else ""
    return (Text(en.strip(), zh.strip()) if en.strip() else None), has_zh


def _letters_answer(raw, count: int, select: str, where: tuple[str, str], problems: _Problems):
    file, qid = where
    letters = "abcdefghijklmnopqrstuvwxyz"[:count]
    span = f"a-{letters[-1]}" if letters else "none"
    if select == "single":
        if not isinstance(raw, str) or len(raw) != 1 or raw not in letters:
            problems.add(file, qid, "answer", f"{raw!r} is not one of the {count} choices ({span}). "
                         'Give one lowercase letter, a = the first choice: answer = "b".')
            return None
        return raw
    if (not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(x, str) for x in raw)
            or len(set(raw)) != len(raw)):
        problems.add(file, qid, "answer", f"{raw!r}: a multi answer is a list of two or more different "
                     'letters: answer = ["a", "c"].')
        return None
    outside = [x for x in raw if x not in letters]
    if outside:
        problems.add(file, qid, "answer", f"{outside} not among the {count} choices ({span}).")
        return None
    return tuple(sorted(raw))


def _check_question(raw: dict, topic: str, file: str, problems: _Problems) -> tuple[Question | None, str, bool]:
    """Check one [[questions]] entry; returns the Question (None when broken), its kind and
    whether every Chinese text is present."""
    before = len(problems)
    qid = raw.get("id") if isinstance(raw.get("id"), str) else "?"
    where = (file, qid)
    if not isinstance(raw.get("id"), str) or not ID_PATTERN.fullmatch(raw["id"]):
        problems.add(file, qid, "id", f"{raw.get('id')!r} is not a valid id: use lowercase letters, digits "
                     'and dashes, e.g. "mask-03".')
    kind = raw.get("kind")
    if kind not in KINDS:
        problems.add(file, qid, "kind", f"{kind!r} is not one of {', '.join(KINDS)}.")
        return None, str(kind), False
    allowed = set(COMMON_FIELDS) | set(KIND_FIELDS[kind]) | set(OPTIONAL_FIELDS.get(kind, ()))
    for name in COMMON_FIELDS + KIND_FIELDS[kind]:
        if name not in raw and name not in ("prompt", "explanation", "model_answer"):   # texts: below
            problems.add(file, qid, name, f"missing; a {kind} question needs "
                         + ", ".join(COMMON_FIELDS + KIND_FIELDS[kind]) + ".")
    for name in sorted(set(raw) - allowed):
        hint = " (a card has no answer: the learner rates themself)" if kind == "card" and name == "answer" else ""
        problems.add(file, qid, name, f"not part of a {kind} question{hint}. Remove it or fix its name.")

    difficulty = raw.get("difficulty")
    if "difficulty" in raw and (isinstance(difficulty, bool) or difficulty not in (1, 2, 3)):
        problems.add(file, qid, "difficulty", f"{difficulty!r}: use 1 (easy), 2 (medium) or 3 (hard).")
    tags = raw.get("tags")
    if "tags" in raw:
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
            problems.add(file, qid, "tags", "must be a non-empty list of concept tags.")
            tags = []
        else:
            unknown = [t for t in tags if t not in TAGS]
            if unknown:
                problems.add(file, qid, "tags", f"{unknown} not in the tag list of docs/question-bank.md.")
            if len(set(tags)) != len(tags):
                problems.add(file, qid, "tags", "a tag is repeated.")

    zh_ok = True
    prompt, ok = _text(raw.get("prompt"), (file, qid, "prompt"), problems)
    zh_ok &= ok
    explanation, ok = _text(raw.get("explanation"), (file, qid, "explanation"), problems)
    zh_ok &= ok
    model_answer = unit = None
    if kind == "card" or "model_answer" in raw:
        model_answer, ok = _text(raw.get("model_answer"), (file, qid, "model_answer"), problems)
        zh_ok &= ok
    if "unit" in raw:
        unit, ok = _text(raw.get("unit"), (file, qid, "unit"), problems)
        zh_ok &= ok

    choices: list[Text] = []
    select = kind
    if kind == "code":
        code = raw.get("code")
        if "code" in raw and (not isinstance(code, str) or not code.strip()):
            problems.add(file, qid, "code", "must be a non-empty Python snippet.")
        select = raw.get("select")
        if "select" in raw and select not in ("single", "multi"):
            problems.add(file, qid, "select", f'{select!r}: use "single" or "multi".')
        if select not in ("single", "multi"):
            select = "single"
    if kind in ("single", "multi", "code") and "choices" in raw:
        raw_choices = raw["choices"]
        low, high = CHOICE_COUNTS[select]
        if not isinstance(raw_choices, list):
            problems.add(file, qid, "choices", "must be a list of { en = ..., zh = ... } tables.")
            raw_choices = []
        elif not low <= len(raw_choices) <= high:
            problems.add(file, qid, "choices", f"{len(raw_choices)} choices; a {select} question has {low} to {high}.")
        for i, item in enumerate(raw_choices):
            text, ok = _text(item, (file, qid, f"choices[{i}]"), problems)
            zh_ok &= ok
            choices.append(text or Text("", ""))
        seen = [c.en for c in choices if c.en]
        if len(set(seen)) != len(seen):
            problems.add(file, qid, "choices", "two choices have the same English text.")

    answer = raw.get("answer")
    if kind in ("single", "multi", "code") and "answer" in raw:
        answer = _letters_answer(answer, len(choices), select, where, problems)
    elif kind == "bool" and "answer" in raw and not isinstance(answer, bool):
        problems.add(file, qid, "answer", f"{answer!r}: a bool answer is true or false (no quotes).")

    params = raw.get("params") or {}
    tolerance = raw.get("tolerance")
    formula = raw.get("formula")
    if kind == "numeric":
        if "params" in raw:
            if not isinstance(params, dict):
                problems.add(file, qid, "params", "must be a table of named numbers: params = { d = 512 }.")
                params = {}
            for name, value in params.items():
                if not name.isidentifier() or name in FUNCTIONS:
                    problems.add(file, qid, f"params.{name}", "must be a plain name that is not a function name.")
                if not _is_number(value):
                    problems.add(file, qid, f"params.{name}", f"{value!r} is not a number.")
        if "tolerance" in raw and (not _is_number(tolerance) or not 0 <= tolerance < 1):
            problems.add(file, qid, "tolerance", f"{tolerance!r}: a relative tolerance from 0 (exact) up to, "
                         "not including, 1; e.g. 0.01 for 1%.")
            tolerance = None
        if "answer" in raw and not _is_number(answer):
            problems.add(file, qid, "answer", f"{answer!r}: a numeric answer is a number (no quotes).")
        elif "formula" in raw and isinstance(params, dict) and all(_is_number(v) for v in params.values()):
            try:
                value = evaluate(formula, params)
            except FormulaError as exc:
                problems.add(file, qid, "formula", f"{formula!r}: {exc}.")
            else:
                if "answer" in raw and not close_enough(value, answer, 0):
                    problems.add(file, qid, "answer", f"{answer!r} is not what the formula gives ({value!r}). "
                                 "Fix the answer, the formula or the params.")

    if len(problems) > before or prompt is None or explanation is None:
        return None, kind, zh_ok
    question = Question(
        id=raw["id"], topic=topic, kind=kind, difficulty=difficulty, tags=tuple(tags), prompt=prompt,
        explanation=explanation, choices=tuple(choices), answer=answer, model_answer=model_answer, unit=unit,
        tolerance=float(tolerance) if tolerance is not None else None, params=dict(params),
        formula=formula if kind == "numeric" else None,
        code=raw.get("code") if kind == "code" else None,
        select=select if kind == "code" else None, source=file)
    return question, kind, zh_ok


def _check_file(path: Path, problems: _Problems) -> tuple[list[Question], list[tuple[str, str, bool]], list[str]]:
    file = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(file, "-", "-", f"cannot be read ({exc}).")
        return [], [], []
    except tomllib.TOMLDecodeError as exc:
        problems.add(file, "-", "-", f"is not valid TOML ({exc}). Fix the syntax.")
        return [], [], []
    if data.get("format_version") != FORMAT_VERSION:
        problems.add(file, "-", "format_version", f"must be {FORMAT_VERSION}.")
    topic = path.stem
    if data.get("topic") != topic:
        problems.add(file, "-", "topic", f"{data.get('topic')!r} must equal the file name without .toml ({topic!r}).")
    for name in sorted(set(data) - {"format_version", "topic", "questions"}):
        problems.add(file, "-", name, "not part of a question file. Remove it or fix its name.")
    raw_questions = data.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        problems.add(file, "-", "questions", "no [[questions]] in this file.")
        return [], [], []
    good, census, ids = [], [], []
    for raw in raw_questions:
        if not isinstance(raw, dict):
            problems.add(file, "?", "questions", "each [[questions]] entry must be a table.")
            continue
        question, kind, zh_ok = _check_question(raw, topic, file, problems)
        census.append((topic, kind, zh_ok))
        if isinstance(raw.get("id"), str):
            ids.append(raw["id"])
        if question is not None:
            good.append(question)
    return good, census, ids


MISTAKES_FORMAT_VERSION = 2
MISTAKE_FIELDS = ("key", "says", "tags")


def _check_mistakes(path: Path, problems: _Problems) -> dict[str, tuple[str, ...]]:
    """The table of known mistakes (key, says, tags, and optionally says_zh: the Chinese of
    says, completing "你的输出等于……"), shared with the hidden checks: returns key -> concept tags."""
    optional = ("says_zh",)
    file = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.add(file, "-", "-", f"cannot be read as TOML ({exc}).")
        return {}
    if data.get("format_version") != MISTAKES_FORMAT_VERSION:
        problems.add(file, "-", "format_version", f"must be {MISTAKES_FORMAT_VERSION}.")
    entries = data.get("mistakes")
    if not isinstance(entries, list):
        problems.add(file, "-", "mistakes", 'needs [[mistakes]] entries: key = "no-scale", says = "...", tags = ["scale"].')
        return {}
    mapping = {}
    for entry in entries:
        key = entry.get("key", "?") if isinstance(entry, dict) else "?"
        if not isinstance(entry, dict) or sorted(set(entry) - set(optional)) != sorted(MISTAKE_FIELDS):
            problems.add(file, str(key), "-", f"each [[mistakes]] entry has exactly the fields {', '.join(MISTAKE_FIELDS)} "
                         f"(and optionally {', '.join(optional)}).")
            continue
        if key in mapping:
            problems.add(file, key, "key", "appears twice; keys are unique.")
        if not isinstance(entry["says"], str) or not entry["says"].strip():
            problems.add(file, key, "says", "must complete the sentence 'Your output equals ...'.")
        if "says_zh" in entry and (not isinstance(entry["says_zh"], str) or not entry["says_zh"].strip()):
            problems.add(file, key, "says_zh", "must complete the sentence '你的输出等于……' (or be left out).")
        tags = entry["tags"]
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
            problems.add(file, key, "tags", "must be a non-empty list of concept tags.")
            continue
        unknown = [t for t in tags if t not in TAGS]
        if unknown:
            problems.add(file, key, "tags", f"{unknown} not in the tag list of docs/question-bank.md.")
        mapping[key] = tuple(t for t in tags if t in TAGS)
    return mapping


def scan(directory: Path = QUESTIONS_DIR) -> Scan:
    """Read and check every question file in ``directory`` (and its mistakes.toml)."""
    problems = _Problems()
    questions: list[Question] = []
    census: list[tuple[str, str, bool]] = []
    owners: dict[str, str] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == MISTAKES_FILE:
            continue
        good, entries, ids = _check_file(path, problems)
        census += entries
        for qid in ids:
            if qid in owners:
                problems.add(path.name, qid, "id", f"already used in {owners[qid]}; ids are unique across the bank.")
            else:
                owners[qid] = path.name
        questions += good
    duplicated = {qid for qid, n in Counter(q.id for q in questions).items() if n > 1}
    questions = [q for q in questions if q.id not in duplicated]
    mistakes = {}
    if (directory / MISTAKES_FILE).is_file():
        mistakes = _check_mistakes(directory / MISTAKES_FILE, problems)
    return Scan(tuple(questions), tuple(problems), tuple(census), mistakes)


def _fingerprint(directory: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.glob("*.toml")))


@lru_cache(maxsize=8)
def _load(directory: Path, fingerprint: tuple) -> Bank:
    found = scan(directory)
    if found.problems:
        more = len(found.problems) - 1
        raise ContentError(f"the question bank is not valid: {found.problems[0]}"
                           + (f" ({more} more: run `attn-drill validate`)" if more else ""))
    return Bank(found.questions, found.mistakes)


def load_bank(directory: Path = QUESTIONS_DIR) -> Bank:
    """Read and check the whole bank; raises ContentError naming the file, id and field. The
    built-in bank also takes in the questions of every pack in use (a pack's broken bank, or a
    question id already taken, is left out: `attn-drill validate` reports it)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ContentError(f"the question folder {directory} is missing. Reinstall attn-drill.")
    bank = _load(directory, _fingerprint(directory))
    if directory != QUESTIONS_DIR:
        return bank
    questions, taken = list(bank.questions), {q.id for q in bank.questions}
    for folder in pack_question_dirs():
        try:
            extra = _load(folder, _fingerprint(folder)).questions
        except ContentError:
            continue
        questions += [q for q in extra if q.id not in taken]
        taken |= {q.id for q in extra}
    return Bank(tuple(questions), bank.mistakes)


def pack_question_dirs() -> list[Path]:
    """The ``questions/`` folders of the packs in use."""
    from attn_drill.catalog import pack_folders

    return [folder / "questions" for folder in pack_folders() if (folder / "questions").is_dir()]


MISTAKE_PATTERN = re.compile(r'\bmistake\(\s*"([a-z0-9-]+)"')  # how a check names a mistake


def mistake_keys(checks_dir: Path = content.CHECKS_DIR) -> dict[str, str]:
    """Every mistake key the hidden checks can name, with the file naming it first (read as
    text: the checks import torch)."""
    keys: dict[str, str] = {}
    for path in sorted(Path(checks_dir).glob("*.py")):
        for key in MISTAKE_PATTERN.findall(path.read_text(encoding="utf-8")):
            keys.setdefault(key, path.name)
    return keys


# ---------------------------------------------------------------------------------------
# Numbers and units, and the form of the bank as a whole (docs/question-bank.md)

BYTES_MENTION = {   # a text that talks about bytes...
    "en": re.compile(r"\bbytes?\b|(?<![A-Za-z])[KMGT]i?B(?![A-Za-z])"),
    "zh": re.compile(r"字节|(?<![A-Za-z])[KMGT]i?B(?![A-Za-z])"),
}
BYTES_BASE = re.compile(  # ...says whether K/M/G are powers of 1000 or 1024
    r"(?<![\d,.])1,?0(?:00|24)(?![\d,])|10\^(?:3|6|9|12)\b|2\^(?:10|20|30|40)\b|(?<![A-Za-z])[KMGT]iB(?![A-Za-z])")


def number_problems(question: Question) -> list[str]:
    """The rules on numbers of docs/question-bank.md, for one numeric question: an answer above
    10,000 with tolerance 0 is asked for as an exact count (en "exact", zh 精确), and a prompt
    about bytes says whether K/M/G are powers of 1000 or 1024 (by saying 1000 or 1024, 10^9 or
    2^30, or by using KiB/MiB/GiB/TiB), in both languages."""
    if question.kind != "numeric":
        return []
    where = f"{question.source}: {question.id}: field"
    found = []
    if not question.tolerance and _is_number(question.answer) and abs(question.answer) > RELATIVE_ABOVE:
        for lang, word in (("en", "exact"), ("zh", "精确")):
            if not says_exact(question.prompt, lang):
                found.append(f"{where} 'prompt.{lang}': the answer {question.answer:,} is above {RELATIVE_ABOVE:,} "
                             f"and tolerance is 0, but the prompt does not ask for an exact count. Say \"{word}\" "
                             "in the prompt, or set tolerance = 0.01.")
    for lang in LANGS:
        text = " ".join(t.zh if lang == "zh" else t.en for t in (question.prompt, question.unit) if t is not None)
        if BYTES_MENTION[lang].search(text) and not BYTES_BASE.search(text):
            found.append(f"{where} 'prompt.{lang}': it is about bytes but does not say whether K/M/G are powers "
                         "of 1000 or 1024. Use KiB/MiB/GiB, or say \"1 GB = 10^9 bytes\" / \"1 KB = 1000 bytes\".")
    return found


LONGEST_KEY_MAX = 0.40     # the key is the strictly longest choice in at most 40% of single-answer questions
BOOL_TRUE_RANGE = (0.35, 0.65)
POSITIONS = "abcdef"


def _single_answer(question: Question) -> bool:
    return question.answer_kind == "single" and bool(question.choices) and isinstance(question.answer, str)


def _key_is_longest(question: Question) -> bool:
    key = ord(question.answer) - 97
    lengths = [len(c.en) for c in question.choices]
    return all(lengths[key] > n for i, n in enumerate(lengths) if i != key)


def form_report(questions) -> tuple[dict, list[str]]:
    """The form statistics of a bank, so that no one scores by the form of a question:

    - ``longest_key_share``: among single-answer questions (kind single, and code questions with
      select single), the share whose key is the strictly longest choice (English text, in
      characters); at most 40%. ``longest_key_ids`` lists them.
    - ``key_positions``: how many single-answer keys sit at each letter a..f; every letter that
      some question offers holds at least one key.
    - ``bool_true_share``: the share of bool questions whose answer is true; 35% to 65%.
    - ``multi_key_counts``: multi-answer questions by their number of keys; not all the same.

    Returns the statistics (``validate --json``: ``questions.form``) and a warning for each one
    out of range (warnings do not fail `validate`)."""
    questions = list(questions)
    singles = [q for q in questions if _single_answer(q)]
    longest = [q.id for q in singles if _key_is_longest(q)]
    positions = Counter(q.answer for q in singles)
    bools = [q for q in questions if q.kind == "bool" and isinstance(q.answer, bool)]
    multis = [q for q in questions if q.answer_kind == "multi" and isinstance(q.answer, tuple)]
    key_counts = Counter(len(q.answer) for q in multis)
    form = {
        "single_answer": len(singles),
        "longest_key": len(longest),
        "longest_key_share": round(len(longest) / len(singles), 4) if singles else 0.0,
        "longest_key_ids": longest,
        "key_positions": {letter: positions.get(letter, 0) for letter in POSITIONS},
        "bool": len(bools),
        "bool_true": sum(q.answer for q in bools),
        "bool_true_share": round(sum(q.answer for q in bools) / len(bools), 4) if bools else 0.0,
        "multi": len(multis),
        "multi_key_counts": {str(n): key_counts[n] for n in sorted(key_counts)},
    }
    warnings = []
    if singles and form["longest_key_share"] > LONGEST_KEY_MAX:
        warnings.append(f"form: the key is the longest choice in {form['longest_key_share']:.0%} of single-answer "
                        f"questions ({len(longest)}/{len(singles)}); keep it at most {LONGEST_KEY_MAX:.0%}. Make "
                        "distractors as specific as the key, or the key shorter (the ids: questions.form."
                        "longest_key_ids in `validate --json`).")
    offered = POSITIONS[:max((len(q.choices) for q in singles), default=0)]
    unused = [letter for letter in offered if not positions.get(letter)]
    if unused:
        counts = ", ".join(f"{letter} {positions.get(letter, 0)}" for letter in offered)
        warnings.append(f"form: no single-answer key sits at {', '.join(unused)} ({counts}). Move some keys there.")
    low, high = BOOL_TRUE_RANGE
    if bools and not low <= form["bool_true_share"] <= high:
        warnings.append(f"form: {form['bool_true_share']:.0%} of true/false answers are true ({form['bool_true']}/"
                        f"{len(bools)}); keep it between {low:.0%} and {high:.0%}.")
    if len(multis) >= 2 and len(key_counts) == 1:
        only = next(iter(key_counts))
        warnings.append(f"form: every multiple-answer question has {only} keys ({len(multis)} questions); vary how "
                        "many keys they have.")
    return form, warnings


def glossary_warnings(questions, limit: int = 5) -> list[str]:
    """One warning per forbidden variant of docs/glossary.md found in the Chinese texts."""
    from attn_drill.quiz.glossary import drift

    by_rule: dict = {}
    for found in drift(questions):
        by_rule.setdefault(found.rule, []).append(found)
    warnings = []
    for rule, hits in by_rule.items():
        ids = list(dict.fromkeys(h.where.split()[0] for h in hits))
        shown = ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
        warnings.append(f"glossary: {rule.forbidden} appears {len(hits)} time{'s' if len(hits) > 1 else ''} in Chinese text "
                        f"({shown}); write "
                        f"{rule.use} (docs/glossary.md).")
    return warnings


@dataclass(frozen=True)
class BankReview:
    """What `attn-drill validate` says about a question bank."""

    summary: dict            # the ``questions`` part of ``validate --json``
    problems: list[str]      # each one fails `validate`
    warnings: list[str]      # reported, not failing: the form statistics and the glossary


def bank_problems(directory: Path = QUESTIONS_DIR, *, expected_topics: tuple[str, ...] = TOPICS,
                  checks_dir: Path | None = content.CHECKS_DIR) -> list[str]:
    """Every problem in the bank, for `attn-drill validate` (empty when all is well)."""
    return bank_report(directory, expected_topics=expected_topics, checks_dir=checks_dir)[1]


def bank_report(directory: Path = QUESTIONS_DIR, *, expected_topics: tuple[str, ...] = TOPICS,
                checks_dir: Path | None = content.CHECKS_DIR) -> tuple[dict, list[str]]:
    """The `questions` part of ``validate --json`` and the list of problems (see review_bank)."""
    review = review_bank(directory, expected_topics=expected_topics, checks_dir=checks_dir)
    return review.summary, review.problems


def review_bank(directory: Path = QUESTIONS_DIR, *, expected_topics: tuple[str, ...] = TOPICS,
                checks_dir: Path | None = content.CHECKS_DIR) -> BankReview:
    """Everything `validate` says about the bank. Problems: the schema, the documented topics
    all present, every mistake the hidden checks name mapped to tags that some question
    carries, and the rules on numbers (number_problems). Warnings: the form statistics out of
    range (form_report) and glossary drift in the Chinese text (glossary_warnings). The
    summary holds the counts and, under "form", the form statistics."""
    directory = Path(directory)
    found = scan(directory)
    problems = list(found.problems)
    for topic in expected_topics:
        if not (directory / f"{topic}.toml").is_file():
            problems.append(f"{topic}.toml: -: field '-': no question file for the topic {topic}. "
                            "Write one (see docs/question-bank.md).")
    if checks_dir is not None:
        for key, where in mistake_keys(checks_dir).items():
            if key not in found.mistakes:
                problems.append(f"{MISTAKES_FILE}: {key}: field 'mistakes': the hidden checks in {where} name "
                                f"this mistake but it is not mapped. Add {key} = [concept tags] under [mistakes].")
    tagged = {tag for q in found.questions for tag in q.tags}
    for key, tags in found.mistakes.items():
        for tag in tags:
            if found.questions and tag not in tagged:
                problems.append(f"{MISTAKES_FILE}: {key}: field 'tags': no question is tagged {tag!r}, so this "
                                "mistake brings nothing back. Tag a question with it or map another tag.")
    for question in found.questions:
        problems += number_problems(question)
    form, warnings = form_report(found.questions)
    summary = {
        "total": len(found.entries),
        "by_topic": dict(sorted(Counter(topic for topic, _, _ in found.entries).items())),
        "by_kind": dict(sorted(Counter(kind for _, kind, _ in found.entries).items())),
        "zh_missing": sum(not zh_ok for _, _, zh_ok in found.entries),
        "form": form,
    }
    return BankReview(summary, problems, warnings + glossary_warnings(found.questions))
