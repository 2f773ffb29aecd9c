"""Training losses with one interface, ``loss(logits, target, class_cnt=None)``, and the one
place that decides which class counts a loss uses (:meth:`ClassCountLoss.counts_for`).

ARB-Loss (attraction-repulsion-balanced loss) and its variants are computed in log space:

    L = -log( exp(z_y) / sum_j (n_j / n_y) exp(z_j) )
      = logsumexp_j(z_j + log n_j) - (z_y + log n_y)

i.e. cross-entropy on ``z + log n``. With batch counts, classes absent from the batch have
n_j = 0 (log n_j = -inf) and drop out of the denominator. The published code clamps logits to
[-30, 30] and exponentiates; this form is exact and cannot overflow.

The re-balancing baselines (:class:`BalancedSoftmax`, :class:`LogitAdjustedLoss`,
:class:`LDAMLoss`, :class:`FocalLoss`, :class:`ClassBalancedLoss`, :class:`LabelSmoothingLoss`
and the deferred re-weighting wrapper :class:`DeferredReweighting`) share the interface, so
mixup, DDP and the gradient monitor work with each of them. With training-set counts, ARB-Loss,
Balanced Softmax and logit adjustment with tau = 1 are the same loss, and here the same
floating-point operations: cross-entropy on ``z + log n`` with ``log n`` taken in float64.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import comm
from utils.errors import DataError

_REDUCTIONS = ("mean", "sum", "none")


def batch_class_counts(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many samples of each class are in ``target`` (float, on target's device).

    A scatter-add into a fixed-size vector, not ``torch.bincount``: its output size depends on
    the largest label, which on a GPU costs a device-to-host synchronisation and breaks a
    compiled / graph-captured step (``compile_mode``)."""
    ones = torch.ones_like(target, dtype=torch.float32)
    return torch.zeros(num_classes, dtype=torch.float32, device=target.device).scatter_add_(
        0, target, ones)


def log_counts(class_cnt: torch.Tensor) -> torch.Tensor:
    """log n with log 0 = -inf (absent classes exert no repulsion)."""
    return torch.log(class_cnt)


def training_counts(cls_num_list: Sequence[int], what: str) -> torch.Tensor:
    """The training-set counts as a float64 tensor; every class needs at least one image
    (``what``, the loss, names itself in the error)."""
    n = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    if n.numel() == 0 or bool((n <= 0).any()):
        raise DataError(f"{what} needs at least one training image of every class; "
                        f"training counts: {list(cls_num_list)}")
    return n


def class_balanced_weights(cls_num_list: Sequence[int], beta: float) -> torch.Tensor:
    """Class-balanced weights of Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019 (Eq. 4): w_j = (1 - beta) / (1 - beta^n_j), the inverse effective
    number of samples, normalised so that sum_j w_j = C (as their code,
    github.com/richardaecn/class-balanced-loss src/cifar_main.py, and LDAM-DRW's
    cifar_train.py do). beta = 0 gives w = 1; beta -> 1 gives w ~ 1 / n. Float64, length C.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = training_counts(cls_num_list, "class-balanced weighting")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return w / w.sum() * n.numel()


def as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 logits (AMP) are upcast; float32 and float64 are kept as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_modulation(nll: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - p)^gamma * nll with p = exp(-nll) (focal loss of Lin et al., ICCV 2017).

    1 - p is taken as -expm1(-nll), exact also for p near 1; it is clamped away from 0 so that
    gamma < 1 has a finite gradient where p = 1 (there nll = 0 and the product is 0 anyway).
    """
    if gamma == 0:
        return nll
    one_minus_p = (-torch.expm1(-nll)).clamp_min(torch.finfo(nll.dtype).tiny)
    return one_minus_p.pow(gamma) * nll


class ClassCountLoss(nn.Module):
    """Base of the losses here: ``forward(logits, target, class_cnt=None)``.

    ``count_mode`` says what class counts the loss uses: 'batch' (counts of the batch's
    targets), 'global' (fixed training-set counts) or None (counts are ignored, e.g. plain
    cross-entropy). :meth:`counts_for` turns that into the tensor the training step passes to
    the loss, its mixup terms and the gradient monitor. Only ARB-Loss reads ``class_cnt``;
    the other losses keep the training-set counts they were built with.

    :meth:`set_epoch` is called by the trainer before the first step of every epoch
    (including the first epoch after a resume); losses with an epoch schedule (DRW) use it.
    """

    count_mode: Optional[str] = None
    # DDP, batch counts: all-reduce them so every rank uses the counts of the global batch
    global_batch_counts: bool = False
    # the loss is a function of the classifier's input h too: the training step passes it as
    # ``features=`` (the dot regression)
    needs_features: bool = False

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

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to be trained; nothing to do for most losses."""

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
    With global counts this is :class:`BalancedSoftmax` (same operations, same numbers).
    """

    def __init__(self, reduction: str = "mean", cls_num_list: Optional[Sequence[int]] = None,
                 weighted: bool = False, focal_gamma: float = 0.0):
        super().__init__(reduction)
        self.weighted = weighted
        self.focal_gamma = focal_gamma
        if cls_num_list is not None:
            n = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
            self.register_buffer("global_cnt", n.float())
            # log n in float64, cast to the logits' dtype: the offset of BalancedSoftmax
            self.register_buffer("global_log_cnt", torch.log(n))
            self.count_mode = "global"
        else:
            self.global_cnt = None
            self.global_log_cnt = None
            self.count_mode = "batch"

    def counts(self, target: torch.Tensor, num_classes: int,
               class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
        if class_cnt is not None:
            return class_cnt.to(device=target.device)
        if self.global_cnt is not None:
            return self.global_cnt
        return batch_class_counts(target, num_classes)

    def adjusted_logits(self, logits: torch.Tensor, target: torch.Tensor,
                        class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z + log n for the counts this step uses."""
        z = as_float(logits)
        if class_cnt is None and self.global_log_cnt is not None:
            return z + self.global_log_cnt.to(z.dtype)
        return z + log_counts(self.counts(target, z.shape[1], class_cnt)).to(z.dtype)

    def log_probs(self, logits, target, class_cnt=None):
        return F.log_softmax(self.adjusted_logits(logits, target, class_cnt), dim=1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
        adjusted = self.adjusted_logits(logits, target, class_cnt)
        if not self.weighted and not self.focal_gamma:
            # Fused log-softmax + NLL: the fast path, same cost as cross-entropy.
            return F.cross_entropy(adjusted, target, reduction=self.reduction)
        loss = F.cross_entropy(adjusted, target, reduction="none")
        if self.focal_gamma:
            p = torch.exp(-loss)
            loss = (1.0 - p).pow(self.focal_gamma) * loss
        if self.weighted:
            n = self.counts(target, logits.shape[1], class_cnt)
            if self.count_mode == "global" and class_cnt is None:
                mean_count = n.sum() / n.numel()
            else:
                mean_count = n.sum() / (n > 0).sum().clamp(min=1)
            loss = loss * (mean_count / n[target])
        return reduce_loss(loss, self.reduction)


class LogitAdjustedLoss(ClassCountLoss):
    """Logit-adjusted softmax cross-entropy, Menon et al., "Long-tail learning via logit
    adjustment", ICLR 2021 (Eq. 10):

        L = -log( exp(z_y + tau log pi_y) / sum_j exp(z_j + tau log pi_j) ),  pi = n / sum(n)

    with the training-set class prior pi. The term tau log(sum n) is the same for every class
    and cancels in the softmax, so the code adds tau * log n_j: with tau = 1 this is
    :class:`BalancedSoftmax` (and ARB-Loss with global counts) operation for operation.
    """

    count_mode = "global"

    def __init__(self, cls_num_list: Sequence[int], tau: float = 1.0,
                 reduction: str = "mean"):
        super().__init__(reduction)
        self.tau = float(tau)
        n = training_counts(cls_num_list, type(self).__name__)
        self.register_buffer("offset", self.tau * torch.log(n))  # float64, C

    def adjusted_logits(self, logits: torch.Tensor) -> torch.Tensor:
        z = as_float(logits)
        return z + self.offset.to(z.dtype)

    def log_probs(self, logits, target, class_cnt=None):
        return F.log_softmax(self.adjusted_logits(logits), dim=1)

    def forward(self, logits, target, class_cnt=None):
        return F.cross_entropy(self.adjusted_logits(logits), target, reduction=self.reduction)


class BalancedSoftmax(LogitAdjustedLoss):
    """Balanced Softmax, Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual
    Recognition", NeurIPS 2020 (Eq. 4), with training-set counts n:

        L = -log( n_y exp(z_y) / sum_j n_j exp(z_j) ) = CE(z + log n, y)

    Algebraically ARB-Loss with global counts (-log exp(z_y) / sum_j (n_j / n_y) exp(z_j))
    and :class:`LogitAdjustedLoss` with tau = 1.
    """

    def __init__(self, cls_num_list: Sequence[int], reduction: str = "mean"):
        super().__init__(cls_num_list, tau=1.0, reduction=reduction)


class LDAMLoss(ClassCountLoss):
    """Label-distribution-aware margin loss, Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019 (Eq. 13):

        L = -log( e^{s (z_y - m_y)} / (e^{s (z_y - m_y)} + sum_{j != y} e^{s z_j}) ),
        m_j = K / n_j^(1/4),  K such that max_j m_j = max_m

    i.e. cross-entropy on s * (z - m_y e_y). Defaults max_m = 0.5, s = 30, as the authors'
    code (github.com/kaidic/LDAM-DRW: losses.py LDAMLoss, built with max_m=0.5, s=30 in
    cifar_train.py). That code pairs LDAM with a cosine classifier (``NormedLinear``, chosen
    by ``use_norm`` for LDAM); here the network's classifier is used as it is.
    """

    count_mode = "global"

    def __init__(self, cls_num_list: Sequence[int], max_m: float = 0.5, s: float = 30.0,
                 reduction: str = "mean"):
        super().__init__(reduction)
        if not (max_m > 0 and s > 0):
            raise ValueError(f"LDAM needs max_m > 0 and s > 0, got {max_m}, {s}")
        m = training_counts(cls_num_list, "LDAM").pow(-0.25)
        self.register_buffer("margins", m * (max_m / m.max()))  # float64, C
        self.s = float(s)

    def margin_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """s * (z - m_y e_y): the target logit lowered by its class margin, then scaled."""
        z = as_float(logits)
        m = self.margins.to(z.dtype)[target]
        shifted = z - F.one_hot(target, z.shape[1]).to(z.dtype) * m[:, None]
        return self.s * shifted

    def log_probs(self, logits, target, class_cnt=None):
        return F.log_softmax(self.margin_logits(logits, target), dim=1)

    def forward(self, logits, target, class_cnt=None):
        return F.cross_entropy(self.margin_logits(logits, target), target,
                               reduction=self.reduction)


class FocalLoss(ClassCountLoss):
    """Softmax focal loss, Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017
    (Eq. 4 with alpha = 1), multi-class form as in LDAM-DRW's losses.py:

        L = -(1 - p_y)^gamma log p_y,   p = softmax(z)

    gamma = 0 is cross-entropy.
    """

    def __init__(self, gamma: float = 2.0, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits, target, class_cnt=None):
        nll = F.cross_entropy(as_float(logits), target, reduction="none")
        return reduce_loss(focal_modulation(nll, self.gamma), self.reduction)


class ClassBalancedLoss(ClassCountLoss):
    """Class-balanced loss, Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019 (Eq. 5):

        L = w_y * l(z, y),   w_j = (1 - beta) / (1 - beta^n_j), normalised to sum_j w_j = C

    (:func:`class_balanced_weights`) with l the softmax cross-entropy (``base='softmax'``) or
    the softmax focal loss -(1 - p_y)^gamma log p_y (``base='focal'``). 'mean' averages over
    the batch, as their code's ``tf.losses.softmax_cross_entropy(weights=w_y)`` does. Their
    focal variant is the sigmoid focal loss; the softmax form here keeps one probability
    model (argmax, calibration) for every loss of this module.
    """

    def __init__(self, cls_num_list: Sequence[int], beta: float = 0.9999,
                 base: str = "softmax", gamma: float = 2.0, reduction: str = "mean"):
        super().__init__(reduction)
        if base not in ("softmax", "focal"):
            raise ValueError(f"class-balanced base must be 'softmax' or 'focal', got {base!r}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.base, self.gamma, self.beta = base, float(gamma), float(beta)
        self.register_buffer("weights", class_balanced_weights(cls_num_list, beta))

    def forward(self, logits, target, class_cnt=None):
        z = as_float(logits)
        loss = F.cross_entropy(z, target, reduction="none")
        if self.base == "focal":
            loss = focal_modulation(loss, self.gamma)
        return reduce_loss(self.weights.to(z.dtype)[target] * loss, self.reduction)


class LabelSmoothingLoss(ClassCountLoss):
    """Cross-entropy with label smoothing, Szegedy et al., "Rethinking the Inception
    Architecture for Computer Vision", CVPR 2016 (Sec. 7): the target (1 - eps) e_y + eps / C,

        L = (1 - eps) (-log p_y) + eps * mean_j (-log p_j),   p = softmax(z)

    (``F.cross_entropy(label_smoothing=eps)``).
    """

    def __init__(self, epsilon: float = 0.1, reduction: str = "mean"):
        super().__init__(reduction)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"label smoothing epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, logits, target, class_cnt=None):
        return F.cross_entropy(as_float(logits), target, reduction=self.reduction,
                               label_smoothing=self.epsilon)


class DeferredReweighting(ClassCountLoss):
    """Deferred re-weighting (DRW), Cao et al., NeurIPS 2019 (Sec. 3.3, Algorithm 1): ``base``
    unweighted for the (0-based) epochs before ``start_epoch``, then each sample weighted by
    the class-balanced weight w_y of :func:`class_balanced_weights` (beta = 0.9999).

    As in LDAM-DRW's cifar_train.py (``idx = epoch // 160``, weights passed to
    ``F.cross_entropy(weight=...)``): from 0-based epoch ``start_epoch`` on, 'mean' is the
    weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}; 'sum' is sum_i w_{y_i} l_i.

    ``base`` must have reduction 'none' (per-sample losses).
    """

    def __init__(self, base: ClassCountLoss, cls_num_list: Sequence[int], start_epoch: int,
                 beta: float = 0.9999, reduction: str = "mean"):
        super().__init__(reduction)
        if base.reduction != "none":
            raise ValueError("DeferredReweighting needs a base loss with reduction 'none'")
        self.base = base
        self.count_mode = base.count_mode
        self.start_epoch = int(start_epoch)
        self.beta = float(beta)
        self.register_buffer("weights", class_balanced_weights(cls_num_list, beta))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    @property
    def active(self) -> bool:
        """Whether the re-weighting is on in the current epoch."""
        return self.epoch >= self.start_epoch

    def counts_for(self, target: torch.Tensor, num_classes: int) -> Optional[torch.Tensor]:
        return self.base.counts_for(target, num_classes)

    def log_probs(self, logits, target, class_cnt=None):
        return self.base.log_probs(logits, target, class_cnt)

    def forward(self, logits, target, class_cnt=None):
        loss = self.base(logits, target, class_cnt)
        if not self.active:
            return reduce_loss(loss, self.reduction)
        w = self.weights.to(loss.dtype)[target]
        if self.reduction == "mean":
            return (w * loss).sum() / w.sum()
        return reduce_loss(w * loss, self.reduction)


def etf_scales(class_cnt: torch.Tensor) -> torch.Tensor:
    """Yang et al.'s ``produce_Ew`` (github.com/NeuralCollapseApplications/ImbalancedLearning,
    methods.py), vectorised: sqrt(gamma / n_c) with gamma = (batch size) / (classes present)
    for every class present in the batch, 1 for the others."""
    cnt = class_cnt.float()
    present = cnt > 0
    gamma = cnt.sum() / present.sum().clamp_min(1)
    return torch.where(present, torch.sqrt(gamma / cnt.clamp_min(1)), torch.ones_like(cnt))


class DotRegressionLoss(ClassCountLoss):
    """Dot regression of Yang et al., "Inducing Neural Collapse in Imbalanced Learning: Do We
    Really Need a Learnable Classifier at the End of Deep Neural Network?", NeurIPS 2022, for the
    fixed ETF classifier (their methods.py ``dot_loss`` with ``reg_dot_loss``, train.py):

        L = 1/2 mean_i (h_i . w_{y_i} - ||w_{y_i}|| ||h_i||)^2 / ||h_i||  (+ lambda mean_i ||h_i||)

    with h the classifier's input (BatchNorm'd, L2-normalised, :class:`models.heads.
    ETFClassifier`), both norms taken without gradient (||h|| clamped to 1e-8), and w_y the
    ETF vector of class y scaled, with ``given_ew`` (their default ``GivenEw: True``), by
    :func:`etf_scales` of the batch counts (one scaling per step, from the un-permuted targets
    under mixup, as theirs). ``etf`` is the K x d matrix of class vectors (the classifier's
    fixed rows, copied: it never changes). Training only; evaluation uses the plain ETF logits.
    """

    count_mode = "batch"
    needs_features = True

    def __init__(self, etf: torch.Tensor, given_ew: bool = True, reg_lambda: float = 0.0,
                 reduction: str = "mean"):
        super().__init__(reduction)
        if reg_lambda < 0:
            raise ValueError(f"dot regression lambda must be >= 0, got {reg_lambda}")
        self.register_buffer("etf", etf.detach().clone().float())
        self.given_ew, self.reg_lambda = bool(given_ew), float(reg_lambda)

    def forward(self, logits, target, class_cnt=None, features=None):
        if features is None:
            raise ValueError("the dot regression needs the classifier's input: features=")
        h = as_float(features)
        w = self.etf.to(h.dtype)[target]
        if self.given_ew:
            if class_cnt is None:
                class_cnt = batch_class_counts(target, self.etf.shape[0])
            w = w * etf_scales(class_cnt).to(h.dtype)[target][:, None]
        dot = (h * w).sum(dim=1)
        with torch.no_grad():
            w_len = w.norm(dim=1)
            h_len = h.norm(dim=1).clamp_min(1e-8)
        loss = 0.5 * (dot - w_len * h_len) ** 2 / h_len
        if self.reg_lambda > 0:
            loss = loss + self.reg_lambda * h.norm(dim=1)
        return reduce_loss(loss, self.reduction)
