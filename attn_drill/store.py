"""Progress and history, in one SQLite file under ``ATTN_DRILL_HOME``.

SQLite gives atomic, durable writes and safe concurrent use (two commands at once wait on a
lock rather than corrupt the file). A damaged file is reported and set aside under a new
name, never silently replaced.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable

from attn_drill.errors import StoreError

DB_NAME = "attn-drill.db"
SCHEMA_VERSION = 4   # 1: exercises and hints; 2: + quiz answers and FSRS cards; 3: + quiz_answers.was_due;
                     # 4: exercise progress per workspace (an older file upgrades in place)
SCHEMA = """
CREATE TABLE IF NOT EXISTS workspace_progress (
    workspace    TEXT NOT NULL,          -- the workspace's folder, '' for files graded outside one
    exercise     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('passed', 'failed', 'pending')),   -- pending: reset
    ever_passed  INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (workspace, exercise)
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
CREATE TABLE IF NOT EXISTS quiz_answers (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    question  TEXT NOT NULL,
    topic     TEXT NOT NULL,
    correct   INTEGER NOT NULL,          -- 1 right (a card: rated Hard or better), 0 wrong
    rating    INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 4),   -- FSRS: 1 Again .. 4 Easy
    answer    TEXT NOT NULL,             -- what the learner typed
    at        TEXT NOT NULL,
    was_due   INTEGER                    -- 1: the question had a card due when answered (a due review),
                                         -- 0: not (new, or asked early), NULL: answered before schema 3
);
CREATE INDEX IF NOT EXISTS quiz_answers_question ON quiz_answers (question);
CREATE TABLE IF NOT EXISTS quiz_cards (
    question    TEXT PRIMARY KEY,
    topic       TEXT NOT NULL,
    card        TEXT NOT NULL,           -- fsrs Card.to_dict() as JSON
    due         REAL NOT NULL,           -- the card's due time, Unix seconds
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quiz_cards_due ON quiz_cards (due);
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


DAY_STARTS_AT_HOUR = 4   # as in Anki: a study day ends at 4 am local time, not at midnight


def day_end(at: datetime | None = None) -> float:
    """The end of the study day containing ``at`` (default now), as Unix seconds: quiz
    questions due before it are "due today"."""
    local = (at or datetime.now(timezone.utc)).astimezone()
    end = local.replace(hour=DAY_STARTS_AT_HOUR, minute=0, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.timestamp()


@dataclass(frozen=True)
class ExerciseProgress:
    status: str          # "passed" | "failed" | "pending"
    ever_passed: bool
    attempts: int


class Store:
    """Open with :func:`open_store`; every method is one short transaction."""

    def __init__(self, path: Path, warnings: list[str], warnings_zh: list[str] | None = None):
        self.path = path
        self.warnings = warnings   # things the user should hear about (a damaged file set aside)
        self.warnings_zh = warnings_zh if warnings_zh is not None else []   # the same, in Chinese
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

    # An exercise's status belongs to the workspace where it was earned (a fresh workspace starts
    # pending); the quiz history belongs to the user.

    def record_check(self, exercise: str, passed: bool, mistakes: list[str], workspace: str = "") -> None:
        at = now()
        with self.transaction() as db:
            db.execute(
                """INSERT INTO workspace_progress (workspace, exercise, status, ever_passed, attempts, updated_at)
                   VALUES (?, ?, ?, ?, 1, ?)
                   ON CONFLICT (workspace, exercise) DO UPDATE SET status = excluded.status,
                       ever_passed = MAX(ever_passed, excluded.ever_passed),
                       attempts = attempts + 1, updated_at = excluded.updated_at""",
                (workspace, exercise, "passed" if passed else "failed", int(passed), at))
            db.execute("INSERT INTO check_history (exercise, passed, mistakes, at) VALUES (?, ?, ?, ?)",
                       (exercise, int(passed), json.dumps(mistakes), at))

    def progress(self, workspace: str = "") -> dict[str, ExerciseProgress]:
        rows = self._db.execute("SELECT exercise, status, ever_passed, attempts FROM workspace_progress "
                                "WHERE workspace = ?", (workspace,))
        return {row[0]: ExerciseProgress(row[1], bool(row[2]), row[3]) for row in rows}

    def exercise_progress(self, exercise: str, workspace: str = "") -> ExerciseProgress:
        return self.progress(workspace).get(exercise, ExerciseProgress("pending", False, 0))

    def ever_passed(self, exercise: str) -> bool:
        """Passed once, in any workspace (the reference solution is unlocked for good)."""
        return bool(self._db.execute("SELECT MAX(ever_passed) FROM workspace_progress WHERE exercise = ?",
                                     (exercise,)).fetchone()[0])

    def forget_status(self, exercise: str, workspace: str) -> None:
        """`reset`: the exercise is pending again in this workspace (its history stays)."""
        with self.transaction() as db:
            db.execute("UPDATE workspace_progress SET status = 'pending', updated_at = ? "
                       "WHERE workspace = ? AND exercise = ?", (now(), workspace, exercise))

    def take_hint(self, exercise: str, available: int) -> int:
        """Count one more hint shown (up to ``available``); return how many have been shown."""
        with self.transaction() as db:
            row = db.execute("SELECT hints_shown FROM hints WHERE exercise = ?", (exercise,)).fetchone()
            shown = min((row[0] if row else 0) + 1, available)
            db.execute("INSERT INTO hints (exercise, hints_shown) VALUES (?, ?) "
                       "ON CONFLICT (exercise) DO UPDATE SET hints_shown = excluded.hints_shown", (exercise, shown))
        return shown

    # -- quiz ----------------------------------------------------------------------------

    def record_answer(self, question: str, topic: str, *, correct: bool, rating: int, answer: str,
                      review: Callable[[str | None], tuple[str, float]]) -> None:
        """Keep one answer and its review in ONE transaction: ``review`` gets the question's
        card (JSON, None before its first answer) and returns the new card and its due time.
        The answer is marked a due review when the question had a card whose due time had come."""
        with self.transaction() as db:
            row = db.execute("SELECT card, due FROM quiz_cards WHERE question = ?", (question,)).fetchone()
            was_due = row is not None and row[1] <= datetime.now(timezone.utc).timestamp()
            card, due = review(row[0] if row else None)
            at = now()
            db.execute("""INSERT INTO quiz_answers (question, topic, correct, rating, answer, at, was_due)
                          VALUES (?, ?, ?, ?, ?, ?, ?)""",
                       (question, topic, int(correct), rating, answer, at, int(was_due)))
            self._put_card(db, question, topic, card, due, at)

    def make_due(self, questions: Iterable[tuple[str, str]],
                 bring_due: Callable[[str, str | None], tuple[str, float]]) -> None:
        """Make (question, topic) pairs due now, in one transaction: ``bring_due(question, card)``
        returns the card made due and its due time."""
        with self.transaction() as db:
            at = now()
            for question, topic in questions:
                row = db.execute("SELECT card FROM quiz_cards WHERE question = ?", (question,)).fetchone()
                card, due = bring_due(question, row[0] if row else None)
                self._put_card(db, question, topic, card, due, at)

    @staticmethod
    def _put_card(db, question: str, topic: str, card: str, due: float, at: str) -> None:
        db.execute("""INSERT INTO quiz_cards (question, topic, card, due, updated_at) VALUES (?, ?, ?, ?, ?)
                      ON CONFLICT (question) DO UPDATE SET topic = excluded.topic, card = excluded.card,
                          due = excluded.due, updated_at = excluded.updated_at""",
                   (question, topic, card, due, at))

    def due_count(self, at: float | None = None) -> int:
        """How many questions are due at ``at`` (default: the end of today, see day_end)."""
        at = day_end() if at is None else at
        return self._db.execute("SELECT COUNT(*) FROM quiz_cards WHERE due <= ?", (at,)).fetchone()[0]

    def card_dues(self) -> dict[str, float]:
        """Every question that has a card, with its due time."""
        return dict(self._db.execute("SELECT question, due FROM quiz_cards"))

    def cards(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT question, card FROM quiz_cards"))

    def answer_summary(self) -> dict[str, tuple[int, bool]]:
        """question -> (answers given, whether the latest was right)."""
        rows = self._db.execute(
            """SELECT a.question, counts.n, a.correct FROM quiz_answers a
               JOIN (SELECT question, COUNT(*) AS n, MAX(id) AS last FROM quiz_answers GROUP BY question) counts
                 ON a.id = counts.last""")
        return {question: (n, bool(correct)) for question, n, correct in rows}

    def answers(self) -> list[dict]:
        """Every answer kept, oldest first (``was_due``: 1 a due review, 0 not, None unknown)."""
        names = ("question", "topic", "correct", "rating", "answer", "at", "was_due")
        rows = self._db.execute(f"SELECT {', '.join(names)} FROM quiz_answers ORDER BY id")
        return [dict(zip(names, row)) for row in rows]


LOCKED_WAIT_S = 15.0   # how long opening waits for another process that holds the store


def open_store(folder: Path | None = None) -> Store:
    """Open (creating if needed) the store; a damaged file is moved aside and reported."""
    folder = folder or home()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the progress folder {folder}: {exc.strerror}. "
                         "Set ATTN_DRILL_HOME to a writable folder.",
                         zh=f"无法创建进度文件夹 {folder}：{exc.strerror}。"
                            "请把 ATTN_DRILL_HOME 设为一个可写的文件夹。") from None
    path = folder / DB_NAME
    warnings: list[str] = []
    warnings_zh: list[str] = []
    set_aside, waited = False, 0.0
    while True:
        store = None
        try:
            store = Store(path, warnings, warnings_zh)
            _prepare(store)
            return store
        except sqlite3.DatabaseError as exc:
            if store is not None:
                store.close()
            if "locked" in str(exc) and waited < LOCKED_WAIT_S:
                # Another process is creating or upgrading the store (sqlite's busy timeout does not
                # cover switching a new file to WAL): wait for it and open again.
                time.sleep(0.05)
                waited += 0.05
                continue
            if set_aside or not path.exists() or "locked" in str(exc):
                raise StoreError(f"cannot open the progress store {path}: {exc}.",
                                 zh=f"无法打开进度存储 {path}：{exc}。") from None
            aside, set_aside = _set_aside(path), True
            warnings.append(f"the progress store {path} was damaged ({exc}); it was kept as {aside.name} "
                            "and a new one was started.")
            warnings_zh.append(f"进度存储 {path} 已损坏（{exc}）；它被保留为 {aside.name}，并新建了一个。")


def _prepare(store: Store) -> None:
    db = store._db
    if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        raise sqlite3.DatabaseError("integrity check failed")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{store.path} was written by a newer attn-drill (schema {version}); upgrade attn-drill.",
                         zh=f"{store.path} 是由更新版本的 attn-drill 写入的（schema {version}）；请升级 attn-drill。")
    db.executescript(SCHEMA)
    if version < SCHEMA_VERSION:
        with store.transaction():   # of two processes upgrading at once, the second finds the work done
            if "was_due" not in {row[1] for row in db.execute("PRAGMA table_info(quiz_answers)")}:
                db.execute("ALTER TABLE quiz_answers ADD COLUMN was_due INTEGER")       # 2 -> 3
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "exercise_progress" in tables:                                           # 3 -> 4
                db.execute("""INSERT OR IGNORE INTO workspace_progress
                              SELECT '', exercise, status, ever_passed, attempts, updated_at FROM exercise_progress""")
                db.execute("DROP TABLE exercise_progress")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _set_aside(path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(path) + suffix)
        if source.exists():
            os.replace(source, Path(str(aside) + suffix))
    return aside
