"""`attn-drill grade DIR --exercise EX`: a folder of submissions, graded on the warm pool.

The folder mixes a correct file, the starter (wrong), a file that crashes at import, one that
hangs (graded with --timeout 1), one that writes forged frames into every file descriptor,
folders per student (the exercise's file beside a helper; an only file with another name),
and submissions that cannot be graded: a folder without a Python file, one with two, and a
binary file. Every one is a row with the right verdict and reason; none stops the run.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from attn_drill.catalog import find_exercise

from conftest import FIXTURES

EX2 = find_exercise("ex2")

CRASH = "import os\n\nos._exit(3)\n"
HANG = "while True:\n    pass\n"
TAMPER = (FIXTURES / "batch" / "ex2_forges_frames.py").read_text()   # shared with benchmarks/grade.py


def _sandboxed() -> bool:
    from attn_drill.engine.sandbox import bwrap_path

    return bwrap_path() is not None


def make_submissions(folder):
    folder.mkdir()
    solution, starter = EX2.solution_path.read_text(), EX2.starter_path.read_text()
    (folder / "alice.py").write_text(solution)
    (folder / "bob.py").write_text(starter)
    (folder / "crash.py").write_text(CRASH)
    (folder / "hang.py").write_text(HANG)
    (folder / "tamper.py").write_text(TAMPER)
    (folder / "gina.py").write_bytes(b"import torch\0\x89PNG")
    (folder / "carol").mkdir()                       # the exercise's file beside another
    (folder / "carol" / EX2.file_name).write_text(solution)
    (folder / "carol" / "helper.py").write_text("raise SystemExit('not me')\n")
    (folder / "dave").mkdir()                        # its only file, named otherwise
    (folder / "dave" / "my_attention.py").write_text(solution)
    (folder / "erin").mkdir()                        # no Python file
    (folder / "erin" / "README.md").write_text("I ran out of time.\n")
    (folder / "frank").mkdir()                       # two, neither named like the exercise's
    (folder / "frank" / "a.py").write_text(starter)
    (folder / "frank" / "b.py").write_text(solution)
    (folder / "notes.txt").write_text("not a submission\n")
    (folder / ".hidden.py").write_text(HANG)
    (folder / "__pycache__").mkdir()
    return folder


# student -> (passed, score is 1.0 / 0.0 / between, a phrase of the first reason)
EXPECTED = {
    "alice": (True, 1.0, None),
    "bob": (False, "between", "is not written yet: it raises NotImplementedError"),
    "carol": (True, 1.0, None),
    "crash": (False, "between", "your code exited the process (exit code 3) during the import of your file"),
    "dave": (True, 1.0, None),
    "erin": (False, 0.0, "no Python file in erin/"),
    "frank": (False, 0.0, "2 Python files in frank/ (a.py, b.py) and none named ex02_multi_head_attention.py"),
    "gina": (False, 0.0, "gina.py is not a Python file (it "),
    "hang": (False, "between", "your code ran past the time limit of 1 s during the import of your file"),
    "tamper": (False, "between", "your code interfered with the grader"),
}


def assert_rows(rows, students=tuple(EXPECTED)):
    assert [row["student"] for row in rows] == sorted(students)
    checks = {row["checks"] for row in rows}
    assert len(checks) == 1 and checks.pop() >= 10, rows  # every row counts the exercise's checks
    for row in rows:
        passed, score, phrase = EXPECTED[row["student"]]
        assert row["passed"] is passed, row
        assert row["score"] == pytest.approx(row["checks_passed"] / row["checks"]), row
        if score == "between":
            assert 0 <= row["score"] < 1, row
        else:
            assert row["score"] == score, row
        if phrase is None:
            assert row["reasons"] == [] and row["checks_passed"] == row["checks"], row
        else:
            assert 1 <= len(row["reasons"]) <= 3 and phrase in row["reasons"][0], row
            assert all("\n" not in reason for reason in row["reasons"]), row
        assert 0 <= row["duration_s"] < 60, row


@pytest.mark.skipif(not _sandboxed(), reason="bubblewrap cannot run here")
def test_grades_a_folder_into_csv_and_json(cli, tmp_path):
    folder = make_submissions(tmp_path / "submissions")
    options = ("--exercise", "ex2", "--timeout", "1", "--device", "cpu", "--jobs", "2")

    as_csv = cli("grade", folder, *options, "--format", "csv")
    assert as_csv.code == 1, as_csv.stderr
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert table and list(table[0]) == ["student", "passed", "checks_passed", "checks", "score", "duration_s",
                                        "reasons", "sandbox"]
    rows = [{**row, "passed": {"true": True, "false": False}[row["passed"]], "checks_passed": int(row["checks_passed"]),
             "checks": int(row["checks"]), "score": float(row["score"]), "duration_s": float(row["duration_s"]),
             "reasons": row["reasons"].split(" | ") if row["reasons"] else []} for row in table]
    assert_rows(rows)
    assert {row["sandbox"] for row in table} == {"bubblewrap"}

    few = tmp_path / "few"             # the JSON form of three of them: a pass, a fail, no Python file
    few.mkdir()
    shutil.copy(folder / "alice.py", few)
    shutil.copy(folder / "bob.py", few)
    shutil.copytree(folder / "erin", few / "erin")
    written = tmp_path / "out" / "grades.json"
    as_json = cli("grade", few, *options, "--format", "json", "--out", written)
    assert as_json.code == 1 and as_json.stdout == "", as_json.stderr
    assert "1 of 3 submissions passed" in as_json.stderr and str(written) in as_json.stderr
    report = json.loads(written.read_text())
    assert report["exercise"] == "ex2" and report["sandbox"] == "bubblewrap"
    assert set(report) == {"exercise", "sandbox", "submissions"}
    for row in report["submissions"]:
        assert set(row) == {"student", "passed", "checks_passed", "checks", "score", "duration_s", "reasons"}
    assert_rows(report["submissions"], ("alice", "bob", "erin"))
    assert not list(written.parent.glob(".*.tmp"))


def run_main(*args) -> int:
    from attn_drill.cli import main

    with pytest.raises(SystemExit) as ended:
        main([str(a) for a in args])
    return ended.value.code


@pytest.mark.unsandboxed
def test_refuses_to_grade_without_a_sandbox_unless_allowed(no_sandbox, warm_engines, tmp_path, capsys, monkeypatch):
    from attn_drill import grading

    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "alice.py").write_text(EX2.solution_path.read_text())
    (folder / "bob.py").write_text(EX2.starter_path.read_text())

    def no_pool(*args, **kwargs):
        raise AssertionError("a grader started although grading was refused")

    pool = grading.Pool
    monkeypatch.setattr(grading, "Pool", no_pool)
    assert run_main("grade", folder, "--exercise", "ex2", "--format", "json") == 2
    shown = capsys.readouterr()
    assert shown.out == "" and "--allow-unsandboxed" in shown.err and "Traceback" not in shown.err
    monkeypatch.setattr(grading, "Pool", pool)

    out = tmp_path / "grades.csv"
    assert run_main("grade", folder, "--exercise", "ex2", "--device", "cpu", "--jobs", "1",
                    "--allow-unsandboxed", "--out", out) == 1      # bob fails; the format from --out's suffix
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(row["student"], row["passed"], row["sandbox"]) for row in table] == [
        ("alice", "true", "none"), ("bob", "false", "none")]
    assert "Not sandboxed" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    assert run_main("grade", tmp_path / "missing", "--exercise", "ex2") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_main("grade", folder, "--exercise", "ex2") == 2
    assert "no submissions in" in capsys.readouterr().err
    shutil.copy(EX2.solution_path, folder / "alice.py")
    assert run_main("grade", folder, "--exercise", "ex99") == 2
    assert "no exercise named 'ex99'" in capsys.readouterr().err
    assert run_main("grade", folder, "--exercise", "ex2", "--out", tmp_path / "grades.txt") == 2
    assert "--format csv or --format json" in capsys.readouterr().err
    assert run_main("grade", folder, "--exercise", "ex2", "--jobs", "-1") == 2
    assert run_main("grade", folder, "--exercise", "ex2", "--memory-limit", "lots") == 2
    assert run_main("grade", folder) == 2        # --exercise is required
