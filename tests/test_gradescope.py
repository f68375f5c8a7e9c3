"""`attn-drill gradescope EX --out DIR`: the bundle's files, and its run_autograder end to end on
Gradescope's layout (a temporary root in place of /autograder; the attn-drill of this
environment in place of the one setup.sh installs, which these tests never run)."""

import importlib.metadata as metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from attn_drill import __version__, gradescope
from attn_drill.catalog import find_exercise
from attn_drill.errors import DrillError

EX = find_exercise("ex1")
BUNDLE_FILES = {"setup.sh", "run_autograder", "requirements.txt", "README.md", f"attn_drill-{__version__}-py3-none-any.whl"}


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """One bundle for ex1, written by the command as an instructor would run it: once per run,
    whichever xdist worker comes first (its wheel build takes seconds); the others wait for it
    under a lock in their shared temporary folder, and only read it."""
    import fcntl

    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    base = shared / "gradescope-bundle"
    with open(shared / "gradescope-bundle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / "built").exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            _build_bundle(base)
            (base / "built").touch()
    return base / "gs"


def _build_bundle(base: Path) -> None:
    env = {**os.environ, "ATTN_DRILL_HOME": str(base / "home"), "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([sys.executable, "-m", "attn_drill", "gradescope", "ex1", "--out", str(base / "gs"), "--zip"],
                          capture_output=True, text=True, env=env, cwd=base, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert imported and not [name for name in imported if name == "torch" or name.startswith("torch.")]
    assert "autograder.zip" in done.stdout


def run_autograder(bundle, root, **env):
    """The bundle's run_autograder on the Gradescope layout under ``root``; its results.json."""
    (root / "results").mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "AUTOGRADER_ROOT": str(root), "ATTN_DRILL_VENV": str(root / "no-venv"),
                   "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]), **env}
    done = subprocess.run([str(bundle / "run_autograder")], capture_output=True, text=True, env=environment,
                          cwd=root, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((root / "results" / "results.json").read_text())


def submission(root, files):
    folder = root / "submission"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


def test_bundle_has_its_files(bundle):
    assert {p.name for p in bundle.iterdir()} == BUNDLE_FILES | {"autograder.zip"}
    for name in ("setup.sh", "run_autograder"):
        assert (bundle / name).stat().st_mode & stat.S_IXUSR, name
    subprocess.run(["bash", "-n", str(bundle / "setup.sh")], check=True)
    compile((bundle / "run_autograder").read_text(), "run_autograder", "exec")  # valid Python

    setup = (bundle / "setup.sh").read_text()
    torch = metadata.version("torch").split("+")[0]
    assert "bubblewrap" in setup and "https://download.pytorch.org/whl/cpu" in setup
    assert f'TORCH_VERSION="{torch}"' in setup and "requirements.txt" in setup
    assert "pip install --no-deps \"$HERE/$WHEEL\"" in setup and f'WHEEL="attn_drill-{__version__}-' in setup
    assert "@@" not in setup and "@@" not in (bundle / "README.md").read_text()

    pins = [line for line in (bundle / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    expected = {name: metadata.version(name) for name in gradescope.PINNED}
    expected["torch"] = torch
    assert pins == [f"{name}=={version}" for name, version in expected.items()]

    runner = (bundle / "run_autograder").read_text()
    assert runner.startswith("#!/usr/bin/env python3\n") and "'exercise': 'ex1'" in runner
    assert "'file_name': 'ex01_self_attention.py'" in runner

    with zipfile.ZipFile(bundle / f"attn_drill-{__version__}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
        assert {"attn_drill/__init__.py", "attn_drill/checks/ex01_self_attention.py",
                "attn_drill/_content/solutions/ex01_self_attention.py",
                "attn_drill/autograder/run_autograder.py"} <= names
        assert f"Version: {__version__}\n" in wheel.read(f"attn_drill-{__version__}.dist-info/METADATA").decode()
    with zipfile.ZipFile(bundle / "autograder.zip") as archive:
        assert set(archive.namelist()) == BUNDLE_FILES  # at the root of the archive, not in a folder
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
        assert archive.read("run_autograder") == (bundle / "run_autograder").read_bytes()


def test_reference_gets_full_marks(bundle, tmp_path):
    root = submission(tmp_path, {EX.file_name: EX.solution_path.read_text(), "notes.txt": "my notes",
                                 f"__MACOSX/._{EX.file_name}": b"\0\x05\x16\x07 resource fork"})
    results = run_autograder(bundle, root)
    assert results["score"] == results["max_score"] == len(results["tests"]) >= 10
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output"}
        assert test["status"] == "passed" and test["score"] == test["max_score"] == 1.0
    assert isinstance(results["execution_time"], float) and results["execution_time"] > 0
    assert results["output"].startswith(f"Graded {EX.file_name}.")
    assert results["extra_data"]["submission"] == EX.file_name
    assert results["extra_data"]["sandbox"] in ("bubblewrap", "none")


@pytest.mark.unsandboxed
def test_starter_fails_and_unsandboxed_says_so(bundle, tmp_path, no_sandbox, cli):
    """A failing grading without a sandbox through run_autograder: the real `attn-drill check`
    output for the starter (graded here, on the warm unsandboxed engine) and its exit code 1,
    given back by a stand-in attn-drill that first checks it was asked to grade that file (the
    reference's run above is the cold one, end to end)."""
    graded = cli("check", "ex1", "--file", EX.starter_path, "--format", "gradescope", "--device", "cpu")
    assert graded.code == 1, graded.stderr
    (tmp_path / "graded.json").write_text(graded.stdout)
    stand_in = tmp_path / "venv" / "bin" / "attn-drill"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text(f'#!/bin/sh\n[ "$1 $2 $3" = "check ex1 --file" ] && [ "$(basename "$4")" = mine.py ] || exit 3\n'
                        f'cmp -s "$4" "{EX.starter_path}" || exit 4\ncat "{tmp_path / "graded.json"}"\nexit 1\n')
    stand_in.chmod(0o755)
    root = submission(tmp_path / "gs", {"work/mine.py": EX.starter_path.read_text()})  # the only .py file
    results = run_autograder(bundle, root, ATTN_DRILL_VENV=str(tmp_path / "venv"))
    assert 0 <= results["score"] < results["max_score"] == len(results["tests"])
    failed = [test for test in results["tests"] if test["status"] == "failed"]
    assert failed and all(test["score"] == 0 and test["output"] for test in failed)
    assert "not written yet" in " ".join(test["output"] for test in failed)
    assert "without a sandbox" in results["output"] and results["extra_data"]["sandbox"] == "none"
    assert results["extra_data"]["submission"] == os.path.join("work", "mine.py")


@pytest.mark.parametrize("files, says", [
    ({}, "Nothing was submitted. Upload your solution as ex01_self_attention.py"),
    ({"solution.ipynb": "{}", "README": "hi"}, "no Python file (found: README, solution.ipynb)"),
    ({"a.py": "x = 1", "b.py": "y = 2"}, "several Python files (a.py, b.py) and none is named ex01_self_attention.py"),
    ({EX.file_name: b"\x7fELF\0\0\0binary"}, "ex01_self_attention.py could not be graded: "
                                              "ex01_self_attention.py is not a Python file"),
])
def test_no_gradable_file_scores_zero_with_a_message(bundle, tmp_path, files, says):
    results = run_autograder(bundle, submission(tmp_path, files))
    assert results["score"] == 0 and says in results["output"]
    assert [test["status"] for test in results["tests"]] == ["failed"] and says in results["tests"][0]["output"]
    assert isinstance(results["execution_time"], float)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can grade as another user")
def test_as_root_it_grades_as_the_unprivileged_user(bundle):
    """A stand-in attn-drill (no torch) reports who ran it and whether it could write results/."""
    base = Path(tempfile.mkdtemp(prefix="attn-drill-gs-user-"))
    try:
        base.chmod(0o755)
        fake = base / "venv" / "bin" / "attn-drill"
        fake.parent.mkdir(parents=True)
        fake.write_text('#!/bin/sh\ncat "$4" >/dev/null || exit 3\n'
                        'if touch "$AUTOGRADER_ROOT/results/forged" 2>/dev/null; then w=yes; else w=no; fi\n'
                        'printf \'{"score": 1.0, "max_score": 1.0, "output": "ok", "tests": [{"name": '
                        '"%s wrote:%s", "score": 1.0, "max_score": 1.0, "status": "passed", "output": ""}]}\' '
                        '"$(id -un)" "$w"\n')
        fake.chmod(0o755)
        for folder in (base / "venv", fake.parent):
            folder.chmod(0o755)
        root = submission(base / "root", {EX.file_name: "x = 1\n"})
        for folder in (root, root / "submission"):
            folder.chmod(0o755)
        results = run_autograder(bundle, root, ATTN_DRILL_VENV=str(base / "venv"), ATTN_DRILL_GRADER_USER="nobody")
        assert results["tests"][0]["name"] == "nobody wrote:no"
        assert results["extra_data"]["graded_as"] == "nobody"
        assert not (root / "results" / "forged").exists()
    finally:
        shutil.rmtree(base)


def test_repacked_installed_package_matches_the_built_wheel(bundle, tmp_path):
    """Without a source tree (attn-drill installed from a wheel), the bundle gets the installed files."""
    built = bundle / f"attn_drill-{__version__}-py3-none-any.whl"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(built)], check=True, capture_output=True)
    script = ("import sys; from pathlib import Path; import attn_drill, attn_drill.gradescope as g; "
              "assert attn_drill.__file__.startswith(sys.argv[1]); print(g.build_package(Path(sys.argv[2])))")
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", script, str(site), str(out)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(built) as a, zipfile.ZipFile(done.stdout.strip()) as b:
        assert set(a.namelist()) == set(b.namelist())
        record = f"attn_drill-{__version__}.dist-info/RECORD"
        assert [n for n in a.namelist() if n != record and a.read(n) != b.read(n)] == []


@pytest.fixture
def no_build(monkeypatch):
    def fake(dest):
        wheel = dest / f"attn_drill-{__version__}-py3-none-any.whl"
        wheel.write_bytes(b"wheel")
        return wheel

    monkeypatch.setattr(gradescope, "build_package", fake)


def test_out_folder_rules(tmp_path, no_build):
    target = tmp_path / "gs"
    first = gradescope.write_bundle("ex2", target)
    assert first.zip_path is None and {p.name for p in target.iterdir()} == set(first.files)
    second = gradescope.write_bundle("ex1", target, make_zip=True)  # a bundle written before is replaced whole
    assert "'exercise': 'ex1'" in (target / "run_autograder").read_text() and second.zip_path.is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    gradescope.write_bundle("ex1", empty)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(DrillError, match="not empty"):
        gradescope.write_bundle("ex1", foreign)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    with pytest.raises(DrillError, match="--memory-limit"):
        gradescope.write_bundle("ex1", tmp_path / "new", memory_limit="lots")


def test_usage_errors_are_one_line(cli, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.txt").write_text("x")
    for args in (["gradescope", "ex1", "--out", foreign], ["gradescope", "ex99", "--out", tmp_path / "x"]):
        result = cli(*args)
        assert result.code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
