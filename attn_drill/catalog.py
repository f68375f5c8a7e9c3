"""The exercise catalog: one TOML file, loaded into frozen dataclasses, checked on load.

Instructors add exercises in packs: folders of their own with the same layout as the built-in
content (``catalog.toml``, ``exercises/``, ``solutions/``, ``checks/``, ``questions/``), named
by ``--pack DIR`` (repeatable) or ``ATTN_DRILL_PACKS`` (paths joined by the OS path
separator). A pack's ids cannot shadow built-in ones; a broken pack is reported (by
``attn-drill validate``, with the file and field) and left out, never breaking the rest.
"""

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
    pack: Path | None = None     # the pack folder it comes from; None: built in
    hints_zh: tuple[str, ...] = ()   # the same hints in Chinese, one for one; () where a pack gives none

    def hints_in(self, lang: str) -> tuple[str, ...]:
        """The hints in ``lang``: the Chinese ones under "zh" where given, else the English ones."""
        return self.hints_zh if lang == "zh" and self.hints_zh else self.hints

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
        return (self.pack / "exercises" if self.pack else content.starters_dir()) / self.file_name

    @property
    def solution_path(self) -> Path:
        return (self.pack / "solutions" if self.pack else content.solutions_dir()) / self.file_name

    @property
    def checks_path(self) -> Path:
        return (self.pack / "checks" if self.pack else content.CHECKS_DIR) / self.file_name


_FIELDS = {
    "id": str, "name": str, "title": str, "title_zh": str, "topic": str,
    "difficulty": int, "defines": list, "forbidden": list, "hints": list,
}
_OPTIONAL = {"hints_zh": list}   # a pack may leave these out


def _parse_entry(raw: dict, position: int, source: Path, pack: Path | None = None) -> Exercise:
    where = f"{source.name}: exercise #{position} ({raw.get('id', '?')})"
    missing = sorted(set(_FIELDS) - set(raw))
    unknown = sorted(set(raw) - set(_FIELDS) - set(_OPTIONAL))
    if missing or unknown:
        raise ContentError(f"{where}: missing fields {missing}, unknown fields {unknown}. Try fixing the entry.",
                           zh=f"{where}：缺少字段 {missing}，未知字段 {unknown}。请修正这一条。")
    for field, kind in {**_FIELDS, **_OPTIONAL}.items():
        if field in raw and not isinstance(raw[field], kind):
            raise ContentError(f"{where}: field '{field}' must be a {kind.__name__}.",
                               zh=f"{where}：字段 '{field}' 必须是 {kind.__name__}。")
    if not re.fullmatch(r"ex[1-9][0-9]*", str(raw["id"])):
        raise ContentError(f"{where}: id must look like ex1, ex2, ...; got {raw['id']!r}.",
                           zh=f"{where}：id 必须形如 ex1、ex2……，实际是 {raw['id']!r}。")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", raw["name"]):
        raise ContentError(f"{where}: name must be snake_case, got {raw['name']!r}.",
                           zh=f"{where}：name 必须是 snake_case，实际是 {raw['name']!r}。")
    if raw["topic"] not in TOPICS:
        raise ContentError(f"{where}: topic {raw['topic']!r} is not one of {', '.join(TOPICS)}.",
                           zh=f"{where}：topic {raw['topic']!r} 不在 {', '.join(TOPICS)} 之中。")
    if raw["difficulty"] not in (1, 2, 3):
        raise ContentError(f"{where}: difficulty must be 1, 2 or 3.", zh=f"{where}：difficulty 必须是 1、2 或 3。")
    if len(raw["hints"]) < 3:
        raise ContentError(f"{where}: give at least three hints, vaguest first.",
                           zh=f"{where}：至少给出三条提示，最笼统的在前。")
    if "hints_zh" in raw and len(raw["hints_zh"]) != len(raw["hints"]):
        raise ContentError(f"{where}: 'hints_zh' must have as many items as 'hints' ({len(raw['hints'])}), "
                           f"got {len(raw['hints_zh'])}; translate each hint, or leave hints_zh out.",
                           zh=f"{where}：'hints_zh' 的条数必须与 'hints' 相同（{len(raw['hints'])} 条），实际是 "
                              f"{len(raw['hints_zh'])} 条；逐条翻译，或者去掉 hints_zh。")
    if not raw["defines"]:
        raise ContentError(f"{where}: 'defines' must name what the learner writes.",
                           zh=f"{where}：'defines' 必须写明学习者要实现的名字。")
    lists = {key: tuple(str(item) for item in raw[key]) for key in ("defines", "forbidden", "hints", "hints_zh")
             if key in raw}
    return Exercise(**{**raw, **lists}, pack=pack)


_packs: list[Path] = []   # set by the CLI's --pack; ATTN_DRILL_PACKS adds to it


def use_packs(folders) -> None:
    """Make these pack folders part of the catalog (the CLI's --pack)."""
    _packs[:] = [Path(folder).expanduser().resolve() for folder in folders]


def pack_folders() -> list[Path]:
    import os

    from_env = [Path(p).expanduser().resolve() for p in os.environ.get("ATTN_DRILL_PACKS", "").split(os.pathsep) if p]
    return list(dict.fromkeys([*_packs, *from_env]))


def load_catalog(path: Path | None = None) -> tuple[Exercise, ...]:
    """The built-in catalog (or the one at ``path``) and every pack's exercises that load."""
    if path is not None:
        return _read_catalog(path)
    return _catalog_with_packs(tuple(pack_folders()))[0]


def forget_catalogs() -> None:
    """Read the catalog files again at the next look (after a pack's catalog was written)."""
    _catalog_with_packs.cache_clear()
    _read_catalog.cache_clear()


def pack_problems() -> list[str]:
    """What is wrong with the packs in use, one line each naming the file and field."""
    return list(_catalog_with_packs(tuple(pack_folders()))[1])


@lru_cache(maxsize=8)
def _catalog_with_packs(packs: tuple[Path, ...]) -> tuple[tuple[Exercise, ...], tuple[str, ...]]:
    exercises = list(_read_catalog(content.CATALOG_FILE))
    problems = []
    for folder in packs:
        try:
            if not (folder / "catalog.toml").is_file():
                raise ContentError(f"{folder}: not a pack (no catalog.toml). `attn-drill new ID --pack {folder}` "
                                   "starts one.", zh=f"{folder}：不是练习包（没有 catalog.toml）。"
                                                     f"`attn-drill new ID --pack {folder}` 可以新建一个。")
            found = _read_catalog(folder / "catalog.toml", pack=folder)
        except ContentError as problem:
            problems.append(f"pack {problem}")
            continue
        for exercise in found:
            taken = next((ex for ex in exercises if ex.id == exercise.id or ex.name == exercise.name), None)
            if taken is not None:
                where = "built in" if taken.pack is None else f"in {taken.pack}"
                problems.append(f"pack {folder / 'catalog.toml'}: {exercise.id} ({exercise.name}) is already "
                                f"{where}; give it another id and name.")
            else:
                exercises.append(exercise)
    return tuple(sorted(exercises, key=lambda ex: ex.number)), tuple(problems)


@lru_cache(maxsize=16)
def _read_catalog(path: Path, pack: Path | None = None) -> tuple[Exercise, ...]:
    """Read and check one catalog file; raises ContentError naming the entry and field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContentError(f"cannot read the catalog {path}: {exc}", zh=f"无法读取练习目录 {path}：{exc}") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise ContentError(f"{path}: format_version must be {FORMAT_VERSION}.",
                           zh=f"{path}：format_version 必须是 {FORMAT_VERSION}。")
    entries = data.get("exercises", [])
    exercises = sorted((_parse_entry(raw, i, path, pack) for i, raw in enumerate(entries, start=1)),
                       key=lambda ex: ex.number)
    for field in ("id", "name"):
        values = [getattr(ex, field) for ex in exercises]
        if len(set(values)) != len(values):
            raise ContentError(f"{path.name}: exercise {field}s must be unique.",
                               zh=f"{path.name}：各练习的 {field} 不能重复。")
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
    raise UnknownExercise(f"no exercise named '{key}'. Try one of: {known} (see `attn-drill list`).",
                          zh=f"没有名为 '{key}' 的练习。可选：{known}（见 `attn-drill list`）。")
