"""Faults and bad input, round 3: the next command a user types.

The resume hint continues the run that stopped (its own config.yaml), a resume whose schedule
would change leaves the run's folder alone, one sweep per folder, the dry run refuses what the
real start-up refuses, an empty yaml, the tau-grid cap, warnings for silently ignored values,
and a run stopped before it trained leaves no folder behind.

Here: the launched processes; the rest in tests/unit/test_faults_round3.py,
tests/integration/test_faults_round3.py."""
import os
import shlex
import signal
import sys
import time

import pytest

from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    finish,
    kill_tree,
    only_run_dir,
    read_metrics,
    run_cli,
    start,
    wait_for_rows,
)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# ------------------------------------------------------------------ 1. the resume hint
@pytest.mark.slow
def test_the_printed_resume_command_continues_the_run_with_its_overrides(tmp_path):
    """A run started with overrides, stopped by SIGTERM: the printed command (run as printed)
    continues it in its folder with its 4 epochs (the yaml says 15), and ends as the
    uninterrupted run."""
    out = tmp_path / "runs"
    opts = ["output_dir", str(out), "name", "hint", "num_epochs", "4", "print_freq", "1"]
    p = start([sys.executable, "train_stage1.py", "--cfg", DIGITS_CE, *opts])
    run = wait_for_rows(str(out), 1, p)
    os.killpg(p.pid, signal.SIGTERM)
    text, _ = finish(p)
    assert p.returncode == 128 + signal.SIGTERM, text[-2000:]
    (line,) = [ln for ln in text.splitlines() if "resume with: " in ln]
    command = line.split("resume with: ", 1)[1]
    cfg_file = shlex.quote(os.path.join(run, "config.yaml"))
    ckpt = shlex.quote(os.path.join(run, "ckps", "current.pth.tar"))
    assert command == f"python train_stage1.py --cfg {cfg_file} resume {ckpt}"
    argv = shlex.split(command)
    assert argv[:2] == ["python", "train_stage1.py"]
    done = run_cli("train_stage1.py", *argv[2:])
    assert done.returncode == 0, done.stderr[-2000:]
    assert only_run_dir(str(out)) == run  # the same folder
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    base = tmp_path / "base"
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(base), "name", "hint",
                              "num_epochs", "4", "print_freq", "1"]) == 0
    assert strip(rows) == strip(read_metrics(only_run_dir(str(base))))


# ------------------------------------------------------------------ 2. one sweep per folder
@pytest.mark.slow
def test_a_second_sweep_on_the_same_folder_stops_naming_the_first(tmp_path):
    out = tmp_path / "sweep"
    first = start([sys.executable, "tools/sweep.py", "--cfg", DIGITS_CE, "--seeds", "0",
                   "--out", str(out), "--", "num_epochs", "30"])
    try:
        lock = out / ".sweep.lock"
        t0 = time.time()
        while not (lock.exists() and lock.read_text().strip()) and time.time() - t0 < 120:
            assert first.poll() is None, finish(first)
            time.sleep(0.1)
        second = run_cli("tools/sweep.py", "--cfg", DIGITS_CE, "--seeds", "0", "--out",
                         str(out), "--", "num_epochs", "30")
        assert second.returncode == 2
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sweep.py: error: folder ") and (
            f"is in use by process {first.pid} (another sweep is running there)" in err[0])
    finally:
        kill_tree(first)
        finish(first)


# ------------------------------------------------------------------ 6. silently accepted
@pytest.mark.slow
def test_warnings_for_a_batch_larger_than_the_data_and_an_unread_data_path(tmp_path):
    done = run_cli("train_stage1.py", "--cfg", DIGITS_CE, "output_dir", str(tmp_path),
                   "num_epochs", "1", "batch_size", "1000", "data_path", "/data/digits")
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert ("batch_size 1000 is larger than the 417 training images: one step an epoch"
            in said)
    assert "data_path '/data/digits' is not read: dataset digits" in said
