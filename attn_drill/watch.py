"""`attn-drill watch`: follow the current exercise, grade it again on every save, and move on
when it passes (rustlings' watch mode). No terminal code lives here.

A :class:`Watcher` knows the current exercise (the first not passed in the workspace, or the
one named), grades through ONE warm :class:`~attn_drill.grading.Engine` kept for the whole
session (torch is imported once; each grading still gets fresh, sandboxed processes), records
every verdict with :func:`practice.record`, and yields :class:`WatchEvent`\\ s for a front end
to draw. Its input is a queue (injectable, so tests need no file-system events): paths that
changed, the commands :data:`HINT`, :data:`RECHECK` and :data:`QUIT`, and ``None`` for the end
of input. :meth:`Watcher.follow_files` feeds it from ``watchfiles``; a front end feeds it keys.

Saves are debounced (editors write a file twice, or truncate then write): changes that come
within :data:`DEBOUNCE_S` of each other are graded once, and a save that leaves the text as it
was last graded is not graded again. Only the file that changed is graded: the current
exercise's, or an earlier exercise's (the watcher goes back to it, as rustlings does); a
later exercise's file is left alone until the learner gets there.

A learner's endless loop, exit or segfault is a failed report like any other (the engine's
limits end it); the watcher stays alive and grades the next save. A save that changes the
file while it is being graded stops that grading at once (its verdict would be stale) and
grades the new text; a stopped grading's verdict is dropped, never shown or recorded.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from attn_drill import practice
from attn_drill.catalog import Exercise, find_exercise, load_catalog
from attn_drill.errors import DeviceUnavailable, DrillError, StoreError
from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, check_options

if TYPE_CHECKING:
    from attn_drill.grading import Engine, GradeReport
    from attn_drill.store import Store
    from attn_drill.workspace import Workspace

HINT, RECHECK, QUIT = "hint", "recheck", "quit"   # commands on the input queue (None: end of input)
DEBOUNCE_S = 0.03         # changes closer together than this are one save
SETTLE_LIMIT_S = 0.5      # a file that keeps changing is graded after this long anyway
WATCH_STEP_MS = 10        # watchfiles: yield a batch once the folder was quiet this long
POLL_S = 0.2              # how often a blocked wait looks up (so Ctrl-C is seen at once)


@dataclass
class WatchEvent:
    """Something for the front end to show.

    kind: ``grading`` (a grading starts; if a newer save or quit stops it, no ``graded``
    follows), ``graded`` (``report``; after a pass, ``following``
    is where the watcher goes next, None when every exercise has passed), ``due`` (quiz
    questions made due by the mistakes just named: ``questions_due``), ``moved`` (``exercise``
    is now the current one, after ``previous``; ``message``: why, "passed" or "changed": an
    earlier exercise's file was saved), ``hint`` (``hint``), ``problem`` (the file
    cannot be graded or the progress not saved: ``message``), ``done`` (every exercise passed).
    """

    kind: str
    exercise: Exercise | None
    file: Path | None = None
    report: GradeReport | None = None
    following: Exercise | None = None
    hint: practice.Hint | None = None
    questions_due: int = 0
    previous: Exercise | None = None
    message: str = ""


class Watcher:
    """Grade the current exercise of ``workspace`` on every change, through one warm engine.

    ``key`` names the exercise to start on (default: the first not passed). The engine starts
    at once, here (its templates import torch while the caller sets up the rest); pass
    ``engine`` to share one that is already warm. Use as a context manager, or call
    :meth:`close`: it stops the file watcher and closes the engine it started.
    """

    def __init__(self, store: Store, key: str | None = None, *, workspace: Workspace | None = None,
                 device: str = "auto", timeout: float = DEFAULT_TIMEOUT_S, memory_limit: str = DEFAULT_MEMORY,
                 sandbox: str = "auto", engine: Engine | None = None, inputs: queue.Queue | None = None,
                 debounce_s: float = DEBOUNCE_S, lang: str = "en"):
        from attn_drill.workspace import require_workspace

        check_options(device, timeout, memory_limit, sandbox)
        self.store = store
        self.workspace = workspace or require_workspace("watch an exercise")
        self.progress_key = practice.workspace_key(self.workspace.root)   # as practice.record keys it
        self.exercises = load_catalog()
        self.current: Exercise | None = find_exercise(key) if key else practice.next_exercise(store,
                                                                                            self.progress_key)
        self.options = {"device": device, "timeout": timeout, "memory_limit": memory_limit, "lang": lang}
        self.sandbox = sandbox
        self.inputs: queue.Queue = inputs if inputs is not None else queue.Queue()
        self.debounce_s = debounce_s
        self.gradings = 0
        self._graded: dict[str, str] = {}     # exercise id -> digest of the text its last verdict is for
        self._by_name = {ex.file_name: ex for ex in self.exercises}
        self._stop = threading.Event()        # quit asked (from any thread)
        self._lock = threading.Lock()         # guards the two below, shared with the input threads
        self._running: tuple[str, str] | None = None   # (exercise id, digest) of the grading under way
        self._void = False                    # that grading's verdict is void: quit, or a newer save
        self._follower: threading.Thread | None = None
        self._own_engine = engine is None and self.current is not None
        # Started here, in the caller's thread, and graded on from that thread only: its templates
        # die with the thread that started them (PR_SET_PDEATHSIG), so never start it in a
        # short-lived helper thread.
        self.engine = engine
        if self._own_engine:
            from attn_drill.engine.sandbox import has_nvidia
            from attn_drill.grading import Engine

            if device == "cuda" and not has_nvidia():   # say so now, not after torch's import
                raise DeviceUnavailable("--device cuda: no CUDA device is available here. "
                                        "Try --device cpu or --device auto.")
            self.engine = Engine(sandbox=sandbox, device=device)

    # -- the session's life ----------------------------------------------------------------

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=2)
        if self._own_engine and self.engine is not None:
            self.engine.close()
            self.engine = None

    def file_for(self, exercise: Exercise) -> Path:
        return self.workspace.file_for(exercise)

    @property
    def folder(self) -> Path:
        """The folder whose files are watched: the workspace's ``exercises/``."""
        return self.workspace.root / "exercises"

    def send(self, item) -> None:
        """Put a changed path (or several), :data:`HINT`, :data:`RECHECK`, :data:`QUIT` or
        ``None`` (end of input) on the input queue. Safe from any thread. A save that changes
        the file being graded stops that grading (its verdict would be stale: think of a
        learner who fixes an endless loop), and the new text is graded at once."""
        self.inputs.put(item)
        if _is_change(item):
            self._supersede(_paths(item))

    def quit(self) -> None:
        """End the session from any thread (the `q` key): a grading under way is stopped, not
        recorded, and :meth:`events` returns."""
        self._stop.set()
        self.inputs.put(QUIT)
        self._void_grading()

    def _supersede(self, paths: Iterable[Path]) -> None:
        running = self._running
        if running is None:
            return
        for path in paths:
            exercise = self._exercise_of(path)
            if exercise is None or exercise.id != running[0]:
                continue
            try:
                digest = _digest(path)
            except OSError:
                continue
            if digest != running[1]:
                self._void_grading(running)
                return

    def _void_grading(self, running: tuple[str, str] | None = None) -> None:
        """Stop the grading under way (``running``: only if it is still that one); its verdict,
        whatever it is, is dropped, so stopping it early can never show a wrong one."""
        with self._lock:
            if self._running is None or (running is not None and self._running != running):
                return
            self._void = True
            if self.engine is not None:
                self.engine.kill_grading()

    def follow_files(self, *, force_polling: bool | None = None) -> None:
        """Feed the input queue from ``watchfiles``: the paths of exercise files that change in
        the workspace's ``exercises/`` folder. Returns once the watch is set up, so no save
        made after it is missed; stops on :meth:`close`."""
        import watchfiles

        names = set(self._by_name)
        armed = threading.Event()

        def keep(change, path: str) -> bool:
            return Path(path).name in names

        def follow() -> None:
            try:
                changes = watchfiles.watch(self.folder, watch_filter=keep, debounce=200, step=WATCH_STEP_MS,
                                           stop_event=self._stop, rust_timeout=100, yield_on_timeout=True,
                                           recursive=False, raise_interrupt=False, force_polling=force_polling)
                for batch in changes:   # the first step (on timeout, or a change) means it is armed
                    armed.set()
                    paths = {Path(path) for _, path in batch}
                    if paths:
                        self.send(paths)
            except Exception as error:  # the folder vanished, too many watches: say so, keep the session
                self.inputs.put(_Problem(f"无法再跟踪文件的改动（{error}）；请使用 `attn-drill watch --manual`，"
                                         "按 Enter 进行检查。" if self._zh else
                                         f"file changes can no longer be followed ({error}); "
                                         "use `attn-drill watch --manual` and press Enter to check."))
            finally:
                armed.set()

        self._follower = threading.Thread(target=follow, name="attn-drill-watch-files", daemon=True)
        self._follower.start()
        armed.wait(timeout=5)

    # -- the loop --------------------------------------------------------------------------

    def events(self) -> Iterator[WatchEvent]:
        """Grade the current exercise now, then once per save (or :data:`RECHECK`), until
        :data:`QUIT`, the end of input, or every exercise passed."""
        if self.current is None:
            yield WatchEvent("done", None)
            return
        yield from self._check(force=True)
        while not self._stop.is_set() and self.current is not None:
            changed: set[Path] = set()
            recheck = False
            for item in [*self._settle(self._next_item()), _FLUSH]:
                # In order: changes and re-checks in a row are one grading, done before the
                # command that follows them (a piped "Enter, q" checks, then quits).
                if _is_change(item):
                    changed.update(_paths(item))
                    continue
                if item == RECHECK:
                    recheck = True
                    continue
                if changed or recheck:
                    yield from self._on_change(changed, recheck)
                    changed, recheck = set(), False
                if item is _FLUSH or self._stop.is_set() or self.current is None:
                    break
                if item is None or item == QUIT:
                    return
                if item == HINT:
                    yield self._hint()
                elif isinstance(item, _Problem):
                    yield WatchEvent("problem", self.current, message=item.message)

    def _on_change(self, changed: set[Path], recheck: bool) -> Iterator[WatchEvent]:
        earlier = self._earlier_changed(changed)
        if earlier is not None:
            previous, self.current = self.current, earlier
            yield WatchEvent("moved", earlier, self.file_for(earlier), previous=previous, message="changed")
        if recheck or earlier is not None or self._is_current(changed):
            yield from self._check(force=recheck or earlier is not None)

    def _next_item(self):
        while True:
            try:
                return self.inputs.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return QUIT

    def _settle(self, first) -> list:
        """``first`` and whatever arrives with it: after a change, until the folder has been
        quiet for the debounce time (an editor's second write is the same save)."""
        items = [first]
        started = deadline = time.monotonic()
        if _is_change(first):
            deadline = started + self.debounce_s
        while first not in (None, QUIT):
            wait = min(deadline, started + SETTLE_LIMIT_S) - time.monotonic()
            try:
                item = self.inputs.get(timeout=wait) if wait > 0 else self.inputs.get_nowait()
            except queue.Empty:
                break
            items.append(item)
            if item is None or item == QUIT:
                break
            if _is_change(item):
                deadline = time.monotonic() + self.debounce_s
        return items

    def _is_current(self, changed: set[Path]) -> bool:
        return self.current is not None and any(self._exercise_of(path) == self.current for path in changed)

    def _earlier_changed(self, changed: set[Path]) -> Exercise | None:
        """The first exercise before the current one whose file changed (rustlings goes back to
        an earlier exercise on a save, never skips ahead)."""
        earlier = [ex for ex in map(self._exercise_of, changed)
                   if ex is not None and self.current is not None and ex.number < self.current.number]
        return min(earlier, key=lambda ex: ex.number) if earlier else None

    def _exercise_of(self, path: Path) -> Exercise | None:
        exercise = self._by_name.get(Path(path).name)
        if exercise is None:
            return None
        try:
            same_folder = Path(path).parent.resolve() == self.folder.resolve()
        except OSError:
            return None
        return exercise if same_folder else None

    # -- one grading ------------------------------------------------------------------------

    def _check(self, *, force: bool) -> Iterator[WatchEvent]:
        """Grade the current exercise; after a pass, move on and grade the next one."""
        while self.current is not None and not self._stop.is_set():
            exercise, path = self.current, self.file_for(self.current)
            try:
                digest = _digest(path)
            except OSError:
                yield WatchEvent("problem", exercise, path, message=f"{path} 不见了。请再保存一次，或运行 "
                                 f"`attn-drill reset {exercise.id}` 恢复初始代码。" if self._zh else
                                 f"{path} is missing. Save it again, or run "
                                 f"`attn-drill reset {exercise.id}` to put the starter back.")
                return
            if not force and self._graded.get(exercise.id) == digest:
                return   # the text on screen was graded already: an editor's second write
            yield WatchEvent("grading", exercise, path)
            report = self._grade(exercise, path, digest)
            if isinstance(report, str):
                yield WatchEvent("problem", exercise, path, message=report)
                return
            if report is None:   # quit, or a newer save, during the grading: it says nothing
                self._graded.pop(exercise.id, None)   # so the next save is graded, whatever its text
                return
            self._graded[exercise.id] = digest
            following = self._following(exercise) if report.passed else None
            yield WatchEvent("graded", exercise, path, report=report, following=following)
            # The verdict is shown before progress is saved: a store problem cannot hide it.
            try:
                due = practice.record(self.store, report)
            except (StoreError, OSError, sqlite3.Error) as error:
                yield WatchEvent("problem", exercise, path, message=(f"进度没有保存：{_text(error, 'zh')}" if self._zh else
                                                                   f"progress not saved: {error}"))
                due = 0
            if due:
                yield WatchEvent("due", exercise, path, questions_due=due)
            if not report.passed:
                return
            if following is None:
                self.current = None
                yield WatchEvent("done", exercise, path)
                return
            self.current = following
            yield WatchEvent("moved", following, self.file_for(following), previous=exercise, message="passed")
            force = True   # a new exercise: show where it stands at once

    def _grade(self, exercise: Exercise, path: Path, digest: str) -> GradeReport | str | None:
        """A report, a problem's text (the file cannot be graded), or None (its verdict is void:
        quit, or a newer save, meanwhile)."""
        with self._lock:
            self._running, self._void = (exercise.id, digest), False
        try:
            report = self.engine.grade(exercise, path, **self.options)
        except DeviceUnavailable:
            raise
        except DrillError as error:
            return error.text(self.options["lang"])
        except Exception as error:   # the engine itself failed: start afresh for the next save
            self._restart_engine()
            if self._zh:
                return (f"评分程序出错了（{type(error).__name__}：{error}）；已重新启动。"
                        "请再保存一次以检查；如果问题持续出现，请报告它。")
            return (f"the grader failed ({type(error).__name__}: {error}); it was restarted. "
                    "Save again to check, and report it if it persists.")
        finally:
            with self._lock:
                self._running, void = None, self._void
        if void or self._stop.is_set():
            return None
        self.gradings += 1
        return report

    def _restart_engine(self) -> None:
        from attn_drill.grading import Engine

        try:
            self.engine.close()
        except Exception:
            pass
        self.engine = Engine(sandbox=self.sandbox, device=self.options["device"])
        self._own_engine = True

    def _following(self, done: Exercise) -> Exercise | None:
        """The exercise to move on to after ``done`` passed: the next one not passed, after it
        in the catalog's order, then from the start; None when all the others have passed."""
        progress = self.store.progress(self.progress_key)
        order = list(self.exercises)
        at = order.index(done)
        for exercise in order[at + 1:] + order[:at]:
            if exercise.id not in progress or progress[exercise.id].status != "passed":
                return exercise
        return None

    @property
    def _zh(self) -> bool:
        return self.options.get("lang") == "zh"

    def _hint(self) -> WatchEvent:
        try:
            shown = practice.hint(self.store, self.current.id)
        except (StoreError, OSError, sqlite3.Error) as error:
            return WatchEvent("problem", self.current, message=(f"没有提示：{_text(error, 'zh')}" if self._zh
                                                                    else f"no hint: {error}"))
        return WatchEvent("hint", self.current, self.file_for(self.current), hint=shown)


@dataclass(frozen=True)
class _Problem:
    """A problem from a helper thread (the file watcher), shown as a ``problem`` event."""

    message: str


_FLUSH = object()   # the end of one batch of inputs


def _is_change(item) -> bool:
    """A path, or several, as opposed to a command or the end of input."""
    if item is None or item is _FLUSH or isinstance(item, _Problem):
        return False
    return item not in (HINT, RECHECK, QUIT) if isinstance(item, str) else True


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _paths(item) -> Iterable[Path]:
    if isinstance(item, (str, Path)):
        return [Path(item)]
    return [Path(path) for path in item]


def _text(error: BaseException, lang: str) -> str:
    """An error's message in ``lang`` (a DrillError's Chinese where it has one)."""
    return error.text(lang) if isinstance(error, DrillError) else str(error)
