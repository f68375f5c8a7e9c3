"""Commands that run no learner code never import torch."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [["--help"], ["list"], ["show", "ex1"], [], ["hint", "ex1"], ["solution", "ex1", "--force"]])
def test_no_torch_import(args, drill_home):
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "ATTN_DRILL_HOME": str(drill_home)}
    done = subprocess.run([sys.executable, "-m", "attn_drill", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "no import profile was printed"
    assert not [name for name in imported if name == "torch" or name.startswith("torch.")]
