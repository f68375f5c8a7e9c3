"""Shared fixtures: every test gets its own ATTN_DRILL_HOME, and `cli` runs the real command."""

import gc
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from attn_drill.grading import Engine as REAL_ENGINE   # warm_engines replaces grading.Engine, not this

# Two test processes share the two cores: torch's second thread in either (and OpenMP's spinning
# after each parallel op, about 2 CPU-seconds a run) only takes a core from the other.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The quiz's study day ends at 4 am local time: a test that answers a question wrong a few minutes
# before then would find it due tomorrow, not today. Every test runs where it is now about noon
# (a POSIX zone: its offset counts west of UTC).
os.environ["TZ"] = f"XXX{time.gmtime().tm_hour - 12:+d}"
time.tzset()

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(items):
    """Tests marked ``unsandboxed`` run first, in their order, the one marked ``last=True`` after
    them: under xdist the first worker's share is the head of the list (stealing takes from the
    tails), so only that worker starts an unsandboxed engine, and no test pays for restarting it
    after the one whose learner kills its template. The ``slow`` ones come next: a long test
    near the end of a worker's share would leave the other worker idle while it runs."""
    def rank(item):
        marker = item.get_closest_marker("unsandboxed")
        if marker is not None:
            return 1 if marker.kwargs.get("last") else 0
        return 2 if item.get_closest_marker("slow") else 3

    items.sort(key=rank)


def pytest_collection_finish(session):
    """What is loaded by now (torch, the bank, every test) stays for the whole run: frozen, it
    is no longer walked by each of the run's garbage collections (about 7% of a worker's CPU)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def drill_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ATTN_DRILL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def engine(lender):
    """One warm judge and sandboxed worker for the whole session: each grading still gets fresh
    processes of its own (forked from the templates), as `attn-drill check` does."""
    return lender.resident("bubblewrap")


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


class EngineLender:
    """Warm engines for the in-process CLI: where a command would start an Engine (a check, a
    Pool of them, a bench), it borrows a free warm one of the same kind (sandboxed or not),
    started at first need and kept for the session. Each grading still forks fresh processes.
    When none is free (a Pool's second engine), the last one lent is shared: their gradings
    take turns. With ``distinct`` set (a test of gradings in parallel), another is started."""

    def __init__(self):
        self.free: dict[str, list] = {}
        self.lent: dict[str, list] = {}
        self.locks: dict[int, threading.Lock] = {}
        self.started: list = []
        self.distinct = False

    def borrow(self, *, sandbox: str = "auto", device: str = "auto", spawned_judge: bool = False):
        from attn_drill.engine.sandbox import bwrap_path, has_nvidia

        kind = "none" if sandbox == "none" or bwrap_path() is None else "bubblewrap"
        if (sandbox == "bubblewrap" and kind == "none") or (device == "cuda" and has_nvidia()):
            return REAL_ENGINE(sandbox=sandbox, device=device)  # what a real start would say or do
        lent = self.lent.setdefault(kind, [])
        if lent and not self.free.get(kind) and not self.distinct:
            return Loan(lent[-1], None, self.locks[id(lent[-1])], lent)
        shelf = self._shelf(kind)
        engine = shelf.pop()
        lent.append(engine)
        return Loan(engine, shelf, self.locks[id(engine)], lent)

    def resident(self, kind: str):
        """A warm engine of ``kind`` for tests to use directly; it stays lendable (tests run one
        at a time, so it is never graded on twice at once)."""
        shelf = self._shelf(kind)
        return shelf[0]

    def fresh(self, kind: str):
        """A newly started engine of ``kind``, for a test that needs one that graded nothing yet;
        it then stays lendable for the session, like the others (a Pool's distinct second one)."""
        engine = REAL_ENGINE(sandbox=kind, device="cpu")
        self.started.append(engine)
        self.locks[id(engine)] = threading.Lock()
        self.free.setdefault(kind, []).append(engine)
        return engine

    def _shelf(self, kind: str) -> list:
        shelf = self.free.setdefault(kind, [])
        if not shelf:
            self.fresh(kind)
        return shelf

    def close(self):
        for engine in self.started:
            engine.close()


class Loan:
    """A borrowed engine: used as the engine itself; closing it gives it back, warm (a shared
    one stays with its first borrower). Its gradings hold the engine's lock."""

    def __init__(self, engine, shelf: list | None, lock: threading.Lock, lent: list):
        self._engine, self._shelf, self._lock, self._lent = engine, shelf, lock, lent

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def grade(self, *args, **kwargs):
        with self._lock:
            return self._engine.grade(*args, **kwargs)

    def __enter__(self):
        return self._engine

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._engine is not None and self._shelf is not None:
            self._lent.remove(self._engine)
            self._shelf.append(self._engine)
        self._engine = None


@pytest.fixture(scope="session")
def lender():
    lending = EngineLender()
    yield lending
    lending.close()


@pytest.fixture
def warm_engines(monkeypatch, lender):
    """Every Engine the library starts (a Pool's too) is a warm one borrowed from the lender."""
    from attn_drill import grading

    monkeypatch.setattr(grading, "Engine", lender.borrow)


@pytest.fixture
def distinct_engines(warm_engines, lender):
    """A Pool's engines are distinct warm ones, grading in parallel, not one shared."""
    lender.distinct = True
    yield
    lender.distinct = False


@pytest.fixture
def no_sandbox(monkeypatch):
    """ATTN_DRILL_SANDBOX=none, as a user would set it: engines started meanwhile are unsandboxed."""
    from attn_drill.engine.sandbox import bwrap_path

    monkeypatch.setenv("ATTN_DRILL_SANDBOX", "none")
    bwrap_path.cache_clear()
    yield
    monkeypatch.delenv("ATTN_DRILL_SANDBOX")
    bwrap_path.cache_clear()


@pytest.fixture
def cli(drill_home, tmp_path, monkeypatch, capsys, warm_engines):
    """Run `attn-drill ARGS` through its entry point (cli.main: the real parsing, commands, error
    boundary and exit code), in this process on warm engines, from ``cwd`` (default: a fresh
    folder that is not a workspace), with ``input`` as standard input and ``env`` added to the
    environment. `cli_process` runs it in a child process, for what only a process shows."""
    import io

    from attn_drill import cli as command_line

    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)

    def run(*args, input=None, cwd=None, env=None, timeout=None):
        environment = {"COLUMNS": "200", **(env or {})}
        with monkeypatch.context() as patch:
            patch.chdir(cwd or outside)
            for name, value in environment.items():
                patch.setenv(name, str(value))
            patch.setattr(sys, "stdin", io.StringIO(input or ""))
            for console in (command_line.out, command_line.err):   # rich reads COLUMNS once, at its start
                patch.setattr(console, "_width", int(environment["COLUMNS"]))
            capsys.readouterr()
            with pytest.raises(SystemExit) as ended:
                command_line.main([str(a) for a in args])
            captured = capsys.readouterr()
        code = ended.value.code
        return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)

    return run


@pytest.fixture
def cli_process(drill_home, tmp_path):
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
