"""The re-balancing baselines (Balanced Softmax, logit adjustment, LDAM + DRW, focal,
class-balanced, label smoothing) against their formulas written out directly, their
equivalences, how ``loss`` and the ARB flags combine, and short training runs with each.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_losses.py."""
import glob
import math
import os

import numpy as np
import pytest
import torch

from analysis.grad_monitor import term_coefficients
from config import get_cfg_defaults, load_config, validate
from engine import commands
from methods import (
    LOSS_BUILDERS,
    ARBLoss,
    BalancedSoftmax,
    ClassBalancedLoss,
    CrossEntropy,
    DeferredReweighting,
    FocalLoss,
    LabelAwareSmoothing,
    LabelSmoothingLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    build_criterion,
    class_balanced_weights,
    describe_criterion,
    mixup_criterion,
    resolve_loss,
)
from methods.criterion import CLASSIFIER_LOSSES
from tests.fixtures import DIGITS_CE, LOSS_DESCRIPTIONS, ROOT
from utils.errors import ConfigError, DataError

SHAPES = [(1, 2), (7, 3), (16, 10), (33, 17)]
ALL_LOSSES = sorted(LOSS_BUILDERS)
# the losses of the logits alone (the dot regression also reads the classifier's input)
LOGIT_LOSSES = [n for n in ALL_LOSSES if n not in CLASSIFIER_LOSSES]


def counts_for_shape(c):
    """A long-tailed count vector of length c (largest 500, smallest >= 1)."""
    return [max(1, int(round(500 * 0.02 ** (i / max(c - 1, 1))))) for i in range(c)]


def make_batch(b, c, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed + 100 * b + c)
    z = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (b,), generator=g)
    return z, y


# ------------------------------------------------------------------ direct formulas (float64)
def softmax_row(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def direct_ce(z, y, eps=0.0):
    """(1 - eps) (-log p_y) + eps * mean_j (-log p_j): cross-entropy (eps = 0), label smoothing."""
    out = []
    for row, t in zip(z.tolist(), y.tolist()):
        p = softmax_row(row)
        out.append((1 - eps) * -math.log(p[t]) + eps * sum(-math.log(q) for q in p) / len(p))
    return torch.tensor(out, dtype=torch.float64)


def direct_balanced_softmax(z, y, n):
    """Ren et al. 2020: -log( n_y exp(z_y) / sum_j n_j exp(z_j) )."""
    out = []
    for row, t in zip(z.tolist(), y.tolist()):
        m = max(row)
        denom = sum(nj * math.exp(zj - m) for nj, zj in zip(n, row))
        out.append(-math.log(n[t] * math.exp(row[t] - m) / denom))
    return torch.tensor(out, dtype=torch.float64)


def direct_logit_adjust(z, y, n, tau):
    """Menon et al. 2021: cross-entropy on z_j + tau * log(pi_j), pi = n / sum(n)."""
    total = sum(n)
    adj = [[zj + tau * math.log(nj / total) for zj, nj in zip(row, n)] for row in z.tolist()]
    return direct_ce(torch.tensor(adj, dtype=torch.float64), y)


def direct_ldam(z, y, n, max_m=0.5, s=30.0):
    """Cao et al. 2019: m_j = K / n_j^(1/4), max m = max_m;
    -log( e^{s(z_y - m_y)} / (e^{s(z_y - m_y)} + sum_{j != y} e^{s z_j}) )."""
    raw = [1.0 / nj ** 0.25 for nj in n]
    k = max_m / max(raw)
    m = [k * r for r in raw]
    out = []
    for row, t in zip(z.tolist(), y.tolist()):
        target = math.exp(s * (row[t] - m[t]))
        others = sum(math.exp(s * zj) for j, zj in enumerate(row) if j != t)
        out.append(-math.log(target / (target + others)))
    return torch.tensor(out, dtype=torch.float64)


def direct_focal(z, y, gamma):
    """Lin et al. 2017: -(1 - p_y)^gamma log p_y."""
    out = []
    for row, t in zip(z.tolist(), y.tolist()):
        p = softmax_row(row)[t]
        out.append(-((1 - p) ** gamma) * math.log(p))
    return torch.tensor(out, dtype=torch.float64)


def direct_cb_weights(n, beta):
    """Cui et al. 2019: (1 - beta) / (1 - beta^n_j), normalised to sum C."""
    w = [(1 - beta) / (1 - beta ** nj) for nj in n]
    return [v / sum(w) * len(n) for v in w]


# ------------------------------------------------------------------ the formulas
@pytest.mark.parametrize("b,c", SHAPES)
def test_balanced_softmax_matches_formula(b, c):
    z, y = make_batch(b, c)
    n = counts_for_shape(c)
    want = direct_balanced_softmax(z, y, n)
    torch.testing.assert_close(BalancedSoftmax(n, reduction="none")(z, y), want,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(BalancedSoftmax(n)(z, y), want.mean(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b,c", SHAPES)
@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0, -1.0])
def test_logit_adjust_matches_formula(b, c, tau):
    z, y = make_batch(b, c)
    n = counts_for_shape(c)
    got = LogitAdjustedLoss(n, tau=tau, reduction="none")(z, y)
    torch.testing.assert_close(got, direct_logit_adjust(z, y, n, tau), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b,c", SHAPES)
@pytest.mark.parametrize("max_m,s", [(0.5, 30.0), (0.3, 1.0), (1.0, 10.0)])
def test_ldam_matches_formula(b, c, max_m, s):
    z, y = make_batch(b, c, scale=1.0)  # cosine-classifier-sized logits: e^(30 z) stays finite
    n = counts_for_shape(c)
    got = LDAMLoss(n, max_m=max_m, s=s, reduction="none")(z, y)
    torch.testing.assert_close(got, direct_ldam(z, y, n, max_m, s), rtol=1e-12, atol=1e-10)


def test_ldam_margins_and_scale_are_the_papers():
    """Counts 100, 10, 1: m_j proportional to n_j^(-1/4) = 1/sqrt(10), 1/10^(1/4), 1; the rarest
    gets max_m = 0.5. LDAM-DRW's losses.py computes the same list with numpy."""
    counts = [100, 10, 1]
    crit = LDAMLoss(counts)
    want = [0.5 / math.sqrt(10.0), 0.5 / 10 ** 0.25, 0.5]
    assert crit.margins.tolist() == pytest.approx([0.15811388300841897, 0.28117066259517454,
                                                    0.5], abs=1e-15)
    assert crit.margins.tolist() == pytest.approx(want, abs=1e-15)
    published = 1.0 / np.sqrt(np.sqrt(np.array(counts, dtype=np.float64)))
    published = published * (0.5 / np.max(published))
    np.testing.assert_allclose(crit.margins.numpy(), published, rtol=0, atol=1e-15)
    assert crit.s == 30.0
    # zero logits: L = log(1 + (C - 1) e^{s m_y}) ~ s m_y + log(C - 1): the scale multiplies
    # the margin
    z = torch.zeros(3, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    want_loss = [math.log(1 + 2 * math.exp(30 * m)) for m in want]
    assert crit(z, y, None).item() == pytest.approx(sum(want_loss) / 3, rel=1e-13)
    assert LDAMLoss(counts, reduction="none")(z, y)[2].item() == pytest.approx(
        15 + math.log(2), abs=1e-6)


@pytest.mark.parametrize("b,c", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_focal_matches_formula(b, c, gamma):
    z, y = make_batch(b, c)
    got = FocalLoss(gamma, reduction="none")(z, y)
    torch.testing.assert_close(got, direct_focal(z, y, gamma), rtol=1e-12, atol=1e-12)
    if gamma == 0.0:
        torch.testing.assert_close(got, direct_ce(z, y), rtol=1e-12, atol=1e-12)


def test_focal_gradient_is_finite_where_p_is_one():
    z = torch.tensor([[60.0, -60.0, 0.0]], dtype=torch.float64, requires_grad=True)
    for gamma in (0.5, 2.0):
        FocalLoss(gamma)(z, torch.tensor([0])).backward()
        assert torch.isfinite(z.grad).all()
        z.grad = None


def test_class_balanced_weights_formula():
    counts = [100, 10, 1]
    for beta in (0.0, 0.9, 0.99, 0.9999):
        w = class_balanced_weights(counts, beta)
        assert w.dtype == torch.float64
        assert w.tolist() == pytest.approx(direct_cb_weights(counts, beta), rel=1e-13)
        assert w.sum().item() == pytest.approx(3.0, rel=1e-14)
    assert class_balanced_weights(counts, 0.0).tolist() == [1.0, 1.0, 1.0]
    # beta = 0.9999 and small counts: effective numbers ~ n, weights ~ 1 / n
    w = class_balanced_weights(counts, 0.9999)
    assert (w / w[2]).tolist() == pytest.approx([1 / 100, 1 / 10, 1], rel=1e-2)
    with pytest.raises(ValueError):
        class_balanced_weights(counts, 1.0)


@pytest.mark.parametrize("b,c", SHAPES)
@pytest.mark.parametrize("base,gamma", [("softmax", 2.0), ("focal", 2.0), ("focal", 1.0)])
def test_class_balanced_loss_matches_formula(b, c, base, gamma):
    z, y = make_batch(b, c)
    n = counts_for_shape(c)
    w = torch.tensor(direct_cb_weights(n, 0.9999), dtype=torch.float64)
    per = direct_ce(z, y) if base == "softmax" else direct_focal(z, y, gamma)
    want = w[y] * per
    crit = ClassBalancedLoss(n, beta=0.9999, base=base, gamma=gamma, reduction="none")
    torch.testing.assert_close(crit(z, y), want, rtol=1e-12, atol=1e-12)
    # 'mean' averages over the batch (Cui et al.'s tf.losses.softmax_cross_entropy(weights=))
    torch.testing.assert_close(ClassBalancedLoss(n, base=base, gamma=gamma)(z, y), want.mean(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b,c", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
def test_label_smoothing_matches_formula(b, c, eps):
    z, y = make_batch(b, c)
    got = LabelSmoothingLoss(eps, reduction="none")(z, y)
    torch.testing.assert_close(got, direct_ce(z, y, eps), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b,c", SHAPES)
@pytest.mark.parametrize("which", ["ce", "ldam"])
def test_drw_switches_on_at_its_epoch(b, c, which):
    z, y = make_batch(b, c, scale=1.0)
    n = counts_for_shape(c)
    per = direct_ce(z, y) if which == "ce" else direct_ldam(z, y, n)
    base = CrossEntropy("none") if which == "ce" else LDAMLoss(n, reduction="none")
    crit = DeferredReweighting(base, n, start_epoch=3)
    w = torch.tensor(direct_cb_weights(n, 0.9999), dtype=torch.float64)[y]
    for epoch in range(6):
        crit.set_epoch(epoch)
        assert crit.active == (epoch >= 3)
        # LDAM-DRW: F.cross_entropy(weight=w): the weighted mean sum w l / sum w
        want = (w * per).sum() / w.sum() if epoch >= 3 else per.mean()
        torch.testing.assert_close(crit(z, y), want, rtol=1e-12, atol=1e-12)
    crit.set_epoch(2)  # and off again (a schedule, not a latch)
    torch.testing.assert_close(crit(z, y), per.mean(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        DeferredReweighting(CrossEntropy(), n, 3)  # base must give per-sample losses


def test_counts_must_be_positive():
    for make in (lambda: BalancedSoftmax([5, 0, 1]), lambda: LDAMLoss([5, 0]),
                 lambda: ClassBalancedLoss([0, 3])):
        with pytest.raises(DataError):
            make()


# ------------------------------------------------------------------ equivalences
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,c", SHAPES)
def test_balanced_softmax_is_arb_global_is_logit_adjust_tau_1(b, c, dtype):
    """Same loss, same operations: bitwise equal values and gradients."""
    z, y = make_batch(b, c)
    z = z.to(dtype)
    n = counts_for_shape(c)
    results = []
    for crit in (BalancedSoftmax(n), ARBLoss(cls_num_list=n), LogitAdjustedLoss(n, tau=1.0)):
        zz = z.clone().requires_grad_(True)
        loss = crit(zz, y)
        loss.backward()
        results.append((loss.detach(), zz.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])
    # and the ARB formula itself: -log( exp(z_y) / sum_j (n_j / n_y) exp(z_j) )
    if dtype == torch.float64:
        torch.testing.assert_close(results[0][0], direct_balanced_softmax(z, y, n).mean(),
                                   rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the common interface
def built(name, counts, **keys):
    cfg = get_cfg_defaults()
    cfg.loss = name
    for k, v in keys.items():
        cfg[k] = v
    return build_criterion(cfg, counts)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_every_loss_works_with_mixup_counts_and_the_grad_monitor(name):
    c = 6
    n = counts_for_shape(c)
    z, y = make_batch(12, c, scale=1.0)
    y_b = y[torch.randperm(12, generator=torch.Generator().manual_seed(0))]
    crit = built(name, n)
    # only ARB-Loss with batch counts uses batch counts
    cnt = crit.counts_for(y, c)
    assert (cnt is not None) == (name == "arb")
    lam = 0.3
    want = lam * crit(z, y, cnt) + (1 - lam) * crit(z, y_b, cnt)
    torch.testing.assert_close(mixup_criterion(crit, z, y, y_b, lam), want)
    # the gradient monitor differentiates the loss: its two terms add up to the full gradient
    zz = z.clone().requires_grad_(True)
    mixup_criterion(crit, zz, y, y_b, lam).backward()
    g_a, g_b = term_coefficients(z, crit, y, y_b, lam)
    torch.testing.assert_close(g_a + g_b, zz.grad)
    # float32 logits stay float32, half-precision logits are upcast
    assert crit(z.float(), y, None if cnt is None else cnt).dtype == torch.float32
    assert crit(z.half(), y, None if cnt is None else cnt).dtype == torch.float32
    crit.set_epoch(5)  # every loss accepts the trainer's call


def test_build_criterion_reads_the_loss_keys():
    n = [50, 20, 5, 2]
    assert isinstance(built("ce", n), CrossEntropy)
    assert isinstance(built("balanced_softmax", n), BalancedSoftmax)
    la = built("logit_adjust", n, la_tau=1.5)
    assert type(la) is LogitAdjustedLoss and la.tau == 1.5
    ldam = built("ldam", n, ldam_max_m=0.3, ldam_s=10.0)
    assert isinstance(ldam, LDAMLoss) and ldam.s == 10.0
    assert ldam.margins.max().item() == pytest.approx(0.3)
    assert built("focal", n, focal_gamma=1.0).gamma == 1.0
    cb = built("cb", n, cb_beta=0.99, cb_base="focal", focal_gamma=0.5)
    assert (cb.beta, cb.base, cb.gamma) == (0.99, "focal", 0.5)
    assert built("label_smoothing", n, label_smoothing=0.2).epsilon == 0.2
    drw = built("ldam", n, drw_epoch=4, cb_beta=0.999)
    assert isinstance(drw, DeferredReweighting) and isinstance(drw.base, LDAMLoss)
    assert drw.start_epoch == 4 and drw.beta == 0.999 and drw.base.reduction == "none"
    assert isinstance(built("ce", n, drw_epoch=2).base, CrossEntropy)
    arb = built("arb", n, warbloss=True, arbloss_fl=True, focal_gamma=1.0)
    assert isinstance(arb, ARBLoss) and arb.weighted and arb.focal_gamma == 1.0
    assert arb.count_mode == "batch"
    assert built("arb", n, arb_loss_use_global_class_cnt=True).count_mode == "global"
    las = built("arb", n, LAS=True, smooth_head=0.3, smooth_tail=0.0)
    assert isinstance(las, LabelAwareSmoothing) and isinstance(las.base, ARBLoss)


def test_loss_auto_keeps_the_published_flags():
    cfg = get_cfg_defaults()
    assert cfg.loss == "auto" and resolve_loss(cfg) == "ce"
    for flag in ("arbloss", "warbloss", "arbloss_fl"):
        c = get_cfg_defaults()
        c[flag] = True
        assert resolve_loss(c) == "arb"
    c = get_cfg_defaults()
    c.arb_loss_use_global_class_cnt = True  # published: ignored without arbloss
    assert resolve_loss(c) == "ce"
    assert isinstance(build_criterion(c, [3, 2, 1]), CrossEntropy)
    c = get_cfg_defaults()
    c.loss = "arb"  # arb without the arbloss flag
    assert isinstance(build_criterion(c, [3, 2, 1]), ARBLoss)


PUB = os.path.join(ROOT, "tests", "data", "published_configs")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(PUB, "*", "*", "*.yaml"))),
                         ids=lambda p: os.path.relpath(p, PUB))
def test_every_published_yaml_selects_the_loss_it_always_did(path):
    cfg = load_config(path, stage=None)
    arb = cfg.arbloss or cfg.warbloss or cfg.arbloss_fl
    assert cfg.loss == "auto" and cfg.drw_epoch == 0
    assert resolve_loss(cfg) == ("arb" if arb else "ce")
    counts = list(range(cfg.num_classes, 0, -1))
    if cfg.LAS:
        cfg.defrost()
        cfg.smooth_head = 0.3 if cfg.smooth_head is None else cfg.smooth_head
        cfg.smooth_tail = 0.0 if cfg.smooth_tail is None else cfg.smooth_tail
    crit = build_criterion(cfg, counts)
    base = crit.base if cfg.LAS else crit
    assert isinstance(crit, LabelAwareSmoothing) == bool(cfg.LAS)
    if arb:
        assert isinstance(base, ARBLoss)
        assert base.count_mode == ("global" if cfg.arb_loss_use_global_class_cnt else "batch")
        assert base.focal_gamma == (2.0 if cfg.arbloss_fl else 0.0)
    else:
        assert type(base) is CrossEntropy


@pytest.mark.parametrize("keys,message", [
    ({"loss": "ldam", "arbloss": True}, "key 'loss' is 'ldam' but arbloss is True"),
    ({"loss": "ce", "arb_loss_use_global_class_cnt": True, "warbloss": True},
     "key 'loss' is 'ce' but warbloss, arb_loss_use_global_class_cnt are True"),
    ({"loss": "focal", "LAS": True, "smooth_head": 0.3, "smooth_tail": 0.0},
     "LAS: True (label-aware smoothing) works with loss ce or arb, not 'focal'"),
    ({"loss": "balanced_softmax", "drw_epoch": 3}, "key 'drw_epoch' is 3 (deferred"),
    ({"loss": "ce", "drw_epoch": 3, "LAS": True, "smooth_head": 0.3, "smooth_tail": 0.0},
     "does not combine with LAS"),
    ({"loss": "ce", "drw_epoch": -1}, "key 'drw_epoch' is -1"),
    ({"loss": "focal", "focal_gamma": -1.0}, "key 'focal_gamma' is -1.0"),
    ({"loss": "cb", "cb_beta": 1.0}, "key 'cb_beta' is 1.0; accepted: a number in [0, 1)"),
    ({"loss": "label_smoothing", "label_smoothing": 1.5}, "key 'label_smoothing' is 1.5"),
    ({"loss": "ldam", "ldam_s": 0.0}, "key 'ldam_s' is 0.0"),
    ({"loss": "ldam", "ldam_max_m": -0.5}, "key 'ldam_max_m' is -0.5"),
])
def test_contradictions_are_refused_with_one_line(keys, message):
    """Refused when the config loads (config.validate), so --dry-run refuses them too."""
    cfg = get_cfg_defaults()
    cfg.num_classes = 10
    for k, v in keys.items():
        cfg[k] = v
    with pytest.raises(ConfigError, match=None) as e:
        validate(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_loss_name_is_refused_by_the_config(tmp_path):
    with pytest.raises(ConfigError, match="key 'loss' is 'ldam_drw'; accepted: auto, ce, arb"):
        load_config(DIGITS_CE, ["loss", "ldam_drw"])
    with pytest.raises(ConfigError, match="key 'cb_base' is 'sigmoid'; accepted: softmax"):
        load_config(DIGITS_CE, ["cb_base", "sigmoid"])


def test_descriptions_name_every_loss_and_its_parameters():
    assert sorted(LOSS_DESCRIPTIONS) == ALL_LOSSES
    cfg = get_cfg_defaults()
    cfg.mixup = False
    cfg.loss, cfg.drw_epoch = "ldam", 160
    assert describe_criterion(cfg) == ("LDAM (max margin 0.5, scale 30) + DRW (class-balanced "
                                       "re-weighting, beta 0.9999, after 160 epochs)")
    cfg.loss, cfg.drw_epoch, cfg.cb_base, cfg.focal_gamma = "cb", 0, "focal", 1.0
    assert describe_criterion(cfg) == "class-balanced focal loss (gamma 1) (beta 0.9999)"
    cfg.loss, cfg.la_tau, cfg.mixup = "logit_adjust", 1.5, True
    assert describe_criterion(cfg) == "logit-adjusted cross-entropy (tau 1.5) + mixup (alpha 1.0)"


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_each_loss_selectable_from_yaml_and_command_line(name, tmp_path, capsys):
    with open(DIGITS_CE) as f:
        text = f.read().replace("arbloss: False", f"loss: {name}")
    yaml_path = tmp_path / f"digits_{name}.yaml"
    yaml_path.write_text(text)
    out = tmp_path / "out"
    assert commands.train_stage1(["--cfg", str(yaml_path), "--dry-run", "output_dir",
                                  str(out)]) == 0
    assert LOSS_DESCRIPTIONS[name] in capsys.readouterr().out.splitlines()
    assert commands.train_stage1(["--cfg", DIGITS_CE, "--dry-run", "output_dir", str(out),
                              "loss", name]) == 0
    assert LOSS_DESCRIPTIONS[name] in capsys.readouterr().out.splitlines()
    assert not out.exists()


BENCH = {"ce": "ce", "ce_drw": "ce", "arbloss": "arb", "arbloss_ugcc": "arb",
         "balanced_softmax": "balanced_softmax", "logit_adjust": "logit_adjust",
         "ldam_drw": "ldam", "etf_dr": "dr", "focal": "focal", "cb": "cb",
         "cb_focal": "cb", "label_smoothing": "label_smoothing"}
LOSS_KEYS = {"name", "loss", "arbloss", "arb_loss_use_global_class_cnt", "la_tau", "focal_gamma",
             "cb_beta", "cb_base", "label_smoothing", "ldam_max_m", "ldam_s", "drw_epoch",
             "classifier", "dr_reg_lambda", "dr_given_ew"}


def test_the_digits_baseline_configs_differ_from_ce_only_in_the_loss():
    """The configs of the README's Baselines table: the demo's recipe, one loss each."""
    paths = glob.glob(os.path.join(ROOT, "config", "digits", "digits_imb005_*.yaml"))
    stage1 = [p for p in paths if "_stage2_" not in p]  # the stage-2 configs are not losses
    assert sorted(os.path.basename(p)[len("digits_imb005_"):-5] for p in stage1) == sorted(BENCH)
    ce = load_config(DIGITS_CE)
    for stem, loss in BENCH.items():
        cfg = load_config(os.path.join(ROOT, "config", "digits", f"digits_imb005_{stem}.yaml"))
        assert resolve_loss(cfg) == loss
        assert {k for k in cfg if cfg[k] != ce[k]} <= LOSS_KEYS, stem
        assert cfg.drw_epoch == (12 if stem.endswith("drw") or "drw_" in stem else 0)


def test_the_config_accepts_exactly_the_registered_losses():
    from config import _CHOICES
    assert _CHOICES["loss"] == ("auto", *LOSS_BUILDERS)
    assert _CHOICES["cb_base"] == ("softmax", "focal")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_every_loss_on_cuda_matches_the_cpu(name):
    """Buffers follow the criterion to the device; bf16 logits (AMP) are upcast."""
    n = counts_for_shape(10)
    z, y = make_batch(64, 10, scale=1.0)
    cpu = built(name, n, drw_epoch=2 if name in ("ce", "ldam") else 0)
    gpu = built(name, n, drw_epoch=2 if name in ("ce", "ldam") else 0).to("cuda")
    for crit in (cpu, gpu):
        crit.set_epoch(3)
    zc, yc = z.float(), y
    cnt = cpu.counts_for(yc, 10)
    want = cpu(zc, yc, cnt)
    got = gpu(zc.cuda(), yc.cuda(), None if cnt is None else cnt.cuda())
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
    got16 = gpu(zc.cuda().bfloat16(), yc.cuda(), None if cnt is None else cnt.cuda())
    assert got16.dtype == torch.float32 and torch.isfinite(got16)
