"""The shipped CIFAR-LT baseline configs (tools/make_baseline_configs.py): up to date, loading,
dry-running, and carrying each published recipe value by value (learning rate of every epoch,
DRW weights, LDAM margins) as the authors' code computes it, written out here."""
import glob
import os

import numpy as np
import pytest
import torch

from config import classifier_kind, load_config
from engine import commands
from engine.schedule import lr_at_epoch
from methods import DeferredReweighting, DotRegressionLoss, LDAMLoss, build_criterion
from models import build_network
from tests.fixtures import ROOT, write_cifar
from tools import make_baseline_configs as gen
from tools import sweep

SHIPPED = sorted(glob.glob(os.path.join(ROOT, "config", "cifar*", "cifar*_imb*_*.yaml")))
BASELINE_FILES = [p for p in SHIPPED
                  if os.path.splitext(p)[0].split("_imb")[1].split("_", 1)[-1] in gen.BASELINES]


def cifar_lt_counts(c, imb):
    """The CIFAR-LT counts of the published construction: int(n_max * imb^(i / (C - 1)))."""
    n_max = 5000 if c == 10 else 500
    return [int(n_max * imb ** (i / (c - 1))) for i in range(c)]


def published_lr(epoch, after_160, after_180, base=0.1):
    """The step branch of ``adjust_learning_rate`` as LDAM-DRW's cifar_train.py and Yang et
    al.'s train.py write it (epoch 0-based on entry); they differ only in the two factors
    (LDAM-DRW: 0.01, 0.0001; Yang et al.: 0.1, 0.01)."""
    epoch = epoch + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * after_180
    if epoch > 160:
        return base * after_160
    return base


def ldam_drw_lr(epoch):
    return published_lr(epoch, 0.01, 0.0001)


def etf_dr_lr(epoch):
    return published_lr(epoch, 0.1, 0.01)


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    written = gen.write_all(out=str(tmp_path))
    assert len(written) == len(gen.DATASETS) * len(gen.IMBALANCES) * len(gen.BASELINES) == 42
    for path in written:
        shipped = os.path.join(ROOT, "config", os.path.relpath(path, tmp_path))
        with open(path) as a, open(shipped) as b:
            assert a.read() == b.read(), f"{shipped} is stale: run tools/make_baseline_configs.py"
    assert len(BASELINE_FILES) == 42


@pytest.mark.parametrize("path", BASELINE_FILES, ids=os.path.basename)
def test_each_file_names_its_source_and_every_difference(path):
    text = open(path).read()
    header = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    assert "Recipe of " in header and "github.com/" in header
    assert "differs from" in header and "loss " in header
    cfg = load_config(path)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0] and cfg.mode == "stage1"


@pytest.mark.parametrize("dataset,imb", [(d, i) for d in gen.DATASETS for i in gen.IMBALANCES])
def test_ldam_drw_is_cifar_train_py(dataset, imb):
    cfg = load_config(os.path.join(ROOT, "config", dataset, f"{dataset}_{imb}_ldam_drw.yaml"))
    assert (cfg.num_epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (
        200, 128, 0.1, 0.9, 2e-4)
    assert not cfg.mixup and classifier_kind(cfg) == "cosine" and cfg.backbone == "resnet32_fe"
    for epoch in range(cfg.num_epochs):
        assert lr_at_epoch(cfg, epoch) == pytest.approx(ldam_drw_lr(epoch), rel=1e-12), epoch
    c = cfg.num_classes
    counts = cifar_lt_counts(c, cfg.imb_factor)
    crit = build_criterion(cfg, counts)
    assert isinstance(crit, DeferredReweighting) and isinstance(crit.base, LDAMLoss)
    # cifar_train.py, train_rule DRW: idx = epoch // 160; betas = [0, 0.9999]
    for epoch in (0, 159, 160, 199):
        crit.set_epoch(epoch)
        beta = [0, 0.9999][epoch // 160]
        eff = 1.0 - np.power(beta, counts)
        w = (1.0 - beta) / np.array(eff)
        w = w / np.sum(w) * c
        assert crit.active == (epoch >= 160)
        if crit.active:
            np.testing.assert_allclose(crit.weights.numpy(), w, rtol=1e-12)
        else:
            np.testing.assert_allclose(w, np.ones(c))  # beta 0: the unweighted loss
    # losses.py LDAMLoss: m_list = 1 / sqrt(sqrt(n)), scaled to max_m 0.5; s = 30
    m = 1.0 / np.sqrt(np.sqrt(counts))
    np.testing.assert_allclose(crit.base.margins.numpy(), m * (0.5 / np.max(m)), rtol=1e-12)
    assert crit.base.s == 30.0


@pytest.mark.parametrize("dataset", gen.DATASETS)
def test_etf_dr_is_their_recipe(dataset):
    cfg = load_config(os.path.join(ROOT, "config", dataset, f"{dataset}_imb001_etf_dr.yaml"))
    assert cfg.mixup and cfg.alpha == 1.0 and cfg.weight_decay == 2e-4
    assert cfg.backbone == ("resnet32_fe_c100" if dataset == "cifar100" else "resnet32_fe")
    for epoch in range(cfg.num_epochs):
        assert lr_at_epoch(cfg, epoch) == pytest.approx(etf_dr_lr(epoch), rel=1e-12), epoch
    net = build_network(cfg, cfg.num_classes, 3)
    assert net.classifier.kind == "etf" and net.classifier.fc.in_features >= cfg.num_classes
    crit = build_criterion(cfg, cifar_lt_counts(cfg.num_classes, 0.01), net.classifier)
    assert isinstance(crit, DotRegressionLoss) and crit.given_ew and crit.reg_lambda == 0.0


def test_the_other_baselines_take_their_loss_keys():
    get = {b: load_config(os.path.join(ROOT, "config", "cifar100", f"cifar100_imb001_{b}.yaml"))
           for b in gen.BASELINES}
    assert get["focal"].focal_gamma == 1.0  # LDAM-DRW: FocalLoss(gamma=1)
    assert (get["cb"].cb_beta, get["cb"].cb_base) == (0.9999, "softmax")
    assert get["logit_adjust"].la_tau == 1.0
    for b in ("ce", "focal", "cb", "balanced_softmax", "logit_adjust"):
        cfg = get[b]
        assert classifier_kind(cfg) == "linear" and not cfg.mixup
        assert [lr_at_epoch(cfg, e) for e in range(200)] == pytest.approx(
            [ldam_drw_lr(e) for e in range(200)], rel=1e-12)


def test_the_resnet32_c100_backbone_is_theirs():
    """ImbalancedLearning resnet32_fe_c100: ResNet_fe(BasicBlock, [5, 5, 5], 32): 32 / 64 /
    128 channels, 128-d features: every convolution has 4x the weights of the 16-wide
    ResNet-32's (2x in, 2x out) but the first (3 input channels: 2x)."""
    from models.resnet_cifar import resnet32_fe, resnet32_fe_c100
    wide, base = resnet32_fe_c100(), resnet32_fe()
    assert wide.out_dim == 128 and base.out_dim == 64
    convs = lambda m: sum(p.numel() for n, p in m.named_parameters() if p.dim() == 4)  # noqa
    first = 3 * 16 * 9
    assert convs(wide) == 4 * (convs(base) - first) + 2 * first
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 128)


@pytest.fixture(scope="module")
def cifar_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_baselines")
    return {name: write_cifar(str(root / name), name, 100, 1) for name in gen.DATASETS}


@pytest.mark.slow
@pytest.mark.parametrize("path", BASELINE_FILES, ids=os.path.basename)
def test_every_baseline_config_dry_runs(path, cifar_data, tmp_path, capsys):
    cfg = load_config(path)
    out = tmp_path / "out"
    assert commands.train_stage1(["--cfg", path, "--dry-run", "data_path",
                              cifar_data[cfg.dataset], "download", "False",
                              "output_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"classifier: {classifier_kind(cfg)}, " in text
    assert not out.exists()


def test_the_sweep_of_a_pattern_skips_the_stage2_file(tmp_path, capsys):
    pattern = sorted(glob.glob(os.path.join(ROOT, "config", "cifar100", "cifar100_imb001_*.yaml")))
    assert any("_stage2_" in p for p in pattern)
    runs = sweep.plan(sweep.parse_args(["--cfg", *pattern, "--seeds", "0", "--out",
                                        str(tmp_path)]))
    names = {r.group for r in runs}
    assert "cifar100_imb001_stage2_mislas" not in names
    assert {f"cifar100_imb001_{b}" for b in gen.BASELINES} <= names
    assert {"cifar100_imb001_arbloss", "cifar100_imb001_stage1_mixup"} <= names
    assert "skipping" in capsys.readouterr().out
    stage2 = [p for p in pattern if "_stage2_" in p]
    assert sweep.main(["--cfg", *stage2, "--seeds", "0", "--out", str(tmp_path / "s")]) == 2
    assert "every --cfg file is a stage-2 config" in capsys.readouterr().err
