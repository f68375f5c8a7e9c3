"""Shared fixtures: every test gets its own ATTN_DRILL_HOME, and `cli` runs the real command."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def drill_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ATTN_DRILL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def engine():
    """One warm judge and sandboxed worker for the whole session: each grading still gets fresh
    processes of its own (forked from the templates), as `attn-drill check` does."""
    from attn_drill.grading import Engine

    with Engine(device="cpu") as warm:
        yield warm


@pytest.fixture
def graded(engine):
    """Grade ``path`` as exercise ``key`` on the warm engine; ``options`` go to Engine.grade
    (timeout, memory_limit, tape, lang="zh" for the Chinese titles and messages)."""
    from attn_drill.catalog import find_exercise

    def run(key, path, **options):
        return engine.grade(find_exercise(key), path, device="cpu", **options)

    return run


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(drill_home, tmp_path):
    """Run `attn-drill ARGS` in a child process, as a user would, from ``cwd`` (default: a
    fresh folder that is not a workspace)."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)

    def run(*args, input=None, cwd=None, env=None, timeout=300):
        environment = {**os.environ, "ATTN_DRILL_HOME": str(drill_home), "COLUMNS": "200", **(env or {})}
        done = subprocess.run([sys.executable, "-m", "attn_drill", *map(str, args)], input=input,
                              capture_output=True, text=True, cwd=cwd or outside, env=environment, timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)

    return run
