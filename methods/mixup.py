"""Mixup as in MiSLAS stage 1, with ARB batch counts taken from the un-permuted targets."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from methods.losses import ClassCountLoss


def mixup_data(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0,
               rng: Optional[np.random.Generator] = None,
               generator: Optional[torch.Generator] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """lam ~ Beta(alpha, alpha) (1 if alpha <= 0), one permutation of the batch;
    returns (lam * x + (1 - lam) * x[perm], y, y[perm], lam) on the batch's device."""
    if alpha > 0:
        lam = float(rng.beta(alpha, alpha) if rng is not None else np.random.beta(alpha, alpha))
    else:
        lam = 1.0
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, y, y[perm], lam


def mixup_criterion(criterion: ClassCountLoss, pred: torch.Tensor, y_a: torch.Tensor,
                    y_b: torch.Tensor, lam: float,
                    class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """lam * L(pred, y_a) + (1 - lam) * L(pred, y_b).

    Both terms use the same counts: ``class_cnt``, or when None the loss's own choice for the
    un-permuted targets ``y_a`` (:meth:`ClassCountLoss.counts_for`); y_b is a permutation of
    y_a, so its classes are all present.
    """
    if class_cnt is None:
        class_cnt = criterion.counts_for(y_a, pred.shape[1])
    loss_a = criterion(pred, y_a, class_cnt)
    if lam == 1.0:
        return loss_a
    return lam * loss_a + (1.0 - lam) * criterion(pred, y_b, class_cnt)
