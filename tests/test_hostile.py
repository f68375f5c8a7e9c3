"""Hostile learner code for ex1, graded through the real engine (attn_drill.grading.grade).

Each fixture in tests/fixtures/hostile attacks the grader while it is graded; it returns wrong
values, or correct ones obtained by forbidden means. For each the tests assert: the report does
not pass; every failed check gives a reason, and the phrases of its row below appear; the
grading took under 60 s; nothing it started still runs afterwards (processes are found by a
marker made unique per grading, and as descendants of the test process); and the files it
attacks are unchanged (for attn-drill's own checks and reference: by sha256, restored from a
copy if they changed, and the test then fails).

The last test grades every fixture once on a freshly started engine, where the rows of the
tables are asserted, and once on a warm Pool, which must give the same reports; the fixtures
that need more (real files to attack, the fallback, what their output says) have tests of
their own. Fixtures that hang are graded with timeout=0.25; the others with a larger budget, so
that a loaded machine cannot turn their verdict into a timeout. A hole found in the engine is a
strict xfail: it turns red when the hole is fixed (see HOLES and the reasons)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from attn_drill.catalog import find_exercise
from attn_drill.grading import Engine

from conftest import FIXTURES

HOSTILE = FIXTURES / "hostile"
MARK = "attn-drill-hostile-"      # every fixture's markers start so; the test makes them unique
HANG_TIMEOUT = 0.25               # for fixtures that hang: the grader must cut them off
CALM_TIMEOUT = 15                 # for the others: their time is not what is tested
GRADING_LIMIT_S = 60
MEMORY_LIMIT = "384MiB"           # for fixtures that hoard memory: over 1.8 times what the reference needs


def _sandbox_works() -> bool:
    from attn_drill.engine.sandbox import bwrap_path

    return bwrap_path() is not None


SANDBOXED = _sandbox_works()
# Signals to every pid and kill(-1) are only safe inside the sandbox's PID namespace: every
# sandboxed test asks for bubblewrap explicitly, and is skipped where it cannot run.
needs_sandbox = pytest.mark.skipif(not SANDBOXED, reason="bubblewrap cannot run here")

WRONG = "is wrong for"                                    # a value check saw the wrong result
SCAN = "your file uses what this exercise does not allow"  # the static scan of the file
GUARD = "torch.nn.functional.scaled_dot_product_attention is off limits in this exercise: write this yourself"

# ---------------------------------------------------------------------------------------------
# fixture -> phrases; each must appear in the message of some failed check.

TAMPERING = {  # 1-12: at the grader's channels, machinery and reference; the results are wrong
    "forges_results.py": ("your code interfered with the grader",),
    "hunts_gc.py": ("interfered with the grader", "the garbage collector's object lists is not allowed"),
    "walks_frames.py": (WRONG, "reading the caller's frames is not allowed"),
    "patches_pytest.py": (WRONG,),
    "patches_harness.py": (WRONG,),
    "traces_locals.py": (WRONG, "tracing the grader (sys.settrace) is not allowed"),
    "lying_mode.py": (WRONG, "a torch-function mode is not allowed"),
    "patches_tensor.py": (WRONG,),
    "lying_subclass.py": ("interfered with the grader: it returned a torch.Tensor subclass (Liar) "
                          "where a plain tensor belongs",),
    "rebinds_allclose.py": (WRONG,),
    "reference_from_modules.py": (WRONG,),
    "reference_from_caller.py": (WRONG, "reading the caller's frames is not allowed"),
}
FORBIDDEN_CALLS = {  # 13-17: the forbidden built-in through back doors; the results are CORRECT
    "sdpa_via_c_nn.py": (GUARD, "torch._C (torch's C internals is not allowed"),
    "sdpa_via_aten.py": (GUARD, "torch.ops (raw operator calls is not allowed"),
    "sdpa_via_aten_flash.py": (GUARD, "torch.ops (raw operator calls is not allowed"),
    "sdpa_via_private_functional.py": (GUARD, "importlib.util (re-importing modules is not allowed"),
    "sdpa_via_runtime_getattr.py": (GUARD,),                         # the scan cannot see it: the guard does
    "sdpa_modes_off.py": (SCAN, "torch-function overrides is not allowed"),  # the guard is off: the scan sees it
}
PROCESSES = {  # 18-21: at the processes around it; the results are wrong
    "sigstop_everyone.py": (WRONG, "signals is not allowed"),
    "sigkill_everyone.py": (WRONG,),   # the template, the sandbox's init, cannot be killed from inside
    "leaves_daemon.py": (WRONG,),
    "fork_bomb.py": ("your code started more than 64 processes during the import of your file",),
}
CLASSICS = {  # 25
    "exit_at_import.py": ("your code exited the process (exit code 0) during the import of your file",),
    "sys_exit_in_call.py": ("your code called sys.exit(0); return a result instead",),
    "segfault.py": ("your code crashed with signal SIGSEGV during scaled_dot_product_attention()",),
    "output_flood.py": ("your code printed over 1 MiB of output, so the grader stopped it",),
    "missing_function.py": ("your file does not define self_attention",),
    "syntax_error.py": ("SyntaxError", 'File "syntax_error.py", line 4'),   # its name, not the scratch path
    "wrong_return_type.py": ("scaled_dot_product_attention() should return a tuple of 2, got list",
                             "self_attention() should return a tuple of 2, got str"),
}
HANGS = {  # 25 (graded with timeout=HANG_TIMEOUT)
    "loop_at_import.py": (f"your code ran past the time limit of {HANG_TIMEOUT} s during the import of your file",),
    "loop_in_call.py": (f"your code ran past the time limit of {HANG_TIMEOUT} s during scaled_dot_product_attention()",),
    "leaves_process.py": (f"your code ran past the time limit of {HANG_TIMEOUT} s during the import of your file",
                          "starting programs is not allowed"),
}
MEMORY = {  # 22 (graded with memory_limit=MEMORY_LIMIT)
    "memory_hog.py": ("your code used more than 384 MiB of memory (the limit; see --memory-limit)",),
}
FILE_ATTACKS = {  # 10, 23, 24: TARGETS are the store, a workspace file, attn-drill's checks and reference
    "execs_reference.py": (WRONG,),
    "fills_disk.py": (WRONG,),
    "writes_user_files.py": (WRONG,),
}
FALLBACK = {  # the unsandboxed fallback (sandbox="none"): still clean failures, nothing left running
    "exit_at_import.py": CLASSICS["exit_at_import.py"],
    "loop_at_import.py": HANGS["loop_at_import.py"],
    "writes_user_files.py": (WRONG,),
    "leaves_process.py": HANGS["leaves_process.py"],
}


HOLES = {
    # Known limits, said in docs/grading.md ("best effort"); each turns red if it is ever closed.
    "sdpa_stealth.py": (
        "engine/worker.py Guard + engine/scan.py: learner code that builds every name at run time "
        "(getattr(torch, '_' + 'C'), 'scaled_dot' + '_product_attention') and calls the built-in inside "
        "torch._C.DisableTorchFunction() and torch._C._DisableTorchDispatch() is seen by neither the "
        "torch-function/dispatch modes nor the static scan: F.scaled_dot_product_attention passes ex1"),
    "kills_template.py": (
        "grading.py Engine.grading_pids()/kill_grading() (sandbox='none'): after learner code kills its "
        "parent, the worker template, processes.below(template) is empty: nothing of the grading is "
        "killed or measured any more, and the process it started outlives the grading (unsandboxed only)"),
}


def _hole(name: str, condition: bool = True):
    return pytest.mark.xfail(condition, strict=True, reason=HOLES[name])


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Proc:
    ppid: int
    state: str
    start: int
    cmdline: str


def _processes() -> dict[int, Proc]:
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = Proc(int(fields[1]), fields[0], int(fields[19]), cmdline)
    return table


def _descendants(root: int, table: dict[int, Proc]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _leftovers(marker: str) -> dict[int, Proc]:
    """Live processes with ``marker`` in their command line, or below this test process."""
    table = _processes()
    below = set(_descendants(os.getpid(), table)) - _warm_engines()
    return {pid: proc for pid, proc in table.items()
            if proc.state not in ("Z", "X") and pid != os.getpid() and (marker in proc.cmdline or pid in below)}


def _warm_engines() -> set[int]:
    """Warm graders' own processes, which stay between gradings by design: the templates this
    test process started (a judge; bwrap, its init and the worker template inside), whichever
    engine they belong to. What a grading starts lies below a template and must be gone."""
    table = _processes()
    kept = set()
    for pid, proc in table.items():
        if proc.ppid != os.getpid():
            continue
        if "bwrap" in proc.cmdline.split(" ", 1)[0]:   # bwrap, bwrap's init, and the worker template
            init = [child for child, p in table.items() if p.ppid == pid]
            kept |= {pid, *init, *(child for child, p in table.items() if p.ppid in init)}
        elif "attn_drill.engine.judge" in proc.cmdline or "worker.py" in proc.cmdline:
            kept.add(pid)
    return kept


def _kill(procs: dict[int, Proc]) -> None:
    """SIGKILL these processes (the test's own leftovers), each by its pid, if it is still the same."""
    table = _processes()
    for pid, proc in procs.items():
        if pid in table and table[pid].start == proc.start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _assert_nothing_left(marker: str, within_s: float = 2.0) -> None:
    """Every process of the grading is killed before grade() returns; the grace covers only the
    kernel's tearing down of what was just killed."""
    deadline = time.monotonic() + within_s
    while (left := _leftovers(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        _kill(left)
        pytest.fail("still running after grading: " + "; ".join(f"{pid} {p.cmdline[:120]}" for pid, p in left.items()))


# ---------------------------------------------------------------------------------------------
# Files


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@dataclass
class Guarded:
    path: Path
    digest: str
    mode: int
    backup: Path


class Targets:
    """Real files for the file attacks: a progress store under this test's ATTN_DRILL_HOME, a
    workspace's ex1 file, attn-drill's installed ex1 checks and reference solution. Each is
    copied first; a damaged one is put back, and reported."""

    def __init__(self, tmp_path: Path, *, own_files: bool):
        from attn_drill.store import DB_NAME, home, open_store
        from attn_drill.workspace import Workspace, init_workspace

        exercise = find_exercise("ex1")
        store = open_store()
        try:
            store.record_check("ex1", False, ["hostile"])
        finally:
            store.close()
        workspace = init_workspace(tmp_path / "ws")
        self.paths = [home() / DB_NAME, Workspace(workspace.root).file_for(exercise)]
        if own_files:
            self.paths += [exercise.checks_path, exercise.solution_path]
        backups = tmp_path / "backups"
        backups.mkdir()
        self.guarded = []
        for n, path in enumerate(self.paths):
            backup = backups / f"{n}-{path.name}"
            shutil.copy2(path, backup)
            self.guarded.append(Guarded(path, _sha256(path), path.stat().st_mode, backup))
        self.folders = sorted({p.parent for p in self.paths})

    def damage(self, marker: str) -> list[str]:
        """What changed, each put back as it was; files the attack left beside them, removed.

        A file changed without any sign of an attack (no marker, not emptied, deleted or made
        unreadable) is reported but not overwritten: in a shared checkout it may be someone's edit."""
        found = []
        for item in self.guarded:
            digest = _sha256(item.path) if item.path.exists() and os.access(item.path, os.R_OK) else None
            mode = item.path.stat().st_mode if item.path.exists() else None
            if digest == item.digest and mode == item.mode:
                continue
            attacked = (digest is None or mode != item.mode or item.path.stat().st_size == 0
                        or MARK.encode() in item.path.read_bytes())
            found.append(f"{item.path} ({'deleted' if mode is None else 'changed'}"
                         f"{', restored from a copy' if attacked else ', NOT restored: no sign of the attack'})")
            if attacked:
                shutil.copy2(item.backup, item.path)
                os.chmod(item.path, item.mode)
        for folder in self.folders:
            for stray in folder.glob(f"*{marker}*"):
                found.append(f"{stray} (created)")
                stray.unlink()
        return found


@pytest.fixture
def targets(tmp_path, drill_home):
    made = Targets(tmp_path, own_files=True)
    yield made
    made.damage(MARK)  # whatever happened in the test, attn-drill's own files end as they were


@pytest.fixture
def user_targets(tmp_path, drill_home):
    """Only the user's files (the store, a workspace file): for the unsandboxed fallback."""
    return Targets(tmp_path, own_files=False)


# ---------------------------------------------------------------------------------------------
# Grading


@dataclass
class Graded:
    report: object
    elapsed: float
    marker: str

    @property
    def failed(self):
        return [c for c in self.report.checks if not c.passed]


def _materialize(name: str, folder: Path, targets: Targets | None = None) -> tuple[Path, str]:
    """The fixture, its markers made unique and __TARGETS__ filled in, as a learner's file."""
    token = uuid.uuid4().hex[:12]
    text = (HOSTILE / name).read_text(encoding="utf-8").replace(MARK, f"{MARK}{token}-")
    if "__TARGETS__" in text:
        assert targets is not None, f"{name} attacks files: give it targets"
        text = text.replace("__TARGETS__", repr([str(p) for p in targets.paths]))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path, f"{MARK}{token}"


_LENDER = []   # conftest's lender of warm graders, one per sandbox mode, shared with the rest of the suite


@pytest.fixture(autouse=True)
def _warm_graders(lender):
    _LENDER[:] = [lender]


def _engine(sandbox: str) -> Engine:
    """The warm grader every hostile file goes through, one after another: each grading gets
    fresh processes, so what one file did must not reach the next (see the last test)."""
    return _LENDER[0].resident(sandbox)


def _grade(name: str, tmp_path: Path, *, targets: Targets | None = None, sandbox: str = "bubblewrap",
           timeout: float = CALM_TIMEOUT, memory_limit: str = "2GiB", grace_s: float = 2.0) -> Graded:
    path, marker = _materialize(name, tmp_path / "submission", targets)
    started = time.monotonic()
    try:
        report = _engine(sandbox).grade(find_exercise("ex1"), path, device="cpu", timeout=timeout,
                                        memory_limit=memory_limit)
    finally:
        elapsed = time.monotonic() - started
        _assert_nothing_left(marker, grace_s)
    return Graded(report, elapsed, marker)


def _problems(graded: Graded, phrases: tuple[str, ...]) -> list[str]:
    """What is wrong with a hostile file's grading; none when it failed cleanly: every failed check
    gives a reason, the phrases appear, no traceback, within the time limit."""
    failed = graded.failed
    if graded.report.passed or not failed:
        return ["the hostile file passed"]
    problems = [f"'{c.name}' failed without a reason" for c in failed
                if not c.message.strip() or c.message.endswith("the check did not complete.")]
    problems += [f"no failed check says {phrase!r}" for phrase in phrases if not any(phrase in c.message for c in failed)]
    if "Traceback (most recent call last)" in "".join(c.message for c in failed):
        problems.append("a traceback reached the report")
    if graded.elapsed >= GRADING_LIMIT_S:
        problems.append(f"the grading took {graded.elapsed:.0f} s")
    return problems


def _summary(report) -> str:
    return "\n".join(f"  {'PASS' if c.passed else 'FAIL'} {c.name}: {c.message[:300]}" for c in report.checks)


def _assert_failed_with(graded: Graded, phrases: tuple[str, ...]) -> None:
    problems = _problems(graded, phrases)
    assert not problems, "; ".join(problems) + ":\n" + _summary(graded.report)


# ---------------------------------------------------------------------------------------------
# The tables


def _params(table: dict):
    return [pytest.param(name, phrases, id=name) for name, phrases in table.items()]


@needs_sandbox
@pytest.mark.parametrize("name, phrases", _params(FILE_ATTACKS))
def test_file_attack_reaches_nothing(name, phrases, tmp_path, targets):
    graded = _grade(name, tmp_path, targets=targets)
    damage = targets.damage(graded.marker)
    assert not damage, f"learner code reached the user's or attn-drill's files: {damage}"
    _assert_failed_with(graded, phrases)
    if name == "fills_disk.py":  # everything it could write went to its private, 64 MiB scratch folder
        total = re.search(r"hostile: filled .*; total (\d+) MiB", graded.report.output)
        assert total, f"the fixture's report is missing from its output: {graded.report.output[-500:]!r}"
        assert int(total.group(1)) <= 64, total.group(0)


@needs_sandbox
@pytest.mark.parametrize("name", [pytest.param("sdpa_stealth.py", marks=_hole("sdpa_stealth.py"))])
def test_forbidden_call_unseen_by_scan_and_guard_still_fails(name, tmp_path):
    """Correct values from F.scaled_dot_product_attention, no name of it in the source, both
    modes switched off around the call: the check must still say it is off limits."""
    _assert_failed_with(_grade(name, tmp_path), ("off limits in this exercise",))


@needs_sandbox
def test_nothing_is_written_outside_the_private_scratch_folder(tmp_path):
    graded = _grade("writes_outside_scratch.py", tmp_path)
    _assert_failed_with(graded, (WRONG,))
    wrote = re.search(r"hostile: wrote (\d+) MiB outside the scratch folder: (.*)", graded.report.output)
    assert wrote, f"the fixture's report is missing from its output: {graded.report.output[-500:]!r}"
    assert wrote.group(1) == "0", wrote.group(0)


@needs_sandbox
def test_memory_kept_in_tmpfs_is_capped(tmp_path):
    """Files on a tmpfs are memory no process's resident size shows: the sandbox's only writable
    folders are size-capped tmpfs (/dev/shm 16 MiB, /tmp 64 MiB), so little can hide there."""
    from attn_drill.engine.sandbox import SHM_BYTES

    graded = _grade("hides_memory_in_shm.py", tmp_path, memory_limit=MEMORY_LIMIT)
    _assert_failed_with(graded, (WRONG,))
    kept = re.search(r"hostile: kept (\d+) MiB in /dev/shm", graded.report.output)
    assert kept, f"the fixture's report is missing from its output: {graded.report.output[-500:]!r}"
    assert int(kept.group(1)) <= SHM_BYTES >> 20, kept.group(0)


# ---------------------------------------------------------------------------------------------
# The unsandboxed fallback: file attacks may succeed there (they point only at the test's own
# temporary store and workspace); failures must still be clean and nothing may stay running.


@pytest.mark.unsandboxed
@pytest.mark.parametrize("name, phrases", _params(FALLBACK))
def test_fallback_fails_cleanly(name, phrases, tmp_path, user_targets):
    graded = _grade(name, tmp_path, sandbox="none", targets=user_targets, **dict(_options(name)))
    assert graded.report.sandbox == "none"
    _assert_failed_with(graded, phrases)


@pytest.mark.unsandboxed(last=True)
@_hole("kills_template.py")
def test_fallback_learner_killing_its_template_leaves_nothing(tmp_path, user_targets):
    graded = _grade("kills_template.py", tmp_path, sandbox="none", grace_s=0.5)   # a known hole: no long wait
    assert graded.report.sandbox == "none"
    _assert_failed_with(graded, (WRONG,))


# ---------------------------------------------------------------------------------------------
# The grading process itself killed


def _kill_cli_while_grading(tmp_path: Path, drill_home: Path, env: dict[str, str]) -> None:
    """`attn-drill check` on a file that starts a marked process and loops; once the worker and
    that process run, SIGKILL the CLI: within a few seconds nothing of the grading is left."""
    path, marker = _materialize("leaves_process.py", tmp_path / "submission")
    scratch = tmp_path / "tmp"  # the engine's temporary folders, which a killed CLI cannot remove
    scratch.mkdir()
    environment = {**os.environ, "ATTN_DRILL_HOME": str(drill_home), "TMPDIR": str(scratch), **env}
    cli = subprocess.Popen([sys.executable, "-m", "attn_drill", "check", "ex1", "--file", str(path),
                            "--timeout", "60"], env=environment, cwd=tmp_path, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, Proc] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and cli.poll() is None:
            table = _processes()
            below = {pid: table[pid] for pid in _descendants(cli.pid, table) if pid in table}
            if any("worker.py" in p.cmdline for p in below.values()) and any(marker in p.cmdline
                                                                            for p in below.values()):
                seen = below
                break
            time.sleep(0.1)
        assert seen, "the worker and the learner's process never showed up under the CLI"
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        deadline = time.monotonic() + 10
        while True:
            table = _processes()
            left = {pid: p for pid, p in seen.items()
                    if pid in table and table[pid].start == p.start and table[pid].state not in ("Z", "X")}
            left.update({pid: p for pid, p in table.items() if marker in p.cmdline and p.state not in ("Z", "X")})
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not any("worker.py" in p.cmdline or marker in p.cmdline for p in left.values()), (
            "learner code still runs after the grading process was killed: "
            + "; ".join(f"{pid} {p.cmdline[:120]}" for pid, p in left.items()))
        assert not left, "the grader's processes outlived it: " + "; ".join(f"{pid} {p.cmdline[:120]}"
                                                                           for pid, p in left.items())
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        table = _processes()
        _kill({pid: p for pid, p in {**seen, **{pid: p for pid, p in table.items() if marker in p.cmdline}}.items()})


@needs_sandbox
def test_killing_the_grading_process_leaves_nothing(tmp_path, drill_home):
    _kill_cli_while_grading(tmp_path, drill_home, {})


def test_killing_the_unsandboxed_grading_process_leaves_nothing(tmp_path, drill_home):
    _kill_cli_while_grading(tmp_path, drill_home, {"ATTN_DRILL_SANDBOX": "none"})


def test_learner_exception_shows_their_frames_only(tmp_path):
    broken = tmp_path / "ex01_self_attention.py"
    broken.write_text(
        "def scaled_dot_product_attention(q, k, v, mask=None, scale=None):\n"
        "    return helper(q)\n\n"
        "def helper(q):\n"
        "    return q @ q\n\n"
        "def self_attention(x, w_q, w_k, w_v, mask=None):\n"
        "    raise KeyError('oops')\n")
    report = _engine("bubblewrap" if SANDBOXED else "none").grade(find_exercise("ex1"), broken, device="cpu",
                                                                  timeout=CALM_TIMEOUT)
    message = next(c.message for c in report.checks if "raised an error" in c.message)
    assert "ex01_self_attention.py, line 2, in scaled_dot_product_attention" in message
    assert "line 5, in helper" in message
    assert "harness.py" not in message and "runner.py" not in message


@needs_sandbox
def test_the_warm_engine_still_grades_right_after_the_hostile_set():
    """After every hostile file this worker process graded before (in this module), the same
    warm engine still passes the reference and fails the starter, each with every check."""
    exercise = find_exercise("ex1")
    engine = _engine("bubblewrap")
    passed = engine.grade(exercise, exercise.solution_path, device="cpu")
    assert passed.passed, [(c.name, c.message) for c in passed.checks if not c.passed]
    failed = engine.grade(exercise, exercise.starter_path, device="cpu")
    assert not failed.passed and len(failed.checks) == len(passed.checks)


# ---------------------------------------------------------------------------------------------
# Every fixture fails cleanly on a freshly started engine, and a warm Pool gives the same verdicts

PHRASES = {**TAMPERING, **FORBIDDEN_CALLS, **PROCESSES, **CLASSICS, **HANGS, **MEMORY}


def _verdict(report) -> tuple:
    return report.passed, report.mistakes, [(c.name, c.passed, c.message) for c in report.checks]


def _options(name: str) -> tuple:
    """The grading options for a fixture: hangs cut off early, memory hogs at MEMORY_LIMIT."""
    options = {"timeout": HANG_TIMEOUT if name in HANGS else CALM_TIMEOUT}
    if name in MEMORY or name == "hides_memory_in_shm.py":
        options["memory_limit"] = MEMORY_LIMIT
    return tuple(sorted(options.items()))


def _template_state(engine) -> tuple:
    """The engine's templates: the same processes, the worker template not stopped."""
    try:
        state = Path(f"/proc/{engine.worker_template}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    return engine.worker_template, engine.judge.pid, state not in ("T", "gone") and not engine.broken and engine._alive()


@needs_sandbox
@pytest.mark.slow
def test_every_fixture_fails_cleanly_and_a_pool_gives_the_verdict_of_a_fresh_engine(tmp_path, distinct_engines,
                                                                                   lender):
    """Every hostile fixture, the reference and the starter are graded one after another on an
    engine started for this test (its templates graded nothing before the first). Each fixture of
    the tables above fails with the phrases of its row, every failed check giving a reason;
    nothing any fixture started still runs after its grading; the templates are the same,
    unstopped processes after every one (the worker template is the sandbox's init: SIGSTOP and
    SIGKILL from inside never reach it; a stopped judge is resumed from outside).

    Then all are graded in the opposite order on a Pool of two warm engines that have served
    the session (that fresh one among them). Each file's report is the same on both: what a
    grading did reaches neither the next grading nor the templates. The Pool's reports come in
    the order given, and a file it cannot grade (a folder) is one failed check that stops nothing."""
    from attn_drill.grading import Pool

    exercise = find_exercise("ex1")
    files = {"reference": exercise.solution_path, "starter": exercise.starter_path}
    decoys = [tmp_path / "decoys" / name for name in ("progress.db", "ex01_self_attention.py")]  # file attacks' aim
    decoys[0].parent.mkdir()
    for path in decoys:
        path.write_text("decoy\n")
    markers = {}
    for fixture in sorted(HOSTILE.glob("*.py")):
        files[fixture.name], markers[fixture.name] = _materialize(fixture.name, tmp_path / fixture.stem,
                                                                  SimpleNamespace(paths=decoys))
    groups: dict[tuple, list[str]] = {}
    for name in files:
        groups.setdefault(_options(name), []).append(name)

    fresh = lender.fresh("bubblewrap")
    cold, problems, templates = {}, {}, None
    for options, names in groups.items():
        for name in names:
            started = time.monotonic()
            cold[name] = fresh.grade(exercise, files[name], device="cpu", **dict(options))
            graded = Graded(cold[name], time.monotonic() - started, markers.get(name, ""))
            if name in markers:
                _assert_nothing_left(markers[name])
            problems[name] = _problems(graded, PHRASES[name]) if name in PHRASES else []
            now = _template_state(fresh)
            if templates is None:
                templates = now
            elif now != templates:
                problems[name].append(f"the templates changed: {templates} -> {now}")
    assert cold["reference"].passed and not cold["starter"].passed
    assert templates[2], "the fresh engine's templates are not running"
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, "\n".join(f"{name}: {'; '.join(found)}\n{_summary(cold[name])}"
                                    for name, found in problems.items())

    folder = tmp_path / "a-folder"
    folder.mkdir()
    warm = {}
    with Pool(2, sandbox="bubblewrap", device="cpu") as pool:
        lent = {id(engine._engine) for engine in pool.engines}
        assert id(fresh) in lent and len(lent) == 2   # the fresh engine and another
        for options, names in reversed(groups.items()):
            names = names[::-1]
            jobs = [(exercise, files[name]) for name in names]
            if len(names) > 1:   # and one that cannot be graded, second in line
                jobs.insert(1, (exercise, folder))
            seen = []
            reports = pool.grade_all(jobs, on_done=lambda i, r: seen.append(i), device="cpu", **dict(options))
            assert sorted(seen) == list(range(len(jobs))) and [r.file for r in reports] == [str(p) for _, p in jobs]
            if len(names) > 1:
                unreadable = reports.pop(1)
                assert not unreadable.passed and "is a directory" in unreadable.checks[0].message
            warm |= dict(zip(names, reports))
    differ = [name for name in files if _verdict(cold[name]) != _verdict(warm[name])]
    assert not differ, "\n".join(f"{name}:\n  fresh {_verdict(cold[name])}\n  pool  {_verdict(warm[name])}"
                                 for name in differ)
    for marker in markers.values():
        _assert_nothing_left(marker)
