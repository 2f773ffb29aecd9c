"""ARB-Loss, its variants, label-aware smoothing and mixup against direct computations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods import (
    ARBLoss,
    CrossEntropy,
    LabelAwareSmoothing,
    build_criterion,
    las_epsilons,
    mixup_criterion,
    mixup_data,
)


def direct_arb(z, y, n):
    """The formula as written: -log( exp(z_y) / sum_j (n_j / n_y) exp(z_j) ), float64."""
    z, n = z.double(), n.double()
    out = []
    for b in range(z.shape[0]):
        yb = int(y[b])
        denom = sum(float(n[j] / n[yb]) * math.exp(float(z[b, j])) for j in range(z.shape[1]))
        out.append(-math.log(math.exp(float(z[b, yb])) / denom))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 5, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0, 1])  # class 4 absent
    return z, y


def test_batch_counts_match_formula(batch):
    z, y = batch
    n = torch.bincount(y, minlength=5).double()
    got = ARBLoss(reduction="none")(z, y)
    torch.testing.assert_close(got, direct_arb(z, y, n))
    # an absent class (n = 0) must not enter the denominator at all
    z2 = z.clone()
    z2[:, 4] += 50.0
    torch.testing.assert_close(ARBLoss(reduction="none")(z2, y), got)


def test_global_counts_match_formula_and_equal_ce_on_logit_adjusted(batch):
    z, y = batch
    counts = [500, 200, 50, 10, 3]
    n = torch.tensor(counts, dtype=torch.float64)
    crit = ARBLoss(reduction="none", cls_num_list=counts)
    torch.testing.assert_close(crit(z, y), direct_arb(z, y, n))
    torch.testing.assert_close(crit(z, y), F.cross_entropy(z + n.log(), y, reduction="none"))
    # explicit counts given to a batch-count loss override the batch
    torch.testing.assert_close(ARBLoss(reduction="none")(z, y, n), direct_arb(z, y, n))


def test_reductions(batch):
    z, y = batch
    none = ARBLoss(reduction="none")(z, y)
    assert torch.allclose(ARBLoss(reduction="sum")(z, y), none.sum())
    assert torch.allclose(ARBLoss()(z, y), none.mean())
    with pytest.raises(ValueError):
        ARBLoss(reduction="avg")


def test_gradient_closed_form_and_finite_differences(batch):
    z, y = batch
    z = z.clone().requires_grad_(True)
    n = torch.bincount(y, minlength=5).double()
    ARBLoss(reduction="sum")(z, y).backward()
    q = torch.softmax(z.detach() + n.log(), dim=1)  # ARB probability; 0 for absent classes
    expected = q - F.one_hot(y, 5).double()
    torch.testing.assert_close(z.grad, expected)
    assert torch.autograd.gradcheck(lambda t: ARBLoss(cls_num_list=[5, 4, 3, 2, 1])(t, y),
                                    (z.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_are_finite(scale):
    z = torch.zeros(6, 4)
    z[:, 0] = scale
    z[:, 3] = -scale
    z.requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    for crit in (ARBLoss(), ARBLoss(cls_num_list=[9, 5, 2, 1]),
                 ARBLoss(weighted=True), ARBLoss(focal_gamma=2.0)):
        loss = crit(z, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        z.grad = None


def test_mixup_criterion_uses_counts_of_unpermuted_targets(batch):
    z, y = batch
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    y_b, lam = y[perm], 0.3
    n = torch.bincount(y, minlength=5).double()
    expected = lam * direct_arb(z, y, n).mean() + (1 - lam) * direct_arb(z, y_b, n).mean()
    torch.testing.assert_close(mixup_criterion(ARBLoss(), z, y, y_b, lam), expected)


def test_mixup_data_mixes_with_one_permutation():
    x = torch.arange(8.0).view(8, 1)
    y = torch.arange(8)
    rng = np.random.default_rng(0)
    mixed, y_a, y_b, lam = mixup_data(x, y, 1.0, rng, torch.Generator().manual_seed(0))
    assert 0.0 <= lam <= 1.0 and torch.equal(y_a, y)
    assert sorted(y_b.tolist()) == list(range(8))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[y_b])
    _, _, _, lam0 = mixup_data(x, y, 0.0)
    assert lam0 == 1.0


def test_weighted_arb(batch):
    z, y = batch
    n = torch.bincount(y, minlength=5).double()
    mean_count = len(y) / 4  # batch size / classes present
    expected = direct_arb(z, y, n) * mean_count / n[y]
    torch.testing.assert_close(ARBLoss(reduction="none", weighted=True)(z, y), expected)
    counts = torch.tensor([40.0, 30, 20, 8, 2], dtype=torch.float64)
    expected_g = direct_arb(z, y, counts) * (counts.sum() / 5) / counts[y]
    got = ARBLoss(reduction="none", weighted=True, cls_num_list=counts.tolist())(z, y)
    torch.testing.assert_close(got, expected_g)


def test_focal_arb(batch):
    z, y = batch
    n = torch.bincount(y, minlength=5).double()
    p = torch.exp(-direct_arb(z, y, n))
    expected = -(1 - p) ** 2 * torch.log(p)
    torch.testing.assert_close(ARBLoss(reduction="none", focal_gamma=2.0)(z, y), expected)


def test_las_epsilons_shapes():
    counts = [100, 50, 10, 1]
    x = torch.tensor([(c - 1) / 99 for c in counts], dtype=torch.float64)
    for shape, g in (("concave", torch.sin(x * math.pi / 2)), ("linear", x), ("exp", x ** 2)):
        torch.testing.assert_close(las_epsilons(counts, 0.4, 0.1, shape),
                                   (0.1 + 0.3 * g).float())
    convex = 0.4 + 0.3 * torch.sin(1.5 * math.pi + x * math.pi / 2)
    torch.testing.assert_close(las_epsilons(counts, 0.4, 0.1, "convex"), convex.float())
    eps = las_epsilons(counts, 0.4, 0.1)
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.1)


def test_las_loss_with_ce_and_arb(batch):
    z, y = batch
    counts = [500, 200, 50, 10, 3]
    eps = las_epsilons(counts, 0.3, 0.0).double()
    logp = torch.log_softmax(z, 1)
    expected = ((1 - eps[y]) * -logp[torch.arange(len(y)), y] + eps[y] * -logp.mean(1)).mean()
    las = LabelAwareSmoothing(counts, 0.3, 0.0)
    torch.testing.assert_close(las(z, y), expected)
    # ARB + LAS: ARB log-probabilities; the uniform part over the classes of the batch
    n = torch.bincount(y, minlength=5).double()
    logq = torch.log_softmax(z + n.log(), 1)
    present = n > 0
    uni = -(logq[:, present]).mean(1)
    expected = ((1 - eps[y]) * -logq[torch.arange(len(y)), y] + eps[y] * uni).mean()
    got = LabelAwareSmoothing(counts, 0.3, 0.0, base=ARBLoss())(z, y)
    torch.testing.assert_close(got, expected)


def test_build_criterion_from_flags():
    from config import get_cfg_defaults
    cfg = get_cfg_defaults()
    counts = [10, 5, 1]
    assert isinstance(build_criterion(cfg, counts), CrossEntropy)
    cfg.arbloss = True
    assert build_criterion(cfg, counts).count_mode == "batch"
    cfg.arb_loss_use_global_class_cnt = True
    assert build_criterion(cfg, counts).count_mode == "global"
    cfg.LAS, cfg.smooth_head, cfg.smooth_tail = True, 0.4, 0.1
    crit = build_criterion(cfg, counts)
    assert isinstance(crit, LabelAwareSmoothing) and isinstance(crit.base, ARBLoss)
