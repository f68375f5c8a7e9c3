"""`attn-drill stats`: quiz mastery by topic and exercise progress, as data, with what Anki
shows beside them: a review calendar, retention, and leeches.

Definitions (the CLI and ``stats --json`` use them as they are):

- A *review* is one answer kept in the store (a card's self-rating included).
- A *study day* ends at 4 am local time, as in Anki (store.DAY_STARTS_AT_HOUR): an answer at
  2 am counts for the day before.
- The *calendar* counts reviews per study day over the last 12 weeks (84 days, today
  included), every day listed, 0 for a day without reviews.
- A *due review* is an answer to a question that had a card due at that moment (it had been
  answered before, or a mistake in an exercise brought it back, and its due time had come).
  First answers and questions asked before they were due are not due reviews; answers kept
  before schema 3 of the store are not known and not counted.
- *Retention* of a topic is the share of due reviews that were right (a card: rated Hard or
  better): what FSRS aims to keep at 90%. None when the topic has no due review yet.
- A *leech* is a question missed (answered wrong, or a card rated Again) 4 times or more,
  ever; `attn-drill quiz --leeches` drills them, most missed first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone

from attn_drill.practice import ExerciseRow, exercise_rows
from attn_drill.quiz.bank import Bank, load_bank
from attn_drill.quiz.engine import LEECH_MISSES, TopicMastery, mastery
from attn_drill.store import DAY_STARTS_AT_HOUR, Store

CALENDAR_DAYS = 7 * 12


def study_day(at: datetime) -> date:
    """The study day (local, ending at 4 am) that a moment belongs to."""
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return (at.astimezone() - timedelta(hours=DAY_STARTS_AT_HOUR)).date()


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def calendar(answers: list[dict], today: date, days: int = CALENDAR_DAYS) -> dict[str, int]:
    """Reviews per study day, the ``days`` days up to ``today`` (ISO dates, oldest first)."""
    counts = {(today - timedelta(days=n)).isoformat(): 0 for n in range(days - 1, -1, -1)}
    for answer in answers:
        key = study_day(_moment(answer["at"])).isoformat()
        if key in counts:
            counts[key] += 1
    return counts


def retention(answers: list[dict], topics) -> dict[str, float | None]:
    """Per topic: the share of due reviews answered right (None: no due review yet)."""
    due = {topic: [0, 0] for topic in topics}
    for answer in answers:
        if answer.get("was_due") and answer["topic"] in due:
            due[answer["topic"]][0] += 1
            due[answer["topic"]][1] += bool(answer["correct"])
    return {topic: (round(right / n, 4) if n else None) for topic, (n, right) in due.items()}


@dataclass(frozen=True)
class Leech:
    id: str
    topic: str
    missed: int      # times answered wrong (a card: rated Again)
    answers: int     # times answered in all


def leeches(answers: list[dict], bank: Bank, threshold: int = LEECH_MISSES) -> list[Leech]:
    """Questions of the bank missed ``threshold`` times or more, most missed first."""
    known = bank.by_id()
    missed: dict[str, int] = {}
    total: dict[str, int] = {}
    for answer in answers:
        qid = answer["question"]
        total[qid] = total.get(qid, 0) + 1
        if not answer["correct"]:
            missed[qid] = missed.get(qid, 0) + 1
    found = [Leech(qid, known[qid].topic, n, total[qid]) for qid, n in missed.items()
             if n >= threshold and qid in known]
    return sorted(found, key=lambda leech: (-leech.missed, leech.id))


@dataclass(frozen=True)
class Stats:
    exercises: list[ExerciseRow]
    topics: dict[str, TopicMastery]
    retention: dict[str, float | None] = field(default_factory=dict)   # topic -> share of due reviews right
    calendar: dict[str, int] = field(default_factory=dict)            # ISO study day -> reviews, 84 days
    leeches: list[Leech] = field(default_factory=list)
    overall_retention: float | None = None

    def to_dict(self) -> dict:
        """The ``stats --json`` object of the CLI contract, with the calendar, retention (per
        topic and overall) and leeches added under new keys."""
        return {
            "exercises": {row.exercise.id: {"status": row.status} for row in self.exercises},
            "quiz": {
                "topics": {topic: {**asdict(m), "retention": self.retention.get(topic)}
                           for topic, m in self.topics.items()},
                "retention": self.overall_retention,
                "calendar": self.calendar,
                "leeches": [leech.id for leech in self.leeches],
            },
        }


def stats(store: Store, bank: Bank | None = None, now: datetime | None = None) -> Stats:
    bank = bank or load_bank()
    answers = store.answers()
    known = bank.by_id()
    in_bank = [a for a in answers if a["question"] in known]
    due_reviews = [a for a in in_bank if a.get("was_due")]
    overall = round(sum(bool(a["correct"]) for a in due_reviews) / len(due_reviews), 4) if due_reviews else None
    today = study_day(now or datetime.now(timezone.utc))
    return Stats(exercise_rows(store), mastery(store, bank), retention(in_bank, bank.topics),
                 calendar(answers, today), leeches(in_bank, bank), overall)
