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
from attn_drill.i18n import QUIZ_TOPICS
from attn_drill.store import open_store

app = typer.Typer(
    help="Interview drills on Transformer attention: auto-graded PyTorch exercises and a quiz.",
    no_args_is_help=False, add_completion=True, pretty_exceptions_enable=False,
    rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Device = Enum("Device", {name: name for name in DEVICES}, type=str)


class OutputFormat(str, Enum):
    text = "text"
    gradescope = "gradescope"


class Lang(str, Enum):
    en = "en"
    zh = "zh"


def _exercise_ids(incomplete: str) -> list[str]:
    """Shell completion for exercise arguments."""
    from attn_drill.catalog import load_catalog

    return [ex.id for ex in load_catalog() if ex.id.startswith(incomplete)]


ExerciseArg = Annotated[str, typer.Argument(help="Exercise: ex1, ex01, or its name (self_attention).",
                                            autocompletion=_exercise_ids)]
_settings: dict = {"lang": None}


def _lang() -> str:
    from attn_drill.i18n import default_lang

    return _settings["lang"] or default_lang()


def _store():
    store = open_store()
    for warning in store.warnings:
        err.print(f"warning: {warning}", markup=False)
    return store


def _version(value: bool) -> None:
    if value:
        from attn_drill import __version__

        print(f"attn-drill {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def status(
    ctx: typer.Context,
    lang: Annotated[Optional[Lang], typer.Option("--lang", help="Language of everything shown: en or zh "
                                                 "(default: the locale; LANG=zh_CN.UTF-8 gives zh).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Show progress: exercises passed, the next one, quiz cards due.

    \b
    Example:
      attn-drill
      attn-drill --lang zh list"""
    _settings["lang"] = lang.value if lang else None
    if ctx.invoked_subcommand is not None:
        return
    store = _store()
    following = practice.next_exercise(store)
    render.status(out, practice.exercise_rows(store), following.id if following else None, store.due_count(),
                  lang=_lang())


@app.command()
def init(folder: Annotated[Path, typer.Argument(help="Folder for the workspace.")] = Path("attn-drill-workspace")) -> None:
    """Make a practice workspace with every exercise's starter.

    \b
    Example:
      attn-drill init ~/drills"""
    from attn_drill.workspace import init_workspace

    made = init_workspace(folder)
    render.init(out, made, practice.next_exercise(_store(), str(made.root)), lang=_lang())


@app.command("list")
def list_exercises() -> None:
    """List the exercises with their status in this workspace.

    \b
    Example:
      attn-drill list"""
    render.exercise_table(out, practice.exercise_rows(_store()), lang=_lang())


@app.command()
def show(exercise: ExerciseArg) -> None:
    """Show an exercise's statement and the file to edit.

    \b
    Example:
      attn-drill show ex2
      attn-drill --lang zh show ex2"""
    render.statement(out, practice.statement(exercise, _lang()))


@app.command()
def check(
    exercise: Annotated[Optional[str], typer.Argument(help="Exercise to grade (default: the next one not passed, "
                                                           "or the one --file's name says).",
                                                      autocompletion=_exercise_ids)] = None,
    file: Annotated[Optional[Path], typer.Option(help="Grade this file instead of the workspace's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (its shape: docs/json.md).")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="gradescope: print a Gradescope results.json.")] = OutputFormat.text,
    timeout: Annotated[float, typer.Option(help="Seconds the learner's code may run.")] = DEFAULT_TIMEOUT_S,
    device: Annotated[Device, typer.Option(help="Where to run the checks: cuda when present (auto), cpu or cuda.")] = Device.auto,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show what your code printed; with --all, every check.")] = False,
    all_exercises: Annotated[bool, typer.Option("--all", help="Grade every exercise in the workspace.")] = False,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="Memory your code may use, e.g. 2GiB or 512MiB.")] = DEFAULT_MEMORY,
    jobs: Annotated[int, typer.Option(help="With --all: gradings at once (default: the number of cores).")] = 0,
) -> None:
    """Grade your solution with the hidden checks.

    \b
    Example:
      attn-drill check ex1
      attn-drill check --file ~/drafts/ex02_multi_head_attention.py --json"""
    if as_json and output_format is OutputFormat.gradescope:
        raise DrillError("--json and --format gradescope each print one JSON document: choose one.")
    lang = _lang()
    if all_exercises:
        if exercise or file:
            raise DrillError("--all grades the whole workspace; leave out EXERCISE and --file.")
        reports = _check_all(device.value, timeout, memory_limit, jobs)
    else:
        key = exercise
        if key is None and file is None:
            following = practice.next_exercise(_store())
            key = following.id if following else "ex1"
        reports = [practice.grade_exercise(key, file=file, device=device.value, timeout=timeout,
                                           memory_limit=memory_limit)]
    # The verdict is on screen before progress is saved: a store problem cannot hide it.
    if output_format is OutputFormat.gradescope:
        print(json.dumps(reports[0].to_gradescope() if len(reports) == 1 else _merge_gradescope(reports), indent=2))
    elif as_json:
        payload = reports[0].to_dict() if len(reports) == 1 else {
            "passed": all(r.passed for r in reports), "exercises": [r.to_dict() for r in reports]}
        print(json.dumps(payload, indent=2))
    elif len(reports) == 1:
        store = _store()
        following = practice.next_exercise(store, after=reports[0].exercise) if reports[0].passed else None
        render.report(out, reports[0], verbose=verbose, following=following, lang=lang)
    else:
        for result in reports if verbose else ():
            render.report(out, result, verbose=True, lang=lang)
        render.reports_summary(out, reports, lang=lang)
    store = _store()
    due = sum(practice.record(store, result) for result in reports)
    if due and not (as_json or output_format is OutputFormat.gradescope):
        render.questions_due(out, due, lang=lang)
    raise typer.Exit(0 if all(r.passed for r in reports) else 1)


def _check_all(device: str, timeout: float, memory_limit: str, jobs: int):
    """Every exercise of the workspace on a pool of warm graders, with a progress bar."""
    from rich.progress import Progress

    from attn_drill.catalog import load_catalog
    from attn_drill.grading import Pool, check_options

    check_options(device, timeout, memory_limit, "auto")
    files = [(ex, practice.learner_file(ex, None)) for ex in load_catalog()]
    with Progress(console=err, transient=True) as progress, Pool(jobs, device=device) as pool:
        task = progress.add_task("grading", total=len(files))
        return pool.grade_all(files, device=device, timeout=timeout, memory_limit=memory_limit,
                              on_done=lambda i, r: progress.advance(task))


def _merge_gradescope(reports) -> dict:
    parts = [r.to_gradescope() for r in reports]
    tests = [{**t, "name": f"{r.exercise}: {t['name']}"} for r, p in zip(reports, parts) for t in p["tests"]]
    return {"score": sum(p["score"] for p in parts), "max_score": sum(p["max_score"] for p in parts),
            "execution_time": sum(p["execution_time"] for p in parts), "visibility": "visible", "tests": tests}


@app.command()
def hint(exercise: ExerciseArg) -> None:
    """Reveal the next hint, and show every hint revealed so far.

    \b
    Example:
      attn-drill hint ex1"""
    render.hint(out, practice.hint(_store(), exercise), lang=_lang())


@app.command()
def solution(
    exercise: ExerciseArg,
    force: Annotated[bool, typer.Option("--force", help="Show it before you have passed.")] = False,
) -> None:
    """Show the reference solution once you have passed.

    \b
    Example:
      attn-drill solution ex1"""
    shown, code = practice.solution(_store(), exercise, force=force)
    render.source(out, f"{shown.id} · {render.WORDS[_lang()]['solution']} · {shown.file_name}", code)


@app.command()
def reset(exercise: ExerciseArg) -> None:
    """Put the starter back, keeping a backup of your file.

    \b
    Example:
      attn-drill reset ex1"""
    shown, path, backup = practice.reset(_store(), exercise)
    render.reset(out, shown, path, backup, lang=_lang())


@app.command("help")
def help_command(command: Annotated[Optional[str], typer.Argument(help="The command to explain.")] = None) -> None:
    """Show the help of attn-drill, or of one command.

    \b
    Example:
      attn-drill help check"""
    raise typer.Exit(app(args=[command, "--help"] if command else ["--help"], prog_name="attn-drill",
                         standalone_mode=False) or 0)


@app.command()
def quiz(
    topic: Annotated[Optional[list[str]], typer.Option(
        "--topic", "-t", autocompletion=lambda incomplete: [t for t in QUIZ_TOPICS if t.startswith(incomplete)],
        help="Only this topic; repeat it or separate topics with commas. Topics: " + ", ".join(QUIZ_TOPICS) + ".")] = None,
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
                                lang=lang.value if lang else _settings["lang"], leeches=leeches)
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


@app.command()
def watch(
    exercise: Annotated[Optional[str], typer.Argument(help="Exercise to start on (default: the next one not passed).")] = None,
    manual: Annotated[bool, typer.Option("--manual", help="Check when you press Enter, not on save (for file systems whose change events do not arrive).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds the learner's code may run, per check.")] = DEFAULT_TIMEOUT_S,
    device: Annotated[Device, typer.Option(help="Where to run the checks: cuda when present (auto), cpu or cuda.")] = Device.auto,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="Memory your code may use, e.g. 2GiB or 512MiB.")] = DEFAULT_MEMORY,
) -> None:
    """Check the current exercise on every save, and move on when it passes.

    Keys: h shows the next hint, q (or Ctrl-C) quits; with --manual, Enter checks again. One
    warm grader serves the whole session, so a check takes a fraction of a second; progress
    is saved after every check.

    \b
    Example:
      attn-drill watch
      attn-drill watch ex2 --manual"""
    from attn_drill.watch import Watcher

    with Watcher(_store(), exercise, device=device.value, timeout=timeout, memory_limit=memory_limit) as watcher:
        if not manual:
            watcher.follow_files()
        render.watch(out, watcher, manual=manual, lang=_lang())
    raise typer.Exit(0)


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
