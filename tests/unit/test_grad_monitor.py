"""Gradient attraction / repulsion monitor against direct per-pair loops and closed forms."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from analysis.grad_monitor import (
    GradBalanceMonitor,
    attraction_repulsion,
    coefficients,
    pair_norms,
    term_coefficients,
)
from methods import ARBLoss, CrossEntropy, LabelAwareSmoothing, mixup_criterion

C, D = 6, 5
GLOBAL = [40, 20, 10, 6, 3, 1]


def loop_components(h, G, y):
    """comp[i][j] = sum over samples n of class j of G[n, i] * h[n]: the published double loop."""
    comps = [[torch.zeros(h.shape[1], dtype=h.dtype) for _ in range(C)] for _ in range(C)]
    for i in range(C):
        for j in range(C):
            for n in range(h.shape[0]):
                if int(y[n]) == j:
                    comps[i][j] = comps[i][j] + G[n, i] * h[n]
    return comps


def loop_attraction_repulsion(h, G, y):
    comps = loop_components(h, G, y)
    attract = torch.stack([comps[i][i].norm() for i in range(C)])
    repulse = torch.stack([sum(comps[i][j] for j in range(C) if j != i).norm()
                           for i in range(C)])
    return attract, repulse


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(10, C, generator=g, dtype=torch.float64) * 2
    h = torch.randn(10, D, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 0, 3, 1, 0])  # classes 4 and 5 absent
    perm = torch.randperm(10, generator=g)
    return z, h, y, y[perm]


def closed_form(z, y, n):
    """(softmax(z + log n) - onehot(y)) / B; n = 1 everywhere gives cross-entropy."""
    q = torch.softmax(z + torch.log(n), dim=1)
    return (q - F.one_hot(y, C).to(z.dtype)) / z.shape[0]


def test_coefficients_match_closed_forms(batch):
    z, h, y, y_b = batch
    ones = torch.ones(C, dtype=torch.float64)
    n_batch = torch.bincount(y, minlength=C).double()
    n_glob = torch.tensor(GLOBAL, dtype=torch.float64)
    torch.testing.assert_close(coefficients(z, CrossEntropy(), y), closed_form(z, y, ones))
    torch.testing.assert_close(coefficients(z, ARBLoss(), y), closed_form(z, y, n_batch))
    torch.testing.assert_close(coefficients(z, ARBLoss(cls_num_list=GLOBAL), y),
                               closed_form(z, y, n_glob))
    # mixup with ARB: both terms use the counts of the un-permuted targets y_a
    lam = 0.3
    want = lam * closed_form(z, y, n_batch) + (1 - lam) * closed_form(z, y_b, n_batch)
    torch.testing.assert_close(coefficients(z, ARBLoss(), y, y_b, lam), want)
    g_a, g_b = term_coefficients(z, ARBLoss(), y, y_b, lam)
    torch.testing.assert_close(g_a, lam * closed_form(z, y, n_batch))
    torch.testing.assert_close(g_b, (1 - lam) * closed_form(z, y_b, n_batch))
    assert term_coefficients(z, ARBLoss(), y, y_b, 1.0)[1] is None


@pytest.mark.parametrize("criterion", [
    CrossEntropy(), ARBLoss(), ARBLoss(cls_num_list=GLOBAL), ARBLoss(weighted=True),
    LabelAwareSmoothing(GLOBAL, 0.3, 0.0, base=ARBLoss())], ids=["ce", "arb_batch",
                                                                 "arb_global", "warb", "las"])
@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_gradient_of_classifier_rows(batch, criterion, lam):
    """G^T h is the true gradient of the fc weight, and attraction + repulsion split it."""
    z0, h, y, y_b = batch
    fc = nn.Linear(D, C).double()
    loss = mixup_criterion(criterion, fc(h), y, y_b, lam)
    loss.backward()
    logits = fc(h).detach()
    G = coefficients(logits, criterion, y, y_b, lam)
    torch.testing.assert_close(G.t() @ h, fc.weight.grad)


@pytest.mark.parametrize("name", ["ce", "arb_batch", "arb_global"])
def test_attraction_repulsion_equals_pair_loop(batch, name):
    z, h, y, _ = batch
    crit = {"ce": CrossEntropy(), "arb_batch": ARBLoss(),
            "arb_global": ARBLoss(cls_num_list=GLOBAL)}[name]
    G = coefficients(z, crit, y)
    a, r = attraction_repulsion(h, G, y)
    la, lr = loop_attraction_repulsion(h, G, y)
    torch.testing.assert_close(a, la)
    torch.testing.assert_close(r, lr)
    if name == "arb_batch":  # absent classes get no gradient at all under batch counts
        assert float(a[4:].abs().max()) == 0.0 and float(r[4:].abs().max()) == 0.0
    comps = loop_components(h, G, y)
    want = torch.stack([torch.stack([comps[i][j].norm() for j in range(C)])
                        for i in range(C)])
    torch.testing.assert_close(pair_norms(h, G, y), want)


def test_mixup_split_equals_loop_over_pseudo_samples(batch):
    """With mixup the y_a term is credited to class y_a and the y_b term to class y_b."""
    z, h, y, y_b = batch
    lam = 0.6
    g_a, g_b = term_coefficients(z, ARBLoss(), y, y_b, lam)
    mon = GradBalanceMonitor(C, 1, {"many": (0, 2), "medium": (2, 4), "few": (4, 6)})
    a, r = mon.update(z, h, ARBLoss(), y, y_b, lam)
    # direct loop: every (sample, term) pair is a pseudo-sample of that term's class
    la, lr = loop_attraction_repulsion(torch.cat((h, h)), torch.cat((g_a, g_b)),
                                       torch.cat((y, y_b)))
    torch.testing.assert_close(a, la)
    torch.testing.assert_close(r, lr)
    # the split keeps the total gradient
    comps = loop_components(torch.cat((h, h)), torch.cat((g_a, g_b)), torch.cat((y, y_b)))
    total = torch.stack([sum(comps[i][j] for j in range(C)) for i in range(C)])
    torch.testing.assert_close(total, coefficients(z, ARBLoss(), y, y_b, lam).t() @ h)


class FakeWriter:
    def __init__(self):
        self.scalars, self.hists = {}, {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)

    def add_histogram(self, tag, values, step):
        self.hists[tag] = (values, step)


def test_monitor_accumulates_logs_and_resets(batch):
    z, h, y, y_b = batch
    ranges = {"many": (0, 2), "medium": (2, 4), "few": (4, 6)}
    mon = GradBalanceMonitor(C, 5, ranges)
    assert mon.due(0) and mon.due(10) and not mon.due(3)
    assert not GradBalanceMonitor(C, 0, ranges).due(0)
    crit = CrossEntropy()
    a1, r1 = mon.update(z, h.float(), crit, y)
    a2, r2 = mon.update(z * 0.5, h.float(), crit, y, y_b, 0.4)
    mean_a, mean_r = (a1 + a2) / 2, (r1 + r2) / 2
    pa, pr, ratio = mon.per_class()
    torch.testing.assert_close(pa, mean_a.double())
    torch.testing.assert_close(ratio, (mean_a / mean_r).double())
    w = FakeWriter()
    mon.log(w, 7)
    assert w.scalars["grad/ratio_many"][1] == 7
    assert set(w.hists) == {"grad/attraction", "grad/repulsion", "grad/ratio"}
    s = mon.summary()
    assert set(s) == {f"grad_{k}_{g}" for k in ("attract", "repulse", "ratio")
                      for g in ("many", "medium", "few")}
    assert math.isclose(s["grad_ratio_many"], float(mean_a[:2].mean() / mean_r[:2].mean()),
                        rel_tol=1e-5)
    # reset: nothing accumulated, NaN summary, nothing logged
    assert mon.steps == 0 and all(math.isnan(v) for v in mon.summary().values())
    w2 = FakeWriter()
    mon.log(w2, 8)
    assert not w2.scalars


def test_monitor_absent_classes_under_batch_counts(batch):
    """ARB batch counts: classes never in a monitored batch get NaN ratios, not errors."""
    z, h, y, _ = batch
    mon = GradBalanceMonitor(C, 1, {"many": (0, 2), "medium": (2, 4), "few": (4, 6)})
    mon.update(z.float(), h.float(), ARBLoss(), y)
    _, _, ratio = mon.per_class()
    assert torch.isnan(ratio[4:]).all() and torch.isfinite(ratio[:4]).all()
    s = mon.summary()
    assert math.isnan(s["grad_ratio_few"]) and math.isfinite(s["grad_ratio_many"])
