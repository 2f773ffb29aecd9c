"""Batch mixing: mixup as in MiSLAS stage 1, and CutMix; the loss of a mixed batch takes its
ARB batch counts from the un-permuted targets.

Which one a run uses is decided in one place, :func:`batch_mixing`: at most one of them (a
run with both ``mixup`` and ``cutmix`` on is refused, rather than switching between them per
batch as timm does: one mixing per run keeps comparisons simple).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch

from config import mixup_enabled
from methods.losses import ClassCountLoss

Mixed = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]


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
                    y_b: torch.Tensor, lam: Union[float, torch.Tensor],
                    class_cnt: Optional[torch.Tensor] = None,
                    features: Optional[torch.Tensor] = None) -> torch.Tensor:
    """lam * L(pred, y_a) + (1 - lam) * L(pred, y_b).

    Both terms use the same counts: ``class_cnt``, or when None the loss's own choice for the
    un-permuted targets ``y_a`` (:meth:`ClassCountLoss.counts_for`); y_b is a permutation of
    y_a, so its classes are all present. ``features`` (the classifier's input) go to a loss
    that ``needs_features``. ``lam`` may be a 0-d tensor (a compiled step takes it as an
    input, so that each batch's draw is not a constant to compile again).
    """
    if class_cnt is None:
        class_cnt = criterion.counts_for(y_a, pred.shape[1])
    extra = {"features": features} if criterion.needs_features else {}
    loss_a = criterion(pred, y_a, class_cnt, **extra)
    if not isinstance(lam, torch.Tensor) and lam == 1.0:
        return loss_a
    return lam * loss_a + (1.0 - lam) * criterion(pred, y_b, class_cnt, **extra)


def cutmix_data(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0,
                rng: Optional[np.random.Generator] = None,
                generator: Optional[torch.Generator] = None) -> Mixed:
    """CutMix (Yun et al., ICCV 2019; ``rand_bbox`` and the training loop of
    github.com/clovaai/CutMix-PyTorch, train.py): lam ~ Beta(alpha, alpha) (1 if alpha <= 0),
    one permutation of the batch, one box of sides int(H sqrt(1 - lam)) x int(W sqrt(1 - lam))
    centred at a uniform pixel and clipped to the image, pasted into every image from its
    partner ``x[perm]``; lam is then re-computed as 1 - (box area) / (H W).

    Draws lam, then the permutation (``generator``), then the centre row and column (``rng``;
    the global numpy stream when None). Returns (mixed, y, y[perm], lam); ``x`` is not
    changed.
    """
    if alpha > 0:
        lam = float(rng.beta(alpha, alpha) if rng is not None else np.random.beta(alpha, alpha))
    else:
        lam = 1.0
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
    h, w = x.shape[-2:]
    top, bottom, left, right = cutmix_box(h, w, lam, rng)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm, ..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, y, y[perm], lam


def cutmix_box(h: int, w: int, lam: float, rng: Optional[np.random.Generator] = None
               ) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) of CutMix's box for ``lam``: sides int(H sqrt(1 - lam)) and
    int(W sqrt(1 - lam)) around a centre drawn uniformly among the pixels (row first), then
    clipped to the image (the reference ``rand_bbox``)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    draw = rng.integers if rng is not None else np.random.randint
    cy, cx = int(draw(h)), int(draw(w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    return top, bottom, left, right


@dataclass(frozen=True)
class BatchMix:
    """The batch mixing of a run: ``kind`` 'mixup' or 'cutmix', with its Beta ``alpha``.
    Calling it mixes a batch with the trainer's random streams: (x, y_a, y_b, lam)."""

    kind: str
    alpha: float

    def __call__(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator,
                 generator: torch.Generator) -> Mixed:
        mix = mixup_data if self.kind == "mixup" else cutmix_data
        return mix(x, y, self.alpha, rng, generator)

    def __str__(self) -> str:
        return f"{self.kind} (alpha {self.alpha})"


def batch_mixing(cfg) -> Optional[BatchMix]:
    """The one place that decides whether training mixes batches: mixup when
    :func:`config.mixup_enabled` (``mixup`` on, ``alpha`` > 0), CutMix when ``cutmix`` is on
    with ``cutmix_alpha`` > 0, else None (both on is refused by config.validate)."""
    alpha = cfg.cutmix_alpha
    cutmix = bool(cfg.cutmix) and alpha > 0
    if mixup_enabled(cfg):
        return BatchMix("mixup", float(cfg.alpha))
    return BatchMix("cutmix", float(alpha)) if cutmix else None
