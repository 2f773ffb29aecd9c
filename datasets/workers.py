"""Loader worker processes: how they start, how they are told apart from the main process
on signals, and how they are stopped whatever ends a run.

Every DataLoader of the project is made by :func:`data_loader`, so the settings below hold for
the per-sample path, the image-list fast path and evaluation alike.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
from typing import Callable, Optional

from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h


def per_rank_workers(workers: int, world_size: int) -> int:
    """The config's global ``workers`` split over ranks, capped by this machine's cores."""
    cap = os.cpu_count() or 1
    return max(0, min(workers // max(world_size, 1), cap))


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent ends, however the parent ends (a
    SIGKILL, the OOM killer, a launcher's kill), so loader processes never outlive a run; a
    no-op on other systems.

    Needed because a fork server and its workers keep each other alive once the main process
    is gone: every worker holds the fork server's "client alive" pipe open (CPython passes it to
    each child), and a worker stops only when its parent, the fork server, has gone. (Linux
    signals the death of the thread that started the process: loaders are iterated, and so
    their processes started, on the main thread.)
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: nothing more can be done here
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _worker_init(_worker_id: int) -> None:
    """Loader workers leave SIGINT / SIGTERM to the main process, which finishes its step and
    saves a checkpoint; workers exit when the main process stops them, or with their parent
    (:func:`die_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()


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
    # applies to the (per-process) fork server when it first starts; datasets._forkserver
    # makes it ignore SIGTERM, as the workers do, and end with the main process
    ctx.set_forkserver_preload(["__main__", "torch", "torchvision", "datasets",
                                "datasets._forkserver"])
    return ctx


def data_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int,
                pin_memory: bool, collate_fn: Optional[Callable] = None) -> DataLoader:
    """A DataLoader with this project's worker settings: persistent workers started from the
    fork server, prefetching 4 batches each, ignoring stop signals; no batch dropped."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=pin_memory,
                      persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, drop_last=False,
                      worker_init_fn=_worker_init if workers > 0 else None,
                      multiprocessing_context=worker_context() if workers > 0 else None)


def shutdown_workers(loader) -> None:
    """Stop the worker processes of a loader now.

    Workers are persistent and ignore SIGTERM (so that a scheduler's SIGTERM to the whole
    process group reaches only the main process, which then saves a checkpoint); left to the
    garbage collector, a loader still referenced at exit keeps multiprocessing's exit handler
    waiting on them for ever. Wrappers (the image-list pipeline) expose ``shutdown``.
    """
    if loader is None:
        return
    if not isinstance(loader, DataLoader):
        if hasattr(loader, "shutdown"):
            loader.shutdown()
        return
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # torch's own clean shut-down of the worker pool
    loader._iterator = None


def stop_worker_processes(timeout: float = 5.0) -> None:
    """Last line of defence at the end of a run, whatever ended it: finalise loaders that are
    no longer referenced (their workers exit cleanly), then kill any worker process still
    alive, so the process can always exit (see :func:`shutdown_workers`). Without worker
    processes alive there is nothing to do (and a full garbage collection, a good part of a
    second in a large process, is skipped)."""
    if not multiprocessing.active_children():
        return
    gc.collect()
    for p in multiprocessing.active_children():
        p.kill()
        p.join(timeout)
