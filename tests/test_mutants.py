"""Every hidden-check suite fails deliberately broken versions of its reference.

Each ``tests/mutants/exNN.toml`` lists text replacements on the reference solution; the
result is graded through the real engine and must fail, naming the mistake where given. The
grading stops at the first failed check, as the mutation audit's does; a mutant whose mistake
that check does not name is graded again in full, where a later check must name it.
"""

import tomllib
from pathlib import Path

import pytest

from attn_drill.catalog import find_exercise

MUTANTS_DIR = Path(__file__).parent / "mutants"


def _mutants():
    for path in sorted(MUTANTS_DIR.glob("ex*.toml")):
        for mutant in tomllib.loads(path.read_text(encoding="utf-8"))["mutants"]:
            yield pytest.param(path.stem, mutant, id=f"{path.stem}-{mutant['name']}")


def test_every_exercise_has_ten_mutants():
    counts = {}
    for param in _mutants():
        counts[param.values[0]] = counts.get(param.values[0], 0) + 1
    assert counts and all(n >= 10 for n in counts.values()), counts


@pytest.mark.slow
@pytest.mark.parametrize(("exercise_key", "mutant"), list(_mutants()))
def test_mutant_is_caught(exercise_key, mutant, tmp_path, graded):
    exercise = find_exercise(exercise_key)
    source = exercise.solution_path.read_text(encoding="utf-8")
    assert source.count(mutant["old"]) == 1, f"'old' must occur exactly once in {exercise.solution_path.name}"
    broken = tmp_path / exercise.file_name
    broken.write_text(source.replace(mutant["old"], mutant["new"]), encoding="utf-8")

    report = graded(exercise_key, broken, timeout=60, first_failure=True)  # caught by its first failure
    if "mistake" in mutant and mutant["mistake"] not in report.mistakes:
        report = graded(exercise_key, broken, timeout=60)                  # named by a later check

    failed = [c for c in report.checks if not c.passed]
    assert failed, f"the checks passed the broken version: {mutant['name']}"
    assert all(c.message for c in failed)
    if "mistake" in mutant:
        assert mutant["mistake"] in report.mistakes, [c.message for c in failed]
