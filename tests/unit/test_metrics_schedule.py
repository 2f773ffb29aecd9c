"""ECE / MCE on hand-made cases, top-k, many/medium/few, the learning-rate schedules."""
import math

import numpy as np
import pytest
import torch

from analysis.metrics import (
    calibration_errors,
    class_ranges,
    classification_report,
    derive_class_ranges,
    topk_correct,
)
from config import get_cfg_defaults
from engine.schedule import lr_at_epoch
from utils.errors import ConfigError


def numpy_ece(conf, correct, n_bins=15):
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.digitize(conf, edges, right=True)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.sum() / len(conf) * abs(correct[m].mean() - conf[m].mean())
    return ece


def test_ece_hand_made():
    # two samples at confidence 0.9, one right one wrong: |0.5 - 0.9| = 0.4
    ece, mce, _ = calibration_errors(torch.tensor([0.9, 0.9]), torch.tensor([1.0, 0.0]))
    assert ece == pytest.approx(0.4) and mce == pytest.approx(0.4)
    # perfectly calibrated bins give 0
    conf = torch.tensor([0.5, 0.5, 1.0, 1.0])
    ece, _, _ = calibration_errors(conf, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert ece == pytest.approx(0.0)
    # a confidence on a bin edge belongs to the lower bin (digitize right=True)
    edge = float(np.linspace(0, 1, 16)[6])
    assert np.digitize([edge], np.linspace(0, 1, 16), right=True)[0] == 6
    _, _, table = calibration_errors(torch.tensor([edge], dtype=torch.float64),
                                     torch.tensor([1.0]))
    assert table["count"][6] == 1


def test_ece_matches_numpy_digitize_definition():
    rng = np.random.RandomState(0)
    conf = rng.rand(1000)
    conf[:20] = np.linspace(0, 1, 16).repeat(2)[:20]  # values on the bin edges
    correct = (rng.rand(1000) < conf).astype(float)
    ece, _, _ = calibration_errors(torch.tensor(conf), torch.tensor(correct))
    assert ece == pytest.approx(numpy_ece(conf, correct), abs=1e-12)


def test_topk_capped_at_num_classes():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    target = torch.tensor([2, 0])
    assert topk_correct(logits, target, (1, 5)) == {1: 1, 5: 2}


def test_report_shots():
    logits = torch.eye(4)[[0, 1, 2, 3, 0, 0]] * 5
    target = torch.tensor([0, 1, 2, 3, 2, 3])
    r = classification_report(logits, target, {"many": (0, 2), "medium": (2, 3), "few": (3, 4)})
    assert r["acc1"] == pytest.approx(400 / 6)
    assert r["many"] == 100.0 and r["medium"] == 50.0 and r["few"] == 50.0


def test_derived_ranges_cifar100_thresholds():
    from datasets.common import lt_counts
    expect = {0.01: (35, 35, 30), 0.02: (41, 41, 18), 0.1: (69, 31, 0)}
    for imb, sizes in expect.items():
        r = derive_class_ranges(lt_counts(500, 100, imb))
        assert tuple(b - a for a, b in r.values()) == sizes


def test_config_ranges_and_errors():
    cfg = get_cfg_defaults()
    counts = [500] * 10
    assert class_ranges(cfg, counts) == derive_class_ranges(counts)
    cfg.head_class_idx, cfg.med_class_idx, cfg.tail_class_idx = [0, 3], [3, 7], [7, 10]
    assert class_ranges(cfg, counts) == {"many": (0, 3), "medium": (3, 7), "few": (7, 10)}
    cfg.tail_class_idx = [7, 100]
    with pytest.raises(ConfigError, match="tail_class_idx"):
        class_ranges(cfg, counts)


def test_step_schedule():
    cfg = get_cfg_defaults()
    lrs = {e + 1: lr_at_epoch(cfg, e) for e in range(300)}
    assert lrs[1] == pytest.approx(0.02) and lrs[5] == pytest.approx(0.1)
    assert lrs[6] == lrs[160] == 0.1
    assert lrs[161] == pytest.approx(0.01) and lrs[240] == pytest.approx(0.01)
    assert lrs[241] == pytest.approx(0.001)


def test_cosine_schedule():
    cfg = get_cfg_defaults()
    cfg.cos = True
    assert lr_at_epoch(cfg, 0) == pytest.approx(0.1)
    assert lr_at_epoch(cfg, 100) == pytest.approx(0.05)
    assert lr_at_epoch(cfg, 150) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.75)))
