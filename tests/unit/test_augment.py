"""Augmentation keys: AutoAugment / RandAugment in the transform lists, CutMix, and short
training runs with each on.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_augment.py."""
import logging
import os
import re

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader

from config import get_cfg_defaults, load_config, validate
from datasets import build_data
from datasets.loader import train_loader
from engine import commands
from methods import ARBLoss, mixup_criterion
from methods.mixup import BatchMix, batch_mixing, cutmix_box, cutmix_data
from tests.fixtures import DIGITS_ARB, ROOT, make_cfg, write_image_tree
from utils.errors import ConfigError

CPU = torch.device("cpu")


def kinds(transform):
    return [type(t) for t in transform.transforms]


def cifar_cfg(root, **kw):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.data_path, cfg.num_classes, cfg.download = "cifar10", root, 10, False
    for k, v in kw.items():
        cfg[k] = v
    return cfg


# ---------------------------------------------------------------- transform lists
CIFAR_TRAIN = [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]


def test_cifar_policy_keys_change_only_the_training_list(small_cifar10):
    off = build_data(cifar_cfg(small_cifar10))
    assert kinds(off.train.transform) == CIFAR_TRAIN
    auto = build_data(cifar_cfg(small_cifar10, autoaugment=True))
    assert kinds(auto.train.transform) == CIFAR_TRAIN[:2] + [T.AutoAugment] + CIFAR_TRAIN[2:]
    assert auto.train.transform.transforms[2].policy == T.AutoAugmentPolicy.CIFAR10
    rand = build_data(cifar_cfg(small_cifar10, randaugment=True, randaugment_n=3,
                                randaugment_m=12))
    assert kinds(rand.train.transform) == CIFAR_TRAIN[:2] + [T.RandAugment] + CIFAR_TRAIN[2:]
    op = rand.train.transform.transforms[2]
    assert (op.num_ops, op.magnitude, op.num_magnitude_bins) == (3, 12, 31)
    for bundle in (auto, rand):  # evaluation transforms unchanged
        for ds in (bundle.test, bundle.train_eval):
            assert kinds(ds.transform) == [T.ToTensor, T.Normalize]


IMAGELIST_TRAIN = [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.ToTensor,
                   T.Normalize]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(str(tmp_path_factory.mktemp("lists")), "imagenet")


def test_imagelist_policy_keys_change_only_the_training_list(tree):
    off = build_data(make_cfg("imagenet", tree))
    assert kinds(off.train.transform) == IMAGELIST_TRAIN
    for key, kind in (("autoaugment", T.AutoAugment), ("randaugment", T.RandAugment)):
        data = build_data(make_cfg("imagenet", tree, **{key: True}))
        assert kinds(data.train.transform) == IMAGELIST_TRAIN[:3] + [kind] + IMAGELIST_TRAIN[3:]
        if key == "autoaugment":
            assert data.train.transform.transforms[3].policy == T.AutoAugmentPolicy.IMAGENET
        for ds in (data.test, data.train_eval):
            assert kinds(ds.transform) == kinds(off.test.transform)


@pytest.mark.parametrize("opts,key", [
    (["autoaugment", "True", "randaugment", "True"], "keys 'autoaugment' and 'randaugment' are "
     "both True"),
    (["randaugment", "True", "randaugment_m", "31"], "key 'randaugment_m' is 31; accepted: an "
     "integer in [0, 30]"),
    (["randaugment", "True", "randaugment_n", "0"], "key 'randaugment_n' is 0; accepted: an "
     "integer >= 1"),
])
def test_bad_policy_keys_are_refused_when_the_config_loads(opts, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(os.path.join(ROOT, "config", "cifar10", "cifar10_imb001.yaml"), opts)


def test_policy_is_drawn_from_the_sample_seed(small_cifar10):
    data = build_data(cifar_cfg(small_cifar10, randaugment=True, randaugment_m=20))
    plain = build_data(cifar_cfg(small_cifar10))
    a = data.train[(3, 12345)][0]
    torch.manual_seed(7)
    assert torch.equal(data.train[(3, 12345)][0], a)
    changed = sum(not torch.equal(data.train[(i, 99)][0], plain.train[(i, 99)][0])
                  for i in range(20))
    assert changed >= 10  # two ops of magnitude 20 rarely leave an image unchanged


def test_loaders_with_a_policy(small_cifar10, tree, caplog):
    cfg = cifar_cfg(small_cifar10, autoaugment=True, device_pipeline=True, workers=0)
    with pytest.raises(ConfigError, match="keys 'device_pipeline' and 'autoaugment' are both"):
        validate(cfg)  # load_config runs it: the dry run refuses it too
    cfg.device_pipeline = False
    assert isinstance(train_loader(cfg, build_data(cfg), CPU, 0, 1), DataLoader)
    # the image-list fast path gives way to the reference per-image transform, saying so once
    cfg = make_cfg("imagenet", tree, randaugment=True, workers=0)
    data = build_data(cfg)
    with caplog.at_level(logging.INFO, logger="datasets.loader"):
        ld = train_loader(cfg, data, CPU, 0, 1)
    assert isinstance(ld, DataLoader) and ld.dataset.transform is data.train.transform
    assert sum("reference per-image transform" in r.getMessage() for r in caplog.records) == 1
    # a data set without a per-image policy refuses the key instead of ignoring it
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.autoaugment, cfg.workers, cfg.num_classes = "digits", True, 0, 10
    with pytest.raises(ConfigError, match="key 'autoaugment'.*digits"):
        validate(cfg)


# ---------------------------------------------------------------- CutMix
def test_cutmix_box_is_the_reference_rand_bbox():
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    for lam in np.linspace(0.0, 1.0, 23):
        top, bottom, left, right = cutmix_box(12, 10, float(lam), rng)
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(12 * cut), int(10 * cut)
        cy, cx = ref.integers(12), ref.integers(10)
        assert (top, bottom) == (np.clip(cy - ch // 2, 0, 12), np.clip(cy + ch // 2, 0, 12))
        assert (left, right) == (np.clip(cx - cw // 2, 0, 10), np.clip(cx + cw // 2, 0, 10))


def test_cutmix_pastes_one_box_and_lam_is_its_area():
    b, c, h, w = 8, 2, 12, 10
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, c, h, w).contiguous()
    y = torch.arange(b)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    areas = set()
    for _ in range(30):
        before = x.clone()
        mixed, y_a, y_b, lam = cutmix_data(x, y, 1.0, rng, gen)
        assert torch.equal(x, before) and torch.equal(y_a, y)
        assert sorted(y_b.tolist()) == list(range(b))
        # every pixel comes from the image itself or from its partner y_b (labels = values)
        partner = y_b.view(b, 1, 1, 1).float()
        from_partner = (mixed == partner) & (mixed != x)
        assert torch.all((mixed == x) | (mixed == partner))
        inside = torch.zeros(h, w, dtype=torch.bool)
        for i in range(b):
            if y_b[i] != i:
                inside = from_partner[i, 0]
                break
        rows, cols = inside.any(1).nonzero(), inside.any(0).nonzero()
        area = int(inside.sum())
        if area:  # one rectangle, the same in every image and channel
            box = (slice(int(rows.min()), int(rows.max()) + 1),
                   slice(int(cols.min()), int(cols.max()) + 1))
            assert inside[box].all()
            for i in range(b):
                assert torch.all(mixed[i][:, box[0], box[1]] == float(y_b[i]))
        assert lam == pytest.approx(1.0 - area / (h * w), abs=1e-12)
        areas.add(area)
    assert len(areas) > 5
    same, *_ = cutmix_data(x, y, 0.0, rng, gen)  # alpha 0: no cut, as mixup's lam = 1
    assert torch.equal(same, x)


def test_cutmix_reproducible_from_the_streams():
    x = torch.randn(6, 3, 8, 8)
    y = torch.arange(6)
    out = [cutmix_data(x, y, 1.0, np.random.default_rng(3), torch.Generator().manual_seed(3))
           for _ in range(2)]
    assert torch.equal(out[0][0], out[1][0]) and out[0][3] == out[1][3]


def test_cutmix_loss_uses_the_counts_of_the_unpermuted_targets():
    torch.manual_seed(0)
    z, y = torch.randn(10, 4), torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    x = torch.randn(10, 3, 8, 8)
    mixed, y_a, y_b, lam = cutmix_data(x, y, 1.0, np.random.default_rng(1),
                                       torch.Generator().manual_seed(1))
    crit = ARBLoss()
    counts = torch.bincount(y_a, minlength=4).double()
    want = lam * crit(z, y_a, counts) + (1 - lam) * crit(z, y_b, counts)
    torch.testing.assert_close(mixup_criterion(crit, z, y_a, y_b, lam), want)


def test_batch_mixing_decides_in_one_place():
    cfg = get_cfg_defaults()
    assert batch_mixing(cfg) == BatchMix("mixup", 1.0)  # the reference default
    cfg.mixup = False
    assert batch_mixing(cfg) is None
    cfg.cutmix, cfg.cutmix_alpha = True, 0.5
    assert batch_mixing(cfg) == BatchMix("cutmix", 0.5) and str(batch_mixing(cfg)) == (
        "cutmix (alpha 0.5)")
    cfg.cutmix_alpha = 0.0
    assert batch_mixing(cfg) is None
    cfg.cutmix_alpha = -1.0
    with pytest.raises(ConfigError, match="key 'cutmix_alpha' is -1.0; accepted: a number >= 0"):
        validate(cfg)
    cfg.mixup, cfg.cutmix_alpha = True, 1.0
    with pytest.raises(ConfigError, match="'mixup' and 'cutmix'"):
        validate(cfg)  # the config check: batch_mixing never sees both
    cfg.alpha = 0.0  # mixup on with alpha 0 does not mix: CutMix alone
    validate(cfg)
    assert batch_mixing(cfg) == BatchMix("cutmix", 1.0)


def test_mixup_and_cutmix_together_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", DIGITS_ARB, "output_dir", str(tmp_path), "mixup", "True",
                           "cutmix", "True"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keys 'mixup' and 'cutmix' are both on" in err[0]
    assert not os.listdir(tmp_path)  # refused before anything was created
