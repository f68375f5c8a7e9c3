"""The `attn-drill` command line: parse, call one library function, render.

Errors are caught once, in :func:`main`: a DrillError becomes one line on stderr and exit
code 2; a traceback is shown only with --verbose.
"""

from __future__ import annotations

import functools
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
    if _lang() == "zh" and len(store.warnings_zh) == len(store.warnings):
        for warning in store.warnings_zh:
            err.print(f"警告：{warning}", markup=False)
    else:
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
    pack: Annotated[Optional[list[Path]], typer.Option("--pack", help="An exercise pack folder to use beside the "
                                                       "built-in content (repeatable; or ATTN_DRILL_PACKS). Any "
                                                       "command takes it, before or after its name.")] = None,
) -> None:
    """Show progress: exercises passed, the next one, quiz cards due.

    \b
    Example:
      attn-drill
      attn-drill --lang zh list"""
    _settings["lang"] = _settings["lang"] or (lang.value if lang else None)
    if pack:
        from attn_drill.catalog import use_packs

        use_packs(pack)
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
        raise DrillError("--json and --format gradescope each print one JSON document: choose one.",
                         zh="--json 和 --format gradescope 各自输出一份 JSON 文档：请只选一个。")
    lang = _lang()
    if all_exercises:
        if exercise or file:
            raise DrillError("--all grades the whole workspace; leave out EXERCISE and --file.",
                             zh="--all 评测整个工作区；请去掉 EXERCISE 和 --file。")
        reports = _check_all(device.value, timeout, memory_limit, jobs)
    else:
        key = exercise
        if key is None and file is None:
            following = practice.next_exercise(_store())
            key = following.id if following else "ex1"
        reports = [practice.grade_exercise(key, file=file, device=device.value, timeout=timeout,
                                           memory_limit=memory_limit, lang=lang)]
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
        return pool.grade_all(files, device=device, timeout=timeout, memory_limit=memory_limit, lang=_lang(),
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
    raise typer.Exit(_command().main(args=[command, "--help"] if command else ["--help"], prog_name="attn-drill",
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
    Ctrl-C or the end of input ends the quiz and keeps your answers.

    Exit code: 0 when every answer was right (or none was given), 1 when an answer was wrong
    (a card rated Again counts as wrong), 2 on usage errors.

    \b
    Example:
      attn-drill quiz --topic masking -n 5
      attn-drill quiz --review"""
    from attn_drill.quiz import engine

    session = engine.start_quiz(_store(), topics=topic, count=count, review=review, seed=seed,
                                lang=lang.value if lang else _settings["lang"], leeches=leeches)
    render.quiz_start(out, session)
    summary = engine.run_quiz(session, render.TerminalQuiz(out, session.lang))
    render.quiz_summary(out, summary, session.lang)
    raise typer.Exit(summary.exit_code)


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (its shape: docs/json.md).")] = False,
) -> None:
    """Show quiz mastery and exercise progress.

    By topic: questions in the bank, answered at least once, right the last time, due today,
    and retention (the share of due reviews answered right); a calendar of reviews over the
    last 12 weeks; leeches (questions missed 4 times or more).

    \b
    Example:
      attn-drill stats
      attn-drill stats --json"""
    from attn_drill.quiz.stats import stats as gather

    shown = gather(_store())
    if as_json:
        print(json.dumps(shown.to_dict(), indent=2))
    else:
        render.stats(out, shown, lang=_lang())


@app.command()
def validate(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (its shape: docs/json.md).")] = False,
    jobs: Annotated[int, typer.Option(help="Gradings to run at once (default: the number of cores).")] = 0,
    mutants: Annotated[bool, typer.Option("--mutants", help="Also run the mutation audit: every reference's "
                                          "mutants must fail its checks.")] = False,
    exercise: Annotated[Optional[list[str]], typer.Option("--exercise", "-e", help="Only this exercise (repeatable): "
                                                          "its reference, its starter and, with --mutants, its "
                                                          "mutants.", autocompletion=_exercise_ids)] = None,
) -> None:
    """Prove the content: schemas, references pass, starters fail, mutants are caught.

    \b
    Example:
      attn-drill validate
      attn-drill validate --exercise ex14 --pack ~/my-pack
      attn-drill validate --mutants --exercise ex2 --json"""
    from attn_drill.validation import ValidationReport, validate_exercises, validate_mutants, validate_questions

    result = ValidationReport()
    validate_questions(result)
    zh = _lang() == "zh"
    with err.status("正在评测每个参考答案和初始代码……" if zh else "grading every reference and starter...") as spinner:
        def progress(done: str) -> None:
            if not as_json:
                spinner.update(f"已评测 {done}" if zh else f"graded {done}")

        validate_exercises(result, jobs=jobs, only=exercise, on_progress=progress)
        if mutants:
            validate_mutants(result, jobs=jobs, only=exercise, on_progress=progress)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render.validation(out, result, lang=_lang())
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
    warm grader serves the whole session (torch is imported once, not per save); a save made
    while a check runs stops it and is checked at once. Progress is saved after every check.

    \b
    Example:
      attn-drill watch
      attn-drill watch ex2 --manual"""
    from attn_drill.watch import Watcher

    with Watcher(_store(), exercise, device=device.value, timeout=timeout, memory_limit=memory_limit,
                 lang=_lang()) as watcher:
        if not manual:
            watcher.follow_files()
        render.watch(out, watcher, manual=manual, lang=_lang())
    raise typer.Exit(0)


@app.command()
def gradescope(
    exercise: ExerciseArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the bundle: new, empty, or a bundle written before.")],
    make_zip: Annotated[bool, typer.Option("--zip", help="Also write autograder.zip in it, ready to upload.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds a submission's code may run.")] = DEFAULT_TIMEOUT_S,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="Memory a submission's code may use, e.g. 2GiB.")] = DEFAULT_MEMORY,
) -> None:
    """Write a Gradescope autograder bundle for one exercise (docs/gradescope.md).

    setup.sh installs the CPU build of torch, the pinned dependencies and this attn-drill, as
    a wheel; run_autograder grades the submitted file and writes results.json.

    \b
    Example:
      attn-drill gradescope ex2 --out gradescope-ex2 --zip"""
    from attn_drill.gradescope import write_bundle

    zh = _lang() == "zh"
    with err.status("正在为评分包构建 attn-drill 的 wheel……" if zh else "building attn-drill's wheel for the bundle..."):
        bundle = write_bundle(exercise, out_dir, make_zip=make_zip, timeout=timeout, memory_limit=memory_limit)
    out.print(f"{bundle.exercise.id}：Gradescope 自动评分包已写入 {bundle.folder}" if zh else
              f"{bundle.exercise.id}: Gradescope autograder written to {bundle.folder}", markup=False)
    for name in bundle.files:
        out.print(f"  {name}", markup=False)
    if bundle.zip_path:
        out.print(f"上传 {bundle.zip_path}。" if zh else f"Upload {bundle.zip_path}.", markup=False)
    else:
        out.print("把其中的文件（不是文件夹）打成 zip 再上传，或加 --zip 再运行一次。" if zh else
                  "Zip its files (not the folder) and upload the archive, or run again with --zip.", markup=False)


@app.command()
def bench(
    exercise: ExerciseArg,
    file: Annotated[Optional[Path], typer.Option(help="Time this file instead of the workspace's.")] = None,
    device: Annotated[Device, typer.Option(help="Where to run: cuda when present (auto), cpu or cuda.")] = Device.auto,
    lengths: Annotated[Optional[str], typer.Option(help="Sequence lengths: 128,256,512 or 128..4096 (doubling); "
                                                        "default 128..4096 on CPU, 512..16384 on CUDA.")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per length; the median is shown.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs before them.")] = 1,
    plot: Annotated[Optional[Path], typer.Option(help="Also write a PNG of time and memory against L "
                                                      "(needs matplotlib: pip install 'attn-drill[plot]').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds your code may run in all.")] = DEFAULT_TIMEOUT_S,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="Memory your code may use, e.g. 2GiB.")] = DEFAULT_MEMORY,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show what your code printed.")] = False,
) -> None:
    """Time your code against the reference and PyTorch's built-in, over growing lengths.

    For ex1, ex2, ex6, ex9 and ex10: the median time and the peak memory at each length, and
    how both grow with L. Your code runs in the sandboxed worker, as in `check`; each series
    stops before a length past its time or memory budget. Exit code 1 when your code fails.

    \b
    Example:
      attn-drill bench ex10 --lengths 256..4096 --plot ex10.png"""
    from attn_drill import bench as benching

    if plot is not None:
        benching.require_plotting()  # before the minutes of timing, not after
    options = {"file": file, "device": device.value, "lengths": benching.parse_lengths(lengths), "runs": runs,
               "warmup": warmup, "timeout": timeout, "memory_limit": memory_limit, "lang": _lang()}
    if as_json:
        report = benching.bench_exercise(exercise, **options)
        print(json.dumps(report.to_dict(), indent=2))
    else:
        with err.status(f"正在计时 {exercise}：你的代码、参考实现和内置实现……" if _lang() == "zh" else
                        f"timing {exercise}: your code, the reference and the built-in..."):
            report = benching.bench_exercise(exercise, **options)
        render.bench(out, report, verbose=verbose, lang=_lang())
    if plot is not None and report.problem is None:
        benching.write_plot(report, plot)
        if not as_json:
            out.print(f"图已写入 {plot}。" if _lang() == "zh" else f"Plot written to {plot}.", markup=False)
    raise typer.Exit(0 if report.passed else 1)


@app.command()
def new(exercise: Annotated[str, typer.Argument(help="The new exercise's id and name: ex14 or ex14_rope_scaling.")]) -> None:
    """Scaffold an exercise in your pack: statement, reference, starter, checks, catalog entry.

    The pack is the folder given with --pack (made if missing); `attn-drill validate --pack DIR`
    then proves the scaffold: its reference passes, its starter fails.

    \b
    Example:
      attn-drill new ex14_rope_scaling --pack ~/my-pack"""
    from attn_drill.authoring import new_exercise
    from attn_drill.catalog import pack_folders

    packs = pack_folders()
    if not packs:
        raise DrillError("say which pack folder to write into: `attn-drill new EX --pack DIR`.",
                         zh="请指定要写入的练习包文件夹：`attn-drill new EX --pack DIR`。")
    made = new_exercise(exercise, packs[0])
    render.scaffold(out, made, lang=_lang())


def _global_options(args: list[str]) -> list[str]:
    """Take --pack DIR and --lang L from anywhere on the line (every command accepts them, before
    or after its name, quiz's --lang included); return the rest for the commands."""
    from attn_drill.catalog import use_packs

    packs, rest, i = [], [], 0
    _settings["lang"] = None   # each run starts afresh (tests call main() many times in one process)
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("--pack", "--lang") and (eq or i + 1 < len(args)):
            value = value if eq else args[i + 1]
            if name == "--pack":
                packs.append(value)
            elif value not in ("en", "zh"):
                raise DrillError(f"--lang must be en or zh, got '{value}'.", zh=f"--lang 必须是 en 或 zh，实际是 '{value}'。")
            else:
                _settings["lang"] = value
            i += 1 if eq else 2
            continue
        rest.append(arg)
        i += 1
    use_packs(packs)
    return rest


class GradeFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def grade(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of submissions: a .py file per student "
                                                               "(named by its stem) or a folder per student.")],
    exercise: Annotated[str, typer.Option("--exercise", "-e", help="Exercise the submissions are for: ex2, ex02 or "
                                                                   "its name.", autocompletion=_exercise_ids)],
    output_format: Annotated[GradeFormat, typer.Option("--format", help="table (for people), csv or json "
                                                                        "(its shape: docs/json.md).")] = GradeFormat.table,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the CSV or JSON to this file (atomically) "
                                                                   "instead of printing it.")] = None,
    jobs: Annotated[int, typer.Option(help="Gradings at once (default: the number of cores).")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds each submission's code may run.")] = DEFAULT_TIMEOUT_S,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="Memory each submission's code may use, "
                                                                     "e.g. 2GiB or 512MiB.")] = DEFAULT_MEMORY,
    device: Annotated[Device, typer.Option(help="Where to run the checks: cuda when present (auto), cpu or cuda.")] = Device.auto,
    allow_unsandboxed: Annotated[bool, typer.Option("--allow-unsandboxed", help="Grade even where bubblewrap cannot "
                                                    "run: the submissions' code then runs as you.")] = False,
) -> None:
    """Grade a folder of submissions to one exercise, in parallel, with the hidden checks.

    Each submission runs in a sandboxed worker of its own: a crash, a hang or tampering fails
    that submission only. One row per student: checks passed, score, time, the first failure
    reasons. Exit code: 0 when every submission passed, 1 otherwise, 2 on usage errors.

    \b
    Example:
      attn-drill grade submissions/ --exercise ex2 --format csv --out grades.csv"""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from attn_drill.batch import grade_folder
    from attn_drill.workspace import write_atomically

    if out_file is not None and output_format is GradeFormat.table:
        guessed = {".csv": GradeFormat.csv, ".json": GradeFormat.json}.get(out_file.suffix.lower())
        if guessed is None:
            raise DrillError("--out writes CSV or JSON: add --format csv or --format json.",
                             zh="--out 写出 CSV 或 JSON：请加上 --format csv 或 --format json。")
        output_format = guessed
    if out_file is not None and out_file.is_dir():
        raise DrillError(f"--out {out_file} is a folder; name the file to write.",
                         zh=f"--out {out_file} 是一个文件夹；请写明要写入的文件。")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        zh = _lang() == "zh"
        task = progress.add_task("正在查找提交" if zh else "finding submissions", total=None)

        def advance(stage: str, done: int, total: int) -> None:
            if zh:
                words = "正在启动评分进程" if stage == "starting" else f"正在评分 {exercise}"
            else:
                words = "starting the graders" if stage == "starting" else f"grading {exercise}"
            progress.update(task, description=words, completed=done, total=total)

        report = grade_folder(folder, exercise, jobs=jobs, device=device.value, timeout=timeout,
                              memory_limit=memory_limit, allow_unsandboxed=allow_unsandboxed, lang=_lang(),
                              on_progress=advance)
    if output_format is GradeFormat.table:
        render.grade_table(out, report, lang=_lang())
    else:
        text = report.to_csv() if output_format is GradeFormat.csv else json.dumps(report.to_dict(), indent=2) + "\n"
        if out_file is None:
            sys.stdout.write(text)
            if report.sandbox == "none":
                err.print(render.GRADE_WORDS[_lang()]["unsandboxed"], style="yellow", markup=False)
        else:
            write_atomically(out_file, text)
            render.grade_table(err, report, written=out_file, lang=_lang())
    raise typer.Exit(0 if report.passed else 1)


def _show_usage_error_zh(error: click.ClickException) -> None:
    """Click's usage error under --lang zh: a Chinese first line with click's own message, then
    the usage line and where to find help."""
    err.print(f"用法错误：{error.format_message()}", markup=False)
    context = getattr(error, "ctx", None)
    if context is not None:
        err.print(context.get_usage(), markup=False)
        names = context.help_option_names or ["--help"]
        err.print(f"运行 `{context.command_path} {names[0]}` 查看帮助。", markup=False)


def _command() -> click.Group:
    """The app as click runs it, every help text and click's own words in the user's language."""
    from attn_drill import helptext

    lang = _lang()
    helptext.speak_click(lang)
    return _click_group(lang)


@functools.cache
def _click_group(lang: str) -> click.Group:
    """Built once per language and process: a long-lived process (the tests, an editor's
    integration) runs many commands, each of which would otherwise rebuild every command."""
    from attn_drill import helptext

    command = typer.main.get_command(app)
    helptext.localize(command, lang)
    return command


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    try:
        args = _global_options(list(args))
        code = _command().main(args=args, prog_name="attn-drill", standalone_mode=False)
    except DrillError as error:
        if verbose:
            err.print_exception()
        chinese = _lang() == "zh"
        err.print(f"错误：{error.text('zh')}" if chinese else f"error: {error}", markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("已中断。" if _lang() == "zh" else "interrupted.")
        sys.exit(130)
    except click.ClickException as error:
        if _lang() == "zh":
            _show_usage_error_zh(error)
        else:
            error.show()
        sys.exit(error.exit_code)
    except Exception as error:  # a bug in attn-drill: one line unless asked for more
        if verbose:
            err.print_exception()
        if _lang() == "zh":
            err.print(f"错误：attn-drill 意外失败（{type(error).__name__}: {error}）。加上 --verbose 再运行一次可以看到 "
                      "traceback，也请报告这个问题。", markup=False)
        else:
            err.print(f"error: attn-drill failed unexpectedly ({type(error).__name__}: {error}). "
                      "Run again with --verbose for the traceback, and please report it.", markup=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
