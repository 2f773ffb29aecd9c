"""Data loaders for training and evaluation (single process or one rank of DDP).

``batch_size`` and ``workers`` in a config are global (as in the reference code) and split
over the ranks here, in one place.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal

import torch
from torch.utils.data import DataLoader, Dataset

from datasets.common import EpochSampler
from datasets.device_pipeline import device_loader_for

log = logging.getLogger(__name__)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The config's global batch size split over ranks (at least 1 per rank)."""
    return max(batch_size // max(world_size, 1), 1)


def per_rank_workers(workers: int, world_size: int) -> int:
    """The config's global ``workers`` split over ranks, capped by this machine's cores."""
    cap = os.cpu_count() or 1
    return max(0, min(workers // max(world_size, 1), cap))


def _worker_ignores_stop_signals(_worker_id: int) -> None:
    """Loader workers leave SIGINT / SIGTERM to the main process, which finishes its step and
    saves a checkpoint; workers exit on their own when the main process goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_context() -> multiprocessing.context.BaseContext:
    """How loader workers start: from a fork server, never by forking this process.

    Forking a process that runs other threads (gloo, TensorBoard's writer, the feeder threads
    of another loader) can leave the child blocked for ever in CPython's after-fork clean-up
    (seen: a DDP rank's test-loader worker stuck in ``os.fork`` while training hung). The fork
    server is a fresh single-threaded interpreter that imports torch and the data sets once,
    so workers still start in milliseconds.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # applies to the (per-process) fork server when it first starts
    ctx.set_forkserver_preload(["torch", "datasets"])
    return ctx


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, seed: int, rank: int,
                 world_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Training loader: shuffled per epoch from (seed, epoch), padded so ranks get equal
    shares. Test loader: in order, every sample on exactly one rank, no padding.
    ``batch_size`` is per rank."""
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=train, rank=rank,
                           world_size=world_size, pad=train)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, drop_last=False,
                      worker_init_fn=_worker_ignores_stop_signals if workers > 0 else None,
                      multiprocessing_context=worker_context() if workers > 0 else None)


def train_loader(cfg, data, device: torch.device, rank: int, world_size: int):
    """The training loader of a run: the on-device pipeline for in-memory data when
    ``device_pipeline`` is on (a warning and the per-sample loader for other data sets), else
    the per-sample loader. Every choice exposes ``sampler`` (an :class:`EpochSampler`) and
    yields ``(x, y)`` batches of this rank's share."""
    batch = per_rank_batch(cfg.batch_size, world_size)
    if cfg.batch_size % world_size:
        log.warning("batch_size %d is not divisible by %d processes; each uses %d",
                    cfg.batch_size, world_size, batch)
    if cfg.device_pipeline:
        loader = device_loader_for(data, batch, device, cfg.seed, rank, world_size)
        if loader is not None:
            return loader
        log.warning("device_pipeline: %s is not an in-memory data set; using the per-sample "
                    "loader", cfg.dataset)
    return build_loader(data.train, batch, train=True, seed=cfg.seed, rank=rank,
                        world_size=world_size, workers=per_rank_workers(cfg.workers, world_size),
                        pin_memory=device.type == "cuda")


def eval_loader(cfg, dataset: Dataset, device: torch.device, rank: int,
                world_size: int) -> DataLoader:
    """An in-order loader over ``dataset`` for this rank (every sample on exactly one rank),
    with the config's evaluation batch size (``test_batch_size``, 0 = ``batch_size``)."""
    batch = per_rank_batch(cfg.test_batch_size or cfg.batch_size, world_size)
    return build_loader(dataset, batch, train=False, seed=cfg.seed, rank=rank,
                        world_size=world_size, workers=per_rank_workers(cfg.workers, world_size),
                        pin_memory=device.type == "cuda")


def shutdown_workers(loader) -> None:
    """Stop the worker processes of a loader now.

    Workers are persistent and ignore SIGTERM (so that a scheduler's SIGTERM to the whole
    process group reaches only the main process, which then saves a checkpoint); left to the
    garbage collector, a loader still referenced at exit keeps multiprocessing's exit handler
    waiting on them for ever. Wrappers (the device / image-list pipelines) expose ``shutdown``.
    """
    if loader is None:
        return
    if hasattr(loader, "shutdown"):
        loader.shutdown()
        return
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # torch's own clean shut-down of the worker pool
    if isinstance(loader, DataLoader):
        loader._iterator = None


def stop_worker_processes(timeout: float = 5.0) -> None:
    """Last line of defence at the end of a run, whatever ended it: finalise loaders that are
    no longer referenced (their workers exit cleanly), then kill any worker process still
    alive, so the process can always exit (see :func:`shutdown_workers`)."""
    gc.collect()
    for p in multiprocessing.active_children():
        p.kill()
        p.join(timeout)
