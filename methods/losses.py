"""Training losses with one interface, ``loss(logits, target, class_cnt=None)``, and the one
place that decides which class counts a loss uses (:meth:`ClassCountLoss.counts_for`).

ARB-Loss (attraction-repulsion-balanced loss) and its variants are computed in log space:

    L = -log( exp(z_y) / sum_j (n_j / n_y) exp(z_j) )
      = logsumexp_j(z_j + log n_j) - (z_y + log n_y)

i.e. cross-entropy on ``z + log n``. With batch counts, classes absent from the batch have
n_j = 0 (log n_j = -inf) and drop out of the denominator. The published code clamps logits to
[-30, 30] and exponentiates; this form is exact and cannot overflow.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import comm

_REDUCTIONS = ("mean", "sum", "none")


def batch_class_counts(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many samples of each class are in ``target`` (float, on target's device)."""
    return torch.bincount(target, minlength=num_classes).to(torch.float32)


def log_counts(class_cnt: torch.Tensor) -> torch.Tensor:
    """log n with log 0 = -inf (absent classes exert no repulsion)."""
    return torch.log(class_cnt)


def as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 logits (AMP) are upcast; float32 and float64 are kept as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class ClassCountLoss(nn.Module):
    """Base of the losses here: ``forward(logits, target, class_cnt=None)``.

    ``count_mode`` says what class counts the loss uses: 'batch' (counts of the batch's
    targets), 'global' (fixed training-set counts) or None (counts are ignored, e.g. plain
    cross-entropy). :meth:`counts_for` turns that into the tensor the training step passes to
    the loss, its mixup terms and the gradient monitor.
    """

    count_mode: Optional[str] = None
    # DDP, batch counts: all-reduce them so every rank uses the counts of the global batch
    global_batch_counts: bool = False

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def counts_for(self, target: torch.Tensor, num_classes: int) -> Optional[torch.Tensor]:
        """The class counts of a training step whose un-permuted targets are ``target``:
        batch counts (all-reduced over ranks when :attr:`global_batch_counts`), None for the
        other modes (a 'global' loss uses its own buffer). Under mixup both terms use these
        counts: the permuted targets contain the same classes."""
        if self.count_mode != "batch":
            return None
        cnt = batch_class_counts(target, num_classes)
        return comm.all_reduce_sum(cnt) if self.global_batch_counts else cnt

    def log_probs(self, logits: torch.Tensor, target: torch.Tensor,
                  class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-class log-probabilities (B x C) that this loss's NLL is taken of."""
        return F.log_softmax(as_float(logits), dim=1)


class CrossEntropy(ClassCountLoss):
    """Plain softmax cross-entropy with the common ``(logits, target, class_cnt)`` signature."""

    def forward(self, logits, target, class_cnt=None):
        return F.cross_entropy(as_float(logits), target, reduction=self.reduction)


class ARBLoss(ClassCountLoss):
    """ARB-Loss.

    Args:
        reduction: 'mean' | 'sum' | 'none'.
        cls_num_list: training-set counts; when given, they are the default counts
            (``arb_loss_use_global_class_cnt``), otherwise batch counts are used.
        weighted: ``warbloss`` -- multiply each sample's loss by mean_count / n_y, with
            mean_count = batch size / classes present (batch counts) or sum(n) / C (global).
        focal_gamma: ``arbloss_fl`` -- focal form alpha * (1 - p)^gamma * (-log p) on the ARB
            probability p (alpha = 1); 0 disables it.

    ``forward(logits, target, class_cnt=None)``: ``class_cnt=None`` means batch counts of
    ``target`` (or the global counts given at construction); a tensor means those counts.
    """

    def __init__(self, reduction: str = "mean", cls_num_list: Optional[Sequence[int]] = None,
                 weighted: bool = False, focal_gamma: float = 0.0):
        super().__init__(reduction)
        self.weighted = weighted
        self.focal_gamma = focal_gamma
        if cls_num_list is not None:
            self.register_buffer("global_cnt", torch.as_tensor(list(cls_num_list),
                                                               dtype=torch.float32))
            self.count_mode = "global"
        else:
            self.global_cnt = None
            self.count_mode = "batch"

    def counts(self, target: torch.Tensor, num_classes: int,
               class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
        if class_cnt is not None:
            return class_cnt.to(device=target.device)
        if self.global_cnt is not None:
            return self.global_cnt
        return batch_class_counts(target, num_classes)

    def log_probs(self, logits, target, class_cnt=None):
        n = self.counts(target, logits.shape[1], class_cnt)
        z = as_float(logits)
        return F.log_softmax(z + log_counts(n).to(z.dtype), dim=1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
        n = self.counts(target, logits.shape[1], class_cnt)
        z = as_float(logits)
        adjusted = z + log_counts(n).to(z.dtype)
        if not self.weighted and not self.focal_gamma:
            # Fused log-softmax + NLL: the fast path, same cost as cross-entropy.
            return F.cross_entropy(adjusted, target, reduction=self.reduction)
        loss = F.cross_entropy(adjusted, target, reduction="none")
        if self.focal_gamma:
            p = torch.exp(-loss)
            loss = (1.0 - p).pow(self.focal_gamma) * loss
        if self.weighted:
            if self.count_mode == "global" and class_cnt is None:
                mean_count = n.sum() / n.numel()
            else:
                mean_count = n.sum() / (n > 0).sum().clamp(min=1)
            loss = loss * (mean_count / n[target])
        return reduce_loss(loss, self.reduction)
