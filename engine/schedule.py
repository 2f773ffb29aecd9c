"""Learning-rate schedules of the reference recipes (set once per epoch)."""
from __future__ import annotations

import math
from typing import List


def step_factors(cfg) -> List[float]:
    """The lr factor in force after each of ``lr_steps``: ``lr_factors``, or by default
    0.1, 0.01, 0.001, ... (MiSLAS / ARB-Loss: x0.1 after the first step, x0.01 after the
    second)."""
    if cfg.lr_factors:
        return [float(f) for f in cfg.lr_factors]
    return [float(f"1e-{k + 1}") for k in range(len(cfg.lr_steps))]  # the literals 0.1, 0.01


def lr_at_epoch(cfg, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``.

    Cosine: lr * 0.5 * (1 + cos(pi * epoch / num_epochs)).
    Step (epoch e = epoch + 1): e <= warmup_epochs: lr * e / warmup_epochs; else lr times the
    factor of the last step s of ``lr_steps`` with e > s (:func:`step_factors`), or lr before
    the first. With lr_steps [160, 180] and lr_factors [0.01, 0.0001] this is LDAM-DRW's
    ``adjust_learning_rate`` (cifar_train.py); with the default factors, MiSLAS's / ARB-Loss's.
    """
    if cfg.cos:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.num_epochs))
    e = epoch + 1
    if e <= cfg.warmup_epochs:
        return cfg.lr * e / cfg.warmup_epochs
    factor = 1.0
    for step, f in zip(cfg.lr_steps, step_factors(cfg)):
        if e > step:
            factor = f
    return cfg.lr * factor
