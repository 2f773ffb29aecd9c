"""Embedded demo data: scikit-learn's bundled 8x8 handwritten digits (1,797 real images).

A balanced held-out test set of ``digits_test_per_class`` images per class, and a
long-tailed training split of the rest with the config's ``imb_factor`` / ``imb_type``;
classes are ordered as digits 0..9 (class 0 the most frequent). Fixed seed 0, no download.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Tuple

import numpy as np
import torchvision.transforms as T

from datasets.common import ArrayImageDataset, DataBundle, check_num_classes, lt_counts
from utils.errors import DataError

DIGITS_MEAN = (0.3051,)
DIGITS_STD = (0.3750,)

log = logging.getLogger(__name__)


def _transform(train: bool):
    aug = [T.RandomCrop(8, padding=1)] if train else []
    return T.Compose(aug + [T.ToTensor(), T.Normalize(DIGITS_MEAN, DIGITS_STD)])


def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (N x 8 x 8 values 0..16, labels), read from the CSV file that
    scikit-learn ships (importing sklearn itself takes seconds, reading the file does not)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits demo needs scikit-learn: pip install -r requirements.txt")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data",
                        "digits.csv.gz")
    if os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # layout changed: use the public loader
    d = load_digits()
    return d.images, d.target.astype(np.int64)


def build_digits(cfg) -> DataBundle:
    check_num_classes(cfg.num_classes, 10, "digits")
    if cfg.data_path:
        log.warning("data_path %r is not read: dataset digits is scikit-learn's bundled "
                    "images (set data_path '' to silence this)", cfg.data_path)
    values, labels = load_digits_arrays()
    images = np.round(values * (255.0 / 16.0)).astype(np.uint8)[..., None]  # N x 8 x 8 x 1
    rng = np.random.RandomState(0)
    per_class = [rng.permutation(np.where(labels == c)[0]) for c in range(10)]
    k = cfg.digits_test_per_class
    if k >= min(len(p) for p in per_class):
        raise DataError(f"key 'digits_test_per_class' is {k}; accepted: fewer than "
                        f"{min(len(p) for p in per_class)} (the smallest digit class)")
    test_idx = np.concatenate([p[:k] for p in per_class])
    pool = [p[k:] for p in per_class]
    counts = lt_counts(min(len(p) for p in pool), 10, cfg.imb_factor, cfg.imb_type)
    if min(counts) < 1:
        raise DataError(f"key 'imb_factor' {cfg.imb_factor} leaves a digit class empty")
    train_idx = np.concatenate([p[:n] for p, n in zip(pool, counts)])
    return DataBundle(
        train=ArrayImageDataset(images[train_idx], labels[train_idx], _transform(True)),
        test=ArrayImageDataset(images[test_idx], labels[test_idx], _transform(False)),
        cls_num_list=list(counts), name="digits", in_channels=1,
        train_eval=ArrayImageDataset(images[train_idx], labels[train_idx], _transform(False)),
        extra={"mean": DIGITS_MEAN, "std": DIGITS_STD, "augment": {"pad": 1, "flip": False}})
