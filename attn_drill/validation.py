"""`attn-drill validate`: prove the content. Every catalog entry has its files, every starter
mirrors its reference's definitions, every reference passes its hidden checks and every
starter fails them; the question bank's part is added by the quiz package."""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from attn_drill.catalog import Exercise, load_catalog
from attn_drill.errors import DrillError
from attn_drill.grading import grade


@dataclass
class ValidationReport:
    exercises: dict[str, dict[str, bool]] = field(default_factory=dict)
    questions: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"exercises": self.exercises, "questions": self.questions, "problems": self.problems}


def _definitions(source: str) -> dict[str, str]:
    """Top-level functions and classes with their signatures (methods included)."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = ast.unparse(node.args)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = ast.unparse(item.args)
    return found


def _file_problems(exercise: Exercise) -> list[str]:
    paths = {"starter": exercise.starter_path, "reference": exercise.solution_path, "hidden checks": exercise.checks_path}
    missing = [f"{exercise.id}: the {what} file {path} is missing." for what, path in paths.items() if not path.is_file()]
    if missing:
        return missing
    problems = []
    try:
        starter = _definitions(exercise.starter_path.read_text(encoding="utf-8"))
        reference = _definitions(exercise.solution_path.read_text(encoding="utf-8"))
    except SyntaxError as exc:
        return [f"{exercise.id}: {exc.filename}: syntax error at line {exc.lineno}."]
    for name in exercise.defines:
        for what, found in (("starter", starter), ("reference", reference)):
            if not any(key == name or key.startswith(f"{name}.") for key in found):
                problems.append(f"{exercise.id}: the {what} does not define {name}.")
    for name, signature in reference.items():
        if name in starter and starter[name] != signature:
            problems.append(f"{exercise.id}: {name} has signature ({starter[name]}) in the starter but "
                            f"({signature}) in the reference. Make them match.")
    return problems


def validate_exercises(report: ValidationReport, *, jobs: int = 2,
                       on_progress: Callable[[str], None] = lambda message: None) -> None:
    """Grade every reference and every starter (in parallel) and record the outcome."""
    exercises = load_catalog()
    runnable = []
    for exercise in exercises:
        problems = _file_problems(exercise)
        report.problems += problems
        report.exercises[exercise.id] = {"reference_passes": False, "starter_fails": False}
        if not any("missing" in p for p in problems):
            runnable.append(exercise)

    def run(job: tuple[Exercise, str]) -> tuple[Exercise, str, bool, list[str]]:
        exercise, which = job
        path = exercise.solution_path if which == "reference" else exercise.starter_path
        try:
            result = grade(exercise, path, device="cpu")
        except DrillError as exc:
            return exercise, which, False, [str(exc)]
        on_progress(f"{exercise.id} {which}")
        failed = [f"{c.name}: {c.message.splitlines()[0] if c.message else ''}" for c in result.checks if not c.passed]
        return exercise, which, result.passed, failed

    jobs_list = [(exercise, which) for exercise in runnable for which in ("reference", "starter")]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for exercise, which, passed, failed in pool.map(run, jobs_list):
            if which == "reference":
                report.exercises[exercise.id]["reference_passes"] = passed
                if not passed:
                    report.problems.append(f"{exercise.id}: the reference fails its checks: {'; '.join(failed[:3])}")
            else:
                report.exercises[exercise.id]["starter_fails"] = not passed
                if passed:
                    report.problems.append(f"{exercise.id}: the starter passes its checks; they test nothing it lacks.")


def validate_questions(report: ValidationReport) -> None:
    """Check the question bank against its schema (docs/question-bank.md): fill the report's
    ``questions`` counts and add every problem, naming the file, the question id and the field."""
    from attn_drill.quiz.bank import bank_report

    report.questions, problems = bank_report()
    report.problems += problems
