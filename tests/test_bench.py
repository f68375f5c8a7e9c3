"""`attn-drill bench`: the learner's code timed in the sandboxed worker, the reference and the
built-in in the judge, on tiny sizes (lengths 16 and 32, one timed run) so each test takes seconds.

The tests borrow the session's warm engines, through the library or through the CLI's entry
point in this process (conftest's ``cli``); the GPU one runs the real command in a child process.
A cold start in a process of its own is the same Engine for every command: test_hostile kills
one while it grades, test_gradescope's reference run grades on one."""

from __future__ import annotations

import importlib.util

import pytest

from attn_drill import bench as benching
from attn_drill.catalog import find_exercise

from conftest import FIXTURES

EX1 = find_exercise("ex1")
SMALL = ("--lengths", "16,32", "--runs", "1", "--device", "cpu")


def test_reference_as_learner_gives_three_timed_series(engine):
    report = benching.bench(EX1, EX1.solution_path, device="cpu", lengths=[16, 32], runs=1, engine=engine)
    assert report.passed and report.problem is None and report.device == "cpu"
    assert [s.key for s in report.series] == ["yours", "reference", "builtin"]
    for series in report.series:
        assert [p.length for p in series.points] == [16, 32], series
        assert all(len(p.times) == 1 and p.median_s > 0 for p in series.points), series
    yours = report.series_named("yours")
    assert all(p.peak_bytes is not None and p.peak_bytes >= 0 for p in yours.points)  # measured from outside
    assert report.to_dict()["series"][0]["points"][0]["median_s"] > 0


def test_the_table_has_the_three_rows_times(cli):
    ran = cli("bench", "ex1", "--file", EX1.solution_path, *SMALL)
    assert ran.code == 0, ran.stdout + ran.stderr
    rows = {line.split("│")[1].strip(): line for line in ran.stdout.splitlines() if line.count("│") > 3}
    for name in ("yours", "reference", "built-in"):
        assert name in rows, ran.stdout
        assert sum(rows[name].count(unit) for unit in ("µs", "ms", " s ")) >= 2, rows[name]  # L=16 and L=32
    assert "L=16" in ran.stdout and "L=32" in ran.stdout and "F.scaled_dot_product_attention" in ran.stdout
    assert "Traceback" not in ran.stdout + ran.stderr


def test_the_starter_is_not_written_yet(cli):
    ran = cli("bench", "ex1", "--file", EX1.starter_path, *SMALL)
    assert ran.code == 1
    assert "not written yet" in ran.stdout and "Traceback" not in ran.stdout + ran.stderr
    assert "┃" not in ran.stdout  # no table of nothing


def test_a_crash_is_one_clear_line(cli):
    ran = cli("bench", "ex1", "--file", FIXTURES / "hostile" / "segfault.py", *SMALL)
    assert ran.code == 1
    assert "crashed with signal SIGSEGV at L=16" in ran.stdout and "Traceback" not in ran.stdout + ran.stderr


def test_a_hang_is_cut_off(cli):
    ran = cli("bench", "ex1", "--file", FIXTURES / "hostile" / "loop_in_call.py", "--timeout", "0.25", *SMALL)
    assert ran.code == 1
    assert "did not return within" in ran.stdout and "Traceback" not in ran.stdout + ran.stderr


def test_plot_writes_a_png_or_names_the_extra(cli, tmp_path):
    target = tmp_path / "ex1.png"
    ran = cli("bench", "ex1", "--file", EX1.solution_path, *SMALL, "--plot", target)
    if importlib.util.find_spec("matplotlib") is None:
        assert ran.code == 2 and not target.exists()
        assert "pip install 'attn-drill[plot]'" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    else:
        assert ran.code == 0, ran.stdout + ran.stderr
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_usage_errors_exit_2(cli):
    for args, words in [(("bench", "ex3", "--file", EX1.solution_path), "has no benchmark"),
                        (("bench", "ex1", "--file", EX1.solution_path, "--lengths", "0,8"), "--lengths"),
                        (("bench", "ex1", "--file", EX1.solution_path, "--runs", "0"), "--runs")]:
        ran = cli(*args)
        assert ran.code == 2 and words in ran.stderr, (args, ran.stderr)


def test_parse_lengths():
    assert benching.parse_lengths("128..1024") == [128, 256, 512, 1024]
    assert benching.parse_lengths("64, 16,32,16") == [16, 32, 64]
    assert benching.parse_lengths(None) is None


def test_the_json_report(cli):
    ran = cli("bench", "ex1", "--file", EX1.solution_path, *SMALL, "--json")
    assert ran.code == 0, ran.stderr
    import json

    report = json.loads(ran.stdout)
    assert [s["name"] for s in report["series"]] == ["yours", "reference", "builtin"]
    assert all(p["median_s"] > 0 for s in report["series"] for p in s["points"])


@pytest.mark.gpu
def test_bench_on_cuda(cli_process):
    from attn_drill.engine.sandbox import has_nvidia

    if not has_nvidia():  # before importing torch, which takes seconds
        pytest.skip("no CUDA device")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ex10 = find_exercise("ex10")
    ran = cli_process("bench", "ex10", "--file", ex10.solution_path, "--device", "cuda", "--lengths", "256,512",
              "--runs", "1", "--json")
    assert ran.code == 0, ran.stderr
    import json

    report = json.loads(ran.stdout)
    assert report["device"] == "cuda" and report["passed"]
    for series in report["series"]:
        assert [p["length"] for p in series["points"]] == [256, 512], series
        assert all(p["median_s"] > 0 and p["peak_bytes"] > 0 for p in series["points"]), series


def test_a_crash_is_said_in_chinese(cli):
    ran = cli("--lang", "zh", "bench", "ex1", "--file", FIXTURES / "hostile" / "segfault.py", *SMALL)
    assert ran.code == 1
    crash = next(line for line in ran.stdout.splitlines() if "SIGSEGV" in line)
    assert "在 L=16 时因信号 SIGSEGV 而崩溃" in crash and "crashed" not in crash, ran.stdout
