"""The classifier heads (linear, LDAM-DRW's cosine ``NormedLinear``, Yang et al.'s fixed simplex
ETF) and the dot-regression loss, each against the published definition written out here."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from config import classifier_kind, get_cfg_defaults, load_config
from methods import DotRegressionLoss, build_criterion, etf_scales, mixup_criterion
from models import build_network, checkpoint_classifier, classifier_for_checkpoint
from models.heads import CosineClassifier, ETFClassifier, NormedLinear, simplex_etf
from tests.fixtures import DIGITS_CE
from utils.errors import CheckpointError, ConfigError


# ------------------------------------------------------------------ cosine (NormedLinear)
@pytest.mark.parametrize("d,c", [(64, 10), (64, 100), (128, 7)])
def test_normed_linear_initialisation_is_ldam_drws_draw(d, c):
    """LDAM-DRW models/resnet_cifar.py: Parameter(torch.Tensor(in, out)) then
    uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5); ours stores the C x d transpose."""
    torch.manual_seed(3)
    ref = torch.empty(d, c).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
    torch.manual_seed(3)
    ours = NormedLinear(d, c)
    assert ours.weight.shape == (c, d)
    assert torch.equal(ours.weight.detach(), ref.t())
    # every class vector starts at norm 1
    torch.testing.assert_close(ours.weight.detach().norm(dim=1), torch.ones(c), rtol=0,
                               atol=1e-6)


def test_cosine_logits_are_normed_linears_output():
    """out = F.normalize(x, dim=1).mm(F.normalize(W, dim=0)) with W the d x C weight."""
    torch.manual_seed(0)
    head = CosineClassifier(16, 5)
    with torch.no_grad():
        head.fc.weight.mul_(torch.rand(5, 1) * 3 + 0.1)  # unequal norms: training moves them
    x = torch.randn(9, 16) * 4
    w = head.fc.weight.detach().t()  # LDAM-DRW's layout
    want = F.normalize(x, dim=1).mm(F.normalize(w, dim=0))
    torch.testing.assert_close(head(x), want, rtol=0, atol=1e-6)
    assert head(x).abs().max() <= 1 + 1e-6
    torch.testing.assert_close(head.class_weights().norm(dim=1), torch.ones(5))
    assert "fc.bias" not in head.state_dict()


# ------------------------------------------------------------------ fixed ETF
@pytest.mark.parametrize("d,k", [(64, 10), (128, 100), (10, 10), (512, 2)])
def test_etf_gram_matrix_is_the_simplex(d, k):
    m = simplex_etf(d, k, seed=1).double()
    want = k / (k - 1) * torch.eye(k, dtype=torch.float64) - 1 / (k - 1) * torch.ones(
        k, k, dtype=torch.float64)
    torch.testing.assert_close(m.t() @ m, want, rtol=0, atol=1e-6)


def test_etf_is_theirs_for_their_draw():
    """ETF_Classifier: a = np.random.random((d, K)); P, _ = np.linalg.qr(a);
    M = sqrt(K / (K - 1)) P (I - 11^T / K), from numpy's stream (here RandomState(seed))."""
    d, k = 32, 6
    a = np.random.RandomState(4).random_sample((d, k))
    p, _ = np.linalg.qr(a)
    want = np.sqrt(k / (k - 1)) * p @ (np.eye(k) - np.ones((k, k)) / k)
    torch.testing.assert_close(simplex_etf(d, k, 4), torch.tensor(want).float())
    assert not torch.equal(simplex_etf(d, k, 4), simplex_etf(d, k, 5))


def test_etf_head_is_fixed_bn_then_l2_and_refuses_too_few_dimensions():
    torch.manual_seed(0)
    head = ETFClassifier(12, 4, seed=2)
    # the ETF is a buffer (saved, never trained); BN_H is what trains
    assert [n for n, _ in head.named_parameters()] == ["BN_H.weight", "BN_H.bias"]
    assert "fc.weight" in head.state_dict()
    x = torch.randn(8, 12) * 5 + 1
    h = head.BN_H(x)
    h = h / torch.clamp(torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True)), 1e-8)
    torch.testing.assert_close(head.embed(x), h)
    torch.testing.assert_close(head(x), h @ simplex_etf(12, 4, 2))
    with pytest.raises(ValueError, match="at least 5 dimensions"):
        simplex_etf(4, 5, 0)
    cfg = load_config(DIGITS_CE, ["classifier", "etf", "num_classes", "100"])
    with pytest.raises(ConfigError, match="64-d features, fewer than the 100 classes.*"
                                          "resnet32_fe_c100"):
        build_network(cfg, 100, 1)


def test_the_etf_stays_unchanged_by_training_while_bn_h_trains():
    cfg = load_config(DIGITS_CE, ["loss", "dr"])
    net = build_network(cfg, 10, 1)
    crit = build_criterion(cfg, [50] * 10, net.classifier)
    m0 = net.classifier.fc.weight.clone()
    bn0 = net.classifier.BN_H.weight.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5,
                          momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        logits, h = net(x, return_features=True)
        loss = mixup_criterion(crit, logits, y, y, 1.0, features=h)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(net.classifier.fc.weight, m0)
    assert not torch.equal(net.classifier.BN_H.weight.detach(), bn0)


# ------------------------------------------------------------------ dot regression
def their_produce_ew(label, num_classes):
    """methods.py produce_Ew, written out (a loop over the classes present)."""
    uni, count = torch.unique(label, return_counts=True)
    gamma = label.size(0) / uni.size(0)
    ew = torch.ones(1, num_classes)
    for c, n in zip(uni, count):
        ew[0, c] = torch.sqrt(gamma / n)
    return ew


def their_dot_loss(output, label, cur_m, reg_lam=0.0):
    """methods.py dot_loss with criterion 'reg_dot_loss' (cur_M: d x K), H_length as
    train.py computes it."""
    target = cur_m[:, label].T
    h_length = torch.clamp(torch.sqrt(torch.sum(output.detach() ** 2, dim=1)), 1e-8)
    dot = torch.bmm(output.unsqueeze(1), target.unsqueeze(2)).view(-1)
    with torch.no_grad():
        m_length = torch.sqrt(torch.sum(target ** 2, dim=1))
    loss = 0.5 * torch.mean(((dot - (m_length * h_length)) ** 2) / h_length)
    if reg_lam > 0:
        loss = loss + torch.mean(torch.sqrt(torch.sum(output ** 2, dim=1, keepdim=True))) * reg_lam
    return loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_etf_scales_are_their_produce_ew(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 7, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g)
    torch.testing.assert_close(etf_scales(torch.bincount(y, minlength=9).float()),
                               their_produce_ew(y, 9)[0])


@pytest.mark.parametrize("given_ew,reg", [(True, 0.0), (False, 0.0), (True, 0.3)])
def test_dot_regression_is_their_formula(given_ew, reg):
    d, k, b = 16, 6, 20
    m = simplex_etf(d, k, 0)  # d x K
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, k, (b,), generator=g)
    h = torch.randn(b, d, generator=g, dtype=torch.float32)
    h = (h / h.norm(dim=1, keepdim=True) * torch.rand(b, 1, generator=g) * 2)  # any norms
    cur_m = their_produce_ew(y, k) * m if given_ew else m
    h_ref = h.clone().requires_grad_(True)
    want = their_dot_loss(h_ref, y, cur_m, reg)
    want.backward()
    loss = DotRegressionLoss(m.t(), given_ew=given_ew, reg_lambda=reg)
    h_ours = h.clone().requires_grad_(True)
    got = loss(h_ours @ m, y, torch.bincount(y, minlength=k).float(), features=h_ours)
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(h_ours.grad, h_ref.grad, rtol=1e-5, atol=1e-7)
    # without counts it takes the batch's own
    torch.testing.assert_close(loss(h @ m, y, features=h), want.detach())
    with pytest.raises(ValueError, match="features="):
        loss(h @ m, y)


def test_dot_regression_under_mixup_is_their_lam_mix_with_one_scaling():
    """train.py: cur_M from the un-permuted targets; loss = lam * L(y_a) + (1 - lam) L(y_b)."""
    d, k, b = 12, 5, 16
    m = simplex_etf(d, k, 0)
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, k, (b,), generator=g)
    y_b = y[torch.randperm(b, generator=g)]
    h = F.normalize(torch.randn(b, d, generator=g), dim=1)
    cur_m = their_produce_ew(y, k) * m
    lam = 0.35
    want = lam * their_dot_loss(h, y, cur_m) + (1 - lam) * their_dot_loss(h, y_b, cur_m)
    crit = DotRegressionLoss(m.t())
    got = mixup_criterion(crit, h @ m, y, y_b, lam, crit.counts_for(y, k), features=h)
    torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ config and checkpoints
def test_auto_picks_the_classifier_of_the_losss_authors():
    cfg = get_cfg_defaults()
    for loss, kind in (("ce", "linear"), ("auto", "linear"), ("ldam", "cosine"), ("dr", "etf"),
                       ("arb", "linear"), ("balanced_softmax", "linear")):
        cfg.loss = loss
        assert classifier_kind(cfg) == kind, loss
    cfg.loss, cfg.classifier = "ldam", "linear"
    assert classifier_kind(cfg) == "linear"
    net = build_network(load_config(DIGITS_CE, ["loss", "ldam"]), 10, 1)
    assert isinstance(net.classifier, CosineClassifier)


def test_checkpoint_kind_is_recorded_or_read_from_its_keys():
    for kind in ("linear", "cosine", "etf"):
        net = build_network(load_config(DIGITS_CE, ["classifier", kind]), 10, 1)
        state = {f"module.{k}": v for k, v in net.classifier.state_dict().items()}
        assert checkpoint_classifier({"state_dict_classifier": state}) == kind
        assert checkpoint_classifier({"classifier": kind, "state_dict_classifier": {}}) == kind
    assert checkpoint_classifier({}) is None
    cfg = load_config(DIGITS_CE, ["classifier", "linear"])
    ckpt = {"classifier": "cosine"}
    with pytest.raises(CheckpointError, match="x.pth holds a cosine classifier but key "
                                              "'classifier' is 'linear'; set classifier cosine"):
        classifier_for_checkpoint(cfg, ckpt, "x.pth")
    assert classifier_for_checkpoint(load_config(DIGITS_CE), ckpt, "x.pth") == "cosine"
    assert classifier_for_checkpoint(load_config(DIGITS_CE), {}, "x.pth") == "linear"


def test_an_old_checkpoint_config_without_the_key_means_linear():
    from config import cfg_from_yaml_string, cfg_to_yaml
    cfg = load_config(DIGITS_CE, ["loss", "ldam"])
    text = "\n".join(line for line in cfg_to_yaml(cfg).splitlines()
                     if not line.startswith("classifier:"))
    assert cfg_from_yaml_string(text).classifier == "linear"
    assert cfg_from_yaml_string(cfg_to_yaml(cfg)).classifier == "auto"


def test_tau_norm_refused_for_a_cosine_or_etf_network():
    from engine.evaluation import TauNormalised
    for kind in ("cosine", "etf"):
        net = build_network(load_config(DIGITS_CE, ["classifier", kind]), 10, 1)
        with pytest.raises(ConfigError, match=f"needs a linear classifier; this network's is "
                                              f"'{kind}'"):
            TauNormalised(net, 1.0)
    linear = TauNormalised(build_network(load_config(DIGITS_CE), 10, 1), 1.0)
    with torch.no_grad():
        assert math.isfinite(float(linear(torch.randn(2, 1, 8, 8)).sum()))
