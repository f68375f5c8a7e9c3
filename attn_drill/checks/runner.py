"""The grading child process: runs one exercise's hidden checks with pytest.

Started by :func:`attn_drill.grading.grade` as ``python -m attn_drill.checks.runner``. It
reads its settings (and a one-time signing key) from stdin, then reports over a private
pipe: the checks collected, a marker as each starts, each outcome, and "done". Every record
is signed, so text the learner's code prints or writes cannot pass for a result.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from attn_drill.channel import Channel


class Collector:
    """A pytest plugin that sends each check's outcome (never scraping terminal text)."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.failure: dict[str, tuple[str, str | None]] = {}
        self.called: set[str] = set()

    def pytest_collectreport(self, report):
        if report.failed:
            self.channel.send("internal", message=str(report.longrepr)[-3000:])

    def pytest_collection_finish(self, session):
        checks = [{"id": item.nodeid, "name": _title(item)} for item in session.items]
        self.channel.send("collected", checks=checks)

    def pytest_runtest_logstart(self, nodeid, location):
        self.channel.send("start", check=nodeid)

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
        message, mistake = self.failure.get(nodeid, ("", None))
        passed = nodeid in self.called and nodeid not in self.failure
        if not passed and not message:
            message = "the check did not complete."
        self.channel.send("result", check=nodeid, passed=passed, message=message, mistake=mistake)


def _title(item) -> str:
    function = getattr(item, "function", None)
    return getattr(function, "__check_title__", item.name)


def _explain(exc: BaseException) -> tuple[str, str | None]:
    from attn_drill.checks.harness import CheckFailure

    if isinstance(exc, CheckFailure):
        return exc.message, exc.mistake
    if isinstance(exc, pytest.skip.Exception):
        return f"not run: {exc.msg}", None
    return f"the check could not use your result: {type(exc).__name__}: {exc}", None


def _limit_core_dumps() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on every platform
        pass


def main() -> None:
    settings = json.loads(sys.stdin.readline())
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # learner code reading input gets end of file
    channel = Channel(settings["fd"], bytes.fromhex(settings["key"]))
    _limit_core_dumps()

    import torch

    from attn_drill.checks import harness

    wanted = settings["device"]
    if wanted == "cuda" and not torch.cuda.is_available():
        channel.send("error", kind="no_cuda")
        os._exit(3)
    device = torch.device("cuda" if wanted in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # the checks' tensors are tiny: more threads only contend for the cores
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 tolerances assume full precision
    torch.backends.cudnn.allow_tf32 = False

    harness.CONFIG = harness.Config(
        exercise=settings["exercise"],
        learner_file=Path(settings["learner_file"]).resolve(),
        reference_file=Path(settings["reference_file"]),
        defines=tuple(settings["defines"]),
        forbidden=tuple(settings["forbidden"]),
        device=device,
        on_import=lambda stage: channel.send("import", stage=stage),
    )
    channel.send("ready", device=device.type)

    workdir = Path.cwd()  # a private temporary folder the parent made and removes
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n")
    code = pytest.main(
        [
            settings["checks_file"], "-c", str(ini), "--rootdir", str(workdir),
            "-o", "python_files=ex*.py", "-o", "python_functions=check_*",
            "--import-mode=importlib", "-p", "no:cacheprovider", "-p", "no:faulthandler",
            "-p", "no:terminal", "-s", "-W", "ignore",
        ],
        plugins=[Collector(channel), harness],
    )
    channel.send("done", exit=int(code))
    sys.stdout.flush()
    os._exit(int(code))  # skip atexit handlers the learner's code may have registered


if __name__ == "__main__":
    main()
