"""The grading engine on references, starters and independent solutions, and its outputs."""

import json
from pathlib import Path

import pytest

from attn_drill.catalog import find_exercise, load_catalog
from attn_drill.errors import DrillError
from attn_drill.grading import Pool, grade, parse_size

from conftest import FIXTURES

EXERCISES = [ex.id for ex in load_catalog()]


@pytest.mark.parametrize("key", EXERCISES)
def test_reference_passes_and_starter_fails(key, graded):
    exercise = find_exercise(key)
    passed = graded(key, exercise.solution_path)
    assert passed.passed, [(c.name, c.message) for c in passed.checks if not c.passed]
    failed = graded(key, exercise.starter_path)
    assert not failed.passed and all(c.message for c in failed.checks if not c.passed)


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "correct").glob("ex*.py")))
def test_independent_correct_solutions_pass(name, graded):
    report = graded(name.split("_")[0], FIXTURES / "correct" / name)
    assert report.passed, [(c.name, c.message) for c in report.checks if not c.passed]


@pytest.mark.parametrize("added, passes", [
    ("    unused = torch.empty(L, S)  # (L, S), never written\n", True),
    ("    try:\n"
     "        torch.ones(L, S)  # (L, S), filled, then dropped\n"
     "    except BaseException:  # the worker's tripwire, caught\n"
     "        pass\n", False),
], ids=["unfilled", "filled-and-caught"])
def test_the_memory_tripwire_ends_a_call_but_the_kernel_decides(added, passes, graded, tmp_path):
    """ex10's memory check ends a call at its first tensor of the bound's size, so a full score
    matrix fails at once. The verdict is still the memory the kernel saw: a buffer made and never
    filled holds none (the call is run whole and passes); a filled one fails even when the
    learner catches the tripwire and goes on to the right answer."""
    exercise = find_exercise("ex10")
    line = "    L, S = q.size(-2), k.size(-2)  # query length, key length\n"
    source = exercise.solution_path.read_text(encoding="utf-8")
    assert source.count(line) == 1
    learner = tmp_path / exercise.file_name
    learner.write_text(source.replace(line, line + added))
    report = graded("ex10", learner)
    assert report.passed is passes, [(c.name, c.message) for c in report.checks if not c.passed]
    if not passes:
        assert report.mistakes == ["full-score-matrix"], [(c.name, c.message) for c in report.checks]


def test_json_matches_the_contract(cli):
    result = cli("check", "ex01", "--file", find_exercise("ex1").starter_path, "--json")
    report = json.loads(result.stdout)
    assert set(report) == {"exercise", "passed", "checks", "device", "duration_s", "sandbox"}
    assert report["exercise"] == "ex1" and report["device"] == "cpu" and report["sandbox"] in ("bubblewrap", "none")
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


def test_known_mistake_is_named(tmp_path, graded):
    source = find_exercise("ex1").solution_path.read_text()
    broken = tmp_path / "mine.py"
    broken.write_text(source.replace("* scale  # (..., L, S)", "  # (..., L, S)"))
    report = graded("ex1", broken)
    assert "no-scale" in report.mistakes
    assert any("Your output equals attention without the 1/sqrt(d) scale" in c.message for c in report.checks)
    message = next(c.message for c in report.checks if not c.passed)
    assert "largest difference" in message and " at [" in message and "float64" in message


def test_bad_arguments_are_drill_errors(tmp_path):
    exercise = find_exercise("ex1")
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.py").write_bytes(b"\x7fELF\x00\x01")
    for path, words in (("missing.py", "no file"), ("folder", "is a directory"), ("binary.py", "not a Python file")):
        with pytest.raises(DrillError, match=words):
            grade(exercise, tmp_path / path)
    for options, words in (({"device": "tpu"}, "--device"), ({"timeout": 0}, "--timeout"),
                           ({"timeout": float("nan")}, "--timeout"), ({"timeout": float("inf")}, "--timeout"),
                           ({"memory_limit": "lots"}, "--memory-limit"), ({"memory_limit": "1MiB"}, "at least")):
        with pytest.raises(DrillError, match=words):
            grade(exercise, exercise.solution_path, **options)


def test_memory_sizes():
    assert parse_size("2GiB") == 2 << 30 and parse_size("512MiB") == 512 << 20
    assert parse_size("1.5G") == 1_500_000_000 and parse_size("300000000") == 300_000_000


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
    with Pool(1, device="cuda") as pool:
        reports = pool.grade_all([(ex, ex.solution_path) for ex in load_catalog()], device="cuda")
    for report in reports:
        assert report.device == "cuda" and report.passed, [(c.name, c.message) for c in report.checks if not c.passed]


def test_an_engine_whose_templates_were_killed_starts_afresh(engine):
    import os
    import signal
    import time

    exercise = find_exercise("ex1")
    assert engine.grade(exercise, exercise.solution_path, device="cpu").passed
    worker_template, judge = engine.worker_template, engine.judge.pid
    for pid in (worker_template, judge):   # the worker template's death alone is seen; one restart for both
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert not engine._alive()
    assert engine.grade(exercise, exercise.solution_path, device="cpu").passed
    assert (engine.worker_template, engine.judge.pid) != (worker_template, judge) and engine._alive()


def test_a_pools_next_engine_gets_a_judge_forked_from_the_first(engine):
    """A Pool's engines after the first start only a worker template: their judge template is a
    fork of the first's, warm already, in a session of its own (the first's end or restart, which
    kills its session, does not reach it). It grades as the first does; closing the engine ends it."""
    import os
    import time

    from attn_drill.grading import Engine

    exercise = find_exercise("ex1")
    other = Engine(sandbox="bubblewrap", device="cpu", spawned_judge=True)
    try:
        engine.spawn_judge(other)
        for path in (exercise.solution_path, exercise.starter_path):
            mine, theirs = (e.grade(exercise, path, device="cpu") for e in (other, engine))
            assert [(c.name, c.passed, c.message) for c in mine.checks] == \
                [(c.name, c.passed, c.message) for c in theirs.checks]
        assert mine.checks and not mine.passed
        spawned = other.judge.pid
        parent = Path(f"/proc/{spawned}/stat").read_text().rsplit(")", 1)[1].split()[1]
        assert int(parent) == engine.judge.pid and os.getsid(spawned) == spawned != os.getsid(engine.judge.pid)
    finally:
        other.close()
    time.sleep(0.1)
    assert other.judge.poll() is not None and engine._alive()


def test_first_failure_stops_the_grading_and_says_so(graded):
    starter = find_exercise("ex2").starter_path
    full, stopped = graded("ex2", starter), graded("ex2", starter, first_failure=True)
    assert [c.name for c in stopped.checks] == [c.name for c in full.checks] and not stopped.passed
    first = next(i for i, c in enumerate(stopped.checks) if not c.passed)
    assert stopped.checks[first] == full.checks[first]
    later = stopped.checks[first + 1:]
    assert later and all(not c.passed and c.message == "not run: the grading stopped at the first failure"
                         for c in later), later
    assert sum(not c.passed for c in full.checks) > 1   # without it, every check ran
