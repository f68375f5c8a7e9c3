"""The progress store: survives damage, keeps what was written, serves two processes."""

import sqlite3
import subprocess
import sys

from attn_drill.store import DB_NAME, open_store


def test_progress_round_trip(drill_home):
    store = open_store()
    store.record_check("ex1", False, ["no-scale"])
    store.record_check("ex1", True, [])
    store.record_check("ex2", False, [])
    progress = store.progress()
    assert progress["ex1"].status == "passed" and progress["ex1"].ever_passed and progress["ex1"].attempts == 2
    assert progress["ex2"].status == "failed" and not progress["ex2"].ever_passed
    assert store.exercise_progress("ex3").status == "pending"


def test_damaged_file_is_set_aside_and_reported(drill_home, cli):
    drill_home.mkdir(parents=True)
    (drill_home / DB_NAME).write_bytes(b"this is not a database" * 100)
    result = cli("list")
    assert result.code == 0
    assert "damaged" in result.stderr and "kept as" in result.stderr
    aside = list(drill_home.glob(f"{DB_NAME}.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    sqlite3.connect(drill_home / DB_NAME).execute("SELECT * FROM workspace_progress")


def test_two_processes_at_once_lose_nothing(drill_home):
    script = ("import sys\nfrom attn_drill.store import open_store\ns = open_store()\n"
              "for i in range(50):\n    s.record_check(f'ex{sys.argv[1]}', i % 2 == 0, [])\n")
    children = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in (1, 2)]
    assert all(child.wait(timeout=60) == 0 for child in children)
    progress = open_store().progress()
    assert progress["ex1"].attempts == 50 and progress["ex2"].attempts == 50


def test_hints_count_up_to_the_last(drill_home):
    store = open_store()
    assert [store.take_hint("ex1", 3) for _ in range(5)] == [1, 2, 3, 3, 3]
