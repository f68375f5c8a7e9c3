"""The judge: runs one exercise's hidden checks under pytest against a remote learner.

Started by the supervisor as ``python -m attn_drill.engine.judge``, with its settings on
stdin. It holds the checks and the reference, makes every input, does every comparison and
decides every verdict; the learner's code runs only in the worker, reached through the
``learner`` fixture (:mod:`attn_drill.engine.remote`). It never imports, unpickles or
executes anything of the learner's: it reads the learner's file as text for the static scan,
and receives plain data from the worker.

It reports to the supervisor over a pipe only the two of them hold: the checks collected, a
marker as each starts, each outcome, and "done" (one JSON object a line).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import pytest


class Reporter:
    def __init__(self, fd: int):
        self.fd = fd

    def send(self, record_type: str, /, **fields) -> None:
        from attn_drill.engine.wire import write_all

        write_all(self.fd, (json.dumps({"type": record_type, **fields}) + "\n").encode())


class Collector:
    """A pytest plugin that sends each check's outcome (never scraping terminal text)."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.failure: dict[str, dict] = {}
        self.called: set[str] = set()

    def pytest_collectreport(self, report):
        if report.failed:
            self.reporter.send("internal", message=str(report.longrepr)[-3000:])

    def pytest_collection_modifyitems(self, items):
        for item in items:  # the failure's message is ours: skip pytest's costly traceback rendering
            item.repr_failure = item._repr_failure_py = lambda excinfo, style=None: str(excinfo.value)  # call; setup

    def pytest_collection_finish(self, session):
        checks = [{"id": item.nodeid, "name": _title(item)} for item in session.items]
        self.reporter.send("collected", checks=checks)

    def pytest_runtest_logstart(self, nodeid, location):
        self.reporter.send("start", check=nodeid)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" and report.passed:
            self.called.add(item.nodeid)
        if (report.failed or report.skipped) and item.nodeid not in self.failure and call.excinfo:
            self.failure[item.nodeid] = _explain(call.excinfo.value)

    def pytest_runtest_logreport(self, report):
        if report.when != "teardown":
            return
        nodeid = report.nodeid
        failure = self.failure.get(nodeid, {"message": ""})
        passed = nodeid in self.called and nodeid not in self.failure
        if not passed and not failure["message"]:
            from attn_drill.checks.harness import _t

            failure = {**failure, "message": _t("the check did not complete.", "这项检查没有完成。")}
        self.reporter.send("result", check=nodeid, passed=passed, **failure)


def _title(item) -> str:
    from attn_drill.checks.harness import config

    function = getattr(item, "function", None)
    title = getattr(function, "__check_title__", item.name)
    if config().lang == "zh":
        return (getattr(function, "__check_title_zh__", None) or title).replace("{defines}", "、".join(config().defines))
    return title.replace("{defines}", " and ".join(config().defines))


def _explain(exc: BaseException) -> dict:
    from attn_drill.checks.harness import CheckFailure, _t
    from attn_drill.engine.remote import WorkerLost

    if isinstance(exc, CheckFailure):
        record = {"message": exc.message, "mistake": exc.mistake}
        if isinstance(exc.__cause__, WorkerLost):
            record["lost"] = exc.while_doing
        return record
    if isinstance(exc, pytest.skip.Exception):
        return {"message": _t(f"not run: {exc.msg}", f"未运行：{exc.msg}")}
    return {"message": _t(f"the check could not use your result: {type(exc).__name__}: {exc}",
                          f"这项检查无法使用你的结果：{type(exc).__name__}: {exc}")}


def main() -> None:
    """``python -m attn_drill.engine.judge CONTROL_FD``: the template. It imports torch, pytest
    and the harness once, then forks a fresh child for each grading the supervisor asks for:
    every grading runs pytest once, in a process of its own."""
    import socket

    gc.disable()  # importing torch makes 300,000 objects: collecting as it goes costs 0.2 s of CPU
    control = socket.socket(fileno=int(sys.argv[1]))
    sys.stdin = open(os.devnull)
    import torch  # noqa: F401  (imported once, for every grading)

    from attn_drill.checks import harness, properties  # noqa: F401

    _warm_up(torch)
    global PYTEST_SESSION
    PYTEST_SESSION = _start_pytest_session()
    gc.freeze()  # a grading's collections skip the template's objects: no copy-on-write of their pages
    gc.enable()  # in every grading, as usual
    control.send(b'{"ready": true}')
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 4)
        except OSError:
            os._exit(0)
        _reap_spawned()
        if message == SPAWN and len(fds) == 1:
            control = _spawn(control, fds[0])
            continue
        if not message or len(fds) != 4:
            os._exit(0)
        settings = json.loads(message)
        _collect_built_in(settings["checks_file"])  # once per exercise, for every grading of it
        child = os.fork()
        if child == 0:
            control.close()
            _grade(settings, *fds)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(child, 0)
        control.send(json.dumps({"done": status}).encode())


SPAWN = b'{"spawn": true}'


def _spawn(control, fd: int):
    """Fork another template for a Pool's next engine, warm as this one is (torch, the checks,
    pytest's session) at a fraction of a start's cost; it answers on its own control socket
    ``fd``. Returns the control socket this process goes on with. The new template has a
    session of its own and ends when its supervisor does (its control socket closes): neither
    this template's end nor its restart reaches it."""
    import socket

    if os.fork():
        os.close(fd)
        return control
    control.close()
    os.setsid()
    control = socket.socket(fileno=fd)
    control.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    return control


def _reap_spawned() -> None:
    """Collect templates this one spawned that have ended (between gradings, its only children)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _warm_up(torch) -> None:
    """Pay torch's lazy first-use imports once, in the template (autograd's first backward pass
    alone takes seconds), not in every grading; the mistakes table, the built-in checks and the
    modules every grading uses (the static scan, the sandbox's and the processes' helpers) are
    read once too (a pack's checks are imported by each grading)."""
    import importlib

    from safetensors.torch import load, save

    from attn_drill.checks import harness
    from attn_drill.engine import processes, sandbox, scan  # noqa: F401

    harness.mistake_table()
    for path in sorted(Path(harness.__file__).parent.glob("ex*.py")):   # pytest finds them in sys.modules
        try:
            importlib.import_module(f"attn_drill.checks.{path.stem}")
        except Exception:  # pragma: no cover - the grading's own import will say what is wrong
            pass

    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.softmax(x @ x.transpose(-2, -1), dim=-1)
    torch.autograd.grad(y, [x], torch.ones_like(y))
    load(save({"t": y.detach()}))


# pytest is set up once, in the template: its options parsed, its plugins configured, a session
# started, and a built-in exercise's checks collected at its first grading (together about 40%
# of the judge's time in a grading, when done in each). Every grading's forked copy sets
# --maxfail and runs its exercise's checks.
PYTEST_OPTIONS = [
    "-o", "python_files=ex*.py", "-o", "python_functions=check_*", "--import-mode=importlib",
    "-p", "no:cacheprovider", "-p", "no:faulthandler", "-p", "no:terminal", "-p", "no:warnings", "-p", "no:logging",
    "-p", "no:unraisableexception", "-p", "no:threadexception", "-p", "no:debugging", "-p", "no:unittest",
    "-p", "no:legacypath", "-p", "no:pastebin", "-p", "no:junitxml", "-p", "no:doctest", "-p", "no:setuponly",
    "-p", "no:setupplan", "-p", "no:stepwise", "-p", "no:recwarn", "-p", "no:subtests", "-s",
]
PYTEST_SESSION = None
BUILT_IN_CHECKS: dict[Path, list] = {}   # a built-in checks file -> its checks, collected in the template


def _start_pytest_session():
    """pytest.main's set-up, up to the collection: options parsed (an empty ini in a folder of
    the judge's own: its working folder is private to it), the harness's fixtures registered,
    plugins configured, the session started."""
    from _pytest.config import _prepareconfig
    from _pytest.main import Session

    from attn_drill.checks import harness

    root = Path("pytest-root").resolve()
    root.mkdir(exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    config = _prepareconfig([str(Path(harness.__file__).parent), "-c", str(root / "pytest.ini"), "--rootdir",
                             str(root), *PYTEST_OPTIONS], [harness])
    session = Session.from_config(config)
    config._do_configure()
    config.hook.pytest_sessionstart(session=session)
    return session


def _collect_built_in(checks_file: str) -> None:
    """Collect a built-in checks file in the template, once: the checks are attn-drill's own (a
    pack's are collected by each grading, and so is a file that fails to collect)."""
    from attn_drill.checks import harness

    path = Path(checks_file).resolve()
    if path in BUILT_IN_CHECKS or path.parent != Path(harness.__file__).parent:
        return
    session = PYTEST_SESSION
    session.config.args = [str(path)]
    try:
        items = list(session.perform_collect())
        if not session.testsfailed and items:
            BUILT_IN_CHECKS[path] = items
    except Exception:  # pragma: no cover - the grading's own collection will report it
        pass
    finally:
        session.items, session.testscollected, session.testsfailed = [], 0, 0


def _run_session(session, checks_file: str, first_failure: bool, collector: Collector) -> int:
    """The rest of pytest.main (its wrap_session) on the session the template started: collect
    ``checks_file`` (or take its checks the template collected), run them, finish. Returns
    pytest's exit code."""
    config = session.config
    config.option.maxfail = 1 if first_failure else 0
    config.pluginmanager.register(collector)
    collected = BUILT_IN_CHECKS.get(Path(checks_file).resolve())
    code = pytest.ExitCode.OK
    try:
        if collected is None:
            config.args = [checks_file]
            config.hook.pytest_collection(session=session)
        else:  # what the end of session.perform_collect() does, for the checks the template found
            session.items = list(collected)
            config.hook.pytest_collection_modifyitems(session=session, config=config, items=session.items)
            config.hook.pytest_collection_finish(session=session)
            session.testscollected = len(session.items)
        config.hook.pytest_runtestloop(session=session)
        if session.testsfailed:
            code = pytest.ExitCode.TESTS_FAILED
        elif session.testscollected == 0:
            code = pytest.ExitCode.NO_TESTS_COLLECTED
    except session.Failed:        # --maxfail reached
        code = pytest.ExitCode.TESTS_FAILED
    except session.Interrupted:   # errors while collecting
        code = pytest.ExitCode.INTERRUPTED
    finally:
        config.hook.pytest_sessionfinish(session=session, exitstatus=code)
        config._ensure_unconfigure()
    return int(code)


def _grade(settings: dict, results_fd: int, requests_fd: int, replies_fd: int, output_fd: int) -> None:
    """One grading, in a forked child of the template."""
    from attn_drill.engine.sandbox import die_with_parent

    die_with_parent()
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    reporter = Reporter(results_fd)
    code = 3
    try:
        task = _run_bench if settings.get("bench") else _run_checks
        code = task(settings, reporter, requests_fd, replies_fd)
    finally:
        sys.stdout.flush()
        os._exit(code)


def _run_checks(settings: dict, reporter: Reporter, requests_fd: int, replies_fd: int) -> int:
    import torch

    from attn_drill.checks import harness
    from attn_drill.engine.remote import Remote

    wanted = settings["device"]
    if wanted == "cuda" and not torch.cuda.is_available():
        reporter.send("error", kind="no_cuda")
        return 3
    device = torch.device("cuda" if wanted in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # the checks' tensors are tiny: more threads only contend for the cores
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 tolerances assume full precision
    torch.backends.cudnn.allow_tf32 = False

    learner_file = Path(settings["learner_file"])
    worker_settings = {**settings["worker"], "device": device.type, "learner_name": settings["learner_name"],
                       "source": learner_file.read_text(encoding="utf-8")}
    harness.CONFIG = harness.Config(
        exercise=settings["exercise"],
        learner_file=learner_file,
        learner_name=settings["learner_name"],
        reference_file=Path(settings["reference_file"]),
        defines=tuple(settings["defines"]),
        forbidden=tuple(settings["forbidden"]),
        worker_settings=worker_settings,
        worker_pid=settings["worker_pid"],
        device=device,
        remote=Remote(requests_fd, replies_fd, settings["budget_s"], device, tape=settings.get("tape")),
        lang="zh" if settings.get("lang") == "zh" else "en",
    )
    reporter.send("ready", device=device.type)

    code = _run_session(PYTEST_SESSION, settings["checks_file"], bool(settings.get("first_failure")),
                        Collector(reporter))
    reporter.send("done", exit=code, differs=harness.CONFIG.remote.close_tape())
    return code


def _run_bench(settings: dict, reporter: Reporter, requests_fd: int, replies_fd: int) -> int:
    """`attn-drill bench` in place of the checks: the learner's code is timed in the worker, the
    reference and the built-in here (:func:`attn_drill.bench.judge_bench`)."""
    from attn_drill.bench import judge_bench

    return judge_bench(settings, reporter, requests_fd, replies_fd)


if __name__ == "__main__":
    main()
