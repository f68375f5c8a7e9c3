"""`attn-drill watch`: the Watcher driven through its input queue (no file-system timing),
one run on real watchfiles events, and `--manual` through the command line."""

import threading
import time
from pathlib import Path

import pytest

from attn_drill.catalog import find_exercise
from attn_drill.store import open_store
from attn_drill.watch import HINT, QUIT, RECHECK, Watcher
from attn_drill.workspace import Workspace, init_workspace

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"


@pytest.fixture
def workspace(tmp_path):
    return Workspace(init_workspace(tmp_path / "drills").root)


@pytest.fixture
def watcher(workspace, engine):
    """A watcher on the session's warm engine; quits by itself if a test waits too long."""
    with Watcher(open_store(), workspace=workspace, device="cpu", timeout=1, engine=engine) as made:
        watchdog = threading.Timer(240, made.quit)
        watchdog.start()
        yield made
        watchdog.cancel()


def until(events, kind):
    """The events up to the first of ``kind`` (the watcher quitting first fails the test)."""
    seen = []
    for event in events:
        seen.append(event)
        if event.kind == kind:
            return seen
    raise AssertionError(f"the watcher ended before a {kind!r} event; saw {[e.kind for e in seen]}")


def messages(report) -> str:
    return "\n".join(check.message for check in report.checks)


def save(watcher, exercise, text) -> Path:
    path = watcher.file_for(find_exercise(exercise))
    path.write_text(text)
    watcher.send(path)
    return path


def test_every_save_is_graded_and_a_pass_moves_on(watcher, workspace):
    ex1 = find_exercise("ex1")
    starter = ex1.starter_path.read_text()
    events = watcher.events()
    first = until(events, "graded")[-1]                # the starter, graded at once
    assert watcher.current.id == "ex1" and not first.report.passed
    assert "not written yet" in messages(first.report)

    save(watcher, "ex1", starter + "\n# still the starter\n")
    again = until(events, "graded")[-1].report
    assert not again.passed and "NotImplementedError" in messages(again)

    save(watcher, "ex1", (HOSTILE / "loop_in_call.py").read_text())
    hung = until(events, "graded")[-1].report
    assert not hung.passed and "ran past the time limit of 1 s" in messages(hung)

    save(watcher, "ex1", (HOSTILE / "exit_at_import.py").read_text())
    exited = until(events, "graded")[-1].report
    assert not exited.passed and "exited the process (exit code 0)" in messages(exited)

    save(watcher, "ex1", (HOSTILE / "segfault.py").read_text())
    crashed = until(events, "graded")[-1].report
    assert not crashed.passed and "crashed with signal SIGSEGV" in messages(crashed)

    save(watcher, "ex1", ex1.solution_path.read_text())
    seen = until(events, "graded")
    passed = seen[-1]
    assert passed.report.passed and passed.exercise.id == "ex1" and passed.following.id == "ex2"
    moved = until(events, "moved")[-1]
    assert moved.exercise.id == "ex2" and moved.previous.id == "ex1" and watcher.current.id == "ex2"
    ex2_starter = until(events, "graded")[-1]           # where the new exercise stands, at once
    assert ex2_starter.exercise.id == "ex2" and not ex2_starter.report.passed

    progress = open_store().progress(str(workspace.root))
    assert progress["ex1"].status == "passed" and progress["ex1"].attempts == 6
    watcher.send(QUIT)
    assert list(events) == []


def test_saves_are_debounced_and_an_unchanged_file_is_not_graded_again(watcher):
    events = watcher.events()
    until(events, "graded")
    assert watcher.gradings == 1
    path = watcher.file_for(find_exercise("ex1"))
    path.write_text("")                                   # an editor truncates, then writes
    watcher.send(path)
    save(watcher, "ex1", path.read_text() + find_exercise("ex1").starter_path.read_text() + "\n# saved\n")
    watcher.send(path)
    assert [e.kind for e in until(events, "graded")] == ["grading", "graded"]
    assert watcher.gradings == 2
    watcher.send(path)                                    # touched, same text: nothing to grade
    watcher.send(HINT)
    hint = until(events, "hint")
    assert [e.kind for e in hint] == ["hint"] and hint[0].hint.number == 1 and watcher.gradings == 2
    watcher.send(RECHECK)                                 # Enter: always graded
    until(events, "graded")
    assert watcher.gradings == 3
    watcher.send(QUIT)
    assert list(events) == []


def test_starts_on_the_first_not_passed_goes_back_on_an_earlier_save_and_ignores_later_ones(workspace, engine):
    store = open_store()
    ex1 = find_exercise("ex1")
    store.record_check("ex1", True, [], str(workspace.root))
    with Watcher(store, workspace=workspace, device="cpu", engine=engine) as watcher:
        assert watcher.current.id == "ex2"
        events = watcher.events()
        until(events, "graded")
        later = watcher.file_for(find_exercise("ex3"))
        later.write_text(later.read_text() + "\n# ahead\n")
        save(watcher, "ex1", ex1.starter_path.read_text() + "\n# broken again\n")
        watcher.send(later)
        moved = until(events, "moved")[-1]
        assert moved.exercise.id == "ex1" and moved.message == "changed"
        graded = until(events, "graded")[-1]
        assert graded.exercise.id == "ex1" and not graded.report.passed
        watcher.send(HINT)
        assert until(events, "hint")[-1].exercise.id == "ex1"   # ex3's save graded nothing meanwhile
        watcher.send(QUIT)
        assert list(events) == []


def test_quit_stops_a_grading_under_way(watcher):
    events = watcher.events()
    until(events, "graded")
    path = watcher.file_for(find_exercise("ex1"))
    path.write_text((HOSTILE / "loop_in_call.py").read_text())
    watcher.send(path)
    until(events, "grading")
    threading.Timer(0.3, watcher.quit).start()          # `q` pressed while the loop runs
    assert [e.kind for e in events] == []               # no verdict for a grading it stopped
    assert open_store().progress(str(watcher.workspace.root))["ex1"].attempts == 1


def test_real_file_events_trigger_a_grading(watcher):
    watcher.follow_files()
    events = watcher.events()
    until(events, "graded")
    path = watcher.file_for(find_exercise("ex1"))
    path.write_text(find_exercise("ex1").solution_path.read_text())   # no send: watchfiles sees it
    graded = until(events, "graded")[-1]
    assert graded.exercise.id == "ex1" and graded.report.passed
    watcher.send(QUIT)
    assert [e.kind for e in events][:1] == ["moved"]      # on to ex2, then QUIT ends it


def test_manual_mode_reads_enter_h_and_q_from_a_pipe(cli, workspace):
    done = cli("watch", "--manual", "--device", "cpu", input="\nh\nq\n", cwd=workspace.root, timeout=600)
    assert done.code == 0, done.stderr
    assert done.stdout.count("checks passed.") == 2          # on start, then on Enter
    assert "hint 1 of" in done.stdout and "Stopped watching." in done.stdout
    assert "Traceback" not in done.stderr
    assert open_store().progress(str(workspace.root))["ex1"].attempts == 2


def test_watch_needs_a_workspace(cli):
    done = cli("watch", "--manual", input="q\n")
    assert done.code == 2 and "no attn-drill workspace" in done.stderr


def test_a_new_save_stops_a_stale_grading_and_is_graded_at_once(workspace, engine):
    with Watcher(open_store(), workspace=workspace, device="cpu", timeout=60, engine=engine) as watcher:
        watchdog = threading.Timer(240, watcher.quit)
        watchdog.start()
        events = watcher.events()
        until(events, "graded")
        save(watcher, "ex1", (HOSTILE / "loop_in_call.py").read_text())
        until(events, "grading")                           # the endless loop runs (up to 60 s)...
        fixed = find_exercise("ex1").solution_path.read_text()
        threading.Timer(0.5, save, (watcher, "ex1", fixed)).start()   # ...and the learner fixes it
        started = time.monotonic()
        seen = until(events, "graded")
        assert [e.kind for e in seen] == ["grading", "graded"]   # the loop's grading said nothing
        assert seen[-1].report.passed and time.monotonic() - started < 30
        watchdog.cancel()
        watcher.quit()
        list(events)
    attempts = open_store().progress(str(workspace.root))["ex1"].attempts
    assert attempts == 2                                   # the starter, then the fix
