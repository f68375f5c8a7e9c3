"""What the learner's commands do, without any terminal code: check, hint, solution, reset,
status. Each function takes plain values and returns data for the CLI to render."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from attn_drill.catalog import Exercise, find_exercise, load_catalog
from attn_drill.errors import DrillError
from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, GradeReport
from attn_drill.store import Store, home
from attn_drill.workspace import find_workspace, require_workspace, reset_exercise


def learner_file(exercise: Exercise, file: Path | None) -> Path:
    return file if file is not None else require_workspace().file_for(exercise)


def grade_exercise(key: str, *, file: Path | None = None, device: str = "auto", timeout: float = DEFAULT_TIMEOUT_S,
                   memory_limit: str = DEFAULT_MEMORY) -> GradeReport:
    """Grade one exercise (the workspace's file, or ``file``); nothing is saved yet."""
    from attn_drill.grading import grade

    exercise = find_exercise(key)
    return grade(exercise, learner_file(exercise, file), device=device, timeout=timeout, memory_limit=memory_limit)


def record(store: Store, report: GradeReport) -> int:
    """Save a grading's outcome; the quiz questions on each named mistake's concept become due
    now. Returns how many."""
    store.record_check(report.exercise, report.passed, report.mistakes)
    if not report.mistakes:
        return 0
    from attn_drill.errors import ContentError
    from attn_drill.quiz.engine import review_mistakes

    try:
        report.questions_due = len(review_mistakes(store, report.mistakes))
    except ContentError:
        pass  # a broken question bank must not hide the grade; `attn-drill validate` reports it
    return report.questions_due


def check(store: Store, key: str, **options) -> GradeReport:
    """Grade one exercise and record the outcome."""
    report = grade_exercise(key, **options)
    record(store, report)
    return report


def next_exercise(store: Store) -> Exercise | None:
    """The first exercise not passed yet (the one `check` grades when none is named)."""
    progress = store.progress()
    for exercise in load_catalog():
        if not progress.get(exercise.id) or progress[exercise.id].status != "passed":
            return exercise
    return None


@dataclass(frozen=True)
class Hint:
    exercise: Exercise
    number: int      # 1-based
    total: int
    text: str


def hint(store: Store, key: str) -> Hint:
    exercise = find_exercise(key)
    shown = store.take_hint(exercise.id, len(exercise.hints))
    return Hint(exercise, shown, len(exercise.hints), exercise.hints[shown - 1])


def solution(store: Store, key: str, *, force: bool = False) -> tuple[Exercise, str]:
    exercise = find_exercise(key)
    if not force and not store.exercise_progress(exercise.id).ever_passed:
        raise DrillError(f"{exercise.id} has not passed yet, so its solution stays hidden. "
                         f"Try `attn-drill hint {exercise.id}`, or `attn-drill solution {exercise.id} --force`.")
    return exercise, exercise.solution_path.read_text(encoding="utf-8")


def reset(key: str) -> tuple[Exercise, Path, Path | None]:
    """Put the starter back; returns the exercise, its file and the backup of the old one."""
    exercise = find_exercise(key)
    workspace = require_workspace()
    backup = reset_exercise(exercise, workspace, home() / "backups")
    return exercise, workspace.file_for(exercise), backup


@dataclass(frozen=True)
class Statement:
    exercise: Exercise
    text: str
    path: Path | None   # the file the learner edits, when a workspace is found


def statement(key: str) -> Statement:
    exercise = find_exercise(key)
    text = ast.get_docstring(ast.parse(exercise.starter_path.read_text(encoding="utf-8"))) or ""
    workspace = find_workspace()
    return Statement(exercise, text, workspace.file_for(exercise) if workspace else None)


@dataclass(frozen=True)
class ExerciseRow:
    exercise: Exercise
    status: str


def exercise_rows(store: Store) -> list[ExerciseRow]:
    progress = store.progress()
    return [ExerciseRow(ex, progress[ex.id].status if ex.id in progress else "pending") for ex in load_catalog()]
