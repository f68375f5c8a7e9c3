"""`attn-drill validate`: prove the content. Every catalog entry has its files, every starter
mirrors its reference's definitions, every reference passes its hidden checks and every
starter fails them; the question bank's part is added by the quiz package."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

from attn_drill.catalog import Exercise, load_catalog
from attn_drill.grading import Pool


@dataclass
class ValidationReport:
    exercises: dict[str, dict[str, bool]] = field(default_factory=dict)
    questions: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # reported, but `validate` still exits 0

    def to_dict(self) -> dict:
        return {"exercises": self.exercises, "questions": self.questions, "problems": self.problems,
                "warnings": self.warnings}


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

    jobs_list = [(exercise, which) for exercise in runnable for which in ("reference", "starter")]
    files = [(exercise, exercise.solution_path if which == "reference" else exercise.starter_path)
             for exercise, which in jobs_list]
    with Pool(jobs) as pool:
        results = pool.grade_all(files, device="cpu",
                                 on_done=lambda i, _: on_progress(f"{jobs_list[i][0].id} {jobs_list[i][1]}"))
    for (exercise, which), result in zip(jobs_list, results):
        if which == "reference":
            report.exercises[exercise.id]["reference_passes"] = result.passed
            if not result.passed:
                failed = [f"{c.name}: {c.message.splitlines()[0] if c.message else ''}"
                          for c in result.checks if not c.passed]
                report.problems.append(f"{exercise.id}: the reference fails its checks: {'; '.join(failed[:3])}")
        else:
            report.exercises[exercise.id]["starter_fails"] = not result.passed
            if result.passed:
                report.problems.append(f"{exercise.id}: the starter passes its checks; they test nothing it lacks.")


def validate_questions(report: ValidationReport) -> None:
    """Check the question bank against its schema and rules (docs/question-bank.md): fill the
    report's ``questions`` counts (with the form statistics under "form"), add every problem,
    naming the file, the question id and the field, and every warning (form statistics out of
    range, glossary drift)."""
    from attn_drill.quiz.bank import review_bank

    review = review_bank()
    report.questions = review.summary
    report.problems += review.problems
    report.warnings += review.warnings
