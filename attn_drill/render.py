"""Everything attn-drill shows a person, with rich. The library returns data; this draws it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # types only: importing them would slow every command's start
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
    if result.questions_due:
        console.print(f"{result.questions_due} quiz questions on the idea behind your mistake are due now: "
                      "`attn-drill quiz --review`.")
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
    console.print(Panel(Text(shown.text), title=f"{ex.id} · {ex.title} · {ex.title_zh}", expand=True))
    if shown.path is not None:
        console.print(f"Edit [bold]{shown.path}[/], then run `attn-drill check {ex.id}`.")
    else:
        console.print(f"No workspace here: `attn-drill init` makes one with {ex.file_name} to edit.")


def hint(console: Console, shown: Hint) -> None:
    console.print(Panel(shown.text, title=f"{shown.exercise.id} · hint {shown.number} of {shown.total}", expand=False))
    if shown.number == shown.total:
        console.print("That was the last hint. `attn-drill solution --force` shows the reference.")


def source(console: Console, title: str, code: str) -> None:
    from rich.syntax import Syntax  # only `solution` pays for the highlighter

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


# -- quiz and stats --------------------------------------------------------------------------

QUIZ_TEXT = {
    "en": {
        "question": "Question {n}/{total}", "levels": {1: "easy", 2: "medium", 3: "hard"},
        "single": "Answer with one letter ({span}) · ? = don't know",
        "multi": "Answer with every right letter, any order (a,c) · ? = don't know",
        "bool": "Answer t or f (true/false, y/n) · ? = don't know",
        "numeric": "Answer with a number (1e6, 1_000_000, 1M, 2^30 are fine){unit} · ? = don't know",
        "in_unit": " in {unit}",
        "card": "Answer aloud or on paper, then press Enter to see the model answer.",
        "your_answer": "Your answer: ", "press_enter": "Press Enter when ready: ",
        "rate": "Rate yourself (1 again · 2 hard · 3 good · 4 easy): ",
        "right": "✓ Right.", "wrong": "✗ Wrong. ", "answer_is": "The answer: ",
        "model_answer": "Model answer", "rated": "Rated {rating}.", "why": "Why: ",
        "ratings": {1: "Again", 2: "Hard", 3: "Good", 4: "Easy"},
        "next_review": "Next review {when}.",
        "start": "Quiz: {count} questions ({topics}). Each answer is saved as you give it; Ctrl-C ends the quiz.",
        "start_review": "Review: {count} questions due, most overdue first. Each answer is saved as you give it; Ctrl-C ends.",
        "nothing_due": "Nothing is due for review.", "next_due": " The next question is due {when}.",
        "not_started": " Start with `attn-drill quiz`.",
        "score_title": "Score by topic", "topic": "topic", "answered": "answered", "right_col": "right",
        "score": "score", "total": "total",
        "ended_early": "Quiz ended early. Answers saved: {n}.",
        "due_after": "Due today: {due} (`attn-drill quiz --review`).",
        "now": "now", "in_minutes": "in {n} min", "in_hours": "in {n} h", "in_day": "in 1 day", "in_days": "in {n} days",
    },
    "zh": {
        "question": "第 {n}/{total} 题", "levels": {1: "简单", 2: "中等", 3: "困难"},
        "single": "输入一个字母作答（{span}）· ? = 不会",
        "multi": "输入所有正确选项的字母，顺序不限（a,c）· ? = 不会",
        "bool": "输入 对 或 错（也可 t/f、y/n）· ? = 不会",
        "numeric": "输入一个数（可写 1e6、1_000_000、1M、2^30）{unit} · ? = 不会",
        "in_unit": "，单位：{unit}",
        "card": "请口述或在纸上作答，然后按回车查看参考答案。",
        "your_answer": "你的答案：", "press_enter": "准备好后按回车：",
        "rate": "自评（1 重来 · 2 困难 · 3 良好 · 4 简单）：",
        "right": "✓ 回答正确。", "wrong": "✗ 回答错误。", "answer_is": "正确答案：",
        "model_answer": "参考答案", "rated": "自评：{rating}。", "why": "解析：",
        "ratings": {1: "重来", 2: "困难", 3: "良好", 4: "简单"},
        "next_review": "下次复习：{when}。",
        "start": "测验：{count} 道题（{topics}）。每个答案提交后立即保存；按 Ctrl-C 结束。",
        "start_review": "复习：{count} 道到期的题，最早到期的在前。每个答案提交后立即保存；按 Ctrl-C 结束。",
        "nothing_due": "目前没有需要复习的题。", "next_due": "下一道题到期：{when}。",
        "not_started": "先用 `attn-drill quiz` 开始测验。",
        "score_title": "各主题得分", "topic": "主题", "answered": "已答", "right_col": "答对",
        "score": "得分", "total": "合计",
        "ended_early": "测验提前结束：已答的 {n} 道题均已保存。",
        "due_after": "今天到期：{due} 道（`attn-drill quiz --review`）。",
        "now": "现在", "in_minutes": "{n} 分钟后", "in_hours": "{n} 小时后", "in_day": "1 天后", "in_days": "{n} 天后",
    },
}


def _when(at, lang: str) -> str:
    from datetime import datetime, timezone

    words = QUIZ_TEXT[lang]
    seconds = (at - datetime.now(timezone.utc)).total_seconds()
    if seconds < 1:
        return words["now"]
    if seconds < 3600:
        return words["in_minutes"].format(n=max(1, round(seconds / 60)))
    if seconds < 86400:
        return words["in_hours"].format(n=round(seconds / 3600))
    days = round(seconds / 86400)
    return words["in_day" if days == 1 else "in_days"].format(n=days)


def quiz_start(console: Console, quiz) -> None:
    """The line before the first question (or why there is none)."""
    words = QUIZ_TEXT[quiz.lang]
    if quiz.questions:
        topics = ", ".join(dict.fromkeys(q.topic for q in quiz.questions))
        key = "start_review" if quiz.review else "start"
        console.print(Text(words[key].format(count=len(quiz.questions), topics=topics), style="bold"))
    elif quiz.review:
        summary = quiz.summary()
        line = words["nothing_due"]
        if summary.next_due is not None:
            line += words["next_due"].format(when=_when(summary.next_due, quiz.lang))
        else:
            line += words["not_started"]
        console.print(Text(line))


class TerminalQuiz:
    """The quiz's front end in a terminal (the engine's QuizUI): rich panels in, lines of input out."""

    def __init__(self, console: Console, lang: str = "en"):
        import sys

        self.console = console
        self.lang = lang
        self.words = QUIZ_TEXT[lang]
        self.stdin_closed = sys.stdin is None
        self.echo = self.stdin_closed or not sys.stdin.isatty()   # piped answers: show them in the transcript

    def _read(self, prompt: str) -> str:
        if self.stdin_closed:
            raise EOFError
        line = self.console.input(Text(prompt, style="bold"))
        if self.echo:
            self.console.print(Text(line))
        return line

    def question(self, question, number: int, total: int) -> None:
        from rich.console import Group
        from rich.syntax import Syntax  # only code questions pay for the highlighter

        words = self.words
        parts: list = [Text(question.prompt.get(self.lang)), Text("")]
        if question.code:
            parts.append(Syntax(question.code.rstrip("\n"), "python", line_numbers=True, word_wrap=True,
                                background_color="default"))
            parts.append(Text(""))
        if question.choices:   # a grid, so a long choice wraps under its own text
            grid = Table.grid(padding=(0, 1))
            grid.add_column(style="bold cyan", no_wrap=True)
            grid.add_column()
            for letter, choice in zip(question.letters(), question.choices):
                grid.add_row(f" {letter})", Text(choice.get(self.lang)))
            parts.append(grid)
        kind = question.answer_kind
        unit = words["in_unit"].format(unit=question.unit.get(self.lang)) if question.unit else ""
        hint = words[kind].format(span=f"a-{question.letters()[-1]}" if question.choices else "", unit=unit)
        parts.append(Text(hint, style="dim"))
        title = " · ".join((words["question"].format(n=number, total=total), question.topic,
                            words["levels"].get(question.difficulty, "")))
        self.console.print()
        self.console.print(Panel(Group(*parts), title=title, title_align="left", border_style="blue"))

    def read_answer(self, question) -> str:
        return self._read(self.words["press_enter" if question.kind == "card" else "your_answer"])

    def invalid(self, question, message: str) -> None:
        self.console.print(Text(message, style="yellow"))

    def reveal(self, question) -> None:
        self.console.print(Panel(Text(question.model_answer.get(self.lang)), title=self.words["model_answer"],
                                 title_align="left", border_style="green"))

    def read_rating(self, question) -> str:
        return self._read(self.words["rate"])

    def result(self, result) -> None:
        words = self.words
        if result.question.kind == "card":
            self.console.print(Text(words["rated"].format(rating=words["ratings"][result.rating]), style="bold"))
        elif result.correct:
            self.console.print(Text(words["right"], style="bold green"))
        else:
            head = Text(words["wrong"], style="bold red") if not result.dont_know else Text()
            head.append(words["answer_is"].rstrip() if "\n" in result.expected else words["answer_is"], style="bold")
            if "\n" in result.expected:   # several letters: one per line, below
                from rich.padding import Padding

                self.console.print(head)
                self.console.print(Padding(Text(result.expected), (0, 0, 0, 2)))
            else:
                head.append(result.expected)
                self.console.print(head)
        if result.correct and result.question.kind != "card":
            from rich.padding import Padding

            self.console.print(Padding(Text(result.expected, style="green"), (0, 0, 0, 2)))
        if result.explanation:
            self.console.print(Text.assemble((words["why"], "bold"), result.explanation))
        self.console.print(Text(words["next_review"].format(when=_when(result.next_due, self.lang)), style="dim"))


def quiz_summary(console: Console, summary, lang: str = "en") -> None:
    """The score table by topic at the end of a quiz, and what is due next."""
    words = QUIZ_TEXT[lang]
    if summary.ended_early:
        console.print()   # the input line that was cut short
    if summary.answered:
        table = Table(title=words["score_title"])
        for column in ("topic", "answered", "right_col", "score"):
            table.add_column(words[column], justify="left" if column == "topic" else "right")
        for row in summary.rows:
            table.add_row(row.topic, str(row.answered), str(row.correct), f"{row.correct / row.answered:.0%}")
        table.add_section()
        table.add_row(words["total"], str(summary.answered), str(summary.correct),
                      f"{summary.correct / summary.answered:.0%}", style="bold")
        console.print()
        console.print(table)
    if summary.ended_early:
        console.print(Text(words["ended_early"].format(n=summary.answered), style="yellow"))
    if summary.answered or summary.ended_early:
        line = words["due_after"].format(due=summary.due_today)
        if summary.next_due is not None:
            line += ("" if lang == "zh" else " ") + words["next_due"].format(when=_when(summary.next_due, lang)).strip()
        console.print(Text(line, style="dim"))


def stats(console: Console, shown) -> None:
    """Quiz mastery by topic, then exercise progress."""
    table = Table(title="Quiz mastery by topic")
    for column in ("topic", "questions", "answered", "correct", "due", "mastery"):
        table.add_column(column, justify="left" if column in ("topic", "mastery") else "right")
    totals = [0, 0, 0, 0]
    for topic, m in shown.topics.items():
        share = m.correct / m.questions if m.questions else 0.0
        filled = round(share * 10)
        bar = Text.assemble(("■" * filled, "green"), ("□" * (10 - filled), "dim"), f" {share:.0%}")
        table.add_row(topic, str(m.questions), str(m.answered), str(m.correct),
                      f"[yellow]{m.due}[/]" if m.due else "0", bar)
        for i, value in enumerate((m.questions, m.answered, m.correct, m.due)):
            totals[i] += value
    table.add_section()
    table.add_row("total", *map(str, totals), f"{totals[2] / totals[0]:.0%}" if totals[0] else "", style="bold")
    console.print(table)
    console.print("[dim]answered: questions answered at least once · correct: right the last time they were asked "
                  "(a card: rated Hard or better) · due: due today, asked by `attn-drill quiz --review`[/]")
    exercise_table(console, shown.exercises)
    passed = sum(row.status == "passed" for row in shown.exercises)
    console.print(f"Exercises passed: {passed}/{len(shown.exercises)}.")
