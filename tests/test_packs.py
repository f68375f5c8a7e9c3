"""Instructors' packs (issue 11): `new` scaffolds an exercise that `validate` accepts at once,
every command works on a pack, the mutation audit reports killed, equivalent and surviving
mutants, and a broken pack never breaks the built-in catalog."""

import json

import pytest

from attn_drill.catalog import load_catalog, use_packs


@pytest.fixture
def pack(cli, tmp_path):
    folder = tmp_path / "my pack"
    made = cli("new", "ex14_weights", "--pack", folder)
    assert made.code == 0, made.stderr
    yield folder
    use_packs([])


def test_new_writes_the_scaffold_and_validate_accepts_it(cli, pack):
    for part in ("catalog.toml", "solutions/ex14_weights.py", "exercises/ex14_weights.py", "checks/ex14_weights.py"):
        assert (pack / part).is_file(), part
    starter = (pack / "exercises" / "ex14_weights.py").read_text()
    assert "raise NotImplementedError" in starter and '"""The weights of scaled dot-product attention' in starter
    result = cli("validate", "--json", "--pack", pack, "--exercise", "ex14")   # the pack's exercise alone
    report = json.loads(result.stdout)
    assert report["exercises"] == {"ex14": {"reference_passes": True, "starter_fails": True}}
    assert not [p for p in report["problems"] if "ex14" in p or "pack" in p], report["problems"]
    again = cli("new", "ex14_weights", "--pack", pack)
    assert again.code == 2 and "taken" in again.stderr


def test_every_command_works_on_a_pack(cli, pack, tmp_path):
    assert "ex14" in cli("list", "--pack", pack).stdout
    assert "attention_weights" in cli("show", "ex14", "--pack", pack).stdout
    assert "hint 1 of 3" in cli("hint", "ex14", "--pack", pack).stdout
    passed = cli("check", "ex14", "--file", pack / "solutions" / "ex14_weights.py", "--pack", pack, "--json")
    assert passed.code == 0 and json.loads(passed.stdout)["passed"] is True
    assert cli("solution", "ex14", "--pack", pack).code == 0
    assert json.loads(cli("stats", "--json", "--pack", pack).stdout)["exercises"]["ex14"]["status"] == "passed"
    workspace = tmp_path / "ws"
    cli("--pack", pack, "init", workspace)
    assert (workspace / "exercises" / "ex14_weights.py").is_file()
    env = {"ATTN_DRILL_PACKS": str(pack)}   # the environment names packs too
    assert "ex14" in cli("list", env=env).stdout


def test_pack_questions_join_the_quiz(cli, pack):
    questions = pack / "questions"
    questions.mkdir()
    (questions / "my-topic.toml").write_text(
        'format_version = 1\ntopic = "my-topic"\n\n[[questions]]\nid = "pack-01"\nkind = "bool"\ndifficulty = 1\n'
        'tags = ["scale"]\nprompt.en = "Scores are divided by sqrt(d_k)."\nprompt.zh = "分数要除以 sqrt(d_k)。"\n'
        'answer = true\nexplanation.en = "It keeps their variance near 1."\nexplanation.zh = "这让方差保持在 1 附近。"\n')
    quiz = cli("quiz", "--topic", "my-topic", "--pack", pack, input="t\n")
    assert quiz.code == 0 and "sqrt(d_k)" in quiz.stdout


def test_the_mutation_audit_counts_and_a_weak_check_lets_a_mutant_survive(cli, pack):
    result = cli("validate", "--mutants", "--exercise", "ex14", "--pack", pack, "--json")
    counts = json.loads(result.stdout)["mutants"]["ex14"]
    assert result.code == 0 and counts["survived"] == [] and counts["killed"] >= 8
    (pack / "checks" / "ex14_weights.py").write_text(   # a weak check: only the shape is looked at
        "from attn_drill.checks.harness import check, randn\n"
        "from attn_drill.checks.properties import check_defines  # noqa: F401\n\n\n"
        "@check('the weights have the right shape')\n"
        "def check_shape(learner):\n"
        "    q, k = randn(2, 3, 5, 4, seed=1), randn(2, 3, 7, 4, seed=2)\n"
        "    assert learner.call('attention_weights', q, k).shape == (2, 3, 5, 7)\n")
    weak = cli("validate", "--mutants", "--exercise", "ex14", "--pack", pack, "--json")
    survived = json.loads(weak.stdout)["mutants"]["ex14"]["survived"]
    assert weak.code == 1 and any(m["name"].startswith("drop-scale") and "sqrt" in m["diff"] for m in survived)


def test_a_broken_pack_is_reported_and_breaks_nothing(cli, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "catalog.toml").write_text('format_version = 1\n[[exercises]]\nid = "ex1"\n')
    listed = cli("list", "--pack", broken)
    assert listed.code == 0 and "ex13" in listed.stdout
    shadow = tmp_path / "shadow"
    cli("new", "ex15_other", "--pack", shadow)
    catalog = shadow / "catalog.toml"
    catalog.write_text(catalog.read_text().replace('id = "ex15"', 'id = "ex1"'))
    use_packs([shadow])
    try:
        assert [ex.id for ex in load_catalog()].count("ex1") == 1
    finally:
        use_packs([])
    report = json.loads(cli("validate", "--json", "--pack", broken, "--pack", shadow, "--exercise", "ex1").stdout)
    assert any("broken" in p and "catalog.toml" in p for p in report["problems"])
    assert any("already built in" in p for p in report["problems"])
