"""The re-balancing baselines (Balanced Softmax, logit adjustment, LDAM + DRW, focal,
class-balanced, label smoothing) against their formulas written out directly, their
equivalences, how ``loss`` and the ARB flags combine, and short training runs with each.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_losses.py."""
import math
import os
import signal

import pytest

from config import load_config
from engine import HookBase, commands
from methods import (
    LOSS_BUILDERS,
)
from tests.fixtures import (
    DIGITS_CE,
    LOSS_DESCRIPTIONS,
    ROOT,
    only_run_dir,
    read_metrics,
    signal_after_step,
    strip_seconds,
)

ALL_LOSSES = sorted(LOSS_BUILDERS)
# ------------------------------------------------------------------ training runs
TINY = ["num_epochs", "1", "print_freq", "50", "digits_test_per_class", "10"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_short_digits_run_per_loss(name, tmp_path):
    extra = ["drw_epoch", "0"]
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "loss", name,
                              "mixup", "True", *TINY, *extra]) == 0
    run = only_run_dir(str(tmp_path))
    (row,) = read_metrics(run)
    assert math.isfinite(row["train_loss"]) and 0 <= row["acc1"] <= 100
    log = open(os.path.join(run, "logs", "digits_imb005_ce.txt")).read()
    assert LOSS_DESCRIPTIONS[name].split(" (")[0] in log


class DrwRecorder(HookBase):
    """(epoch, DRW on?) at every training step."""

    def __init__(self):
        self.seen = []

    def after_step(self, step):
        self.seen.append((step.epoch, self.trainer.criterion.active))


@pytest.mark.slow
def test_drw_starts_at_drw_epoch_in_training_and_after_a_resume(tmp_path, monkeypatch):
    """3 epochs, DRW after 2: steps of epochs 0 and 1 unweighted, epoch 2 weighted. A run
    interrupted inside epoch 2 resumes with the weights on from its first step, and ends
    exactly as the uninterrupted run."""
    args = ["--cfg", DIGITS_CE, "num_epochs", "3", "drw_epoch", "2", "print_freq", "50",
            "digits_test_per_class", "10"]
    rec = DrwRecorder()
    assert commands.train_stage1(args + ["output_dir", str(tmp_path / "a")], hooks=[rec]) == 0
    steps = len(rec.seen) // 3
    assert rec.seen == [(e, e >= 2) for e in range(3) for _ in range(steps)]
    baseline = strip_seconds(read_metrics(only_run_dir(str(tmp_path / "a"))))

    signal_after_step(monkeypatch, 2 * steps + 3)  # a SIGTERM during step 3 of epoch index 2
    out = str(tmp_path / "b")
    assert commands.train_stage1(args + ["output_dir", out]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    rec = DrwRecorder()
    assert commands.train_stage1(args + ["output_dir", out, "resume", "auto"], hooks=[rec]) == 0
    assert rec.seen == [(2, True)] * (steps - 3)
    assert strip_seconds(read_metrics(only_run_dir(out))) == baseline


@pytest.mark.slow
def test_ldam_at_its_published_scale_trains_on_its_cosine_classifier(tmp_path):
    """LDAM-DRW at s = 30 on LDAM-DRW's cosine head (classifier auto) trains the digits demo at
    least as well as cross-entropy + DRW (on a linear head it reached 19.6 %)."""
    final = {}
    for stem in ("ldam_drw", "ce_drw"):
        out = str(tmp_path / stem)
        assert commands.train_stage1(["--cfg", os.path.join(ROOT, "config", "digits",
                                                        f"digits_imb005_{stem}.yaml"),
                                  "output_dir", out]) == 0
        final[stem] = read_metrics(only_run_dir(out))[-1]["acc1"]
    ldam = load_config(os.path.join(ROOT, "config", "digits", "digits_imb005_ldam_drw.yaml"))
    assert ldam.ldam_s == 30.0 and ldam.classifier == "auto"
    assert final["ldam_drw"] >= final["ce_drw"] > 70, final
