"""Batched augmentation on the training device for in-memory image data (CIFAR, digits).

The per-sample path (``ArrayImageDataset`` + torchvision transforms + ``DataLoader``) decodes
every image to PIL, crops, flips and normalises it in Python; at CIFAR sizes a GPU consumes
images far faster than a few worker processes can prepare them. :class:`DeviceLoader` keeps the
whole uint8 training set on the device and builds each batch with one gather:

    zero padding by ``pad`` (stored once, padded)  ->  random crop of the original size
    ->  optional horizontal flip  ->  float / 255  ->  (x - mean) / std

The augmentation distribution is that of ``RandomCrop(size, padding=pad)`` (top and left offsets
uniform in [0, 2 * pad], zero fill) followed by ``RandomHorizontalFlip()`` (p = 0.5), and the
sample order is that of the per-sample path: both use the same sampler (by default
:class:`EpochSampler`; any sampler of :mod:`datasets.samplers`) with the same seed. Only the
individual random draws differ (one generator per batch instead of one per sample).
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from datasets.common import ArrayImageDataset, DataBundle, EpochSampler, sample_seed
from datasets.samplers import TrainSampler

__all__ = ["DeviceLoader", "device_loader_for", "batch_seed"]


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the augmentation draws of ``batch`` (counted from the start of ``epoch``) on
    ``rank``.

    Uses the negative index range of :func:`sample_seed` (index -1 is the epoch shuffle,
    indices >= 0 are the per-sample seeds of the PIL path), so no stream is shared with them;
    the rank is folded in so that ranks of a DDP run draw independent crops.
    """
    return sample_seed(seed, epoch, -2 - (batch * world_size + rank))


class DeviceLoader:
    """Training batches of an in-memory uint8 image set, augmented and normalised on ``device``.

    Args:
        images: uint8 array N x H x W x C (C = 1 or 3), as held by ``ArrayImageDataset``.
        targets: N integer labels.
        batch_size: batch size of this rank.
        device: where the images live and the batches are built.
        mean, std: per-channel normalisation (of values scaled to [0, 1], as ``ToTensor``).
        pad: zero padding of the random crop (0 = no crop).
        flip: random horizontal flip with p = 0.5.
        seed: run seed (shuffle order and augmentation).
        rank, world_size: DDP share, as in ``EpochSampler`` (padded to equal shares).
        sampler: the training sampler (:func:`datasets.samplers.build_sampler`, built with
            the same rank and world size); None: ``EpochSampler`` (instance sampling).

    ``sampler`` orders the epoch: call
    ``sampler.set_epoch(e)`` before iterating and set ``sampler.start`` (items of this rank's
    share to skip) to resume inside an epoch. The augmentation of batch b of epoch e is drawn
    from a CPU generator seeded by (seed, epoch, b, rank), b counted from the start of the epoch,
    so resuming with ``sampler.start = k * batch_size`` yields exactly batches k, k + 1, ... of
    the uninterrupted epoch, on any device.

    Iterating yields ``(x, y)``: x float32 B x C x H x W, y int64 B, both on ``device``; the
    last batch may be smaller (no drop_last, as the per-sample loader).
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int], batch_size: int,
                 device, mean: Sequence[float], std: Sequence[float], pad: int, flip: bool,
                 seed: int, rank: int = 0, world_size: int = 1,
                 sampler: Optional[TrainSampler] = None):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N x H x W x C; got {images.dtype} "
                             f"{images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        n, h, w, c = images.shape
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean / std need {c} values (one per channel), got "
                             f"{len(mean)} / {len(std)}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.pad, self.flip = int(pad), bool(flip)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.size = (h, w)
        # Stored padded, channels first: one gather then reads crop windows directly, with no
        # per-batch padding pass. The padded copy costs (1 + 2 pad / H)^2 of the raw set
        # (1.56x for CIFAR: 81 MB for all 50,000 CIFAR-10 training images).
        chw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        p = self.pad
        self.images = F.pad(chw, (p, p, p, p)).contiguous().to(self.device)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64).to(self.device)
        if self.targets.shape != (n,):
            raise ValueError(f"need {n} targets, got shape {tuple(self.targets.shape)}")
        shape = (1, c, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(shape).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(shape).to(self.device)
        self._rows = torch.arange(h, device=self.device)
        self._cols = torch.arange(w, device=self.device)
        self._chan = torch.arange(c, device=self.device).view(1, c, 1, 1)
        if sampler is None:
            sampler = EpochSampler(n, seed=seed, shuffle=True, rank=rank,
                                   world_size=world_size, pad=True)
        self.sampler = sampler

    def __len__(self) -> int:
        """Batches left in this epoch (after ``sampler.start`` items)."""
        return math.ceil(len(self.sampler) / self.batch_size)

    def augment_params(self, epoch: int, batch: int, n: int
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(top, left, flip) of the ``n`` samples of batch ``batch`` of ``epoch``, on the CPU.

        top / left are crop offsets into the padded image, uniform in [0, 2 * pad] like
        ``RandomCrop``'s; flip is a bool mask (all False when flipping is off).
        """
        g = torch.Generator().manual_seed(batch_seed(self.seed, epoch, batch, self.rank,
                                                     self.world_size))
        top = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        left = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        if self.flip:
            flip = torch.rand(n, generator=g) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool)
        return top, left, flip

    def make_batch(self, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                   flip: torch.Tensor) -> torch.Tensor:
        """Crop, flip and normalise the images ``index`` (all tensors on the device)."""
        h, w = self.size
        rows = top[:, None] + self._rows  # B x H, rows of the padded image
        # A flipped crop reads its window right to left: the flip is folded into the gather.
        cols = torch.where(flip[:, None], w - 1 - self._cols, self._cols) + left[:, None]
        crops = self.images[index.view(-1, 1, 1, 1), self._chan, rows[:, None, :, None],
                            cols[:, None, None, :]]
        # Same operation order as ToTensor + Normalize, so the values match to rounding.
        return crops.float().div_(255.0).sub_(self.mean).div_(self.std)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        start = self.sampler.start
        order = self.sampler.indices()  # this rank's share, already past ``start``
        if not order:
            return
        order_dev = torch.as_tensor(order, dtype=torch.int64).to(self.device)
        first = start // self.batch_size  # batch number inside the epoch
        epoch = self.sampler.epoch
        for k, a in enumerate(range(0, len(order), self.batch_size)):
            index = order_dev[a:a + self.batch_size]
            # Drawn on the CPU so the draws do not depend on the device; moved in one copy.
            top, left, flip = self.augment_params(epoch, first + k, index.numel())
            params = torch.stack((top, left, flip.long()))
            top, left, flip = params.to(self.device, non_blocking=True).unbind(0)
            yield self.make_batch(index, top, left, flip.bool()), self.targets[index]


def device_loader_for(data: DataBundle, batch_size: int, device, seed: int, rank: int = 0,
                      world_size: int = 1, sampler: Optional[TrainSampler] = None
                      ) -> Optional[DeviceLoader]:
    """A :class:`DeviceLoader` over ``data.train``, or None when the data set is not an
    in-memory :class:`ArrayImageDataset` with ``mean``, ``std`` and ``augment`` in
    ``data.extra`` (image-list data sets keep the per-sample path)."""
    extra = data.extra or {}
    if not isinstance(data.train, ArrayImageDataset) or not all(
            k in extra for k in ("mean", "std", "augment")):
        return None
    aug = extra["augment"]
    return DeviceLoader(data.train.images, data.train.targets, batch_size, device,
                        extra["mean"], extra["std"], pad=int(aug.get("pad", 0)),
                        flip=bool(aug.get("flip", False)), seed=seed, rank=rank,
                        world_size=world_size, sampler=sampler)
