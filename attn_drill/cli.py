"""The `attn-drill` command line: parse, call one library function, render.

Errors are caught once, in :func:`main`: a DrillError becomes one line on stderr and exit
code 2; a traceback is shown only with --verbose.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console

from attn_drill import practice, render
from attn_drill.errors import DrillError
from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, DEVICES
from attn_drill.store import open_store

app = typer.Typer(
    help="Interview drills on Transformer attention: auto-graded PyTorch exercises and a quiz.",
    no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Device = Enum("Device", {name: name for name in DEVICES}, type=str)


class OutputFormat(str, Enum):
    text = "text"
    gradescope = "gradescope"


ExerciseArg = Annotated[str, typer.Argument(help="Exercise: ex1, ex01, or its name (self_attention).")]


def _store():
    store = open_store()
    for warning in store.warnings:
        err.print(f"warning: {warning}", markup=False)
    return store


@app.callback(invoke_without_command=True)
def status(ctx: typer.Context) -> None:
    """Show progress: exercises passed, the next one, quiz cards due.  Example: attn-drill"""
    if ctx.invoked_subcommand is not None:
        return
    store = _store()
    following = practice.next_exercise(store)
    render.status(out, practice.exercise_rows(store), following.id if following else None, store.due_count())


@app.command()
def init(folder: Annotated[Path, typer.Argument(help="Folder for the workspace.")] = Path("attn-drill-workspace")) -> None:
    """Make a practice workspace with every exercise's starter.  Example: attn-drill init ~/drills"""
    from attn_drill.workspace import init_workspace

    render.init(out, init_workspace(folder))


@app.command("list")
def list_exercises() -> None:
    """List the exercises with their status.  Example: attn-drill list"""
    render.exercise_table(out, practice.exercise_rows(_store()))


@app.command()
def show(exercise: ExerciseArg) -> None:
    """Show an exercise's statement and the file to edit.  Example: attn-drill show ex2"""
    render.statement(out, practice.statement(exercise))


@app.command()
def check(
    exercise: Annotated[Optional[str], typer.Argument(help="Exercise to grade (default: the next one not passed).")] = None,
    file: Annotated[Optional[Path], typer.Option(help="Grade this file instead of the workspace's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (see the CLI contract).")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="gradescope: print a Gradescope results.json.")] = OutputFormat.text,
    timeout: Annotated[float, typer.Option(help="Seconds the learner's code may run.")] = DEFAULT_TIMEOUT_S,
    device: Annotated[Device, typer.Option(help="Where to run the checks: cuda when present (auto), cpu or cuda.")] = Device.auto,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show what your code printed.")] = False,
    all_exercises: Annotated[bool, typer.Option("--all", help="Grade every exercise in the workspace.")] = False,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="Memory your code may use, e.g. 2GiB or 512MiB.")] = DEFAULT_MEMORY,
) -> None:
    """Grade your solution with the hidden checks.  Example: attn-drill check ex1"""
    if all_exercises:
        if exercise or file:
            raise DrillError("--all grades the whole workspace; leave out EXERCISE and --file.")
        from attn_drill.catalog import load_catalog

        keys = [ex.id for ex in load_catalog()]
    elif exercise:
        keys = [exercise]
    else:
        following = practice.next_exercise(_store())
        keys = [following.id if following else "ex1"]
    reports = [practice.grade_exercise(key, file=file, device=device.value, timeout=timeout,
                                       memory_limit=memory_limit) for key in keys]
    if output_format is OutputFormat.gradescope:
        print(json.dumps(reports[0].to_gradescope() if len(reports) == 1 else _merge_gradescope(reports), indent=2))
    elif as_json:
        payload = reports[0].to_dict() if len(reports) == 1 else {
            "passed": all(r.passed for r in reports), "exercises": [r.to_dict() for r in reports]}
        print(json.dumps(payload, indent=2))
    else:
        for result in reports:
            render.report(out, result, verbose=verbose)
        if len(reports) > 1:
            render.reports_summary(out, reports)
    # The verdict is on screen before progress is saved: a store problem cannot hide it.
    store = _store()
    due = sum(practice.record(store, result) for result in reports)
    if due and not (as_json or output_format is OutputFormat.gradescope):
        render.questions_due(out, due)
    raise typer.Exit(0 if all(r.passed for r in reports) else 1)


def _merge_gradescope(reports) -> dict:
    parts = [r.to_gradescope() for r in reports]
    tests = [{**t, "name": f"{r.exercise}: {t['name']}"} for r, p in zip(reports, parts) for t in p["tests"]]
    return {"score": sum(p["score"] for p in parts), "max_score": sum(p["max_score"] for p in parts),
            "execution_time": sum(p["execution_time"] for p in parts), "visibility": "visible", "tests": tests}


@app.command()
def hint(exercise: ExerciseArg) -> None:
    """Show the next hint, one more each time.  Example: attn-drill hint ex1"""
    render.hint(out, practice.hint(_store(), exercise))


@app.command()
def solution(
    exercise: ExerciseArg,
    force: Annotated[bool, typer.Option("--force", help="Show it before you have passed.")] = False,
) -> None:
    """Show the reference solution once you have passed.  Example: attn-drill solution ex1"""
    shown, code = practice.solution(_store(), exercise, force=force)
    render.source(out, f"{shown.id} · reference solution · {shown.file_name}", code)


@app.command()
def reset(exercise: ExerciseArg) -> None:
    """Put the starter back, keeping a backup of your file.  Example: attn-drill reset ex1"""
    shown, path, backup = practice.reset(exercise)
    out.print(f"{shown.id}: {path} is the starter again." + (f" Your file was saved as {backup}." if backup else ""))


class Lang(str, Enum):
    en = "en"
    zh = "zh"


@app.command()
def quiz(
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", help="Only this topic; repeat it or separate topics with commas.")] = None,
    count: Annotated[Optional[int], typer.Option("-n", "--count", help="How many questions (default 10; with --review or --leeches: all of them).")] = None,
    review: Annotated[bool, typer.Option("--review", help="Ask every question due today by spaced repetition, most overdue first.")] = False,
    leeches: Annotated[bool, typer.Option("--leeches", help="Drill the leeches: questions missed 4 times or more, most missed first.")] = False,
    lang: Annotated[Optional[Lang], typer.Option("--lang", help="Language of the questions (default: from the locale, LANG=zh_CN.UTF-8 gives zh).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Pick the same questions again (with the same history).")] = None,
) -> None:
    """Take an interview quiz on attention.

    Choices, true/false, numbers, code and open questions, in English or Chinese. Each answer
    is saved at once and scheduled with FSRS spaced repetition; q, quit or exit at any prompt,
    Ctrl-C or the end of input ends the quiz and keeps your answers. Exit code: 0 when every
    answer was right (or none was given), 1 when an answer was wrong (a card rated Again counts
    as wrong), 2 on usage errors.  Example: attn-drill quiz --topic masking -n 5"""
    from attn_drill.quiz import engine

    session = engine.start_quiz(_store(), topics=topic, count=count, review=review, seed=seed,
                                lang=lang.value if lang else None, leeches=leeches)
    render.quiz_start(out, session)
    summary = engine.run_quiz(session, render.TerminalQuiz(out, session.lang))
    render.quiz_summary(out, summary, session.lang)
    raise typer.Exit(summary.exit_code)


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (see the CLI contract).")] = False,
) -> None:
    """Show quiz mastery and exercise progress.

    By topic: questions in the bank, answered at least once, right the last time, due today,
    and retention (the share of due reviews answered right); a calendar of reviews over the
    last 12 weeks; leeches (questions missed 4 times or more).  Example: attn-drill stats"""
    from attn_drill.quiz.stats import stats as gather

    shown = gather(_store())
    if as_json:
        print(json.dumps(shown.to_dict(), indent=2))
    else:
        render.stats(out, shown)


@app.command()
def validate(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (see the CLI contract).")] = False,
    jobs: Annotated[int, typer.Option(help="Gradings to run at once.")] = 2,
) -> None:
    """Prove the content: schemas, references pass, starters fail.  Example: attn-drill validate"""
    from attn_drill.validation import ValidationReport, validate_exercises, validate_questions

    result = ValidationReport()
    validate_questions(result)
    if as_json:
        validate_exercises(result, jobs=jobs)
        print(json.dumps(result.to_dict(), indent=2))
    else:
        with err.status("grading every reference and starter...") as spinner:
            validate_exercises(result, jobs=jobs, on_progress=lambda done: spinner.update(f"graded {done}"))
        render.validation(out, result)
    raise typer.Exit(1 if result.problems else 0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    try:
        code = app(args=args, prog_name="attn-drill", standalone_mode=False)
    except DrillError as error:
        if verbose:
            err.print_exception()
        err.print(f"error: {error}", markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("interrupted.")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except Exception as error:  # a bug in attn-drill: one line unless asked for more
        if verbose:
            err.print_exception()
        err.print(f"error: attn-drill failed unexpectedly ({type(error).__name__}: {error}). "
                  "Run again with --verbose for the traceback, and please report it.", markup=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
