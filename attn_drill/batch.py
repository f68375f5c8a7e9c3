"""`attn-drill grade DIR --exercise EX`: grade a folder of submissions on a pool of warm graders.

No terminal code here: :func:`grade_folder` returns a :class:`BatchReport`, which the CLI
renders as a table (:func:`attn_drill.render.grade_table`), CSV or JSON.

A submission is

- each ``*.py`` file directly in the folder: the student is the file's stem;
- each sub-folder: the student is the folder's name, and the file graded is the one in it
  (directly in it, not deeper) named like the exercise's file (``ex02_multi_head_attention.py``),
  else its only ``.py`` file.

Hidden entries (``.git``, ``.DS_Store``), ``__pycache__`` and ``__MACOSX`` are left out, as
are files that are not ``.py`` (listed in :attr:`BatchReport.skipped`). A submission that
cannot be graded (a folder with no Python file or several, a binary or oversized file) is a
row that failed, with score 0 and the reason; it never stops the run. Each submission is
graded in fresh processes of its own, so one's crash, hang or tampering reaches no other.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from attn_drill.errors import DrillError
from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, GradeReport

COLUMNS = ("student", "passed", "checks_passed", "checks", "score", "duration_s", "reasons", "sandbox")
MAX_REASONS = 3
REASON_CHARS = 300                 # a reason longer than this (learner-made text, say) is cut
REASON_SEPARATOR = " | "
LEFT_OUT = {"__pycache__", "__MACOSX"}


@dataclass(frozen=True)
class Submission:
    """One student's entry in the folder: the file to grade, or why there is none."""

    student: str
    path: Path | None             # the file to grade; None when ``problem`` says why not
    problem: str | None = None


@dataclass
class SubmissionResult:
    student: str
    passed: bool
    checks_passed: int
    checks: int
    duration_s: float
    reasons: list[str] = field(default_factory=list)
    file: str = ""                # the file graded ("" when none could be)

    @property
    def score(self) -> float:
        return self.checks_passed / self.checks if self.checks else 0.0

    def to_dict(self) -> dict:
        return {"student": self.student, "passed": self.passed, "checks_passed": self.checks_passed,
                "checks": self.checks, "score": self.score, "duration_s": round(self.duration_s, 3),
                "reasons": list(self.reasons)}


@dataclass
class BatchReport:
    exercise: str
    sandbox: str                  # "bubblewrap" or "none"
    submissions: list[SubmissionResult]
    folder: str = ""
    skipped: list[str] = field(default_factory=list)  # entries of the folder that are no submission
    duration_s: float = 0.0       # the whole run, start of the graders included

    @property
    def passed(self) -> bool:
        return bool(self.submissions) and all(s.passed for s in self.submissions)

    @property
    def passed_count(self) -> int:
        return sum(s.passed for s in self.submissions)

    def to_dict(self) -> dict:
        """The ``grade --format json`` object of the CLI contract."""
        return {"exercise": self.exercise, "sandbox": self.sandbox,
                "submissions": [s.to_dict() for s in self.submissions]}

    def to_csv(self) -> str:
        """One row per submission, the contract's columns (reasons joined with " | ") and the sandbox."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.submissions:
            writer.writerow([row.student, "true" if row.passed else "false", row.checks_passed, row.checks,
                             row.score, round(row.duration_s, 3), REASON_SEPARATOR.join(row.reasons), self.sandbox])
        return buffer.getvalue()


def find_submissions(folder: Path, exercise, lang: str = "en") -> tuple[list[Submission], list[str]]:
    """The submissions in ``folder`` (sorted by student), and the names of entries left out."""
    from attn_drill.grading import read_learner_source

    folder = Path(folder)
    if not folder.is_dir():
        raise DrillError(f"{folder} is not a folder of submissions" + ("." if folder.exists() else " (it does not exist)."),
                         zh=f"{folder} 不是存放提交的文件夹" + ("。" if folder.exists() else "（它不存在）。"))
    found: list[Submission] = []
    skipped: list[str] = []
    for entry in sorted(folder.iterdir(), key=lambda p: (p.name.casefold(), p.name)):
        if entry.name.startswith(".") or entry.name in LEFT_OUT:
            continue
        if entry.is_dir():
            found.append(_folder_submission(entry, exercise, lang))
        elif entry.suffix == ".py":
            found.append(Submission(entry.stem, entry))
        else:
            skipped.append(entry.name)
    checked = []
    for submission in found:
        if submission.path is not None:
            try:
                read_learner_source(submission.path)
            except DrillError as error:
                shown = _shown(submission.path, folder)
                submission = Submission(submission.student, None, error.text(lang).replace(str(submission.path), shown))
        checked.append(submission)
    return checked, skipped


def _folder_submission(student: Path, exercise, lang: str = "en") -> Submission:
    try:
        files = sorted(p for p in student.iterdir() if p.suffix == ".py" and not p.name.startswith(".")
                       and not p.is_dir())
    except OSError as error:
        return Submission(student.name, None, f"无法读取文件夹 {student.name}/（{error.strerror}）。" if lang == "zh"
                          else f"cannot read the folder {student.name}/ ({error.strerror}).")
    named = [p for p in files if p.name == exercise.file_name]
    if named:
        return Submission(student.name, named[0])
    if len(files) == 1:
        return Submission(student.name, files[0])
    if not files:
        if lang == "zh":
            return Submission(student.name, None, f"{student.name}/ 中没有 Python 文件（应为 {exercise.file_name}）。")
        return Submission(student.name, None, f"no Python file in {student.name}/ "
                                              f"(expected {exercise.file_name}).")
    listed = ", ".join(p.name for p in files[:5]) + (", ..." if len(files) > 5 else "")
    if lang == "zh":
        return Submission(student.name, None, f"{student.name}/ 中有 {len(files)} 个 Python 文件（{listed}），"
                                              f"没有一个叫 {exercise.file_name}：无法确定该评分哪一个。")
    return Submission(student.name, None, f"{len(files)} Python files in {student.name}/ ({listed}) and none "
                                          f"named {exercise.file_name}: cannot tell which to grade.")


def _shown(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def require_sandbox(allow_unsandboxed: bool, lang: str = "en") -> str:
    """The sandbox grading will use: "bubblewrap", or "none" when allowed. Raises DrillError
    when bubblewrap cannot run here and running unsandboxed was not allowed."""
    from attn_drill.engine.sandbox import bwrap_path

    if bwrap_path() is not None:
        return "bubblewrap"
    if not allow_unsandboxed:
        raise DrillError("bubblewrap cannot run here (no bwrap, or user namespaces are off), so the submissions' "
                         "code would run as you, able to read and write your files. Try --allow-unsandboxed to "
                         "grade anyway (only code you trust), or install bubblewrap.",
                         zh="这里无法运行 bubblewrap（没有 bwrap，或用户命名空间已关闭），提交的代码会以你的身份运行，"
                            "可以读写你的文件。可加 --allow-unsandboxed 照样评分（只用于你信任的代码），或安装 bubblewrap。")
    return "none"


def grade_folder(folder: Path, exercise_key: str, *, jobs: int = 0, device: str = "auto",
                 timeout: float = DEFAULT_TIMEOUT_S, memory_limit: str | int = DEFAULT_MEMORY,
                 allow_unsandboxed: bool = False, lang: str = "en",
                 on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None) -> BatchReport:
    """Grade every submission in ``folder`` for the exercise ``exercise_key`` on a pool of
    ``jobs`` warm graders (default: the number of cores).

    ``on_progress(stage, done, total)`` hears "starting" once the submissions are found, then
    "grading" before the first grading and after each. Raises DrillError for bad input (no
    such folder or exercise, no submissions, a bad option) and, before grading anything, when
    there is no sandbox and ``allow_unsandboxed`` is false.
    """
    import time

    from attn_drill.catalog import find_exercise
    from attn_drill.grading import Pool, check_options

    started = time.monotonic()
    exercise = find_exercise(exercise_key)
    check_options(device, timeout, memory_limit, "auto")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise DrillError(f"--jobs must be 0 (one per core) or a positive number, got {jobs}.",
                         zh=f"--jobs 必须是 0（每个核心一个）或正数，而不是 {jobs}。")
    submissions, skipped = find_submissions(folder, exercise, lang)
    if not submissions:
        raise DrillError(f"no submissions in {folder}: put one .py file per student in it, or one folder per "
                         f"student holding {exercise.file_name}.",
                         zh=f"{folder} 中没有提交：每个学生放一个 .py 文件，或每个学生一个文件夹，"
                            f"其中放 {exercise.file_name}。")
    sandbox = require_sandbox(allow_unsandboxed, lang)
    gradable = [s for s in submissions if s.path is not None]
    results: dict[int, GradeReport] = {}
    if gradable:
        total = len(gradable)
        on_progress("starting", 0, total)
        workers = min(jobs or os.cpu_count() or 1, total)
        with Pool(workers, sandbox=sandbox, device=device) as pool:
            if pool.sandbox != sandbox:  # never grade in a weaker sandbox than the one checked for
                raise DrillError(f"the graders started without the {sandbox} sandbox; nothing was graded.",
                                 zh=f"评分进程启动时没有使用 {sandbox} 沙箱；没有评任何提交。")
            for engine in pool.engines:  # their torch import is no submission's time
                if not engine.ready:
                    engine._wait_ready()
            on_progress("grading", 0, total)
            done = 0

            def finished(index: int, report: GradeReport) -> None:
                nonlocal done
                done += 1
                on_progress("grading", done, total)

            reports = pool.grade_all([(exercise, s.path) for s in gradable], on_done=finished, device=device,
                                     timeout=timeout, memory_limit=memory_limit, lang=lang)
        results = {id(s): r for s, r in zip(gradable, reports)}
    typical = _typical_checks(results.values())
    rows = [_row(s, results.get(id(s)), typical, Path(folder), lang) for s in submissions]
    return BatchReport(exercise.id, sandbox, rows, str(folder), skipped, time.monotonic() - started)


def _typical_checks(reports) -> int:
    """How many checks the exercise has, as most gradings collected them (0 when none ran)."""
    counts = Counter(len(r.checks) for r in reports if len(r.checks) > 1)
    return counts.most_common(1)[0][0] if counts else 0


def _row(submission: Submission, report: GradeReport | None, typical: int, folder: Path,
         lang: str = "en") -> SubmissionResult:
    if report is None:
        return SubmissionResult(submission.student, False, 0, typical, 0.0, [_clean(submission.problem or "")])
    failed = [c for c in report.checks if not c.passed]
    reasons: list[str] = []
    for check in failed:
        lines = (check.message or "").strip().splitlines()
        reason = _clean(lines[0] if lines else (f"{check.name}：未通过" if lang == "zh" else f"{check.name}: failed"))
        if reason not in reasons:
            reasons.append(reason)
        if len(reasons) == MAX_REASONS:
            break
    return SubmissionResult(submission.student, report.passed, len(report.checks) - len(failed), len(report.checks),
                            report.duration_s, reasons, _shown(submission.path, folder))


def _clean(text: str) -> str:
    """One printable line of at most REASON_CHARS (learner-made text can hold anything)."""
    text = "".join(c if c.isprintable() else "?" for c in text.strip())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."
