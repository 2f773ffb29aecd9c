"""The loaders of a run (single process or one rank of DDP), chosen in one place.

``batch_size`` and ``workers`` in a config are global (as in the reference code) and split
over the ranks here. Training: the on-device pipeline for in-memory data (``device_pipeline``),
the fast image-list path for ImageNet-LT / iNaturalist / Places-LT (``imagelist_pipeline:
fast``, the default), else the per-sample loader; every training path draws its order from
the configured ``sampler`` (:mod:`datasets.samplers`). AutoAugment / RandAugment run only in
the per-sample transforms: the device pipeline refuses them, the image-list fast path gives
way to the per-sample path. Evaluation: the image-list fast path (its pixels are the reference
transform's) or the per-sample loader, in order. Every choice exposes ``sampler``
(:class:`EpochSampler` or a :class:`datasets.samplers.ClassSampler`) and ``batch_size`` and
yields ``(x, y)`` batches of this rank's share.
"""
from __future__ import annotations

import logging
from typing import Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset

from datasets.common import DataBundle, EpochSampler, policy_keys_on
from datasets.device_pipeline import device_loader_for
from datasets.imagelist import ImageListDataset
from datasets.imagelist_pipeline import imagelist_loader_for
from datasets.samplers import TrainSampler, build_sampler
from datasets.workers import data_loader, per_rank_workers
from utils.errors import DataError

log = logging.getLogger(__name__)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The config's global batch size split over ranks (at least 1 per rank)."""
    return max(batch_size // max(world_size, 1), 1)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, seed: int, rank: int,
                 world_size: int, workers: int, pin_memory: bool,
                 sampler: Optional[TrainSampler] = None) -> DataLoader:
    """Per-sample loader. Training: ``sampler``, by default shuffled per epoch from (seed,
    epoch), padded so ranks get equal shares. Evaluation: in order, every sample on exactly
    one rank, no padding. ``batch_size`` and ``workers`` are per rank."""
    if sampler is None:
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=train, rank=rank,
                               world_size=world_size, pad=train)
    elif not train:
        raise ValueError("evaluation loaders keep the in-order EpochSampler")
    return data_loader(dataset, sampler, batch_size, workers, pin_memory)


def train_sampler(cfg, dataset: Dataset, rank: int, world_size: int,
                  kind: Optional[str] = None) -> TrainSampler:
    """The training sampler ``kind`` (default: the config's ``sampler``) over ``dataset`` for
    this rank, drawn from ``cfg.seed`` (``progressive`` runs over ``cfg.num_epochs``)."""
    kind = cfg.sampler if kind is None else kind
    if kind == "instance":
        targets = range(len(dataset))  # only the length is used
    else:
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise DataError(f"sampler {kind!r} needs the training labels; "
                            f"{type(dataset).__name__} has no 'targets'")
    return build_sampler(kind, targets, seed=cfg.seed, rank=rank, world_size=world_size,
                         num_epochs=cfg.num_epochs)


def train_loader(cfg, data: DataBundle, device: torch.device, rank: int, world_size: int,
                 sampler: Union[str, TrainSampler, None] = None):
    """The training loader of a run (see the module docstring). ``sampler``: a sampler kind
    or a sampler built for this rank (:func:`train_sampler`), replacing the config's."""
    batch = per_rank_batch(cfg.batch_size, world_size)
    if cfg.batch_size % world_size:
        log.warning("batch_size %d is not divisible by %d processes; each uses %d",
                    cfg.batch_size, world_size, batch)
    workers = per_rank_workers(cfg.workers, world_size)
    if sampler is None or isinstance(sampler, str):
        sampler = train_sampler(cfg, data.train, rank, world_size, sampler)
    if not isinstance(sampler, EpochSampler):
        log.info("training sampler: %s, %d samples per rank and epoch",
                 type(sampler).__name__, len(sampler))
    n_train = len(data.train)
    if batch * world_size > n_train:
        log.warning("batch_size %d is larger than the %d training images: one step an epoch "
                    "(the whole training set as one batch)", cfg.batch_size, n_train)
    # the config check (config.validate) refuses a policy without a per-image transform
    policy = bool(policy_keys_on(cfg))
    if cfg.device_pipeline:
        loader = device_loader_for(data, batch, device, cfg.seed, rank, world_size, sampler)
        if loader is not None:
            return loader
        log.warning("device_pipeline: %s is not an in-memory data set; using its loader",
                    cfg.dataset)
    if cfg.imagelist_pipeline == "fast":
        if policy and isinstance(data.train, ImageListDataset):
            # the fast path applies ColorJitter on the device, after the workers; the policy
            # must follow it, so only the reference transform keeps the recipe's order
            log.info("autoaugment / randaugment: training images take the reference "
                     "per-image transform (the fast image-list path cannot apply them)")
        else:
            loader = imagelist_loader_for(data, batch, device, cfg.seed, rank, world_size,
                                          workers, split="train", decode=cfg.imagelist_decode,
                                          sampler=sampler, image_size=cfg.image_size,
                                          resize_size=cfg.resize_size)
            if loader is not None:
                return loader
    return build_loader(data.train, batch, train=True, seed=cfg.seed, rank=rank,
                        world_size=world_size, workers=workers,
                        pin_memory=device.type == "cuda", sampler=sampler)


def eval_loader(cfg, data: DataBundle, split: str, device: torch.device, rank: int,
                world_size: int):
    """An in-order loader over ``data.test`` (``split='test'``), ``data.val`` (``'val'``) or
    ``data.train_eval`` (the training images with test transforms, ``'train_eval'``) for this
    rank, every sample on exactly one rank, with the config's evaluation batch size
    (``test_batch_size``, 0 = ``batch_size``)."""
    batch = per_rank_batch(cfg.test_batch_size or cfg.batch_size, world_size)
    workers = per_rank_workers(cfg.workers, world_size)
    if cfg.imagelist_pipeline == "fast":
        loader = imagelist_loader_for(data, batch, device, cfg.seed, rank, world_size, workers,
                                      split=split, image_size=cfg.image_size,
                                      resize_size=cfg.resize_size)
        if loader is not None:
            return loader
    return build_loader(getattr(data, split), batch, train=False, seed=cfg.seed, rank=rank,
                        world_size=world_size, workers=workers,
                        pin_memory=device.type == "cuda")
