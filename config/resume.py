"""Which config changes still continue a run (its own folder) and which make another run.

A run folder belongs to one run of one config: resuming continues in the checkpoint's folder
only when the config is the same up to :data:`RESUME_SAFE_KEYS` (:func:`config_differences`);
otherwise the trainer starts a new folder (engine.checkpointer.resume_checkpoint).
"""
from __future__ import annotations

from typing import Any, List

# The resume-safe keys: a run resumed with other values of these is still the same run and
# continues in its folder. Each only says where files are, how the work is spread over
# processes, devices and kernels, or how often progress is printed, evaluated and analysed;
# none changes the data a step sees, the network, the loss, the optimiser, the schedule or the
# seed:
#   which checkpoint and how to read it: resume, legacy_checkpoint
#   where things are: output_dir, data_path, download, pretrained_path (read only when a
#     network is built fresh; a resumed run takes every weight from the checkpoint)
#   processes and hardware: workers (every sample's augmentation is seeded by its index and
#     epoch, not by the worker), device, gpu, world_size, rank, dist_url, dist_backend,
#     distributed, multiprocessing_distributed; kernels: deterministic, channels_last,
#     compile, imagelist_decode (the same JPEG decoded on the CPU or the GPU)
#   reporting: print_freq, eval_freq, test_batch_size, nc_freq, plot_freq, grad_stats_freq
# ``num_epochs`` may also grow on a schedule that does not depend on it (a run extended).
# Every other key is part of the run (a hyper-parameter, the data set or its lists, the
# sampler, the seed, mixed precision and the data pipelines, which change the numbers, the
# post-hoc evaluation keys, which change the metrics that pick model_best, and the run's name
# and folder layout): a checkpoint resumed
# with another value starts a new run folder.
RESUME_SAFE_KEYS = frozenset([
    "resume", "legacy_checkpoint",
    "output_dir", "data_path", "download", "pretrained_path",
    "workers", "device", "gpu", "world_size", "rank", "dist_url", "dist_backend",
    "distributed", "multiprocessing_distributed",
    "deterministic", "channels_last", "compile", "imagelist_decode",
    "print_freq", "eval_freq", "test_batch_size", "nc_freq", "plot_freq", "grad_stats_freq",
])


def _plain(v: Any) -> Any:
    """Lists and tuples compare as lists (yaml gives lists, overrides may give tuples)."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def schedule_spans_num_epochs(cfg) -> bool:
    """Whether the learning rate of an epoch depends on ``num_epochs``: the cosine schedule
    (``cos``) and stage 2 (always cosine). The step schedule does not: a run on it may be
    extended in its own folder."""
    return bool(cfg.cos) or cfg.mode == "stage2"


def config_differences(saved, cfg) -> List[str]:
    """``key old -> new`` for every key of ``cfg`` whose value differs from the ``saved``
    config (both config nodes), ignoring :data:`RESUME_SAFE_KEYS` and a larger
    ``num_epochs`` on a schedule that does not depend on it (:func:`schedule_spans_num_epochs`:
    more epochs on a cosine schedule re-spread the past epochs' learning rates, so that is
    another run); [] when ``cfg`` continues the saved run."""
    out = []
    for key in cfg:
        if key in RESUME_SAFE_KEYS:
            continue
        old, new = _plain(saved.get(key)), _plain(cfg[key])
        if (key == "num_epochs" and isinstance(old, int) and new >= old
                and not schedule_spans_num_epochs(cfg)):
            continue
        if old != new:
            out.append(f"{key} {old!r} -> {new!r}")
    return out
