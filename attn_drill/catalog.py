"""The exercise catalog: one TOML file, loaded into frozen dataclasses, checked on load."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from attn_drill import content
from attn_drill.errors import ContentError, UnknownExercise

FORMAT_VERSION = 1
TOPICS = (
    "self-attention", "multi-head", "positional-encoding", "masking",
    "information-leakage", "inference", "efficient-attention", "math",
    "architecture", "debugging",
)


@dataclass(frozen=True)
class Exercise:
    """One entry of the catalog."""

    id: str                      # "ex1"
    name: str                    # "self_attention"
    title: str                   # shown in `list`
    title_zh: str
    topic: str
    difficulty: int              # 1 easy .. 3 hard
    defines: tuple[str, ...]     # names the learner's file must define
    forbidden: tuple[str, ...]   # dotted names that raise "write this yourself" while learner code runs
    hints: tuple[str, ...]       # progressive: vaguest first

    @property
    def number(self) -> int:
        return int(self.id[2:])

    @property
    def stem(self) -> str:
        """File stem shared by the starter, the reference and the hidden checks."""
        return f"ex{self.number:02d}_{self.name}"

    @property
    def file_name(self) -> str:
        return f"{self.stem}.py"

    @property
    def starter_path(self) -> Path:
        return content.starters_dir() / self.file_name

    @property
    def solution_path(self) -> Path:
        return content.solutions_dir() / self.file_name

    @property
    def checks_path(self) -> Path:
        return content.CHECKS_DIR / self.file_name


_FIELDS = {
    "id": str, "name": str, "title": str, "title_zh": str, "topic": str,
    "difficulty": int, "defines": list, "forbidden": list, "hints": list,
}


def _parse_entry(raw: dict, position: int, source: Path) -> Exercise:
    where = f"{source.name}: exercise #{position} ({raw.get('id', '?')})"
    missing = sorted(set(_FIELDS) - set(raw))
    unknown = sorted(set(raw) - set(_FIELDS))
    if missing or unknown:
        raise ContentError(f"{where}: missing fields {missing}, unknown fields {unknown}. Try fixing the entry.")
    for field, kind in _FIELDS.items():
        if not isinstance(raw[field], kind):
            raise ContentError(f"{where}: field '{field}' must be a {kind.__name__}.")
    if not re.fullmatch(r"ex[1-9][0-9]*", str(raw["id"])):
        raise ContentError(f"{where}: id must look like ex1, ex2, ...; got {raw['id']!r}.")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", raw["name"]):
        raise ContentError(f"{where}: name must be snake_case, got {raw['name']!r}.")
    if raw["topic"] not in TOPICS:
        raise ContentError(f"{where}: topic {raw['topic']!r} is not one of {', '.join(TOPICS)}.")
    if raw["difficulty"] not in (1, 2, 3):
        raise ContentError(f"{where}: difficulty must be 1, 2 or 3.")
    if len(raw["hints"]) < 3:
        raise ContentError(f"{where}: give at least three hints, vaguest first.")
    if not raw["defines"]:
        raise ContentError(f"{where}: 'defines' must name what the learner writes.")
    lists = {key: tuple(str(item) for item in raw[key]) for key in ("defines", "forbidden", "hints")}
    return Exercise(**{**raw, **lists})


@lru_cache(maxsize=4)
def load_catalog(path: Path = content.CATALOG_FILE) -> tuple[Exercise, ...]:
    """Read and check the catalog; raises ContentError naming the entry and field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContentError(f"cannot read the catalog {path}: {exc}") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise ContentError(f"{path.name}: format_version must be {FORMAT_VERSION}.")
    entries = data.get("exercises", [])
    exercises = sorted((_parse_entry(raw, i, path) for i, raw in enumerate(entries, start=1)),
                       key=lambda ex: ex.number)
    for field in ("id", "name"):
        values = [getattr(ex, field) for ex in exercises]
        if len(set(values)) != len(values):
            raise ContentError(f"{path.name}: exercise {field}s must be unique.")
    return tuple(exercises)


def find_exercise(key: str) -> Exercise:
    """Resolve ``ex1``, ``ex01``, ``1``, ``ex01_self_attention`` or ``self_attention``."""
    wanted = key.strip().lower().replace("-", "_").removesuffix(".py")
    match = re.fullmatch(r"(?:ex)?0*(\d+)", wanted)
    for exercise in load_catalog():
        if match and int(match.group(1)) == exercise.number:
            return exercise
        if wanted in (exercise.stem, exercise.name):
            return exercise
    known = ", ".join(ex.id for ex in load_catalog())
    raise UnknownExercise(f"no exercise named '{key}'. Try one of: {known} (see `attn-drill list`).")
