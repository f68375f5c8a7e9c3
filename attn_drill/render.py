"""Everything attn-drill shows a person, with rich. The library returns data; this draws it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from attn_drill import linebreak
from attn_drill.i18n import topic_name

if TYPE_CHECKING:  # types only: importing them would slow every command's start
    from attn_drill.grading import GradeReport
    from attn_drill.practice import ExerciseRow, Hint, Statement
    from attn_drill.validation import ValidationReport
    from attn_drill.workspace import InitResult

linebreak.install()  # Chinese text breaks between characters too, not only at spaces

STATUS_STYLE = {"passed": "green", "failed": "red", "pending": "dim"}


# The learner-facing lines of the exercise commands, in both languages (the quiz has its own
# table below; technical terms follow docs/glossary.md).
WORDS = {
    "en": {
        "all_passed": "All {n} checks passed.", "some_passed": "{passed} of {total} checks passed.",
        "fix_first": "Fix the first failure, then run the check again; `attn-drill hint {id}` helps.",
        "next": "Next: {id} {title}: `attn-drill check {id}`.", "all_done": "That was the last exercise: all done!",
        "same_cause": "(same cause as above)", "printed": "what your code printed",
        "unsandboxed": "Not sandboxed: bubblewrap cannot run here, so your code ran as you, able to read and "
                       "write your files. The checks and verdicts still ran in a separate judge process.",
        "due": "{n} quiz questions on the idea behind your mistake are due now: `attn-drill quiz --review`.",
        "columns": ("id", "title", "topic", "difficulty", "status"),
        "levels": {1: "easy", 2: "medium", 3: "hard"},
        "statuses": {"passed": "passed", "failed": "failed", "pending": "pending"},
        "exercises": "attn-drill exercises",
        "edit": "Edit {path}, then run `attn-drill check {id}`.",
        "no_workspace": "No workspace here: `attn-drill init` makes one with {file} to edit.",
        "hint": "hint {n} of {total}",
        "last_hint": "That was the last hint. `attn-drill solution {id} --force` shows the reference.",
        "more_hints": "`attn-drill hint {id}` shows the next one.",
        "ready": "Workspace ready in {root}: {n} exercises written", "kept": ", {n} of yours kept as they were",
        "init_next": "Next: cd {root}, edit exercises/{file}, then `attn-drill check {id}`.",
        "init_done": "Every exercise here has passed.",
        "summary": "{passed} of {total} exercises passed.", "details": "Details: `attn-drill check EX` or --verbose.",
        "status": "attn-drill · exercises passed: {passed}/{total}",
        "status_next": " · next: {id} (`attn-drill show {id}`)", "status_done": " · all done!",
        "status_due": "Quiz cards due today: {n} (`attn-drill quiz --review`).",
        "commands": "Commands: `attn-drill list`, `attn-drill check`, `attn-drill quiz`, `attn-drill --help`.",
        "reset": "{id}: {path} is the starter again.", "backup": " Your file was saved as {backup}.",
        "solution": "reference solution", "stop": ".",
    },
    "zh": {
        "all_passed": "全部 {n} 项检查通过。", "some_passed": "{total} 项检查中通过 {passed} 项。",
        "fix_first": "先修正第一个失败，再运行检查；`attn-drill hint {id}` 可以给出提示。",
        "next": "下一题：{id} {title}：`attn-drill check {id}`。", "all_done": "这是最后一道练习：全部完成！",
        "same_cause": "（原因同上）", "printed": "你的代码打印的内容",
        "unsandboxed": "未使用沙箱：这里无法运行 bubblewrap，你的代码以你的身份运行，可以读写你的文件。"
                       "检查与判定仍在独立的评判进程中进行。",
        "due": "与你的错误相关的 {n} 道测验题现在到期：`attn-drill quiz --review`。",
        "columns": ("编号", "标题", "主题", "难度", "状态"),
        "levels": {1: "简单", 2: "中等", 3: "困难"},
        "statuses": {"passed": "已通过", "failed": "未通过", "pending": "未开始"},
        "exercises": "attn-drill 练习",
        "edit": "编辑 {path}，然后运行 `attn-drill check {id}`。",
        "no_workspace": "这里没有工作区：`attn-drill init` 会创建一个，其中有要编辑的 {file}。",
        "hint": "提示 {n} / {total}",
        "last_hint": "这是最后一条提示。`attn-drill solution {id} --force` 显示参考答案。",
        "more_hints": "`attn-drill hint {id}` 显示下一条。",
        "ready": "工作区已就绪：{root}，写入 {n} 道练习", "kept": "，保留了你已有的 {n} 个文件",
        "init_next": "下一步：cd {root}，编辑 exercises/{file}，然后运行 `attn-drill check {id}`。",
        "init_done": "这里的每道练习都已通过。",
        "summary": "{total} 道练习中通过 {passed} 道。", "details": "详情：`attn-drill check EX` 或加 --verbose。",
        "status": "attn-drill · 已通过练习：{passed}/{total}",
        "status_next": " · 下一题：{id}（`attn-drill show {id}`）", "status_done": " · 全部完成！",
        "status_due": "今天到期的测验卡片：{n}（`attn-drill quiz --review`）。",
        "commands": "命令：`attn-drill list`、`attn-drill check`、`attn-drill quiz`、`attn-drill --help`。",
        "reset": "{id}：{path} 已恢复为初始代码。", "backup": "你的文件已备份为 {backup}。",
        "solution": "参考答案", "stop": "。",
    },
}


def _title(exercise, lang: str) -> str:
    return exercise.title_zh if lang == "zh" else exercise.title


def report(console: Console, result: GradeReport, *, verbose: bool = False, following=None,
           lang: str = "en") -> None:
    """One line per check, the failures' messages beneath (indented, wrapped), then the verdict
    and, after a pass, the next exercise and the command for it."""
    words = WORDS[lang]
    console.print(Text.assemble((result.exercise, "bold"), f" · {Path(result.file).name} · {result.device} · "
                                f"{result.duration_s:.1f} s"))
    if result.sandbox == "none":
        console.print(Text(words["unsandboxed"], style="yellow"))
    shown: set[str] = set()
    for check in result.checks:
        line = Table.grid(padding=(0, 1, 0, 0))   # a wrapped title stays right of its mark
        line.add_row(Text.assemble(" ", ("✓", "green") if check.passed else ("✗", "red")), Text(check.name))
        console.print(line)
        if not check.passed and check.message:
            repeated = check.message in shown
            for line in (words["same_cause"] if repeated else check.message).split("\n"):
                # each line keeps its own indent when it wraps (a traceback's lines sit deeper)
                indent = 5 + len(line) - len(line.lstrip(" "))
                console.print(Padding(Text(line.lstrip(" "), style="dim" if repeated else "yellow"), (0, 0, 0, indent),
                                      expand=False))
            shown.add(check.message)
    verdict(console, result, following=following, lang=lang)
    if verbose and result.output.strip():
        console.print(Panel(Text(result.output), title=words["printed"], expand=False))


def verdict(console: Console, result: GradeReport, *, following=None, lang: str = "en") -> None:
    words = WORDS[lang]
    passed = sum(c.passed for c in result.checks)
    if result.passed:
        after = (words["next"].format(id=following.id, title=_title(following, lang)) if following
                 else words["all_done"])
        console.print(Text.assemble((words["all_passed"].format(n=passed), "bold green"), " ", after))
    else:
        console.print(Text.assemble((words["some_passed"].format(passed=passed, total=len(result.checks)),
                                     "bold red"), " ", words["fix_first"].format(id=result.exercise)))


def questions_due(console: Console, count: int, lang: str = "en") -> None:
    console.print(Text(WORDS[lang]["due"].format(n=count)))


def reports_summary(console: Console, results: list[GradeReport], lang: str = "en") -> None:
    """`check --all`: one line per exercise, then the count."""
    words = WORDS[lang]
    for result in results:
        passed = sum(c.passed for c in result.checks)
        first = next((c for c in result.checks if not c.passed), None)
        line = Text.assemble(" ", ("✓", "green") if result.passed else ("✗", "red"), f" {result.exercise:<5} ",
                             f"{passed}/{len(result.checks)}")
        if first is not None:
            line.append(f"  {first.name}", style="dim")
        console.print(line, no_wrap=True, overflow="ellipsis")
    total_passed = sum(r.passed for r in results)
    console.print(Text.assemble((words["summary"].format(passed=total_passed, total=len(results)), "bold"),
                                "" if total_passed == len(results) else " " + words["details"]))


def exercise_table(console: Console, rows: list[ExerciseRow], lang: str = "en") -> None:
    words = WORDS[lang]
    table = Table(title=words["exercises"])
    for column in words["columns"]:
        table.add_column(column)
    for row in rows:
        ex = row.exercise
        table.add_row(ex.id, _title(ex, lang), topic_name(ex.topic, lang), words["levels"][ex.difficulty],
                      Text(words["statuses"][row.status], style=STATUS_STYLE[row.status]))
    console.print(table)


def statement(console: Console, shown: Statement) -> None:
    """The statement as Markdown (rich reflows the paragraphs to the terminal's width)."""
    from rich.markdown import Markdown

    ex, words = shown.exercise, WORDS[shown.lang]
    console.print(Panel(Markdown(shown.text), title=f"{ex.id} · {_title(ex, shown.lang)}", expand=True))
    if shown.path is not None:
        console.print(Text(words["edit"].format(path=shown.path, id=ex.id)))
    else:
        console.print(Text(words["no_workspace"].format(file=ex.file_name)))


def hint(console: Console, shown: Hint, lang: str = "en") -> None:
    """Every hint revealed so far, the newest last (and brightest)."""
    words = WORDS[lang]
    texts = shown.in_lang(lang)   # Chinese under --lang zh where the catalog has hints_zh, else English
    for number, text in enumerate(texts, start=1):
        newest = number == len(texts)
        console.print(Panel(Text(text, style="" if newest else "dim"), expand=False,
                            title=f"{shown.exercise.id} · " + words["hint"].format(n=number, total=shown.total),
                            border_style="blue" if newest else "dim"))
    console.print(Text(words["last_hint" if shown.number == shown.total else "more_hints"].format(
        id=shown.exercise.id)))


def source(console: Console, title: str, code: str) -> None:
    """Code with line numbers; long lines wrap (never cut off), at any width."""
    from rich.syntax import Syntax  # only `solution` pays for the highlighter

    console.print(Panel(Syntax(code, "python", line_numbers=True, word_wrap=True), title=title))


def init(console: Console, result: InitResult, following=None, lang: str = "en") -> None:
    import shlex

    words = WORDS[lang]
    console.print(Text(words["ready"].format(root=result.root, n=len(result.created))
                       + (words["kept"].format(n=len(result.kept)) if result.kept else "") + words["stop"]))
    if following is None:
        console.print(Text(words["init_done"]))
    else:
        console.print(Text(words["init_next"].format(root=shlex.quote(str(result.root)), file=following.file_name,
                                                     id=following.id)))


def reset(console: Console, exercise, path: Path, backup: Path | None, lang: str = "en") -> None:
    words = WORDS[lang]
    console.print(Text(words["reset"].format(id=exercise.id, path=path)
                       + (words["backup"].format(backup=backup) if backup else "")))


def scaffold(console: Console, made, lang: str = "en") -> None:
    """What `attn-drill new` wrote, and the two commands to run next."""
    zh = lang == "zh"
    console.print(Text(f"{made.id}：已写出骨架：" if zh else f"{made.id}: scaffold written:", style="bold"))
    for path in made.files:
        console.print(Text(f"  {path}"))
    pack = shlex.quote(str(made.files[0].parent))
    validate = f"`attn-drill validate --pack {pack}`"
    audit = f"`attn-drill validate --mutants --exercise {made.id} --pack {pack}`"
    console.print(Text(f"下一步：补全 TODO，然后运行 {validate}（它的参考答案必须通过，初始代码必须不通过）"
                       f"和 {audit}。" if zh else
                       f"Next: fill in the TODOs, then {validate} (its reference must pass, its starter fail) "
                       f"and {audit}."))


def status(console: Console, rows: list[ExerciseRow], next_id: str | None, due: int | None, lang: str = "en") -> None:
    words = WORDS[lang]
    passed = sum(row.status == "passed" for row in rows)
    console.print(Text.assemble((words["status"].format(passed=passed, total=len(rows)), "bold"),
                                words["status_next"].format(id=next_id) if next_id else words["status_done"]))
    if due is not None:
        console.print(Text(words["status_due"].format(n=due)))
    console.print(Text(words["commands"]))


VALIDATE_WORDS = {
    "en": {"columns": ("exercise", "reference passes", "starter fails"), "yes": "yes", "no": "no",
           "questions": "Questions: {total} in {topics} topics; {kinds}; missing Chinese text: {missing}.",
           "mutants": "{id} mutants: {killed} killed, {equivalent} equivalent, {survived} survived",
           "problem": "problem: ", "valid": "Content is valid.", "problems": "{n} problems.",
           "form": "Form: key is the longest choice in {share:.0%} of single-answer questions ({longest}/{single}, "
                   "at most 40%); key positions {positions}; true in {true_share:.0%} of true/false ({true}/{bools}, "
                   "35-65%); multiple-answer questions by keys: {keys}.",
           "keys": "{n} keys: {count}", "none": "none", "warning": "warning:"},
    "zh": {"columns": ("练习", "参考答案通过", "初始代码不通过"), "yes": "是", "no": "否",
           "questions": "题目：{total} 道，{topics} 个主题；{kinds}；缺少中文的：{missing}。",
           "mutants": "{id} 的变异体：捕获 {killed} 个，等价 {equivalent} 个，存活 {survived} 个",
           "problem": "问题：", "valid": "内容有效。", "problems": "{n} 个问题。",
           "form": "形式：单选题中正确选项是最长选项的占 {share:.0%}（{longest}/{single}，至多 40%）；正确选项位置 "
                   "{positions}；判断题中为真的占 {true_share:.0%}（{true}/{bools}，35-65%）；多选题按正确选项数："
                   "{keys}。",
           "keys": "{n} 个正确选项：{count} 道", "none": "无", "warning": "警告："},
}


def validation(console: Console, result: ValidationReport, lang: str = "en") -> None:
    words = VALIDATE_WORDS[lang]
    table = Table(title="attn-drill validate")
    for column in words["columns"]:
        table.add_column(column)
    for exercise, outcome in result.exercises.items():
        table.add_row(exercise, *(f"[green]{words['yes']}[/]" if outcome[key] else f"[red]{words['no']}[/]"
                                  for key in ("reference_passes", "starter_fails")))
    console.print(table)
    if result.questions:
        q = result.questions
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(q["by_kind"].items()))
        console.print(words["questions"].format(total=q["total"], topics=len(q["by_topic"]), kinds=kinds,
                                                missing=q["zh_missing"]), highlight=False)
        question_form(console, result.questions, result.warnings, lang)
    for exercise, found in result.mutants.items():
        console.print(Text(words["mutants"].format(id=exercise, killed=found["killed"], equivalent=found["equivalent"],
                                                   survived=len(found["survived"])),
                           style="red" if found["survived"] else ""))
    for problem in result.problems:
        console.print(Text.assemble((words["problem"], "red"), problem))
    console.print(f"[bold green]{words['valid']}[/]" if not result.problems else
                  f"[bold red]{words['problems'].format(n=len(result.problems))}[/]")


# -- quiz and stats --------------------------------------------------------------------------

QUIZ_TEXT = {
    "en": {
        "question": "Question {n}/{total}", "levels": {1: "easy", 2: "medium", 3: "hard"},
        "single": "Answer with one letter ({span}) · ? = don't know · q = quit",
        "multi": "Answer with every right letter, any order (a,c) · ? = don't know · q = quit",
        "bool": "Answer t or f (true/false, y/n) · ? = don't know · q = quit",
        "numeric": "Answer with a number (1e6, 1_000_000, 1M, 2^30; K/M/G = 1000, KiB/MiB/GiB = 1024){unit}"
                   " · ? = don't know · q = quit",
        "in_unit": " in {unit}",
        "card": "Answer aloud or on paper, then press Enter to see the model answer (q = quit).",
        "your_answer": "Your answer: ", "press_enter": "Press Enter when ready: ",
        "rate": "Rate yourself (1 again · 2 hard · 3 good · 4 easy): ",
        "right": "✓ Right.", "wrong": "✗ Wrong. ", "answer_is": "The answer: ",
        "model_answer": "Model answer", "rated": "Rated {rating}.", "why": "Why: ",
        "ratings": {1: "Again", 2: "Hard", 3: "Good", 4: "Easy"},
        "next_review": "Next review {when}.",
        "read_as": "You typed {typed} = {read}; the answer is {answer} within {tol}.",
        "read_as_exact": "You typed {typed} = {read}; the answer is exactly {answer}.",
        "missing": "Missing: {letters}", "extra": "extra (wrong): {letters}",
        "start": "Quiz: {count} questions ({topics}). Each answer is saved as you give it; q or Ctrl-C ends the quiz.",
        "start_review": "Review: {count} questions due, most overdue first. Each answer is saved as you give it; "
                        "q or Ctrl-C ends.",
        "start_leeches": "Leeches: {count} you have missed {n} times or more, most missed first. "
                         "Each answer is saved as you give it; q or Ctrl-C ends.",
        "no_leeches": "No leeches: no question has been missed {n} times.",
        "nothing_due": "Nothing is due for review.", "next_due": " The next question is due {when}.",
        "not_started": " Start with `attn-drill quiz`.",
        "score_title": "Score by topic", "topic": "topic", "answered": "answered", "right_col": "right",
        "score": "score", "total": "total",
        "ended_early": "Quiz ended early. Answers saved: {n}.",
        "missed_title": "Missed ({n}):",
        "next_after_today": "The next question due after today: {when}.",
        "nothing_more": "Nothing more is due today.",
        "due_after": "Still due today, after this quiz: {due}. Review them: `attn-drill quiz --review`",
        "now": "now", "in_minutes": "in {n} min", "in_hours": "in {n} h", "in_day": "in 1 day", "in_days": "in {n} days",
    },
    "zh": {
        "question": "第 {n}/{total} 题", "levels": {1: "简单", 2: "中等", 3: "困难"},
        "single": "输入一个字母作答（{span}）· ? = 不会 · q = 退出",
        "multi": "输入所有正确选项的字母，顺序不限（a,c）· ? = 不会 · q = 退出",
        "bool": "输入 对 或 错（也可 t/f、y/n）· ? = 不会 · q = 退出",
        "numeric": "输入一个数（可写 1e6、1_000_000、1M、2^30；K/M/G = 1000，KiB/MiB/GiB = 1024）{unit} · ? = 不会 · q = 退出",
        "in_unit": "，单位：{unit}",
        "card": "请口述或在纸上作答，然后按回车查看参考答案（q = 退出）。",
        "your_answer": "你的答案：", "press_enter": "准备好后按回车：",
        "rate": "自评（1 重来 · 2 困难 · 3 良好 · 4 简单）：",
        "right": "✓ 回答正确。", "wrong": "✗ 回答错误。", "answer_is": "正确答案：",
        "model_answer": "参考答案", "rated": "自评：{rating}。", "why": "解析：",
        "ratings": {1: "重来", 2: "困难", 3: "良好", 4: "简单"},
        "next_review": "下次复习：{when}。",
        "read_as": "你输入的 {typed} 读作 {read}；答案是 {answer}，误差 {tol} 以内算对。",
        "read_as_exact": "你输入的 {typed} 读作 {read}；答案是 {answer}，须精确。",
        "missing": "漏选：{letters}", "extra": "多选（错误）：{letters}",
        "start": "测验：{count} 道题（{topics}）。每个答案提交后立即保存；输入 q 或按 Ctrl-C 结束。",
        "start_review": "复习：{count} 道到期的题，最早到期的在前。每个答案提交后立即保存；输入 q 或按 Ctrl-C 结束。",
        "start_leeches": "顽固题：{count} 道你答错过 {n} 次及以上的题，错得最多的在前。每个答案提交后立即保存；"
                         "输入 q 或按 Ctrl-C 结束。",
        "no_leeches": "没有顽固题：还没有哪道题答错过 {n} 次。",
        "nothing_due": "目前没有需要复习的题。", "next_due": "下一道题到期：{when}。",
        "not_started": "先用 `attn-drill quiz` 开始测验。",
        "score_title": "各主题得分", "topic": "主题", "answered": "已答", "right_col": "答对",
        "score": "得分", "total": "合计",
        "ended_early": "测验提前结束：已答的 {n} 道题均已保存。",
        "missed_title": "答错的题（{n} 道）：",
        "next_after_today": "今天之后最早到期的题：{when}。",
        "nothing_more": "今天没有更多到期的题。",
        "due_after": "本次测验后今天仍到期：{due} 道。复习它们：`attn-drill quiz --review`",
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
    from attn_drill.quiz.engine import LEECH_MISSES

    words = QUIZ_TEXT[quiz.lang]
    if quiz.questions:
        topics = ", ".join(dict.fromkeys(q.topic for q in quiz.questions))
        key = "start_leeches" if quiz.leeches else "start_review" if quiz.review else "start"
        count = len(quiz.questions)
        if quiz.leeches and quiz.lang == "en":
            count = _count(count, STATS_WORDS["en"]["question"])
        console.print(Text(words[key].format(count=count, topics=topics, n=LEECH_MISSES), style="bold"))
    elif quiz.leeches:
        console.print(Text(words["no_leeches"].format(n=LEECH_MISSES)))
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
            for line in self.feedback(result):
                self.console.print(Text(line, style="yellow"))
        if result.correct and result.question.kind != "card":
            from rich.padding import Padding

            self.console.print(Padding(Text(result.expected, style="green"), (0, 0, 0, 2)))
        if result.explanation:
            self.console.print(Text.assemble((words["why"], "bold"), result.explanation))
        self.console.print(Text(words["next_review"].format(when=_when(result.next_due, self.lang)), style="dim"))


    def feedback(self, result) -> list[str]:
        """After a wrong answer: how a number was read, which letters were missing and extra."""
        words = self.words
        if result.correct or result.dont_know:
            return []
        if result.reading is not None:
            from attn_drill.quiz.engine import format_percent, number_feedback

            echo = number_feedback(result.question, result.reading)
            key = "read_as" if echo["tolerance"] else "read_as_exact"
            unit = f" {echo['unit'].get(self.lang)}" if echo["unit"] else ""
            return [words[key].format(typed=echo["typed"], read=echo["read"], answer=echo["answer"] + unit,
                                      tol=format_percent(echo["tolerance"]))]
        parts = []
        if result.missing:
            parts.append(words["missing"].format(letters=", ".join(result.missing)))
        if result.extra:
            parts.append(words["extra"].format(letters=", ".join(result.extra)))
        if not parts:
            return []
        if self.lang == "zh":
            return ["；".join(parts) + "。"]
        line = " · ".join(parts)
        return [line[0].upper() + line[1:] + "."]


def _one_line(text: str, width: int = 72) -> str:
    """The first line of a text, cut to ``width`` characters (a CJK character counts as two)."""
    from rich.cells import cell_len

    line = " ".join(text.split())
    if cell_len(line) <= width:
        return line
    cut = ""
    for char in line:
        if cell_len(cut + char) > width - 1:
            break
        cut += char
    return cut.rstrip() + "…"


def quiz_summary(console: Console, summary, lang: str = "en") -> None:
    """The score table by topic at the end of a quiz, the questions missed, what is due next,
    and, last, the command that reviews what is still due today."""
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
    if summary.missed:
        console.print()
        console.print(Text(words["missed_title"].format(n=len(summary.missed)), style="bold"))
        width = max(len(q.id) for q in summary.missed)
        for question in summary.missed:
            console.print(Text.assemble(f"  {question.id:<{width}}  ", (_one_line(question.prompt.get(lang)), "dim")))
    if summary.answered or summary.ended_early:
        if summary.next_due is not None:
            console.print(Text(words["next_after_today"].format(when=_when(summary.next_due, lang)), style="dim"))
        if summary.due_today:
            console.print(Text(words["due_after"].format(due=summary.due_today), style="bold"))
        else:
            console.print(Text(words["nothing_more"], style="dim"))


CALENDAR_LEVELS = ((0, "·", "dim"), (1, "░", "green"), (5, "▒", "green"), (10, "▓", "bold green"), (20, "█", "bold green"))


def _level(count: int) -> tuple[str, str]:
    mark = CALENDAR_LEVELS[0]
    for level in CALENDAR_LEVELS:
        if count >= level[0]:
            mark = level
    return mark[1], mark[2]


STATS_WORDS = {
    "en": {
        "title": "Quiz mastery by topic",
        "columns": ("topic", "questions", "answered", "correct", "due", "retention", "mastery"), "total": "total",
        "legend": "answered: questions answered at least once · correct: right the last time they were asked "
                  "(a card: rated Hard or better) · due: due today, asked by `attn-drill quiz --review` · "
                  "retention: share of due reviews answered right (a due review: an answer to a question "
                  "whose card was due)",
        "reviews": "Reviews, last {weeks} weeks", "span": " ({first} to {last}): {reviews} on {days}",
        "review": ("review", "reviews"), "day": ("day", "days"), "question": ("question", "questions"),
        "leeches": "Leeches: {n} missed {misses} times or more",
        "leech": "  {id}  [dim]{topic} · missed {missed} of {answers}[/]",
        "drill": "Drill them: `attn-drill quiz --leeches`", "passed": "Exercises passed: {passed}/{total}.",
        "weekdays": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    },
    "zh": {
        "title": "各主题的测验掌握程度",
        "columns": ("主题", "题数", "已答", "答对", "到期", "保持率", "掌握程度"), "total": "合计",
        "legend": "已答：至少答过一次的题 · 答对：上一次被问到时答对（卡片：评为 Hard 或更好）· 到期：今天到期，"
                  "由 `attn-drill quiz --review` 提问 · 保持率：到期复习中答对的比例（到期复习：对一道卡片已到期的题的回答）",
        "reviews": "复习记录，最近 {weeks} 周", "span": "（{first} 至 {last}）：{days}中共 {reviews}",
        "review": ("次复习", "次复习"), "day": ("天", "天"), "question": ("道题", "道题"),
        "leeches": "顽固题：{n}答错 {misses} 次或以上",
        "leech": "  {id}  [dim]{topic} · {answers} 次中答错 {missed} 次[/]",
        "drill": "集中练习它们：`attn-drill quiz --leeches`", "passed": "已通过练习：{passed}/{total}。",
        "weekdays": ("周一", "周二", "周三", "周四", "周五", "周六", "周日"),
    },
}


def review_calendar(console: Console, days: dict[str, int], lang: str = "en") -> None:
    """Reviews per study day as a grid, as Anki and GitHub draw it: one column a week (oldest
    on the left, the last one ending today), one row a weekday."""
    from datetime import date

    if not days:
        return
    words = STATS_WORDS[lang]
    keys = list(days)
    first, last = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
    total, active = sum(days.values()), sum(1 for n in days.values() if n)
    weeks = (len(keys) + 6) // 7
    console.print(Text.assemble((words["reviews"].format(weeks=weeks), "bold"),
                                words["span"].format(first=first.isoformat(), last=last.isoformat(),
                                                     reviews=_count(total, words["review"]),
                                                     days=_count(active, words["day"]))))
    offset = weeks * 7 - len(keys)           # blank cells before the first day
    for row in range(7):
        weekday = date.fromordinal(first.toordinal() + row - offset).weekday()
        line = Text(f"  {words['weekdays'][weekday]} ")
        for week in range(weeks):
            index = week * 7 + row - offset
            if 0 <= index < len(keys):
                mark, style = _level(days[keys[index]])
                line.append(f" {mark}", style=style)
            else:
                line.append("  ")
        console.print(line)
    legend = Text("  ")
    bounds = [level[0] for level in CALENDAR_LEVELS] + [None]
    for (low, mark, style), high in zip(CALENDAR_LEVELS, bounds[1:]):
        label = "0" if low == 0 else f"{low}+" if high is None else f"{low}-{high - 1}"
        legend.append(f" {mark}", style=style)
        legend.append(f" {label} ")
    console.print(legend)


def _count(n: int, noun: tuple[str, str]) -> str:
    """``n`` with its noun, singular or plural: "1 review", "3 reviews"; "3 次复习"."""
    return f"{n} {noun[0] if n == 1 else noun[1]}"


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def stats(console: Console, shown, lang: str = "en") -> None:
    """Quiz mastery and retention by topic, the review calendar, leeches, then exercise progress."""
    words = STATS_WORDS[lang]
    table = Table(title=words["title"])
    for number, column in enumerate(words["columns"]):
        table.add_column(column, justify="left" if number in (0, 6) else "right")
    totals = [0, 0, 0, 0]
    retention = getattr(shown, "retention", {})
    for topic, m in shown.topics.items():
        share = m.correct / m.questions if m.questions else 0.0
        filled = round(share * 10)
        bar = Text.assemble(("■" * filled, "green"), ("□" * (10 - filled), "dim"), f" {share:.0%}")
        table.add_row(topic_name(topic, lang), str(m.questions), str(m.answered), str(m.correct),
                      f"[yellow]{m.due}[/]" if m.due else "0", _share(retention.get(topic)), bar)
        for i, value in enumerate((m.questions, m.answered, m.correct, m.due)):
            totals[i] += value
    table.add_section()
    table.add_row(words["total"], *map(str, totals), _share(getattr(shown, "overall_retention", None)),
                  f"{totals[2] / totals[0]:.0%}" if totals[0] else "", style="bold")
    console.print(table)
    console.print(f"[dim]{words['legend']}[/]")
    console.print()
    review_calendar(console, getattr(shown, "calendar", {}), lang)
    leeches = getattr(shown, "leeches", [])
    if leeches:
        from attn_drill.quiz.engine import LEECH_MISSES

        console.print()
        console.print(Text(words["leeches"].format(n=_count(len(leeches), words["question"]), misses=LEECH_MISSES),
                           style="bold"))
        for leech in leeches:
            console.print(words["leech"].format(id=leech.id, topic=topic_name(leech.topic, lang), missed=leech.missed,
                                                answers=leech.answers), highlight=False)
        console.print(words["drill"])
    console.print()
    exercise_table(console, shown.exercises, lang=lang)
    passed = sum(row.status == "passed" for row in shown.exercises)
    console.print(words["passed"].format(passed=passed, total=len(shown.exercises)))


def question_form(console: Console, questions: dict, warnings: list[str], lang: str = "en") -> None:
    """For `attn-drill validate` in text mode (render.validation calls it): the form
    statistics of the bank and every warning (form out of range, glossary drift)."""
    words = VALIDATE_WORDS[lang]
    form = (questions or {}).get("form")
    if form:
        positions = " ".join(f"{letter} {n}" for letter, n in form["key_positions"].items())
        keys = ", ".join(words["keys"].format(n=n, count=count)
                         for n, count in form["multi_key_counts"].items()) or words["none"]
        console.print(words["form"].format(share=form["longest_key_share"], longest=form["longest_key"],
                                           single=form["single_answer"], positions=positions,
                                           true_share=form["bool_true_share"], true=form["bool_true"],
                                           bools=form["bool"], keys=keys), highlight=False)
    for warning in warnings:
        console.print(Text.assemble((words["warning"], "yellow"), " ", warning))


# -- watch -----------------------------------------------------------------------------------

WATCH_TEXT = {
    "en": {
        "title": "attn-drill watch · {id} {title} · {file}",
        "keys": "save the file to check it · h hint · q quit", "keys_manual": "Enter check · h hint · q quit",
        "lines": "Watching {file}: save it to check it again. Type h then Enter for a hint, q then Enter to quit.",
        "lines_manual": "{file}: press Enter to check it again, h then Enter for a hint, q then Enter to quit.",
        "checking": "checking {id}…", "passed": "✓ {id} passed.", "changed": "{file} changed: back to {id}.",
        "done": "Every exercise has passed: all done!", "stopped": "Stopped watching.",
    },
    "zh": {
        "title": "attn-drill watch · {id} {title} · {file}",
        "keys": "保存文件即检查 · h 提示 · q 退出", "keys_manual": "回车 检查 · h 提示 · q 退出",
        "lines": "正在监视 {file}：保存即重新检查。输入 h 回车看提示，q 回车退出。",
        "lines_manual": "{file}：按回车重新检查，输入 h 回车看提示，q 回车退出。",
        "checking": "正在检查 {id}…", "passed": "✓ {id} 已通过。", "changed": "{file} 有改动：回到 {id}。",
        "done": "所有练习都已通过：全部完成！", "stopped": "已停止监视。",
    },
}


class _Drawn:
    """A renderable made by one of this module's print-style functions, drawn at the width
    it is given (so rich Live can show a report exactly as `check` prints it)."""

    def __init__(self, draw):
        self.draw = draw

    def __rich_console__(self, console: Console, options):
        import io

        canvas = Console(file=io.StringIO(), width=options.max_width, color_system=console.color_system,
                         force_terminal=console.is_terminal, highlight=False, emoji=False, soft_wrap=False)
        self.draw(canvas)
        yield Text.from_ansi(canvas.file.getvalue().rstrip("\n"))


class WatchKeys:
    """The learner's keys for `attn-drill watch`, read on a thread and handed to the watcher:
    from a terminal, single keys without Enter (cbreak mode; Ctrl-C still interrupts); from a
    pipe, lines (``h``, ``q``, an empty line to check again). ``q`` in a terminal quits at once;
    from a pipe, in order. The end of piped input quits in manual mode (nothing more can come)
    and only stops reading keys otherwise (saves are still followed)."""

    def __init__(self, watcher, *, manual: bool = False, stream=None):
        import sys
        import threading

        self.watcher, self.manual = watcher, manual
        self.stream = sys.stdin if stream is None else stream
        self.stop = threading.Event()
        self.saved = None   # the terminal's settings, restored on exit
        try:
            self.fd = self.stream.fileno() if self.stream is not None else None
        except (AttributeError, OSError, ValueError):
            self.fd = None   # an in-memory stream (typer's CliRunner)
        self.tty = self.fd is not None and self.stream.isatty()
        self.thread = threading.Thread(target=self._run, name="attn-drill-watch-keys", daemon=True)

    def __enter__(self) -> WatchKeys:
        if self.tty:
            import termios
            import tty

            try:
                self.saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
            except termios.error:
                self.tty, self.saved = False, None
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        self.thread.join(timeout=0.5)

    def _run(self) -> None:
        from attn_drill.watch import HINT, QUIT, RECHECK

        if self.stream is None:
            return self._ended()
        if self.tty:
            keys = {"h": HINT, "H": HINT, "\r": RECHECK, "\n": RECHECK}
            for chunk in self._chunks():
                for key in chunk.decode(errors="ignore"):
                    if key in "qQ\x04":   # q, or Ctrl-D
                        return self.watcher.quit()
                    if key in keys:
                        self.watcher.send(keys[key])
            return None
        words = {"": RECHECK, "c": RECHECK, "check": RECHECK, "h": HINT, "hint": HINT,
                 "q": QUIT, "quit": QUIT, "exit": QUIT}
        for line in self._lines():
            command = words.get(line.strip().lower())
            if command is not None:
                self.watcher.send(command)
            if command == QUIT:
                return None
        return self._ended()

    def _ended(self) -> None:
        if self.manual and not self.stop.is_set():
            self.watcher.send(None)

    def _chunks(self):
        """Bytes from the file descriptor as they come, until EOF or exit (select, so the
        thread never sits inside a Python file object's lock at interpreter exit)."""
        import os
        import select

        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                data = os.read(self.fd, 1024)
                if not data:
                    return
                yield data

    def _lines(self):
        if self.fd is None:
            yield from iter(self.stream.readline, "")
            return
        pending = b""
        for data in self._chunks():
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")


def watch(console: Console, watcher, *, manual: bool = False, lang: str = "en") -> None:
    """`attn-drill watch`'s terminal: keys in (:class:`WatchKeys`), the watcher's events out.
    On a terminal the view is redrawn in place (rich Live); into a pipe, each report is
    printed in turn. Returns when the learner quits (q, Ctrl-C, the end of input with
    ``manual``) or every exercise has passed."""
    words = WATCH_TEXT[lang]
    with WatchKeys(watcher, manual=manual):
        try:
            if console.is_terminal:
                _watch_live(console, watcher, manual, lang)
            else:
                _watch_lines(console, watcher, manual, lang)
        except KeyboardInterrupt:
            console.print(Text(words["stopped"], style="dim"))
            return
    console.print(Text(words["done" if watcher.current is None else "stopped"],
                       style="bold green" if watcher.current is None else "dim"))


class _WatchView:
    """What the live view shows: the current exercise, the last report, hint, problem."""

    def __init__(self, watcher, manual: bool, lang: str):
        self.watcher, self.manual, self.lang = watcher, manual, lang
        self.words = WATCH_TEXT[lang]
        self.exercise = watcher.current
        self.banner: Text | None = None
        self.report = self.following = self.hint = self.problem = None
        self.checking = False
        self.due = 0

    def take(self, event) -> None:
        words = self.words
        if event.kind == "moved":
            self.exercise, self.report, self.hint, self.problem, self.due = event.exercise, None, None, None, 0
            self.banner = (Text(words["passed"].format(id=event.previous.id), style="bold green")
                           if event.message == "passed" else
                           Text(words["changed"].format(file=event.exercise.file_name, id=event.exercise.id),
                                style="yellow"))
        elif event.kind == "grading":
            self.checking = True
        elif event.kind == "graded":
            self.report, self.following, self.problem, self.checking, self.due = (event.report, event.following,
                                                                                  None, False, 0)
        elif event.kind == "due":
            self.due = event.questions_due
        elif event.kind == "hint":
            self.hint = event.hint
        elif event.kind == "problem":
            self.problem, self.checking = event.message, False

    def __rich__(self):
        from rich.console import Group

        words, exercise = self.words, self.exercise
        parts: list = []
        if exercise is not None:
            file = Path(self.watcher.file_for(exercise))
            parts.append(Text.assemble((words["title"].format(id=exercise.id, title=_title(exercise, self.lang),
                                                              file=f"exercises/{file.name}"), "bold"),
                                       "  ", (words["keys_manual" if self.manual else "keys"], "dim")))
        if self.banner is not None:
            parts.append(self.banner)
        parts.append(Text(""))
        if self.report is not None:
            report_, following, lang = self.report, self.following, self.lang
            parts.append(_Drawn(lambda canvas: report(canvas, report_, following=following, lang=lang)))
        if self.due:
            due, lang = self.due, self.lang
            parts.append(_Drawn(lambda canvas: questions_due(canvas, due, lang)))
        if self.problem:
            parts.append(Text(self.problem, style="yellow"))
        if self.hint is not None:
            shown, lang = self.hint, self.lang
            parts.append(_Drawn(lambda canvas: hint(canvas, shown, lang)))
        if self.checking and exercise is not None:
            parts.append(Text(words["checking"].format(id=exercise.id), style="cyan"))
        return Group(*parts)


def _watch_live(console: Console, watcher, manual: bool, lang: str) -> None:
    from rich.live import Live

    view = _WatchView(watcher, manual, lang)
    with Live(view, console=console, auto_refresh=False, transient=False, redirect_stdout=False,
              redirect_stderr=False, vertical_overflow="visible") as live:
        live.refresh()
        for event in watcher.events():
            view.take(event)
            live.refresh()


def _watch_lines(console: Console, watcher, manual: bool, lang: str) -> None:
    words = WATCH_TEXT[lang]

    def keys(exercise) -> None:
        if exercise is not None:
            name = f"exercises/{exercise.file_name}"
            console.print(Text(words["lines_manual" if manual else "lines"].format(file=name), style="dim"))

    keys(watcher.current)
    for event in watcher.events():
        if event.kind == "graded":
            report(console, event.report, following=event.following, lang=lang)
            if not event.report.passed:
                keys(event.exercise)
        elif event.kind == "due":
            questions_due(console, event.questions_due, lang)
        elif event.kind == "moved":
            console.print(Text(words["passed"].format(id=event.previous.id), style="bold green")
                          if event.message == "passed" else
                          Text(words["changed"].format(file=event.exercise.file_name, id=event.exercise.id),
                               style="yellow"))
        elif event.kind == "hint":
            hint(console, event.hint, lang)
        elif event.kind == "problem":
            console.print(Text(event.message, style="yellow"))


if TYPE_CHECKING:
    from attn_drill.bench import BenchReport

BENCH_WORDS = {
    "en": {
        "head": "median of {runs} after {warmup} warm-up", "names": ("yours", "reference", "built-in"),
        "time": "time ~", "memory": "memory ~", "builtin": "built-in: {label}",
        "nothing": "Nothing to time yet.", "fix": "Fix it, then bench again; `attn-drill check {id}` says more.",
        "at": "At L={n} your code takes [bold]{time:.1f}×[/] the built-in's time",
        "and_memory": " and [bold]{memory:.1f}×[/] its memory",
        "quadratic": " Your memory grows as L^{k:.1f}: an L x L matrix is held, which is where O(L^2) memory bites.",
        "legend": "Each cell: the median time, then the peak memory beyond the inputs. Your code runs under the "
                  "forbidden-API guard, a hook on every operation, which shows at small L. Times only: "
                  "`attn-drill check {id}` says whether your code is right.",
    },
    "zh": {
        "head": "{warmup} 次预热后 {runs} 次运行的中位数", "names": ("你的代码", "参考答案", "内置实现"),
        "time": "时间 ~", "memory": "内存 ~", "builtin": "内置实现：{label}",
        "nothing": "还没有可以计时的代码。", "fix": "修正后再运行 bench；`attn-drill check {id}` 会给出更多信息。",
        "at": "在 L={n} 时，你的代码用时是内置实现的 [bold]{time:.1f}×[/]",
        "and_memory": "，内存是它的 [bold]{memory:.1f}×[/]",
        "quadratic": "你的内存按 L^{k:.1f} 增长：代码持有一个 L x L 矩阵，这正是 O(L^2) 内存开始吃紧的地方。",
        "legend": "每格：时间的中位数，其下是输入之外的峰值内存。你的代码在禁用 API 守卫下运行，每个算子都会被拦截"
                  "检查，L 较小时这部分开销较明显。这里只计时：代码是否正确请看 `attn-drill check {id}`。",
    },
}


def bench(console: Console, result: BenchReport, *, verbose: bool = False, lang: str = "en") -> None:
    """`attn-drill bench`: one row per implementation, one column per length (the median time
    over the peak memory), how each grows with L, then the comparison with the built-in."""
    words, common = BENCH_WORDS[lang], WORDS[lang]
    console.print(Text.assemble((result.exercise, "bold"), f" · {Path(result.file).name} · {result.device} · "
                                f"{result.inputs} · " + words["head"].format(runs=result.runs, warmup=result.warmup)))
    if result.sandbox == "none":
        console.print(Text(common["unsandboxed"], style="yellow"))
    if result.problem:
        console.print(Text(_bench_line(result.problem, lang), style="red"))
        console.print(Text.assemble((words["nothing"], "bold red"), " ", words["fix"].format(id=result.exercise)))
    else:
        names = dict(zip(("yours", "reference", "builtin"), words["names"]))
        table = Table(title=f"attn-drill bench {result.exercise}")
        table.add_column("", no_wrap=True)
        for length in result.lengths:
            table.add_column(f"L={length}", justify="right", no_wrap=True)
        table.add_column(words["time"], justify="right", no_wrap=True)
        table.add_column(words["memory"], justify="right", no_wrap=True)
        for series in result.series:
            cells = [f"{_duration(p.median_s)}\n{_memory(p.peak_bytes)}" if p else "—"
                     for p in map(series.at, result.lengths)]
            growth = [f"L^{k:.1f}" if k is not None else "—" for k in map(series.growth, ("time", "memory"))]
            table.add_row(Text(names.get(series.key, series.key), style="bold" if series.key == "yours" else ""),
                          *cells, *growth)
        console.print(table)
        builtin = result.series_named("builtin")
        if builtin is not None:
            console.print(Text(words["builtin"].format(label=builtin.label), style="dim"))
        for series in result.series:
            if series.stopped:
                console.print(Text(f"{names.get(series.key, series.key)}{'：' if lang == 'zh' else ': '}"
                                   f"{_bench_line(series.stopped, lang)}",
                                   style="red" if series.failed else "dim"))
        summary = _bench_summary(result, words)
        if summary:
            console.print(summary)
        console.print(Text(words["legend"].format(id=result.exercise), style="dim"))
    if verbose and result.output.strip():
        console.print(Panel(Text(result.output), title=common["printed"], expand=False))


def _bench_line(text: str, lang: str) -> str:
    """A line the judge wrote in English, in ``lang``."""
    if lang != "zh":
        return text
    from attn_drill.bench import zh_text

    return zh_text(text)


def _bench_summary(result: BenchReport, words: dict) -> str:
    """How far the learner is from the built-in, at the largest length both reached."""
    yours, builtin = result.series_named("yours"), result.series_named("builtin")
    both = [n for n in result.lengths if yours and builtin and yours.at(n) and builtin.at(n)]
    if not both:
        return ""
    mine, theirs = yours.at(both[-1]), builtin.at(both[-1])
    line = words["at"].format(n=both[-1], time=mine.median_s / max(theirs.median_s, 1e-9))
    if (mine.peak_bytes or 0) >= 1 << 20 and (theirs.peak_bytes or 0) >= 1 << 20:
        line += words["and_memory"].format(memory=mine.peak_bytes / theirs.peak_bytes)
    line += "。" if words is BENCH_WORDS["zh"] else "."
    grows, built = yours.growth("memory"), builtin.growth("memory")
    if grows is not None and grows >= 1.5 and (built is None or built < 1.5):
        line += words["quadratic"].format(k=grows)
    return line


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.2f} s"


def _memory(size: int | None) -> str:
    if size is None:
        return "—"
    if size < 1 << 20:
        return "<1 MiB"
    return f"{size / 2**20:.3g} MiB" if size < 1 << 30 else f"{size / 2**30:.3g} GiB"


GRADE_WORDS = {
    "en": {"columns": ("student", "passed", "checks", "score", "time", "reasons"),
           "title": "attn-drill grade {id} · {n} submissions · sandbox: {sandbox}",
           "summary": "{passed} of {total} submissions passed ({seconds:.1f} s).",
           "unsandboxed": "Not sandboxed (--allow-unsandboxed): the submissions' code ran as you, able to read "
                          "and write your files. The checks and verdicts still ran in a separate judge process.",
           "skipped": "Left out (not a .py file or a folder): {names}.", "written": "Written to {path}."},
    "zh": {"columns": ("学生", "通过", "检查", "得分", "用时", "原因"),
           "title": "attn-drill grade {id} · {n} 份提交 · 沙箱：{sandbox}",
           "summary": "{total} 份提交中通过 {passed} 份（{seconds:.1f} 秒）。",
           "unsandboxed": "未使用沙箱（--allow-unsandboxed）：提交的代码以你的身份运行，可以读写你的文件。"
                          "检查与判定仍在独立的评判进程中进行。",
           "skipped": "未纳入（不是 .py 文件或文件夹）：{names}。", "written": "已写入 {path}。"},
}


def grade_table(console: Console, report, *, written: Path | None = None, lang: str = "en") -> None:
    """`attn-drill grade`: one row per submission (or, with ``written``, only the summary), then
    the count passed; a warning when the code ran without a sandbox."""
    words = GRADE_WORDS[lang]
    if written is None:
        table = Table(title=words["title"].format(id=report.exercise, n=len(report.submissions),
                                                  sandbox=report.sandbox))
        for column in words["columns"]:
            table.add_column(column, justify="right" if column in words["columns"][2:5] else "left",
                             no_wrap=column != words["columns"][-1], overflow="fold")
        for row in report.submissions:
            table.add_row(Text(row.student), Text("✓", "green") if row.passed else Text("✗", "red"),
                          f"{row.checks_passed}/{row.checks}", f"{row.score:.0%}", f"{row.duration_s:.1f} s",
                          Text("\n".join(row.reasons), style="yellow"))
        console.print(table)
    if report.sandbox == "none":
        console.print(Text(words["unsandboxed"], style="yellow"))
    if report.skipped:
        console.print(Text(words["skipped"].format(names=", ".join(report.skipped)), style="dim"))
    passed = report.passed_count
    line = Text(words["summary"].format(passed=passed, total=len(report.submissions), seconds=report.duration_s),
                style="bold green" if report.passed else "bold red")
    if written is not None:
        line.append(("" if lang == "zh" else " ") + words["written"].format(path=written), style="")
    console.print(line)
