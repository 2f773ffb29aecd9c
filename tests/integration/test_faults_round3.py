"""Faults and bad input, round 3: the next command a user types.

The resume hint continues the run that stopped (its own config.yaml), a resume whose schedule
would change leaves the run's folder alone, one sweep per folder, the dry run refuses what the
real start-up refuses, an empty yaml, the tau-grid cap, warnings for silently ignored values,
and a run stopped before it trained leaves no folder behind.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_faults_round3.py,
tests/processes/test_faults_round3.py."""
import os
import signal

import pytest

from config import load_config
from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    ROOT,
    one_error_line,
    only_run_dir,
    signal_after_step,
)

S2_MISLAS = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_mislas.yaml")


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_a_resume_that_would_respread_the_cosine_schedule_starts_a_new_folder(
        tmp_path, monkeypatch):
    """Stage 2 (cosine over num_epochs): a run of 6 epochs stopped, then its own checkpoint
    resumed with the yaml's 10 epochs, leaves its folder untouched and says why."""
    s1 = tmp_path / "s1"
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(s1), "num_epochs",
                                  "2"]) == 0
    stage1 = os.path.join(only_run_dir(str(s1)), "ckps", "current.pth.tar")
    out = tmp_path / "s2"
    signal_after_step(monkeypatch, 20)
    assert commands.train_stage2(["--cfg", S2_MISLAS, "output_dir", str(out), "resume", stage1,
                              "num_epochs", "6"]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    run = only_run_dir(str(out))
    before = open(os.path.join(run, "metrics.jsonl")).read()
    ckpt = os.path.join(run, "ckps", "current.pth.tar")
    assert load_config(os.path.join(run, "config.yaml"), stage=2).num_epochs == 6
    assert commands.train_stage2(["--cfg", S2_MISLAS, "output_dir", str(out), "resume", ckpt,
                              "num_epochs", "7"]) == 0
    assert open(os.path.join(run, "metrics.jsonl")).read() == before
    (new,) = [os.path.join(out, d) for d in os.listdir(out) if os.path.join(out, d) != run]
    text = open(os.path.join(new, "logs", "digits_imb005_stage2_mislas.txt")).read()
    assert "num_epochs 6 -> 7" in text and "left untouched" in text


# ------------------------------------------------------------------ 7. nothing left behind
def test_a_run_stopped_before_it_trained_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from datasets.common import ArrayImageDataset
    from utils.errors import DataError

    def unreadable(self, i):
        raise DataError("cannot read image /x/1.jpg: not an image file")

    monkeypatch.setattr(ArrayImageDataset, "__getitem__", unreadable)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "1"])
    assert e.value.code == 2
    assert "cannot read image /x/1.jpg" in one_error_line(capsys)
    assert os.listdir(out) == []
