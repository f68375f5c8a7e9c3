"""`attn-drill stats`: quiz mastery by topic and exercise progress, as data."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from attn_drill.practice import ExerciseRow, exercise_rows
from attn_drill.quiz.engine import TopicMastery, mastery
from attn_drill.store import Store


@dataclass(frozen=True)
class Stats:
    exercises: list[ExerciseRow]
    topics: dict[str, TopicMastery]

    def to_dict(self) -> dict:
        """The ``stats --json`` object of the CLI contract."""
        return {
            "exercises": {row.exercise.id: {"status": row.status} for row in self.exercises},
            "quiz": {"topics": {topic: asdict(m) for topic, m in self.topics.items()}},
        }


def stats(store: Store) -> Stats:
    return Stats(exercise_rows(store), mastery(store))
