"""Process-group plumbing: rank queries, the one place that picks the device, rank-0 helpers.

Works without torch.distributed being initialised (single process): every helper then
behaves as rank 0 of a world of size 1.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from utils import slurm
from utils.errors import ConfigError

log = logging.getLogger(__name__)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across ranks (no-op in a single process)."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def on_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a side effect (file write, print) on rank 0 only; other ranks get None."""
    return fn(*args, **kwargs) if is_main_process() else None


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s value of a picklable object on every rank."""
    if not is_dist() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's value of a picklable object, in rank order."""
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (returns ``t``)."""
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, group: Optional[Any] = None) -> torch.Tensor:
    """In-place maximum over the ranks of ``group`` (default: all); returns ``t``."""
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


def host_group() -> Optional[Any]:
    """A gloo process group over all ranks for small host-side agreements (the per-step stop
    flag): under NCCL, agreeing through a CUDA tensor would force a host-device sync every
    step. Every rank must call this at the same point; None means the default group."""
    if is_dist() and get_world_size() > 1 and dist.get_backend() != "gloo":
        return dist.new_group(backend="gloo")
    return None


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers only at the start of each training forward, so after the last step
    every rank holds statistics updated with its own batch; evaluating without this would use
    a different model on each rank from the one rank 0 saves.
    """
    if is_dist() and get_world_size() > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src=src)


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor along dim 0 over ranks in rank order; sizes may differ per rank."""
    if not is_dist() or get_world_size() == 1:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    pad = torch.zeros((m - t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    buf = [torch.empty((m,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
           for _ in sizes]
    dist.all_gather(buf, torch.cat([t, pad]))
    return torch.cat([b[: int(s.item())] for b, s in zip(buf, sizes)])


@dataclass
class DistInfo:
    """Where this process runs: rank, world size, local rank and its device."""

    distributed: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str] = None


@dataclass(frozen=True)
class DistSettings:
    """What the process group and the device are chosen from (the config keys of the same
    names): ``device`` auto | cpu | cuda, ``gpu`` (single process), and the manual set-up
    ``world_size`` / ``rank`` / ``dist_url``, ``dist_backend``."""

    device: str = "auto"
    gpu: Optional[int] = 0
    world_size: int = -1
    rank: int = -1
    dist_url: str = "env://"
    dist_backend: str = "nccl"


def _choose_device(settings: DistSettings, local_rank: int) -> torch.device:
    want = settings.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("key 'device' is 'cuda' but no CUDA device is available; "
                          "accepted here: auto, cpu")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    gpu = settings.gpu if isinstance(settings.gpu, int) else 0
    index = local_rank if local_rank >= 0 else gpu
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(settings: DistSettings, local_rank_arg: Optional[int] = None,
                     timeout_min: float = 30.0) -> DistInfo:
    """Initialise torch.distributed from a launcher's environment (torchrun,
    ``python -m torch.distributed.launch``) or from the yaml keys ``world_size``, ``rank``,
    ``dist_url``, or from an srun step's SLURM variables (:mod:`utils.slurm`); otherwise a
    single process. Picks the device once."""
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_arg if local_rank_arg is not None
                                    else -1))
    # As torchvision's references: a launcher (torchrun, torch.distributed.launch) sets RANK
    # and WORLD_SIZE; its processes always form a group, also a group of one.
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    slurm_task = None if launched else slurm.task_from_env()
    if launched:
        world, rank = env_world, int(os.environ["RANK"])
        init_method = "env://"
        if settings.world_size not in (-1, env_world):
            log.warning("config world_size=%d differs from the launcher's %d processes; "
                        "using the launcher's", settings.world_size, env_world)
    elif slurm_task is not None:  # an srun step of several tasks, without torchrun
        world, rank, local_rank = slurm_task.world_size, slurm_task.rank, slurm_task.local_rank
        init_method = f"tcp://{slurm_task.master_addr}:{slurm_task.master_port}"
        log.info("SLURM task %d of %d (local %d); rendezvous %s", rank, world, local_rank,
                 init_method)
    elif settings.world_size > 1 and settings.dist_url != "env://":
        # rank in 0 .. world_size-1 was checked by load_config
        world, rank, init_method = settings.world_size, settings.rank, settings.dist_url
        if local_rank < 0:
            local_rank = rank % max(torch.cuda.device_count(), 1)
    else:
        device = _choose_device(settings, -1)
        return DistInfo(False, 0, 1, 0, device)

    device = _choose_device(settings, local_rank)
    backend = settings.dist_backend if device.type == "cuda" else "gloo"
    if device.type != "cuda" and settings.dist_backend != "gloo":
        log.info("no CUDA device: using the gloo backend instead of %s", settings.dist_backend)
    dist.init_process_group(backend=backend, init_method=init_method, world_size=world,
                            rank=rank, timeout=datetime.timedelta(minutes=timeout_min))
    log.info("distributed: rank %d of %d, backend %s, device %s", rank, world, backend, device)
    return DistInfo(True, rank, world, max(local_rank, 0), device, backend)


def cleanup_distributed() -> None:
    """Destroy the process group, if any."""
    if is_dist():
        dist.destroy_process_group()
