"""Line breaks for mixed Chinese and English text.

rich wraps at spaces and folds a "word" longer than the line character by character, so a
Chinese sentence (no spaces) is moved whole to the next line, and an English word glued to
Chinese punctuation (`masking（掩码）`) can be cut in half. Chinese text may break between
any two CJK characters, except before closing punctuation (，。）) or after opening
punctuation (（《). :func:`words` gives rich those break points too: rich's ``divide_line``
splits lines at the ends of the words it is given, so :func:`install` swaps its word
splitter and leaves the rest of rich's wrapping (widths in cells, folding, overflow) as it is.
Text without CJK characters is split exactly as rich splits it.
"""

from __future__ import annotations

import unicodedata
from typing import Iterator

NO_LINE_START = frozenset("，。、；：？！）》」』】〉…,.;:?!)]}%")
NO_LINE_END = frozenset("（《「『【〈([{")


def is_wide(character: str) -> bool:
    return unicodedata.east_asian_width(character) in ("W", "F")


def may_break_before(text: str, i: int) -> bool:
    """Whether a line may end just before ``text[i]`` (0 < i < len(text))."""
    before, here = text[i - 1], text[i]
    if here.isspace():
        return False
    if before.isspace():
        return not text[:i].isspace()   # leading spaces belong to the first word
    return (is_wide(before) or is_wide(here)) and here not in NO_LINE_START and before not in NO_LINE_END


def words(text: str) -> Iterator[tuple[int, int, str]]:
    """rich's ``_wrap.words`` contract: (start, end, word) with the word's trailing spaces, for
    words that end at a space or where Chinese text may break."""
    if not text or text.isspace():
        return
    start = 0
    for i in range(1, len(text)):
        if may_break_before(text, i):
            yield start, i, text[start:i]
            start = i
    yield start, len(text), text[start:]


def install() -> None:
    """Make rich wrap with :func:`words` (rich looks the splitter up at each call)."""
    from rich import _wrap

    if hasattr(_wrap, "words"):
        _wrap.words = words
