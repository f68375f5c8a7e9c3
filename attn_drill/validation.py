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
    mutants: dict[str, dict] = field(default_factory=dict)   # with --mutants: per exercise

    def to_dict(self) -> dict:
        found = {"exercises": self.exercises, "questions": self.questions, "problems": self.problems,
                 "warnings": self.warnings}
        return {**found, "mutants": self.mutants} if self.mutants else found


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
    texts = [ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
             for path in (exercise.starter_path, exercise.solution_path)]
    if texts[0] != texts[1]:
        problems.append(f"{exercise.id}: the starter's statement (its docstring) differs from the reference's. "
                        "Copy the reference's docstring into the starter.")
    for name, signature in reference.items():
        if name in starter and starter[name] != signature:
            problems.append(f"{exercise.id}: {name} has signature ({starter[name]}) in the starter but "
                            f"({signature}) in the reference. Make them match.")
    return problems


def _chosen(only: list[str] | None) -> list[Exercise]:
    """The catalog's exercises, in its order, or only those ``only`` names (ex2, ex02, its name)."""
    from attn_drill.catalog import find_exercise

    wanted = {find_exercise(key).id for key in only} if only else None
    return [ex for ex in load_catalog() if wanted is None or ex.id in wanted]


def validate_exercises(report: ValidationReport, *, jobs: int = 2, only: list[str] | None = None,
                       on_progress: Callable[[str], None] = lambda message: None) -> None:
    """Grade every reference and every starter (or only those of the exercises ``only`` names),
    in parallel, and record the outcome."""
    from attn_drill.catalog import pack_problems

    exercises = _chosen(only)
    report.problems += pack_problems()
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

    from attn_drill.quiz.bank import QUESTIONS_DIR, pack_question_dirs, scan

    review = review_bank()
    report.questions = review.summary
    report.problems += review.problems
    report.warnings += review.warnings
    taken = {q.id for q in scan(QUESTIONS_DIR).questions}
    for folder in pack_question_dirs():   # an instructor's bank is held to the same rules
        pack = review_bank(folder, expected_topics=(), checks_dir=folder.parent / "checks")
        report.problems += [f"pack {folder}: {problem}" for problem in pack.problems]
        report.warnings += [f"pack {folder}: {warning}" for warning in pack.warnings]
        report.problems += [f"pack {folder}: {q.id}: the id is taken by a built-in question; choose another."
                            for q in scan(folder).questions if q.id in taken]


def validate_mutants(report: ValidationReport, *, jobs: int = 0, only: list[str] | None = None,
                     on_progress: Callable[[str], None] = lambda message: None) -> None:
    """The mutation audit: grade every mutant of each reference (attn_drill.mutation) with the
    exercise's checks. Killed: a check failed. Equivalent: every check passed and every answer
    the worker gave equals the reference's on the same probe (the checks' own calls, recorded
    while grading the reference). Survived: every check passed although some answer differed,
    a bug the checks let through; each is reported with its diff, and each is a problem."""
    import tempfile
    from pathlib import Path

    from attn_drill.mutation import mutants

    exercises = _chosen(only)
    with tempfile.TemporaryDirectory(prefix="attn-drill-mutants-") as folder, Pool(jobs) as pool:
        root = Path(folder)
        tapes = {ex.id: root / f"{ex.id}.tape" for ex in exercises}
        references = pool.grade_all([(ex, ex.solution_path) for ex in exercises], device="cpu",
                                    tape_for=lambda i: {"record": str(tapes[exercises[i].id])})
        jobs_list, names = [], []
        for exercise, graded in zip(exercises, references):
            report.mutants[exercise.id] = {"killed": 0, "survived": [], "equivalent": 0}
            if not graded.passed:
                report.problems.append(f"{exercise.id}: the reference fails its checks, so its mutants prove nothing.")
                continue
            for number, mutant in enumerate(mutants(exercise.solution_path.read_text(encoding="utf-8"))):
                path = root / f"{exercise.id}-{number}" / exercise.file_name
                path.parent.mkdir()
                path.write_text(mutant.source, encoding="utf-8")
                jobs_list.append((exercise, path))
                names.append(mutant)
        results = pool.grade_all(jobs_list, device="cpu", timeout=30, first_failure=True,  # one failure kills
                                 tape_for=lambda i: {"compare": str(tapes[jobs_list[i][0].id])},
                                 on_done=lambda i, _: on_progress(f"{jobs_list[i][0].id} {names[i].name}"))
    for (exercise, _), mutant, result in zip(jobs_list, names, results):
        outcome = report.mutants[exercise.id]
        if not result.passed:
            outcome["killed"] += 1
        elif result.differs:
            outcome["survived"].append({"name": mutant.name, "diff": mutant.diff})
            report.problems.append(f"{exercise.id}: mutant {mutant.name} survives the checks:\n{mutant.diff}")
        else:
            outcome["equivalent"] += 1
