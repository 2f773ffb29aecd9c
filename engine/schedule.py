"""Learning-rate schedules of the reference recipes (set once per epoch)."""
from __future__ import annotations

import math


def lr_at_epoch(cfg, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``.

    Cosine: lr * 0.5 * (1 + cos(pi * epoch / num_epochs)).
    Step (epoch e = epoch + 1): e <= warmup_epochs: lr * e / warmup_epochs;
    e > lr_steps[1]: lr * 0.01; e > lr_steps[0]: lr * 0.1; else lr.
    """
    if cfg.cos:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.num_epochs))
    e = epoch + 1
    if e <= cfg.warmup_epochs:
        return cfg.lr * e / cfg.warmup_epochs
    steps = list(cfg.lr_steps) + [float("inf")] * (2 - len(cfg.lr_steps))
    if e > steps[1]:
        return cfg.lr * 0.01
    if e > steps[0]:
        return cfg.lr * 0.1
    return cfg.lr
