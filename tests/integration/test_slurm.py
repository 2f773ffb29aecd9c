"""SLURM pre-emption in a run: SIGUSR1 / SIGUSR2 mid-epoch save a checkpoint, requeue the job
(a stand-in scontrol records the call) and ``resume auto`` continues exactly."""
import os
import signal

import pytest

from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    RESUME_MIX,
    assert_same_weights,
    fake_scontrol,
    final_weights,
    only_run_dir,
    read_metrics,
    signal_after_step,
    strip_seconds,
)
from utils.checkpoint import load_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2])
def test_preemption_saves_requeues_and_resumes_exactly(baseline, tmp_path, monkeypatch, sig):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PATH", str(fake_scontrol(tmp_path)) + os.pathsep + os.environ["PATH"])
    signal_after_step(monkeypatch, 10, sig)  # during step 3 of epoch 2
    out = tmp_path / "out"
    args = ["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "3", *RESUME_MIX]
    assert commands.train_stage1(args) == 128 + sig
    run = only_run_dir(str(out))
    assert (tmp_path / "calls.txt").read_text() == "requeue 4242\n"
    with open(os.path.join(run, "logs", "digits_imb005_ce.txt")) as f:
        assert "pre-empted at epoch 2, step 3: checkpoint saved, requeued (job 4242)" in f.read()
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 3)
    monkeypatch.undo()
    # the requeued job runs the same command with resume auto
    assert commands.train_stage1([*args, "resume", "auto"]) == 0
    assert only_run_dir(str(out)) == run
    assert strip_seconds(read_metrics(run)) == baseline[0]
    assert_same_weights(final_weights(run), baseline[1])
