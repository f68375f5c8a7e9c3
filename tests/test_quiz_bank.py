"""The question bank: the shipped files pass the schema, every answer key is sound (every
numeric answer recomputed from its formula), every mistake the checks name is mapped; and
the schema check itself catches each kind of broken entry, naming file, id and field."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from attn_drill.errors import ContentError
from attn_drill.quiz.bank import (
    KINDS, MISTAKES_FILE, QUESTIONS_DIR, TAGS, TOPICS, FormulaError, bank_problems, bank_report, evaluate,
    load_bank, mistake_keys, scan,
)
from attn_drill.validation import ValidationReport, validate_questions

CHECKS_DIR = Path(__file__).resolve().parent.parent / "attn_drill" / "checks"


def _raw_questions() -> list[tuple[str, dict]]:
    """Every entry of the shipped files, read without the loader (so a broken file still
    shows up here question by question)."""
    found = []
    for path in sorted(QUESTIONS_DIR.glob("*.toml")):
        if path.name == MISTAKES_FILE:
            continue
        for raw in tomllib.loads(path.read_text(encoding="utf-8")).get("questions", []):
            found.append((path.stem, raw))
    return found


RAW = _raw_questions()
NUMERIC = [raw for _, raw in RAW if raw.get("kind") == "numeric"]
WITH_CHOICES = [raw for _, raw in RAW if raw.get("kind") in ("single", "multi", "code")]


# ---------------------------------------------------------------- the shipped bank

def test_the_shipped_bank_has_no_problems():
    problems = bank_problems()
    assert problems == [], "\n".join(problems)


def test_the_shipped_bank_loads_into_frozen_questions():
    bank = load_bank()
    assert len(bank.questions) == len(RAW)
    question = bank.questions[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        question.answer = "z"
    assert question.prompt.en and question.prompt.zh and question.source.endswith(".toml")


def test_ten_topics_with_enough_questions_of_every_kind():
    by_topic = Counter(topic for topic, _ in RAW)
    assert set(by_topic) == set(TOPICS)
    assert all(n >= 10 for n in by_topic.values()), by_topic
    kinds = Counter(raw["kind"] for _, raw in RAW)
    assert kinds["numeric"] >= 20 and kinds["code"] >= 10 and kinds["card"] >= 10, kinds
    assert set(kinds) == set(KINDS)
    cards = Counter(topic for topic, raw in RAW if raw["kind"] == "card")
    assert set(cards) == set(TOPICS)   # every topic has open interview questions


def test_ids_are_unique_and_tags_known():
    ids = Counter(raw["id"] for _, raw in RAW)
    assert [qid for qid, n in ids.items() if n > 1] == []
    unknown = {(raw["id"], tag) for _, raw in RAW for tag in raw["tags"] if tag not in TAGS}
    assert unknown == set()


@pytest.mark.parametrize("raw", NUMERIC, ids=lambda raw: raw["id"])
def test_numeric_answer_recomputed_from_its_formula(raw):
    expected = evaluate(raw["formula"], raw["params"])
    # and independently of our evaluator: Python itself, with only the documented functions
    names = {"sqrt": math.sqrt, "log2": math.log2, "ceil": math.ceil, "floor": math.floor, "min": min, "max": max}
    direct = eval(compile(raw["formula"], raw["id"], "eval"), {"__builtins__": {}}, {**names, **raw["params"]})
    assert math.isclose(expected, direct, rel_tol=1e-12)
    assert math.isclose(raw["answer"], expected, rel_tol=1e-9), f"{raw['id']}: answer {raw['answer']} != {expected}"
    assert 0 <= raw["tolerance"] < 1


@pytest.mark.parametrize("raw", WITH_CHOICES, ids=lambda raw: raw["id"])
def test_choice_answers_are_among_the_choices(raw):
    letters = "abcdefghijklmnopqrstuvwxyz"[: len(raw["choices"])]
    select = raw.get("select", raw["kind"])
    if select == "single":
        assert isinstance(raw["answer"], str) and raw["answer"] in letters
    else:
        assert isinstance(raw["answer"], list) and len(set(raw["answer"])) == len(raw["answer"]) >= 2
        assert set(raw["answer"]) <= set(letters)
    assert all(choice["en"].strip() and choice["zh"].strip() for choice in raw["choices"])


def test_every_mistake_the_checks_name_is_mapped_to_tags_with_questions():
    keys = mistake_keys(CHECKS_DIR)
    assert len(keys) >= 20
    grep = set(re.findall(r'Mistake\("([a-z0-9-]+)"', "".join(p.read_text() for p in CHECKS_DIR.glob("*.py"))))
    assert grep <= set(keys)   # the brief's grep finds no key the scan misses
    mapping = tomllib.loads((QUESTIONS_DIR / MISTAKES_FILE).read_text(encoding="utf-8"))["mistakes"]
    assert sorted(set(keys) - set(mapping)) == []
    tagged = {tag for _, raw in RAW for tag in raw["tags"]}
    for key, tags in mapping.items():
        assert tags and set(tags) <= TAGS, key
        assert set(tags) <= tagged, f"{key}: no question carries {set(tags) - tagged}"
    assert mapping["no-scale"] == ["scale"] and mapping["softmax-dim"] == ["softmax-dim"]
    assert mapping["mask-inverted"] == ["mask-polarity"] and mapping["heads-split-without-transpose"] == ["head-split"]
    assert set(mapping["causal-top-left"]) == {"causal-alignment", "kv-cache"}


def test_validate_fills_the_questions_part():
    report = ValidationReport()
    validate_questions(report)
    questions = report.to_dict()["questions"]
    assert set(questions) == {"total", "by_topic", "by_kind", "zh_missing"}
    assert questions["total"] == len(RAW) and sum(questions["by_topic"].values()) == len(RAW)
    assert sum(questions["by_kind"].values()) == len(RAW) and questions["zh_missing"] == 0
    assert report.problems == bank_problems()


# ---------------------------------------------------------------- the schema check, on small banks

GOOD = '''format_version = 1
topic = "masking"

[[questions]]
id = "m-single"
kind = "single"
difficulty = 1
tags = ["causal-mask"]
prompt.en = "Pick one"
prompt.zh = "选一个"
choices = [
  { en = "first", zh = "第一" },
  { en = "second", zh = "第二" },
]
answer = "b"
explanation.en = "Because."
explanation.zh = "因为。"

[[questions]]
id = "m-multi"
kind = "multi"
difficulty = 2
tags = ["padding-mask"]
prompt.en = "Pick two"
prompt.zh = "选两个"
choices = [
  { en = "one", zh = "一" },
  { en = "two", zh = "二" },
  { en = "three", zh = "三" },
]
answer = ["a", "c"]
explanation.en = "Because."
explanation.zh = "因为。"

[[questions]]
id = "m-bool"
kind = "bool"
difficulty = 1
tags = ["mask-polarity"]
prompt.en = "True?"
prompt.zh = "对吗？"
answer = true
explanation.en = "Because."
explanation.zh = "因为。"

[[questions]]
id = "m-numeric"
kind = "numeric"
difficulty = 2
tags = ["causal-mask"]
prompt.en = "How many?"
prompt.zh = "多少？"
params = { L = 8 }
formula = "L * (L + 1) // 2"
answer = 36
tolerance = 0
unit.en = "entries"
unit.zh = "个位置"
explanation.en = "Because."
explanation.zh = "因为。"

[[questions]]
id = "m-code"
kind = "code"
difficulty = 3
tags = ["leakage"]
prompt.en = "Which line?"
prompt.zh = "哪一行？"
code = \'\'\'
x = 1
y = 2
\'\'\'
select = "single"
choices = [
  { en = "Line 1", zh = "第 1 行" },
  { en = "Line 2", zh = "第 2 行" },
]
answer = "a"
explanation.en = "Because."
explanation.zh = "因为。"

[[questions]]
id = "m-card"
kind = "card"
difficulty = 2
tags = ["causal-mask"]
prompt.en = "Explain."
prompt.zh = "讲解。"
model_answer.en = "The answer."
model_answer.zh = "答案。"
explanation.en = "Key points."
explanation.zh = "要点。"
'''


def bank_dir(tmp_path, text=GOOD, name="masking.toml") -> Path:
    folder = tmp_path / "questions"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_a_good_small_bank_loads(tmp_path):
    bank = load_bank(bank_dir(tmp_path))
    by_id = bank.by_id()
    assert [q.kind for q in bank.questions] == ["single", "multi", "bool", "numeric", "code", "card"]
    assert by_id["m-multi"].answer == ("a", "c") and by_id["m-bool"].answer is True
    assert by_id["m-numeric"].tolerance == 0 and by_id["m-numeric"].unit.zh == "个位置"
    assert by_id["m-code"].answer_kind == "single" and by_id["m-code"].code.splitlines()[0] == "x = 1"
    assert by_id["m-card"].model_answer.en == "The answer." and by_id["m-card"].answer is None
    assert bank.topics == ("masking",)
    assert bank_problems(bank_dir(tmp_path), expected_topics=(), checks_dir=None) == []


BROKEN = [  # (replace this, with that, the id and field the problem must name)
    ('explanation.en = "Key points."\nexplanation.zh = "要点。"\n', "", "m-card", "explanation"),
    ('prompt.zh = "选一个"\n', "", "m-single", "prompt.zh"),
    ('prompt.zh = "选一个"', 'prompt.zh = ""', "m-single", "prompt.zh"),
    ('answer = "b"', 'answer = "c"', "m-single", "answer"),
    ('answer = "b"', 'answer = "B"', "m-single", "answer"),
    ('answer = ["a", "c"]', 'answer = ["a"]', "m-multi", "answer"),
    ('answer = ["a", "c"]', 'answer = ["a", "d"]', "m-multi", "answer"),
    ("answer = true", 'answer = "true"', "m-bool", "answer"),
    ("tolerance = 0\n", "", "m-numeric", "tolerance"),
    ("tolerance = 0\n", "tolerance = 5\n", "m-numeric", "tolerance"),
    ("answer = 36", "answer = 37", "m-numeric", "answer"),
    ('formula = "L * (L + 1) // 2"', 'formula = "__import__(\'os\').getpid()"', "m-numeric", "formula"),
    ('formula = "L * (L + 1) // 2"', 'formula = "L * M"', "m-numeric", "formula"),
    ("params = { L = 8 }", 'params = { L = "8" }', "m-numeric", "params.L"),
    ('unit.zh = "个位置"', 'unit.cn = "个位置"', "m-numeric", "unit"),
    ('tags = ["padding-mask"]', 'tags = ["padding"]', "m-multi", "tags"),
    ('tags = ["padding-mask"]', "tags = []", "m-multi", "tags"),
    ('model_answer.en = "The answer."\n', 'model_answer.en = "The answer."\nanswer = "a"\n', "m-card", "answer"),
    ('model_answer.zh = "答案。"\n', "", "m-card", "model_answer.zh"),
    ('kind = "bool"', 'kind = "boolean"', "m-bool", "kind"),
    ('select = "single"', 'select = "one"', "m-code", "select"),
    ("difficulty = 3", "difficulty = 5", "m-code", "difficulty"),
    ('  { en = "second", zh = "第二" },\n]\nanswer = "b"', ']\nanswer = "a"', "m-single", "choices"),
    ('  { en = "second", zh = "第二" },', '  { en = "first", zh = "第二" },', "m-single", "choices"),
    ('explanation.en = "Because."\nexplanation.zh = "因为。"\n\n[[questions]]\nid = "m-bool"',
     'explanaton.en = "Because."\nexplanation.zh = "因为。"\n\n[[questions]]\nid = "m-bool"', "m-multi", "explanaton"),
    ('id = "m-bool"', 'id = "M bool!"', "M bool!", "id"),
    ('id = "m-bool"', 'id = "m-single"', "m-single", "id"),
    ('topic = "masking"', 'topic = "mask"', "-", "topic"),
    ("format_version = 1", "format_version = 2", "-", "format_version"),
]


@pytest.mark.parametrize("old, new, qid, fieldname", BROKEN, ids=[f"{b[2]}:{b[3]}" for b in BROKEN])
def test_each_broken_entry_is_named_by_file_id_and_field(tmp_path, old, new, qid, fieldname):
    assert old in GOOD
    folder = bank_dir(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ContentError) as caught:
        load_bank(folder)
    message = str(caught.value)
    assert f"masking.toml: {qid}: field '{fieldname}'" in message, message
    problems = bank_problems(folder, expected_topics=(), checks_dir=None)
    assert any(f"masking.toml: {qid}: field '{fieldname}'" in p for p in problems)


def test_ids_are_unique_across_files(tmp_path):
    folder = bank_dir(tmp_path)
    other = GOOD.replace('topic = "masking"', 'topic = "inference"').replace('id = "m-bool"', 'id = "i-bool"')
    (folder / "inference.toml").write_text(other, encoding="utf-8")
    problems = bank_problems(folder, expected_topics=(), checks_dir=None)
    assert any(p.startswith("masking.toml: m-single: field 'id': already used in inference.toml") for p in problems)
    with pytest.raises(ContentError):
        load_bank(folder)


def test_all_problems_are_listed_and_missing_chinese_counted(tmp_path):
    text = GOOD.replace('prompt.zh = "选一个"\n', "").replace('model_answer.zh = "答案。"\n', "").replace("answer = 36", "answer = 35")
    summary, problems = bank_report(bank_dir(tmp_path, text), expected_topics=("masking", "inference"), checks_dir=None)
    assert summary == {"total": 6, "by_topic": {"masking": 6}, "by_kind": {k: 1 for k in sorted(KINDS)}, "zh_missing": 2}
    assert len(problems) == 4
    assert any("inference.toml" in p and "no question file" in p for p in problems)


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    folder = bank_dir(tmp_path, 'format_version = 1\ntopic = "masking"\n[[questions]\n')
    assert "not valid TOML" in bank_problems(folder, expected_topics=(), checks_dir=None)[0]
    with pytest.raises(ContentError):
        load_bank(folder)


def test_mistake_file_and_unmapped_keys(tmp_path):
    folder = bank_dir(tmp_path)
    (folder / MISTAKES_FILE).write_text('format_version = 1\n[mistakes]\nno-scale = ["scale"]\nbad = ["nope"]\n')
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "ex01_x.py").write_text('A = Mistake("no-scale", "x")\nB = Mistake(\n    "other-key", "y")\n')
    assert mistake_keys(checks) == {"no-scale": "ex01_x.py", "other-key": "ex01_x.py"}
    problems = bank_problems(folder, expected_topics=(), checks_dir=checks)
    assert any("mistakes.toml: bad: field 'tags'" in p for p in problems)
    assert any("mistakes.toml: other-key: field 'mistakes'" in p and "ex01_x.py" in p for p in problems)
    assert any("no-scale" in p and "no question is tagged 'scale'" in p for p in problems)
    assert scan(folder).mistakes["no-scale"] == ("scale",)


def test_the_bank_reloads_when_a_file_changes(tmp_path):
    folder = bank_dir(tmp_path)
    assert len(load_bank(folder).questions) == 6
    path = folder / "masking.toml"
    path.write_text(GOOD.replace("answer = 36", "answer = 99"), encoding="utf-8")
    with pytest.raises(ContentError):
        load_bank(folder)


# ---------------------------------------------------------------- the formula evaluator

@pytest.mark.parametrize("formula, value", [
    ("2 * B * H * L * S * D", 2 * 2 * 3 * 5 * 7 * 11), ("L * (L + 1) // 2", 15), ("2**30", 2**30),
    ("-(2**(-8*1/8)) * 5", -2.5), ("sqrt(64)", 8), ("log2(1024)", 10), ("ceil(7 / 2)", 4), ("floor(7 / 2)", 3),
    ("min(L, S, 3)", 3), ("max(L, S)", 7), ("B * H / 4", 1.5), ("1e3 + 0.5", 1000.5), ("((L))", 5),
])
def test_formulas_evaluate(formula, value):
    assert evaluate(formula, {"B": 2, "H": 3, "L": 5, "S": 7, "D": 11}) == pytest.approx(value)


@pytest.mark.parametrize("formula", [
    "__import__('os').system('true')", "().__class__", "L.real", "[1, 2][0]", "lambda: 1", "abs(-1)",
    "eval('1')", "open('x')", "'abc'", "True + 1", "L if L else 2", "L < 2", "not L", "+L", "L % 2", "L << 2",
    "x", "sqrt(x=4)", "sqrt(1, 2)", "sqrt(*[4])", "[i for i in (1,)]", "2 ** 100000", "1 / 0", "sqrt(-1)",
    "", "1 +", "L; import os", "9" * 1001,
])
def test_anything_else_is_refused(formula):
    with pytest.raises(FormulaError):
        evaluate(formula, {"L": 5})
