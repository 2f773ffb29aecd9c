"""Exact resume, atomic checkpoints, safe loading, numerical faults, bad input, and run folders
that belong to one config and one process (the real-process cases: test_faults_processes.py).

Here: the launched processes; the rest in tests/unit/test_fault_tolerance.py,
tests/integration/test_fault_tolerance.py."""
import os
import signal
import sys

import pytest

from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    RESUME_MIX,
    ROOT,
    assert_same_weights,
    final_weights,
    finish,
    read_metrics,
    start,
    strip_seconds,
    wait_for_rows,
)
from utils.checkpoint import load_checkpoint

MIX = RESUME_MIX


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_is_exact(baseline, tmp_path):
    """A real process: SIGTERM (graceful, exit 143), resume, SIGKILL, resume to the end.
    The processes run with 0.2 s added to each step (results unchanged) so that the signals
    surely arrive before the run ends."""
    args = [sys.executable, os.path.join(ROOT, "tests", "train_with_fault.py"), "--cfg",
            DIGITS_CE, "output_dir", str(tmp_path), "num_epochs", "3", *MIX]
    slow = {"ARB_TEST_FAULT": "slow"}
    p = start(args, slow)
    run = wait_for_rows(str(tmp_path), 1, p)
    p.send_signal(signal.SIGTERM)
    out, _ = finish(p)
    assert p.returncode == 143, out
    assert "resume with" in out
    p = start(args + ["resume", "auto"], slow)
    wait_for_rows(str(tmp_path), 2, p)
    p.kill()
    finish(p)
    load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))  # still readable
    assert commands.train_stage1(args[2:] + ["resume", "auto"]) == 0
    assert os.listdir(tmp_path) == [os.path.basename(run)]
    assert strip_seconds(read_metrics(run)) == baseline[0]
    assert_same_weights(final_weights(run), baseline[1])
