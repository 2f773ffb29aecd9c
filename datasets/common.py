"""Pieces shared by every data set: the long-tail profile, an in-memory image data set,
a sampler whose augmentation randomness depends only on (seed, epoch, sample), and the
optional AutoAugment / RandAugment policy of the training transforms."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, Sampler

from utils.errors import DataError


def check_num_classes(num_classes: int, found: int, what: str) -> None:
    """The config's ``num_classes`` must be the data's class count; else one DataError line
    naming both (``what``: the data set, e.g. 'cifar10')."""
    if num_classes != found:
        raise DataError(f"key 'num_classes' is {num_classes} but {what} has {found} classes")


def lt_counts(n_max: int, num_classes: int, imb_factor: float, imb_type: str = "exp") -> List[int]:
    """Images kept per class: 'exp' int(n_max * imb^(i / (C - 1))); 'step' n_max for the first
    half of the classes and int(n_max * imb) for the rest (LDAM-DRW / MiSLAS)."""
    if imb_type == "exp":
        if num_classes == 1:
            return [n_max]
        return [int(n_max * imb_factor ** (i / (num_classes - 1))) for i in range(num_classes)]
    if imb_type == "step":
        half = num_classes // 2
        return [n_max] * half + [int(n_max * imb_factor)] * (num_classes - half)
    raise ValueError(f"unknown imb_type {imb_type!r}")


def lt_indices(targets: np.ndarray, counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """For each class in order: shuffle its indices (numpy seed ``seed``) and keep the first n."""
    rng = np.random.RandomState(seed)  # same stream as the reference's np.random.seed(0)
    keep = []
    for c, n in enumerate(counts):
        idx = np.where(targets == c)[0]
        rng.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (run seed, epoch, sample index)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB)
    x &= (1 << 64) - 1
    x ^= x >> 31
    return x & ((1 << 63) - 1)


class SeededImageDataset(Dataset):
    """Base of the image data sets: subclasses set ``targets`` and ``transform`` and define
    ``load(index) -> PIL image``.

    Items are indexed either by an int or by an ``(index, seed)`` pair from
    :class:`EpochSampler`; with a seed, the random transform is drawn from that seed, so
    augmentation does not depend on worker count, worker persistence or resuming.
    """

    targets: np.ndarray
    transform: Optional[Callable]

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        img = self.load(index)
        if self.transform is not None:
            img = apply_seeded(self.transform, img, seed)
        return img, int(self.targets[index])


class ArrayImageDataset(SeededImageDataset):
    """Images held in memory as uint8 N x H x W x C (C = 1 or 3) with integer labels."""

    def __init__(self, images: np.ndarray, targets: Sequence[int],
                 transform: Optional[Callable] = None):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform

    def load(self, index: int) -> Image.Image:
        img = self.images[index]
        return Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)


def apply_seeded(transform: Callable, img, seed: Optional[int]):
    """Apply ``transform`` with torch's global CPU RNG seeded by ``seed`` (restored afterwards).

    Uses the CPU generator directly: ``torch.manual_seed`` also seeds every accelerator
    backend and costs milliseconds a call.
    """
    if seed is None:
        return transform(img)
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        return transform(img)
    finally:
        gen.set_state(state)


class EpochSampler(Sampler):
    """Shuffled (or ordered) indices for one rank, reshuffled per epoch from (seed, epoch).
    The ``instance`` training sampler, and the order of every evaluation loader (the other
    training samplers are in :mod:`datasets.samplers`).

    Yields ``(index, per-sample seed)`` pairs. Under DDP each rank takes every
    ``world_size``-th index of the shuffled order; the order is padded by repetition so all
    ranks get the same number of items (as DistributedSampler does), unless ``pad=False``.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, pad: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self.start = 0  # items of this rank's share to skip (resuming inside an epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.world_size > 1 and self.n:
            total = math.ceil(self.n / self.world_size) * self.world_size
            order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank::self.world_size][self.start:]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for i in self.indices():
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        if self.pad and self.world_size > 1:
            share = math.ceil(self.n / self.world_size)
        else:
            share = len(range(self.rank, self.n, self.world_size))
        return max(share - self.start, 0)

    @staticmethod
    def gathered_order(n: int, world_size: int) -> torch.Tensor:
        """The data-set index at each position of the rank-major concatenation of every
        rank's in-order, unpadded share (evaluation loaders gathered over ranks)."""
        every = torch.arange(n)
        return torch.cat([every[r::world_size] for r in range(world_size)])


# config keys of the augmentation policies (off by default: the published recipes have none)
POLICY_KEYS = ("autoaugment", "randaugment")


def policy_keys_on(cfg) -> List[str]:
    """The policy keys (:data:`POLICY_KEYS`) a config turns on."""
    return [k for k in POLICY_KEYS if cfg[k]]


def policy_augmentation(cfg, policy: T.AutoAugmentPolicy) -> Optional[Callable]:
    """The augmentation policy a config asks for, to insert after the crop / flip (and colour
    jitter) of a training transform and before ToTensor, as the published recipes with these
    policies do; None when both keys are off.

    ``autoaugment``: torchvision's ``AutoAugment(policy)`` (Cubuk et al., CVPR 2019; the
    caller picks the CIFAR10 or IMAGENET policy). ``randaugment``: torchvision's
    ``RandAugment(num_ops=randaugment_n, magnitude=randaugment_m)`` (Cubuk et al., NeurIPS
    2020; magnitude indexes torchvision's 31 bins, 0..30). Both draw from torch's global
    CPU generator, which :func:`apply_seeded` seeds per sample.
    """
    on = policy_keys_on(cfg)  # at most one, with valid n / m: checked by config.validate
    if not on:
        return None
    if on[0] == "autoaugment":
        return T.AutoAugment(policy)
    return T.RandAugment(num_ops=cfg.randaugment_n, magnitude=cfg.randaugment_m)


@dataclass
class DataBundle:
    """What the trainer needs from a data set."""

    train: Dataset
    test: Dataset
    cls_num_list: List[int]  # training images per class, class 0 the most frequent
    name: str
    in_channels: int = 3
    train_eval: Optional[Dataset] = None  # training images with test transforms (features)
    val: Optional[Dataset] = None  # a validation split (test transforms), where there is one
    extra: dict = field(default_factory=dict)
