"""Hostile learner code: each becomes failed checks with a reason; nothing hangs, nothing
is left running, and no pass is reported that the grader did not see."""

import json
import os
import time
from pathlib import Path

import pytest

from attn_drill.catalog import find_exercise
from attn_drill.grading import grade

from conftest import FIXTURES

HOSTILE = FIXTURES / "hostile"

# fixture file -> words the failure must contain
CASES = {
    "loop_at_import.py": "timed out after 3 s during import",
    "loop_in_call.py": "timed out after 3 s while the check",
    "exit_at_import.py": "exited the process (exit code 0) during import",
    "sys_exit_in_call.py": "called sys.exit(0)",
    "segfault.py": "crashed with signal SIGSEGV",
    "output_flood.py": "printed over 1 MiB of output",
    "missing_function.py": "does not define self_attention",
    "syntax_error.py": "SyntaxError",
    "wrong_return_type.py": "should return a tuple of 2, got list",
    "rebinds_allclose.py": "replaced torch.allclose",
    "forges_results.py": "wrote into the grader's result channel",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_fails_with_reason(name, cli):
    started = time.monotonic()
    result = cli("check", "ex1", "--file", HOSTILE / name, "--timeout", "3")
    assert result.code == 1, result.stderr
    assert "Traceback (most recent call last)" not in result.stdout + result.stderr
    assert CASES[name] in result.stdout, result.stdout
    assert time.monotonic() - started < 90


def test_hostile_json_reports_no_pass_it_did_not_see(cli):
    result = cli("check", "ex1", "--file", HOSTILE / "exit_at_import.py", "--json")
    report = json.loads(result.stdout)
    assert result.code == 1 and report["passed"] is False
    assert not any(check["passed"] for check in report["checks"])


def test_process_escaping_the_group_is_killed(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("HOSTILE_PID_FILE", str(pid_file))
    report = grade(find_exercise("ex1"), HOSTILE / "leaves_process.py", timeout=3)
    assert not report.passed
    pid = int(pid_file.read_text())
    for _ in range(50):  # the kill is sent; give the kernel a moment to reap
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the process the learner's code started is still running")


def test_learner_exception_shows_their_frames_only(tmp_path):
    broken = tmp_path / "ex01_self_attention.py"
    broken.write_text(
        "def scaled_dot_product_attention(q, k, v, mask=None, scale=None):\n"
        "    return helper(q)\n\n"
        "def helper(q):\n"
        "    return q @ q\n\n"
        "def self_attention(x, w_q, w_k, w_v, mask=None):\n"
        "    raise KeyError('oops')\n")
    report = grade(find_exercise("ex1"), broken)
    message = next(c.message for c in report.checks if "raised an error" in c.message)
    assert "ex01_self_attention.py, line 2, in scaled_dot_product_attention" in message
    assert "line 5, in helper" in message
    assert "harness.py" not in message and "runner.py" not in message
