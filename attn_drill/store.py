"""Progress and history, in one SQLite file under ``ATTN_DRILL_HOME``.

SQLite gives atomic, durable writes and safe concurrent use (two commands at once wait on a
lock rather than corrupt the file). A damaged file is reported and set aside under a new
name, never silently replaced.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from attn_drill.errors import StoreError

DB_NAME = "attn-drill.db"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS exercise_progress (
    exercise     TEXT PRIMARY KEY,
    status       TEXT NOT NULL CHECK (status IN ('passed', 'failed')),
    ever_passed  INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS check_history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    exercise  TEXT NOT NULL,
    passed    INTEGER NOT NULL,
    mistakes  TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hints (
    exercise     TEXT PRIMARY KEY,
    hints_shown  INTEGER NOT NULL
);
"""


def home() -> Path:
    """The folder holding progress: ``$ATTN_DRILL_HOME`` or the platform's user data folder."""
    configured = os.environ.get("ATTN_DRILL_HOME")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("attn-drill", appauthor=False))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ExerciseProgress:
    status: str          # "passed" | "failed" | "pending"
    ever_passed: bool
    attempts: int


class Store:
    """Open with :func:`open_store`; every method is one short transaction."""

    def __init__(self, path: Path, warnings: list[str]):
        self.path = path
        self.warnings = warnings   # things the user should hear about (a damaged file set aside)
        self._db = sqlite3.connect(path, timeout=15, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- exercises ---------------------------------------------------------------------

    def record_check(self, exercise: str, passed: bool, mistakes: list[str]) -> None:
        at = now()
        with self.transaction() as db:
            db.execute(
                """INSERT INTO exercise_progress (exercise, status, ever_passed, attempts, updated_at)
                   VALUES (?, ?, ?, 1, ?)
                   ON CONFLICT (exercise) DO UPDATE SET status = excluded.status,
                       ever_passed = MAX(ever_passed, excluded.ever_passed),
                       attempts = attempts + 1, updated_at = excluded.updated_at""",
                (exercise, "passed" if passed else "failed", int(passed), at))
            db.execute("INSERT INTO check_history (exercise, passed, mistakes, at) VALUES (?, ?, ?, ?)",
                       (exercise, int(passed), json.dumps(mistakes), at))

    def progress(self) -> dict[str, ExerciseProgress]:
        rows = self._db.execute("SELECT exercise, status, ever_passed, attempts FROM exercise_progress")
        return {row[0]: ExerciseProgress(row[1], bool(row[2]), row[3]) for row in rows}

    def exercise_progress(self, exercise: str) -> ExerciseProgress:
        return self.progress().get(exercise, ExerciseProgress("pending", False, 0))

    def take_hint(self, exercise: str, available: int) -> int:
        """Count one more hint shown (up to ``available``); return how many have been shown."""
        with self.transaction() as db:
            row = db.execute("SELECT hints_shown FROM hints WHERE exercise = ?", (exercise,)).fetchone()
            shown = min((row[0] if row else 0) + 1, available)
            db.execute("INSERT INTO hints (exercise, hints_shown) VALUES (?, ?) "
                       "ON CONFLICT (exercise) DO UPDATE SET hints_shown = excluded.hints_shown", (exercise, shown))
        return shown


def open_store(folder: Path | None = None) -> Store:
    """Open (creating if needed) the store; a damaged file is moved aside and reported."""
    folder = folder or home()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the progress folder {folder}: {exc.strerror}. "
                         "Set ATTN_DRILL_HOME to a writable folder.") from None
    path = folder / DB_NAME
    warnings: list[str] = []
    for attempt in range(2):
        try:
            store = Store(path, warnings)
            _prepare(store)
            return store
        except sqlite3.DatabaseError as exc:
            if attempt or not path.exists() or "locked" in str(exc):
                raise StoreError(f"cannot open the progress store {path}: {exc}.") from None
            aside = _set_aside(path)
            warnings.append(f"the progress store {path} was damaged ({exc}); it was kept as {aside.name} "
                            "and a new one was started.")
    raise AssertionError("unreachable")


def _prepare(store: Store) -> None:
    db = store._db
    if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        raise sqlite3.DatabaseError("integrity check failed")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{store.path} was written by a newer attn-drill (schema {version}); upgrade attn-drill.")
    db.executescript(SCHEMA)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _set_aside(path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(path) + suffix)
        if source.exists():
            os.replace(source, Path(str(aside) + suffix))
    return aside
