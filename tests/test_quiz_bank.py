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
    KINDS, MISTAKES_FILE, QUESTIONS_DIR, TAGS, TOPICS, FormulaError, Question, Text, bank_problems, bank_report,
    evaluate, form_report, load_bank, mistake_keys, number_problems, numeric_tolerance, review_bank, scan,
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


def test_every_mistake_the_checks_name_is_in_the_table_with_questions():
    keys = mistake_keys(CHECKS_DIR)
    assert len(keys) >= 20
    grep = set(re.findall(r'mistake\("([a-z0-9-]+)"', "".join(p.read_text() for p in CHECKS_DIR.glob("*.py"))))
    assert grep <= set(keys)   # a plain grep finds no key the scan misses
    table = {entry["key"]: entry for entry in
             tomllib.loads((QUESTIONS_DIR / MISTAKES_FILE).read_text(encoding="utf-8"))["mistakes"]}
    assert sorted(set(keys) - set(table)) == []
    for key, entry in table.items():
        assert entry["tags"] and set(entry["tags"]) <= TAGS, key
        assert entry["says"].strip(), key
        assert isinstance(entry.get("says_zh"), str) and re.search(r"[\u4e00-\u9fff]", entry["says_zh"]), \
            f"{key}: every built-in mistake has says_zh, completing '你的输出等于……' (--lang zh)"
        carrying = [raw["id"] for _, raw in RAW if set(entry["tags"]) & set(raw["tags"])]
        assert len(carrying) >= 2, f"{key}: fewer than two questions carry {entry['tags']}"
    assert table["no-scale"]["tags"] == ["scale"] and table["softmax-dim"]["tags"] == ["softmax-dim"]
    assert table["mask-inverted"]["tags"] == ["mask-polarity"]
    assert set(table["causal-top-left"]["tags"]) == {"causal-alignment", "kv-cache"}


def test_validate_fills_the_questions_part():
    report = ValidationReport()
    validate_questions(report)
    questions = report.to_dict()["questions"]
    assert set(questions) == {"total", "by_topic", "by_kind", "zh_missing", "form"}
    assert set(questions["form"]) >= {"longest_key_share", "key_positions", "bool_true_share", "multi_key_counts"}
    assert isinstance(report.to_dict()["warnings"], list)
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
    counts = {key: value for key, value in summary.items() if key != "form"}
    assert counts == {"total": 6, "by_topic": {"masking": 6}, "by_kind": {k: 1 for k in sorted(KINDS)}, "zh_missing": 2}
    assert len(problems) == 4
    assert any("inference.toml" in p and "no question file" in p for p in problems)


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    folder = bank_dir(tmp_path, 'format_version = 1\ntopic = "masking"\n[[questions]\n')
    assert "not valid TOML" in bank_problems(folder, expected_topics=(), checks_dir=None)[0]
    with pytest.raises(ContentError):
        load_bank(folder)


def test_mistake_file_and_unmapped_keys(tmp_path):
    folder = bank_dir(tmp_path)
    (folder / MISTAKES_FILE).write_text(
        'format_version = 2\n'
        '[[mistakes]]\nkey = "no-scale"\nsays = "attention without the scale"\ntags = ["scale"]\n'
        '[[mistakes]]\nkey = "bad"\nsays = "x"\ntags = ["nope"]\n'
        '[[mistakes]]\nkey = "short"\ntags = ["scale"]\n')
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "ex01_x.py").write_text('A = mistake("no-scale")\nB = mistake(\n    "other-key")\n')
    assert mistake_keys(checks) == {"no-scale": "ex01_x.py", "other-key": "ex01_x.py"}
    problems = bank_problems(folder, expected_topics=(), checks_dir=checks)
    assert any("mistakes.toml: bad: field 'tags'" in p for p in problems)
    assert any("mistakes.toml: short" in p and "exactly the fields" in p for p in problems)
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


# ---------------------------------------------------------------- numbers and form: docs/question-bank.md

def test_the_documented_tags_are_the_tags():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "question-bank.md").read_text(encoding="utf-8")
    section = doc.split("## Concept tags", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z0-9-]+)`", section.split("\n\n", 2)[2]))
    assert listed == TAGS
    assert {"context-extension", "mla", "paged-attention", "speculative-decoding", "length-scaling"} <= TAGS


def numeric(qid="n-1", answer=36, tolerance=0.0, en="How many?", zh="多少？", unit=None) -> Question:
    return Question(id=qid, topic="masking", kind="numeric", difficulty=1, tags=("scale",), prompt=Text(en, zh),
                    explanation=Text("Because.", "因为。"), answer=answer, tolerance=tolerance, params={},
                    formula=str(answer), unit=unit, source="masking.toml")


def test_an_answer_above_10000_with_tolerance_0_must_be_asked_for_exactly():
    assert number_problems(numeric(answer=36)) == []
    assert number_problems(numeric(answer=10_000)) == []
    assert number_problems(numeric(answer=12_288, tolerance=0.01)) == []
    found = number_problems(numeric(answer=12_288))
    assert [p.split(": field ")[1].split(":")[0] for p in found] == ["'prompt.en'", "'prompt.zh'"]
    assert found[0].startswith("masking.toml: n-1: field 'prompt.en'") and '"exact"' in found[0]
    assert '"精确"' in found[1]
    asked = numeric(answer=12_288, en="How many, exactly?", zh="精确地说有多少？")
    assert number_problems(asked) == [] and numeric_tolerance(asked) == 0
    assert numeric_tolerance(numeric(answer=12_288)) == 0.01       # a learner is not failed for the slip
    only_en = numeric(answer=12_288, en="The exact count?")
    assert [p.split(": field ")[1][:11] for p in number_problems(only_en)] == ["'prompt.zh'"]


@pytest.mark.parametrize("en, zh, unit, bad", [
    ("How many bytes does it take?", "占多少字节？", None, ["en", "zh"]),
    ("How many GB does it take?", "占多少 GB？", None, ["en", "zh"]),
    ("At 3200 GB/s, how many tokens per second?", "显存带宽 3200 GB/s 时每秒多少 token？", None, ["en", "zh"]),
    ("How big is it?", "有多大？", Text("MB", "MB"), ["en", "zh"]),
    ("How many GiB does it take?", "占多少 GiB？", None, []),
    ("How big is it?", "有多大？", Text("MiB", "MiB"), []),
    ("How many GB (1 GB = 10^9 bytes)?", "多少 GB（1 GB = 10^9 字节）？", None, []),
    ("How many KB, with 1 KB = 1000 bytes?", "多少 KB（1 KB = 1000 字节）？", None, []),
    ("How many KB (1 KB = 1024 bytes)?", "多少 KB？", None, ["zh"]),
    ("How many tokens fit in 80 layers?", "80 层能放多少 token？", None, []),
])
def test_a_prompt_about_bytes_says_whether_k_m_g_are_1000_or_1024(en, zh, unit, bad):
    found = number_problems(numeric(en=en, zh=zh, unit=unit))
    assert [p.split("field 'prompt.")[1][:2] for p in found] == bad
    assert all("1000 or 1024" in p for p in found)


def choice_question(qid, answer, lengths, kind="single") -> Question:
    choices = tuple(Text("x" * n, "选项") for n in lengths)
    extra = {"select": "single", "code": "x = 1"} if kind == "code" else {}
    return Question(id=qid, topic="masking", kind=kind, difficulty=1, tags=("scale",), prompt=Text("?", "？"),
                    explanation=Text(".", "。"), choices=choices, answer=answer, **extra)


def bool_question(qid, answer) -> Question:
    return Question(id=qid, topic="masking", kind="bool", difficulty=1, tags=("scale",), prompt=Text("?", "？"),
                    explanation=Text(".", "。"), answer=answer)


def test_form_statistics_and_their_warnings():
    questions = [
        choice_question("s-1", "a", [9, 5, 5, 5]),          # key strictly longest
        choice_question("s-2", "b", [5, 9, 5, 5]),          # key strictly longest
        choice_question("s-3", "c", [9, 5, 9, 5]),          # tied: not strictly longest
        choice_question("s-4", "a", [3, 5, 5, 5], kind="code"),
        choice_question("m-1", ("a", "b"), [5, 5, 5, 5], kind="multi"),
        choice_question("m-2", ("a", "c"), [5, 5, 5, 5], kind="multi"),
        bool_question("b-1", True), bool_question("b-2", True), bool_question("b-3", True), bool_question("b-4", False),
    ]
    form, warnings = form_report(questions)
    assert form["single_answer"] == 4 and form["longest_key"] == 2 and form["longest_key_share"] == 0.5
    assert form["longest_key_ids"] == ["s-1", "s-2"]
    assert form["key_positions"] == {"a": 2, "b": 1, "c": 1, "d": 0, "e": 0, "f": 0}
    assert form["bool"] == 4 and form["bool_true"] == 3 and form["bool_true_share"] == 0.75
    assert form["multi"] == 2 and form["multi_key_counts"] == {"2": 2}
    assert len(warnings) == 4 and all(w.startswith("form: ") for w in warnings)
    longest, positions, bools, multi = warnings
    assert "50%" in longest and "at most 40%" in longest
    assert "no single-answer key sits at d" in positions      # e, f: no question offers them
    assert "75%" in bools and "35%" in bools and "65%" in bools
    assert "every multiple-answer question has 2 keys" in multi


def test_a_bank_in_range_has_no_form_warnings():
    questions = [choice_question(f"s-{i}", letter, [5, 5, 5, 5]) for i, letter in enumerate("abcd")]
    questions += [choice_question("m-1", ("a", "b"), [5] * 4, "multi"), choice_question("m-2", ("a", "b", "c"), [5] * 4, "multi")]
    questions += [bool_question("b-1", True), bool_question("b-2", False)]
    assert form_report(questions)[1] == []


def test_validate_reports_number_problems_and_form_warnings_without_failing_on_warnings(tmp_path):
    text = GOOD.replace("answer = true", "answer = false")
    review = review_bank(bank_dir(tmp_path, text), expected_topics=(), checks_dir=None)
    assert review.problems == []
    assert review.summary["form"]["bool_true_share"] == 0.0
    assert any(w.startswith("form: 0% of true/false answers are true") for w in review.warnings)
    big = text.replace("params = { L = 8 }", "params = { L = 200 }").replace("answer = 36", "answer = 20100")
    review = review_bank(bank_dir(tmp_path, big), expected_topics=(), checks_dir=None)
    assert [p.split(": field")[0] for p in review.problems] == ["masking.toml: m-numeric"] * 2
    zh = GOOD.replace('prompt.zh = "选一个"', 'prompt.zh = "哪个会泄露信息？"')
    review = review_bank(bank_dir(tmp_path, zh), expected_topics=(), checks_dir=None)
    assert review.problems == [] and any("泄露" in w and "m-single" in w for w in review.warnings)
    report = ValidationReport()
    report.warnings.append("x")
    assert report.to_dict()["warnings"] == ["x"] and set(report.to_dict()) == {"exercises", "questions", "problems",
                                                                              "warnings"}
