"""`--help` in the user's language.

The English texts live with the commands (cli.py's docstrings and ``help=`` strings); the
Chinese ones in ``help_zh.toml``, by command and parameter name, with click's and Typer's own
words ("Usage:", "Options", its usage errors) in its ``[click]`` table. Click marks those words
for gettext, and each of its modules binds ``_`` at import: :func:`speak_click` rebinds them.
Under zh the help is wrapped by display width, breaking between CJK characters too (rich's
wrapping), since click's wrapper counts characters and breaks only at spaces.
"""

from __future__ import annotations

import functools
import gettext
import sys
import tomllib
from pathlib import Path

import click

from attn_drill import linebreak
from attn_drill.errors import ContentError
from attn_drill.i18n import QUIZ_TOPICS, topic_name

ZH_FILE = Path(__file__).with_name("help_zh.toml")
TOP = "attn-drill"   # the name of the top level's table
CLICK_MODULES = ("click.core", "click.decorators", "click.exceptions", "click.formatting", "click.parser",
                 "click.types", "typer.core")
ENTRY_KEYS = {"help", "short", "params"}


@functools.cache
def zh_texts() -> dict:
    """help_zh.toml, checked: [commands.NAME] tables of help/short strings and a params table of
    strings, and a [click] table of strings."""
    try:
        data = tomllib.loads(ZH_FILE.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ContentError(f"{ZH_FILE.name}: {error}") from None
    if set(data) != {"commands", "click"}:
        raise ContentError(f"{ZH_FILE.name}: the tables are [commands.NAME] and [click], not {sorted(data)}")
    strings = [("click", value) for value in data["click"].values()]
    for name, entry in data["commands"].items():
        if not isinstance(entry, dict) or not set(entry) <= ENTRY_KEYS or not isinstance(entry.get("params", {}), dict):
            raise ContentError(f"{ZH_FILE.name}: [commands.{name}] takes only {sorted(ENTRY_KEYS)}, params a table")
        strings += [(name, entry.get("help", "")), (name, entry.get("short", ""))]
        strings += [(name, value) for value in entry.get("params", {}).values()]
    for where, value in strings:
        if not isinstance(value, str):
            raise ContentError(f"{ZH_FILE.name}: [{where}] holds {value!r}, which is not a string")
    return data


def speak_click(lang: str) -> None:
    """Click's and Typer's own words in ``lang``: their modules' gettext functions, rebound."""
    table = zh_texts()["click"] if lang == "zh" else None

    def translate(message: str) -> str:
        return table.get(message, message)

    def translate_plural(singular: str, plural: str, n: int) -> str:
        return translate(singular if n == 1 else plural)

    for name in CLICK_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        if hasattr(module, "_"):
            module._ = translate if table else gettext.gettext
        if hasattr(module, "ngettext"):
            module.ngettext = translate_plural if table else gettext.ngettext


def localize(root: click.Group, lang: str) -> None:
    """Put the help of ``root`` and of its commands in ``lang`` (English is already there)."""
    if lang != "zh":
        return
    commands = zh_texts()["commands"]
    for name, command in [(TOP, root), *root.commands.items()]:
        entry = commands.get(name, {})
        example = _example_block(command.help or "")
        if "help" in entry:
            command.help = entry["help"].strip() + (f"\n\n\b\n示例：\n{example}" if example else "")
            command.short_help = entry.get("short") or entry["help"].strip().split("\n\n")[0]
        for param in command.params:
            text = entry.get("params", {}).get(param.name)
            if text is not None:
                param.help = text.format(topics=_topics_zh())
        command.context_class = _ZhContext


def _example_block(text: str) -> str:
    """The lines under "Example:" in an English docstring (the commands to type stay as they are)."""
    _, found, tail = text.partition("\b\nExample:\n")
    return tail.rstrip() if found else ""


def _topics_zh() -> str:
    return "、".join(f"{topic}（{topic_name(topic, 'zh')}）" for topic in QUIZ_TOPICS)


def wrap(text: str, width: int, indent: int = 0) -> list[str]:
    """``text`` (one paragraph) in lines of at most ``width`` display columns, ``indent`` of them
    spaces: a CJK character takes two and a line may break between two of them."""
    from rich.console import Console
    from rich.text import Text

    linebreak.install()
    room = max(width - indent, 10)
    console = Console(width=room, no_color=True, highlight=False)
    return [" " * indent + line.plain.rstrip() for line in Text(text).wrap(console, room)]


def _paragraphs(text: str) -> list[tuple[bool, list[str]]]:
    """Paragraphs as click reads them: (verbatim, lines); a paragraph that starts with \\b is not rewrapped."""
    found = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        if lines[0] == "\b":
            found.append((True, lines[1:]))
        else:
            found.append((False, [_join(line.strip() for line in lines)]))
    return found


def _join(lines) -> str:
    """Lines of one paragraph as one: a space between two words, none between CJK characters."""
    joined = ""
    for line in lines:
        if joined and line and not (linebreak.is_wide(joined[-1]) and linebreak.is_wide(line[0])):
            joined += " "
        joined += line
    return joined


def _width(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


class ZhHelpFormatter(click.HelpFormatter):
    """Click's help layout, wrapped by display width."""

    def write_text(self, text: str) -> None:
        for number, (verbatim, lines) in enumerate(_paragraphs(text)):
            if number:
                self.write("\n")
            for line in lines if verbatim else wrap(lines[0], self.width, self.current_indent):
                self.write((" " * self.current_indent + line if verbatim else line) + "\n")

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first_width = min(max((_width(first) for first, _ in rows), default=0), col_max) + col_spacing
        for first, second in rows:
            self.write(" " * self.current_indent + first)
            if not second:
                self.write("\n")
                continue
            if _width(first) <= first_width - col_spacing:
                self.write(" " * (first_width - _width(first)))
            else:
                self.write("\n" + " " * (first_width + self.current_indent))
            text_width = max(self.width - first_width - self.current_indent, 10)
            lines = [line for verbatim, block in _paragraphs(second)
                     for line in (block if verbatim else wrap(block[0], text_width))]
            self.write(lines[0] + "\n")
            for line in lines[1:]:
                self.write(" " * (first_width + self.current_indent) + line + "\n")


class _ZhContext(click.Context):
    formatter_class = ZhHelpFormatter
