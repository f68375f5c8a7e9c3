"""The grading engine on references, starters and independent solutions, and its outputs."""

import json

import pytest

from attn_drill.catalog import find_exercise, load_catalog
from attn_drill.errors import DrillError
from attn_drill.grading import grade

from conftest import FIXTURES

EXERCISES = [ex.id for ex in load_catalog()]


@pytest.mark.parametrize("key", EXERCISES)
def test_reference_passes_and_starter_fails_through_cli(key, cli):
    exercise = find_exercise(key)
    passed = cli("check", key, "--file", exercise.solution_path, "--json")
    assert passed.code == 0, passed.stdout
    assert json.loads(passed.stdout)["passed"] is True
    failed = cli("check", key, "--file", exercise.starter_path, "--json")
    assert failed.code == 1
    assert json.loads(failed.stdout)["passed"] is False


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "correct").glob("ex*.py")))
def test_independent_correct_solutions_pass(name):
    report = grade(find_exercise(name.split("_")[0]), FIXTURES / "correct" / name)
    assert report.passed, [(c.name, c.message) for c in report.checks if not c.passed]


def test_json_matches_the_contract(cli):
    result = cli("check", "ex01", "--file", find_exercise("ex1").starter_path, "--json")
    report = json.loads(result.stdout)
    assert set(report) == {"exercise", "passed", "checks", "device", "duration_s"}
    assert report["exercise"] == "ex1" and report["device"] == "cpu"
    assert isinstance(report["duration_s"], float)
    assert len(report["checks"]) >= 10
    for check in report["checks"]:
        assert set(check) == {"name", "passed", "message"}
        assert isinstance(check["name"], str) and isinstance(check["passed"], bool) and isinstance(check["message"], str)
        assert check["passed"] or check["message"]


def test_gradescope_results_json(cli):
    result = cli("check", "multi_head_attention", "--file", find_exercise("ex2").solution_path, "--format", "gradescope")
    assert result.code == 0
    results = json.loads(result.stdout)
    assert results["score"] == results["max_score"] == len(results["tests"]) > 0
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output"}
        assert test["status"] == "passed"
    assert isinstance(results["execution_time"], float)


def test_known_mistake_is_named(tmp_path):
    source = find_exercise("ex1").solution_path.read_text()
    broken = tmp_path / "mine.py"
    broken.write_text(source.replace("* scale  # (..., L, S)", "  # (..., L, S)"))
    report = grade(find_exercise("ex1"), broken)
    assert "no-scale" in report.mistakes
    assert any("Your output equals attention without the 1/sqrt(d) scale" in c.message for c in report.checks)
    message = next(c.message for c in report.checks if not c.passed)
    assert "largest difference" in message and " at [" in message and "float64" in message


def test_bad_arguments_are_drill_errors(tmp_path):
    exercise = find_exercise("ex1")
    with pytest.raises(DrillError, match="no file"):
        grade(exercise, tmp_path / "missing.py")
    with pytest.raises(DrillError, match="--device"):
        grade(exercise, exercise.solution_path, device="tpu")
    with pytest.raises(DrillError, match="--timeout"):
        grade(exercise, exercise.solution_path, timeout=0)


def test_cuda_without_cuda_is_a_usage_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("check", "ex1", "--file", find_exercise("ex1").solution_path, "--device", "cuda")
    assert result.code == 2
    assert "no CUDA device" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.gpu
def test_checks_run_on_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for key in ("ex1", "ex2"):
        report = grade(find_exercise(key), find_exercise(key).solution_path, device="cuda")
        assert report.device == "cuda" and report.passed, [(c.name, c.message) for c in report.checks if not c.passed]
