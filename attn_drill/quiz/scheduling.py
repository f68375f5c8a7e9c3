"""Spaced repetition with FSRS (the `fsrs` package, the scheduler Anki uses).

Every answer is a review: a right answer is Good, a wrong one Again, a card its self-rating.
A question's FSRS card lives in the store as JSON (``Card.to_dict``), with its due time
beside it for fast queries. These functions are the callbacks the store runs inside its
transaction, so reading the old card and writing the new one is atomic.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from fsrs import Card, Rating, Scheduler

AGAIN, HARD, GOOD, EASY = (int(r) for r in (Rating.Again, Rating.Hard, Rating.Good, Rating.Easy))
RATINGS = (AGAIN, HARD, GOOD, EASY)


LEARNING_STEPS = (timedelta(minutes=1),)


@lru_cache(maxsize=1)
def scheduler() -> Scheduler:
    """FSRS with its published parameters and 90% desired retention, and one short learning
    step: a quiz question answered right the first time goes straight to an interval of days
    (a learner who can answer it needs no drill in minutes), one answered wrong (or forgotten
    later) comes back after a minute, that is at once in `quiz --review`, until it is right."""
    return Scheduler(learning_steps=LEARNING_STEPS, relearning_steps=LEARNING_STEPS)


def rating_for(correct: bool) -> int:
    return GOOD if correct else AGAIN


def is_pass(rating: int) -> bool:
    """FSRS counts Hard, Good and Easy as recalled; only Again is a lapse."""
    return rating != AGAIN


def _utc(at: datetime | None) -> datetime:
    at = at or datetime.now(timezone.utc)
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _card(card_json: str | None, question_id: str, at: datetime) -> Card:
    if card_json:
        return Card.from_dict(json.loads(card_json))
    # a stable id per question (Card() would otherwise sleep 1 ms to make a unique one)
    return Card(card_id=zlib.crc32(question_id.encode()), due=at)


def review(card_json: str | None, question_id: str, rating: int, at: datetime | None = None) -> tuple[str, float]:
    """One review of a question: its card (None for a first answer) -> the new card and its due time."""
    at = _utc(at)
    card, _log = scheduler().review_card(_card(card_json, question_id, at), Rating(rating), review_datetime=at)
    return json.dumps(card.to_dict()), card.due.timestamp()


def bring_due(card_json: str | None, question_id: str, at: datetime | None = None) -> tuple[str, float]:
    """Make a question due at ``at`` (now) without counting a review: its memory state is kept."""
    at = _utc(at)
    card = _card(card_json, question_id, at)
    if card.due > at:
        card.due = at
    return json.dumps(card.to_dict()), card.due.timestamp()


def due_of(card_json: str) -> datetime:
    return Card.from_dict(json.loads(card_json)).due
