"""Augmentation keys: AutoAugment / RandAugment in the transform lists, CutMix, and short
training runs with each on.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_augment.py."""
import os

import numpy as np
import pytest
import torch

from engine import commands
from engine.hooks import HookBase
from methods import ARBLoss
from tests.fixtures import DIGITS_ARB, ROOT, only_run_dir, read_metrics


# ---------------------------------------------------------------- short training runs
class _Record(HookBase):
    def __init__(self):
        self.steps = []

    def after_step(self, step):
        self.steps.append(step)


@pytest.mark.parametrize("device_pipeline", ["False", "True"])
def test_digits_run_with_cutmix(tmp_path, device_pipeline):
    rec = _Record()
    assert commands.train_stage1(["--cfg", DIGITS_ARB, "output_dir", str(tmp_path), "num_epochs",
                              "1", "mixup", "False", "cutmix", "True", "device_pipeline",
                              device_pipeline, "sampler", "class_balanced"], hooks=[rec]) == 0
    assert len(read_metrics(only_run_dir(str(tmp_path)))) == 1
    mixed = [s for s in rec.steps if s.lam < 1.0]
    assert mixed and all(s.y_b is not None for s in mixed)
    crit = ARBLoss()
    for s in rec.steps:  # ARB batch counts from the un-permuted targets
        assert torch.equal(s.class_cnt, crit.counts_for(s.y_a, 10))


@pytest.mark.parametrize("key", ["autoaugment", "randaugment"])
def test_cifar_run_with_a_policy(small_cifar10, tmp_path, key):
    cfg = os.path.join(ROOT, "config", "cifar10", "cifar10_imb01_stage1_mixup.yaml")
    assert commands.train_stage1(["--cfg", cfg, "output_dir", str(tmp_path), "num_epochs", "1",
                              "data_path", small_cifar10, "download", "False", "backbone",
                              "resnet8_fe", "batch_size", "32", "workers", "0",
                              key, "True"]) == 0
    rows = read_metrics(only_run_dir(str(tmp_path)))
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
