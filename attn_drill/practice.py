"""What the learner's commands do, without any terminal code: check, hint, solution, reset,
status. Each function takes plain values and returns data for the CLI to render."""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from attn_drill.catalog import Exercise, find_exercise, load_catalog
from attn_drill.errors import DrillError
from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, GradeReport
from attn_drill.store import Store, home
from attn_drill.workspace import find_workspace, require_workspace, reset_exercise


def workspace_key(near: Path | None = None) -> str:
    """Which workspace progress belongs to: the one at or above ``near`` (default: the current
    folder), or '' outside any workspace."""
    workspace = find_workspace(near)
    return str(workspace.root) if workspace else ""


def learner_file(exercise: Exercise, file: Path | None) -> Path:
    """The file to grade: ``file``, or the workspace's file for the exercise."""
    if file is not None:
        return file
    workspace = require_workspace("grade an exercise, or pass --file PATH", "评测练习，或者用 --file PATH 指定文件")
    path = workspace.file_for(exercise)
    if not path.exists():
        raise DrillError(f"{path} is missing. Try `attn-drill reset {exercise.id}` to put the starter back.",
                         zh=f"{path} 不见了。运行 `attn-drill reset {exercise.id}` 可以放回初始代码。")
    return path


FILE_NAME = re.compile(r"ex0*(\d+)_[a-z0-9_]+\.py")


def exercise_for_file(path: Path) -> Exercise:
    """The exercise a file named like ``ex02_multi_head_attention.py`` is for."""
    match = FILE_NAME.fullmatch(path.name)
    if match is None:
        raise DrillError(f"cannot tell which exercise {path.name} is for. Name it: "
                         f"`attn-drill check ex1 --file {shlex.quote(str(path))}`.",
                         zh=f"看不出 {path.name} 是哪个练习的文件。请写明练习："
                            f"`attn-drill check ex1 --file {shlex.quote(str(path))}`。")
    return find_exercise(match.group(1))


def grade_exercise(key: str | None, *, file: Path | None = None, device: str = "auto",
                   timeout: float = DEFAULT_TIMEOUT_S, memory_limit: str = DEFAULT_MEMORY,
                   engine=None, lang: str = "en") -> GradeReport:
    """Grade one exercise (the workspace's file, or ``file``; with ``file`` and no ``key``, the
    exercise its name says); nothing is saved yet. ``engine`` keeps the grader warm; ``lang``
    is the language of the check titles and messages."""
    from attn_drill.grading import grade

    exercise = find_exercise(key) if key else exercise_for_file(file)
    path = learner_file(exercise, file)
    if engine is not None:
        return engine.grade(exercise, path, device=device, timeout=timeout, memory_limit=memory_limit, lang=lang)
    return grade(exercise, path, device=device, timeout=timeout, memory_limit=memory_limit, lang=lang)


def record(store: Store, report: GradeReport) -> int:
    """Save a grading's outcome in the workspace of the graded file; the quiz questions on each
    named mistake's concept become due now. Returns how many."""
    store.record_check(report.exercise, report.passed, report.mistakes, workspace_key(Path(report.file).parent))
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


def next_exercise(store: Store, workspace: str | None = None, after: str | None = None) -> Exercise | None:
    """The first exercise not passed yet in this workspace (the one `check` grades when none is
    named), or the first after ``after``."""
    progress = store.progress(workspace_key() if workspace is None else workspace)
    exercises = load_catalog()
    if after is not None:
        exercises = [ex for ex in exercises if ex.number > find_exercise(after).number] or exercises
    for exercise in exercises:
        if not progress.get(exercise.id) or progress[exercise.id].status != "passed":
            return exercise
    return None


@dataclass(frozen=True)
class Hint:
    exercise: Exercise
    shown: tuple[str, ...]    # every hint revealed so far, the newest last (in the language asked for)
    total: int

    @property
    def number(self) -> int:
        return len(self.shown)

    def in_lang(self, lang: str) -> tuple[str, ...]:
        """The hints revealed so far in ``lang``: Chinese under "zh" where the catalog gives them."""
        return self.exercise.hints_in(lang)[:self.number]


def hint(store: Store, key: str, lang: str = "en") -> Hint:
    """Reveal one more hint (up to the last) and return all revealed so far, in ``lang``
    (Chinese under "zh" where the catalog has ``hints_zh``, else English)."""
    exercise = find_exercise(key)
    shown = store.take_hint(exercise.id, len(exercise.hints))
    return Hint(exercise, exercise.hints_in(lang)[:shown], len(exercise.hints))


def solution(store: Store, key: str, *, force: bool = False) -> tuple[Exercise, str]:
    exercise = find_exercise(key)
    if not force and not store.ever_passed(exercise.id):
        raise DrillError(f"{exercise.id} has not passed yet, so its solution stays hidden. "
                         f"Try `attn-drill hint {exercise.id}`, or `attn-drill solution {exercise.id} --force`.",
                         zh=f"{exercise.id} 还没有通过，所以参考答案暂不显示。可以先看提示："
                            f"`attn-drill hint {exercise.id}`，或者直接查看：`attn-drill solution {exercise.id} --force`。")
    return exercise, exercise.solution_path.read_text(encoding="utf-8")


def reset(store: Store, key: str) -> tuple[Exercise, Path, Path | None]:
    """Put the starter back (the exercise is pending again in this workspace); returns the
    exercise, its file and the backup of the old one."""
    exercise = find_exercise(key)
    workspace = require_workspace(f"put {exercise.id}'s starter back", f"放回 {exercise.id} 的初始代码")
    backup = reset_exercise(exercise, workspace, home() / "backups")
    store.forget_status(exercise.id, str(workspace.root))
    return exercise, workspace.file_for(exercise), backup


@dataclass(frozen=True)
class Statement:
    exercise: Exercise
    text: str           # Markdown, in the language asked for
    path: Path | None   # the file the learner edits, when a workspace is found
    lang: str


ZH_MARKER = "中文："
CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
CJK_LINE_BREAK = re.compile(rf"(?<=[{CJK}])\n(?=[{CJK}])")


def statement(key: str, lang: str = "en") -> Statement:
    """The exercise's statement (its starter's docstring) as Markdown, in ``lang``: the part
    before the "中文：" line is English, the part after it Chinese; the title line is left out."""
    exercise = find_exercise(key)
    text = ast.get_docstring(ast.parse(exercise.starter_path.read_text(encoding="utf-8"))) or ""
    english, _, chinese = text.partition(ZH_MARKER)
    chosen = chinese if lang == "zh" and chinese.strip() else english
    lines = chosen.strip().splitlines()
    if lines and lines[0].startswith(exercise.id):
        lines = lines[1:]   # "ex2 · Multi-head attention": the title is shown above
    markdown = re.sub(r"``(.+?)``", r"`\1`", "\n".join(lines).strip())
    markdown = CJK_LINE_BREAK.sub("", markdown)  # a hard-wrapped Chinese line joins without a space
    workspace = find_workspace()
    return Statement(exercise, markdown, workspace.file_for(exercise) if workspace else None, lang)


@dataclass(frozen=True)
class ExerciseRow:
    exercise: Exercise
    status: str


def exercise_rows(store: Store, workspace: str | None = None) -> list[ExerciseRow]:
    """Every exercise with its status in this workspace (default: the current folder's)."""
    progress = store.progress(workspace_key() if workspace is None else workspace)
    return [ExerciseRow(ex, progress[ex.id].status if ex.id in progress else "pending") for ex in load_catalog()]
