"""The catalog loads, names resolve, and starters mirror their references."""

import pytest

from attn_drill.catalog import find_exercise, load_catalog
from attn_drill.content import CATALOG_FILE
from attn_drill.errors import ContentError, UnknownExercise
from attn_drill.validation import _file_problems


def test_catalog_loads_in_order():
    exercises = load_catalog()
    assert [ex.number for ex in exercises] == sorted(ex.number for ex in exercises)
    assert exercises[0].id == "ex1" and exercises[1].id == "ex2"


@pytest.mark.parametrize("key", ["ex1", "ex01", "EX1", "1", "ex01_self_attention", "self_attention", "self-attention"])
def test_names_resolve(key):
    assert find_exercise(key).id == "ex1"


def test_unknown_name_lists_the_choices():
    with pytest.raises(UnknownExercise, match="Try one of: ex1, ex2"):
        find_exercise("ex0")


@pytest.mark.parametrize("exercise", load_catalog(), ids=lambda ex: ex.id)
def test_files_exist_and_starter_mirrors_reference(exercise):
    assert _file_problems(exercise) == []
    assert len(exercise.hints) >= 3


def test_schema_names_the_bad_field(tmp_path):
    bad = tmp_path / "catalog.toml"
    bad.write_text('format_version = 1\n[[exercises]]\nid = "ex1"\nname = "x"\n')
    with pytest.raises(ContentError, match="missing fields"):
        load_catalog(bad)
    worse = tmp_path / "worse.toml"   # catalogs are cached by path: a new file for a new text
    worse.write_text(CATALOG_FILE.read_text().replace('difficulty = 1', 'difficulty = 7', 1))
    with pytest.raises(ContentError, match="difficulty"):
        load_catalog(worse)
