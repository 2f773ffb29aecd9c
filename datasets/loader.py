"""Data loaders for training and evaluation (single process or one rank of DDP)."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal

from torch.utils.data import DataLoader, Dataset

from datasets.common import EpochSampler

log = logging.getLogger(__name__)


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
