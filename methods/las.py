"""MiSLAS label-aware smoothing (optionally on ARB log-probabilities)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from methods.losses import ClassCountLoss, CrossEntropy, reduce_loss


def las_epsilons(cls_num_list: Sequence[int], smooth_head: float, smooth_tail: float,
                 shape: str = "concave", power: float = 2.0) -> torch.Tensor:
    """Per-class smoothing eps_c = tail + (head - tail) * g(x_c),
    x_c = (n_c - n_min) / (n_max - n_min).

    g: concave sin(x pi / 2), linear x, exp x^power; convex follows the MiSLAS code:
    head + (head - tail) * sin(1.5 pi + x pi / 2).
    """
    n = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    span = (n.max() - n.min()).item()
    x = (n - n.min()) / span if span > 0 else torch.ones_like(n)
    h, t = smooth_head, smooth_tail
    if shape == "concave":
        eps = t + (h - t) * torch.sin(x * math.pi / 2)
    elif shape == "linear":
        eps = t + (h - t) * x
    elif shape == "convex":
        eps = h + (h - t) * torch.sin(1.5 * math.pi + x * math.pi / 2)
    elif shape == "exp":
        eps = t + (h - t) * x.pow(power)
    else:
        raise ValueError(f"unknown LAS shape {shape!r}")
    return eps.float()


class LabelAwareSmoothing(ClassCountLoss):
    """loss = (1 - eps_y) * NLL + eps_y * mean_j(-log p_j).

    ``base`` gives the log-probabilities: cross-entropy (MiSLAS) or an :class:`ARBLoss`
    (ARB + LAS). With ARB batch counts, classes absent from the batch have p_j = 0; the
    uniform part then averages over the classes present (the only finite terms).
    """

    def __init__(self, cls_num_list: Sequence[int], smooth_head: float, smooth_tail: float,
                 shape: str = "concave", power: float = 2.0,
                 base: Optional[ClassCountLoss] = None, reduction: str = "mean"):
        super().__init__(reduction)
        self.base = base if base is not None else CrossEntropy()
        self.count_mode = self.base.count_mode
        self.register_buffer("eps", las_epsilons(cls_num_list, smooth_head, smooth_tail,
                                                 shape, power))

    def counts_for(self, target: torch.Tensor, num_classes: int) -> Optional[torch.Tensor]:
        """The base loss decides (ARB batch counts, or none)."""
        return self.base.counts_for(target, num_classes)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def forward(self, logits, target, class_cnt=None):
        logp = self.base.log_probs(logits, target, class_cnt)
        nll = -logp.gather(1, target[:, None]).squeeze(1)
        finite = torch.isfinite(logp)
        uniform = -torch.where(finite, logp, torch.zeros_like(logp)).sum(1) / finite.sum(1)
        eps = self.eps.to(logits.device)[target]
        return reduce_loss((1.0 - eps) * nll + eps * uniform, self.reduction)
