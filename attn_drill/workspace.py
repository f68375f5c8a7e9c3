"""A learner's workspace: a folder with ``attn-drill.toml`` and ``exercises/``.

``attn-drill init DIR`` makes one; a clone of the repository is one too (its root carries
the marker), so a learner can work in either, as with rustlings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from attn_drill.catalog import Exercise, load_catalog
from attn_drill.errors import WorkspaceError

MARKER = "attn-drill.toml"
MARKER_TEXT = "# An attn-drill workspace: edit the files in exercises/, then run `attn-drill check`.\nformat_version = 1\n"


@dataclass(frozen=True)
class Workspace:
    root: Path

    def file_for(self, exercise: Exercise) -> Path:
        return self.root / "exercises" / exercise.file_name


def find_workspace(start: Path | None = None) -> Workspace | None:
    """The nearest folder at or above ``start`` that holds the workspace marker."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return Workspace(folder)
    return None


TO_DO_ZH = {   # the Chinese of the ``to_do`` the callers pass without one
    "work on an exercise": "做练习",
    "watch an exercise": "监视练习",
}


def require_workspace(to_do: str = "work on an exercise", to_do_zh: str | None = None) -> Workspace:
    """The current workspace; ``to_do`` (in Chinese ``to_do_zh``) completes the error's "cd into
    one to ..." line."""
    workspace = find_workspace()
    if workspace is None:
        doing = to_do_zh or TO_DO_ZH.get(to_do)
        raise WorkspaceError(f"no attn-drill workspace here or above: cd into one to {to_do}. "
                             "`attn-drill init DIR` makes one.",
                             zh=("当前目录及其上层都没有 attn-drill 工作区："
                                 + (f"先 cd 进入一个工作区，再{doing}。" if doing else "先 cd 进入一个工作区。")
                                 + "`attn-drill init DIR` 可以新建一个。"))
    return workspace


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a crash leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # as an ordinary new file would be, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class InitResult:
    root: Path
    created: list[str]
    kept: list[str]      # files already there, left untouched


def init_workspace(folder: Path) -> InitResult:
    """Copy every starter into ``folder/exercises``; never overwrite a learner's file."""
    if folder.exists() and not folder.is_dir():
        raise WorkspaceError(f"{folder} is a file, not a folder. Try another path.",
                             zh=f"{folder} 是一个文件，不是文件夹。请换一个路径。")
    created, kept = [], []
    for exercise in load_catalog():
        target = Workspace(folder).file_for(exercise)
        if target.exists():
            kept.append(exercise.file_name)
        else:
            write_atomically(target, exercise.starter_path.read_text(encoding="utf-8"))
            created.append(exercise.file_name)
    if not (folder / MARKER).exists():
        write_atomically(folder / MARKER, MARKER_TEXT)
    return InitResult(folder.resolve(), created, kept)


def pristine_starter(exercise: Exercise, current: Path) -> str:
    """The starter's text. In a clone the workspace file *is* the shipped starter, so the
    pristine text comes from git."""
    shipped = exercise.starter_path
    if not (current.exists() and current.resolve() == shipped.resolve()):
        return shipped.read_text(encoding="utf-8")
    try:
        shown = subprocess.run(["git", "show", f"HEAD:./{current.name}"], cwd=current.parent,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise WorkspaceError(f"cannot find the original starter of {exercise.id} (this clone has no git "
                             "history for it). Try `attn-drill init DIR` for a fresh workspace.",
                             zh=f"找不到 {exercise.id} 原来的初始代码（这个克隆里没有它的 git 历史）。"
                                "可以用 `attn-drill init DIR` 新建一个工作区。") from None
    return shown.stdout


def reset_exercise(exercise: Exercise, workspace: Workspace, backups: Path) -> Path | None:
    """Back up the learner's file, then put the starter back. Returns the backup's path."""
    target = workspace.file_for(exercise)
    starter = pristine_starter(exercise, target)
    backup = None
    if target.exists():
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        backup = backups / f"{exercise.stem}-{stamp}.py"
        backups.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, backup)
    write_atomically(target, starter)
    return backup
