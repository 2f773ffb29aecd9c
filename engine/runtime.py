"""Process set-up shared by every script: logging, the process group and device, seeding,
mixed precision."""
from __future__ import annotations

import contextlib
import os
import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from datasets.workers import stop_worker_processes
from utils import comm
from utils.logger import setup_logging

AutocastFactory = Callable[[], contextlib.AbstractContextManager]


@contextlib.contextmanager
def distributed_session(cfg, local_rank: Optional[int] = None) -> Iterator[comm.DistInfo]:
    """Logging, then the process group (when launched by torchrun / torch.distributed.launch
    or configured by ``world_size`` / ``rank`` / ``dist_url``) and this process's device.
    On exit, whatever ends the block (done, user error, data error, signal, Ctrl-C), data
    loader workers are stopped and the process group is destroyed, so the process exits."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    setup_logging(int(os.environ.get("RANK", "0")))
    settings = comm.DistSettings(cfg.device, cfg.gpu, cfg.world_size, cfg.rank, cfg.dist_url,
                                 cfg.dist_backend)
    info = comm.init_distributed(settings, local_rank)
    setup_logging(info.rank)
    try:
        yield info
    finally:
        stop_worker_processes()
        comm.cleanup_distributed()


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed python, numpy and torch; on CUDA also pick deterministic kernels (or cudnn's
    autotuner when not deterministic). CPU kernels used here are deterministic already."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type != "cuda":
        return
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def autocast_factory(cfg, device: torch.device) -> AutocastFactory:
    """A no-argument callable returning the autocast context of the ``amp`` key (CUDA only)."""
    if cfg.amp == "none" or device.type != "cuda":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(cfg, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """The loss scaler fp16 training needs (None otherwise)."""
    if cfg.amp == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
