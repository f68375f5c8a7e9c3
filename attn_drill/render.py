"""Everything attn-drill shows a person, with rich. The library returns data; this draws it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from attn_drill.grading import GradeReport
from attn_drill.practice import ExerciseRow, Hint, Statement
from attn_drill.validation import ValidationReport
from attn_drill.workspace import InitResult

STATUS_STYLE = {"passed": "green", "failed": "red", "pending": "dim"}
DIFFICULTY = {1: "easy", 2: "medium", 3: "hard"}


def report(console: Console, result: GradeReport, *, verbose: bool = False) -> None:
    """One line per check, the failures' messages beneath, then the verdict."""
    console.print(f"[bold]{result.exercise}[/] · {Path(result.file).name} · {result.device} · {result.duration_s:.1f} s")
    shown: set[str] = set()
    for check in result.checks:
        mark = "[green]✓[/]" if check.passed else "[red]✗[/]"
        console.print(f" {mark} {check.name}", highlight=False)
        if not check.passed and check.message:
            repeated = check.message in shown
            console.print(Text("     (same cause as above)" if repeated else _indent(check.message, "     "),
                               style="dim" if repeated else "yellow"))
            shown.add(check.message)
    passed = sum(c.passed for c in result.checks)
    if result.passed:
        console.print(f"[bold green]All {passed} checks passed.[/] Next: `attn-drill check` grades the next exercise.")
    else:
        console.print(f"[bold red]{passed} of {len(result.checks)} checks passed.[/] "
                      f"Fix the first failure, then run the check again; `attn-drill hint {result.exercise}` helps.")
    if verbose and result.output.strip():
        console.print(Panel(Text(result.output), title="what your code printed", expand=False))


def reports_summary(console: Console, results: list[GradeReport]) -> None:
    table = Table(title="attn-drill check --all")
    for column in ("exercise", "checks passed", "result"):
        table.add_column(column)
    for result in results:
        table.add_row(result.exercise, f"{sum(c.passed for c in result.checks)}/{len(result.checks)}",
                      "[green]passed[/]" if result.passed else "[red]failed[/]")
    console.print(table)


def exercise_table(console: Console, rows: list[ExerciseRow]) -> None:
    table = Table(title="attn-drill exercises")
    for column in ("id", "title", "topic", "difficulty", "status"):
        table.add_column(column)
    for row in rows:
        ex = row.exercise
        table.add_row(ex.id, ex.title, ex.topic, DIFFICULTY[ex.difficulty],
                      f"[{STATUS_STYLE[row.status]}]{row.status}[/]")
    console.print(table)


def statement(console: Console, shown: Statement) -> None:
    ex = shown.exercise
    console.print(Panel(Markdown(shown.text), title=f"{ex.id} · {ex.title} · {ex.title_zh}", expand=True))
    if shown.path is not None:
        console.print(f"Edit [bold]{shown.path}[/], then run `attn-drill check {ex.id}`.")
    else:
        console.print(f"No workspace here: `attn-drill init` makes one with {ex.file_name} to edit.")


def hint(console: Console, shown: Hint) -> None:
    console.print(Panel(shown.text, title=f"{shown.exercise.id} · hint {shown.number} of {shown.total}", expand=False))
    if shown.number == shown.total:
        console.print("That was the last hint. `attn-drill solution --force` shows the reference.")


def source(console: Console, title: str, code: str) -> None:
    console.print(Panel(Syntax(code, "python", line_numbers=True), title=title))


def init(console: Console, result: InitResult) -> None:
    console.print(f"Workspace ready in [bold]{result.root}[/]: {len(result.created)} exercises written"
                  + (f", {len(result.kept)} of yours kept as they were" if result.kept else "") + ".")
    console.print(f"Next: cd {result.root}, edit exercises/ex01_self_attention.py, then `attn-drill check ex1`.")


def status(console: Console, rows: list[ExerciseRow], next_id: str | None, due: int | None) -> None:
    passed = sum(row.status == "passed" for row in rows)
    console.print(f"[bold]attn-drill[/] · exercises passed: {passed}/{len(rows)}"
                  + (f" · next: {next_id} (`attn-drill show {next_id}`)" if next_id else " · all done!"))
    if due is not None:
        console.print(f"Quiz cards due today: {due} (`attn-drill quiz --review`).")
    console.print("Commands: `attn-drill list`, `attn-drill check`, `attn-drill quiz`, `attn-drill --help`.")


def validation(console: Console, result: ValidationReport) -> None:
    table = Table(title="attn-drill validate")
    for column in ("exercise", "reference passes", "starter fails"):
        table.add_column(column)
    for exercise, outcome in result.exercises.items():
        table.add_row(exercise, *("[green]yes[/]" if outcome[key] else "[red]no[/]"
                                  for key in ("reference_passes", "starter_fails")))
    console.print(table)
    if result.questions:
        q = result.questions
        console.print(f"Questions: {q['total']} in {len(q['by_topic'])} topics; "
                      + ", ".join(f"{kind} {n}" for kind, n in sorted(q["by_kind"].items()))
                      + f"; missing Chinese text: {q['zh_missing']}.")
    for problem in result.problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False)
    console.print("[bold green]Content is valid.[/]" if not result.problems else
                  f"[bold red]{len(result.problems)} problems.[/]")


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())
