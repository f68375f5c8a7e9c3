"""The worker's sandbox: its bubblewrap command line, and the unsandboxed fallback."""

import sys
from pathlib import Path

import pytest

from attn_drill.catalog import find_exercise
from attn_drill.engine import sandbox
from attn_drill.grading import grade


def flags(argv, flag):
    """The arguments after each occurrence of ``flag``."""
    return [argv[i + 1:i + 3] for i, arg in enumerate(argv) if arg == flag]


@pytest.fixture
def layout(tmp_path):
    """A home holding the interpreter, a virtual environment holding an installed attn-drill."""
    home = tmp_path / "home" / "you"
    venv = home / ".venvs" / "drill"
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "attn_drill" / "_content" / "solutions").mkdir(parents=True)
    (site / "torch").mkdir()
    workspace = home / "drills"
    workspace.mkdir()
    store = home / ".local" / "share" / "attn-drill"
    store.mkdir(parents=True)
    return home, venv, site, workspace, store


def command(layout, cuda=False, dev=Path("/dev")):
    home, venv, site, workspace, store = layout
    return sandbox.bwrap_command("/usr/bin/bwrap", Path("/tmp/box"), ["3", "4"], cuda=cuda, dev=dev,
                                 readable=[venv, site], protected=[site / "attn_drill", home, workspace, store])


def test_own_namespaces_no_capabilities_dies_with_parent(layout):
    argv = command(layout)
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    assert ["--cap-drop", "ALL"] in [argv[i:i + 2] for i in range(len(argv))]
    assert ["/tmp/box", "/box"] in flags(argv, "--ro-bind")
    assert ["/proc", "--remount-ro"] in flags(argv, "--proc") and "--bind" not in argv  # nothing writable bound
    assert argv[argv.index("--") + 1:argv.index("--") + 5] == [sys.executable, "-I", "-u", "/box/worker.py"]
    assert argv.index("--remount-ro", argv.index("/box")) < argv.index("--")   # the root is read-only too


def test_no_home_no_workspace_no_package_files(layout):
    home, venv, site, workspace, store = layout
    argv = command(layout)
    bound = [source for source, _ in flags(argv, "--ro-bind")]
    assert str(home) not in bound and str(workspace) not in bound and str(store) not in bound
    assert str(venv) in bound  # what python needs, read-only
    assert str(site / "attn_drill") in [target for target, *_ in flags(argv, "--tmpfs")]  # covered by an empty folder
    env = {name: value for name, value in flags(argv, "--setenv")}
    assert env["HOME"] == "/scratch" and not any("ATTN_DRILL" in name for name in env)


def test_cuda_binds_the_nvidia_device_nodes(layout, tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for node in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (dev / node).touch()
    assert sandbox.has_nvidia(dev)
    plain, with_cuda = command(layout, dev=dev), command(layout, cuda=True, dev=dev)
    nodes = [source for source, _ in flags(with_cuda, "--dev-bind")]
    assert nodes == sorted(str(dev / n) for n in ("nvidia-uvm", "nvidia0", "nvidiactl"))
    assert "--dev-bind" not in plain


def test_the_real_protected_paths_cover_attn_drills_own_files():
    from attn_drill import content

    protected = sandbox.protected_paths()
    for path in (content.PACKAGE_DIR, content.solutions_dir(), Path.home()):
        assert path.resolve() in protected


def test_sandbox_can_be_switched_off(monkeypatch):
    sandbox.bwrap_path.cache_clear()
    monkeypatch.setenv("ATTN_DRILL_SANDBOX", "none")
    try:
        assert sandbox.bwrap_path() is None
    finally:
        sandbox.bwrap_path.cache_clear()


@pytest.mark.unsandboxed
def test_fallback_grades_on_two_processes_and_says_so(warm_engines):
    exercise = find_exercise("ex1")
    report = grade(exercise, exercise.solution_path, device="cpu", sandbox="none")
    assert report.passed and report.sandbox == "none"
    assert report.to_dict()["sandbox"] == "none"
    assert "without a sandbox" in report.to_gradescope()["output"]


@pytest.mark.skipif(sandbox.bwrap_path() is None, reason="bubblewrap cannot run here")
def test_sandboxed_grading_says_so(warm_engines):
    exercise = find_exercise("ex1")
    report = grade(exercise, exercise.solution_path, device="cpu")
    assert report.passed and report.sandbox == "bubblewrap"
    assert 0 < report.peak_memory < 2 << 30


def test_a_virtual_environment_under_tmp_stays_visible(tmp_path):
    """The scratch tmpfs is mounted before the read-only binds, so a venv anywhere (CI clones
    live under /tmp) is not covered by it, and /tmp itself is read-only, not a scratch."""
    venv = Path("/tmp/some-clone/.venv")
    argv = sandbox.bwrap_command("/usr/bin/bwrap", tmp_path, ["3", "4"], cuda=False, readable=[venv], protected=[])
    assert argv.index(str(venv)) > argv.index(sandbox.SCRATCH)
    assert "/tmp" not in [target for target, *_ in flags(argv, "--tmpfs")]
    assert argv[argv.index("--chdir") + 1] == sandbox.SCRATCH


def _huge_pages_offered() -> bool:
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return mode.exists() and "[never]" not in mode.read_text()


@pytest.mark.skipif(sandbox.bwrap_path() is None or not _huge_pages_offered(),
                    reason="needs bubblewrap and transparent huge pages")
def test_both_templates_keep_their_heaps_on_huge_pages(engine):
    """glibc backs the templates' heaps with huge pages (HUGE_PAGE_HEAP; the sandbox shows it the
    kernel's settings): a grading's fork copies far fewer page-table entries."""
    engine.grade(find_exercise("ex1"), find_exercise("ex1").starter_path, device="cpu")   # warm and ready
    for pid in (engine.judge.pid, engine.worker_template):
        rollup = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        huge, anonymous = (int(rollup[name].split()[0]) for name in ("AnonHugePages", "Anonymous"))
        assert huge >= anonymous // 4, (pid, huge, anonymous)   # kB; about half, where the kernel has them
    assert ["/sys/kernel/mm/transparent_hugepage"] * 2 in flags(
        sandbox.bwrap_command("/usr/bin/bwrap", Path("/tmp/box"), ["3"], cuda=False, readable=[], protected=[]),
        "--ro-bind")
