#!/usr/bin/env python3
"""Gradescope's entry point: grade one submission with attn-drill, write results.json.

`attn-drill gradescope` writes this file into the bundle as ``run_autograder``, with the
exercise filled in below. Gradescope copies it to /autograder/run_autograder and runs it once
per submission. It uses the standard library only (any python3 from 3.8 on): the grading
itself is ``attn-drill check EX --file FILE --format gradescope``, installed by setup.sh.

1. It finds the file to grade in /autograder/submission: the one named like the exercise's
   file (``ex01_self_attention.py``), else the only .py file. Nothing submitted, no Python
   file, or several and none named right: a results.json with score 0 that says so.
2. It copies that file to a fresh folder and, when it runs as root and setup.sh made the
   grader's user, runs the grading as that unprivileged user: even where the container
   allows no sandbox, the learner's code cannot then write results.json or stop this script.
3. It writes /autograder/results/results.json: the judge's verdict, one test per check;
   ``extra_data`` says which file was graded and whether a sandbox was used.

Environment, for trying the bundle outside Gradescope:
  AUTOGRADER_ROOT         the folder holding submission/ and results/ (default /autograder)
  ATTN_DRILL_VENV         where setup.sh installed attn-drill (default /opt/attn-drill/venv);
                          when it holds no attn-drill, the one on PATH grades
  ATTN_DRILL_GRADER_USER  the unprivileged user that grades when this runs as root
                          (default: the one setup.sh made)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CONFIG = {}  # @config (attn-drill gradescope writes the exercise's settings here)

IGNORED_DIRS = {"__MACOSX", "__pycache__", ".git", ".ipynb_checkpoints", ".venv", "venv", "node_modules"}
SHOWN_FILES = 8            # how many of the submitted files a message lists
STDERR_SHOWN = 4000        # how much of attn-drill's stderr goes to Gradescope's stdout log


def main():
    started = time.monotonic()
    root = os.environ.get("AUTOGRADER_ROOT", "/autograder")
    results_dir = os.path.join(root, "results")
    try:
        results = grade_submission(os.path.join(root, "submission"))
    except Exception as error:  # never leave Gradescope without a results.json
        log("attn-drill autograder failed: %s: %s" % (type(error).__name__, error))
        results = zero_result("The autograder itself failed (%s). This is not a problem of your code: "
                              "please tell your instructor." % type(error).__name__)
    results["execution_time"] = round(time.monotonic() - started, 3)
    write_results(results_dir, results)
    log("attn-drill autograder: %s %s/%s, sandbox: %s" % (
        CONFIG.get("exercise"), results.get("score"), results.get("max_score", "?"),
        results.get("extra_data", {}).get("sandbox", "not run")))
    return 0


def grade_submission(submission_dir):
    found, problem = find_submission(submission_dir, CONFIG["file_name"])
    if found is None:
        return zero_result(problem)
    shown = os.path.relpath(found, submission_dir)
    command = attn_drill_command()
    if command is None:
        return zero_result("The autograder is not installed (no attn-drill command; setup.sh did not finish). "
                           "This is not a problem of your code: please tell your instructor.")
    return run_check(command, found, shown)


def find_submission(submission_dir, file_name):
    """(path, None) for the file to grade, or (None, why not) in words for the learner."""
    files = []
    if os.path.isdir(submission_dir):
        for folder, dirs, names in os.walk(submission_dir):
            dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS and not d.startswith("."))
            files.extend(os.path.join(folder, name) for name in sorted(names) if not name.startswith("."))
    files = [path for path in files if os.path.isfile(path) and not os.path.islink(path)]
    if not files:
        return None, "Nothing was submitted. Upload your solution as %s." % file_name

    def depth(path):
        return (os.path.relpath(path, submission_dir).count(os.sep), path)

    for wanted in (lambda name: name == file_name, lambda name: name.lower() == file_name.lower()):
        named = sorted((path for path in files if wanted(os.path.basename(path))), key=depth)
        if named:
            return named[0], None
    python = [path for path in files if path.lower().endswith(".py")]
    if len(python) == 1:
        return python[0], None
    listed = ", ".join(os.path.relpath(path, submission_dir) for path in (python or files)[:SHOWN_FILES])
    more = len(python or files) - SHOWN_FILES
    listed += " and %d more" % more if more > 0 else ""
    if python:
        return None, ("Your submission has several Python files (%s) and none is named %s. Name the file "
                      "to grade %s, or submit only that file." % (listed, file_name, file_name))
    return None, ("Your submission has no Python file (found: %s). Submit your solution as %s, a Python "
                  "source file." % (listed, file_name))


def attn_drill_command():
    venv = os.environ.get("ATTN_DRILL_VENV", CONFIG.get("venv", "/opt/attn-drill/venv"))
    installed = os.path.join(venv, "bin", "attn-drill")
    if os.access(installed, os.X_OK):
        return [installed]
    on_path = shutil.which("attn-drill")
    return [on_path] if on_path else None


def grader_user():
    """The unprivileged user to grade as: only when this runs as root and setup.sh made it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        return pwd.getpwnam(os.environ.get("ATTN_DRILL_GRADER_USER", CONFIG.get("grader_user", "attndrill")))
    except KeyError:
        return None


def run_check(command, found, shown):
    user = grader_user()
    scratch = tempfile.mkdtemp(prefix="attn-drill-gradescope-")
    try:
        os.chmod(scratch, 0o755)
        folder = os.path.join(scratch, "submission")
        home = os.path.join(scratch, "home")
        os.mkdir(folder, 0o755)
        os.mkdir(home, 0o700)
        copy = os.path.join(folder, os.path.basename(found))
        shutil.copyfile(found, copy)  # the learner's file; the submission folder stays as it was
        os.chmod(copy, 0o644)
        if user is not None:
            os.chown(home, user.pw_uid, user.pw_gid)
        env = dict(os.environ, ATTN_DRILL_HOME=home, NO_COLOR="1", COLUMNS="120")
        if user is not None:
            env.update(HOME=home, USER=user.pw_name, LOGNAME=user.pw_name)
        argv = command + ["check", CONFIG["exercise"], "--file", copy, "--format", "gradescope",
                          "--device", "cpu", "--timeout", str(CONFIG["timeout"]),
                          "--memory-limit", str(CONFIG["memory_limit"])]
        code, stdout, stderr = run(argv, env, scratch, user, limit=3 * float(CONFIG["timeout"]) + 300)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stderr = stderr.replace(copy, shown).replace(folder + os.sep, "")
    if stderr.strip():
        log(stderr[-STDERR_SHOWN:])
    extra = {"submission": shown, "graded_as": user.pw_name if user is not None else current_user()}
    if code in (0, 1):
        try:
            results = json.loads(stdout)
        except ValueError:
            results = None
        if isinstance(results, dict) and isinstance(results.get("tests"), list) and "score" in results:
            results["output"] = "Graded %s. %s" % (shown, results.get("output", ""))
            results["extra_data"] = dict(results.get("extra_data") or {}, **extra)
            if "sandbox" not in results["extra_data"]:  # from an attn-drill that does not say it there
                unboxed = "without a sandbox" in str(results.get("output", ""))
                results["extra_data"]["sandbox"] = "none" if unboxed else "bubblewrap"
            if results["extra_data"]["sandbox"] == "none":
                log("attn-drill autograder: graded WITHOUT a sandbox (this container allows no user namespaces); "
                    "results.json says so.")
            return results
    if code == 2:  # the submission cannot be graded: attn-drill says why in one line
        reason = [line for line in stderr.splitlines() if line.startswith("error: ")]
        why = reason[-1][len("error: "):] if reason else "it could not be read as a Python file"
        return zero_result("%s could not be graded: %s" % (shown, why), extra)
    if code is None:
        return zero_result("Grading %s took too long and was stopped." % shown, extra)
    return zero_result("The autograder failed while grading %s (attn-drill exited with code %s). This is not a "
                       "problem of your code: please tell your instructor." % (shown, code), extra)


def current_user():
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return os.environ.get("USER", "unknown")


def run(argv, env, cwd, user, limit):
    """Run ``argv`` (as ``user`` when given) in a session of its own; (exit code or None, stdout, stderr)."""
    def drop():
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env, cwd=cwd, start_new_session=True, preexec_fn=drop)
    try:
        stdout, stderr = process.communicate(timeout=limit)
        code = process.returncode
    except subprocess.TimeoutExpired:
        code = None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the grading
        except (ProcessLookupError, PermissionError):
            pass
    if code is None:
        stdout, stderr = process.communicate()
    return code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")


def zero_result(message, extra=None):
    """A results.json for a submission that could not be graded: score 0, and why."""
    return {
        "score": 0.0,
        "output": message,
        "visibility": "visible",
        "tests": [{"name": "%s can be graded" % CONFIG.get("file_name", "your file"), "score": 0.0,
                   "max_score": 0.0, "status": "failed", "output": message}],
        "extra_data": dict({"exercise": CONFIG.get("exercise")}, **(extra or {})),
    }


def write_results(results_dir, results):
    os.makedirs(results_dir, exist_ok=True)
    target = os.path.join(results_dir, "results.json")
    partial = target + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    os.replace(partial, target)


def log(text):
    """Gradescope keeps this script's output for instructors (results/stdout), not for learners."""
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
