"""The loaders of a run (single process or one rank of DDP), chosen in one place.

``batch_size`` and ``workers`` in a config are global (as in the reference code) and split
over the ranks here. Training: the on-device pipeline for in-memory data (``device_pipeline``),
the fast image-list path for ImageNet-LT / iNaturalist / Places-LT (``imagelist_pipeline:
fast``, the default), else the per-sample loader. Evaluation: the image-list fast path (its
pixels are the reference transform's) or the per-sample loader. Every choice exposes
``sampler`` (an :class:`EpochSampler`) and ``batch_size`` and yields ``(x, y)`` batches of this
rank's share.
"""
from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset

from datasets.common import DataBundle, EpochSampler
from datasets.device_pipeline import device_loader_for
from datasets.imagelist_pipeline import imagelist_loader_for
from datasets.workers import data_loader, per_rank_workers

log = logging.getLogger(__name__)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The config's global batch size split over ranks (at least 1 per rank)."""
    return max(batch_size // max(world_size, 1), 1)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, seed: int, rank: int,
                 world_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Per-sample loader. Training: shuffled per epoch from (seed, epoch), padded so ranks get
    equal shares. Evaluation: in order, every sample on exactly one rank, no padding.
    ``batch_size`` and ``workers`` are per rank."""
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=train, rank=rank,
                           world_size=world_size, pad=train)
    return data_loader(dataset, sampler, batch_size, workers, pin_memory)


def train_loader(cfg, data: DataBundle, device: torch.device, rank: int, world_size: int):
    """The training loader of a run (see the module docstring)."""
    batch = per_rank_batch(cfg.batch_size, world_size)
    if cfg.batch_size % world_size:
        log.warning("batch_size %d is not divisible by %d processes; each uses %d",
                    cfg.batch_size, world_size, batch)
    workers = per_rank_workers(cfg.workers, world_size)
    if cfg.device_pipeline:
        loader = device_loader_for(data, batch, device, cfg.seed, rank, world_size)
        if loader is not None:
            return loader
        log.warning("device_pipeline: %s is not an in-memory data set; using its loader",
                    cfg.dataset)
    if cfg.imagelist_pipeline == "fast":
        loader = imagelist_loader_for(data, batch, device, cfg.seed, rank, world_size, workers,
                                      split="train", decode=cfg.imagelist_decode)
        if loader is not None:
            return loader
    return build_loader(data.train, batch, train=True, seed=cfg.seed, rank=rank,
                        world_size=world_size, workers=workers,
                        pin_memory=device.type == "cuda")


def eval_loader(cfg, data: DataBundle, split: str, device: torch.device, rank: int,
                world_size: int):
    """An in-order loader over ``data.test`` (``split='test'``) or ``data.train_eval`` (the
    training images with test transforms, ``'train_eval'``) for this rank, every sample on
    exactly one rank, with the config's evaluation batch size (``test_batch_size``, 0 =
    ``batch_size``)."""
    batch = per_rank_batch(cfg.test_batch_size or cfg.batch_size, world_size)
    workers = per_rank_workers(cfg.workers, world_size)
    if cfg.imagelist_pipeline == "fast":
        loader = imagelist_loader_for(data, batch, device, cfg.seed, rank, world_size, workers,
                                      split=split)
        if loader is not None:
            return loader
    dataset = {"test": data.test, "train_eval": data.train_eval}[split]
    return build_loader(dataset, batch, train=False, seed=cfg.seed, rank=rank,
                        world_size=world_size, workers=workers,
                        pin_memory=device.type == "cuda")
