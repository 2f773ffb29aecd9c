"""The training loss a config names: ``build_criterion(cfg, cls_num_list)`` (one factory, over
the registry :data:`LOSS_BUILDERS`) and ``describe_criterion(cfg)`` (one line for logs and
``--dry-run``).

How ``loss`` and the published ARB-Loss flags combine:

* ``loss: auto`` (the default) keeps the published meaning of every yaml: ARB-Loss when any of
  ``arbloss`` / ``warbloss`` / ``arbloss_fl`` is True, else cross-entropy.
* ``loss: arb`` is ARB-Loss whatever ``arbloss`` says; ``warbloss`` (weighted),
  ``arbloss_fl`` (focal, exponent ``focal_gamma``) and ``arb_loss_use_global_class_cnt``
  (training-set counts instead of batch counts) choose the variant, as they do with ``auto``.
* any other ``loss`` refuses those four flags set True (they select ARB-Loss).
* ``LAS`` (label-aware smoothing) works with ``ce`` and ``arb`` only, as published;
  ``drw_epoch`` > 0 (deferred re-weighting) with ``ce`` and ``ldam`` only, and not with LAS.

Global counts are always the training set's (``cls_num_list``).
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Sequence

import methods.losses as losses
from config import check_loss, mixup_enabled
from methods.las import LabelAwareSmoothing
from utils.errors import ConfigError

log = logging.getLogger(__name__)


Builder = Callable[..., losses.ClassCountLoss]


def _ce(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.CrossEntropy(reduction)


def _arb(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.ARBLoss(reduction,
                          cls_num_list=counts if cfg.arb_loss_use_global_class_cnt else None,
                          weighted=bool(cfg.warbloss),
                          focal_gamma=cfg.focal_gamma if cfg.arbloss_fl else 0.0)


def _balanced_softmax(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.BalancedSoftmax(counts, reduction=reduction)


def _logit_adjust(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.LogitAdjustedLoss(counts, tau=cfg.la_tau, reduction=reduction)


def _ldam(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.LDAMLoss(counts, max_m=cfg.ldam_max_m, s=cfg.ldam_s, reduction=reduction)


def _focal(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.FocalLoss(cfg.focal_gamma, reduction=reduction)


def _cb(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.ClassBalancedLoss(counts, beta=cfg.cb_beta, base=cfg.cb_base,
                                    gamma=cfg.focal_gamma, reduction=reduction)


def _label_smoothing(cfg, counts: Sequence[int], reduction: str) -> losses.ClassCountLoss:
    return losses.LabelSmoothingLoss(cfg.label_smoothing, reduction=reduction)


def _dr(cfg, counts: Sequence[int], reduction: str, classifier=None) -> losses.ClassCountLoss:
    if classifier is None or getattr(classifier, "kind", None) != "etf":
        raise ConfigError("loss 'dr' (dot regression) needs the network's ETF classifier: set "
                          "classifier etf (or auto)")
    return losses.DotRegressionLoss(classifier.class_weights(), given_ew=cfg.dr_given_ew,
                                    reg_lambda=cfg.dr_reg_lambda, reduction=reduction)


# name -> builder(cfg, cls_num_list, reduction): the values of the ``loss`` key (besides auto)
LOSS_BUILDERS: Dict[str, Builder] = {
    "ce": _ce,
    "arb": _arb,
    "balanced_softmax": _balanced_softmax,
    "logit_adjust": _logit_adjust,
    "ldam": _ldam,
    "focal": _focal,
    "cb": _cb,
    "label_smoothing": _label_smoothing,
    "dr": _dr,
}
# losses computed against the network's classifier (their builders take ``classifier=``)
CLASSIFIER_LOSSES = ("dr",)


def _describe_arb(cfg) -> str:
    name = "weighted ARB-Loss" if cfg.warbloss else "ARB-Loss"
    if cfg.arbloss_fl:
        name = f"focal {name} (gamma {cfg.focal_gamma:g})"
    return name + (" (global counts)" if cfg.arb_loss_use_global_class_cnt else
                   " (batch counts)")


_DESCRIPTIONS: Dict[str, Callable[..., str]] = {
    "ce": lambda cfg: "cross-entropy",
    "arb": _describe_arb,
    "balanced_softmax": lambda cfg: "Balanced Softmax (training-set counts)",
    "logit_adjust": lambda cfg: f"logit-adjusted cross-entropy (tau {cfg.la_tau:g})",
    "ldam": lambda cfg: f"LDAM (max margin {cfg.ldam_max_m:g}, scale {cfg.ldam_s:g})",
    "focal": lambda cfg: f"focal loss (gamma {cfg.focal_gamma:g})",
    "cb": lambda cfg: ("class-balanced softmax cross-entropy" if cfg.cb_base == "softmax" else
                       f"class-balanced focal loss (gamma {cfg.focal_gamma:g})")
    + f" (beta {cfg.cb_beta:g})",
    "label_smoothing": lambda cfg: f"label smoothing (epsilon {cfg.label_smoothing:g})",
    "dr": lambda cfg: ("dot regression to the fixed ETF"
                       + (" (per-batch class scaling)" if cfg.dr_given_ew else "")
                       + (f" + {cfg.dr_reg_lambda:g} mean ||h||" if cfg.dr_reg_lambda else "")),
}


def resolve_loss(cfg) -> str:
    """The loss a config selects (a key of :data:`LOSS_BUILDERS`), its combination with the
    other loss keys checked where every config check lives (:func:`config.check_loss`)."""
    return check_loss(cfg)


def build_criterion(cfg, cls_num_list: Sequence[int],
                    classifier=None) -> losses.ClassCountLoss:
    """The training loss of ``cfg`` (``loss`` and the ARB flags, see the module docstring),
    wrapped in :class:`DeferredReweighting` when ``drw_epoch`` > 0 and in
    :class:`LabelAwareSmoothing` when ``LAS``; ``cls_num_list`` are the training-set counts,
    ``classifier`` the network's head (the dot regression reads its fixed ETF)."""
    name = resolve_loss(cfg)
    drw = cfg.drw_epoch > 0
    if drw and cfg.drw_epoch >= cfg.num_epochs:
        log.warning("drw_epoch %d >= num_epochs %d: the deferred re-weighting never starts",
                    cfg.drw_epoch, cfg.num_epochs)
    extra = {"classifier": classifier} if name in CLASSIFIER_LOSSES else {}
    base = LOSS_BUILDERS[name](cfg, cls_num_list, "none" if drw else "mean", **extra)
    base.global_batch_counts = bool(cfg.arb_global_batch_counts)
    if drw:
        return losses.DeferredReweighting(base, cls_num_list, cfg.drw_epoch, beta=cfg.cb_beta)
    if cfg.LAS:
        return LabelAwareSmoothing(cls_num_list, cfg.smooth_head, cfg.smooth_tail,
                                   shape=cfg.las_shape, power=cfg.las_power, base=base)
    return base


def describe_criterion(cfg) -> str:
    """One line naming the loss in use (for logs and --dry-run)."""
    name = _DESCRIPTIONS[resolve_loss(cfg)](cfg)
    if cfg.drw_epoch > 0:
        name += (f" + DRW (class-balanced re-weighting, beta {cfg.cb_beta:g}, after "
                 f"{cfg.drw_epoch} epochs)")
    if cfg.LAS:
        name += (f" + label-aware smoothing ({cfg.las_shape}, head {cfg.smooth_head}, "
                 f"tail {cfg.smooth_tail})")
    if mixup_enabled(cfg):
        name += f" + mixup (alpha {cfg.alpha})"
    return name
